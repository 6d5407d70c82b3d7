/* xfer.h - host files (fs/upload, fs/download) on the remote backend: a host file up to the
 * server's message limit goes through one WriteFile / ReadFile (over whichever transport
 * carries those); a larger one answers UNSUPPORTED, as the chunked transfer of opensandboxd's
 * extension (Upload/Download) is not used by the remote backend yet. Layer: backend (remote). */
#ifndef OSB_BRIDGE_REMOTE_XFER_H
#define OSB_BRIDGE_REMOTE_XFER_H

#include <stddef.h>

#include "bridge/backend.h"

/* Start op (UPLOAD or DOWNLOAD) on be, whose own start carries the WRITE_FILE / READ_FILE it
 * becomes; files over limit bytes are refused. op->done is called exactly once (possibly
 * from inside this function). */
void remote_xfer_start(struct backend *be, struct backend_op *op, size_t limit);

#endif
