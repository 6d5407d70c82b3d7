#!/usr/bin/python3
"""mcp_p50.py - MCP mode against JSON-RPC mode, side by side in one run: p50/p99 of
`tools/call sandbox_run {"command": "echo hello"}` (MCP, the connection's default sandbox)
and of `sandbox/run echo hello` (JSON-RPC, a sandbox made first), one call at a time, in
alternating rounds so that machine load falls on both alike; then the MCP bridge's RSS after
start (initialize answered) and after --calls more tool calls.

A lean NDJSON client on both sides (no SDK), so the columns differ only by what the bridge
does: an SDK's own validation would weigh on the MCP column alone.

usage: /usr/bin/python3 bench/mcp_p50.py BRIDGE [-n N] [--rounds R] [--calls C] [-- flags...]
(no flags: the local backend; -- --url http://127.0.0.1:P --grpc-port Q: a server)."""
import argparse
import json
import subprocess
import sys
import time


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


class Bridge:
    def __init__(self, exe, flags):
        self.p = subprocess.Popen([exe] + flags, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.next_id = 0

    def call(self, method, params):
        self.next_id += 1
        msg = {"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params}
        self.p.stdin.write((json.dumps(msg) + "\n").encode())
        self.p.stdin.flush()
        reply = json.loads(self.p.stdout.readline())
        assert reply.get("id") == self.next_id and "result" in reply, reply
        return reply["result"]

    def close(self):
        self.p.stdin.close()
        return self.p.wait(timeout=10)


def timed(fn, n):
    ts = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t0) * 1000)
    return ts


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("bridge")
    ap.add_argument("-n", type=int, default=200, help="calls per round and mode")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--calls", type=int, default=10000, help="tool calls for the RSS reading")
    argv = sys.argv[1:]
    flags = argv[argv.index("--") + 1:] if "--" in argv else []
    a = ap.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    a.flags = flags

    rpc = Bridge(a.bridge, a.flags)
    sid = rpc.call("sandbox/create", {})["sandboxId"]
    mcp = Bridge(a.bridge, a.flags)
    mcp.call("initialize", {"protocolVersion": "2025-06-18", "capabilities": {},
                            "clientInfo": {"name": "mcp_p50", "version": "1"}})
    start_rss = rss_kb(mcp.p.pid)
    tool = {"name": "sandbox_run", "arguments": {"command": "echo hello"}}

    def run_rpc():
        r = rpc.call("sandbox/run", {"sandboxId": sid, "command": "echo hello"})
        assert r["stdout"] == "hello\n"

    def run_mcp():
        r = mcp.call("tools/call", tool)
        assert r["structuredContent"]["stdout"] == "hello\n" and not r["isError"]

    # A call without a process (sandbox/get): what each mode itself costs shows better.
    def get_rpc():
        assert rpc.call("sandbox/get", {"sandboxId": sid})["sandboxId"] == sid

    def get_mcp():
        assert not mcp.call("tools/call", {"name": "sandbox_get", "arguments": {}})["isError"]

    for f in (run_rpc, run_mcp, get_rpc, get_mcp):  # warm-up (MCP's default sandbox made)
        timed(f, 20)
    t_rpc, t_mcp, g_rpc, g_mcp = [], [], [], []
    for _ in range(a.rounds):
        t_rpc += timed(run_rpc, a.n)
        t_mcp += timed(run_mcp, a.n)
        g_rpc += timed(get_rpc, a.n)
        g_mcp += timed(get_mcp, a.n)
    for t in (t_rpc, t_mcp, g_rpc, g_mcp):
        t.sort()
    made = 40 + 2 * a.rounds * a.n
    rest = max(0, a.calls - made)
    timed(run_mcp, rest)
    end_rss = rss_kb(mcp.p.pid)
    rpc_start_rss = rss_kb(rpc.p.pid)
    timed(run_rpc, rest)  # the same count through JSON-RPC, for comparison
    rpc_end_rss = rss_kb(rpc.p.pid)
    n = len(t_rpc)
    backend = " ".join(a.flags) or "local"
    print("| backend | mode | n | p50 ms | p99 ms |")
    print("|---|---|---|---|---|")
    print("| %s | JSON-RPC sandbox/run | %d | %.3f | %.3f |" % (backend, n, t_rpc[n // 2], t_rpc[int(n * 0.99)]))
    print("| %s | MCP tools/call sandbox_run | %d | %.3f | %.3f |" % (backend, n, t_mcp[n // 2], t_mcp[int(n * 0.99)]))
    print("| %s | JSON-RPC sandbox/get | %d | %.3f | %.3f |" % (backend, n, g_rpc[n // 2], g_rpc[int(n * 0.99)]))
    print("| %s | MCP tools/call sandbox_get | %d | %.3f | %.3f |" % (backend, n, g_mcp[n // 2], g_mcp[int(n * 0.99)]))
    print()
    print("MCP p50 / JSON-RPC p50 = %.3f" % (t_mcp[n // 2] / t_rpc[n // 2]))
    print("MCP bridge RSS: %d KiB after start, %d KiB after %d tool calls" % (start_rss, end_rss, made + rest))
    print("JSON-RPC bridge RSS: %d KiB after %d runs, %d KiB after %d" % (rpc_start_rss, made, rpc_end_rss, made + rest))
    assert rpc.close() == 0 and mcp.close() == 0


if __name__ == "__main__":
    main()
