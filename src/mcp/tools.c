/* tools.c - MCP tools made from schema/ (the embedded OpenRPC document), never written out
 * a second time: a method's params become the tool's inputSchema, its result the
 * outputSchema; a method added to the schema and the table is a tool at once. What the
 * document cannot say is added here: sandboxId optional (the connection's default sandbox),
 * annotations, a sentence telling a model when to use the tool, and result texts written for
 * a model to read. Layer: mcp. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/mem.h"
#include "mcp/mcp_int.h"

extern const char osb_openrpc_json[];

static const char *const version_names[MCP_V_COUNT] = {
    "2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25", "2026-07-28",
};

const char *mcp_version_name(enum mcp_version v) {
  return version_names[v];
}

int mcp_version_parse(const char *name) {
  for (int i = 0; i < MCP_V_COUNT; i++)
    if (name && strcmp(name, version_names[i]) == 0)
      return i;
  return -1;
}

/* When to use each tool and what its limits are: the part of a description a model needs
 * that the schema's summary does not give. A method without a line here still becomes a
 * tool, described by its summary alone. */
static const struct {
  const char *method;
  const char *text;
} guidance[] = {
    {"sandbox/create", "Use it when you need a separate, clean sandbox; the other tools use this "
                       "connection's default sandbox (created on first use) when sandboxId is "
                       "left out. Every sandbox this connection creates is destroyed when it "
                       "ends."},
    {"sandbox/destroy", "Ends every process in the sandbox and deletes its files; it cannot be "
                        "undone."},
    {"sandbox/list", "Lists every sandbox the server holds, including other clients' ones."},
    {"sandbox/get", "Shows a sandbox's environment, working directory, age and open ports."},
    {"sandbox/run", "Runs a shell command line (/bin/sh -c) in the sandbox and returns its "
                    "stdout, stderr and exit code. A non-zero exit code is a normal result, "
                    "not a failure of the tool: read stderr. The sandbox's working directory "
                    "and environment persist between calls (see sandbox_setCwd, "
                    "sandbox_setEnv); a `cd` inside one command does not."},
    {"sandbox/setEnv", "Sets environment variables for every later command in the sandbox."},
    {"sandbox/setCwd", "Sets the working directory for every later command in the sandbox."},
    {"fs/write", "Prefer it over echo or heredocs in sandbox_run to create files: content is "
                 "written exactly as given. Binary content goes as base64 with encoding "
                 "\"base64\"."},
    {"fs/read", "Returns the file's content; a file that is not UTF-8 text needs encoding "
                "\"base64\"."},
    {"fs/writeMany", "Writes several files in one call; a file that fails is listed in errors, "
                     "the others are still written."},
    {"fs/list", "Lists a directory's entries (name, path, isDirectory, size)."},
    {"process/start", "Starts a long-running background process such as a dev server and "
                      "returns at once with its pid and preview URL; use process_status to "
                      "read its log. For a command you want the output of, use sandbox_run."},
    {"process/killAll", "Kills every background process of the sandbox."},
    {"process/status", "Shows whether the background processes are alive, and their log."},
    {"exec/start", "Starts a command that keeps running across calls (long or interactive "
                   "work): returns after yieldMs with the output so far and an execId for "
                   "exec_read, exec_write and exec_kill."},
    {"exec/read", "Returns the output an exec produced since the last read, waiting up to "
                  "yieldMs for it to end; running: false means it has ended."},
    {"exec/write", "Writes to an exec's stdin (started with stdin: true); eof: true closes "
                   "it."},
    {"exec/kill", "Ends an exec with a signal (default 9)."},
    {"exec/list", "Lists the sandbox's execs and whether each still runs."},
};

static const char *guidance_for(const char *method) {
  for (size_t i = 0; i < sizeof guidance / sizeof guidance[0]; i++)
    if (strcmp(guidance[i].method, method) == 0)
      return guidance[i].text;
  return NULL;
}

/* What a method does, from its last name segment: reads and lists only look; destroy and
 * kill end things for good. */
static int read_only(const char *method) {
  const char *leaf = strrchr(method, '/');
  leaf = leaf ? leaf + 1 : method;
  return strncmp(leaf, "get", 3) == 0 || strncmp(leaf, "list", 4) == 0 ||
         strncmp(leaf, "read", 4) == 0 || strcmp(leaf, "status") == 0 ||
         strcmp(leaf, "health") == 0;
}

static int destructive(const char *method) {
  const char *leaf = strrchr(method, '/');
  leaf = leaf ? leaf + 1 : method;
  return strcmp(leaf, "destroy") == 0 || strncmp(leaf, "kill", 4) == 0;
}

static int tool_namespace(const char *method) {
  return strncmp(method, "sandbox/", 8) == 0 || strncmp(method, "fs/", 3) == 0 ||
         strncmp(method, "exec/", 5) == 0 || strncmp(method, "process/", 8) == 0;
}

static void set(json_object *obj, const char *key, json_object *val) {
  if (json_object_object_add(obj, key, val) < 0)
    osb_oom(); /* json-c fails an add only for want of memory */
}

static json_object *copy(json_object *o) {
  json_object *out = NULL;
  if (o && json_object_deep_copy(o, &out, NULL) != 0)
    osb_oom(); /* plain JSON: a copy fails only for want of memory */
  return out;
}

/* A copy of a schema with every "#/components/schemas/X" reference replaced by X itself:
 * MCP clients take a tool's schema as one self-contained document. The members next to a
 * $ref (a description) are kept over X's. */
static json_object *inline_refs(json_object *node, json_object *schemas, int depth) {
  if (depth > 32)
    return copy(node);
  if (json_object_is_type(node, json_type_array)) {
    json_object *out = OSB_J(json_object_new_array());
    size_t n = json_object_array_length(node);
    for (size_t i = 0; i < n; i++)
      json_object_array_add(out, inline_refs(json_object_array_get_idx(node, i), schemas,
                                             depth + 1));
    return out;
  }
  if (!json_object_is_type(node, json_type_object))
    return copy(node);
  json_object *ref = NULL;
  json_object *out = NULL;
  const char *prefix = "#/components/schemas/";
  if (json_object_object_get_ex(node, "$ref", &ref) && json_object_is_type(ref, json_type_string) &&
      strncmp(json_object_get_string(ref), prefix, strlen(prefix)) == 0) {
    json_object *target = NULL;
    if (json_object_object_get_ex(schemas, json_object_get_string(ref) + strlen(prefix), &target))
      out = inline_refs(target, schemas, depth + 1);
  }
  if (!out)
    out = OSB_J(json_object_new_object());
  json_object_object_foreach(node, key, val) {
    if (strcmp(key, "$ref") == 0)
      continue;
    set(out, key, inline_refs(val, schemas, depth + 1));
  }
  return out;
}

static json_object *get(json_object *obj, const char *key) {
  json_object *v = NULL;
  return json_object_object_get_ex(obj, key, &v) ? v : NULL;
}

static const char *get_str(json_object *obj, const char *key) {
  json_object *v = get(obj, key);
  return v && json_object_is_type(v, json_type_string) ? json_object_get_string(v) : NULL;
}

/* The tool's inputSchema: the method's params, sandboxId optional, sandbox_run's argv left
 * out (command required instead). Cross-member rules (exactly one of command and argv) are
 * left to the method, which words its own error: clients and model APIs handle plain
 * object schemas best. */
static json_object *input_schema(const struct mcp_tool *tool, json_object *m, json_object *schemas) {
  json_object *s = OSB_J(json_object_new_object());
  json_object *props = OSB_J(json_object_new_object());
  json_object *req = OSB_J(json_object_new_array());
  set(s, "type", OSB_J(json_object_new_string("object")));
  json_object *params = get(m, "params");
  size_t n = params ? json_object_array_length(params) : 0;
  for (size_t i = 0; i < n; i++) {
    json_object *p = json_object_array_get_idx(params, i);
    const char *name = get_str(p, "name");
    /* partialResultToken is the bridge's to set (from _meta.progressToken), not a model's */
    if (!name || (tool->is_run && strcmp(name, "argv") == 0) ||
        strcmp(name, "partialResultToken") == 0)
      continue;
    json_object *prop = inline_refs(get(p, "schema"), schemas, 0);
    const char *desc = get_str(p, "description");
    int required = json_object_get_boolean(get(p, "required"));
    if (strcmp(name, "sandboxId") == 0) {
      desc = "The sandbox to act on, as sandbox_create returned it. Leave it out to use this "
             "connection's default sandbox (created on first use).";
      required = 0;
    } else if (tool->is_run && strcmp(name, "command") == 0) {
      desc = "The command line, run as /bin/sh -c <command> (pipes, &&, redirections work).";
      required = 1;
    } else if (strcmp(tool->method->name, "exec/write") == 0 && strcmp(name, "data") == 0) {
      required = 0; /* may be left out with eof: true */
    }
    if (desc) {
      json_object_object_del(prop, "description");
      set(prop, "description", OSB_J(json_object_new_string(desc)));
    }
    set(props, name, prop);
    if (required)
      json_object_array_add(req, OSB_J(json_object_new_string(name)));
  }
  set(s, "properties", props);
  if (json_object_array_length(req) > 0)
    set(s, "required", req);
  else
    json_object_put(req);
  return s;
}

/* The tool's outputSchema: the result schema when it is an object (a method returning null
 * has none). sandbox_run's allows a run still going when it yields. */
static json_object *output_schema(const struct mcp_tool *tool, json_object *m, json_object *schemas,
                                  int yields) {
  json_object *result = get(m, "result");
  if (!result)
    return NULL;
  json_object *s = inline_refs(get(result, "schema"), schemas, 0);
  const char *type = get_str(s, "type");
  if (!type || strcmp(type, "object") != 0) {
    json_object_put(s);
    return NULL;
  }
  json_object_object_del(s, "description");
  if (tool->is_run && yields) {
    json_object *props = get(s, "properties");
    json_object *nullable_int = json_tokener_parse("{\"type\":[\"integer\",\"null\"]}");
    set(props, "exitCode", copy(nullable_int));
    set(props, "signal", nullable_int);
    set(props, "running", json_tokener_parse(
        "{\"type\":\"boolean\",\"description\":\"true: the command still runs; "
        "exec_read with execId continues it\"}"));
    set(props, "execId", json_tokener_parse(
        "{\"type\":\"string\",\"description\":\"Present while running: pass it to "
        "exec_read, exec_write or exec_kill\"}"));
  }
  return s;
}

static char *tool_name(const char *method) {
  char *name = xstrdup(method);
  for (char *p = name; *p; p++)
    if (*p == '/' || *p == '.')
      *p = '_';
  return name;
}

/* "sandbox/setEnv" -> "Sandbox setEnv": a short human title. */
static json_object *title(const char *method) {
  char buf[128];
  snprintf(buf, sizeof buf, "%s", method);
  if (buf[0] >= 'a' && buf[0] <= 'z')
    buf[0] = (char)(buf[0] - 'a' + 'A');
  for (char *p = buf; *p; p++)
    if (*p == '/')
      *p = ' ';
  return OSB_J(json_object_new_string(buf));
}

static json_object *tool_def(const struct mcp_tool *tool, json_object *m, json_object *schemas,
                             int yields) {
  const char *method = tool->method->name;
  json_object *def = OSB_J(json_object_new_object());
  set(def, "name", OSB_J(json_object_new_string(tool->name)));
  set(def, "title", title(method));
  char desc[2048];
  const char *summary = get_str(m, "summary");
  const char *more = guidance_for(method);
  int len = snprintf(desc, sizeof desc, "%s%s%s", summary ? summary : method, more ? " " : "",
                     more ? more : "");
  if (tool->is_run && len > 0 && (size_t)len < sizeof desc) {
    if (yields)
      snprintf(desc + len, sizeof desc - (size_t)len,
               " A command still running after yieldMs returns running: true with an execId: "
               "call exec_read with it to wait for more output.");
    else
      snprintf(desc + len, sizeof desc - (size_t)len,
               " It waits for the command to end (timeoutMs, default 300000): start servers "
               "and other endless commands with process_start instead.");
  }
  set(def, "description", OSB_J(json_object_new_string(desc)));
  set(def, "inputSchema", input_schema(tool, m, schemas));
  json_object *out = output_schema(tool, m, schemas, yields);
  if (out)
    set(def, "outputSchema", out);
  json_object *ann = OSB_J(json_object_new_object());
  set(ann, "title", title(method));
  int ro = read_only(method);
  set(ann, "readOnlyHint", OSB_J(json_object_new_boolean(ro)));
  if (!ro)
    set(ann, "destructiveHint", OSB_J(json_object_new_boolean(destructive(method))));
  set(ann, "openWorldHint", OSB_J(json_object_new_boolean(0)));
  set(def, "annotations", ann);
  return def;
}

int mcp_tools_build(struct mcp_tools *t, const struct rpc_method *methods, size_t n_methods,
                    int has_exec, struct osb_err *err) {
  memset(t, 0, sizeof *t);
  json_object *doc = json_tokener_parse(osb_openrpc_json);
  json_object *list = get(doc, "methods");
  json_object *schemas = get(get(doc, "components"), "schemas");
  if (!list || !json_object_is_type(list, json_type_array)) {
    json_object_put(doc);
    return osb_err_set(err, OSB_ERR_INTERNAL, NULL, "the embedded OpenRPC document is broken");
  }
  size_t n = json_object_array_length(list);
  t->v = xcalloc(n, sizeof *t->v);
  t->yields = has_exec && rpc_method_find(methods, n_methods, "exec/start") &&
              rpc_method_find(methods, n_methods, "exec/read");
  for (size_t i = 0; i < n; i++) {
    json_object *m = json_object_array_get_idx(list, i);
    const char *name = get_str(m, "name");
    const struct rpc_method *rm = name ? rpc_method_find(methods, n_methods, name) : NULL;
    if (!rm || !tool_namespace(name))
      continue;
    /* a backend without exec sessions answers every exec/ call UnsupportedError: a model
     * is better off not seeing those tools (sandbox_run then waits for the end) */
    if (!t->yields && strncmp(name, "exec/", 5) == 0)
      continue;
    struct mcp_tool *tool = &t->v[t->n++];
    tool->name = tool_name(name);
    tool->method = rm;
    tool->is_run = strcmp(name, "sandbox/run") == 0;
    tool->creates = strcmp(name, "sandbox/create") == 0;
    tool->destroys = strcmp(name, "sandbox/destroy") == 0;
    json_object *params = get(m, "params");
    size_t np = params ? json_object_array_length(params) : 0;
    for (size_t k = 0; k < np; k++) {
      const char *pn = get_str(json_object_array_get_idx(params, k), "name");
      if (pn && strcmp(pn, "sandboxId") == 0)
        tool->takes_sandbox = 1;
      if (pn && strcmp(pn, "partialResultToken") == 0)
        tool->streams = 1;
    }
    tool->def = tool_def(tool, m, schemas, t->yields);
  }
  json_object_put(doc);
  return 0;
}

void mcp_tools_free(struct mcp_tools *t) {
  for (size_t i = 0; i < t->n; i++) {
    free(t->v[i].name);
    json_object_put(t->v[i].def);
  }
  free(t->v);
  memset(t, 0, sizeof *t);
}

const struct mcp_tool *mcp_tools_find(const struct mcp_tools *t, const char *name) {
  for (size_t i = 0; name && i < t->n; i++)
    if (strcmp(t->v[i].name, name) == 0)
      return &t->v[i];
  return NULL;
}

json_object *mcp_tools_list(const struct mcp_tools *t, enum mcp_version v) {
  json_object *arr = OSB_J(json_object_new_array());
  for (size_t i = 0; i < t->n; i++) {
    json_object *def = copy(t->v[i].def);
    if (v < MCP_V2025_06_18) {
      json_object_object_del(def, "outputSchema");
      json_object_object_del(def, "title");
    }
    if (v < MCP_V2025_03_26)
      json_object_object_del(def, "annotations");
    json_object_array_add(arr, def);
  }
  return arr;
}

/* ---- results ---- */

struct text {
  char *s;
  size_t len, cap;
};

static void text_add(struct text *t, const char *s, size_t n) {
  if (t->len + n + 1 > t->cap) {
    size_t cap = t->cap ? t->cap * 2 : 256;
    while (cap < t->len + n + 1)
      cap *= 2;
    t->s = xrealloc(t->s, cap);
    t->cap = cap;
  }
  memcpy(t->s + t->len, s, n);
  t->len += n;
  t->s[t->len] = '\0';
}

static void text_str(struct text *t, const char *s) {
  text_add(t, s, strlen(s));
}

/* A section of output: a heading, the bytes, a newline if they lack one. */
static void text_stream(struct text *t, const char *heading, json_object *val) {
  const char *s = json_object_get_string(val);
  size_t n = (size_t)json_object_get_string_len(val);
  if (!s || n == 0)
    return;
  text_str(t, heading);
  text_add(t, s, n);
  if (s[n - 1] != '\n')
    text_str(t, "\n");
}

static json_object *content_text(struct text *t) {
  json_object *arr = OSB_J(json_object_new_array());
  json_object *block = OSB_J(json_object_new_object());
  set(block, "type", OSB_J(json_object_new_string("text")));
  set(block, "text", OSB_J(json_object_new_string_len(t->s ? t->s : "", (int)t->len)));
  json_object_array_add(arr, block);
  free(t->s);
  t->s = NULL;
  return arr;
}

/* A run (or an exec's state), as a model reads it: stdout, stderr, then how it ended. */
static void run_text(struct text *t, json_object *r) {
  json_object *out = get(r, "stdout"), *err = get(r, "stderr");
  int running = json_object_get_boolean(get(r, "running"));
  text_stream(t, "stdout:\n", out);
  text_stream(t, "stderr:\n", err);
  if (json_object_get_string_len(out) == 0 && json_object_get_string_len(err) == 0)
    text_str(t, running ? "(no output yet)\n" : "(no output)\n");
  char line[256];
  if (running) {
    const char *id = get_str(r, "execId");
    snprintf(line, sizeof line,
             "The command is still running. Call exec_read with execId \"%s\" to wait for "
             "more output, or exec_kill to stop it.",
             id ? id : "?");
  } else {
    int sig = json_object_get_int(get(r, "signal"));
    if (sig > 0)
      snprintf(line, sizeof line, "killed by signal %d", sig);
    else
      snprintf(line, sizeof line, "exit code: %d", json_object_get_int(get(r, "exitCode")));
  }
  text_str(t, line);
  if (json_object_get_boolean(get(r, "truncated")))
    text_str(t, "\n(output truncated: only the first part was kept)");
}

json_object *mcp_tool_result(const struct mcp_tool *tool, json_object *result,
                             enum mcp_version v) {
  json_object *r = OSB_J(json_object_new_object());
  struct text t = {NULL, 0, 0};
  const char *method = tool->method->name;
  if (!result) {
    char line[160];
    snprintf(line, sizeof line, "Done: %s succeeded.", tool->name);
    text_str(&t, line);
  } else if (tool->is_run || strcmp(method, "exec/start") == 0 ||
             strcmp(method, "exec/read") == 0) {
    run_text(&t, result);
  } else if (strcmp(method, "fs/read") == 0) {
    const char *enc = get_str(result, "encoding");
    if (enc && strcmp(enc, "base64") == 0) {
      char line[96];
      snprintf(line, sizeof line, "(%lld bytes, base64)\n",
               (long long)json_object_get_int64(get(result, "size")));
      text_str(&t, line);
    }
    json_object *c = get(result, "content");
    text_add(&t, json_object_get_string(c), (size_t)json_object_get_string_len(c));
  } else {
    text_str(&t, json_object_to_json_string_ext(result, JSON_C_TO_STRING_SPACED |
                                                           JSON_C_TO_STRING_NOSLASHESCAPE));
    if (tool->creates)
      text_str(&t, "\nPass this sandboxId to the other tools to use this sandbox.");
  }
  set(r, "content", content_text(&t));
  if (v >= MCP_V2025_06_18 && result && json_object_is_type(result, json_type_object))
    set(r, "structuredContent", result);
  else
    json_object_put(result);
  set(r, "isError", OSB_J(json_object_new_boolean(0)));
  return r;
}

/* What a model should do about each kind of failure. */
static const char *advice(enum osb_err_kind kind) {
  switch (kind) {
  case OSB_ERR_INVALID_PARAMS:
    return "Fix that argument and call the tool again.";
  case OSB_ERR_NOT_FOUND:
    return "That sandbox (or exec) does not exist any more. Leave sandboxId out to use this "
           "connection's default sandbox, or call sandbox_create for a new one.";
  case OSB_ERR_FILE:
    return "Check the path (fs_list shows what a directory holds); a file that is not UTF-8 "
           "text needs encoding \"base64\".";
  case OSB_ERR_CONNECTION:
    return "The OpenSandbox server cannot be reached; tell the user. Retrying will not help "
           "until it is back.";
  case OSB_ERR_TIMEOUT:
    return "It took too long. Give a larger timeoutMs, split the work, or start long-running "
           "commands with process_start.";
  case OSB_ERR_UNSUPPORTED:
    return "This backend cannot do that; use another tool.";
  case OSB_ERR_COMMAND:
    return "The command did not succeed (check: true); its output is in the error data.";
  case OSB_ERR_BUSY:
    return "Too many calls at once; wait for some to finish and call again.";
  default:
    return "The sandbox server failed; try again once, then tell the user.";
  }
}

json_object *mcp_tool_error(const struct mcp_tool *tool, const struct osb_err *err) {
  json_object *r = OSB_J(json_object_new_object());
  struct text t = {NULL, 0, 0};
  char head[200];
  const char *type = osb_err_type(err->kind);
  snprintf(head, sizeof head, "Error from %s%s%s%s: ", tool ? tool->name : "the tool",
           type ? " (" : "", type ? type : "", type ? ")" : "");
  text_str(&t, head);
  text_str(&t, err->message ? err->message : "failed");
  text_str(&t, "\n");
  text_str(&t, advice(err->kind));
  set(r, "content", content_text(&t));
  set(r, "isError", OSB_J(json_object_new_boolean(1)));
  return r;
}
