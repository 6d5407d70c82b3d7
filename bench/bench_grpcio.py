#!/usr/bin/python3
"""bench_grpcio.py - client (c) of the bridge benchmark: the calls an OpenSandbox SDK makes,
from Python on Debian's python3-grpcio (the official SDK's transport) for gRPC and
http.client (one kept-alive connection) for create/destroy.

Two ways to run it:
  bench_grpcio.py --url http://127.0.0.1:P --grpc-port Q --worker
      driven by bench_bridge: reads one operation name per line on stdin, does it once and
      answers "ok <ns>" (its own perf_counter_ns around the call, message building included)
      or "tp <count> <ns>" for "tp <seconds> <depth>"; "err <why>" on failure.
  bench_grpcio.py --url ... --grpc-port Q [-n 200]
      standalone: prints its own Markdown table.

Message classes come from proto/sandbox.proto through grpc_tools.protoc (python3-grpc-tools)
or protoc, generated into a temporary directory; calls go through channel.unary_unary with
the method paths, which is what generated stubs do.
"""
import argparse
import collections
import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse

import grpc

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO = os.path.normpath(os.path.join(HERE, "..", "proto", "sandbox.proto"))
SMALL = (b"abcdefghijklmnopqrstuvwxyz" * 40)[:1024]
BIG = (b"abcdefghijklmnopqrstuvwxyz" * 40330)[: 1 << 20]


def load_pb2(tmp):
    """Generate sandbox_pb2 into tmp and import it."""
    src = os.path.dirname(os.path.abspath(PROTO))
    try:
        from grpc_tools import protoc  # noqa: F401

        cmd = [sys.executable, "-m", "grpc_tools.protoc"]
    except ImportError:
        if not shutil.which("protoc"):
            sys.exit("bench_grpcio: needs python3-grpc-tools or protoc")
        cmd = ["protoc"]
    subprocess.run(cmd + ["-I" + src, "--python_out=" + tmp, PROTO], check=True)
    sys.path.insert(0, tmp)
    import sandbox_pb2

    return sandbox_pb2


class Client:
    def __init__(self, url, grpc_port, pb2):
        u = urllib.parse.urlparse(url)
        self.pb = pb2
        self.http = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=30)
        opts = [("grpc.max_receive_message_length", 64 << 20),
                ("grpc.max_send_message_length", 64 << 20)]
        self.channel = grpc.insecure_channel("%s:%d" % (u.hostname, grpc_port), options=opts)
        svc = "/sandbox.SandboxService/"

        def unary(name, req, res):
            return self.channel.unary_unary(svc + name, request_serializer=req.SerializeToString,
                                            response_deserializer=res.FromString)

        self.run = unary("RunCommand", pb2.RunCommandRequest, pb2.RunCommandResponse)
        self.write = unary("WriteFile", pb2.WriteFileRequest, pb2.WriteFileResponse)
        self.read = unary("ReadFile", pb2.ReadFileRequest, pb2.ReadFileResponse)
        self.set_env = unary("SetEnv", pb2.SetEnvRequest, pb2.SetEnvResponse)
        self.sid = self.create()
        self.op_write(self.sid, "/tmp/b1k", SMALL)
        self.op_write(self.sid, "/tmp/b1m", BIG)

    def request(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if data is not None else {}
        self.http.request(method, path, body=data, headers=headers)
        r = self.http.getresponse()
        payload = r.read()
        if r.status >= 300:
            raise RuntimeError("%s %s: HTTP %d %r" % (method, path, r.status, payload[:200]))
        return payload

    def create(self):
        return json.loads(self.request("POST", "/sessions", {}))["session_id"]

    def destroy(self, sid):
        self.request("DELETE", "/sessions/" + sid)

    def op_set_env(self):
        self.set_env(self.pb.SetEnvRequest(session_id=self.sid, env={"BENCH": "1"}), timeout=30)

    def op_write(self, sid, path, content):
        r = self.write(self.pb.WriteFileRequest(session_id=sid, path=path, content=content),
                       timeout=30)
        if not r.success:
            raise RuntimeError("write %s: %s" % (path, r.error))

    def op_read(self, path, size):
        r = self.read(self.pb.ReadFileRequest(session_id=self.sid, path=path), timeout=30)
        if r.error or len(r.content) != size:
            raise RuntimeError("read %s: %r, %d bytes" % (path, r.error, len(r.content)))

    def op_run_true(self):
        r = self.run(self.pb.RunCommandRequest(session_id=self.sid,
                                               command=["/bin/sh", "-c", "true"]), timeout=60)
        if r.exit_code != 0 or r.signal != 0:
            raise RuntimeError("run true: exit %d signal %d" % (r.exit_code, r.signal))

    def op_create_destroy(self):
        self.destroy(self.create())

    def do(self, op):
        """One operation, timed; returns ns."""
        t0 = time.perf_counter_ns()
        if op == "setenv":
            self.op_set_env()
        elif op == "write1k":
            self.op_write(self.sid, "/tmp/b1k", SMALL)
        elif op == "read1k":
            self.op_read("/tmp/b1k", len(SMALL))
        elif op == "write1m":
            self.op_write(self.sid, "/tmp/b1m", BIG)
        elif op == "read1m":
            self.op_read("/tmp/b1m", len(BIG))
        elif op == "run":
            self.op_run_true()
        elif op == "createdestroy":
            self.op_create_destroy()
        else:
            raise RuntimeError("unknown operation " + op)
        return time.perf_counter_ns() - t0

    def throughput(self, seconds, depth):
        """SetEnv with depth calls in flight (futures) for seconds; returns (count, ns)."""
        req = self.pb.SetEnvRequest(session_id=self.sid, env={"BENCH": "1"})
        fut = collections.deque()
        count = 0
        t0 = time.perf_counter_ns()
        until = t0 + int(seconds * 1e9)
        for _ in range(depth):
            fut.append(self.set_env.future(req, timeout=30))
        while fut:
            fut.popleft().result()
            count += 1
            if time.perf_counter_ns() < until:
                fut.append(self.set_env.future(req, timeout=30))
        return count, time.perf_counter_ns() - t0

    def close(self):
        try:
            self.destroy(self.sid)
        finally:
            self.channel.close()
            self.http.close()


def worker(c):
    out = sys.stdout
    out.write("ready\n")
    out.flush()
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        try:
            if words[0] == "tp":
                n, ns = c.throughput(float(words[1]), int(words[2]))
                out.write("tp %d %d\n" % (n, ns))
            elif words[0] == "quit":
                break
            else:
                out.write("ok %d\n" % c.do(words[0]))
        except Exception as e:  # reported to the driver, which stops
            out.write("err %s\n" % str(e).replace("\n", " "))
        out.flush()


def standalone(c, n):
    print("| operation (python3-grpcio) | n | p50 | p99 |")
    print("|---|---:|---:|---:|")
    for op in ["setenv", "write1k", "read1k", "write1m", "read1m", "run", "createdestroy"]:
        for _ in range(10):
            c.do(op)
        s = sorted(c.do(op) for _ in range(n))
        p = lambda q: s[min(len(s) - 1, max(0, int(q * len(s) + 0.999999) - 1))] / 1e3
        print("| %s | %d | %.1f µs | %.1f µs |" % (op, n, p(0.5), p(0.99)))
    count, ns = c.throughput(2.0, 32)
    print("| setenv, 32 in flight | %d | %.0f req/s | |" % (count, count / (ns / 1e9)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", required=True)
    ap.add_argument("--grpc-port", type=int, required=True)
    ap.add_argument("--worker", action="store_true")
    ap.add_argument("-n", type=int, default=200)
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="bench_grpcio.")
    try:
        pb2 = load_pb2(tmp)
        c = Client(a.url, a.grpc_port, pb2)
        try:
            worker(c) if a.worker else standalone(c, a.n)
        finally:
            c.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
