/* main.c - opensandboxd: a single-machine OpenSandbox server (WIRE.md) over the engine.
 * Layer: server. Parses flags, opens the engine, starts the HTTP and gRPC front ends,
 * prints one "ready" line on stdout, then waits for SIGTERM/SIGINT and shuts down in order:
 * front ends first (their runs in flight are cancelled), then the engine (every session
 * process killed, every root removed). Logs go to stderr; stdout carries the ready line only. */
#include <errno.h>
#include <getopt.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <malloc.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/defaults.h"
#include "common/log.h"
#include "common/mem.h"
#include "engine/engine.h"
#include "server/grpc.h"
#include "server/http.h"

#define VERSION "0.1.0"

struct config {
  int port;
  int grpc_port;
  const char *bind;
  unsigned ttl;
  size_t max_output;
  size_t max_file;
  size_t max_body;
  const char *state_dir;
  const char *api_key;
  int unsafe_no_isolation;
  int network;          /* ENGINE_NET_* (--network) */
  const char *tls_cert; /* files given by --tls-cert / --tls-key, or NULL */
  const char *tls_key;
  const char *node_id; /* --node-id: session ids start with it and '-', or NULL */
  int no_ext;          /* --no-ext: gRPC serves sandbox.proto only */
};

static int sig_pipe[2] = {-1, -1};

static void on_signal(int sig) {
  int saved = errno;
  unsigned char b = (unsigned char)sig;
  if (write(sig_pipe[1], &b, 1) < 0) {
    /* the pipe is full: a shutdown is already pending */
  }
  errno = saved;
}

static void usage(FILE *f) {
  fprintf(f,
          "usage: opensandboxd [options]\n"
          "  --port N              HTTP port (default 8080; 0 picks a free one)\n"
          "  --grpc-port N         gRPC port (default 50051; 0 picks a free one)\n"
          "  --bind ADDR           address to listen on (default 127.0.0.1)\n"
          "  --ttl SECS            remove sessions idle this long (default 300)\n"
          "  --max-output BYTES    output kept per stream per run (default 16M)\n"
          "  --max-file BYTES      largest file read (default 64M)\n"
          "  --max-body BYTES      largest HTTP request body (default 2M; 413 beyond)\n"
          "  --state-dir DIR       where session roots live (default under /tmp)\n"
          "  --api-key KEY         require 'Authorization: Bearer KEY' (also\n"
          "                        OPENSANDBOXD_API_KEY); /health stays open\n"
          "  --unsafe-no-isolation run commands without namespaces (testing only)\n"
          "  --network none|egress sessions' network: none (default: own loopback only)\n"
          "                        or egress (also the outside through slirp4netns; a create\n"
          "                        may still ask for none)\n"
          "  --tls-cert FILE       PEM certificate (chain): serve HTTPS and gRPC over TLS\n"
          "  --tls-key FILE        PEM private key of --tls-cert (both or neither)\n"
          "  --node-id NAME        start every session id with NAME- (1 to 16 of A-Z a-z\n"
          "                        0-9 _), so that a balancer in front of many servers\n"
          "                        routes each session's calls here; without it, ids are\n"
          "                        plain UUIDs (see deploy/README.md)\n"
          "  --no-ext              serve only the public gRPC wire: the extension\n"
          "                        (sandbox_ext.proto) answers UNIMPLEMENTED, as the\n"
          "                        public server does (for testing clients)\n"
          "  --log-level LEVEL     error|warn|info|debug|trace (default warn)\n"
          "  --help, --version\n"
          "gRPC messages are limited to max(64 MiB, max-file + 1 MiB, 2 x max-output + 1 MiB).\n"
          "Once both listeners are up, one line goes to stdout:\n"
          "  opensandboxd ready http=ADDR:PORT grpc=ADDR:PORT\n");
}

/* Parse a byte count: digits with an optional K, M or G suffix (powers of 1024). */
static int parse_size(const char *s, size_t *out) {
  char *end;
  unsigned long long v;
  unsigned shift = 0;
  errno = 0;
  if (*s < '0' || *s > '9')
    return -1;
  v = strtoull(s, &end, 10);
  if (errno)
    return -1;
  if (*end == 'k' || *end == 'K')
    shift = 10;
  else if (*end == 'm' || *end == 'M')
    shift = 20;
  else if (*end == 'g' || *end == 'G')
    shift = 30;
  if (shift)
    end++;
  if (*end || v > (SIZE_MAX >> shift))
    return -1;
  *out = (size_t)(v << shift);
  return 0;
}

static int parse_uint(const char *s, unsigned long max, unsigned long *out) {
  char *end;
  unsigned long v;
  errno = 0;
  if (*s < '0' || *s > '9')
    return -1;
  v = strtoul(s, &end, 10);
  if (errno || *end || v > max)
    return -1;
  *out = v;
  return 0;
}

/* Resolve --bind to a numeric address (so both listeners bind the very same one). */
static int resolve_bind(const char *bind, char *out, size_t n) {
  struct addrinfo hints, *ai = NULL;
  int rc;
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  rc = getaddrinfo(bind, NULL, &hints, &ai);
  if (rc != 0) {
    fprintf(stderr, "opensandboxd: --bind %s: %s\n", bind, gai_strerror(rc));
    return -1;
  }
  rc = getnameinfo(ai->ai_addr, ai->ai_addrlen, out, (socklen_t)n, NULL, 0, NI_NUMERICHOST);
  freeaddrinfo(ai);
  if (rc != 0) {
    fprintf(stderr, "opensandboxd: --bind %s: %s\n", bind, gai_strerror(rc));
    return -1;
  }
  return 0;
}

enum {
  OPT_PORT = 256,
  OPT_GRPC_PORT,
  OPT_BIND,
  OPT_TTL,
  OPT_MAX_OUTPUT,
  OPT_MAX_FILE,
  OPT_MAX_BODY,
  OPT_STATE_DIR,
  OPT_API_KEY,
  OPT_UNSAFE,
  OPT_NO_EXT,
  OPT_NETWORK,
  OPT_TLS_CERT,
  OPT_TLS_KEY,
  OPT_LOG_LEVEL,
  OPT_NODE_ID,
  OPT_HELP,
  OPT_VERSION,
};

static const struct option long_opts[] = {
    {"port", required_argument, NULL, OPT_PORT},
    {"grpc-port", required_argument, NULL, OPT_GRPC_PORT},
    {"bind", required_argument, NULL, OPT_BIND},
    {"ttl", required_argument, NULL, OPT_TTL},
    {"max-output", required_argument, NULL, OPT_MAX_OUTPUT},
    {"max-file", required_argument, NULL, OPT_MAX_FILE},
    {"max-body", required_argument, NULL, OPT_MAX_BODY},
    {"state-dir", required_argument, NULL, OPT_STATE_DIR},
    {"api-key", required_argument, NULL, OPT_API_KEY},
    {"unsafe-no-isolation", no_argument, NULL, OPT_UNSAFE},
    {"no-ext", no_argument, NULL, OPT_NO_EXT},
    {"network", required_argument, NULL, OPT_NETWORK},
    {"tls-cert", required_argument, NULL, OPT_TLS_CERT},
    {"tls-key", required_argument, NULL, OPT_TLS_KEY},
    {"log-level", required_argument, NULL, OPT_LOG_LEVEL},
    {"node-id", required_argument, NULL, OPT_NODE_ID},
    {"help", no_argument, NULL, OPT_HELP},
    {"version", no_argument, NULL, OPT_VERSION},
    {NULL, 0, NULL, 0},
};

/* Fill cfg from argv. Returns -1 (after a message) on a bad flag, 1 when the program is
 * done (--help, --version), 0 to go on. */
static int parse_flags(int argc, char **argv, struct config *cfg) {
  unsigned long v;
  enum log_level level;
  int o;

  while ((o = getopt_long(argc, argv, "", long_opts, NULL)) != -1) {
    switch (o) {
    case OPT_PORT:
    case OPT_GRPC_PORT:
      if (parse_uint(optarg, 65535, &v) < 0) {
        fprintf(stderr, "opensandboxd: bad port '%s'\n", optarg);
        return -1;
      }
      *(o == OPT_PORT ? &cfg->port : &cfg->grpc_port) = (int)v;
      break;
    case OPT_BIND:
      cfg->bind = optarg;
      break;
    case OPT_TTL:
      if (parse_uint(optarg, UINT32_MAX, &v) < 0 || v == 0) {
        fprintf(stderr, "opensandboxd: bad --ttl '%s'\n", optarg);
        return -1;
      }
      cfg->ttl = (unsigned)v;
      break;
    case OPT_MAX_OUTPUT:
    case OPT_MAX_FILE:
    case OPT_MAX_BODY: {
      size_t *dst = o == OPT_MAX_OUTPUT ? &cfg->max_output
                    : o == OPT_MAX_FILE ? &cfg->max_file
                                        : &cfg->max_body;
      if (parse_size(optarg, dst) < 0 || *dst == 0 || *dst > ((size_t)1 << 30)) {
        fprintf(stderr, "opensandboxd: bad size '%s' (1 byte to 1G)\n", optarg);
        return -1;
      }
      break;
    }
    case OPT_STATE_DIR:
      cfg->state_dir = optarg;
      break;
    case OPT_API_KEY:
      cfg->api_key = optarg;
      break;
    case OPT_UNSAFE:
      cfg->unsafe_no_isolation = 1;
      break;
    case OPT_NO_EXT:
      cfg->no_ext = 1;
      break;
    case OPT_NETWORK:
      if (strcmp(optarg, "none") == 0) {
        cfg->network = ENGINE_NET_NONE;
      } else if (strcmp(optarg, "egress") == 0) {
        cfg->network = ENGINE_NET_EGRESS;
      } else {
        fprintf(stderr, "opensandboxd: bad --network '%s' (none or egress)\n", optarg);
        return -1;
      }
      break;
    case OPT_TLS_CERT:
      cfg->tls_cert = optarg;
      break;
    case OPT_TLS_KEY:
      cfg->tls_key = optarg;
      break;
    case OPT_LOG_LEVEL:
      if (log_parse_level(optarg, &level) < 0) {
        fprintf(stderr, "opensandboxd: bad --log-level '%s'\n", optarg);
        return -1;
      }
      log_set_level(level);
      break;
    case OPT_NODE_ID:
      if (!engine_node_id_valid(optarg)) {
        fprintf(stderr, "opensandboxd: bad --node-id '%s' (1 to %d of A-Z a-z 0-9 _)\n", optarg,
                ENGINE_NODE_ID_MAX);
        return -1;
      }
      cfg->node_id = optarg;
      break;
    case OPT_HELP:
      usage(stdout);
      return 1;
    case OPT_VERSION:
      printf("opensandboxd " VERSION "\n");
      return 1;
    default:
      usage(stderr);
      return -1;
    }
  }
  if (optind < argc) {
    fprintf(stderr, "opensandboxd: unexpected argument '%s'\n", argv[optind]);
    return -1;
  }
  if (!cfg->tls_cert != !cfg->tls_key) {
    fprintf(stderr, "opensandboxd: --tls-cert and --tls-key go together\n");
    return -1;
  }
  return 0;
}

/* The whole of a PEM file, malloc'd and NUL-terminated; NULL after a message. */
static char *read_pem(const char *flag, const char *path) {
  enum { PEM_MAX = 1 << 20 };
  FILE *f = fopen(path, "rb");
  char *text = NULL;
  size_t n = 0;
  if (!f) {
    fprintf(stderr, "opensandboxd: %s %s: %s\n", flag, path, strerror(errno));
    return NULL;
  }
  text = xmalloc(PEM_MAX + 1);
  n = fread(text, 1, PEM_MAX + 1, f);
  if (ferror(f) || n == 0 || n > PEM_MAX) {
    fprintf(stderr, "opensandboxd: %s %s: cannot read it (empty, unreadable or over 1 MiB)\n",
            flag, path);
    free(text);
    fclose(f);
    return NULL;
  }
  fclose(f);
  text[n] = '\0';
  if (!strstr(text, "-----BEGIN ")) {
    fprintf(stderr, "opensandboxd: %s %s: not a PEM file\n", flag, path);
    free(text);
    return NULL;
  }
  return text;
}

/* Wipe and free the key material. Accepts NULL. */
static void free_pem(char *pem) {
  if (!pem)
    return;
  explicit_bzero(pem, strlen(pem));
  free(pem);
}

static int install_signals(void) {
  struct sigaction sa;
  if (pipe2(sig_pipe, O_CLOEXEC | O_NONBLOCK) < 0)
    return -1;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = SIG_IGN;
  sigaction(SIGPIPE, &sa, NULL);
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  if (sigaction(SIGTERM, &sa, NULL) < 0 || sigaction(SIGINT, &sa, NULL) < 0)
    return -1;
  return 0;
}

/* Hand freed heap back to the system once it is worth it. glibc keeps what a burst freed
 * (a 10 MB output, a 40 MiB file: its mmap threshold rises past such sizes after the first
 * one): a server that had served three 10 MB outputs stayed at 57 MB for good. Runs no
 * longer pay for that (run.c clones with CLONE_VM), but the memory is still better given
 * back. Checked once a second from the main thread: a trim only when at least
 * TRIM_MIN_FREE bytes are free in the arenas and that changed since the last trim
 * (malloc_trim leaves the counters as they were). */
#define TRIM_MIN_FREE ((size_t)4 << 20)

static void maybe_trim(void) {
  static size_t last;
  struct mallinfo2 mi = mallinfo2();
  if (mi.fordblks >= TRIM_MIN_FREE && mi.fordblks != last) {
    malloc_trim(0);
    last = mi.fordblks;
  }
}

/* Block until SIGTERM or SIGINT, trimming the heap meanwhile. */
static int wait_for_signal(void) {
  struct pollfd p = {.fd = sig_pipe[0], .events = POLLIN};
  unsigned char b = 0;
  for (;;) {
    int n = poll(&p, 1, 1000);
    if (n < 0 && errno != EINTR)
      return 0;
    if (n == 0) {
      maybe_trim();
      continue;
    }
    if (read(sig_pipe[0], &b, 1) == 1)
      return b;
  }
}

static size_t max_size(size_t a, size_t b) {
  return a > b ? a : b;
}

int main(int argc, char **argv) {
  struct config cfg = {
      .port = 8080,
      .grpc_port = OSB_DEFAULT_GRPC_PORT,
      .bind = "127.0.0.1",
      .ttl = 300,
      .max_output = 16u << 20,
      .max_file = 64u << 20,
      .max_body = 2u << 20,
  };
  struct engine_opts eopts;
  struct engine *eng = NULL;
  struct srv_grpc *grpc = NULL;
  struct srv_http *http = NULL;
  char bind[NI_MAXHOST];
  char *tls_cert = NULL, *tls_key = NULL;
  const char *env_key = getenv("OPENSANDBOXD_API_KEY");
  int rc, sig;

  log_set_prog("opensandboxd");
  if (env_key && *env_key)
    cfg.api_key = env_key;
  rc = parse_flags(argc, argv, &cfg);
  if (rc != 0)
    return rc < 0 ? 2 : 0;
  if (resolve_bind(cfg.bind, bind, sizeof bind) < 0)
    return 2;
  if (cfg.tls_cert) {
    tls_cert = read_pem("--tls-cert", cfg.tls_cert);
    tls_key = tls_cert ? read_pem("--tls-key", cfg.tls_key) : NULL;
    if (!tls_key) {
      free_pem(tls_cert);
      return 2;
    }
  }
  if (install_signals() < 0) {
    fprintf(stderr, "opensandboxd: cannot install signal handlers: %s\n", strerror(errno));
    goto fail;
  }

  memset(&eopts, 0, sizeof eopts);
  eopts.state_dir = cfg.state_dir;
  eopts.max_output = cfg.max_output;
  eopts.max_file = cfg.max_file;
  eopts.ttl_secs = cfg.ttl;
  eopts.unsafe_no_isolation = cfg.unsafe_no_isolation;
  eopts.network = cfg.network;
  eopts.node_id = cfg.node_id;
  rc = engine_open(&eopts, &eng);
  if (rc < 0) {
    fprintf(stderr, "opensandboxd: cannot open the engine: %s%s\n", engine_strerror(rc),
            rc == -EPERM ? " (not root and no user namespaces, so sandboxes cannot be "
                           "isolated; --unsafe-no-isolation runs commands without isolation)"
                         : "");
    goto fail;
  }

  {
    struct srv_grpc_opts go = {
        .eng = eng,
        .bind = bind,
        .port = cfg.grpc_port,
        .api_key = cfg.api_key,
        .max_message = max_size(64u << 20, max_size(cfg.max_file + (1u << 20),
                                                    2 * cfg.max_output + (1u << 20))),
        .tls_cert = tls_cert,
        .tls_key = tls_key,
        .no_ext = cfg.no_ext,
    };
    rc = srv_grpc_start(&go, &grpc);
    if (rc < 0) {
      fprintf(stderr, "opensandboxd: cannot start gRPC on %s port %d: %s%s\n", bind,
              cfg.grpc_port, strerror(-rc),
              tls_cert ? " (or the TLS certificate and key were refused)" : "");
      goto fail;
    }
  }
  {
    struct srv_http_opts ho = {
        .eng = eng,
        .bind = bind,
        .port = cfg.port,
        .api_key = cfg.api_key,
        .max_body = cfg.max_body,
        .tls_cert = tls_cert,
        .tls_key = tls_key,
    };
    rc = srv_http_start(&ho, &http);
    if (rc < 0) {
      fprintf(stderr, "opensandboxd: cannot start HTTP on %s port %d: %s%s\n", bind, cfg.port,
              strerror(-rc), tls_cert ? " (or the TLS certificate and key were refused)" : "");
      goto fail;
    }
  }

  {
    const char *fmt = strchr(bind, ':') ? "opensandboxd ready http=[%s]:%d grpc=[%s]:%d\n"
                                        : "opensandboxd ready http=%s:%d grpc=%s:%d\n";
    printf(fmt, bind, srv_http_port(http), bind, srv_grpc_port(grpc));
    fflush(stdout);
  }
  log_info("ready%s%s", cfg.api_key ? " (API key required)" : "", tls_cert ? " (TLS)" : "");

  sig = wait_for_signal();
  log_info("signal %d: shutting down", sig);
  srv_http_stop(http);
  log_debug("HTTP front end stopped");
  srv_grpc_stop(grpc);
  log_debug("gRPC front end stopped");
  engine_close(eng);
  log_debug("engine closed; bye");
  close(sig_pipe[0]);
  close(sig_pipe[1]);
  free_pem(tls_cert);
  free_pem(tls_key);
  return 0;

fail:
  srv_http_stop(http);
  srv_grpc_stop(grpc);
  engine_close(eng);
  free_pem(tls_cert);
  free_pem(tls_key);
  return 1;
}
