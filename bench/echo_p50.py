#!/usr/bin/python3
"""echo_p50.py - p50/p99 of `sandbox/run echo hello` through the bridge, one call at a time.

usage: /usr/bin/python3 bench/echo_p50.py build/opensandbox-bridge N [bridge flags...]
(no flags: the local backend; --url http://127.0.0.1:P --grpc-port Q: a server)."""
import json, subprocess, sys, time, statistics
exe = sys.argv[1]; n = int(sys.argv[2])
p = subprocess.Popen([exe] + sys.argv[3:], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
def call(i, m, params):
    p.stdin.write((json.dumps({"jsonrpc":"2.0","id":i,"method":m,"params":params}) + "\n").encode()); p.stdin.flush()
    return json.loads(p.stdout.readline())
sid = call(0, "sandbox/create", {})["result"]["sandboxId"]
ts = []
for i in range(n):
    t0 = time.perf_counter()
    r = call(i + 1, "sandbox/run", {"sandboxId": sid, "command": "echo hello"})
    ts.append((time.perf_counter() - t0) * 1000)
    assert r["result"]["stdout"] == "hello\n"
ts.sort()
print("%s: n=%d p50=%.2f ms p99=%.2f ms" % (" ".join(sys.argv[3:]) or "local", n, ts[n // 2], ts[int(n * 0.99)]))
p.stdin.close(); p.wait()
