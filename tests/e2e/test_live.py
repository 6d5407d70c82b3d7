"""Live output and host files through the bridge (API.md, "Live output, exec sessions and
host files"): sandbox/run with a partialResultToken sends $/progress chunks before its reply
(the local backend streams; the remote one sends none and answers as before), server/health
lists the backend's features, fs/upload and fs/download copy host files on the local
backend and answer UnsupportedError on the remote one."""
import os
import time

import pytest

from harness import scaled


def progress_then_reply(b, id, timeout=30):
    """The $/progress notifications that came before the reply with id, and the reply."""
    chunks = []
    deadline = time.monotonic() + scaled(timeout)
    while True:
        m = b.next_message(timeout=max(0.1, deadline - time.monotonic()))
        if m.get("method") == "$/progress":
            chunks.append((time.monotonic(), m["params"]))
            continue
        if m.get("id") == id:
            return chunks, m
        raise AssertionError("unexpected message %r" % m)


def test_run_streams_progress_before_the_reply(bridge, sandbox, backend):
    script = "echo one; echo err >&2; sleep 0.6; printf 'caf\\303'; sleep 0.2; printf '\\251!\\n'"
    t0 = time.monotonic()
    id = bridge.start("sandbox/run", {"sandboxId": sandbox, "command": script,
                                      "partialResultToken": "tok-1"})
    chunks, reply = progress_then_reply(bridge, id)
    end = time.monotonic()
    r = reply["result"]
    assert r["stdout"] == "one\ncafé!\n" and r["stderr"] == "err\n"
    # both backends stream (the remote one through opensandboxd's RunStream)
    assert all(c["token"] == "tok-1" for _, c in chunks)
    assert "".join(c["value"].get("stdout", "") for _, c in chunks) == r["stdout"]
    assert "".join(c["value"].get("stderr", "") for _, c in chunks) == r["stderr"]
    first = chunks[0]
    assert "one" in first[1]["value"]["stdout"] and end - first[0] > 0.4, \
        "the first line came only at the end"
    # no chunk ends in the middle of "é"
    assert all("\ufffd" not in c["value"].get("stdout", "") for _, c in chunks)
    assert t0 < first[0]


def test_integer_token_and_large_output_are_chunked(spawn):
    b = spawn([])
    sid = b.create()
    id = b.start("sandbox/run", {"sandboxId": sid, "command": "head -c 3000000 /dev/zero | tr '\\0' x",
                                 "partialResultToken": 7})
    chunks, reply = progress_then_reply(b, id)
    assert all(c["token"] == 7 for _, c in chunks)
    sizes = [len(c["value"].get("stdout", "")) for _, c in chunks]
    assert max(sizes) <= 1 << 20 and sum(sizes) == 3000000
    assert reply["result"]["stdout"] == "x" * 3000000


@pytest.mark.parametrize("token", [1.5, True, None, [], {}])
def test_bad_token_is_invalid_params(bridge, sandbox, token):
    params = {"sandboxId": sandbox, "command": "echo hi", "partialResultToken": token}
    if token is None:  # null: as if absent
        assert bridge.call("sandbox/run", params)["stdout"] == "hi\n"
        return
    e = bridge.error("sandbox/run", params, code=-32602)
    assert "partialResultToken" in e["message"]


def test_cancelled_streamed_run_sends_nothing_after_its_error(spawn):
    b = spawn([])
    sid = b.create()
    id = b.start("sandbox/run", {"sandboxId": sid, "partialResultToken": "c",
                                 "command": "while true; do echo tick; sleep 0.01; done"})
    m = b.next_message(timeout=scaled(10))
    assert m.get("method") == "$/progress"
    b.notify("$/cancelRequest", {"id": id})
    while True:
        m = b.next_message(timeout=scaled(5))
        if m.get("id") == id:
            assert m["error"]["code"] == -32800
            break
        assert m.get("method") == "$/progress"
    b.assert_silent(0.5)


def test_health_lists_features(bridge, backend):
    h = bridge.call("server/health")
    if backend == "local":
        assert set(h["features"]) >= {"stream", "exec", "stdin", "upload"}
    else:  # opensandboxd's extension: RunStream, Exec, chunked Upload/Download
        assert h["features"] == ["stream", "exec", "stdin", "upload"]


def test_upload_download_round_trip_and_refusals(bridge, sandbox, backend, tmp_path):
    src = tmp_path / "src.bin"
    data = os.urandom(3 << 20) + b"end"
    src.write_bytes(data)
    # over the 4 MiB message limit: in chunks on both backends (opensandboxd's extension)
    huge = tmp_path / "huge.bin"
    huge.write_bytes(b"h" * (5 << 20))
    r = bridge.call("fs/upload", {"sandboxId": sandbox, "localPath": str(huge), "path": "/x"})
    assert r == {"bytesWritten": 5 << 20}
    huge.unlink()
    r = bridge.call("fs/upload", {"sandboxId": sandbox, "localPath": str(src), "path": "/d/f.bin"})
    assert r == {"bytesWritten": len(data)}
    dst = tmp_path / "dst.bin"
    r = bridge.call("fs/download", {"sandboxId": sandbox, "path": "/d/f.bin", "localPath": str(dst)})
    assert r == {"bytesRead": len(data)} and dst.read_bytes() == data
    assert bridge.call("fs/read", {"sandboxId": sandbox, "path": "/d/f.bin",
                                   "encoding": "base64"})["size"] == len(data)

    # a localPath that is a directory, a FIFO, missing or unreadable: -32005 naming it
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    secret = tmp_path / "secret"
    secret.write_bytes(b"s")
    bad = [str(tmp_path), str(fifo), str(tmp_path / "missing")]
    if os.geteuid() != 0:
        secret.chmod(0)
        bad.append(str(secret))
    for lp in bad:
        e = bridge.error("fs/upload", {"sandboxId": sandbox, "localPath": lp, "path": "/y"},
                         code=-32005)
        assert e["data"]["localPath"] == lp and e["data"]["reason"]
    for lp in (str(tmp_path), str(fifo)):
        e = bridge.error("fs/download", {"sandboxId": sandbox, "path": "/d/f.bin", "localPath": lp},
                         code=-32005)
        assert e["data"]["localPath"] == lp
    # a failed download leaves nothing under the name, nor a temporary file
    e = bridge.error("fs/download", {"sandboxId": sandbox, "path": "/nope",
                                     "localPath": str(tmp_path / "out")}, code=-32005)
    assert e["data"]["path"] == "/nope"
    assert sorted(os.listdir(tmp_path)) == ["dst.bin", "fifo", "secret", "src.bin"]
    # the sandbox side: a directory target, an unknown sandbox
    bridge.error("fs/upload", {"sandboxId": sandbox, "localPath": str(src), "path": "/d"},
                 code=-32005)
    bridge.error("fs/upload", {"sandboxId": "nope", "localPath": str(src), "path": "/z"},
                 code=-32001)


def test_cancelled_upload_leaves_no_partial_file(spawn, tmp_path):
    b = spawn([])
    sid = b.create()
    big = tmp_path / "big"
    with open(big, "wb") as f:
        f.truncate(1 << 30)  # sparse: read fast, written for real in the sandbox
    id = b.start("fs/upload", {"sandboxId": sid, "localPath": str(big), "path": "/up/big"})
    time.sleep(0.05)
    b.notify("$/cancelRequest", {"id": id})
    assert b.reply(id, timeout=scaled(30))["error"]["code"] == -32800
    deadline = time.monotonic() + scaled(5)
    while time.monotonic() < deadline:
        r = b.call("sandbox/run", {"sandboxId": sid, "command": "ls -a /up 2>/dev/null"})
        if "osb-upload" not in r["stdout"]:
            break
        time.sleep(0.05)
    assert r["stdout"] in ("", ".\n..\n")


def test_flooding_run_with_a_host_that_does_not_read_stays_bounded(tmp_path):
    """A host that never reads stdout while a streamed run floods output: the bridge's
    memory stays bounded (the chunks are capped with the result at --max-output) and it
    still reads and answers $/cancelRequest."""
    import json
    import subprocess
    import harness
    p = subprocess.Popen([harness.BRIDGE, "--max-output", "4000000"], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                         env=harness.clean_env())
    try:
        def send(m):
            p.stdin.write((json.dumps(m) + "\n").encode())
            p.stdin.flush()
        send({"jsonrpc": "2.0", "id": 1, "method": "sandbox/create", "params": {}})
        sid = json.loads(p.stdout.readline())["result"]["sandboxId"]
        send({"jsonrpc": "2.0", "id": 2, "method": "sandbox/run",
              "params": {"sandboxId": sid, "command": "yes flood", "partialResultToken": "f"}})
        time.sleep(scaled(2))  # stdout unread meanwhile
        with open("/proc/%d/status" % p.pid) as f:
            rss_kb = int([l for l in f if l.startswith("VmRSS:")][0].split()[1])
        assert rss_kb < 200 * 1024, "bridge RSS %d kB while its host does not read" % rss_kb
        send({"jsonrpc": "2.0", "method": "$/cancelRequest", "params": {"id": 2}})
        deadline = time.monotonic() + scaled(10)
        got = 0
        while time.monotonic() < deadline:
            m = json.loads(p.stdout.readline())
            if m.get("method") == "$/progress":
                got += len(m["params"]["value"].get("stdout", ""))
                continue
            assert m["id"] == 2 and m["error"]["code"] == -32800
            break
        else:
            raise AssertionError("no -32800 in time")
        assert got <= 4000000
    finally:
        p.stdin.close()
        p.wait(timeout=scaled(10))


# ---- exec sessions ----

def exec_read_until(b, x, want, timeout=10):
    out = ""
    deadline = time.monotonic() + scaled(timeout)
    while want not in out and time.monotonic() < deadline:
        out += b.call("exec/read", {"execId": x, "yieldMs": 20})["stdout"]
    return out


def test_exec_cat_round_trip_eof_and_end(bridge, sandbox, backend):
    r = bridge.call("exec/start", {"sandboxId": sandbox, "command": "cat", "stdin": True})
    x = r["execId"]
    assert r["running"] is True and r["exitCode"] is None and r["signal"] is None
    assert bridge.call("exec/write", {"execId": x, "data": "hello\n"}) is None
    assert exec_read_until(bridge, x, "hello\n") == "hello\n"
    assert bridge.call("exec/write", {"execId": x, "data": harness_b64(b"b64\n"),
                                      "encoding": "base64"}) is None
    assert exec_read_until(bridge, x, "b64\n") == "b64\n"
    lst = bridge.call("exec/list", {"sandboxId": sandbox})["execs"]
    assert {"execId": x, "command": "/bin/sh -c cat", "running": True} in lst
    assert bridge.call("exec/write", {"execId": x, "eof": True}) is None
    t0 = time.monotonic()
    r = bridge.call("exec/read", {"execId": x, "yieldMs": 10000})
    assert time.monotonic() - t0 < scaled(5)  # returned at the end, not after 10 s
    assert r["running"] is False and r["exitCode"] == 0 and r["signal"] == 0
    e = bridge.error("exec/read", {"execId": x}, code=-32001)  # its end was reported
    assert e["data"]["execId"] == x
    assert bridge.call("exec/list", {"sandboxId": sandbox})["execs"] == []


def harness_b64(data):
    import base64
    return base64.b64encode(data).decode()


def test_exec_refusals_and_kill(spawn, backend_args):
    b = spawn(backend_args)
    sid = b.create()
    b.error("exec/read", {"execId": "exec-999"}, code=-32001)
    b.error("exec/kill", {"execId": "nope"}, code=-32001)
    b.error("exec/start", {"sandboxId": "nope", "command": "true"}, code=-32001)
    b.error("exec/start", {"sandboxId": sid, "command": "true", "partialResultToken": 1.5},
            code=-32602)
    r = b.call("exec/start", {"sandboxId": sid, "command": "echo a; sleep 30", "yieldMs": 300})
    assert r["running"] and r["stdout"] == "a\n"
    x = r["execId"]
    e = b.error("exec/write", {"execId": x, "data": "x"}, code=-32602)
    assert "stdin" in e["message"]
    b.error("exec/write", {"execId": x}, code=-32602)  # data required unless eof
    b.error("exec/kill", {"execId": x, "signal": 0}, code=-32602)
    assert b.call("exec/kill", {"execId": x}) is None
    r = b.call("exec/read", {"execId": x, "yieldMs": 5000})
    assert r["running"] is False and r["signal"] == 9 and r["exitCode"] == 0
    # timeoutMs is wall time
    t0 = time.monotonic()
    r = b.call("exec/start", {"sandboxId": sid, "command": "sleep 30", "timeoutMs": 300,
                              "yieldMs": 10000})
    assert r["running"] is False and r["signal"] == 9 and time.monotonic() - t0 < scaled(5)
    # sandbox/destroy ends an exec
    r = b.call("exec/start", {"sandboxId": sid, "command": "sleep 30"})
    b.call("sandbox/destroy", {"sandboxId": sid})
    r = b.call("exec/read", {"execId": r["execId"], "yieldMs": 5000})
    assert r["running"] is False and r["signal"] == 9


def test_exec_stdin_not_read_is_busy_and_kill_still_works(spawn, backend_args):
    """A command that never reads its stdin: exec/write fills the bounded stdin queue (the
    engine's; remotely the bridge's send queue behind the server's) and then answers -32008
    with data.limit; exec/kill SIGKILL still ends it at once (remotely by cancelling the
    Exec call, since the signal would wait behind the unread stdin)."""
    b = spawn(backend_args)
    sid = b.create()
    x = b.call("exec/start", {"sandboxId": sid, "command": "sleep 60", "stdin": True})["execId"]
    chunk = "y" * (512 << 10)
    for _ in range(100):
        r = b.request("exec/write", {"execId": x, "data": chunk}, timeout=scaled(10))
        if "error" in r:
            break
    assert r["error"]["code"] == -32008, r
    assert r["error"]["data"]["limit"] == 1 << 20
    t0 = time.monotonic()
    assert b.call("exec/kill", {"execId": x}) is None
    r = b.call("exec/read", {"execId": x, "yieldMs": 10000})
    assert r["running"] is False and r["signal"] == 9, r
    assert time.monotonic() - t0 < scaled(3)


def test_exec_unread_output_is_bounded_oldest_dropped(spawn, backend_args):
    b = spawn(backend_args + ["--max-output", "65536"])
    sid = b.create()
    x = b.call("exec/start", {"sandboxId": sid, "command": "seq 1 200000; echo last; sleep 30"})["execId"]
    time.sleep(scaled(1.5))
    r = b.call("exec/read", {"execId": x})
    assert r["truncated"] is True and len(r["stdout"]) <= 65536 and r["stdout"].endswith("last\n")
    assert b.call("exec/read", {"execId": x})["truncated"] is False
    b.call("exec/kill", {"execId": x})


def test_cancelled_exec_read_answers_at_once(spawn, backend_args):
    b = spawn(backend_args)
    sid = b.create()
    x = b.call("exec/start", {"sandboxId": sid, "command": "sleep 30"})["execId"]
    id = b.start("exec/read", {"execId": x, "yieldMs": 60000})
    time.sleep(0.2)
    t0 = time.monotonic()
    b.notify("$/cancelRequest", {"id": id})
    assert b.reply(id, timeout=scaled(5))["error"]["code"] == -32800
    assert time.monotonic() - t0 < scaled(2)
    assert b.call("exec/list", {"sandboxId": sid})["execs"][0]["running"] is True


def test_bridge_exit_kills_its_execs(spawn, backend_args):
    b = spawn(backend_args)
    sid = b.create()
    marker = "31337.%d" % os.getpid()
    b.call("exec/start", {"sandboxId": sid, "argv": ["sleep", marker]})

    def alive():
        for pid in os.listdir("/proc"):
            if pid.isdigit():
                try:
                    with open("/proc/%s/cmdline" % pid, "rb") as f:
                        if marker.encode() in f.read():
                            return True
                except OSError:
                    pass
        return False
    deadline = time.monotonic() + scaled(5)
    while not alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert alive()
    b.close_stdin()
    b.wait_exit(timeout=scaled(10))
    deadline = time.monotonic() + scaled(2)
    while alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive()
