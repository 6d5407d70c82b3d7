/* jsonscan.h - finds spans in JSON text: members and elements in text that json-c has
 * already accepted, so that a numeric request id can be echoed byte for byte (json-c keeps
 * no source text for integers: `-0` and ids past 2^64 would otherwise change), and runs of
 * string bytes that need no escaping (for jsonparse and jsonwrite). Layer: rpc.
 * For members and elements the input must be valid JSON; on anything unexpected those
 * functions just find nothing. */
#ifndef OSB_RPC_JSONSCAN_H
#define OSB_RPC_JSONSCAN_H

#include <stddef.h>

/* If p[0..n) is an object with a member named key (no escapes in the name), set
 * *off and *len to the raw text of its last such member's value and return 1; else 0. */
int jsonscan_member(const char *p, size_t n, const char *key, size_t *off, size_t *len);

/* If p[0..n) is an array, call fn for each element with its index and raw span, and
 * return the number of elements; else return 0. */
size_t jsonscan_elements(const char *p, size_t n,
                         void (*fn)(void *arg, size_t index, size_t off, size_t len), void *arg);

/* The length of the longest prefix of p[0..n) with no '"', no '\\' and no byte below 0x20:
 * the bytes a JSON string holds as they are, both ways (json-c writes DEL and '/' as is
 * with JSON_C_TO_STRING_NOSLASHESCAPE). Word at a time: megabyte strings are common. */
size_t jsonscan_plain(const char *p, size_t n);

#endif
