/* fuzz_json.c - libFuzzer target: differential between the bridge's fast JSON parser and
 * writer (src/rpc/jsonparse, jsonwrite) and json-c, through the oracle the unit tests use
 * (tests/unit/json_oracle.h). A finding is a crash, a sanitizer report, or a disagreement:
 * jsonparse accepting what json-c rejects or building another tree, or jsonwrite writing
 * other bytes than json-c (on the parsed tree, and on the input taken as one string).
 *
 * The input is the JSON text itself, checked at rpc.c's depth (1024) and at a small depth
 * picked from its length (1..8), so the depth rule is exercised with short inputs too.
 *
 * Build and run: tests/fuzz/run.sh SECONDS fuzz_json. Reproduce: build/fuzz/fuzz_json FILE. */
#include <stdint.h>

#include "../unit/json_oracle.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *text = (const char *)data;
  struct oracle_counts c = {0};
  if (oracle_check(text, size, 1024, &c) < 0) {
    fprintf(stderr, "fuzz oracle: jsonparse/jsonwrite disagree with json-c (depth 1024)\n");
    abort();
  }
  if (oracle_check(text, size, 1 + (int)(size % 8), &c) < 0) {
    fprintf(stderr, "fuzz oracle: jsonparse/jsonwrite disagree with json-c (depth %d)\n",
            1 + (int)(size % 8));
    abort();
  }
  /* The writer on any bytes: as a string value, and cut at its first NUL as a name. */
  if (size <= INT32_MAX) {
    json_object *s = json_object_new_string_len(text, (int)size);
    json_object *o = json_object_new_object();
    char *name = strndup(text, size);
    if (!s || !o || !name)
      abort();
    json_object_object_add(o, name, json_object_get(s));
    if (oracle_check_write(s, size % 41, size % 2) < 0 || oracle_check_write(o, 0, 0) < 0) {
      fprintf(stderr, "fuzz oracle: jsonwrite disagrees with json-c\n");
      abort();
    }
    free(name);
    json_object_put(s);
    json_object_put(o);
  }
  return 0;
}
