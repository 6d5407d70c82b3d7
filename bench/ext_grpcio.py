#!/usr/bin/python3
"""ext_grpcio.py - opensandboxd's streaming extension (proto/sandbox_ext.proto) measured from
Python grpcio, on a fresh opensandboxd started here on free loopback ports:
  - RunStream: time from a line printed in the sandbox (its CLOCK_REALTIME, same host) to
    its event at the client, p50/p99;
  - Exec: a line written to `cat`'s stdin until it comes back, p50/p99;
  - Upload (1 MiB chunks) vs WriteFile, and Download vs ReadFile, for 1 MiB and 64 MiB.

usage: /usr/bin/python3 bench/ext_grpcio.py build/opensandboxd [-n 300]"""
import argparse
import importlib
import json
import os
import queue
import re
import subprocess
import sys
import tempfile
import time
import urllib.request

import grpc
from grpc_tools import protoc

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO = os.path.normpath(os.path.join(HERE, "..", "proto"))


def load():
    out = tempfile.mkdtemp(prefix="ext-bench-pb2-")
    rc = protoc.main(["protoc", "-I" + PROTO, "--python_out=" + out,
                      os.path.join(PROTO, "sandbox.proto"), os.path.join(PROTO, "sandbox_ext.proto")])
    assert rc == 0
    sys.path.insert(0, out)
    return importlib.import_module("sandbox_pb2"), importlib.import_module("sandbox_ext_pb2")


def pct(v, q):
    v = sorted(v)
    return v[min(len(v) - 1, int(len(v) * q))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("server")
    ap.add_argument("-n", type=int, default=300)
    a = ap.parse_args()
    b, e = load()
    state = tempfile.mkdtemp(prefix="ext-bench-")
    p = subprocess.Popen([a.server, "--port", "0", "--grpc-port", "0", "--bind", "127.0.0.1",
                          "--state-dir", state, "--max-file", str(128 << 20)],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        m = re.search(rb"http=[0-9.]+:(\d+) grpc=[0-9.]+:(\d+)", p.stdout.readline())
        http, gport = int(m.group(1)), int(m.group(2))
        req = urllib.request.Request("http://127.0.0.1:%d/sessions" % http, data=b"{}",
                                     headers={"Content-Type": "application/json"})
        sid = json.loads(urllib.request.urlopen(req).read())["session_id"]
        opts = [("grpc.max_receive_message_length", 128 << 20), ("grpc.max_send_message_length", 128 << 20)]
        ch = grpc.insecure_channel("127.0.0.1:%d" % gport, options=opts)
        ext = "/sandbox.ext.SandboxExt/"
        run_stream = ch.unary_stream(ext + "RunStream", request_serializer=b.RunCommandRequest.SerializeToString,
                                     response_deserializer=e.OutputEvent.FromString)
        execc = ch.stream_stream(ext + "Exec", request_serializer=e.ExecInput.SerializeToString,
                                 response_deserializer=e.OutputEvent.FromString)
        upload = ch.stream_unary(ext + "Upload", request_serializer=e.UploadChunk.SerializeToString,
                                 response_deserializer=e.UploadResponse.FromString)
        download = ch.unary_stream(ext + "Download", request_serializer=e.DownloadRequest.SerializeToString,
                                   response_deserializer=e.DownloadChunk.FromString)
        svc = "/sandbox.SandboxService/"
        write = ch.unary_unary(svc + "WriteFile", request_serializer=b.WriteFileRequest.SerializeToString,
                               response_deserializer=b.WriteFileResponse.FromString)
        read = ch.unary_unary(svc + "ReadFile", request_serializer=b.ReadFileRequest.SerializeToString,
                              response_deserializer=b.ReadFileResponse.FromString)
        print("| measure | n | p50 | p99 |\n|---|---|---|---|")

        # RunStream: printed -> received
        script = "i=0; while [ $i -lt %d ]; do date +%%s%%N; sleep 0.01; i=$((i+1)); done" % a.n
        lat = []
        buf = b""
        for ev in run_stream(b.RunCommandRequest(session_id=sid, command=["/bin/sh", "-c", script]),
                             timeout=120):
            now = time.time_ns()
            buf += ev.stdout
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                lat.append((now - int(line)) / 1e6)
        print("| RunStream: printed byte -> event at the client | %d | %.2f ms | %.2f ms |"
              % (len(lat), pct(lat, 0.5), pct(lat, 0.99)))

        # Exec: cat round trip
        q = queue.Queue()
        q.put(e.ExecInput(start=b.RunCommandRequest(session_id=sid, command=["cat"]), stdin=True))

        def inputs():
            while True:
                m = q.get()
                if m is None:
                    return
                yield m

        call = execc(inputs(), timeout=120)
        assert next(call).started
        rt = []
        for _ in range(a.n):
            t0 = time.perf_counter()
            q.put(e.ExecInput(data=b"x\n"))
            got = b""
            while got != b"x\n":
                got += next(call).stdout
            rt.append((time.perf_counter() - t0) * 1000)
        q.put(e.ExecInput(eof=True))
        q.put(None)
        list(call)
        print("| Exec: stdin line -> output event, cat | %d | %.2f ms | %.2f ms |"
              % (len(rt), pct(rt, 0.5), pct(rt, 0.99)))

        for size in (1 << 20, 64 << 20):
            data = os.urandom(size)
            label = "%d MiB" % (size >> 20)
            reps = 20 if size == 1 << 20 else 3
            for name, fn in (
                    ("Upload (1 MiB chunks)", lambda: upload(iter(
                        [e.UploadChunk(session_id=sid, path="/tmp/u")] +
                        [e.UploadChunk(data=data[i:i + (1 << 20)], commit=i + (1 << 20) >= size)
                         for i in range(0, size, 1 << 20)]), timeout=120)),
                    ("WriteFile", lambda: write(b.WriteFileRequest(session_id=sid, path="/tmp/w", content=data),
                                                timeout=120)),
                    ("Download (1 MiB chunks)", lambda: b"".join(
                        c.data for c in download(e.DownloadRequest(session_id=sid, path="/tmp/u"), timeout=120))),
                    ("ReadFile", lambda: read(b.ReadFileRequest(session_id=sid, path="/tmp/w"), timeout=120))):
                ts = []
                for _ in range(reps):
                    t0 = time.perf_counter()
                    fn()
                    ts.append((time.perf_counter() - t0) * 1000)
                print("| %s, %s | %d | %.1f ms | %.1f ms |" % (name, label, reps, pct(ts, 0.5), pct(ts, 0.99)))
        ch.close()
    finally:
        p.terminate()
        p.wait()


if __name__ == "__main__":
    main()
