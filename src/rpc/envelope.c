/* envelope.c - JSON-RPC 2.0 envelopes: one framed message (or batch) in, replies for what
 * is answered at once (parse errors, invalid requests, builtins such as `shutdown`, `exit`
 * and `$/cancelRequest`) and requests handed to rpc.c for the rest (rpc_core_request). Ids
 * are copied with their exact source text. Asks rpc.c for everything about the core through
 * rpc_int.h. Layer: rpc. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/mem.h"
#include "common/utf8.h"
#include "rpc/jsonparse.h"
#include "rpc/jsonscan.h"
#include "rpc/rpc_int.h"

static char *id_key_of(json_object *id) {
  const char *s = json_object_to_json_string_ext(id, JSON_C_TO_STRING_PLAIN);
  return xstrdup(osb_nonnull((void *)s)); /* NULL only for want of memory */
}

/* An id of our own for the reply, never shared with the parsed message: json-c's
 * reference counts are not atomic, and the message is freed on the reader thread while
 * workers still use the request. A numeric id keeps its original text (json-c would
 * normalise it). */
static json_object *own_id(json_object *id, const char *raw, size_t raw_len) {
  switch (json_object_get_type(id)) {
  case json_type_string:
    return OSB_J(
        json_object_new_string_len(json_object_get_string(id), json_object_get_string_len(id)));
  case json_type_int:
  case json_type_double: {
    char *text = raw && raw_len ? osb_nonnull(strndup(raw, raw_len)) : id_key_of(id);
    json_object *exact = OSB_J(json_object_new_double_s(json_object_get_double(id), text));
    free(text);
    return exact;
  }
  default:
    return NULL;
  }
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
 * request was handed to rpc.c or needs no reply. */
static json_object *handle_one(struct rpc_core *core, json_object *msg, const char *raw,
                               size_t raw_len, struct rpc_batch *batch, size_t batch_index) {
  json_object *id = NULL;
  int has_id = 0;
  int id_valid = 1;
  json_object *id_exact = NULL;
  json_object *reply = NULL;

  if (!json_object_is_type(msg, json_type_object))
    return rpc_reply_error(NULL, OSB_ERR_INVALID_REQUEST, NULL,
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
    reply = rpc_reply_error(reply_id, OSB_ERR_INVALID_REQUEST, NULL,
                               "Invalid Request: jsonrpc must be \"2.0\"");
    goto out;
  }
  if (!id_valid) {
    reply = rpc_reply_error(NULL, OSB_ERR_INVALID_REQUEST, NULL,
                               "Invalid Request: id must be a string, a number or null");
    goto out;
  }
  json_object *m = NULL;
  if (!json_object_object_get_ex(msg, "method", &m) || !json_object_is_type(m, json_type_string)) {
    reply = rpc_reply_error(reply_id, OSB_ERR_INVALID_REQUEST, NULL,
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
          reply = rpc_reply_error(reply_id, OSB_ERR_INVALID_PARAMS, NULL,
                                     "Invalid params: params must be an object (by name)");
        goto out;
      }
    } else {
      reply = rpc_reply_error(reply_id, OSB_ERR_INVALID_REQUEST, NULL,
                                 "Invalid Request: params must be an object or an array");
      goto out;
    }
  }
  if (!params)
    params = OSB_J(json_object_new_object());

  log_debug("<- %s%s", name, has_id ? "" : " (notification)");

  enum builtin b = strlen(name) == name_len ? builtin_of(name) : BUILTIN_NONE;
  if (b == BUILTIN_EXIT) {
    rpc_core_exit(core);
    json_object_put(params);
    goto out; /* exit never replies */
  }
  if (rpc_core_is_shut_down(core)) {
    json_object_put(params);
    if (has_id)
      reply = rpc_reply_error(reply_id, OSB_ERR_INVALID_REQUEST, NULL,
                                 "Invalid Request: the server is shut down");
    goto out;
  }
  if (b == BUILTIN_CANCEL) {
    json_object *cid = NULL;
    if (json_object_object_get_ex(params, "id", &cid)) {
      char *key = id_key_of(cid);
      if (key) {
        rpc_core_cancel(core, key);
        free(key);
      }
    }
    json_object_put(params);
    if (has_id) { /* sent as a request: acknowledge */
      reply = rpc_reply_new(reply_id);
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
    rpc_core_shutdown(core);
    if (has_id) {
      reply = rpc_reply_new(reply_id);
      json_object_object_add(reply, "result", NULL);
    }
    goto out;
  }
  const struct rpc_method *method = rpc_core_find(core, name, name_len);
  if (!method) {
    json_object_put(params);
    if (has_id) {
      /* Quote at most 200 bytes of the name, cut at a character boundary. */
      char msgbuf[300];
      size_t shown = utf8_cut(name, strnlen(name, name_len), 200);
      snprintf(msgbuf, sizeof msgbuf, "Method not found: %.*s", (int)shown, name);
      reply = rpc_reply_error(reply_id, OSB_ERR_METHOD_NOT_FOUND, NULL, msgbuf);
    }
    goto out;
  }

  char *id_key = NULL;
  if (has_id && !json_object_is_type(reply_id, json_type_null))
    id_key = id_key_of(id);
  /* the request takes our own id (a notification has none) */
  json_object *req_id = has_id ? reply_id : NULL;
  if (has_id)
    id_exact = NULL;
  reply = rpc_core_request(core, method, req_id, has_id, id_key, params, batch, batch_index);

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
    rpc_core_send(core, rpc_reply_error(NULL, OSB_ERR_INVALID_REQUEST, NULL,
                                        "Invalid Request: empty batch"));
    return;
  }
  struct rpc_batch *b = rpc_batch_new(core, n);
  const char **eraw = xcalloc(n, sizeof *eraw);
  size_t *elen = xcalloc(n, sizeof *elen);
  struct batch_scan bs = {eraw, elen, n};
  if (jsonscan_elements(raw, raw_len, batch_scan_cb, &bs) == n) {
    for (size_t i = 0; i < n; i++)
      eraw[i] = raw + (uintptr_t)eraw[i];
  } else {
    memset(eraw, 0, n * sizeof *eraw);
    memset(elen, 0, n * sizeof *elen);
  }
  for (size_t i = 0; i < n; i++) {
    json_object *reply = handle_one(core, json_object_array_get_idx(arr, i), eraw[i], elen[i], b, i);
    if (reply)
      rpc_batch_answer(core, b, i, reply);
  }
  free(eraw);
  free(elen);
  rpc_batch_release(core, b);
}

/* Parse msg with json-c: into *out (NULL for the JSON value null) and return 0, or send
 * the parse error reply and return -1. */
static int parse_json_c(struct rpc_core *core, const char *msg, size_t len, json_object **out) {
  *out = NULL;
  struct json_tokener *tok = osb_nonnull(json_tokener_new_ex(RPC_PARSE_DEPTH));
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
    rpc_core_send(core, rpc_reply_error(NULL, OSB_ERR_PARSE, NULL, why));
    return -1;
  }
  json_tokener_free(tok);
  *out = obj;
  return 0;
}

void rpc_envelope_handle(struct rpc_core *core, const char *msg, size_t len) {
  log_trace("<- %.*s", (int)(len > 1000 ? 1000 : len), msg);
  /* json-c's own check lets overlong forms, surrogates and code points past U+10FFFF
   * through, and they could come back out in ids: check strictly first. */
  if (!utf8_valid(msg, len)) {
    rpc_core_send(core, rpc_reply_error(NULL, OSB_ERR_PARSE, NULL,
                                            "Parse error: the message is not valid UTF-8"));
    return;
  }
  /* The fast parser takes every well-formed message and builds what json-c would; what it
   * declines (malformed, or one of json-c's laxer forms) goes to json-c, which decides
   * and words any error as before. */
  json_object *obj = NULL;
  if (jsonparse(msg, len, RPC_PARSE_DEPTH, &obj) < 0 && parse_json_c(core, msg, len, &obj) < 0)
    return;
  if (!obj) { /* the message was the JSON value null */
    rpc_core_send(core, rpc_reply_error(NULL, OSB_ERR_INVALID_REQUEST, NULL,
                                            "Invalid Request: a request must be a JSON object"));
    return;
  }
  if (json_object_is_type(obj, json_type_array))
    handle_batch(core, obj, msg, len);
  else
    rpc_core_send(core, handle_one(core, obj, msg, len, NULL, 0));
  json_object_put(obj);
}
