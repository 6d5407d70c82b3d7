"""The remote backend when the server misbehaves: never started, SIGKILLed with requests in
flight, restarted on the same ports, frozen (SIGSTOP) mid-call; and cancellation of a remote
run, which must stop the command on the server. Every server here is a real opensandboxd that
the test starts, stops, kills or freezes by its own PID; the bridge must answer every request
(an error where the server is gone) and never hang."""
import os
import signal
import subprocess
import time

import pytest

import harness
from harness import closed_port, scaled


class Servers:
    """opensandboxd processes of one test: started on given or free ports, killed or stopped
    by PID; whatever still runs at the end is stopped (and continued first if frozen)."""

    def __init__(self):
        self.all = []
        self.clean = []   # servers expected to exit 0 on SIGTERM

    def start(self, http_port=0, grpc_port=0):
        """A server on these ports (0: free ones). A fixed port may still be held by the
        previous server's sockets for a moment: retry for a few seconds."""
        args = []
        if http_port:
            args += ["--port", str(http_port)]
        if grpc_port:
            args += ["--grpc-port", str(grpc_port)]
        deadline = time.monotonic() + scaled(10)
        while True:
            try:
                s = harness.Server(args)
                break
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        self.all.append(s)
        self.clean.append(s)
        return s

    def kill(self, s):
        s.proc.kill()
        s.proc.wait(10)
        s.returncode = s.proc.returncode
        self.clean.remove(s)

    def finish(self):
        problems = []
        for s in self.all:
            if s.proc.poll() is None:
                os.kill(s.proc.pid, signal.SIGCONT)
            if s in self.clean:
                problems += s.problems()
            else:
                s.stop()
        return problems


@pytest.fixture
def servers():
    t = Servers()
    yield t
    problems = t.finish()
    assert not problems, "server problems:\n" + "\n".join(problems)


def wait_for(fn, seconds, what):
    """Call fn until it returns a true value; fail after seconds."""
    deadline = time.monotonic() + seconds
    last = None
    while time.monotonic() < deadline:
        try:
            v = fn()
            if v:
                return v
        except (AssertionError, harness.RpcError) as e:
            last = e
        time.sleep(0.1)
    raise AssertionError("%s did not happen within %.1fs (last: %r)" % (what, seconds, last))


# ------------------------------------------------------------------------------------------
# never started


def test_server_never_started_gives_connection_error_with_its_url(spawn):
    hport, gport = closed_port(), closed_port()
    url = "http://127.0.0.1:%d" % hport
    for transport in ("auto", "grpc", "http"):
        b = spawn(["--url", url, "--grpc-port", str(gport), "--transport", transport,
                   "--request-timeout-ms", "5000"])
        t0 = time.monotonic()
        e = b.error("sandbox/create", {}, code=-32003, timeout=scaled(10))
        assert e["data"]["url"] == url
        e = b.error("sandbox/run", {"sandboxId": "S", "command": "true"}, code=-32003,
                    timeout=scaled(10))
        # gRPC names its host:port; auto tries HTTP once gRPC cannot connect, and says so
        want = "127.0.0.1:%d" % gport if transport == "grpc" else url
        assert e["data"]["url"] == want, e
        e = b.error("fs/read", {"sandboxId": "S", "path": "/tmp/x"}, code=-32003,
                    timeout=scaled(10))
        assert e["data"]["url"] == want, e
        e = b.error("fs/list", {"sandboxId": "S", "path": "/"}, code=-32003, timeout=scaled(10))
        assert e["data"]["url"] == url
        assert time.monotonic() - t0 < scaled(5), "refused connections must fail fast"


# ------------------------------------------------------------------------------------------
# killed mid-call


def test_sigkill_with_requests_in_flight_answers_every_one_within_2s(spawn, servers):
    s = servers.start()
    grpc_bridge = spawn(s.bridge_args() + ["--transport", "grpc"])
    http_bridge = spawn(s.bridge_args() + ["--transport", "http"])
    sid = grpc_bridge.create()
    grpc_bridge.write_file(sid, "/tmp/f.txt", "x" * 1000)
    ids = []
    for b, n in ((grpc_bridge, 7), (http_bridge, 3)):
        for i in range(n):
            ids.append((b, b.start("sandbox/run", {"sandboxId": sid, "command": "sleep 5"})))
    time.sleep(scaled(0.8))  # all ten reach the server and are running
    killed = time.monotonic()
    servers.kill(s)
    for b, i in ids:
        r = b.reply(i, timeout=scaled(2) + 0.5)
        assert "error" in r, "a run on a killed server must fail: %r" % r
        assert r["error"]["code"] == -32003, r
    took = time.monotonic() - killed
    assert took < scaled(2), "answers took %.2fs after the kill" % took
    # and what comes after fails fast too, over either channel
    for b in (grpc_bridge, http_bridge):
        t0 = time.monotonic()
        b.error("fs/read", {"sandboxId": sid, "path": "/tmp/f.txt"}, code=-32003,
                timeout=scaled(5))
        b.error("fs/list", {"sandboxId": sid, "path": "/tmp"}, code=-32003, timeout=scaled(5))
        b.error("sandbox/get", {"sandboxId": sid}, code=-32003, timeout=scaled(5))
        assert time.monotonic() - t0 < scaled(2)


# ------------------------------------------------------------------------------------------
# restarted on the same ports


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_restarted_server_is_found_again_and_old_sandboxes_are_gone(spawn, servers, how):
    s1 = servers.start()
    b = spawn(s1.bridge_args() + ["--request-timeout-ms", "5000"])
    old = b.create()
    assert b.run(old, "echo one")["stdout"] == "one\n"
    b.write_file(old, "/tmp/keep.txt", "data")
    if how == "sigkill":
        servers.kill(s1)
    else:
        assert s1.stop() == 0
    b.error("sandbox/create", {}, code=-32003, timeout=scaled(10))
    servers.start(s1.http_port, s1.grpc_port)

    def works():
        sid = b.create()
        return sid if b.run(sid, "echo two")["stdout"] == "two\n" else None
    t0 = time.monotonic()
    new = wait_for(works, scaled(5), "a new sandbox and run on the restarted server")
    assert time.monotonic() - t0 < scaled(5)
    assert b.read_file(new, "/etc/hostname") is not None
    e = b.error("sandbox/run", {"sandboxId": old, "command": "true"}, code=-32001)
    assert e["data"]["sandboxId"] == old
    b.error("fs/read", {"sandboxId": old, "path": "/tmp/keep.txt"}, code=-32001)
    b.error("fs/write", {"sandboxId": old, "path": "/tmp/x", "content": "x"}, code=-32001)
    b.error("sandbox/get", {"sandboxId": old}, code=-32001)
    b.error("sandbox/destroy", {"sandboxId": old}, code=-32001)
    b.call("sandbox/destroy", {"sandboxId": new})


# ------------------------------------------------------------------------------------------
# frozen server: deadlines


def test_frozen_server_times_out_at_the_request_timeout(spawn, servers):
    s = servers.start()
    b = spawn(s.bridge_args() + ["--request-timeout-ms", "500"])
    sid = b.create()
    b.write_file(sid, "/tmp/a.txt", "a")
    os.kill(s.proc.pid, signal.SIGSTOP)
    try:
        for method, params in (("fs/read", {"sandboxId": sid, "path": "/tmp/a.txt"}),
                               ("sandbox/setCwd", {"sandboxId": sid, "cwd": "/tmp"}),
                               ("sandbox/get", {"sandboxId": sid}),
                               ("fs/list", {"sandboxId": sid, "path": "/tmp"})):
            t0 = time.monotonic()
            e = b.error(method, params, code=-32007, timeout=scaled(5))
            took = time.monotonic() - t0
            assert e["data"]["timeoutMs"] == 500, e
            assert 0.4 < took < scaled(1.5), "%s took %.2fs" % (method, took)
    finally:
        os.kill(s.proc.pid, signal.SIGCONT)
    assert b.read_file(sid, "/tmp/a.txt")["content"] == "a"


def test_frozen_server_run_ends_with_timeout_at_its_deadline(spawn, servers):
    """A run's deadline is timeoutMs + 30 s; a cancelled run must not wait for it: the
    cancel ends it at once even while the server cannot answer."""
    s = servers.start()
    b = spawn(s.bridge_args())
    sid = b.create()
    os.kill(s.proc.pid, signal.SIGSTOP)
    try:
        rid = b.start("sandbox/run", {"sandboxId": sid, "command": "true", "timeoutMs": 1000})
        time.sleep(0.5)
        t0 = time.monotonic()
        b.notify("$/cancelRequest", {"id": rid})
        r = b.reply(rid, timeout=scaled(3))
        assert r["error"]["code"] == -32800, r
        assert time.monotonic() - t0 < scaled(1)
    finally:
        os.kill(s.proc.pid, signal.SIGCONT)


# ------------------------------------------------------------------------------------------
# cancellation reaches the server


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_cancelled_remote_run_is_killed_on_the_server(spawn, server, transport):
    b = spawn(server.bridge_args() + ["--transport", transport])
    sid = b.create()
    rid = b.start("sandbox/run", {"sandboxId": sid, "command": "sleep 2; touch /tmp/after"})
    time.sleep(0.6)
    t0 = time.monotonic()
    b.notify("$/cancelRequest", {"id": rid})
    r = b.reply(rid, timeout=scaled(3))
    assert r["error"]["code"] == -32800, r
    assert time.monotonic() - t0 < scaled(0.5), "cancel took %.2fs" % (time.monotonic() - t0)
    time.sleep(2.5)
    e = b.error("fs/read", {"sandboxId": sid, "path": "/tmp/after"}, code=-32005)
    assert e["data"]["path"] == "/tmp/after"
    # the sandbox is still usable
    assert b.run(sid, "echo ok")["stdout"] == "ok\n"


# ------------------------------------------------------------------------------------------
# --transport


def test_auto_transport_uses_http_when_the_grpc_port_is_unreachable(spawn, server):
    b = spawn(["--url", server.url, "--grpc-port", str(closed_port()), "--log-level", "info"])
    sid = b.create()
    r = b.run(sid, "printf '%s' \"$X\"; pwd", env={"X": "y"}, cwd="/tmp")
    assert r["stdout"] == "y/tmp\n"
    b.call("sandbox/setEnv", {"sandboxId": sid, "env": {"K": "v"}})
    b.call("sandbox/setCwd", {"sandboxId": sid, "cwd": "/home"})
    assert b.run(sid, "echo $K; pwd")["stdout"] == "v\n/home\n"
    assert b.write_file(sid, "/tmp/b.bin", harness.b64(b"\x00\xff"), "base64")["bytesWritten"] == 2
    assert b.read_file(sid, "/tmp/b.bin", "base64")["content"] == harness.b64(b"\x00\xff")
    r = b.call("fs/writeMany", {"sandboxId": sid, "files": [{"path": "/tmp/m1", "content": "1"},
                                                            {"path": "/tmp/m2", "content": "2"}]})
    assert r["errors"] == []
    names = [e["name"] for e in b.call("fs/list", {"sandboxId": sid, "path": "/tmp"})["entries"]]
    assert {"b.bin", "m1", "m2"} <= set(names)
    b.error("fs/read", {"sandboxId": sid, "path": "/tmp/none"}, code=-32005)
    b.error("sandbox/run", {"sandboxId": "no-such", "command": "true"}, code=-32001)
    assert "using HTTP" in b.stderr_text()


def test_grpc_transport_with_an_unreachable_grpc_port_names_it(spawn, server):
    gport = closed_port()
    b = spawn(["--url", server.url, "--grpc-port", str(gport), "--transport", "grpc"])
    sid = b.create()
    for method, params in (("sandbox/run", {"sandboxId": sid, "command": "true"}),
                           ("fs/read", {"sandboxId": sid, "path": "/etc/hostname"}),
                           ("fs/write", {"sandboxId": sid, "path": "/tmp/x", "content": "x"})):
        e = b.error(method, params, code=-32003, timeout=scaled(10))
        assert e["data"]["url"] == "127.0.0.1:%d" % gport
        assert "127.0.0.1:%d" % gport in e["message"]


def test_http_transport_does_everything_over_http(spawn, server):
    # the gRPC port given is the HTTP one: any gRPC call would fail
    b = spawn(["--url", server.url, "--grpc-port", str(server.http_port), "--transport", "http"])
    sid = b.create()
    assert b.run(sid, "echo hi")["stdout"] == "hi\n"
    b.write_file(sid, "/tmp/h.txt", "hello")
    assert b.read_file(sid, "/tmp/h.txt")["content"] == "hello"


def test_transport_flag_and_environment_are_checked(spawn):
    p = subprocess.run([harness.BRIDGE, "--transport", "carrier-pigeon"], stdin=subprocess.DEVNULL,
                       capture_output=True, timeout=scaled(10), env=harness.clean_env())
    assert p.returncode == 2
    assert b"auto, grpc or http" in p.stderr
    p = subprocess.run([harness.BRIDGE], stdin=subprocess.DEVNULL, capture_output=True,
                       timeout=scaled(10),
                       env=harness.clean_env({"OPENSANDBOX_TRANSPORT": "smoke"}))
    assert p.returncode == 2
    assert b"OPENSANDBOX_TRANSPORT" in p.stderr
