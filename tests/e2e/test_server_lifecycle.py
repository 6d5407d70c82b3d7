"""opensandboxd over its life: sessions that expire or are destroyed take their processes
with them; SIGTERM and a crash (SIGKILL) leave no process, mount or cgroup behind, and the
next server on the same --state-dir sweeps what a dead one left; the API key guards every
route and method; a cancelled run is killed; runs proceed in parallel; bad input on either
port gets an error and never takes the server down.

Processes are found from the host by a unique number in their command line (`sleep TOKEN`);
cgroups by the engine's naming, <base>/opensandbox/<server pid>-<session id>."""
import base64
import glob
import json
import os
import signal
import socket
import time
import uuid

import pytest

import harness
from harness import scaled

grpc = pytest.importorskip("grpc", reason="python3-grpcio is not installed")
from test_sdk_compat import pb  # noqa: E402,F401  (a fixture)
from test_security import Sdk, host_pids_with, unique_token, wait_until  # noqa: E402

CGROUP_BASES = ["/sys/fs/cgroup/pids/opensandbox", "/sys/fs/cgroup/opensandbox",
                "/sys/fs/cgroup/unified/opensandbox"]


def cgroup_dirs(server_pid):
    """The session cgroups a server with this PID made (and did not remove)."""
    out = []
    for base in CGROUP_BASES:
        out += glob.glob(os.path.join(base, "%d-*" % server_pid))
    return sorted(out)


def host_mounts_mentioning(*needles):
    with open("/proc/self/mountinfo") as f:
        return [l for l in f if any(n in l for n in needles if n)]


def session_listed(sdk, sid):
    """Whether GET /sessions lists sid (a listing is not a call on the session, so it does
    not refresh its idle timer)."""
    status, body = sdk.http("GET", "/sessions")
    assert status == 200, (status, body)
    return sid in [s["id"] for s in json.loads(body)]


@pytest.fixture
def sdk(server, pb):
    c = Sdk(server, pb)
    yield c
    c.close()


def start_marked(sdk, sid, token):
    """A background `sleep TOKEN` in the session, seen from the host before returning."""
    sdk.background(sid, "sleep " + token)
    assert wait_until(lambda: host_pids_with(token), scaled(5)), \
        "the background process never showed up on the host"


# --------------------------------------------------------------------------------------------
# idle expiry and destroy


def test_idle_session_expires_after_the_ttl_and_its_processes_die(start_server, pb):
    s = start_server("--ttl", "2")
    sdk = Sdk(s, pb)
    try:
        idle = sdk.create()
        busy = sdk.create()
        token = unique_token()
        t0 = time.monotonic()  # before the session's last call: elapsed >= its idle time
        start_marked(sdk, idle, token)
        gone_at = None
        while time.monotonic() - t0 < 2 + scaled(6):
            assert sdk.run(busy, "true").exit_code == 0  # keeps `busy` from going idle
            if not session_listed(sdk, idle):
                gone_at = time.monotonic() - t0
                break
            time.sleep(0.25)
        assert gone_at is not None, "an idle session outlived --ttl 2 by %.0fs" % scaled(6)
        assert gone_at >= 1.5, "the session went after %.1fs idle, before its ttl" % gone_at
        assert sdk.http("GET", "/sessions/" + idle)[0] == 404
        with pytest.raises(grpc.RpcError) as ei:
            sdk.run(idle, "true")
        assert ei.value.code() == grpc.StatusCode.NOT_FOUND
        assert wait_until(lambda: not host_pids_with(token), scaled(3)), \
            "the expired session's process survived: %r" % host_pids_with(token)
        assert session_listed(sdk, busy), "a session in use expired"
        assert sdk.run(busy, "echo still").stdout == "still\n"
    finally:
        sdk.close()


def test_destroy_ends_a_running_command_and_background_processes(server, sdk):
    sid = sdk.create()
    run_token, bg_token = unique_token(), unique_token()
    fut = sdk.run_future(sid, "sleep " + run_token)
    start_marked(sdk, sid, bg_token)
    assert wait_until(lambda: host_pids_with(run_token), scaled(5))
    cgroups = cgroup_dirs(server.proc.pid)
    t0 = time.monotonic()
    assert sdk.http("DELETE", "/sessions/" + sid)[0] == 204
    try:
        fut.result(timeout=scaled(10))
    except grpc.RpcError:
        pass
    assert time.monotonic() - t0 < scaled(5), "the run in flight outlived its session"
    for token in (run_token, bg_token):
        assert wait_until(lambda: not host_pids_with(token), scaled(3)), \
            "a process of the destroyed session survived"
    for d in cgroups:
        assert wait_until(lambda: not os.path.exists(d), scaled(3)), "cgroup %s left behind" % d
    assert sdk.http("GET", "/sessions/" + sid)[0] == 404


def test_destroy_of_one_session_leaves_the_others_running(sdk):
    a, b = sdk.create(), sdk.create()
    ta, tb = unique_token(), unique_token()
    start_marked(sdk, a, ta)
    start_marked(sdk, b, tb)
    assert sdk.http("DELETE", "/sessions/" + a)[0] == 204
    assert wait_until(lambda: not host_pids_with(ta), scaled(3))
    assert host_pids_with(tb), "destroying a killed b's process"
    assert sdk.run(b, "echo b").stdout == "b\n"
    sdk.http("DELETE", "/sessions/" + b)


# --------------------------------------------------------------------------------------------
# SIGTERM, crash and restart


def test_sigterm_with_live_sessions_exits_0_and_leaves_nothing_behind(start_server, pb):
    s = start_server()
    sdk = Sdk(s, pb)
    try:
        sids = [sdk.create(), sdk.create()]
        tokens = [unique_token() for _ in range(3)]
        for sid, tok in zip(sids, tokens):
            start_marked(sdk, sid, tok)
        fut = sdk.run_future(sids[0], "sleep " + tokens[2])
        assert wait_until(lambda: host_pids_with(tokens[2]), scaled(5))
        cgroups = cgroup_dirs(s.proc.pid)
        if any(os.path.isdir(b) for b in CGROUP_BASES):
            assert len(cgroups) >= 2, "no session cgroups to watch: %r" % cgroups
        mounts_before = host_mounts_mentioning(s.state_dir, *sids)
        t0 = time.monotonic()
        rc = s.stop(timeout=scaled(15))
        took = time.monotonic() - t0
        assert rc == 0, "opensandboxd exited %r on SIGTERM" % (rc,)
        assert took < scaled(5), "SIGTERM took %.1fs" % took
        try:
            fut.result(timeout=scaled(5))
        except grpc.RpcError:
            pass
        for tok in tokens:
            assert wait_until(lambda: not host_pids_with(tok), scaled(2)), \
                "a sandbox process outlived the server: %r" % host_pids_with(tok)
        assert [d for d in cgroups if os.path.exists(d)] == []
        assert cgroup_dirs(s.proc.pid) == []
        assert host_mounts_mentioning(s.state_dir, *sids) == mounts_before == []
        leftovers = os.listdir(s.state_dir) if os.path.isdir(s.state_dir) else []
        assert leftovers == [], "the state dir keeps %r" % leftovers
    finally:
        sdk.close()


def test_after_a_crash_sandboxes_die_and_a_restart_sweeps_leftovers(start_server, pb, tracker):
    s1 = harness.Server()
    keep = None
    try:
        sdk = Sdk(s1, pb)
        sids = [sdk.create(), sdk.create()]
        tokens = [unique_token(), unique_token()]
        for sid, tok in zip(sids, tokens):
            start_marked(sdk, sid, tok)
        sdk.close()
        dead_cgroups = cgroup_dirs(s1.proc.pid)
        if any(os.path.isdir(b) for b in CGROUP_BASES):
            assert len(dead_cgroups) >= 2, "no session cgroups to watch: %r" % dead_cgroups
        # what an unsafe-mode session of the dead server would have left, and a live one's
        fake = os.path.join(s1.state_dir, "%d-fakesession" % s1.proc.pid)
        os.makedirs(os.path.join(fake, "tmp"))
        with open(os.path.join(fake, "tmp", "f"), "w") as f:
            f.write("x")
        keep = os.path.join(s1.state_dir, "%d-alive" % os.getpid())
        os.makedirs(keep)

        s1.proc.send_signal(signal.SIGKILL)
        s1.proc.wait(scaled(10))
        for tok in tokens:
            assert wait_until(lambda: not host_pids_with(tok), scaled(5)), \
                "a sandbox process outlived its crashed server: %r" % host_pids_with(tok)

        s2 = start_server("--state-dir", s1.state_dir)
        for d in dead_cgroups:
            assert not os.path.exists(d), "the restart left the dead server's cgroup %s" % d
        assert cgroup_dirs(s1.proc.pid) == []
        assert not os.path.exists(fake), "the restart left the dead server's state dir"
        assert os.path.isdir(keep), "the restart removed a live process's state dir"
        sdk2 = Sdk(s2, pb)
        try:
            sid = sdk2.create()
            assert sdk2.run(sid, "echo fresh").stdout == "fresh\n"
        finally:
            sdk2.close()
        san = harness.sanitizer_lines(s1.stderr_text())
        assert not san, "the crashed server reported: %s" % san[:10]
    finally:
        if s1.proc.poll() is None:
            s1.proc.kill()
            s1.proc.wait(10)
        if keep:
            os.rmdir(keep)


# --------------------------------------------------------------------------------------------
# authentication

KEY = "k-" + uuid.uuid4().hex


def http_routes(sid):
    """Every HTTP route but /health, with a body that works when authorized."""
    return [
        ("POST", "/sessions", {}),
        ("GET", "/sessions", None),
        ("GET", "/sessions/" + sid, None),
        ("POST", "/sessions/%s/run" % sid, {"command": ["/bin/sh", "-c", "echo r > /tmp/ran"]}),
        ("POST", "/sessions/%s/env" % sid, {"env": {"A": "b"}}),
        ("POST", "/sessions/%s/cwd" % sid, {"cwd": "/tmp"}),
        ("POST", "/sessions/%s/files/write" % sid,
         {"path": "/tmp/w", "content": base64.b64encode(b"w").decode()}),
        ("POST", "/sessions/%s/files/write-bulk" % sid,
         {"files": [{"path": "/tmp/wb", "content": base64.b64encode(b"w").decode()}]}),
        ("GET", "/sessions/%s/files/read?path=/tmp/w" % sid, None),
        ("GET", "/sessions/%s/files/list?path=/tmp" % sid, None),
        ("POST", "/sessions/%s/background" % sid, {"command": ["/bin/sleep", "30"], "port": 0}),
        ("GET", "/sessions/%s/background/status" % sid, None),
        ("DELETE", "/sessions/%s/background" % sid, None),
        ("POST", "/run", {"command": ["/bin/echo", "once"]}),
        ("DELETE", "/sessions/" + sid, None),
    ]


def test_api_key_guards_every_http_route_but_health(start_server, pb):
    s = start_server("--api-key", KEY)
    sdk = Sdk(s, pb, api_key=KEY)
    try:
        assert sdk.http("GET", "/health", key="")[0] == 200
        sid = sdk.create()
        bad_headers = [None, {"Authorization": "Bearer wrong-" + KEY},
                       {"Authorization": "Bearer " + KEY[:-1]}, {"Authorization": "Bearer " + KEY + "x"},
                       {"Authorization": "Basic " + KEY}, {"Authorization": KEY},
                       {"Authorization": "Bearer"}, {"Authorization": "Bearer  " + KEY}]
        for method, path, body in http_routes(sid):
            for h in bad_headers:
                status, text = sdk.http(method, path, body, key="", headers=h)
                assert status == 401, "%s %s with %r answered %d: %r" % (method, path, h, status, text[:100])
        assert sdk.http("GET", "/sessions/%s/files/read?path=/tmp/ran" % sid)[0] == 404, \
            "an unauthorized run ran"
        for method, path, body in http_routes(sid):
            status, text = sdk.http(method, path, body)
            assert status in (200, 204), "%s %s with the key answered %d: %r" % (method, path, status, text[:200])
    finally:
        sdk.close()


def test_api_key_guards_every_grpc_method(start_server, pb):
    s = start_server("--api-key", KEY)
    sdk = Sdk(s, pb, api_key=KEY)
    try:
        sid = sdk.create()
        E = pb.BulkFileEntry
        calls = [("RunCommand", {"command": ["/bin/sh", "-c", "echo r > /tmp/ran"]}),
                 ("WriteFile", {"path": "/tmp/w", "content": b"w"}),
                 ("WriteFiles", {"files": [E(path="/tmp/wb", content=b"w")]}),
                 ("ReadFile", {"path": "/etc/hostname"}),
                 ("SetEnv", {"env": {"A": "b"}}),
                 ("SetCwd", {"cwd": "/tmp"})]
        for name, fields in calls:
            for key in ("", "wrong-" + KEY, KEY + "x"):
                with pytest.raises(grpc.RpcError) as ei:
                    if key:
                        sdk.grpc(name, key=key, session_id=sid, **fields)
                    else:
                        sdk.calls[name](sdk.req_cls[name](session_id=sid, **fields), timeout=scaled(30))
                assert ei.value.code() == grpc.StatusCode.UNAUTHENTICATED, (name, key, ei.value.code())
        assert sdk.read(sid, "/tmp/ran").error != "", "an unauthenticated RunCommand ran"
        assert sdk.read(sid, "/tmp/w").error != "", "an unauthenticated WriteFile wrote"
        for name, fields in calls:
            sdk.grpc(name, session_id=sid, **fields)
        assert sdk.read(sid, "/tmp/ran").content == b"r\n"
    finally:
        sdk.close()


def test_bridge_passes_the_api_key_and_fails_cleanly_without_it(start_server, spawn):
    s = start_server("--api-key", KEY)
    good = spawn(s.bridge_args() + ["--api-key", KEY])
    sid = good.create()
    assert good.run(sid, "echo ok")["stdout"] == "ok\n"
    for args in (s.bridge_args(), s.bridge_args() + ["--api-key", "wrong"]):
        bad = spawn(args)
        e = bad.error("sandbox/create", {})
        assert e["code"] == -32000, e
        assert isinstance(e.get("data"), dict) and e["data"].get("status") == 401, e
        e = bad.error("sandbox/run", {"sandboxId": sid, "command": "echo no"})
        assert e["code"] == -32000, e


# --------------------------------------------------------------------------------------------
# cancellation


def test_grpc_deadline_kills_the_run(sdk):
    sid = sdk.create()
    control = sdk.create()
    # the same command, not cancelled, in another session: proves the touch would happen
    sdk.background(control, "sleep 2; touch /tmp/done")
    t0 = time.monotonic()
    with pytest.raises(grpc.RpcError) as ei:
        sdk.run(sid, "sleep 2; touch /tmp/done", timeout=0.7)
    assert ei.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    time.sleep(max(0, t0 + 3.5 - time.monotonic()))
    assert wait_until(lambda: sdk.read(control, "/tmp/done").error == "", scaled(5)), \
        "the control never touched its file"
    assert sdk.read(sid, "/tmp/done").error != "", "a run past its client's deadline went on"


def test_closing_the_http_connection_kills_the_run(server, sdk):
    sid = sdk.create()
    body = json.dumps({"command": ["/bin/sh", "-c", "sleep 2; touch /tmp/done"]}).encode()
    sock = socket.create_connection(("127.0.0.1", server.http_port), timeout=scaled(10))
    sock.sendall(b"POST /sessions/%s/run HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n%s" % (sid.encode(), len(body), body))
    time.sleep(0.5)
    sock.close()
    time.sleep(3)
    assert sdk.read(sid, "/tmp/done").error != "", "a run whose client hung up went on"
    assert sdk.run(sid, "echo alive").stdout == "alive\n"


# --------------------------------------------------------------------------------------------
# concurrency


def test_parallel_runs_on_one_session_overlap(sdk):
    sid = sdk.create()
    results = []
    t0 = time.monotonic()
    futs = [sdk.run_future(sid, "sleep 2; echo %d" % i) for i in range(8)]
    for f in futs:
        results.append(f.result(timeout=scaled(40)))
    took = time.monotonic() - t0
    assert sorted(r.stdout for r in results) == sorted("%d\n" % i for i in range(8))
    assert took < 2 + scaled(3), "8 parallel 2 s runs took %.1fs (serialized?)" % took


def test_server_answers_while_a_long_run_is_in_flight(sdk):
    sid = sdk.create()
    fut = sdk.run_future(sid, "sleep 5; echo long")
    time.sleep(0.3)
    checks = [
        lambda: sdk.http("GET", "/health")[0] == 200,
        lambda: sdk.http("GET", "/sessions/" + sid)[0] == 200,
        lambda: sdk.http("GET", "/sessions")[0] == 200,
        lambda: sdk.create() != "",
        lambda: sdk.run(sid, "echo quick").stdout == "quick\n",
        lambda: sdk.write(sid, "/tmp/x", b"x").success,
        lambda: sdk.read(sid, "/tmp/x").content == b"x",
        lambda: sdk.http("POST", "/run", {"command": ["/bin/echo", "one"]})[0] == 200,
    ]
    for i, check in enumerate(checks):
        t = time.monotonic()
        assert check(), "check %d failed" % i
        assert time.monotonic() - t < scaled(1.5), "check %d waited for the long run" % i
    assert not fut.done(), "the long run ended early"
    assert fut.result(timeout=scaled(20)).stdout == "long\n"


# --------------------------------------------------------------------------------------------
# bad input


def test_malformed_http_bodies_get_4xx_and_the_server_lives(start_server, pb):
    s = start_server("--max-body", "64K")
    sdk = Sdk(s, pb)
    try:
        sid = sdk.create()
        P = "/sessions/%s" % sid
        bad = [
            ("POST", "/sessions", b"{"), ("POST", "/sessions", b"[]"), ("POST", P + "/run", b"null"),
            ("POST", "/sessions", b'{"env": 5}'), ("POST", "/sessions", b'{"env": {"A": 1}}'),
            ("POST", "/sessions", b"\xff\xfe{}"), ("POST", "/sessions", b'{"env": {}} trailing'),
            ("POST", P + "/run", b'{"command": "echo hi"}'), ("POST", P + "/run", b'{"command": [1, 2]}'),
            ("POST", P + "/run", b'{"command": ["/bin/true"], "time": "x"}'),
            ("POST", P + "/run", b'{"command": ["/bin/true"], "env": ["A=b"]}'),
            ("POST", P + "/run", b'{"command": ["/bin/true"], "cwd": 5}'),
            ("POST", P + "/run", b'{}'), ("POST", P + "/run", b''),
            ("POST", P + "/env", b'{"env": []}'), ("POST", P + "/env", b'{"env": {"A": null}}'),
            ("POST", P + "/cwd", b'{"cwd": 5}'), ("POST", P + "/cwd", b'{"cwd": [".."]}'),
            ("POST", P + "/files/write", b'{"path": "/tmp/x", "content": "!!! not base64 !!!"}'),
            ("POST", P + "/files/write", b'{"path": "/tmp/x", "content": "QUJD="}'),
            ("POST", P + "/files/write", b'{"path": 5, "content": ""}'),
            ("POST", P + "/files/write", b'{"content": "QUJD"}'),
            ("POST", P + "/files/write-bulk", b'{"files": "x"}'),
            ("POST", P + "/files/write-bulk", b'{"files": [{"path": 1, "content": ""}]}'),
            ("POST", P + "/files/write-bulk", b'{"files": [{"path": "/tmp/a", "content": "%%%"}]}'),
            ("POST", P + "/background", b'{"command": 5}'),
            ("POST", P + "/background", b'{"command": ["/bin/true"], "port": "x"}'),
            ("POST", "/run", b'{"command": {}}'),
            ("POST", "/sessions", b"[" * 30000 + b"]" * 30000),
            ("POST", "/sessions", b'{"env": ' * 5000 + b"{}" + b"}" * 5000),
        ]
        for method, path, raw in bad:
            status, text = sdk.http(method, path, raw=raw)
            assert 400 <= status < 500, "%s %s %r answered %d: %r" % (method, path, raw[:60], status, text[:200])
        assert sdk.read(sid, "/tmp/x").error != "", "a bad files/write wrote something"
        big = json.dumps({"env": {"A": "x" * (100 << 10)}}).encode()
        for path in ("/sessions", P + "/run", P + "/files/write"):
            status, _ = sdk.http("POST", path, raw=big)
            assert status == 413, (path, status)
        assert raw_http(s, b"POST /sessions HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000000\r\n\r\n"
                        ).startswith(b"HTTP/1.1 413"), "a huge Content-Length did not get 413 at once"
        assert sdk.http("GET", "/health")[0] == 200
        assert sdk.run(sid, "echo fine").stdout == "fine\n"
    finally:
        sdk.close()


def raw_http(server, data, port=None, wait=None):
    """Send raw bytes to the HTTP port; return what comes back before close or timeout."""
    sock = socket.create_connection(("127.0.0.1", port or server.http_port), timeout=wait or scaled(5))
    try:
        sock.sendall(data)
        out = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except socket.timeout:
                break
            if not chunk:
                break
            out += chunk
            if b"\r\n\r\n" in out:
                break
        return out
    finally:
        sock.close()


def test_garbage_on_either_port_does_not_kill_the_server(server, sdk):
    sid = sdk.create()
    grpc_port, http_port = server.grpc_port, server.http_port
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
    settings = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
    # a HEADERS frame on stream 1 whose HPACK block is nonsense
    headers = b"\x00\x00\x08\x01\x04\x00\x00\x00\x01" + b"\xff" * 8
    # a DATA frame on a stream nobody opened, and a frame with a huge length
    data = b"\x00\x00\x05\x00\x01\x00\x00\x00\x03hello"
    huge = b"\xff\xff\xff\x00\x00\x00\x00\x00\x01" + b"\x00" * 100
    garbage = [os.urandom(4096), b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", preface + os.urandom(512),
               preface + settings + headers, preface + settings + data, preface + settings + huge,
               preface[:10], b"\x00" * 65536]
    idle = []
    for g in garbage:
        for port in (grpc_port, http_port):
            sock = socket.create_connection(("127.0.0.1", port), timeout=scaled(5))
            try:
                sock.sendall(g)
            except OSError:
                pass
            if g is garbage[6]:
                idle.append(sock)  # left open, half a preface: must not block anyone
            else:
                sock.settimeout(0.2)
                try:
                    sock.recv(65536)
                except OSError:
                    pass
                sock.close()
    try:
        # a message that is not a valid protobuf, on a real gRPC method
        raw = sdk.channel.unary_unary("/sandbox.SandboxService/RunCommand",
                                      request_serializer=lambda b: b,
                                      response_deserializer=lambda b: b)
        for payload in (b"\xff\xff\xff\xff\xff", b"\x0a\xff\xff\xff\xff\x0f", b"\x12\x05ab"):
            with pytest.raises(grpc.RpcError) as ei:
                raw(payload, timeout=scaled(10))
            assert ei.value.code() != grpc.StatusCode.OK
        with pytest.raises(grpc.RpcError) as ei:
            sdk.channel.unary_unary("/sandbox.SandboxService/NoSuchMethod",
                                    request_serializer=lambda b: b,
                                    response_deserializer=lambda b: b)(b"", timeout=scaled(10))
        assert ei.value.code() == grpc.StatusCode.UNIMPLEMENTED
        # odd but well-formed requests
        with pytest.raises(grpc.RpcError) as ei:
            sdk.grpc("RunCommand", session_id="x" * (1 << 20), command=["/bin/true"])
        assert ei.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.RpcError) as ei:
            sdk.grpc("RunCommand", session_id=sid, command=[])
        assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert sdk.write(sid, "", b"x").success is False
        assert sdk.http("GET", "/health")[0] == 200
        assert sdk.run(sid, "echo alive").stdout == "alive\n"
        assert server.proc.poll() is None
    finally:
        for sock in idle:
            sock.close()
