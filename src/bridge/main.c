/* main.c - opensandbox-bridge: flags and environment into a configuration, then the
 * JSON-RPC loop on stdin/stdout until EOF, `exit` or SIGTERM (MCP mode when the first
 * message is MCP, or with --mcp: see src/mcp).
 * stdout carries protocol bytes only; everything else goes to stderr. */
#include <errno.h>
#include <getopt.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bridge/methods/methods.h"
#include "common/defaults.h"
#include "common/log.h"
#include "common/mem.h"
#include "common/thread.h"
#include "mcp/mcp.h"
#include "rpc/rpc.h"

#define BRIDGE_VERSION "0.1.0"

static void usage(FILE *out) {
  fprintf(out,
          "usage: opensandbox-bridge [options]\n"
          "A JSON-RPC 2.0 server on stdin/stdout that drives OpenSandbox sandboxes.\n"
          "Without --url it runs sandboxes itself (the embedded local backend).\n"
          "\n"
          "  --url URL               OpenSandbox server base URL (env OPENSANDBOX_URL)\n"
          "  --grpc-port N           gRPC port of the server (env OPENSANDBOX_GRPC_PORT; 50051)\n"
          "  --grpc-insecure         plaintext gRPC even for https (env OPENSANDBOX_GRPC_INSECURE=1)\n"
          "  --api-key KEY           bearer token for both channels (env OPENSANDBOX_API_KEY)\n"
          "  --request-timeout-ms N  bound on each HTTP request and non-run gRPC call\n"
          "                          (env OPENSANDBOX_REQUEST_TIMEOUT_MS; 30000)\n"
          "  --cacert FILE           CA certificates for TLS (default: the system's)\n"
          "  --transport MODE        auto|grpc|http: channel for runs, env, cwd and files\n"
          "                          (env OPENSANDBOX_TRANSPORT; auto: gRPC, HTTP while the\n"
          "                          gRPC port cannot be reached)\n"
          "  --network none|egress   local backend: sandboxes reach nothing outside (none,\n"
          "                          default) or also the outside (egress, via slirp4netns)\n"
          "                          (env OPENSANDBOX_NETWORK)\n"
          "  --framing lsp|ndjson    force a framing (default: detected from the first byte)\n"
          "  --max-message BYTES     largest message accepted (default 67108864)\n"
          "  --max-inflight N        requests worked on at once (default 1024)\n"
          "  --max-output BYTES      run output kept per stream (default 16777216)\n"
          "  --log-level LEVEL       error|warn|info|debug|trace on stderr (default warn)\n"
          "  --mcp                   serve MCP (Model Context Protocol) whatever the first\n"
          "                          message is (default: MCP when the first message is MCP)\n"
          "  --mcp-yield-ms N        MCP sandbox_run returns a still running command after\n"
          "                          N ms (default 10000)\n"
          "  --help, --version\n");
}

/* Parse a non-negative integer option; exits with a message when it is not one. */
static long long parse_num(const char *flag, const char *value, long long min, long long max) {
  char *end = NULL;
  errno = 0;
  long long v = strtoll(value, &end, 10);
  if (errno || !end || *end || end == value || v < min || v > max) {
    fprintf(stderr, "opensandbox-bridge: %s: expected an integer from %lld to %lld, got '%s'\n",
            flag, min, max, value);
    exit(2);
  }
  return v;
}

/* --transport / OPENSANDBOX_TRANSPORT; exits with a message on anything else. */
static int parse_transport(const char *flag, const char *value) {
  if (strcmp(value, "auto") == 0)
    return BACKEND_TRANSPORT_AUTO;
  if (strcmp(value, "grpc") == 0)
    return BACKEND_TRANSPORT_GRPC;
  if (strcmp(value, "http") == 0)
    return BACKEND_TRANSPORT_HTTP;
  fprintf(stderr, "opensandbox-bridge: %s: expected auto, grpc or http, got '%s'\n", flag, value);
  exit(2);
}

/* --network / OPENSANDBOX_NETWORK; exits with a message on anything else. */
static int parse_network(const char *flag, const char *value) {
  if (strcmp(value, "none") == 0)
    return 0;
  if (strcmp(value, "egress") == 0)
    return 1;
  fprintf(stderr, "opensandbox-bridge: %s: expected none or egress, got '%s'\n", flag, value);
  exit(2);
}

static void set_str(char **slot, const char *value) {
  free(*slot);
  *slot = value && *value ? xstrdup(value) : NULL;
}

static void *signal_thread(void *arg) {
  sigset_t *set = arg;
  for (;;) {
    int sig = 0;
    if (sigwait(set, &sig) == 0) {
      log_info("signal %d: stopping", sig);
      rpc_request_stop();
    }
  }
  return NULL;
}

/* rpc's on_idle: after a burst, hand the freed heap back to the system. */
static void give_memory_back(void) {
  malloc_trim(0);
}

int main(int argc, char **argv) {
  log_set_prog("opensandbox-bridge");
  /* One arena: megabyte payloads are left to the heap (serving them from fresh mmaps cost a
   * page fault per 4 KiB: 20 % more CPU per 1 MiB fs/read), and give_memory_back returns it
   * once the bridge is idle; malloc_trim can give back the top of the main arena only, so a
   * second arena kept 5 MiB of a burst for good. No measurable contention: thread caches
   * serve the small allocations. */
  mallopt(M_ARENA_MAX, 1);
  char *url = NULL, *api_key = NULL, *cacert = NULL;
  int grpc_port = OSB_DEFAULT_GRPC_PORT;
  int grpc_insecure = 0;
  int transport = BACKEND_TRANSPORT_AUTO;
  int network = 0;
  long long request_timeout_ms = 30000;
  struct rpc_opts opts = {RPC_FRAMING_AUTO, OSB_DEFAULT_MAX_MESSAGE, OSB_DEFAULT_MAX_INFLIGHT,
                          give_memory_back, NULL, NULL};
  size_t max_output = OSB_DEFAULT_MAX_OUTPUT;
  struct mcp_config mcp = {methods_table, methods_count, NULL, "opensandbox-bridge",
                           BRIDGE_VERSION, 0, 10000, OSB_DEFAULT_MAX_INFLIGHT, 0};

  /* Environment first; flags override it. */
  const char *env;
  if ((env = getenv("OPENSANDBOX_URL")))
    set_str(&url, env);
  if ((env = getenv("OPENSANDBOX_GRPC_PORT")) && *env)
    grpc_port = (int)parse_num("OPENSANDBOX_GRPC_PORT", env, 1, 65535);
  if ((env = getenv("OPENSANDBOX_GRPC_INSECURE")))
    grpc_insecure = strcmp(env, "1") == 0 || strcmp(env, "true") == 0;
  if ((env = getenv("OPENSANDBOX_API_KEY")))
    set_str(&api_key, env);
  if ((env = getenv("OPENSANDBOX_REQUEST_TIMEOUT_MS")) && *env)
    request_timeout_ms = parse_num("OPENSANDBOX_REQUEST_TIMEOUT_MS", env, 1, 86400000);
  if ((env = getenv("OPENSANDBOX_TRANSPORT")) && *env)
    transport = parse_transport("OPENSANDBOX_TRANSPORT", env);
  if ((env = getenv("OPENSANDBOX_NETWORK")) && *env)
    network = parse_network("OPENSANDBOX_NETWORK", env);

  enum {
    OPT_URL = 256, OPT_GRPC_PORT, OPT_GRPC_INSECURE, OPT_API_KEY, OPT_TIMEOUT, OPT_CACERT,
    OPT_FRAMING, OPT_MAX_MESSAGE, OPT_MAX_INFLIGHT, OPT_MAX_OUTPUT, OPT_LOG_LEVEL, OPT_HELP,
    OPT_VERSION, OPT_TRANSPORT, OPT_NETWORK, OPT_MCP, OPT_MCP_YIELD
  };
  static const struct option longopts[] = {
      {"url", required_argument, NULL, OPT_URL},
      {"grpc-port", required_argument, NULL, OPT_GRPC_PORT},
      {"grpc-insecure", no_argument, NULL, OPT_GRPC_INSECURE},
      {"api-key", required_argument, NULL, OPT_API_KEY},
      {"request-timeout-ms", required_argument, NULL, OPT_TIMEOUT},
      {"cacert", required_argument, NULL, OPT_CACERT},
      {"transport", required_argument, NULL, OPT_TRANSPORT},
      {"network", required_argument, NULL, OPT_NETWORK},
      {"framing", required_argument, NULL, OPT_FRAMING},
      {"max-message", required_argument, NULL, OPT_MAX_MESSAGE},
      {"max-inflight", required_argument, NULL, OPT_MAX_INFLIGHT},
      {"max-output", required_argument, NULL, OPT_MAX_OUTPUT},
      {"log-level", required_argument, NULL, OPT_LOG_LEVEL},
      {"mcp", no_argument, NULL, OPT_MCP},
      {"mcp-yield-ms", required_argument, NULL, OPT_MCP_YIELD},
      {"help", no_argument, NULL, OPT_HELP},
      {"version", no_argument, NULL, OPT_VERSION},
      {NULL, 0, NULL, 0},
  };
  /* Exit status when the options end the run (usage, --help); the strings set so far are
     freed on the way out, which LeakSanitizer checks. */
  int early = -1;
  int c;
  while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
    switch (c) {
    case OPT_URL:
      set_str(&url, optarg);
      break;
    case OPT_GRPC_PORT:
      grpc_port = (int)parse_num("--grpc-port", optarg, 1, 65535);
      break;
    case OPT_GRPC_INSECURE:
      grpc_insecure = 1;
      break;
    case OPT_API_KEY:
      set_str(&api_key, optarg);
      break;
    case OPT_TIMEOUT:
      request_timeout_ms = parse_num("--request-timeout-ms", optarg, 1, 86400000);
      break;
    case OPT_CACERT:
      set_str(&cacert, optarg);
      break;
    case OPT_TRANSPORT:
      transport = parse_transport("--transport", optarg);
      break;
    case OPT_NETWORK:
      network = parse_network("--network", optarg);
      break;
    case OPT_FRAMING:
      if (strcmp(optarg, "lsp") == 0) {
        opts.framing = RPC_FRAMING_LSP;
      } else if (strcmp(optarg, "ndjson") == 0) {
        opts.framing = RPC_FRAMING_NDJSON;
      } else {
        fprintf(stderr, "opensandbox-bridge: --framing: expected lsp or ndjson\n");
        early = 2;
        goto parsed;
      }
      break;
    case OPT_MAX_MESSAGE:
      opts.max_message = (size_t)parse_num("--max-message", optarg, 64, (long long)1 << 32);
      break;
    case OPT_MAX_INFLIGHT:
      opts.max_inflight = (unsigned)parse_num("--max-inflight", optarg, 1, 65536);
      break;
    case OPT_MAX_OUTPUT:
      max_output = (size_t)parse_num("--max-output", optarg, 0, (long long)1 << 32);
      break;
    case OPT_LOG_LEVEL: {
      enum log_level level;
      if (log_parse_level(optarg, &level) < 0) {
        fprintf(stderr, "opensandbox-bridge: --log-level: expected error|warn|info|debug|trace\n");
        early = 2;
        goto parsed;
      }
      log_set_level(level);
      break;
    }
    case OPT_MCP:
      mcp.force = 1;
      break;
    case OPT_MCP_YIELD:
      mcp.yield_ms = parse_num("--mcp-yield-ms", optarg, 0, 86400000);
      break;
    case OPT_HELP:
      usage(stdout);
      early = 0;
      goto parsed;
    case OPT_VERSION:
      printf("opensandbox-bridge %s\n", BRIDGE_VERSION);
      early = 0;
      goto parsed;
    default:
      usage(stderr);
      early = 2;
      goto parsed;
    }
  }
  if (optind < argc) {
    fprintf(stderr, "opensandbox-bridge: unexpected argument '%s'\n", argv[optind]);
    usage(stderr);
    early = 2;
    goto parsed;
  }
parsed:
  if (early >= 0) {
    free(url);
    free(api_key);
    free(cacert);
    return early;
  }

  /* A client that goes away must not kill us mid-reply; SIGTERM/SIGINT stop cleanly. */
  signal(SIGPIPE, SIG_IGN);
  static sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &stop_signals, NULL);
  if (thread_spawn(signal_thread, &stop_signals, 0) != 0)
    log_warn("no signal thread: SIGTERM will not stop the bridge cleanly");

  struct bridge br;
  memset(&br, 0, sizeof br);
  pthread_mutex_init(&br.lock, NULL);
  br.config.base_url = url;
  br.config.grpc_port = grpc_port;
  br.config.grpc_insecure = grpc_insecure;
  br.config.api_key = api_key;
  br.config.request_timeout_ms = request_timeout_ms;
  br.config.cacert = cacert;
  br.config.transport = transport;
  br.config.network = network;
  br.config.max_message = opts.max_message;
  br.config.max_output = max_output;
  br.max_output = max_output;
  br.version = BRIDGE_VERSION;

  /* The first message decides between JSON-RPC and MCP (API.md, "MCP mode"). */
  mcp.ctx = &br;
  mcp.max_inflight = opts.max_inflight;
  mcp.exec_streams = 1; /* exec/start streams on both backends (remote: over Exec) */
  opts.takeover = mcp_takeover;
  opts.takeover_arg = &mcp;

  log_info("starting (%s backend)", url ? "remote" : "local");
  int code = rpc_serve(STDIN_FILENO, STDOUT_FILENO, methods_table, methods_count, &br, &opts);
  bridge_close(&br); /* ends every local session */
  pthread_mutex_destroy(&br.lock);
  log_info("exiting with status %d", code);
  return code;
}
