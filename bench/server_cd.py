#!/usr/bin/python3
"""server_cd.py - create and destroy on several opensandboxd builds side by side: each build
runs as its own server (temporary --state-dir), and one HTTP client (keep-alive) makes
POST /sessions then DELETE /sessions/{id} on each in turn, the order reversed every
iteration, so that machine noise falls on all builds alike. Prints p50/mean of each call
and the server's CPU (user+system, /proc/PID/stat) per create+destroy pair.

usage: /usr/bin/python3 bench/server_cd.py NAME=PATH [NAME=PATH ...] [-n 200]
e.g.   /usr/bin/python3 bench/server_cd.py e7a6355=/work/h8-base/build/opensandboxd \\
           new=build/opensandboxd -n 300"""
import http.client, json, os, shutil, statistics, subprocess, sys, tempfile, time

n, builds, args = 200, [], sys.argv[1:]
while args:
    a = args.pop(0)
    if a == "-n":
        n = int(args.pop(0))
    elif "=" in a:
        builds.append(a.split("=", 1))
    else:
        sys.exit(__doc__)
if not builds:
    sys.exit(__doc__)
TCK = os.sysconf("SC_CLK_TCK")


def cpu(pid):
    f = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / TCK


def call(conn, method, path, body=None):
    conn.request(method, path, body=body)
    r = conn.getresponse()
    data = r.read()
    if r.status >= 300:
        raise SystemExit("%s %s: %d %r" % (method, path, r.status, data[:200]))
    return data


servers = []
try:
    for name, path in builds:
        d = tempfile.mkdtemp(prefix="osb-cd.")
        p = subprocess.Popen([path, "--port", "0", "--grpc-port", "0", "--state-dir", d + "/state"],
                             stdout=subprocess.PIPE, stderr=open(d + "/log", "w"), text=True)
        servers.append(dict(name=name, p=p, dir=d, c=[], d=[]))
        line = p.stdout.readline()  # "opensandboxd ready http=HOST:PORT grpc=..."
        if "http=" not in line:
            raise SystemExit("%s did not start: %r" % (path, line))
        host, port = line.split("http=")[1].split()[0].rsplit(":", 1)
        servers[-1]["conn"] = http.client.HTTPConnection(host, int(port), timeout=60)

    def pair(s, timed):
        t0 = time.perf_counter_ns()
        sid = json.loads(call(s["conn"], "POST", "/sessions", b"{}"))["session_id"]
        t1 = time.perf_counter_ns()
        call(s["conn"], "DELETE", "/sessions/" + sid)
        t2 = time.perf_counter_ns()
        if timed:
            s["c"].append((t1 - t0) / 1e3)
            s["d"].append((t2 - t1) / 1e3)

    for s in servers:
        for _ in range(10):
            pair(s, False)
        s["cpu0"] = cpu(s["p"].pid)
    for it in range(n):
        for s in servers if it % 2 == 0 else servers[::-1]:
            pair(s, True)
    print("%s UTC, load average %s, n=%d" % (time.strftime("%H:%M", time.gmtime()),
                                             " ".join(open("/proc/loadavg").read().split()[:3]), n))
    print("| build | create p50 / mean (µs) | destroy p50 / mean (µs) | server CPU per pair (µs) |")
    print("|---|---:|---:|---:|")
    for s in servers:
        c, d = sorted(s["c"]), sorted(s["d"])
        print("| %s | %.0f / %.0f | %.0f / %.0f | %.0f |" % (
            s["name"], c[n // 2], statistics.mean(c), d[n // 2], statistics.mean(d),
            1e6 * (cpu(s["p"].pid) - s["cpu0"]) / n))
finally:
    for s in servers:
        s["p"].terminate()
        s["p"].wait()
        shutil.rmtree(s["dir"], ignore_errors=True)
