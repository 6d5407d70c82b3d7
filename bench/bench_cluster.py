#!/usr/bin/python3
"""bench_cluster.py - the cost of the balancer hop (issue 13): the bridge straight to one
opensandboxd vs the bridge through HAProxy in front of three (deploy/haproxy, as shipped),
side by side in one run, and where 300 creates land.

    /usr/bin/python3 bench/bench_cluster.py [-n 300] [--depth 32] [--tp-seconds 1]
                                            [--tp-rounds 3] [--creates 300] [--build build]

Starts 3 nodes (--node-id n1..n3) + HAProxy on free 127.0.0.1 ports (tests/e2e/cluster.py)
and one more plain node for the direct column; two bridges (NDJSON on pipes), each with its
own sandbox. Small calls: sandbox/setEnv (gRPC SetEnv) and sandbox/get (HTTP GET
/sessions/{id}), one at a time, the two bridges alternating call by call, p50/p99 of the
wall time seen by this (Python) client. Throughput: sandbox/setEnv with --depth requests in
flight on one pipe for --tp-seconds, rounds alternating. Then --creates sandbox/create
through the balancer, one at a time, and as many again all in flight at once: sessions per
node. Prints Markdown; stops everything it started."""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "tests", "e2e"))


class Client:
    """A bridge on pipes, one NDJSON line per request and reply."""

    def __init__(self, exe, args):
        self.p = subprocess.Popen([exe] + args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL)
        self.next = 0

    def send(self, method, params):
        self.next += 1
        self.p.stdin.write((json.dumps({"jsonrpc": "2.0", "id": self.next, "method": method,
                                        "params": params}) + "\n").encode())

    def recv(self):
        line = self.p.stdout.readline()
        if not line:
            raise RuntimeError("the bridge closed its stdout")
        r = json.loads(line)
        if "error" in r:
            raise RuntimeError("error reply: %r" % r["error"])
        return r["result"]

    def call(self, method, params):
        self.send(method, params)
        self.p.stdin.flush()
        return self.recv()

    def close(self):
        self.p.stdin.close()
        self.p.wait(20)


def timed(c, method, params):
    t0 = time.perf_counter()
    c.call(method, params)
    return (time.perf_counter() - t0) * 1000


def throughput(c, sid, depth, seconds):
    params = {"sandboxId": sid, "env": {"K": "v"}}
    for _ in range(depth):
        c.send("sandbox/setEnv", params)
    c.p.stdin.flush()
    done = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        c.recv()
        done += 1
        c.send("sandbox/setEnv", params)
        c.p.stdin.flush()
    elapsed = time.perf_counter() - t0
    for _ in range(depth):
        c.recv()
    return done / elapsed


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", type=int, default=300)
    ap.add_argument("--depth", type=int, default=32)
    ap.add_argument("--tp-seconds", type=float, default=1.0)
    ap.add_argument("--tp-rounds", type=int, default=3)
    ap.add_argument("--creates", type=int, default=300)
    ap.add_argument("--build", default=os.path.join(REPO, "build"))
    a = ap.parse_args()
    os.environ["OSB_BRIDGE"] = os.path.join(os.path.abspath(a.build), "opensandbox-bridge")
    os.environ["OSB_SERVER"] = os.path.join(os.path.abspath(a.build), "opensandboxd")
    import cluster
    import harness
    if not cluster.HAPROXY:
        sys.exit("bench_cluster: haproxy is not installed")

    single = harness.Server()
    c = None
    clients = {}
    try:
        c = cluster.Cluster()
        clients = {"straight to one node": Client(harness.BRIDGE, single.bridge_args()),
                   "through HAProxy (3 nodes)": Client(harness.BRIDGE, c.bridge_args())}
        sids = {k: cl.call("sandbox/create", {})["sandboxId"] for k, cl in clients.items()}
        rows = {"`sandbox/setEnv` (gRPC)": ("sandbox/setEnv", lambda s: {"sandboxId": s, "env": {"K": "v"}}),
                "`sandbox/get` (HTTP)": ("sandbox/get", lambda s: {"sandboxId": s})}
        lat = {(r, k): [] for r in rows for k in clients}
        for r, (m, mk) in rows.items():
            for k, cl in clients.items():  # warm-up
                for _ in range(20):
                    cl.call(m, mk(sids[k]))
            order = list(clients)
            for i in range(a.n):
                for k in (order if i % 2 == 0 else order[::-1]):
                    lat[(r, k)].append(timed(clients[k], m, mk(sids[k])))
        tp = {k: [] for k in clients}
        order = list(clients)
        for i in range(a.tp_rounds):
            for k in (order if i % 2 == 0 else order[::-1]):
                tp[k].append(throughput(clients[k], sids[k], a.depth, a.tp_seconds))

        lb = clients["through HAProxy (3 nodes)"]
        created = [lb.call("sandbox/create", {})["sandboxId"] for _ in range(a.creates)]
        per_node = {n: sum(1 for s in created if s.startswith(n + "-")) for n in c.nodes}
        # the same number pipelined: all in flight at once (the bridge runs them concurrently)
        for _ in range(a.creates):
            lb.send("sandbox/create", {})
        lb.p.stdin.flush()
        t0 = time.perf_counter()
        burst = [lb.recv()["sandboxId"] for _ in range(a.creates)]
        burst_s = time.perf_counter() - t0
        per_node_burst = {n: sum(1 for s in burst if s.startswith(n + "-")) for n in c.nodes}
        created += burst

        print("## The balancer hop (bench/bench_cluster.py)")
        print()
        print("%s; %d CPUs; load average at the end %s; n=%d per row and column, interleaved "
              "call by call; a Python client on the bridge's pipes (its own cost is in both "
              "columns alike)." % (time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                                   os.cpu_count(), " ".join(open("/proc/loadavg").read().split()[:3]),
                                   a.n))
        print()
        ks = list(clients)
        print("| call | %s p50 / p99 (ms) | %s p50 / p99 (ms) | hop, p50 |" % (ks[0], ks[1]))
        print("|---|---|---|---|")
        for r in rows:
            cells = []
            p50 = []
            for k in ks:
                v = sorted(lat[(r, k)])
                p50.append(statistics.median(v))
                cells.append("%.3f / %.3f" % (p50[-1], v[int(len(v) * 0.99) - 1]))
            print("| %s | %s | %s | +%.3f ms |" % (r, cells[0], cells[1], p50[1] - p50[0]))
        print("| `sandbox/setEnv` pipelined, %d in flight (req/s, median of %d rounds of %gs) | %.0f | %.0f | %.0f%% |"
              % (a.depth, a.tp_rounds, a.tp_seconds, statistics.median(tp[ks[0]]),
                 statistics.median(tp[ks[1]]),
                 100.0 * (statistics.median(tp[ks[1]]) / statistics.median(tp[ks[0]]) - 1)))
        print()
        print("%d `sandbox/create` through the balancer (leastconn), one at a time: %s." % (
            a.creates, ", ".join("%s %d" % (n, v) for n, v in sorted(per_node.items()))))
        print("%d more, pipelined (all sent at once, %.1f s): %s." % (
            a.creates, burst_s, ", ".join("%s %d" % (n, v) for n, v in sorted(per_node_burst.items()))))
        for s in created:
            lb.call("sandbox/destroy", {"sandboxId": s})
    finally:
        for cl in clients.values():
            cl.close()
        if c:
            c.stop()
        single.stop()


if __name__ == "__main__":
    main()
