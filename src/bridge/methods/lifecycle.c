/* lifecycle.c - the lifecycle and meta methods: initialize (config from
 * initializationOptions, capabilities), rpc.discover (the embedded OpenRPC document) and
 * server/health. shutdown, exit and $/cancelRequest belong to rpc. Layer: methods. */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "bridge/methods/methods.h"
#include "bridge/methods/methods_int.h"
#include "common/log.h"
#include "common/mem.h"

/* schema/openrpc.json, embedded by the build (NUL-terminated). */
extern const char osb_openrpc_json[];

static char *dup_or_null(const char *s) {
  return s ? xstrdup(s) : NULL;
}

/* Copy of the current configuration with its own strings (for bridge_reconfigure). */
static void config_snapshot(struct bridge *br, struct backend_config *out) {
  pthread_mutex_lock(&br->lock);
  *out = br->config;
  out->base_url = dup_or_null(br->config.base_url);
  out->api_key = dup_or_null(br->config.api_key);
  out->cacert = dup_or_null(br->config.cacert);
  pthread_mutex_unlock(&br->lock);
}

/* Replace *slot (an owned string) with a copy of s. */
static void config_set_str(const char **slot, const char *s) {
  char *copy = xstrdup(s);
  free((char *)*slot);
  *slot = copy;
}

/* Apply initializationOptions (Config of API.md) over *cfg. Members absent, null or (for
 * strings) empty change nothing; unknown members are ignored. */
static int apply_options(json_object *opts, struct backend_config *cfg, struct osb_err *err) {
  const char *base_url = NULL, *api_key = NULL, *transport = NULL, *network = NULL;
  int64_t grpc_port = -1, timeout_ms = -1;
  int insecure = -1;
  if (params_string(opts, "baseUrl", NULL, PARAM_OPTIONAL, &base_url, err) < 0 ||
      params_int(opts, "grpcPort", 1, 65535, &grpc_port, err) < 0 ||
      params_bool(opts, "grpcInsecure", &insecure, err) < 0 ||
      params_string(opts, "apiKey", NULL, PARAM_OPTIONAL, &api_key, err) < 0 ||
      params_int(opts, "requestTimeoutMs", 1, INT64_MAX, &timeout_ms, err) < 0 ||
      params_string(opts, "transport", NULL, PARAM_OPTIONAL, &transport, err) < 0 ||
      params_string(opts, "network", NULL, PARAM_OPTIONAL, &network, err) < 0)
    return -1;
  if (network && network[0]) {
    if (strcmp(network, "none") == 0)
      cfg->network = 0;
    else if (strcmp(network, "egress") == 0)
      cfg->network = 1;
    else
      return params_fail(err, "network", "must be \"none\" or \"egress\"");
  }
  if (transport && transport[0]) {
    if (strcmp(transport, "auto") == 0)
      cfg->transport = BACKEND_TRANSPORT_AUTO;
    else if (strcmp(transport, "grpc") == 0)
      cfg->transport = BACKEND_TRANSPORT_GRPC;
    else if (strcmp(transport, "http") == 0)
      cfg->transport = BACKEND_TRANSPORT_HTTP;
    else
      return params_fail(err, "transport", "must be \"auto\", \"grpc\" or \"http\"");
  }
  if (base_url && base_url[0]) {
    const char *host = NULL;
    if (strncasecmp(base_url, "http://", 7) == 0)
      host = base_url + 7;
    else if (strncasecmp(base_url, "https://", 8) == 0)
      host = base_url + 8;
    if (!host || !host[0] || host[0] == '/')
      return params_fail(err, "baseUrl", "must be an http:// or https:// URL");
    config_set_str(&cfg->base_url, base_url);
  }
  if (api_key && api_key[0])
    config_set_str(&cfg->api_key, api_key);
  if (grpc_port > 0)
    cfg->grpc_port = (int)grpc_port;
  if (insecure >= 0)
    cfg->grpc_insecure = insecure;
  if (timeout_ms > 0)
    cfg->request_timeout_ms = timeout_ms;
  return 0;
}

static json_object *capabilities(int remote) {
  json_object *caps = OSB_J(json_object_new_object());
  json_object *names = OSB_J(json_object_new_array());
  for (size_t i = 0; i < methods_count; i++)
    methods_append(names, OSB_J(json_object_new_string(methods_table[i].name)));
  methods_append(names, OSB_J(json_object_new_string("shutdown")));
  methods_set(caps, "methods", names);
  methods_set(caps, "backend", OSB_J(json_object_new_string(remote ? "remote" : "local")));
  return caps;
}

int method_initialize(void *ctx, struct rpc_req *req, json_object *params, json_object **result,
                      struct osb_err *err) {
  struct bridge *br = ctx;
  struct backend_config cfg;
  json_object *opts = NULL;

  if (json_object_object_get_ex(params, "initializationOptions", &opts) && opts &&
      !json_object_is_type(opts, json_type_object))
    return params_fail(err, "initializationOptions", "must be an object");
  config_snapshot(br, &cfg);
  if (opts && apply_options(opts, &cfg, err) < 0) {
    free((char *)cfg.base_url);
    free((char *)cfg.api_key);
    free((char *)cfg.cacert);
    return -1;
  }
  int remote = cfg.base_url && cfg.base_url[0];
  if (bridge_reconfigure(br, &cfg))
    log_info("initialize: configuration changed; backend %s", remote ? "remote" : "local");

  json_object *r = OSB_J(json_object_new_object());
  json_object *info = OSB_J(json_object_new_object());
  json_object *caps = capabilities(remote);
  methods_set(info, "name", OSB_J(json_object_new_string("opensandbox-bridge")));
  methods_set(info, "version", OSB_J(json_object_new_string(br->version ? br->version : "0.0.0")));
  methods_set(r, "serverInfo", info);
  methods_set(r, "capabilities", caps);
  *result = r;
  return 0;
}

int method_rpc_discover(void *ctx, struct rpc_req *req, json_object *params,
                        json_object **result, struct osb_err *err) {
  json_object *doc = json_tokener_parse(osb_openrpc_json);
  if (!doc)
    return osb_err_set(err, OSB_ERR_INTERNAL, NULL, "the embedded OpenRPC document is invalid");
  *result = doc;
  return 0;
}

static int health_result(struct methods_op *m, json_object **result, struct osb_err *err) {
  int64_t latency = call_now_ms() - m->count;
  int ok = m->op.rc == 0;
  if (!ok && m->op.err.kind == OSB_ERR_CANCELLED) {
    *err = m->op.err; /* a cancelled request is answered as cancelled, not as unhealthy */
    m->op.err = (struct osb_err)OSB_ERR_INIT;
    return -1;
  }
  if (!ok)
    log_debug("server/health: %s", m->op.err.message ? m->op.err.message : "unhealthy");
  json_object *r = OSB_J(json_object_new_object());
  methods_set(r, "ok", OSB_J(json_object_new_boolean(ok)));
  methods_set(r, "backend",
              OSB_J(json_object_new_string(m->be->ops->name ? m->be->ops->name : "local")));
  if (m->be->config.base_url && m->be->config.base_url[0])
    methods_set(r, "url", OSB_J(json_object_new_string(m->be->config.base_url)));
  methods_set(r, "latencyMs", OSB_J(json_object_new_int64(latency)));
  /* API.md: what the backend does beyond the public SDKs' surface. Live output: always from
   * the engine in-process; remotely when the server has opensandboxd's RunStream. */
  json_object *features = OSB_J(json_object_new_array());
  if ((!(m->be->config.base_url && m->be->config.base_url[0]) ||
                   (ok && (m->op.out.features & BACKEND_FEATURE_STREAM))))
    methods_append(features, OSB_J(json_object_new_string("stream")));
  if (backend_supports(m->be, BACKEND_EXEC_START) &&
      (!(m->be->config.base_url && m->be->config.base_url[0]) ||
       (ok && (m->op.out.features & BACKEND_FEATURE_EXEC)))) {
    methods_append(features, OSB_J(json_object_new_string("exec")));
    methods_append(features, OSB_J(json_object_new_string("stdin")));
  }
  /* upload: any size; the remote backend only when the server has opensandboxd's chunked
   * Upload/Download (else it moves files up to the message limit) */
  if ((!(m->be->config.base_url && m->be->config.base_url[0]) ||
       (ok && (m->op.out.features & BACKEND_FEATURE_UPLOAD))) &&
      backend_supports(m->be, BACKEND_UPLOAD) && backend_supports(m->be, BACKEND_DOWNLOAD))
    methods_append(features, OSB_J(json_object_new_string("upload")));
  methods_set(r, "features", features);
  *result = r;
  return 0;
}

int method_server_health(void *ctx, struct rpc_req *req, json_object *params,
                         json_object **result, struct osb_err *err) {
  struct methods_op *m = methods_op_new(ctx, req, "server/health", BACKEND_HEALTH, 0, err);
  if (!m)
    return -1;
  m->count = call_now_ms();
  m->also_on_failure = 1;
  m->result = health_result;
  return methods_op_start(m);
}
