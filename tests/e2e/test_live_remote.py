"""Live output and exec sessions through a real opensandboxd (API.md, "Live output, exec
sessions and host files"): sandbox/run with a partialResultToken on the remote backend goes
over the server's RunStream extension, so $/progress chunks arrive while the command runs and
concatenate to the result; a cancel stops the streamed call (and the command on the server);
exec sessions go over its Exec stream; a server killed mid-stream or mid-exec still gets
every waiting request answered within 2 s; a server without the extension (--no-ext, as the
public one) runs without chunks and answers exec/start -32006. Every server here is one the
test started, stopped by its PID."""
import time

import pytest

from harness import scaled
from test_live import progress_then_reply
from test_remote_faults import servers  # noqa: F401 (fixture: servers killed by PID)


def test_remote_streamed_run_concatenates_to_the_result(spawn, server):
    b = spawn(server.bridge_args() + ["--transport", "grpc"])
    sid = b.create()
    script = ("for i in 1 2 3; do echo line$i; echo e$i >&2; sleep 0.3; done; "
              "head -c 2500000 /dev/zero | tr '\\0' y")
    t0 = time.monotonic()
    id = b.start("sandbox/run", {"sandboxId": sid, "command": script, "partialResultToken": 5})
    chunks, reply = progress_then_reply(b, id)
    end = time.monotonic()
    r = reply["result"]
    assert r["stdout"] == "line1\nline2\nline3\n" + "y" * 2500000
    assert r["stderr"] == "e1\ne2\ne3\n"
    assert all(c["token"] == 5 for _, c in chunks)
    assert "".join(c["value"].get("stdout", "") for _, c in chunks) == r["stdout"]
    assert "".join(c["value"].get("stderr", "") for _, c in chunks) == r["stderr"]
    assert max(len(c["value"].get("stdout", "")) for _, c in chunks) <= 1 << 20
    first = chunks[0]
    assert "line1" in first[1]["value"].get("stdout", "") and end - first[0] > 0.5, \
        "the first line came only at the end (%.2fs before the reply)" % (end - first[0])
    assert t0 < first[0]
    # server/health now knows the extension is there
    assert "stream" in b.call("server/health")["features"]


def test_remote_health_probes_the_extension(spawn, server):
    b = spawn(server.bridge_args())
    h = b.call("server/health")
    assert h["ok"] and h["features"] == ["stream", "exec", "stdin", "upload"]
    # with HTTP only, runs cannot stream and there are no exec sessions or chunked files
    b2 = spawn(server.bridge_args() + ["--transport", "http"])
    assert b2.call("server/health")["features"] == []


def test_remote_http_transport_run_answers_without_chunks(spawn, server):
    b = spawn(server.bridge_args() + ["--transport", "http"])
    sid = b.create()
    id = b.start("sandbox/run", {"sandboxId": sid, "command": "echo hi", "partialResultToken": "t"})
    chunks, reply = progress_then_reply(b, id)
    assert chunks == [] and reply["result"]["stdout"] == "hi\n"


def test_cancel_during_a_remote_streamed_run(spawn, server):
    b = spawn(server.bridge_args() + ["--transport", "grpc"])
    sid = b.create()
    id = b.start("sandbox/run", {"sandboxId": sid, "partialResultToken": "c",
                                 "command": "while true; do echo tick; sleep 0.02; done; "})
    m = b.next_message(timeout=scaled(10))
    assert m.get("method") == "$/progress" and "tick" in m["params"]["value"]["stdout"]
    t0 = time.monotonic()
    b.notify("$/cancelRequest", {"id": id})
    while True:
        m = b.next_message(timeout=scaled(5))
        if m.get("id") == id:
            assert m["error"]["code"] == -32800, m
            break
        assert m.get("method") == "$/progress"
    assert time.monotonic() - t0 < scaled(0.5), "cancel took %.2fs" % (time.monotonic() - t0)
    b.assert_silent(0.5)
    # the command is gone on the server, and the sandbox still works
    id2 = b.start("sandbox/run", {"sandboxId": sid, "partialResultToken": "d",
                                  "command": "sleep 0.3; ps -eo args | grep -c '[s]leep 0.02' || true"})
    chunks, reply = progress_then_reply(b, id2)
    assert reply["result"]["stdout"] == "0\n", reply
    assert "".join(c["value"].get("stdout", "") for _, c in chunks) == "0\n"


def test_server_killed_during_a_streamed_run_answers_within_2s(spawn, servers):  # noqa: F811
    s = servers.start()
    b = spawn(s.bridge_args() + ["--transport", "grpc"])
    sid = b.create()
    ids = [b.start("sandbox/run", {"sandboxId": sid, "partialResultToken": "k%d" % i,
                                   "command": "while true; do echo tick; sleep 0.05; done"})
           for i in range(3)]
    seen = set()
    deadline = time.monotonic() + scaled(10)
    while len(seen) < 3 and time.monotonic() < deadline:
        m = b.next_message(timeout=scaled(10))
        assert m.get("method") == "$/progress", m
        seen.add(m["params"]["token"])
    assert len(seen) == 3, "every run streams before the kill"
    killed = time.monotonic()
    servers.kill(s)
    answered = {}
    while len(answered) < 3:
        m = b.next_message(timeout=scaled(2) + 0.5)
        if m.get("method") == "$/progress":
            assert m["params"]["token"] in seen
            continue
        answered[m["id"]] = m
    took = time.monotonic() - killed
    assert took < scaled(2), "answers took %.2fs after the kill" % took
    for i in ids:
        assert answered[i]["error"]["code"] == -32003, answered[i]
    b.assert_silent(0.3)


def test_remote_host_files_and_exec_over_http_refusal(spawn, server, tmp_path):
    """Host files up to the message limit go as one WriteFile/ReadFile; exec sessions need
    the gRPC Exec stream: over --transport http, -32006 naming the method."""
    b = spawn(server.bridge_args())
    sid = b.create()
    src = tmp_path / "a.bin"
    data = bytes(range(256)) * 4096  # 1 MiB, every byte value
    src.write_bytes(data)
    assert b.call("fs/upload", {"sandboxId": sid, "localPath": str(src),
                                "path": "/tmp/a.bin"}) == {"bytesWritten": len(data)}
    dst = tmp_path / "b.bin"
    assert b.call("fs/download", {"sandboxId": sid, "path": "/tmp/a.bin",
                                  "localPath": str(dst)}) == {"bytesRead": len(data)}
    assert dst.read_bytes() == data
    b2 = spawn(server.bridge_args() + ["--transport", "http"])
    e = b2.error("exec/start", {"sandboxId": sid, "command": "cat"}, code=-32006)
    assert e["data"]["method"] == "exec/start" and "http" in e["message"]


def test_server_without_the_extension_runs_without_chunks(spawn, start_server):
    """A server that answers RunStream UNIMPLEMENTED (the public one; opensandboxd --no-ext):
    the run goes as a plain RunCommand, no chunk, the same result; remembered; health says
    no stream."""
    s = start_server("--no-ext")
    b = spawn(s.bridge_args() + ["--transport", "grpc", "--log-level", "info"])
    sid = b.create()
    for _ in range(2):
        id = b.start("sandbox/run", {"sandboxId": sid, "command": "echo one; echo two >&2",
                                     "partialResultToken": "t"})
        chunks, reply = progress_then_reply(b, id)
        assert chunks == []
        assert reply["result"]["stdout"] == "one\n" and reply["result"]["stderr"] == "two\n"
    assert b.call("server/health")["features"] == []
    assert b.stderr_text().count("lacks RunStream") == 1, "the answer is remembered"
    # a fresh bridge learns it at health time
    b2 = spawn(s.bridge_args())
    assert b2.call("server/health")["features"] == []


def test_server_without_the_extension_refuses_exec(spawn, start_server):
    """exec/start against a server that answers Exec UNIMPLEMENTED: -32006 naming the method
    and what the server lacks; remembered (the next one asks no server); exec/read of that
    exec id is then unknown."""
    s = start_server("--no-ext")
    b = spawn(s.bridge_args())
    sid = b.create()
    for _ in range(2):
        e = b.error("exec/start", {"sandboxId": sid, "command": "cat", "stdin": True},
                    code=-32006)
        assert e["data"]["method"] == "exec/start"
        assert "Exec" in e["message"], e
    b.error("exec/read", {"execId": "exec-1"}, code=-32001)
    assert b.call("exec/list", {"sandboxId": sid}) == {"execs": []}
    assert b.call("sandbox/run", {"sandboxId": sid, "command": "echo ok"})["stdout"] == "ok\n"


def test_server_killed_during_an_exec_answers_within_2s(spawn, servers):  # noqa: F811
    """Reads waiting on exec sessions when the server dies: each answered -32003 within 2 s,
    and so are later reads; the bridge stays up and answers."""
    s = servers.start()
    b = spawn(s.bridge_args())
    sid = b.create()
    xs = []
    for i in range(3):
        r = b.call("exec/start", {"sandboxId": sid, "stdin": i == 0, "yieldMs": 300,
                                  "command": "echo up%d; sleep 60" % i})
        assert r["running"] and r["stdout"] == "up%d\n" % i
        xs.append(r["execId"])
    ids = [b.start("exec/read", {"execId": x, "yieldMs": 60000}) for x in xs]
    time.sleep(0.3)
    killed = time.monotonic()
    servers.kill(s)
    answered = {}
    while len(answered) < len(ids):
        m = b.next_message(timeout=scaled(2) + 0.5)
        answered[m["id"]] = m
    took = time.monotonic() - killed
    assert took < scaled(2), "answers took %.2fs after the kill" % took
    for i in ids:
        assert answered[i]["error"]["code"] == -32003, answered[i]
    e = b.error("exec/read", {"execId": xs[0]}, code=-32003)
    assert e["data"]["type"] == "SandboxConnectionError"
    b.error("exec/write", {"execId": xs[0], "data": "x"}, code=-32003)
    assert b.call("exec/kill", {"execId": xs[0]}) is None
    assert all(not e["running"] for e in b.call("exec/list", {"sandboxId": sid})["execs"])
    b.assert_silent(0.3)
