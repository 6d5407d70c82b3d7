#!/usr/bin/python3
"""live_bridge.py - live output, exec sessions and host files through the bridge (local backend):
  - exec/write -> exec/read (polling, yieldMs 0) round trip for `cat`, p50/p99;
  - `sandbox/run true` p50 with and without a partialResultToken, interleaved;
  - time from a line printed in the sandbox (its CLOCK_REALTIME, same host) to its
    $/progress at the host, p50/p99 (bounded by the 50 ms coalescing wait);
  - fs/upload and fs/download vs fs/write/fs/read with base64, 1 MiB and 64 MiB;
  - the bridge's peak RSS (VmHWM) across a 256 MiB upload and download.

usage: /usr/bin/python3 bench/live_bridge.py build/opensandbox-bridge [-n 300]"""
import argparse
import base64
import json
import os
import re
import subprocess
import tempfile
import time


def pct(v, q):
    v = sorted(v)
    return v[min(len(v) - 1, int(len(v) * q))]


class Bridge:
    def __init__(self, exe):
        # --max-message: base64 of 64 MiB in fs/write is an 86 MB line
        self.p = subprocess.Popen([exe, "--max-message", str(256 << 20)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL)
        self.i = 0

    def send(self, m, params):
        self.i += 1
        self.p.stdin.write((json.dumps({"jsonrpc": "2.0", "id": self.i, "method": m,
                                        "params": params}) + "\n").encode())
        self.p.stdin.flush()
        return self.i

    def call(self, m, params):
        id = self.send(m, params)
        while True:
            r = json.loads(self.p.stdout.readline())
            if r.get("id") in (id, None) and "method" not in r:
                if "error" in r:
                    raise RuntimeError(r["error"])
                return r["result"]

    def hwm_mb(self):
        with open("/proc/%d/status" % self.p.pid) as f:
            return int(re.search(r"VmHWM:\s+(\d+)", f.read()).group(1)) / 1024

    def reset_hwm(self):
        with open("/proc/%d/clear_refs" % self.p.pid, "w") as f:
            f.write("5")

    def close(self):
        self.p.stdin.close()
        self.p.wait()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("bridge")
    ap.add_argument("-n", type=int, default=300)
    a = ap.parse_args()
    b = Bridge(a.bridge)
    sid = b.call("sandbox/create", {})["sandboxId"]
    print("| measure | n | p50 | p99 |\n|---|---|---|---|")
    plain, tok = [], []
    for i in range(a.n):
        for lst, extra in ((plain, {}), (tok, {"partialResultToken": i})):
            t0 = time.perf_counter()
            b.call("sandbox/run", dict({"sandboxId": sid, "argv": ["true"]}, **extra))
            lst.append((time.perf_counter() - t0) * 1000)
    print("| sandbox/run true | %d | %.2f ms | %.2f ms |" % (a.n, pct(plain, .5), pct(plain, .99)))
    print("| sandbox/run true, partialResultToken | %d | %.2f ms | %.2f ms |" % (a.n, pct(tok, .5), pct(tok, .99)))

    x = b.call("exec/start", {"sandboxId": sid, "command": "cat", "stdin": True})["execId"]
    rt = []
    for _ in range(a.n):
        t0 = time.perf_counter()
        b.call("exec/write", {"execId": x, "data": "x\n"})
        got = ""
        while got != "x\n":
            got += b.call("exec/read", {"execId": x})["stdout"]
        rt.append((time.perf_counter() - t0) * 1000)
    b.call("exec/kill", {"execId": x})
    print("| exec/write -> exec/read round trip, cat | %d | %.2f ms | %.2f ms |"
          % (len(rt), pct(rt, .5), pct(rt, .99)))

    script = "i=0; while [ $i -lt %d ]; do date +%%s%%N; sleep 0.02; i=$((i+1)); done" % a.n
    id = b.send("sandbox/run", {"sandboxId": sid, "command": script, "partialResultToken": "lat"})
    lat, buf = [], ""
    while True:
        m = json.loads(b.p.stdout.readline())
        now = time.time_ns()
        if m.get("method") == "$/progress":
            buf += m["params"]["value"].get("stdout", "")
            while "\n" in buf:
                line, buf = buf.split("\n", 1)
                lat.append((now - int(line)) / 1e6)
        elif m.get("id") == id:
            break
    print("| printed line -> its $/progress at the host | %d | %.2f ms | %.2f ms |"
          % (len(lat), pct(lat, .5), pct(lat, .99)))

    tmp = tempfile.mkdtemp(prefix="live-bench-")
    for size in (1 << 20, 64 << 20):
        src = os.path.join(tmp, "src")
        data = os.urandom(size)
        with open(src, "wb") as f:
            f.write(data)
        enc = base64.b64encode(data).decode()
        reps = 20 if size == 1 << 20 else 3
        label = "%d MiB" % (size >> 20)
        for name, fn in (
                ("fs/upload", lambda: b.call("fs/upload", {"sandboxId": sid, "localPath": src, "path": "/tmp/u"})),
                ("fs/write base64", lambda: b.call("fs/write", {"sandboxId": sid, "path": "/tmp/w",
                                                               "content": enc, "encoding": "base64"})),
                ("fs/download", lambda: b.call("fs/download", {"sandboxId": sid, "path": "/tmp/u",
                                                               "localPath": os.path.join(tmp, "dst")})),
                ("fs/read base64", lambda: b.call("fs/read", {"sandboxId": sid, "path": "/tmp/w",
                                                             "encoding": "base64"}))):
            ts = []
            try:
                for _ in range(reps):
                    t0 = time.perf_counter()
                    fn()
                    ts.append((time.perf_counter() - t0) * 1000)
            except (RuntimeError, ValueError) as e:  # e.g. past the bridge's message limit
                print("| %s, %s | - | refused: %s | |" % (name, label, str(e)[:80]))
                continue
            print("| %s, %s | %d | %.1f ms | %.1f ms |" % (name, label, reps, pct(ts, .5), pct(ts, .99)))

    big = os.path.join(tmp, "big")
    with open(big, "wb") as f:
        for _ in range(256):
            f.write(os.urandom(1 << 20))
    b.reset_hwm()
    before = b.hwm_mb()
    t0 = time.perf_counter()
    b.call("fs/upload", {"sandboxId": sid, "localPath": big, "path": "/tmp/big"})
    b.call("fs/download", {"sandboxId": sid, "path": "/tmp/big", "localPath": os.path.join(tmp, "big2")})
    dt = (time.perf_counter() - t0) * 1000
    print("| 256 MiB fs/upload + fs/download: bridge peak RSS %.0f MB (%.0f MB before), %.0f ms | 1 | | |"
          % (b.hwm_mb(), before, dt))
    b.call("sandbox/destroy", {"sandboxId": sid})
    b.close()
    for f in os.listdir(tmp):
        os.unlink(os.path.join(tmp, f))
    os.rmdir(tmp)


if __name__ == "__main__":
    main()
