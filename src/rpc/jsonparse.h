/* jsonparse.h - a fast strict JSON (RFC 8259) parser that builds json-c objects, for the
 * bridge's incoming messages: json-c's tokener goes char by char and costs milliseconds
 * on a megabyte fs/write. Layer: rpc.
 *
 * Contract with json-c (JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8, as rpc.c uses
 * it): whatever jsonparse accepts, json-c accepts too and builds the same tree (same types,
 * values, member order, number texts); whatever json-c rejects, jsonparse rejects. Where
 * json-c is laxer than RFC 8259 (raw control characters in strings, 'single-quoted' keys,
 * NaN and Infinity, numbers like 01, -01, 1. or 1.e5) jsonparse declines, and the caller
 * falls back to json-c, which then decides and words any error.
 * json-c's own choices that jsonparse copies: a lone surrogate escape becomes U+FFFD; a
 * \u0000 stays in a string value but cuts a member name short (names are C strings); a
 * repeated name keeps its first place and its last value; integers past int64 become
 * uint64, saturating at UINT64_MAX (and at INT64_MIN below); a number with a fraction or
 * an exponent is a double that keeps its source text (json_object_new_double_s). */
#ifndef OSB_RPC_JSONPARSE_H
#define OSB_RPC_JSONPARSE_H

#include <stddef.h>

#include <json-c/json.h>

/* Parse text[0..len), which must be exactly one JSON value with optional whitespace
 * around it. A value may sit inside at most max_depth - 1 arrays and objects, as with
 * json_tokener_new_ex(max_depth); recursion is bounded by max_depth.
 * Returns 0 with the value in *out (NULL for JSON null), or -1 (*out = NULL) on any
 * failure: malformed or laxer-than-RFC input, too deep, data after the value, out of
 * memory. The text must be valid UTF-8 for the result to agree with json-c (the caller
 * checks it), but any bytes are safe: they are never read past len. */
int jsonparse(const char *text, size_t len, int max_depth, json_object **out);

#endif
