"""Live output of an exec session (API.md, "Streaming a run"): exec/start with a
partialResultToken sends the exec's output as $/progress chunks for its whole life, also
after exec/start's reply, cut on UTF-8 boundaries; exec/read does not return it again, and
every chunk comes before the result that reports the end. Both backends (the remote one
through opensandboxd's Exec stream); the flood test runs on the local one."""
import json
import subprocess
import time

import harness
from harness import scaled


def collect_until_reply(b, id, timeout=20):
    """($/progress params with their arrival time, the reply with id)."""
    chunks = []
    deadline = time.monotonic() + scaled(timeout)
    while True:
        m = b.next_message(timeout=max(0.1, deadline - time.monotonic()))
        if m.get("method") == "$/progress":
            chunks.append((time.monotonic(), m["params"]))
        elif m.get("id") == id:
            return chunks, m
        else:
            raise AssertionError("unexpected message %r" % m)


def joined(chunks, stream):
    return "".join(c["value"].get(stream, "") for _, c in chunks)


def test_exec_streams_after_its_reply_until_the_end(spawn, backend_args):
    b = spawn(backend_args)
    sid = b.create()
    script = ("echo one; echo err >&2; sleep 0.5; printf 'caf\\303'; sleep 0.2; "
              "printf '\\251!\\n'; sleep 0.3; echo last")
    id = b.start("exec/start", {"sandboxId": sid, "command": script,
                                "partialResultToken": "x-1", "yieldMs": 100})
    before, reply = collect_until_reply(b, id)
    r = reply["result"]
    assert r["running"] is True
    x = r["execId"]
    replied = time.monotonic()
    # the output goes as chunks only: the reply and exec/read do not carry it again
    after = []
    reads = []
    while True:
        rid = b.start("exec/read", {"execId": x, "yieldMs": 300})
        got, rep = collect_until_reply(b, rid)
        after += got
        reads.append(rep["result"])
        if not rep["result"]["running"]:
            break
        assert len(reads) < 50
    chunks = before + after
    assert all(c["token"] == "x-1" for _, c in chunks)
    assert r["stdout"] + "".join(s["stdout"] for s in reads) == ""
    assert r["stderr"] + "".join(s["stderr"] for s in reads) == ""
    assert joined(chunks, "stdout") == "one\ncafé!\nlast\n"
    assert joined(chunks, "stderr") == "err\n"
    assert all("\ufffd" not in c["value"].get("stdout", "") for _, c in chunks)
    assert any(t > replied for t, _ in after), "no chunk after exec/start's reply"
    end = reads[-1]
    assert end["exitCode"] == 0 and end["signal"] == 0
    b.assert_silent(0.3)  # nothing after the result that reported the end
    b.error("exec/read", {"execId": x}, code=-32001)


def test_exec_ending_within_its_yield_sends_every_chunk_first(spawn, backend_args):
    b = spawn(backend_args)
    sid = b.create()
    id = b.start("exec/start", {"sandboxId": sid, "argv": ["printf", "a\\nb\\303"],
                                "partialResultToken": 5, "yieldMs": 5000})
    chunks, reply = collect_until_reply(b, id)
    r = reply["result"]
    assert r["running"] is False and r["exitCode"] == 0
    # a character cut by the end becomes U+FFFD, in the last chunk, before the reply
    assert r["stdout"] == "" and joined(chunks, "stdout") == "a\nb\ufffd"
    assert all(c["token"] == 5 for _, c in chunks)
    b.assert_silent(0.3)


def test_exec_streaming_ends_with_kill_and_destroy(spawn, backend_args):
    b = spawn(backend_args)
    sid = b.create()
    x = b.call("exec/start", {"sandboxId": sid, "command": "echo up; sleep 30",
                              "partialResultToken": "k"})["execId"]
    m = b.next_message(timeout=scaled(5))
    assert m["method"] == "$/progress" and m["params"]["value"] == {"stdout": "up\n"}
    assert b.call("exec/kill", {"execId": x}) is None
    r = b.call("exec/read", {"execId": x, "yieldMs": 5000})
    assert r["running"] is False and r["signal"] == 9 and r["stdout"] == ""
    y = b.call("exec/start", {"sandboxId": sid, "command": "echo two; sleep 30",
                              "partialResultToken": "d"})["execId"]
    m = b.next_message(timeout=scaled(5))
    assert m["params"] == {"token": "d", "value": {"stdout": "two\n"}}
    b.call("sandbox/destroy", {"sandboxId": sid})
    r = b.call("exec/read", {"execId": y, "yieldMs": 5000})
    assert r["running"] is False and r["signal"] == 9
    b.assert_silent(0.3)


def test_cancelled_exec_start_sends_nothing_after_its_error(spawn, backend_args):
    b = spawn(backend_args)
    sid = b.create()
    id = b.start("exec/start", {"sandboxId": sid, "command": "while :; do echo tick; sleep 0.02; done",
                                "partialResultToken": "c", "yieldMs": 60000})
    m = b.next_message(timeout=scaled(5))
    assert m["method"] == "$/progress"
    b.notify("$/cancelRequest", {"id": id})
    while True:
        m = b.next_message(timeout=scaled(5))
        if m.get("id") == id:
            assert m["error"]["code"] == -32800
            break
        assert m["method"] == "$/progress"
    b.assert_silent(0.5)
    assert b.call("exec/list", {"sandboxId": sid})["execs"] == []


def test_bad_exec_token_is_invalid_params(spawn, backend_args):
    b = spawn(backend_args)
    sid = b.create()
    for tok in (1.5, [], {"a": 1}, True, None):
        if tok is None:
            continue
        b.error("exec/start", {"sandboxId": sid, "command": "true", "partialResultToken": tok},
                code=-32602)


def test_streamed_exec_flood_with_a_host_that_does_not_read_stays_bounded():
    """A host that does not read while a streamed exec floods: the bridge holds the last
    --max-output bytes a stream (the next chunk says truncated), its memory stays bounded,
    and it still answers once the host reads again."""
    p = subprocess.Popen([harness.BRIDGE, "--max-output", "1000000"], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                         env=harness.clean_env())
    try:
        def send(m):
            p.stdin.write((json.dumps(m) + "\n").encode())
            p.stdin.flush()
        send({"jsonrpc": "2.0", "id": 1, "method": "sandbox/create", "params": {}})
        sid = json.loads(p.stdout.readline())["result"]["sandboxId"]
        send({"jsonrpc": "2.0", "id": 2, "method": "exec/start",
              "params": {"sandboxId": sid, "command": "yes flood", "partialResultToken": "f"}})
        time.sleep(scaled(3))  # stdout unread meanwhile
        with open("/proc/%d/status" % p.pid) as f:
            rss_kb = int([l for l in f if l.startswith("VmRSS:")][0].split()[1])
        assert rss_kb < 200 * 1024, "bridge RSS %d kB while its host does not read" % rss_kb
        x = None
        truncated = False
        deadline = time.monotonic() + scaled(20)
        while time.monotonic() < deadline:
            m = json.loads(p.stdout.readline())
            if m.get("method") == "$/progress":
                truncated |= m["params"]["value"].get("truncated", False)
                if x and truncated:
                    break
                continue
            if m.get("id") == 2:
                x = m["result"]["execId"]
                if truncated:
                    break
        assert x and truncated
        send({"jsonrpc": "2.0", "id": 3, "method": "exec/kill", "params": {"execId": x}})
        while True:
            m = json.loads(p.stdout.readline())
            if m.get("id") == 3:
                assert m["result"] is None
                break
    finally:
        p.stdin.close()
        p.stdout.close()
        p.wait(timeout=scaled(10))
