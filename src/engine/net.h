/* net.h - the network of a session (net.c): its own network namespace with a loopback of
 * its own, optional egress through a user-mode network stack (slirp4netns), and the forwarding
 * of preview ports from the host's loopback into the namespace. Internal to src/engine/.
 *
 * Default: a session's commands reach nothing outside the namespace (not the host's
 * loopback, not the server, not other sessions, not the internet). Egress: slirp4netns attaches
 * to the namespace, maps nothing to the host's loopback, forwards no port either way, and
 * the namespace gets `prohibit` routes for link-local ranges and the host's own addresses. */
#ifndef OSB_ENGINE_NET_H
#define OSB_ENGINE_NET_H

#include <stdatomic.h>

struct engine;
struct engine_session;

/* Tests and benchmarks: nonzero makes engine_open give sessions no network namespace
 * (the host's network, as before issue 12), with a loud warning. OSB_ENGINE_NETNS=0 in the
 * environment does the same. */
extern atomic_int engine_net_disabled;

/* Engine-wide: read the settings, start the forwarder thread. Returns 0 or -errno
 * (-ENOENT: egress asked for but slirp4netns is missing). network is ENGINE_NET_*. */
int engine_net_init(struct engine *eng, int network);
/* Stop the forwarder (every session is gone). */
void engine_net_fini(struct engine *eng);

/* In the session's init, in its new network namespace, before it says ready: bring the
 * loopback up. Only syscalls. Returns 0 or an errno. */
int engine_net_init_lo(void);

/* After init is ready (and, rootless, while it is still dumpable): open s->ns_net_fd and,
 * when the session has egress (s->egress on entry: -1 the engine's default, 0 or 1; on
 * return: 0 or 1), start slirp4netns on it and install the routes that keep link-local and the
 * host out of reach. Returns 0 or -errno (-EPERM: egress asked for, not offered). */
int engine_net_session_up(struct engine *eng, struct engine_session *s);
/* Stop the session's forwards and its slirp4netns (destroy); closes nothing of s's fds. */
void engine_net_session_down(struct engine *eng, struct engine_session *s);

/* Forward the host's 127.0.0.1:port into the session's 127.0.0.1:port (or [::1]:port when
 * nothing listens on the IPv4 one); when the host's port is taken (another session's
 * preview, a host service), a free one instead. *host_port says which (port itself when
 * sessions share the host's network). A port already forwarded for s is kept. Returns 0 or
 * -errno. */
int engine_net_forward(struct engine *eng, struct engine_session *s, int port, int *host_port);
/* Drop every forward of s (its background processes were killed). */
void engine_net_unforward_all(struct engine *eng, struct engine_session *s);

#endif
