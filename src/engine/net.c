/* net.c - each session's network: a network namespace of its own (made by sandbox.c's
 * clone of init, whose loopback is brought up here), egress through slirp4netns when asked for,
 * and the forwarding of preview ports from the host's 127.0.0.1 into the namespace.
 * Layer: engine. See net.h for the model.
 *
 * Forwarding: one engine thread with an epoll set holds every forwarded port's listening
 * socket (host 127.0.0.1:port) and every connection through it. A connection's socket on
 * the session's side is made inside the namespace by a short-lived child that shares our
 * fd table (CLONE_FILES): it enters the namespace (rootless: the session's user namespace
 * first, where it has the rights to), makes the socket, and dup3()s it onto an fd number
 * the thread reserved. A thread cannot do that itself in rootless mode: setns into a
 * network namespace also needs CAP_SYS_ADMIN in the caller's own user namespace, and a
 * threaded process cannot enter a user namespace. The socket then connects to the
 * session's loopback from here: a socket keeps the namespace it was made in.
 *
 * Objects (listeners, connections) are freed only by the forwarder thread, under net->lock,
 * after the events of a round were handled; other threads only mark them dead (and drop
 * their fds from the epoll set), so an event never points at freed memory. Each object
 * holds a reference on its session.
 *
 * Egress: slirp4netns attaches to the namespace through an fd we hand it (/proc/self/fd/3;
 * rootless: the session's user namespace too, fd 4), configures tap0 as 10.0.2.100/24 with
 * 10.0.2.2 as gateway, with --disable-host-loopback (10.0.2.2 is not the host's 127.0.0.1)
 * and --disable-dns (10.0.2.3 relays nothing), its own sandbox and seccomp filter, and no
 * port forwarded. It is our child; it exits when its --exit-fd's other end closes: at
 * destroy, or when the engine dies (no PDEATHSIG: that follows the creating thread, which
 * may be a short-lived server thread).
 * (pasta was the first choice, but this Debian's pasta drops every capability before it
 * enters the namespace, which in root mode belongs to the host's user namespace.) Then
 * `prohibit` routes are added in the namespace for 169.254.0.0/16 and each of the host's
 * own addresses, so that link-local services (cloud metadata) and the host's
 * listeners on other interfaces fail at once (EACCES) without a packet leaving. */
#include "engine/net.h"

#include <errno.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/assert.h"
#include "common/list.h"
#include "common/log.h"
#include "engine/engine_int.h"

#define FWD_BUF 65536
#define SLIRP_WAIT_MS 10000
#define MAX_BLOCKS 32 /* prohibit routes installed for egress */

atomic_int engine_net_disabled;

enum { T_WAKE, T_LISTEN, T_CONN };

struct fwd_tag {
  int type;
  void *obj;
  int side; /* T_CONN: 0 the host's end, 1 the session's end */
};

struct fwd_listener {
  struct fwd_tag tag;
  struct engine_session *s; /* a reference */
  int port;                 /* in the session */
  int host_port;            /* on the host's 127.0.0.1: port, or another when it was taken */
  int fd;
  int dead;
  struct list_node link;    /* on net->listeners */
};

struct fwd_dir { /* bytes read from one end, waiting to be written to the other */
  char *buf;
  size_t len, off;
  int eof;     /* the reading end said EOF; the writing end is shut down once drained */
};

struct fwd_conn {
  struct fwd_tag tag[2];
  struct engine_session *s; /* a reference */
  int port;
  int fd[2];                /* 0: host's end, 1: session's end */
  int armed[2];             /* fd[k] is in the epoll set */
  int connecting;           /* 0: relaying, 4 or 6: connect() to 127.0.0.1 / ::1 pending */
  struct fwd_dir dir[2];    /* dir[k]: read from fd[k], written to fd[1-k] */
  int dead;
  struct list_node link;    /* on net->conns */
};

struct engine_net {
  char *slirp;              /* path of slirp4netns, or NULL when egress is not offered */
  int epfd, wakefd;
  struct fwd_tag wake_tag;
  pthread_t thread;
  pthread_mutex_t lock;     /* guards the lists and the objects' dead flags */
  struct list listeners;    /* of struct fwd_listener, newest first */
  struct list conns;        /* of struct fwd_conn, newest first */
  int stop;
};

/* ---- init's side ---- */

int engine_net_init_lo(void) {
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return errno;
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  memcpy(ifr.ifr_name, "lo", 3);
  int err = 0;
  if (ioctl(fd, SIOCGIFFLAGS, &ifr) < 0)
    err = errno;
  ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
  if (!err && ioctl(fd, SIOCSIFFLAGS, &ifr) < 0)
    err = errno;
  close(fd);
  return err;
}

/* ---- entering the session's namespace from a child ---- */

/* In a child of the engine (single-threaded): enter s's network namespace. 0 or errno. */
static int child_enter(const struct engine *eng, const struct engine_session *s) {
  if (eng->rootless && setns(s->ns_user_fd, CLONE_NEWUSER) < 0)
    return errno;
  if (setns(s->ns_net_fd, CLONE_NEWNET) < 0)
    return errno;
  return 0;
}

static int wait_child(pid_t pid) {
  int st = 0;
  while (waitpid(pid, &st, 0) < 0) {
    if (errno != EINTR)
      return -errno;
  }
  if (!WIFEXITED(st))
    return -EIO;
  return -WEXITSTATUS(st);
}

/* A non-blocking TCP socket of the given family made inside s's network namespace.
 * Returns the fd (O_CLOEXEC) or -errno. */
static int ns_socket(struct engine *eng, struct engine_session *s, int family) {
  int slot = open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (slot < 0)
    return -errno;
  pid_t pid = engine_sandbox_clone(CLONE_FILES, NULL);
  if (pid == 0) {
    int err = child_enter(eng, s);
    if (err)
      _exit(err);
    int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
      _exit(errno);
    if (dup3(fd, slot, O_CLOEXEC) < 0)
      _exit(errno);
    close(fd);
    _exit(0);
  }
  int rc = pid < 0 ? -errno : wait_child(pid);
  if (rc < 0) {
    close(slot);
    return rc;
  }
  return slot;
}

/* ---- the forwarder thread ---- */

static void conn_set_events(struct engine_net *n, struct fwd_conn *c) {
  for (int k = 0; k < 2; k++) {
    if (c->fd[k] < 0)
      continue;
    uint32_t ev = 0;
    if (c->connecting) {
      ev = k == 1 ? EPOLLOUT : 0;
    } else {
      if (!c->dir[k].eof && c->dir[k].len == 0)
        ev |= EPOLLIN;                       /* room to read more from k */
      if (c->dir[1 - k].len > c->dir[1 - k].off)
        ev |= EPOLLOUT;                      /* bytes waiting for k */
    }
    /* an end we wait for nothing from leaves the set: epoll would report its hangup or
     * error over and over (level-triggered, whatever the mask) while, say, its bytes wait
     * for the other end to drain, and the thread would spin */
    struct epoll_event e = {.events = ev, .data.ptr = &c->tag[k]};
    if (ev && !c->armed[k] && epoll_ctl(n->epfd, EPOLL_CTL_ADD, c->fd[k], &e) == 0)
      c->armed[k] = 1;
    else if (ev && c->armed[k])
      epoll_ctl(n->epfd, EPOLL_CTL_MOD, c->fd[k], &e);
    else if (!ev && c->armed[k] && epoll_ctl(n->epfd, EPOLL_CTL_DEL, c->fd[k], NULL) == 0)
      c->armed[k] = 0;
  }
}

static void conn_kill(struct engine_net *n, struct fwd_conn *c) {
  for (int k = 0; k < 2; k++)
    if (c->fd[k] >= 0) {
      if (c->armed[k])
        epoll_ctl(n->epfd, EPOLL_CTL_DEL, c->fd[k], NULL);
      close(c->fd[k]);
      c->fd[k] = -1;
      c->armed[k] = 0;
    }
  c->dead = 1;
}

/* Start connecting c's session end to the session's loopback (family 4 or 6). */
static int conn_connect(struct engine_net *n, struct fwd_conn *c, int fam) {
  int fd = ns_socket(c->s->eng, c->s, fam == 4 ? AF_INET : AF_INET6);
  if (fd < 0)
    return fd;
  struct sockaddr_in in4 = {.sin_family = AF_INET, .sin_port = htons((uint16_t)c->port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  struct sockaddr_in6 in6 = {.sin6_family = AF_INET6, .sin6_port = htons((uint16_t)c->port),
                             .sin6_addr = IN6ADDR_LOOPBACK_INIT};
  int r = fam == 4 ? connect(fd, (struct sockaddr *)&in4, sizeof in4)
                   : connect(fd, (struct sockaddr *)&in6, sizeof in6);
  if (r < 0 && errno != EINPROGRESS) {
    int rc = -errno;
    close(fd);
    return rc;
  }
  if (c->fd[1] >= 0) {
    if (c->armed[1])
      epoll_ctl(n->epfd, EPOLL_CTL_DEL, c->fd[1], NULL);
    close(c->fd[1]);
    c->armed[1] = 0;
  }
  c->fd[1] = fd;
  c->connecting = fam;
  conn_set_events(n, c); /* the session's end, for EPOLLOUT: connected or refused */
  return 0;
}

static void on_accept(struct engine_net *n, struct fwd_listener *l) {
  for (int i = 0; i < 16; i++) {
    int fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0)
      return;
    struct fwd_conn *c = xcalloc(1, sizeof *c);
    char *b = xmalloc(2 * FWD_BUF);
    c->dir[0].buf = b;
    c->dir[1].buf = b + FWD_BUF;
    c->s = l->s;
    atomic_fetch_add(&c->s->refs, 1);
    c->port = l->port;
    c->fd[0] = fd;
    c->fd[1] = -1;
    for (int k = 0; k < 2; k++)
      c->tag[k] = (struct fwd_tag){T_CONN, c, k};
    list_push_front(&n->conns, &c->link);
    if (conn_connect(n, c, 4) < 0 && conn_connect(n, c, 6) < 0)
      conn_kill(n, c);
  }
}

/* Move bytes for c after an event on end k. */
static void on_conn(struct engine_net *n, struct fwd_conn *c, int k, uint32_t ev) {
  if (c->connecting) {
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt(c->fd[1], SOL_SOCKET, SO_ERROR, &err, &len);
    if (err) {
      /* nothing on 127.0.0.1: a server bound to ::1 only (Node's "localhost") */
      if (c->connecting == 4 && conn_connect(n, c, 6) == 0)
        return;
      conn_kill(n, c);
      return;
    }
    c->connecting = 0;
    conn_set_events(n, c);
    return;
  }
  (void)k;
  (void)ev;
  for (int d = 0; d < 2; d++) { /* d: from fd[d] to fd[1-d] */
    struct fwd_dir *q = &c->dir[d];
    if (!q->eof && q->len == 0) {
      ssize_t r = read(c->fd[d], q->buf, FWD_BUF);
      if (r > 0) {
        q->len = (size_t)r;
        q->off = 0;
      } else if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
        if (r < 0) {
          conn_kill(n, c);
          return;
        }
        q->eof = 1;
      }
    }
    while (q->off < q->len) {
      ssize_t w = send(c->fd[1 - d], q->buf + q->off, q->len - q->off, MSG_NOSIGNAL);
      if (w < 0) {
        if (errno == EAGAIN || errno == EINTR)
          break;
        conn_kill(n, c);
        return;
      }
      q->off += (size_t)w;
    }
    if (q->off == q->len)
      q->len = q->off = 0;
    if (q->eof == 1 && q->len == 0) {
      shutdown(c->fd[1 - d], SHUT_WR);
      q->eof = 2;
    }
  }
  if (c->dir[0].eof == 2 && c->dir[1].eof == 2) {
    conn_kill(n, c);
    return;
  }
  conn_set_events(n, c);
}

/* Free what is dead (the forwarder thread, net->lock held). */
static void sweep(struct engine_net *n) {
  for (struct list_node *ln = LIST_FIRST(&n->listeners), *nx; ln != LIST_END(&n->listeners);
       ln = nx) {
    nx = ln->next;
    struct fwd_listener *l = LIST_ENTRY(ln, struct fwd_listener, link);
    if (!l->dead)
      continue;
    list_remove(&l->link);
    OSB_ASSERT(l->fd < 0); /* whoever marked it dead closed its fd */
    engine_session_put(l->s);
    free(l);
  }
  for (struct list_node *cn = LIST_FIRST(&n->conns), *nx; cn != LIST_END(&n->conns); cn = nx) {
    nx = cn->next;
    struct fwd_conn *c = LIST_ENTRY(cn, struct fwd_conn, link);
    if (!c->dead)
      continue;
    list_remove(&c->link);
    OSB_ASSERT(c->fd[0] < 0 && c->fd[1] < 0 && !c->armed[0] && !c->armed[1]);
    engine_session_put(c->s);
    free(c->dir[0].buf);
    free(c);
  }
}

static void *fwd_main(void *p) {
  struct engine_net *n = p;
  sigset_t all;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, NULL);
  struct epoll_event ev[64];
  for (;;) {
    int k = epoll_wait(n->epfd, ev, 64, -1);
    if (k < 0 && errno != EINTR)
      break;
    pthread_mutex_lock(&n->lock);
    for (int i = 0; i < k; i++) {
      struct fwd_tag *t = ev[i].data.ptr;
      if (t->type == T_WAKE) {
        uint64_t v;
        ssize_t r = read(n->wakefd, &v, sizeof v);
        (void)r;
      } else if (t->type == T_LISTEN) {
        struct fwd_listener *l = t->obj;
        if (!l->dead)
          on_accept(n, l);
      } else {
        struct fwd_conn *c = t->obj;
        if (!c->dead)
          on_conn(n, c, t->side, ev[i].events);
      }
    }
    sweep(n);
    int stop = n->stop && list_empty(&n->listeners) && list_empty(&n->conns);
    pthread_mutex_unlock(&n->lock);
    if (stop)
      break;
  }
  return NULL;
}

static void wake(struct engine_net *n) {
  uint64_t one = 1;
  ssize_t w = write(n->wakefd, &one, sizeof one);
  (void)w;
}

/* ---- engine-wide ---- */

/* slirp4netns's path, looked up in the usual places (the engine's PATH may be anything). */
static char *find_slirp(void) {
  static const char *const dirs[] = {"/usr/bin", "/usr/local/bin", "/bin", "/usr/sbin"};
  for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++) {
    char path[64];
    snprintf(path, sizeof path, "%s/slirp4netns", dirs[i]);
    if (access(path, X_OK) == 0)
      return xstrdup(path);
  }
  return NULL;
}

int engine_net_init(struct engine *eng, int network) {
  const char *env = getenv("OSB_ENGINE_NETNS");
  eng->netns = eng->isolated && !atomic_load(&engine_net_disabled) && !(env && !strcmp(env, "0"));
  eng->network = network == ENGINE_NET_EGRESS ? ENGINE_NET_EGRESS : ENGINE_NET_NONE;
  if (eng->isolated && !eng->netns)
    log_warn("engine: UNSAFE: sessions share the host's network (OSB_ENGINE_NETNS=0): "
             "commands reach the host's loopback and every network it reaches");
  struct engine_net *n = xcalloc(1, sizeof *n);
  n->epfd = n->wakefd = -1;
  if (eng->network == ENGINE_NET_EGRESS && eng->netns) {
    if (eng->rootless && access("/dev/net/tun", R_OK | W_OK) < 0) {
      /* slirp4netns opens it as our uid on the host, whatever it is in the namespace */
      int err = errno;
      log_error("engine: --network egress in rootless mode needs /dev/net/tun readable and "
                "writable by uid %u (%s; most systems make it mode 0666)", (unsigned)geteuid(),
                strerror(err));
      free(n);
      return -err;
    }
    n->slirp = find_slirp();
    if (!n->slirp) {
      log_error("engine: --network egress needs slirp4netns (Debian package slirp4netns), "
                "not found");
      free(n);
      return -ENOENT;
    }
  }
  pthread_mutex_init(&n->lock, NULL);
  list_init(&n->listeners);
  list_init(&n->conns);
  int rc = 0;
  n->epfd = epoll_create1(EPOLL_CLOEXEC);
  n->wakefd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (n->epfd < 0 || n->wakefd < 0)
    rc = -errno;
  if (rc == 0) {
    n->wake_tag.type = T_WAKE;
    struct epoll_event e = {.events = EPOLLIN, .data.ptr = &n->wake_tag};
    if (epoll_ctl(n->epfd, EPOLL_CTL_ADD, n->wakefd, &e) < 0)
      rc = -errno;
  }
  if (rc == 0)
    rc = -pthread_create(&n->thread, NULL, fwd_main, n);
  if (rc < 0) {
    if (n->epfd >= 0)
      close(n->epfd);
    if (n->wakefd >= 0)
      close(n->wakefd);
    pthread_mutex_destroy(&n->lock);
    free(n->slirp);
    free(n);
    return rc;
  }
  eng->net = n;
  if (eng->netns)
    log_info("engine: each session has its own network namespace (loopback only)%s",
             eng->network == ENGINE_NET_EGRESS ? "; egress through slirp4netns" : "");
  return 0;
}

void engine_net_fini(struct engine *eng) {
  struct engine_net *n = eng->net;
  if (!n)
    return;
  pthread_mutex_lock(&n->lock);
  n->stop = 1;
  for (struct list_node *ln = LIST_FIRST(&n->listeners); ln != LIST_END(&n->listeners);
       ln = ln->next) {
    struct fwd_listener *l = LIST_ENTRY(ln, struct fwd_listener, link);
    if (!l->dead) {
      epoll_ctl(n->epfd, EPOLL_CTL_DEL, l->fd, NULL);
      close(l->fd);
      l->fd = -1;
      l->dead = 1;
    }
  }
  for (struct list_node *cn = LIST_FIRST(&n->conns); cn != LIST_END(&n->conns); cn = cn->next) {
    struct fwd_conn *c = LIST_ENTRY(cn, struct fwd_conn, link);
    if (!c->dead)
      conn_kill(n, c);
  }
  pthread_mutex_unlock(&n->lock);
  wake(n);
  pthread_join(n->thread, NULL);
  close(n->epfd);
  close(n->wakefd);
  pthread_mutex_destroy(&n->lock);
  free(n->slirp);
  free(n);
  eng->net = NULL;
}

/* ---- forwards ---- */

/* A listening socket on the host's 127.0.0.1:port (0: any free port). fd or -errno. */
static int host_listener(int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return -errno;
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                           .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(fd, 128) < 0) {
    int rc = -errno;
    close(fd);
    return rc;
  }
  return fd;
}

int engine_net_forward(struct engine *eng, struct engine_session *s, int port, int *host_port) {
  struct engine_net *n = eng->net;
  *host_port = port;
  if (!eng->netns || !n || s->ns_net_fd < 0)
    return 0; /* the host's network: the process listens on the host itself */
  pthread_mutex_lock(&n->lock);
  for (struct list_node *ln = LIST_FIRST(&n->listeners); ln != LIST_END(&n->listeners);
       ln = ln->next) {
    struct fwd_listener *l = LIST_ENTRY(ln, struct fwd_listener, link);
    if (!l->dead && l->s == s && l->port == port) {
      *host_port = l->host_port;
      pthread_mutex_unlock(&n->lock);
      return 0;
    }
  }
  pthread_mutex_unlock(&n->lock);
  int fd = host_listener(port);
  if (fd == -EADDRINUSE) /* another session's (or the host's): any free one will do */
    fd = host_listener(0);
  if (fd < 0)
    return fd;
  struct sockaddr_in sa;
  socklen_t len = sizeof sa;
  if (getsockname(fd, (struct sockaddr *)&sa, &len) < 0) {
    int rc = -errno;
    close(fd);
    return rc;
  }
  struct fwd_listener *l = xcalloc(1, sizeof *l);
  l->tag = (struct fwd_tag){T_LISTEN, l, 0};
  l->s = s;
  atomic_fetch_add(&s->refs, 1);
  l->port = port;
  l->host_port = ntohs(sa.sin_port);
  l->fd = fd;
  pthread_mutex_lock(&n->lock);
  list_push_front(&n->listeners, &l->link);
  struct epoll_event e = {.events = EPOLLIN, .data.ptr = &l->tag};
  int rc = epoll_ctl(n->epfd, EPOLL_CTL_ADD, fd, &e) < 0 ? -errno : 0;
  if (rc < 0) {
    close(fd);
    l->fd = -1;
    l->dead = 1; /* freed by the thread */
  } else {
    *host_port = l->host_port;
  }
  pthread_mutex_unlock(&n->lock);
  if (rc < 0)
    wake(n);
  return rc;
}

static void unforward(struct engine *eng, struct engine_session *s, int conns_too) {
  struct engine_net *n = eng->net;
  if (!n)
    return;
  int marked = 0;
  pthread_mutex_lock(&n->lock);
  for (struct list_node *ln = LIST_FIRST(&n->listeners); ln != LIST_END(&n->listeners);
       ln = ln->next) {
    struct fwd_listener *l = LIST_ENTRY(ln, struct fwd_listener, link);
    if (!l->dead && l->s == s) {
      epoll_ctl(n->epfd, EPOLL_CTL_DEL, l->fd, NULL);
      close(l->fd);
      l->fd = -1;
      l->dead = 1;
      marked = 1;
    }
  }
  for (struct list_node *cn = LIST_FIRST(&n->conns); conns_too && cn != LIST_END(&n->conns);
       cn = cn->next) {
    struct fwd_conn *c = LIST_ENTRY(cn, struct fwd_conn, link);
    if (!c->dead && c->s == s) {
      conn_kill(n, c);
      marked = 1;
    }
  }
  pthread_mutex_unlock(&n->lock);
  if (marked) /* the forwarder frees what is dead; a session without forwards costs no wake-up */
    wake(n);
}

void engine_net_unforward_all(struct engine *eng, struct engine_session *s) {
  unforward(eng, s, 1);
}

/* ---- egress ---- */

/* The host's own addresses (not loopback, not IPv6 link-local): their routes are made
 * `prohibit` in an egress namespace. */
struct block {
  int family;
  unsigned char addr[16];
  int len;
};

static size_t host_blocks(struct block *b, size_t max) {
  size_t k = 0;
  b[k].family = AF_INET;
  memset(b[k].addr, 0, 16);
  b[k].addr[0] = 169;
  b[k].addr[1] = 254;
  b[k].len = 16;
  k++;
  struct ifaddrs *ifa = NULL;
  if (getifaddrs(&ifa) < 0)
    return k;
  for (struct ifaddrs *i = ifa; i && k < max; i = i->ifa_next) {
    if (!i->ifa_addr || (i->ifa_flags & IFF_LOOPBACK))
      continue;
    if (i->ifa_addr->sa_family == AF_INET) {
      const struct sockaddr_in *a = (const struct sockaddr_in *)i->ifa_addr;
      b[k].family = AF_INET;
      memcpy(b[k].addr, &a->sin_addr, 4);
      b[k].len = 32;
      k++;
    } else if (i->ifa_addr->sa_family == AF_INET6) {
      const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)i->ifa_addr;
      if (IN6_IS_ADDR_LINKLOCAL(&a->sin6_addr))
        continue;
      b[k].family = AF_INET6;
      memcpy(b[k].addr, &a->sin6_addr, 16);
      b[k].len = 128;
      k++;
    }
  }
  freeifaddrs(ifa);
  return k;
}

/* In a child inside the namespace: add a prohibit route for each block. 0 or errno. */
static int child_add_routes(const struct block *b, size_t n) {
  int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
  if (fd < 0)
    return errno;
  for (size_t i = 0; i < n; i++) {
    struct {
      struct nlmsghdr nh;
      struct rtmsg rt;
      char attrs[64];
    } req;
    memset(&req, 0, sizeof req);
    size_t alen = b[i].family == AF_INET ? 4 : 16;
    struct rtattr *ra = (struct rtattr *)req.attrs;
    ra->rta_type = RTA_DST;
    ra->rta_len = (unsigned short)RTA_LENGTH(alen);
    memcpy(RTA_DATA(ra), b[i].addr, alen);
    req.nh.nlmsg_len = (uint32_t)(NLMSG_LENGTH(sizeof req.rt) + RTA_ALIGN(ra->rta_len));
    req.nh.nlmsg_type = RTM_NEWROUTE;
    req.nh.nlmsg_flags = NLM_F_REQUEST | NLM_F_CREATE | NLM_F_REPLACE | NLM_F_ACK;
    req.nh.nlmsg_seq = (uint32_t)i + 1;
    req.rt.rtm_family = (unsigned char)b[i].family;
    req.rt.rtm_dst_len = (unsigned char)b[i].len;
    req.rt.rtm_table = RT_TABLE_MAIN;
    req.rt.rtm_protocol = RTPROT_STATIC;
    req.rt.rtm_scope = RT_SCOPE_UNIVERSE;
    req.rt.rtm_type = RTN_PROHIBIT;
    if (send(fd, &req, req.nh.nlmsg_len, 0) < 0) {
      int err = errno;
      close(fd);
      return err;
    }
    char ack[512];
    ssize_t r = recv(fd, ack, sizeof ack, 0);
    if (r < (ssize_t)NLMSG_LENGTH(sizeof(struct nlmsgerr))) {
      close(fd);
      return EIO;
    }
    const struct nlmsghdr *h = (const struct nlmsghdr *)ack;
    if (h->nlmsg_type == NLMSG_ERROR) {
      const struct nlmsgerr *e = NLMSG_DATA(h);
      if (e->error < 0 && e->error != -EEXIST) {
        close(fd);
        return -e->error;
      }
    }
  }
  close(fd);
  return 0;
}

static int add_blocks(struct engine *eng, struct engine_session *s) {
  struct block b[MAX_BLOCKS];
  size_t nb = host_blocks(b, MAX_BLOCKS);
  pid_t pid = engine_sandbox_clone(0, NULL);
  if (pid == 0) {
    int err = child_enter(eng, s);
    _exit(err ? err : child_add_routes(b, nb));
  }
  return pid < 0 ? -errno : wait_child(pid);
}

/* Start slirp4netns on s's namespace and wait until it has configured it (--ready-fd).
 * It exits when the engine closes its --exit-fd (or dies), and is killed at destroy. */
static int start_slirp(struct engine *eng, struct engine_session *s) {
  int ready[2], ex[2];
  if (pipe2(ready, O_CLOEXEC) < 0)
    return -errno;
  if (pipe2(ex, O_CLOEXEC) < 0) {
    int rc = -errno;
    close(ready[0]);
    close(ready[1]);
    return rc;
  }
  const char *argv[24];
  size_t a = 0;
  argv[a++] = eng->net->slirp;
  argv[a++] = "--configure";
  argv[a++] = "--mtu=65520";
  argv[a++] = "--disable-host-loopback"; /* 10.0.2.2 is not the host's 127.0.0.1 */
  argv[a++] = "--disable-dns";           /* nor is 10.0.2.3 a relay to the host's resolver */
  argv[a++] = "--enable-sandbox";
  argv[a++] = "--enable-seccomp";
  argv[a++] = "--netns-type=path";
  argv[a++] = "--ready-fd=5";
  argv[a++] = "--exit-fd=6";
  if (eng->rootless)
    argv[a++] = "--userns-path=/proc/self/fd/4";
  argv[a++] = "/proc/self/fd/3";
  argv[a++] = "tap0";
  argv[a] = NULL;
  int fds[4] = {s->ns_net_fd, eng->rootless ? s->ns_user_fd : s->ns_net_fd, ready[1], ex[0]};
  int pidfd = -1;
  pid_t pid = engine_sandbox_clone(0, &pidfd);
  if (pid == 0) {
    int hi[4];
    for (int i = 0; i < 4; i++)
      if ((hi[i] = fcntl(fds[i], F_DUPFD, 10)) < 0)
        _exit(126);
    for (int i = 0; i < 4; i++)
      if (dup2(hi[i], 3 + i) < 0)
        _exit(126);
    syscall(SYS_close_range, 7, ~0U, 0);
    int nul = open("/dev/null", O_RDWR);
    if (nul >= 0) { /* its chatter ("sent tapfd=...") stays out of the server's log */
      dup2(nul, 0);
      dup2(nul, 1);
      dup2(nul, 2);
    }
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    static char *const envp[] = {"PATH=/usr/bin:/bin", NULL};
    execve(argv[0], (char *const *)argv, envp);
    _exit(127);
  }
  int rc = pid < 0 ? -errno : 0;
  close(ready[1]);
  close(ex[0]);
  if (rc == 0) {
    struct pollfd pf = {.fd = ready[0], .events = POLLIN};
    char c = 0;
    int r;
    do {
      r = poll(&pf, 1, SLIRP_WAIT_MS);
    } while (r < 0 && errno == EINTR);
    if (r <= 0 || read(ready[0], &c, 1) != 1 || c != '1')
      rc = -EIO;
  }
  close(ready[0]);
  if (pid > 0) {
    s->egress_pid = pid;
    s->egress_pidfd = pidfd;
    s->egress_exit_fd = ex[1];
  } else {
    close(ex[1]);
  }
  if (rc < 0)
    log_warn("engine: slirp4netns did not configure session %s's network", s->id);
  return rc;
}

int engine_net_session_up(struct engine *eng, struct engine_session *s) {
  int egress = s->egress;
  s->egress = 0;
  if (!eng->netns)
    return egress > 0 ? -EPERM : 0;
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/ns/net", (int)s->init_pid);
  s->ns_net_fd = open(path, O_RDONLY | O_CLOEXEC);
  if (s->ns_net_fd < 0)
    return -errno;
  if (egress < 0)
    egress = eng->network == ENGINE_NET_EGRESS;
  if (!egress)
    return 0;
  if (eng->network != ENGINE_NET_EGRESS || !eng->net->slirp)
    return -EPERM; /* the server does not offer egress */
  s->egress = 1;
  int rc = start_slirp(eng, s);
  if (rc == 0)
    rc = add_blocks(eng, s);
  return rc;
}

void engine_net_session_down(struct engine *eng, struct engine_session *s) {
  unforward(eng, s, 1);
  if (s->egress_exit_fd >= 0) {
    close(s->egress_exit_fd);
    s->egress_exit_fd = -1;
  }
  if (s->egress_pidfd >= 0) {
    syscall(SYS_pidfd_send_signal, s->egress_pidfd, SIGKILL, NULL, 0);
    siginfo_t si;
    while (waitid(P_PIDFD, (id_t)s->egress_pidfd, &si, WEXITED) < 0 && errno == EINTR) {
    }
    close(s->egress_pidfd);
    s->egress_pidfd = -1;
    s->egress_pid = -1;
  }
}
