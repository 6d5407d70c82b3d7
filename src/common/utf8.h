/* utf8.h - UTF-8 validation, repair (invalid bytes become U+FFFD) and safe truncation.
 * Layer: common. Used by the engine (server replies must be valid UTF-8) and the bridge
 * (JSON strings must be valid UTF-8). */
#ifndef OSB_COMMON_UTF8_H
#define OSB_COMMON_UTF8_H

#include <stdbool.h>
#include <stddef.h>

/* True when the n bytes are well-formed UTF-8 (no overlongs, surrogates or > U+10FFFF). */
bool utf8_valid(const char *s, size_t n);

/* Copy s with every ill-formed sequence replaced by U+FFFD (one per maximal subpart, as
 * Unicode recommends). Returns a malloc'd NUL-terminated copy (never NULL: see mem.h) and
 * its length in *out_len. */
char *utf8_sanitize(const char *s, size_t n, size_t *out_len);

/* The largest length <= max at which valid UTF-8 s (of n bytes) can be cut without
 * splitting a character. Returns n when n <= max. */
size_t utf8_cut(const char *s, size_t n, size_t max);

/* The length of s[0..n) without a character cut short at its end (one whose remaining
 * bytes may still come, as in output read in pieces); n when the end is whole. */
size_t utf8_complete(const char *s, size_t n);

#endif
