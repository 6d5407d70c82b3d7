#!/bin/sh
# run.sh - the benchmarks (`make bench`): starts opensandboxd on free ports, runs
# bench_server (opensandboxd alone) and bench_bridge (the bridge against a direct C gRPC client,
# Python grpcio and a `cat` floor, interleaved), prints Markdown tables, stops the server.
#
#   bench/run.sh [-n ITER] [--big ITER] [--clients N] [--seconds S] [--depth N]
#                [--tp-seconds S] [--tp-rounds N] [--idle-seconds S] [--build DIR]
#                [--only server|bridge]
#                [--no-python] [--no-local] [--quick]
#
# Needs a built tree (make -j2) and, for the Python column, /usr/bin/python3 with
# python3-grpcio, python3-protobuf and python3-grpc-tools (or protoc).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
build=$root/build
n=200
big=100
clients=8
seconds=3
depth=32
tp_seconds=1
tp_rounds=3
idle_seconds=11
only=
python=/usr/bin/python3
use_python=1
no_local=

usage() {
  sed -n '2,/^set -eu/p' "$0" | grep '^#' | sed 's/^# \{0,1\}//'
  exit 2
}

while [ $# -gt 0 ]; do
  case $1 in
    -n) n=$2; shift ;;
    --big) big=$2; shift ;;
    --clients) clients=$2; shift ;;
    --seconds) seconds=$2; shift ;;
    --depth) depth=$2; shift ;;
    --tp-seconds) tp_seconds=$2; shift ;;
    --tp-rounds) tp_rounds=$2; shift ;;
    --idle-seconds) idle_seconds=$2; shift ;;
    --build) build=$2; shift ;;
    --only) only=$2; shift ;;
    --no-python) use_python= ;;
    --no-local) no_local=--no-local ;;
    --quick) n=50; big=20; seconds=1; tp_seconds=0.5; tp_rounds=1; idle_seconds=1 ;;
    -h|--help) usage ;;
    *) echo "run.sh: unknown option $1" >&2; usage ;;
  esac
  shift
done

server=$build/opensandboxd
bridge=$build/opensandbox-bridge
for f in "$server" "$bridge" "$build/tools/bench_server" "$build/tools/bench_bridge"; do
  [ -x "$f" ] || { echo "run.sh: $f missing: run make -j2 first" >&2; exit 2; }
done
if [ -n "$use_python" ] && ! "$python" -c 'import grpc, google.protobuf' 2>/dev/null; then
  echo "run.sh: $python lacks grpcio/protobuf: the Python column is left out" >&2
  use_python=
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/osb-bench.XXXXXX")
server_pid=
cleanup() {
  if [ -n "$server_pid" ]; then
    kill -TERM "$server_pid" 2>/dev/null || true
    i=0
    while kill -0 "$server_pid" 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
    kill -KILL "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir "$tmp/state"
"$server" --port 0 --grpc-port 0 --state-dir "$tmp/state" >"$tmp/ready" 2>"$tmp/server.log" &
server_pid=$!
i=0
until grep -q '^opensandboxd ready' "$tmp/ready" 2>/dev/null; do
  if ! kill -0 "$server_pid" 2>/dev/null || [ $i -ge 100 ]; then
    echo "run.sh: opensandboxd did not start:" >&2
    cat "$tmp/server.log" >&2
    exit 1
  fi
  sleep 0.1
  i=$((i + 1))
done
http=$(sed -n 's/.*http=\([^ ]*\).*/\1/p' "$tmp/ready")
grpc_port=$(sed -n 's/.*grpc=[^ ]*:\([0-9]*\).*/\1/p' "$tmp/ready")
url=http://$http

echo "# OpenSandbox benchmarks"
echo
echo "$(date -u '+%Y-%m-%d %H:%M UTC'); $(nproc) CPUs ($(sed -n 's/^model name[^:]*: //p' /proc/cpuinfo | head -1));" \
  "kernel $(uname -r); load average at start $(cut -d' ' -f1-3 /proc/loadavg);" \
  "opensandboxd at $url, gRPC port $grpc_port."
echo

if [ "$only" != bridge ]; then
  echo "## opensandboxd (bench_server: C client on the remote backend, $n iterations per row)"
  echo
  "$build/tools/bench_server" --url "$url" --grpc-port "$grpc_port" -n "$n" \
    --clients "$clients" --seconds "$seconds"
  echo
fi

if [ "$only" != server ]; then
  echo "## The bridge (bench_bridge: clients interleaved round-robin; $n small / $big 1 MiB iterations)"
  echo
  set -- --bridge "$bridge" --url "$url" --grpc-port "$grpc_port" -n "$n" --big "$big" \
    --depth "$depth" --tp-seconds "$tp_seconds" --tp-rounds "$tp_rounds" --idle-seconds "$idle_seconds" \
    --server-pid "$server_pid"
  [ -n "$no_local" ] && set -- "$@" --no-local
  [ -n "$use_python" ] && set -- "$@" --grpcio "$here/bench_grpcio.py" --python "$python"
  "$build/tools/bench_bridge" "$@"
  echo
fi

if [ -s "$tmp/server.log" ]; then
  echo "opensandboxd stderr:" >&2
  tail -n 20 "$tmp/server.log" >&2
fi
