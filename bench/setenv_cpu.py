#!/usr/bin/python3
"""setenv_cpu.py - what pipelined sandbox/setEnv costs in CPU, bridge builds against
opensandboxd builds: every pair (bridge, server) gets its own bridge process and sandbox,
and each round gives every pair --secs of setEnv with 32 requests in flight (NDJSON on the
bridge's pipes), the pairs' order reversed every round. Prints requests/s and the user+system
CPU (/proc/PID/stat) per request of the bridge and of the server. CPU per request is less
sensitive to a loaded machine than wall time.

usage: /usr/bin/python3 bench/setenv_cpu.py --server NAME=PATH [...] --bridge NAME=PATH [...]
           [--secs 1] [--rounds 6]"""
import json, os, shutil, subprocess, sys, tempfile, time

servers, bridges, secs, rounds, depth = [], [], 1.0, 6, 32
args = sys.argv[1:]
while args:
    a = args.pop(0)
    if a in ("--server", "--bridge") and args:
        (servers if a == "--server" else bridges).append(args.pop(0).split("=", 1))
    elif a == "--secs" and args:
        secs = float(args.pop(0))
    elif a == "--rounds" and args:
        rounds = int(args.pop(0))
    else:
        sys.exit(__doc__)
if not servers or not bridges:
    sys.exit(__doc__)
TCK = os.sysconf("SC_CLK_TCK")


def cpu(pid):
    f = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / TCK


class Bridge:
    def __init__(self, path, srv):
        self.p = subprocess.Popen([path, "--url", srv["url"], "--grpc-port", srv["grpc"]],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL)
        self.buf, self.id = b"", 0
        self.call("initialize", {"clientInfo": {"name": "setenv_cpu"}})
        self.sid = self.call("sandbox/create", {})["sandboxId"]

    def lines(self):
        while b"\n" not in self.buf:
            d = os.read(self.p.stdout.fileno(), 1 << 16)
            if not d:
                raise SystemExit("a bridge died")
            self.buf += d
        *ls, self.buf = self.buf.split(b"\n")
        return ls

    def call(self, method, params):
        self.id += 1
        self.p.stdin.write(json.dumps({"jsonrpc": "2.0", "id": self.id, "method": method,
                                       "params": params}).encode() + b"\n")
        self.p.stdin.flush()
        r = json.loads(self.lines()[0])
        if "result" not in r:
            raise SystemExit("%s: %r" % (method, r))
        return r["result"]

    def round(self):
        req = ('{"jsonrpc":"2.0","id":1,"method":"sandbox/setEnv","params":{"sandboxId":"%s",'
               '"env":{"BENCH":"1"}}}\n' % self.sid).encode()
        done, inflight, until = 0, 0, time.monotonic() + secs
        while True:
            if time.monotonic() < until and inflight < depth:
                self.p.stdin.write(req * (depth - inflight))
                self.p.stdin.flush()
                inflight = depth
            if not inflight:
                return done
            ls = self.lines()
            for l in ls:
                if b'"result"' not in l[:60]:
                    raise SystemExit(l)
            inflight -= len(ls)
            done += len(ls)


srv, pairs = {}, []
try:
    for name, path in servers:
        d = tempfile.mkdtemp(prefix="osb-setenv.")
        p = subprocess.Popen([path, "--port", "0", "--grpc-port", "0", "--state-dir", d + "/s"],
                             stdout=subprocess.PIPE, stderr=open(d + "/log", "w"), text=True)
        srv[name] = dict(p=p, d=d)
        line = p.stdout.readline()  # "opensandboxd ready http=HOST:PORT grpc=HOST:PORT"
        if "http=" not in line:
            raise SystemExit("%s did not start: %r" % (path, line))
        srv[name]["url"] = "http://" + line.split("http=")[1].split()[0]
        srv[name]["grpc"] = line.split("grpc=")[1].split()[0].rsplit(":", 1)[1]
    for sn, s in srv.items():
        for bn, bp in bridges:
            pairs.append(dict(name="%s → %s" % (bn, sn), b=Bridge(bp, s), s=s, n=0, t=0.0,
                              bc=0.0, sc=0.0))
    for r in range(rounds):
        for pr in pairs if r % 2 == 0 else pairs[::-1]:
            b0, s0, t0 = cpu(pr["b"].p.pid), cpu(pr["s"]["p"].pid), time.monotonic()
            pr["n"] += pr["b"].round()
            pr["t"] += time.monotonic() - t0
            pr["bc"] += cpu(pr["b"].p.pid) - b0
            pr["sc"] += cpu(pr["s"]["p"].pid) - s0
    print("%s UTC, load average %s; %d rounds of %.1f s, %d in flight" % (
        time.strftime("%H:%M", time.gmtime()), " ".join(open("/proc/loadavg").read().split()[:3]),
        rounds, secs, depth))
    print("| bridge → server | req/s | bridge CPU per request (µs) | server CPU per request (µs) |")
    print("|---|---:|---:|---:|")
    for pr in pairs:
        print("| %s | %.0f | %.1f | %.1f |" % (pr["name"], pr["n"] / pr["t"],
                                             1e6 * pr["bc"] / pr["n"], 1e6 * pr["sc"] / pr["n"]))
finally:
    for pr in pairs:
        pr["b"].p.stdin.close()
        pr["b"].p.wait()
    for s in srv.values():
        s["p"].terminate()
        s["p"].wait()
        shutil.rmtree(s["d"], ignore_errors=True)
