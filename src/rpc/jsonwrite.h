/* jsonwrite.h - json-c objects to JSON text, byte for byte what json-c writes with
 * JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, but fast on long strings (runs
 * that need no escaping are copied whole) and into a buffer with room left around the
 * text, so a reply is framed without copying it again. Layer: rpc.
 *
 * What json-c writes, and so this: strings escape '"', '\\', \b \f \n \r \t as such and
 * the other controls as \u00xx (lower-case hex), DEL and '/' as they are; a double made
 * with json_object_new_double_s prints its text; other doubles, and any object with a
 * serializer of its own, are left to json-c for that one value. json-c shows a serializer
 * only through its userdata: one set with NULL userdata would go unseen (the bridge sets
 * none but json_object_new_double_s's). */
#ifndef OSB_RPC_JSONWRITE_H
#define OSB_RPC_JSONWRITE_H

#include <stddef.h>

#include <json-c/json.h>

/* Serialize obj (NULL is JSON null) into one malloc'd buffer: `front` unused bytes, then
 * the text (*len bytes), then at least `back` unused bytes. Returns the buffer (the
 * caller frees it; never NULL: see mem.h). Reads obj only, except that json-c
 * caches the text of a value left to it inside that value. */
char *jsonwrite(json_object *obj, size_t front, size_t back, size_t *len);

#endif
