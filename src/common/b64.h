/* b64.h - standard base64 (RFC 4648, with padding).
 * Own code rather than libcrypto's EVP_DecodeBlock, which accepts whitespace, ignores
 * bad padding and counts padding as data. Layer: common. */
#ifndef OSB_COMMON_B64_H
#define OSB_COMMON_B64_H

#include <stddef.h>

/* Encode n bytes. Returns a malloc'd NUL-terminated string (caller frees) and its length
 * in *out_len (may be NULL); never NULL (see mem.h). */
char *b64_encode(const void *data, size_t n, size_t *out_len);

/* Decode n characters of padded base64. Returns malloc'd bytes (caller frees, NUL-terminated
 * for convenience, the NUL not counted) and their count in *out_len; NULL (errno EINVAL)
 * when the input is not valid base64. */
void *b64_decode(const char *text, size_t n, size_t *out_len);

#endif
