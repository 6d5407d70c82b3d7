#!/usr/bin/python3
"""spawn_cost.py - does a run's cost grow with the caller's memory? `echo hello` p50 on a
fresh opensandboxd, then after three runs with 10 MB, 10 MB and 1 MB of output (and, with
--files, 240 MiB of file traffic through WriteFile/ReadFile), with the server's RSS each time;
then the same through the bridge's local backend (no wait for its idle trim).

usage: /usr/bin/python3 bench/spawn_cost.py [-n 300] [--files] SERVER [SERVER...] [--bridge BRIDGE...]
Several binaries are measured interleaved, round by round, so they see the same load."""
import argparse, json, os, re, subprocess, sys, tempfile, time, urllib.request

import grpc

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench_grpcio  # noqa: E402

BIG = ["sh", "-c", "head -c 10000000 /dev/zero | tr '\\0' a", "sh", "-c", "head -c 10000000 /dev/zero | tr '\\0' b",
       "sh", "-c", "head -c 1000000 /dev/zero | tr '\\0' c"]
BIG_CMDS = ["head -c 10000000 /dev/zero | tr '\\0' a", "head -c 10000000 /dev/zero | tr '\\0' b",
            "head -c 1000000 /dev/zero | tr '\\0' c"]


def rss_mb(pid):
    with open("/proc/%d/status" % pid) as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1)) / 1024


def pct(ts, q):
    ts = sorted(ts)
    return ts[min(len(ts) - 1, int(len(ts) * q))]


class Server:
    def __init__(self, exe, pb):
        self.state = tempfile.mkdtemp(prefix="spawncost-")
        self.p = subprocess.Popen([exe, "--port", "0", "--grpc-port", "0", "--bind", "127.0.0.1",
                                   "--state-dir", self.state, "--max-file", str(256 << 20)],
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        m = re.search(rb"http=[0-9.]+:(\d+) grpc=[0-9.]+:(\d+)", self.p.stdout.readline())
        http, gport = int(m.group(1)), int(m.group(2))
        self.pb = pb
        req = urllib.request.Request("http://127.0.0.1:%d/sessions" % http, data=b"{}",
                                     headers={"Content-Type": "application/json"})
        self.sid = json.loads(urllib.request.urlopen(req).read())["session_id"]
        opts = [("grpc.max_receive_message_length", 256 << 20), ("grpc.max_send_message_length", 256 << 20)]
        ch = grpc.insecure_channel("127.0.0.1:%d" % gport, options=opts)
        svc = "/sandbox.SandboxService/"
        self.run = ch.unary_unary(svc + "RunCommand", request_serializer=pb.RunCommandRequest.SerializeToString,
                                  response_deserializer=pb.RunCommandResponse.FromString)
        self.write = ch.unary_unary(svc + "WriteFile", request_serializer=pb.WriteFileRequest.SerializeToString,
                                    response_deserializer=pb.WriteFileResponse.FromString)
        self.read = ch.unary_unary(svc + "ReadFile", request_serializer=pb.ReadFileRequest.SerializeToString,
                                   response_deserializer=pb.ReadFileResponse.FromString)

    def sh(self, cmd):
        return self.run(self.pb.RunCommandRequest(session_id=self.sid, command=["sh", "-c", cmd]), timeout=60)

    def echo(self):
        t0 = time.perf_counter()
        r = self.run(self.pb.RunCommandRequest(session_id=self.sid, command=["echo", "hello"]), timeout=60)
        dt = (time.perf_counter() - t0) * 1000
        assert r.stdout == "hello\n"
        return dt

    def files(self):
        blob = b"x" * (40 << 20)
        for i in range(3):  # 3 x (40 MiB up + 40 MiB down) = 240 MiB
            assert self.write(self.pb.WriteFileRequest(session_id=self.sid, path="/tmp/f", content=blob), timeout=60).success
            assert len(self.read(self.pb.ReadFileRequest(session_id=self.sid, path="/tmp/f"), timeout=60).content) == len(blob)

    def pid(self):
        return self.p.pid

    def stop(self):
        self.p.terminate(); self.p.wait()


class Bridge:
    def __init__(self, exe):
        self.p = subprocess.Popen([exe], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.i = 0
        self.sid = self.call("sandbox/create", {})["sandboxId"]

    def call(self, m, params):
        self.i += 1
        self.p.stdin.write((json.dumps({"jsonrpc": "2.0", "id": self.i, "method": m, "params": params}) + "\n").encode())
        self.p.stdin.flush()
        return json.loads(self.p.stdout.readline())["result"]

    def sh(self, cmd):
        return self.call("sandbox/run", {"sandboxId": self.sid, "command": cmd})

    def echo(self):
        t0 = time.perf_counter()
        r = self.call("sandbox/run", {"sandboxId": self.sid, "argv": ["echo", "hello"]})
        dt = (time.perf_counter() - t0) * 1000
        assert r["stdout"] == "hello\n"
        return dt

    def files(self):
        pass

    def pid(self):
        return self.p.pid

    def stop(self):
        self.p.stdin.close(); self.p.wait()


def measure(targets, n):
    ts = {name: [] for name, _ in targets}
    for _ in range(n):
        for name, t in targets:
            ts[name].append(t.echo())
    return {name: (pct(v, 0.5), pct(v, 0.99), rss_mb(t.pid())) for (name, t), v in zip(targets, ts.values())}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=300)
    ap.add_argument("--files", action="store_true")
    ap.add_argument("--settle", type=float, default=0,
                    help="seconds to wait after the big outputs (opensandboxd trims once a second)")
    ap.add_argument("servers", nargs="*")
    ap.add_argument("--bridge", nargs="*", default=[])
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="spawncost-pb-")
    pb = bench_grpcio.load_pb2(tmp)
    targets = [("server %s" % s, Server(s, pb)) for s in a.servers] + \
              [("bridge(local) %s" % b, Bridge(b)) for b in a.bridge]
    try:
        for _, t in targets:
            for _ in range(20):
                t.echo()
        fresh = measure(targets, a.n)
        for _, t in targets:
            for c in BIG_CMDS:
                t.sh(c)
            if a.files:
                t.files()
        time.sleep(a.settle)
        after = measure(targets, a.n)
        print("| binary | fresh p50 | fresh p99 | fresh RSS | after p50 | after p99 | after RSS |")
        print("|---|---|---|---|---|---|---|")
        for name, _ in targets:
            f, g = fresh[name], after[name]
            print("| %s | %.2f ms | %.2f ms | %.0f MB | %.2f ms | %.2f ms | %.0f MB |"
                  % (name, f[0], f[1], f[2], g[0], g[1], g[2]))
    finally:
        for _, t in targets:
            t.stop()


if __name__ == "__main__":
    main()
