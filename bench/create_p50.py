#!/usr/bin/python3
"""create_p50.py - p50/p99 of `sandbox/create` through the bridge's local backend, three
bridges interleaved one call at a time: the default (a network namespace per sandbox), the
host's network (OSB_ENGINE_NETNS=0) and --network egress (slirp4netns). Each create is
followed by an untimed destroy. Needs root (or user namespaces).

usage: /usr/bin/python3 bench/create_p50.py build/opensandbox-bridge N"""
import json, os, subprocess, sys, time
exe = sys.argv[1]; n = int(sys.argv[2])
kinds = [("netns (default)", [], {}), ("host net (OSB_ENGINE_NETNS=0)", [], {"OSB_ENGINE_NETNS": "0"}),
         ("egress", ["--network", "egress"], {})]
procs = []
for _, args, env in kinds:
    e = dict(os.environ); e.update(env)
    procs.append(subprocess.Popen([exe] + args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL, env=e))
def call(p, i, m, params):
    p.stdin.write((json.dumps({"jsonrpc": "2.0", "id": i, "method": m, "params": params}) + "\n").encode())
    p.stdin.flush()
    r = json.loads(p.stdout.readline())
    assert "result" in r, r
    return r["result"]
ts = [[] for _ in kinds]
for i in range(-10, n):
    for kk in range(len(kinds)):
        k = (kk + max(i, 0)) % len(kinds)
        t0 = time.perf_counter()
        sid = call(procs[k], 2 * i + 100, "sandbox/create", {})["sandboxId"]
        took = (time.perf_counter() - t0) * 1000
        call(procs[k], 2 * i + 101, "sandbox/destroy", {"sandboxId": sid})
        if i >= 0:
            ts[k].append(took)
for (name, _, _), v in zip(kinds, ts):
    v.sort()
    print("| sandbox/create | %s | %.2f | %.2f |" % (name, v[n // 2], v[int(n * 0.99)]))
for p in procs:
    p.stdin.close(); p.wait()
