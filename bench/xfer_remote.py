#!/usr/bin/python3
"""xfer_remote.py - host files through the bridge's remote backend against a fresh
opensandboxd (started here on free loopback ports), measured side by side (interleaved,
one method after the other in each round):
  - fs/upload (chunked over the extension's Upload) vs fs/write with base64 vs Python grpcio
    WriteFile straight to the server, and the same way back (fs/download / fs/read base64 /
    grpcio ReadFile), at 1 MiB and 64 MiB; fs/upload and fs/download at 1 MiB also against
    an opensandboxd --no-ext (one WriteFile/ReadFile, as with the public server);
  - the bridge's peak RSS (VmHWM, reset before each) across a 256 MiB fs/upload, then across
    a 256 MiB fs/download, on a fresh bridge.

usage: /usr/bin/python3 bench/xfer_remote.py [--build build] [-n 20] [--big-n 3]"""
import argparse
import base64
import hashlib
import importlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

import grpc
from grpc_tools import protoc

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO = os.path.normpath(os.path.join(HERE, "..", "proto"))
MiB = 1 << 20


def load_pb2():
    out = tempfile.mkdtemp(prefix="xfer-bench-pb2-")
    rc = protoc.main(["protoc", "-I" + PROTO, "--python_out=" + out,
                      os.path.join(PROTO, "sandbox.proto")])
    assert rc == 0
    sys.path.insert(0, out)
    return importlib.import_module("sandbox_pb2"), out


def pct(v, q):
    v = sorted(v)
    return v[min(len(v) - 1, int(len(v) * q))]


class Server:
    def __init__(self, exe, *extra):
        self.state = tempfile.mkdtemp(prefix="xfer-bench-state-")
        self.p = subprocess.Popen([exe, "--port", "0", "--grpc-port", "0", "--bind", "127.0.0.1",
                                   "--state-dir", self.state, "--max-file", str(128 * MiB)]
                                  + list(extra), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        m = re.search(rb"http=[0-9.]+:(\d+) grpc=[0-9.]+:(\d+)", self.p.stdout.readline())
        self.http, self.grpc = int(m.group(1)), int(m.group(2))

    def args(self):
        return ["--url", "http://127.0.0.1:%d" % self.http, "--grpc-port", str(self.grpc)]

    def stop(self):
        self.p.terminate()
        self.p.wait(30)
        shutil.rmtree(self.state, ignore_errors=True)


class Bridge:
    def __init__(self, exe, args):
        # --max-message: base64 of 64 MiB in fs/write is an 86 MB line
        self.p = subprocess.Popen([exe, "--max-message", str(256 * MiB), "--transport", "grpc"]
                                  + args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL)
        self.i = 0

    def call(self, m, params):
        self.i += 1
        self.p.stdin.write((json.dumps({"jsonrpc": "2.0", "id": self.i, "method": m,
                                        "params": params}) + "\n").encode())
        self.p.stdin.flush()
        while True:
            r = json.loads(self.p.stdout.readline())
            if r.get("id") == self.i:
                if "error" in r:
                    raise RuntimeError(r["error"])
                return r["result"]

    def hwm_mb(self):
        with open("/proc/%d/status" % self.p.pid) as f:
            return int(re.search(r"VmHWM:\s+(\d+)", f.read()).group(1)) / 1024

    def rss_mb(self):
        with open("/proc/%d/status" % self.p.pid) as f:
            return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1)) / 1024

    def reset_hwm(self):
        with open("/proc/%d/clear_refs" % self.p.pid, "w") as f:
            f.write("5")

    def close(self):
        self.p.stdin.close()
        self.p.wait(30)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(HERE, "..", "build"))
    ap.add_argument("-n", type=int, default=20, help="rounds at 1 MiB")
    ap.add_argument("--big-n", type=int, default=3, help="rounds at 64 MiB")
    a = ap.parse_args()
    pb, pbdir = load_pb2()
    server_exe = os.path.join(a.build, "opensandboxd")
    bridge_exe = os.path.join(a.build, "opensandbox-bridge")
    tmp = tempfile.mkdtemp(prefix="xfer-bench-")
    s = Server(server_exe)
    s_noext = Server(server_exe, "--no-ext")
    try:
        b = Bridge(bridge_exe, s.args())
        bn = Bridge(bridge_exe, s_noext.args())
        sid = b.call("sandbox/create", {})["sandboxId"]
        sid_n = bn.call("sandbox/create", {})["sandboxId"]
        opts = [("grpc.max_receive_message_length", 256 * MiB),
                ("grpc.max_send_message_length", 256 * MiB)]
        ch = grpc.insecure_channel("127.0.0.1:%d" % s.grpc, options=opts)
        write = ch.unary_unary("/sandbox.SandboxService/WriteFile",
                               request_serializer=pb.WriteFileRequest.SerializeToString,
                               response_deserializer=pb.WriteFileResponse.FromString)
        read = ch.unary_unary("/sandbox.SandboxService/ReadFile",
                              request_serializer=pb.ReadFileRequest.SerializeToString,
                              response_deserializer=pb.ReadFileResponse.FromString)

        print("| measure | n | p50 | p99 |\n|---|---|---|---|")
        for size, reps in ((MiB, a.n), (64 * MiB, a.big_n)):
            src = os.path.join(tmp, "src")
            data = os.urandom(size)
            with open(src, "wb") as f:
                f.write(data)
            digest = hashlib.sha256(data).hexdigest()
            enc = base64.b64encode(data).decode()
            dst = os.path.join(tmp, "dst")

            def check_dl():
                with open(dst, "rb") as f:
                    assert hashlib.sha256(f.read()).hexdigest() == digest

            rows = [
                ("fs/upload (chunked Upload)", lambda: b.call(
                    "fs/upload", {"sandboxId": sid, "localPath": src, "path": "/tmp/u"})),
                ("fs/write base64", lambda: b.call(
                    "fs/write", {"sandboxId": sid, "path": "/tmp/w", "content": enc,
                                 "encoding": "base64"})),
                ("grpcio WriteFile", lambda: write(pb.WriteFileRequest(
                    session_id=sid, path="/tmp/g", content=data), timeout=120)),
                ("fs/download (chunked Download)", lambda: (b.call(
                    "fs/download", {"sandboxId": sid, "path": "/tmp/u", "localPath": dst}),
                    check_dl())),
                ("fs/read base64", lambda: b.call(
                    "fs/read", {"sandboxId": sid, "path": "/tmp/w", "encoding": "base64"})),
                ("grpcio ReadFile", lambda: read(pb.ReadFileRequest(
                    session_id=sid, path="/tmp/g"), timeout=120)),
            ]
            if size == MiB:
                rows += [
                    ("fs/upload, --no-ext (one WriteFile)", lambda: bn.call(
                        "fs/upload", {"sandboxId": sid_n, "localPath": src, "path": "/tmp/u"})),
                    ("fs/download, --no-ext (one ReadFile)", lambda: (bn.call(
                        "fs/download", {"sandboxId": sid_n, "path": "/tmp/u", "localPath": dst}),
                        check_dl())),
                ]
            times = {name: [] for name, _ in rows}
            for _ in range(reps):
                for name, fn in rows:
                    t0 = time.perf_counter()
                    fn()
                    times[name].append((time.perf_counter() - t0) * 1000)
            for name, _ in rows:
                ts = times[name]
                print("| %s, %d MiB | %d | %.1f ms | %.1f ms |"
                      % (name, size >> 20, reps, pct(ts, .5), pct(ts, .99)))
            r = b.call("sandbox/run", {"sandboxId": sid, "command": "sha256sum /tmp/u /tmp/w /tmp/g"})
            assert [l.split()[0] for l in r["stdout"].splitlines()] == [digest] * 3, r
            b.call("sandbox/run", {"sandboxId": sid, "command": "rm -f /tmp/u /tmp/w /tmp/g"})
        b.close()
        bn.close()

        # peak RSS of a fresh bridge over a 256 MiB upload, then a 256 MiB download
        big = os.path.join(tmp, "big")
        h = hashlib.sha256()
        with open(big, "wb") as f:
            for _ in range(256):
                chunk = os.urandom(MiB)
                h.update(chunk)
                f.write(chunk)
        b = Bridge(bridge_exe, s.args())
        sid = b.call("sandbox/create", {})["sandboxId"]
        print("\n| 256 MiB through a fresh bridge | time | bridge VmHWM | VmRSS after |\n|---|---|---|---|")
        b.reset_hwm()
        before = b.hwm_mb()
        t0 = time.perf_counter()
        b.call("fs/upload", {"sandboxId": sid, "localPath": big, "path": "/big"})
        print("| fs/upload (HWM %.0f MB before) | %.0f ms | %.1f MB | %.1f MB |"
              % (before, (time.perf_counter() - t0) * 1000, b.hwm_mb(), b.rss_mb()))
        b.reset_hwm()
        t0 = time.perf_counter()
        b.call("fs/download", {"sandboxId": sid, "path": "/big", "localPath": big + ".back"})
        print("| fs/download | %.0f ms | %.1f MB | %.1f MB |"
              % ((time.perf_counter() - t0) * 1000, b.hwm_mb(), b.rss_mb()))
        h2 = hashlib.sha256()
        with open(big + ".back", "rb") as f:
            for chunk in iter(lambda: f.read(MiB), b""):
                h2.update(chunk)
        assert h2.hexdigest() == h.hexdigest()
        b.call("sandbox/destroy", {"sandboxId": sid})
        b.close()
    finally:
        s.stop()
        s_noext.stop()
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(pbdir, ignore_errors=True)


if __name__ == "__main__":
    main()
