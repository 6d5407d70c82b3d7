/* defaults.h - the one table of defaults the programs share (WIRE.md and API.md state
 * them; the public server and SDKs use the same), so that no number is written twice.
 * Layer: common. */
#ifndef OSB_COMMON_DEFAULTS_H
#define OSB_COMMON_DEFAULTS_H

#define OSB_DEFAULT_GRPC_PORT 50051                /* the server's gRPC port */
#define OSB_DEFAULT_MAX_MESSAGE ((size_t)64 << 20) /* largest JSON-RPC message / reply */
#define OSB_DEFAULT_MAX_OUTPUT ((size_t)16 << 20)  /* bytes kept per run stream */
#define OSB_DEFAULT_MAX_INFLIGHT 1024u             /* requests the bridge works on at once */

#endif
