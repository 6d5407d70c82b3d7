#!/usr/bin/python3
"""bench_async.py - what the bridge's async core costs in threads and how fast a cancel
kills a command, for one or more bridge binaries side by side (e.g. an old build and a new one).

    bench/bench_async.py --server build/opensandboxd --bridge NAME=build/opensandbox-bridge \
        [--bridge OLD=/work/h8-base/build/opensandbox-bridge] [--creates 1000] [--runs 1000]
        [--cancels 200] [--sessions 20] [--only remote|local]

For each bridge and each backend (remote: opensandboxd started here on free ports with a
temporary --state-dir; local: the engine in the bridge), it measures:
  - threads of the bridge after `initialize` and 1 s idle (/proc/PID/status Threads);
  - the peak thread count while --creates `sandbox/create` requests are in flight (all written
    at once, pipelined; sampled every 2 ms until every reply is read), then destroys them;
  - the peak while --runs `sandbox/run` of `sleep 1` are in flight, spread over --sessions
    sandboxes (a session runs at most 64 processes at once);
  - cancel latency: --cancels times, a `sleep 1000.N` run is started, its process found in
    /proc (by its unique argument), then `$/cancelRequest` is written and the time until the
    process has exited (its pidfd becomes readable) is taken; p50 and max.
Prints Markdown tables. Children get killed on exit; the server is stopped by PID.
"""
import argparse
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

READY = re.compile(rb"^opensandboxd ready http=([0-9.]+):(\d+) grpc=([0-9.]+):(\d+)\s*$")


def threads_of(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("Threads:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return -1


class Bridge:
    """The bridge on pipes, NDJSON, with a reader thread that files replies by id."""

    def __init__(self, path, args):
        self.p = subprocess.Popen([path] + args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL)
        self.lock = threading.Condition()
        self.replies = {}
        self.next_id = 1
        self.t = threading.Thread(target=self._read, daemon=True)
        self.t.start()

    def _read(self):
        for line in self.p.stdout:
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            with self.lock:
                self.replies[msg.get("id")] = msg
                self.lock.notify_all()

    def send(self, method, params=None, rid=None):
        with self.lock:
            if rid is None:
                rid = self.next_id
                self.next_id += 1
        msg = {"jsonrpc": "2.0", "id": rid, "method": method}
        if params is not None:
            msg["params"] = params
        self.p.stdin.write((json.dumps(msg) + "\n").encode())
        self.p.stdin.flush()
        return rid

    def notify(self, method, params):
        self.p.stdin.write((json.dumps({"jsonrpc": "2.0", "method": method, "params": params})
                            + "\n").encode())
        self.p.stdin.flush()

    def wait(self, rid, timeout=120):
        end = time.time() + timeout
        with self.lock:
            while rid not in self.replies:
                left = end - time.time()
                if left <= 0:
                    raise TimeoutError("no reply to %r" % (rid,))
                self.lock.wait(left)
            return self.replies.pop(rid)

    def call(self, method, params=None, timeout=120):
        return self.wait(self.send(method, params), timeout)

    def pending(self, ids):
        with self.lock:
            return sum(1 for i in ids if i not in self.replies)

    def close(self):
        try:
            self.p.stdin.close()
            self.p.wait(timeout=20)
        except Exception:
            self.p.kill()
            self.p.wait()


def peak_while(br, ids, timeout=300):
    """Sample the bridge's threads every 2 ms until every reply of ids has come."""
    peak = threads_of(br.p.pid)
    end = time.time() + timeout
    while br.pending(ids) and time.time() < end:
        peak = max(peak, threads_of(br.p.pid))
        time.sleep(0.002)
    return peak


def find_pid(mark, timeout=10):
    """The host pid of the process whose argv holds mark."""
    end = time.time() + timeout
    needle = mark.encode()
    while time.time() < end:
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                with open("/proc/%s/cmdline" % d, "rb") as f:
                    argv = f.read().split(b"\0")
            except OSError:
                continue
            if needle in argv and argv[0].endswith(b"sleep"):
                return int(d)
        time.sleep(0.001)
    return None


def measure(path, backend_args, opts):
    res = {}
    br = Bridge(path, backend_args)
    r = br.call("initialize", {})
    assert "result" in r, r
    time.sleep(1.0)
    res["idle"] = threads_of(br.p.pid)

    ids = [br.send("sandbox/create", {}) for _ in range(opts.creates)]
    res["creates_peak"] = peak_while(br, ids)
    sids = []
    for i in ids:
        r = br.wait(i)
        if "result" in r:
            sids.append(r["result"]["sandboxId"])
    res["creates_ok"] = len(sids)
    dids = [br.send("sandbox/destroy", {"sandboxId": s}) for s in sids]
    for i in dids:
        br.wait(i)

    sess = [br.call("sandbox/create", {})["result"]["sandboxId"] for _ in range(opts.sessions)]
    t0 = time.time()
    ids = [br.send("sandbox/run", {"sandboxId": sess[k % len(sess)], "argv": ["sleep", "1"]})
           for k in range(opts.runs)]
    res["runs_peak"] = peak_while(br, ids)
    ok = 0
    for i in ids:
        r = br.wait(i)
        ok += "result" in r and r["result"].get("exitCode") == 0
    res["runs_ok"] = ok
    res["runs_s"] = time.time() - t0

    lat = []
    sid = sess[0]
    for k in range(opts.cancels):
        mark = "1000.%d" % k
        rid = "c%d" % k
        br.send("sandbox/run", {"sandboxId": sid, "argv": ["sleep", mark]}, rid=rid)
        pid = find_pid(mark)
        if pid is None:
            br.notify("$/cancelRequest", {"id": rid})
            br.wait(rid)
            continue
        try:
            pfd = os.pidfd_open(pid)
        except OSError:
            br.notify("$/cancelRequest", {"id": rid})
            br.wait(rid)
            continue
        t0 = time.perf_counter()
        br.notify("$/cancelRequest", {"id": rid})
        select.select([pfd], [], [], 10)
        lat.append((time.perf_counter() - t0) * 1000.0)
        os.close(pfd)
        br.wait(rid)
    if os.environ.get("BENCH_VERBOSE"):
        print("latencies:", ["%.1f" % x for x in lat], file=sys.stderr)
    lat.sort()
    res["cancel_n"] = len(lat)
    res["cancel_p50"] = lat[len(lat) // 2] if lat else float("nan")
    res["cancel_max"] = lat[-1] if lat else float("nan")
    for s in sess:
        br.call("sandbox/destroy", {"sandboxId": s})
    br.close()
    return res


def start_server(path):
    state = tempfile.mkdtemp(prefix="osb-bench-async-")
    p = subprocess.Popen([path, "--port", "0", "--grpc-port", "0", "--state-dir", state],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    line = p.stdout.readline()
    m = READY.match(line)
    if not m:
        p.kill()
        raise SystemExit("opensandboxd did not start: %r" % line)
    return p, state, "http://%s:%s" % (m.group(1).decode(), m.group(2).decode()), m.group(4).decode()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", required=True)
    ap.add_argument("--bridge", action="append", required=True, help="NAME=PATH")
    ap.add_argument("--creates", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--cancels", type=int, default=200)
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--only", choices=["remote", "local"])
    opts = ap.parse_args()
    srv, state, url, gport = start_server(opts.server)
    rows = []
    try:
        for spec in opts.bridge:
            name, path = spec.split("=", 1)
            for backend in ("remote", "local"):
                if opts.only and backend != opts.only:
                    continue
                args = ["--url", url, "--grpc-port", gport] if backend == "remote" else []
                rows.append((name, backend, measure(path, args, opts)))
    finally:
        srv.send_signal(signal.SIGTERM)
        try:
            srv.wait(timeout=30)
        except subprocess.TimeoutExpired:
            srv.kill()
            srv.wait()
        shutil.rmtree(state, ignore_errors=True)
    print("| bridge | backend | threads idle | peak, %d creates in flight (ok) | peak, %d `sleep 1` "
          "runs in flight (ok, wall s) | cancel → process gone p50 / max (n) |"
          % (opts.creates, opts.runs))
    print("|---|---|---:|---:|---:|---:|")
    for name, backend, r in rows:
        print("| %s | %s | %d | %d (%d) | %d (%d, %.1f s) | %.2f ms / %.2f ms (%d) |"
              % (name, backend, r["idle"], r["creates_peak"], r["creates_ok"], r["runs_peak"],
                 r["runs_ok"], r["runs_s"], r["cancel_p50"], r["cancel_max"], r["cancel_n"]))


if __name__ == "__main__":
    main()
