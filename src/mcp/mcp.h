/* mcp.h - MCP mode: the bridge's methods served as Model Context Protocol tools on the
 * same stdio, for agent frameworks (API.md, "MCP mode"). Both eras: the legacy initialize
 * handshake (2024-11-05 .. 2025-11-25) and the stateless 2026-07-28 (per-request _meta,
 * server/discover). Reaches the methods only through rpc_invoke, and takes the connection
 * over from rpc through rpc_opts.takeover when the first message is MCP (or with --mcp).
 * Layer: mcp (above rpc and the method table, below main). */
#ifndef OSB_MCP_MCP_H
#define OSB_MCP_MCP_H

#include <stddef.h>
#include <stdint.h>

#include "rpc/rpc.h"

struct mcp_config {
  const struct rpc_method *methods; /* the method table tools are made from */
  size_t n_methods;
  void *ctx;                        /* given to every method */
  const char *name, *version;       /* serverInfo */
  int force;                        /* --mcp: MCP whatever the first message is */
  int64_t yield_ms;                 /* --mcp-yield-ms: sandbox_run returns after this long */
  unsigned max_inflight;            /* tool calls worked on at once */
  int exec_streams;                 /* exec/start streams its output (the local backend): a
                                       sandbox_run with a progressToken yields; else it keeps
                                       the plain run, whose output streams */
};

/* Whether a first message opens an MCP connection: an `initialize` whose params carry
 * protocolVersion, `server/discover`, or a request whose params._meta carries
 * io.modelcontextprotocol/protocolVersion. An LSP initialize (processId, capabilities, no
 * protocolVersion) is not. */
int mcp_detect(const char *msg, size_t len);

/* An rpc_takeover_fn (arg: a struct mcp_config that outlives rpc_serve): serves MCP when
 * mcp_detect (or force) says so, until EOF or a stop (SIGTERM); then stops the calls still
 * running (at EOF after a grace of 0.7 s in which they may still answer), destroys every
 * sandbox the connection created, and returns 0 within 2 s. Returns -1 when not MCP. */
int mcp_takeover(void *arg, struct transport *t, struct writer *w, const char *first,
                 size_t len);

#endif
