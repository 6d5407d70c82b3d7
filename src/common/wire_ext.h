/* wire_ext.h - what opensandboxd adds to the OpenSandbox wire (docs/WIRE.md, "Extensions"),
 * shared by the server and the bridge's remote backend. Clients that do not use these (the
 * public SDKs) see the public wire unchanged. */
#ifndef OSB_COMMON_WIRE_EXT_H
#define OSB_COMMON_WIRE_EXT_H

/* Truncation told out of band. A RunCommand whose request metadata (gRPC) or headers
 * (HTTP POST .../run) carry OSB_TRUNCATION_KEY: "report" gets its output's bytes only, and
 * learns of a cut from the trailing metadata OSB_TRUNCATED_KEY ("1" or "0"; gRPC) or the
 * reply's JSON member "truncated" (HTTP, always present). Without it the server appends a
 * note to stderr, as it always did. */
#define OSB_TRUNCATION_KEY "x-opensandbox-truncation"
#define OSB_TRUNCATED_KEY "x-opensandbox-truncated"

#endif
