/* xfer.h - host files (fs/upload, fs/download) on the remote backend: in chunks over
 * opensandboxd's Upload/Download (sandbox_ext.proto) when the server has them, any size, never
 * the whole file in memory; else (the public server, --transport http) as one WriteFile /
 * ReadFile up to the message limit, and UNSUPPORTED above it. Layer: backend (remote). */
#ifndef OSB_BRIDGE_REMOTE_XFER_H
#define OSB_BRIDGE_REMOTE_XFER_H

#include <stddef.h>

#include "bridge/backend.h"
#include "bridge/remote/grpc.h"

/* Start op (UPLOAD or DOWNLOAD) on be. g: the gRPC side for the chunked transfer, or NULL
 * when the transport is HTTP (then only the classic way); the classic way is a WRITE_FILE /
 * READ_FILE started on be, for files up to limit bytes. op->c's deadline bounds the whole
 * transfer (fs.c sets none); a chunked one that makes no progress for the request timeout
 * ends with TIMEOUT. op->done is called exactly once (possibly from inside this function). */
void remote_xfer_start(struct backend *be, struct remote_grpc *g, struct backend_op *op,
                       size_t limit);

#endif
