/* mcp_int.h - what the files of src/mcp/ share (not a public interface): mcp.c serves the
 * protocol (versions, requests, cancellation, the connection's sandboxes); tools.c turns the
 * embedded OpenRPC document into MCP tools and method results into tool results.
 * Layer: mcp. */
#ifndef OSB_MCP_MCP_INT_H
#define OSB_MCP_MCP_INT_H

#include <json-c/json.h>
#include <stddef.h>

#include "common/err.h"
#include "rpc/rpc.h"

/* Protocol versions, oldest first; what a version adds decides what tools carry. */
enum mcp_version {
  MCP_V2024_11_05,
  MCP_V2025_03_26, /* tool annotations */
  MCP_V2025_06_18, /* outputSchema, structuredContent, title */
  MCP_V2025_11_25,
  MCP_V2026_07_28, /* stateless: _meta on each request, resultType, server/discover */
  MCP_V_COUNT
};

#define MCP_MODERN_VERSION "2026-07-28"
#define MCP_LEGACY_NEWEST MCP_V2025_11_25

/* The version's name ("2025-06-18"). */
const char *mcp_version_name(enum mcp_version v);

/* The version called name, or -1 when this server does not speak it. */
int mcp_version_parse(const char *name);

/* One tool: a method of the table, as a model sees it. */
struct mcp_tool {
  char *name;                      /* the method's name with '_' for '/' */
  const struct rpc_method *method;
  int takes_sandbox;               /* its params have sandboxId (optional here) */
  int is_run;                      /* sandbox/run: command only, yields after yieldMs */
  int creates, destroys;           /* sandbox/create, sandbox/destroy */
  int streams;                     /* takes partialResultToken: output as progress */
  json_object *def;                /* the definition in the newest shape */
};

struct mcp_tools {
  struct mcp_tool *v;
  size_t n;
  int yields;                      /* sandbox_run yields to exec_read (the exec methods exist) */
};

/* Build the tools from the embedded OpenRPC document: one per sandbox/, fs/, exec/ and
 * process/ method the table serves, in the document's order; the exec/ ones only when
 * has_exec (the backend runs exec sessions: then sandbox_run yields). Returns 0, or -1
 * with *err. */
int mcp_tools_build(struct mcp_tools *t, const struct rpc_method *methods, size_t n_methods,
                    int has_exec, struct osb_err *err);
void mcp_tools_free(struct mcp_tools *t);

/* The tool called name, or NULL. */
const struct mcp_tool *mcp_tools_find(const struct mcp_tools *t, const char *name);

/* The tools/list array for a client speaking version v (fields it does not know left out). */
json_object *mcp_tools_list(const struct mcp_tools *t, enum mcp_version v);

/* A CallToolResult for a method's result (taken; NULL is JSON null). */
json_object *mcp_tool_result(const struct mcp_tool *tool, json_object *result,
                             enum mcp_version v);

/* A CallToolResult with isError: true saying what went wrong and what to do about it. */
json_object *mcp_tool_error(const struct mcp_tool *tool, const struct osb_err *err);

#endif
