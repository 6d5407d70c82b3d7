/* envelope.c - JSON-RPC 2.0 envelopes: one framed message (or batch) in, replies for what
 * is answered at once (parse errors, invalid requests, builtins such as `shutdown`, `exit`
 * and `$/cancelRequest`) and requests created and handed to rpc.c for the rest. Ids are
 * copied with their exact source text. Layer: rpc. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/utf8.h"
#include "rpc/jsonparse.h"
#include "rpc/jsonscan.h"
#include "rpc/rpc_int.h"

static char *id_key_of(json_object *id) {
  const char *s = json_object_to_json_string_ext(id, JSON_C_TO_STRING_PLAIN);
  return strdup(s ? s : "null");
}

/* An id of our own for the reply, never shared with the parsed message: json-c's
 * reference counts are not atomic, and the message is freed on the reader thread while
 * workers still use the request. A numeric id keeps its original text (json-c would
 * normalise it). */
static json_object *own_id(json_object *id, const char *raw, size_t raw_len) {
  switch (json_object_get_type(id)) {
  case json_type_string:
    return json_object_new_string_len(json_object_get_string(id), json_object_get_string_len(id));
  case json_type_int:
  case json_type_double: {
    char *text = raw && raw_len ? strndup(raw, raw_len)
                                : strdup(json_object_to_json_string_ext(id, JSON_C_TO_STRING_PLAIN));
    json_object *exact = text ? json_object_new_double_s(json_object_get_double(id), text) : NULL;
    free(text);
    return exact;
  }
  default:
    return NULL;
  }
}

/* The method called name (len bytes: a JSON string may hold a NUL, and
 * "sandbox/list\u0000x" must not find sandbox/list). */
static const struct rpc_method *find_method(struct rpc_core *core, const char *name, size_t len) {
  if (strlen(name) != len)
    return NULL;
  for (size_t i = 0; i < core->n_methods; i++)
    if (strcmp(core->methods[i].name, name) == 0)
      return &core->methods[i];
  return NULL;
}

enum builtin { BUILTIN_NONE, BUILTIN_SHUTDOWN, BUILTIN_EXIT, BUILTIN_CANCEL, BUILTIN_INITIALIZED };

static enum builtin builtin_of(const char *name) {
  if (strcmp(name, "shutdown") == 0)
    return BUILTIN_SHUTDOWN;
  if (strcmp(name, "exit") == 0)
    return BUILTIN_EXIT;
  if (strcmp(name, "$/cancelRequest") == 0)
    return BUILTIN_CANCEL;
  if (strcmp(name, "initialized") == 0)
    return BUILTIN_INITIALIZED;
  return BUILTIN_NONE;
}

/* Handle one request object. raw/raw_len is its source text (for exact numeric ids).
 * Returns the immediate reply (error or builtin result) to deliver, or NULL when the
 * request was dispatched or needs no reply. *is_notification tells the caller whether a
 * reply may be sent at all. */
static json_object *handle_one(struct rpc_core *core, json_object *msg, const char *raw,
                               size_t raw_len, struct batch *batch, size_t batch_index,
                               struct request **own) {
  json_object *id = NULL;
  int has_id = 0;
  int id_valid = 1;
  json_object *id_exact = NULL;
  json_object *reply = NULL;

  if (!json_object_is_type(msg, json_type_object))
    return reply_error_simple(NULL, OSB_ERR_INVALID_REQUEST, NULL,
                              "Invalid Request: a request must be a JSON object");

  if (json_object_object_get_ex(msg, "id", &id)) {
    has_id = 1;
    enum json_type t = json_object_get_type(id);
    if (t == json_type_int || t == json_type_double) {
      size_t off = 0, len = 0;
      if (raw && jsonscan_member(raw, raw_len, "id", &off, &len))
        id_exact = own_id(id, raw + off, len);
      else
        id_exact = own_id(id, NULL, 0);
    } else if (t == json_type_string || t == json_type_null) {
      id_exact = own_id(id, NULL, 0);
    } else {
      id_valid = 0;
    }
  }
  json_object *reply_id = id_valid ? id_exact : NULL;

  json_object *v = NULL;
  if (!json_object_object_get_ex(msg, "jsonrpc", &v) || !json_object_is_type(v, json_type_string) ||
      strcmp(json_object_get_string(v), "2.0") != 0) {
    reply = reply_error_simple(reply_id, OSB_ERR_INVALID_REQUEST, NULL,
                               "Invalid Request: jsonrpc must be \"2.0\"");
    goto out;
  }
  if (!id_valid) {
    reply = reply_error_simple(NULL, OSB_ERR_INVALID_REQUEST, NULL,
                               "Invalid Request: id must be a string, a number or null");
    goto out;
  }
  json_object *m = NULL;
  if (!json_object_object_get_ex(msg, "method", &m) || !json_object_is_type(m, json_type_string)) {
    reply = reply_error_simple(reply_id, OSB_ERR_INVALID_REQUEST, NULL,
                               "Invalid Request: method must be a string");
    goto out;
  }
  const char *name = json_object_get_string(m);
  size_t name_len = (size_t)json_object_get_string_len(m);

  json_object *params = NULL;
  json_object *p = NULL;
  if (json_object_object_get_ex(msg, "params", &p) && p) {
    if (json_object_is_type(p, json_type_object)) {
      /* Detach params from the message so the request owns them alone (see own_id). */
      params = json_object_get(p);
      json_object_object_del(msg, "params");
    } else if (json_object_is_type(p, json_type_array)) {
      if (json_object_array_length(p) != 0) {
        if (has_id)
          reply = reply_error_simple(reply_id, OSB_ERR_INVALID_PARAMS, NULL,
                                     "Invalid params: params must be an object (by name)");
        goto out;
      }
    } else {
      reply = reply_error_simple(reply_id, OSB_ERR_INVALID_REQUEST, NULL,
                                 "Invalid Request: params must be an object or an array");
      goto out;
    }
  }
  if (!params)
    params = json_object_new_object();

  log_debug("<- %s%s", name, has_id ? "" : " (notification)");

  enum builtin b = strlen(name) == name_len ? builtin_of(name) : BUILTIN_NONE;
  if (b == BUILTIN_EXIT) {
    core->exit_requested = 1;
    json_object_put(params);
    goto out; /* exit never replies */
  }
  if (core->shutdown) {
    json_object_put(params);
    if (has_id)
      reply = reply_error_simple(reply_id, OSB_ERR_INVALID_REQUEST, NULL,
                                 "Invalid Request: the server is shut down");
    goto out;
  }
  if (b == BUILTIN_CANCEL) {
    json_object *cid = NULL;
    if (json_object_object_get_ex(params, "id", &cid)) {
      char *key = id_key_of(cid);
      if (key) {
        cancel_by_key(core, key);
        free(key);
      }
    }
    json_object_put(params);
    if (has_id) { /* sent as a request: acknowledge */
      reply = reply_new(reply_id);
      json_object_object_add(reply, "result", NULL);
    }
    goto out;
  }
  if (b == BUILTIN_INITIALIZED) {
    json_object_put(params);
    goto out;
  }
  if (b == BUILTIN_SHUTDOWN) {
    json_object_put(params);
    core->shutdown = 1;
    if (has_id) {
      reply = reply_new(reply_id);
      json_object_object_add(reply, "result", NULL);
    }
    goto out;
  }
  const struct rpc_method *method = find_method(core, name, name_len);
  if (!method) {
    json_object_put(params);
    if (has_id) {
      /* Quote at most 200 bytes of the name, cut at a character boundary. */
      char msgbuf[300];
      size_t shown = utf8_cut(name, strnlen(name, name_len), 200);
      snprintf(msgbuf, sizeof msgbuf, "Method not found: %.*s", (int)shown, name);
      reply = reply_error_simple(reply_id, OSB_ERR_METHOD_NOT_FOUND, NULL, msgbuf);
    }
    goto out;
  }

  pthread_mutex_lock(&core->lock);
  if (core->n_inflight >= core->opts.max_inflight) {
    pthread_mutex_unlock(&core->lock);
    json_object_put(params);
    if (has_id) {
      json_object *data = json_object_new_object();
      json_object_object_add(data, "limit", json_object_new_int64(core->opts.max_inflight));
      reply = reply_error_simple(reply_id, OSB_ERR_BUSY, data,
                                 "too many requests in flight; retry later");
    } else {
      log_warn("dropping notification %s: too many requests in flight", name);
    }
    goto out;
  }
  struct request *req = calloc(1, sizeof *req);
  if (!req) {
    pthread_mutex_unlock(&core->lock);
    json_object_put(params);
    if (has_id)
      reply = reply_error_simple(reply_id, OSB_ERR_INTERNAL, NULL, "out of memory");
    goto out;
  }
  req->core = core;
  req->has_id = has_id;
  req->id = has_id ? reply_id : NULL; /* the request takes our own id */
  if (has_id)
    id_exact = NULL;
  if (has_id && !json_object_is_type(reply_id, json_type_null))
    req->id_key = id_key_of(id);
  req->method = method;
  req->params = params;
  req->batch = batch;
  req->batch_index = batch_index;
  req->refs = 2;
  req->next = core->inflight;
  if (core->inflight)
    core->inflight->prev = req;
  core->inflight = req;
  core->n_inflight++;
  core->requests_seen++;
  if (batch && has_id)
    batch->pending++;
  if (method->inline_call) {
    pthread_mutex_unlock(&core->lock);
    request_execute(req);
  } else {
    if (method->fn_quick) {
      pthread_mutex_unlock(&core->lock);
      int deferred = request_quick(req);
      pthread_mutex_lock(&core->lock);
      if (!deferred)
        req = NULL;
    }
    if (req && own && handoff_possible_locked(core))
      *own = req; /* executed by this thread once reading is handed on */
    else if (req)
      dispatch_locked(core, req);
    pthread_mutex_unlock(&core->lock);
  }

out:
  json_object_put(id_exact);
  return reply;
}

struct batch_scan {
  const char **raw;
  size_t *len;
  size_t n;
};

static void batch_scan_cb(void *arg, size_t index, size_t off, size_t len) {
  struct batch_scan *bs = arg;
  if (index < bs->n) {
    bs->raw[index] = (const char *)(uintptr_t)off; /* offset for now; rebased below */
    bs->len[index] = len;
  }
}

static void handle_batch(struct rpc_core *core, json_object *arr,
                         const char *raw, size_t raw_len) {
  size_t n = json_object_array_length(arr);
  if (n == 0) {
    send_immediate(core, reply_error_simple(NULL, OSB_ERR_INVALID_REQUEST, NULL,
                                            "Invalid Request: empty batch"));
    return;
  }
  struct batch *b = calloc(1, sizeof *b);
  const char **eraw = calloc(n, sizeof *eraw);
  size_t *elen = calloc(n, sizeof *elen);
  json_object **replies = calloc(n, sizeof *replies);
  if (!b || !eraw || !elen || !replies) {
    free(b);
    free(eraw);
    free(elen);
    free(replies);
    send_immediate(core, reply_error_simple(NULL, OSB_ERR_INTERNAL, NULL, "out of memory"));
    return;
  }
  struct batch_scan bs = {eraw, elen, n};
  if (jsonscan_elements(raw, raw_len, batch_scan_cb, &bs) == n) {
    for (size_t i = 0; i < n; i++)
      eraw[i] = raw + (uintptr_t)eraw[i];
  } else {
    memset(eraw, 0, n * sizeof *eraw);
    memset(elen, 0, n * sizeof *elen);
  }
  b->replies = replies;
  b->n = n;
  b->holds = 1;
  for (size_t i = 0; i < n; i++) {
    json_object *reply = handle_one(core, json_object_array_get_idx(arr, i), eraw[i], elen[i], b, i, NULL);
    if (reply) {
      pthread_mutex_lock(&core->lock);
      b->replies[i] = reply;
      pthread_mutex_unlock(&core->lock);
    }
  }
  free(eraw);
  free(elen);
  pthread_mutex_lock(&core->lock);
  b->holds = 0;
  batch_send_locked(core, b);
  pthread_mutex_unlock(&core->lock);
}

/* Parse msg with json-c: into *out (NULL for the JSON value null) and return 0, or send
 * the parse error reply and return -1. */
static int parse_json_c(struct rpc_core *core, const char *msg, size_t len, json_object **out) {
  *out = NULL;
  struct json_tokener *tok = json_tokener_new_ex(PARSE_DEPTH);
  if (!tok) {
    send_immediate(core, reply_error_simple(NULL, OSB_ERR_INTERNAL, NULL, "out of memory"));
    return -1;
  }
  json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
  json_object *obj = json_tokener_parse_ex(tok, msg, (int)len);
  enum json_tokener_error jerr = json_tokener_get_error(tok);
  size_t end = json_tokener_get_parse_end(tok);
  if (!obj && jerr == json_tokener_continue) {
    /* A top-level scalar ends only at end of input: say so with a NUL. */
    obj = json_tokener_parse_ex(tok, "", 1);
    jerr = json_tokener_get_error(tok);
    end = len;
  }
  int trailing = 0;
  if (obj && jerr == json_tokener_success) {
    for (size_t i = end; i < len; i++) {
      char c = msg[i];
      if (c != ' ' && c != '\t' && c != '\r' && c != '\n') {
        trailing = 1;
        break;
      }
    }
  }
  if (!obj && jerr == json_tokener_success && !trailing) {
    /* The message was the JSON value null (json-c's NULL object). */
    json_tokener_free(tok);
    return 0;
  }
  if (!obj || jerr != json_tokener_success || trailing) {
    char why[200];
    snprintf(why, sizeof why, "Parse error: %s",
             trailing ? "unexpected data after the JSON value"
                      : (jerr == json_tokener_continue ? "incomplete JSON"
                                                       : json_tokener_error_desc(jerr)));
    json_object_put(obj);
    json_tokener_free(tok);
    send_immediate(core, reply_error_simple(NULL, OSB_ERR_PARSE, NULL, why));
    return -1;
  }
  json_tokener_free(tok);
  *out = obj;
  return 0;
}

/* Handle one message. *own (when not NULL on return) is a request this thread is to execute
 * itself once it has handed reading on (see reader_run). */
void handle_message(struct rpc_core *core, const char *msg, size_t len,
                           struct request **own) {
  log_trace("<- %.*s", (int)(len > 1000 ? 1000 : len), msg);
  /* json-c's own check lets overlong forms, surrogates and code points past U+10FFFF
   * through, and they could come back out in ids: check strictly first. */
  if (!utf8_valid(msg, len)) {
    send_immediate(core, reply_error_simple(NULL, OSB_ERR_PARSE, NULL,
                                            "Parse error: the message is not valid UTF-8"));
    return;
  }
  /* The fast parser takes every well-formed message and builds what json-c would; what it
   * declines (malformed, or one of json-c's laxer forms) goes to json-c, which decides
   * and words any error as before. */
  json_object *obj = NULL;
  if (jsonparse(msg, len, PARSE_DEPTH, &obj) < 0 && parse_json_c(core, msg, len, &obj) < 0)
    return;
  if (!obj) { /* the message was the JSON value null */
    send_immediate(core, reply_error_simple(NULL, OSB_ERR_INVALID_REQUEST, NULL,
                                            "Invalid Request: a request must be a JSON object"));
    return;
  }
  if (json_object_is_type(obj, json_type_array))
    handle_batch(core, obj, msg, len);
  else
    send_immediate(core, handle_one(core, obj, msg, len, NULL, 0, own));
  json_object_put(obj);
}
