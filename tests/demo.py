#!/usr/bin/python3
"""demo.py - the Python SDK README's Quick Start, driven through opensandbox-bridge.

    tests/demo.py --bridge build/opensandbox-bridge [--url http://host:8080] [--grpc-port N]

Spawns the bridge on pipes (NDJSON), sends each step as a JSON-RPC request and prints the
request and its reply. Without --url the bridge uses its embedded local backend. Exits 1 as
soon as a step fails or does not give the expected answer, 0 when the whole Quick Start ran.
"""
import argparse
import json
import os
import select
import subprocess
import sys
import threading
import time

STEP_TIMEOUT = 60.0


class Demo:
    def __init__(self, argv):
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        self.next_id = 1
        self.buf = b""
        self.stderr = bytearray()
        threading.Thread(target=self._drain_stderr, daemon=True).start()

    def _drain_stderr(self):
        for chunk in iter(lambda: self.proc.stderr.read1(65536), b""):
            self.stderr += chunk

    def send(self, msg):
        print("\n--> " + json.dumps(msg, indent=2, ensure_ascii=False).replace("\n", "\n    "))
        self.proc.stdin.write(json.dumps(msg, separators=(",", ":")).encode() + b"\n")
        self.proc.stdin.flush()

    def read_reply(self, want_id):
        deadline = time.monotonic() + STEP_TIMEOUT
        fd = self.proc.stdout.fileno()
        while True:
            while b"\n" in self.buf:
                line, self.buf = self.buf.split(b"\n", 1)
                if not line.strip():
                    continue
                msg = json.loads(line)
                print("<-- " + json.dumps(msg, indent=2, ensure_ascii=False).replace("\n", "\n    "))
                if isinstance(msg, dict) and msg.get("id") == want_id:
                    return msg
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError("no reply to request %d within %.0fs" % (want_id, STEP_TIMEOUT))
            r, _, _ = select.select([fd], [], [], left)
            if r:
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise RuntimeError("the bridge closed its stdout (exit status %r)" % self.proc.poll())
                self.buf += chunk

    def call(self, title, method, params=None):
        print("\n== %s" % title)
        rid = self.next_id
        self.next_id += 1
        msg = {"jsonrpc": "2.0", "id": rid, "method": method}
        if params is not None:
            msg["params"] = params
        self.send(msg)
        reply = self.read_reply(rid)
        if "error" in reply:
            raise RuntimeError("%s failed: %s" % (method, json.dumps(reply["error"])))
        return reply["result"]


def expect(what, got, want):
    if got != want:
        raise RuntimeError("%s: expected %r, got %r" % (what, want, got))
    print("   ok: %s = %r" % (what, got))


def main():
    ap = argparse.ArgumentParser(description="The SDK Quick Start through opensandbox-bridge.")
    ap.add_argument("--bridge", required=True, help="path to opensandbox-bridge")
    ap.add_argument("--url", help="OpenSandbox server base URL (default: the embedded local backend)")
    ap.add_argument("--grpc-port", type=int, help="the server's gRPC port (default 50051)")
    a = ap.parse_args()

    argv = [a.bridge]
    if a.url:
        argv += ["--url", a.url]
    if a.grpc_port:
        argv += ["--grpc-port", str(a.grpc_port)]
    print("spawning: %s" % " ".join(argv))
    try:
        d = Demo(argv)
    except OSError as e:
        print("cannot start the bridge: %s" % e, file=sys.stderr)
        return 1
    ok = False
    try:
        init = d.call("initialize", "initialize", {"clientInfo": {"name": "demo.py"}})
        print("   backend: %s, %d methods" % (init["capabilities"]["backend"],
                                              len(init["capabilities"]["methods"])))
        d.send({"jsonrpc": "2.0", "method": "initialized", "params": {}})

        sid = d.call("Create a sandbox", "sandbox/create", {})["sandboxId"]

        r = d.call("Run commands", "sandbox/run", {"sandboxId": sid, "command": "echo hello"})
        print("   stdout: %r" % r["stdout"])
        expect("stdout", r["stdout"], "hello\n")

        d.call("Write a file", "fs/write",
               {"sandboxId": sid, "path": "/tmp/test.py", "content": "print('hi')"})
        r = d.call("Read it back", "fs/read", {"sandboxId": sid, "path": "/tmp/test.py"})
        expect("content", r["content"], "print('hi')")

        d.call("Set environment variables", "sandbox/setEnv",
               {"sandboxId": sid, "env": {"MY_VAR": "value"}})
        r = d.call("...and use them", "sandbox/run", {"sandboxId": sid, "command": "echo $MY_VAR"})
        expect("stdout", r["stdout"], "value\n")

        d.call("Set working directory", "sandbox/setCwd", {"sandboxId": sid, "cwd": "/tmp"})
        r = d.call("...and run there", "sandbox/run", {"sandboxId": sid, "command": "pwd"})
        expect("stdout", r["stdout"], "/tmp\n")

        d.call("Clean up", "sandbox/destroy", {"sandboxId": sid})
        d.call("Shut down", "shutdown")
        print("\n== Exit")
        d.send({"jsonrpc": "2.0", "method": "exit"})
        d.proc.stdin.close()
        rc = d.proc.wait(STEP_TIMEOUT)
        expect("bridge exit status", rc, 0)
        ok = True
    except (RuntimeError, ValueError, KeyError, OSError, subprocess.TimeoutExpired) as e:
        print("\nDEMO FAILED: %s" % e, file=sys.stderr)
        tail = bytes(d.stderr).decode("utf-8", "replace")[-2000:]
        if tail:
            print("bridge stderr:\n" + tail, file=sys.stderr)
    finally:
        if d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait()
    print("\nquick start %s" % ("completed" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
