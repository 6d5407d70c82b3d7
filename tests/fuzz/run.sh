#!/bin/sh
# tests/fuzz/run.sh [SECONDS] [TARGET...] - build the libFuzzer targets into build/fuzz/ and
# run each for SECONDS (default 60; split evenly over the targets), starting from the seed
# corpus in tests/fuzz/corpus/<target>/. New inputs go to build/fuzz/corpus/<target>/
# (never into the source tree); crashes, leaks and timeouts go to build/fuzz/findings/.
# Prints each target's executions, exec/s, coverage and findings; exits 1 when anything
# was found, 2 when the toolchain is missing.
#
#   tests/fuzz/run.sh 600                 # all three targets, 200 s each
#   tests/fuzz/run.sh 600 fuzz_rpc        # one target for 10 minutes
#   FUZZ_JOBS=2 tests/fuzz/run.sh 600     # run the targets in parallel, SECONDS each
#   build/fuzz/fuzz_rpc build/fuzz/findings/fuzz_rpc/crash-...   # replay one finding
#
# Needs clang with libFuzzer and the sanitizer runtimes: Debian packages clang and
# libclang-rt-14-dev (or the libclang-rt-dev of your clang version).
set -u
cd "$(dirname "$0")/../.."
SECONDS_TOTAL=${1:-60}
[ $# -gt 0 ] && shift
TARGETS=${*:-fuzz_rpc fuzz_transport fuzz_json}
CLANG=${CLANG:-clang}
OUT=build/fuzz

case "$SECONDS_TOTAL" in
  ''|*[!0-9]*) echo "usage: $0 [SECONDS] [TARGET...]" >&2; exit 2 ;;
esac

if ! command -v "$CLANG" >/dev/null 2>&1; then
  echo "fuzz: '$CLANG' not found. Install the Debian package 'clang' (and 'libclang-rt-14-dev' for libFuzzer)." >&2
  exit 2
fi
mkdir -p "$OUT"
# Probe for libFuzzer and the sanitizer runtimes with a one-line program.
probe="$OUT/.probe"
printf 'int LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n){(void)d;(void)n;return 0;}\n' > "$probe.c"
if ! "$CLANG" -fsanitize=fuzzer,address,undefined "$probe.c" -o "$probe" >"$probe.log" 2>&1; then
  echo "fuzz: $CLANG cannot link a libFuzzer target (-fsanitize=fuzzer,address,undefined):" >&2
  sed 's/^/  /' "$probe.log" >&2
  echo "fuzz: install the Debian package 'libclang-rt-14-dev' (libFuzzer and sanitizer runtimes for clang 14)." >&2
  exit 2
fi
rm -f "$probe" "$probe.c" "$probe.log"

# The generated protobuf header is not needed by src/rpc or src/common; keep the project's
# flags minus what is gcc-only or conflicts with the fuzzer build (-O2, -Werror, sanitizers).
PKG_CFLAGS=$(pkg-config --cflags json-c 2>/dev/null)
PKG_LIBS=$(pkg-config --libs json-c 2>/dev/null || echo -ljson-c)
CFLAGS="-std=gnu11 -O1 -g -Wall -Wextra -Wno-unused-parameter -D_GNU_SOURCE -pthread \
  -fno-omit-frame-pointer -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
  -Isrc -Itests/fuzz $PKG_CFLAGS"
SRCS="$(ls src/rpc/*.c src/common/*.c)"

for t in $TARGETS; do
  if [ ! -f "tests/fuzz/$t.c" ]; then
    echo "fuzz: no such target tests/fuzz/$t.c" >&2
    exit 2
  fi
  echo "  CLANG   $OUT/$t"
  # shellcheck disable=SC2086
  if ! "$CLANG" $CFLAGS "tests/fuzz/$t.c" $SRCS -o "$OUT/$t" $PKG_LIBS -lm; then
    echo "fuzz: building $t failed" >&2
    exit 2
  fi
done

ntargets=$(echo $TARGETS | wc -w)
if [ -n "${FUZZ_JOBS:-}" ] && [ "${FUZZ_JOBS}" -gt 1 ]; then
  per=$SECONDS_TOTAL
else
  per=$((SECONDS_TOTAL / ntargets))
  [ "$per" -lt 1 ] && per=1
fi

run_one() {
  t=$1
  mkdir -p "$OUT/corpus/$t" "$OUT/findings/$t"
  log="$OUT/$t.log"
  echo "fuzz: $t for ${per}s (log $log)"
  # -rss_limit_mb: the bridge never buffers more than max_message, so a blow-up is a bug.
  # -timeout: a single input taking 10 s is a hang (rpc_serve's grace period is 10 s).
  "$OUT/$t" -max_total_time="$per" -max_len=8192 -timeout=25 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="$OUT/findings/$t/" \
    ${FUZZ_ARGS:-} "$OUT/corpus/$t" "tests/fuzz/corpus/$t" >"$log" 2>&1
  echo $? >"$OUT/$t.rc"
}

if [ -n "${FUZZ_JOBS:-}" ] && [ "${FUZZ_JOBS}" -gt 1 ]; then
  for t in $TARGETS; do run_one "$t" & done
  wait
else
  for t in $TARGETS; do run_one "$t"; done
fi

status=0
for t in $TARGETS; do
  log="$OUT/$t.log"
  rc=$(cat "$OUT/$t.rc" 2>/dev/null || echo "?")
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  last=$(grep -E '^#[0-9]+' "$log" | tail -1)
  cov=$(echo "$last" | sed -n 's/.*cov: \([0-9]*\).*/\1/p')
  ft=$(echo "$last" | sed -n 's/.*ft: \([0-9]*\).*/\1/p')
  corp=$(echo "$last" | sed -n 's/.*corp: \([0-9]*\/[0-9a-zA-Z]*\).*/\1/p')
  findings=$(ls "$OUT/findings/$t" 2>/dev/null | wc -l)
  echo "fuzz: $t: exit $rc, ${execs:-?} executions, ${rate:-?} exec/s, coverage ${cov:-?} edges / ${ft:-?} features, corpus ${corp:-?}, findings $findings"
  if [ "$rc" != 0 ] || [ "$findings" -gt 0 ]; then
    status=1
    grep -E 'ERROR:|SUMMARY:|fuzz oracle:|==[0-9]+==' "$log" | head -20 | sed 's/^/  /'
    ls "$OUT/findings/$t" 2>/dev/null | sed "s|^|  finding: $OUT/findings/$t/|"
  fi
done
exit $status
