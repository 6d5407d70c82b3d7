/* err.h - the one error type of the bridge: a kind (fixing the JSON-RPC code and the
 * data.type a client library would raise), a message and optional extra data.
 * Fallible bridge functions return 0 or -1 and take `struct osb_err *err` last, filled
 * once and only on failure. Only the rpc layer turns it into a reply and clears it.
 * Layer: common (uses json-c for the data member only). */
#ifndef OSB_COMMON_ERR_H
#define OSB_COMMON_ERR_H

#include <json-c/json.h>

/* XX(kind, JSON-RPC code, data.type or NULL for the standard codes) */
#define OSB_ERR_MAP(XX)                                              \
  XX(PARSE, -32700, NULL)                                            \
  XX(INVALID_REQUEST, -32600, NULL)                                  \
  XX(METHOD_NOT_FOUND, -32601, NULL)                                 \
  XX(INVALID_PARAMS, -32602, NULL)                                   \
  XX(INTERNAL, -32603, NULL)                                         \
  XX(CANCELLED, -32800, NULL)                                        \
  XX(SERVER, -32000, "OpenSandboxError")                             \
  XX(NOT_FOUND, -32001, "SandboxNotFoundError")                      \
  XX(CONNECTION, -32003, "SandboxConnectionError")                   \
  XX(COMMAND, -32004, "CommandExecutionError")                       \
  XX(FILE, -32005, "FileOperationError")                             \
  XX(UNSUPPORTED, -32006, "UnsupportedError")                        \
  XX(TIMEOUT, -32007, "TimeoutError")                                \
  XX(BUSY, -32008, "BusyError")

enum osb_err_kind {
  OSB_ERR_NONE = 0,
#define XX(kind, code, type) OSB_ERR_##kind,
  OSB_ERR_MAP(XX)
#undef XX
};

struct osb_err {
  enum osb_err_kind kind; /* fixes error.code and data.type; OSB_ERR_NONE when unset */
  char *message;          /* owned; one sentence naming the field or path */
  json_object *data;      /* owned extra members of error.data (path, sandboxId, ...), or NULL */
};

#define OSB_ERR_INIT {OSB_ERR_NONE, NULL, NULL}

/* The JSON-RPC error code of a kind. */
int osb_err_code(enum osb_err_kind kind);

/* The data.type of a kind ("SandboxNotFoundError"...), or NULL for the standard codes. */
const char *osb_err_type(enum osb_err_kind kind);

/* Fill err (which must be unset) with kind and a printf-style message. Takes ownership of
 * data (a json object, or NULL) even if err was already set, in which case the first error
 * is kept. Always returns -1 so callers can `return osb_err_set(...)`. */
int osb_err_set(struct osb_err *err, enum osb_err_kind kind, json_object *data, const char *fmt,
                ...) __attribute__((format(printf, 4, 5)));

/* Add one member to err->data (creating it), taking ownership of value. */
void osb_err_add(struct osb_err *err, const char *key, json_object *value);

/* Build the JSON-RPC error object {code, message, data?}; data.type is added for
 * application errors. Returns a new reference; err is left intact. */
json_object *osb_err_to_json(const struct osb_err *err);

/* Release message and data and mark err unset. Accepts an unset err. */
void osb_err_clear(struct osb_err *err);

#endif
