"""The JSON-RPC transport and envelope: framing (NDJSON and LSP), ids, notifications,
params forms, batches, malformed input, limits, cancellation, shutdown/exit/EOF, and the
command line. These are backend-independent; they run on the local backend (the remote one
where it matters)."""
import json
import subprocess
import time

import pytest

import harness
from harness import METHODS, OPENRPC, scaled


@pytest.fixture
def b(spawn):
    return spawn([])


@pytest.fixture
def lsp(spawn):
    return spawn([], framing="lsp")


# ---- framing


def test_ndjson_request_gets_one_line_reply(b):
    b.send_raw('{"jsonrpc":"2.0","id":1,"method":"server/health"}')
    r = b.reply(1)
    assert r["result"]["ok"] is True
    assert b.raw[0].endswith(b"\n") and b.raw[0].count(b"\n") == 1


def test_lsp_request_gets_reply_with_exact_content_length_header(lsp):
    body = b'{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}'
    lsp.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
    r = lsp.reply(1)
    assert r["result"]["serverInfo"]["name"] == "opensandbox-bridge"
    raw = lsp.raw[0]
    header, _, payload = raw.partition(b"\r\n\r\n")
    assert header == b"Content-Length: %d" % len(payload)
    assert json.loads(payload) == r


def test_lsp_accepts_content_type_header_and_lowercase_names(lsp):
    body = b'{"jsonrpc":"2.0","id":"x","method":"server/health"}'
    lsp.write(b"content-length: %d\r\nContent-Type: application/vscode-jsonrpc; charset=utf-8\r\n\r\n"
              % len(body) + body)
    assert lsp.reply("x")["result"]["ok"] is True


def test_lsp_messages_split_across_writes_and_joined_in_one_write(lsp):
    m1 = lsp.frame('{"jsonrpc":"2.0","id":1,"method":"server/health"}')
    m2 = lsp.frame('{"jsonrpc":"2.0","id":2,"method":"server/health"}')
    m3 = lsp.frame('{"jsonrpc":"2.0","id":3,"method":"server/health"}')
    data = m1 + m2 + m3
    lsp.write(data[:7])
    time.sleep(0.1)
    lsp.write(data[7:30])
    time.sleep(0.1)
    lsp.write(data[30:])
    for i in (1, 2, 3):
        assert lsp.reply(i)["result"]["ok"] is True


def test_lsp_sandbox_round_trip(spawn):
    b = spawn([], framing="lsp")
    sid = b.create()
    r = b.run(sid, "echo hello")
    assert r["stdout"] == "hello\n"
    for raw in b.raw:
        header = raw.split(b"\r\n\r\n")[0]
        assert header.startswith(b"Content-Length: ") and header.count(b"\r\n") == 0


def test_ndjson_after_bom_and_whitespace(b):
    b.write(b"\xef\xbb\xbf  \n" + b'{"jsonrpc":"2.0","id":1,"method":"server/health"}\n')
    assert b.reply(1)["result"]["ok"] is True


def test_lsp_detected_after_leading_whitespace(lsp):
    lsp.write(b"\r\n" + lsp.frame('{"jsonrpc":"2.0","id":1,"method":"server/health"}'))
    assert lsp.reply(1)["result"]["ok"] is True


def test_forced_ndjson_framing_works(spawn):
    b = spawn(["--framing", "ndjson"])
    b.send_raw('{"jsonrpc":"2.0","id":1,"method":"server/health"}')
    assert b.reply(1)["result"]["ok"] is True


def test_forced_lsp_framing_works(spawn):
    b = spawn(["--framing", "lsp"], framing="lsp")
    b.send_raw('{"jsonrpc":"2.0","id":1,"method":"server/health"}')
    assert b.reply(1)["result"]["ok"] is True


def test_ndjson_message_split_across_writes(b):
    line = b'{"jsonrpc":"2.0","id":1,"method":"server/health"}\n'
    b.write(line[:10])
    time.sleep(0.2)
    b.write(line[10:])
    assert b.reply(1)["result"]["ok"] is True


def test_ndjson_crlf_line_endings_are_accepted(b):
    b.write(b'{"jsonrpc":"2.0","id":1,"method":"server/health"}\r\n')
    assert b.reply(1)["result"]["ok"] is True


def test_stdout_carries_only_protocol_even_at_trace_log_level(spawn):
    b = spawn(["--log-level", "trace"])
    sid = b.create()
    b.run(sid, "echo out; echo err >&2")
    b.write_file(sid, "/tmp/x", "y")
    b.send_raw("not json")
    b.reply(None)
    # Every stdout frame was checked as it arrived; the tracker fails the test on any stray byte.
    assert b.violations == []


# ---- ids


@pytest.mark.parametrize("id", [1, 0, -7, 2 ** 53 + 1, 2 ** 62, "a", "", "\u00e9\u2603", 1.5])
def test_id_is_echoed_exactly(b, id):
    raw = json.dumps({"jsonrpc": "2.0", "id": id, "method": "server/health"})
    b.send_raw(raw)
    r = b.reply(id)
    assert type(r["id"]) is type(id) and r["id"] == id
    assert r["result"]["ok"] is True


def test_integer_id_is_not_echoed_as_float(b):
    b.send_raw('{"jsonrpc":"2.0","id":42,"method":"nope/nope"}')
    b.reply(42)
    assert b'"id":42' in b.raw[0].replace(b" ", b"")
    assert b"42.0" not in b.raw[0]


def test_id_echoed_on_method_not_found(b):
    b.send_raw('{"jsonrpc":"2.0","id":"m1","method":"nope/nope"}')
    assert b.reply("m1")["error"]["code"] == -32601


def test_null_id_request_gets_a_reply_with_null_id(b):
    b.send_raw('{"jsonrpc":"2.0","id":null,"method":"server/health"}')
    r = b.reply(None)
    assert r["id"] is None
    assert "result" in r or r["error"]["code"] == -32600


@pytest.mark.parametrize("raw_id", ["true", "{}", "[1]", "false"])
def test_invalid_id_type_is_invalid_request_with_null_id(b, raw_id):
    b.send_raw('{"jsonrpc":"2.0","id":%s,"method":"server/health"}' % raw_id)
    r = b.reply(None)
    assert r["error"]["code"] == -32600


# ---- envelopes


@pytest.mark.parametrize("raw,reply_id", [
    ('{"id":1,"method":"server/health"}', 1),
    ('{"jsonrpc":"1.0","id":2,"method":"server/health"}', 2),
    ('{"jsonrpc":2.0,"id":3,"method":"server/health"}', 3),
    ('{"jsonrpc":"2.0","id":4,"method":5}', 4),
    ('{"jsonrpc":"2.0","id":5}', 5),
    ('{"jsonrpc":"2.0","id":6,"method":"server/health","params":"x"}', 6),
    ('{"jsonrpc":"2.0","id":7,"method":"server/health","params":5}', 7),
    ('{"jsonrpc":"2.0","id":8,"method":"server/health","params":true}', 8),
    ('"just a string"', None),
    ("42", None),
    ("null", None),
])
def test_invalid_request_objects_get_invalid_request(b, raw, reply_id):
    b.send_raw(raw)
    r = b.reply(reply_id)
    assert r["error"]["code"] == -32600


def test_malformed_json_gets_parse_error_and_the_stream_continues(b):
    b.send_raw('{"jsonrpc":"2.0","id":1,"method":')
    r = b.reply(None)
    assert r["error"]["code"] == -32700
    b.send_raw('{"jsonrpc":"2.0","id":2,"method":"server/health"}')
    assert b.reply(2)["result"]["ok"] is True


def test_malformed_json_in_lsp_gets_parse_error_and_the_stream_continues(lsp):
    lsp.send_raw("{oops")
    assert lsp.reply(None)["error"]["code"] == -32700
    lsp.send_raw('{"jsonrpc":"2.0","id":2,"method":"server/health"}')
    assert lsp.reply(2)["result"]["ok"] is True


def test_invalid_utf8_in_a_message_is_a_parse_error(b):
    b.write(b'{"jsonrpc":"2.0","id":1,"method":"server/health","params":{"x":"\xff"}}\n')
    r = b.next_message()
    assert r["error"]["code"] in (-32700, -32600)
    b.send_raw('{"jsonrpc":"2.0","id":2,"method":"server/health"}')
    assert b.reply(2)["result"]["ok"] is True


@pytest.mark.parametrize("params", [None, [], {}])
def test_null_empty_array_and_empty_object_params_mean_no_params(b, params):
    r = b.request("sandbox/create", params)
    assert isinstance(r["result"]["sandboxId"], str)


def test_missing_params_mean_no_params(b):
    assert b.request("sandbox/create")["result"]["sandboxId"]


def test_empty_array_params_still_require_fields(b):
    e = b.error("sandbox/run", [], code=-32602)
    assert "sandboxId" in e["message"]


def test_non_empty_array_params_are_invalid_params(b):
    b.error("sandbox/create", [{"env": {}}], code=-32602)


def test_unknown_members_of_the_request_object_are_tolerated_or_rejected_cleanly(b):
    b.send_raw('{"jsonrpc":"2.0","id":1,"method":"server/health","extra":1}')
    r = b.reply(1)
    assert "result" in r or r["error"]["code"] == -32600


# ---- notifications


def test_notifications_get_no_reply(b):
    b.notify("initialized", {})
    b.notify("no/such/notification", {})
    b.notify("server/health")
    b.send_raw('{"jsonrpc":"2.0","method":"$/cancelRequest","params":{"id":999}}')
    b.send_raw('{"jsonrpc":"2.0","method":"$/setTrace","params":{"value":"off"}}')
    b.send_raw('{"jsonrpc":"2.0","id":"after","method":"server/health"}')
    first = b.next_message()
    assert first.get("id") == "after", "a notification got a reply: %r" % first
    b.assert_silent(0.5)


def test_notification_with_invalid_params_gets_no_reply(b):
    b.notify("sandbox/run", {"sandboxId": 5})
    b.send_raw('{"jsonrpc":"2.0","id":1,"method":"server/health"}')
    assert b.next_message().get("id") == 1


# ---- batches


def test_batch_gets_an_array_of_replies(b):
    b.send([{"jsonrpc": "2.0", "id": 1, "method": "server/health"},
            {"jsonrpc": "2.0", "id": 2, "method": "nope/nope"},
            {"jsonrpc": "2.0", "id": 3, "method": "sandbox/create", "params": {}}])
    reply = b.next_message()
    assert isinstance(reply, list)
    by_id = {r["id"]: r for r in reply}
    assert sorted(by_id) == [1, 2, 3]
    assert by_id[1]["result"]["ok"] is True
    assert by_id[2]["error"]["code"] == -32601
    assert by_id[3]["result"]["sandboxId"]


def test_empty_batch_is_one_invalid_request_not_an_array(b):
    b.send_raw("[]")
    r = b.next_message()
    assert isinstance(r, dict), "[] must get a single error object, got %r" % r
    assert r["id"] is None and r["error"]["code"] == -32600


def test_batch_of_non_objects_gets_an_error_for_each(b):
    b.send_raw("[1,2,3]")
    r = b.next_message()
    assert isinstance(r, list) and len(r) == 3
    assert all(x["id"] is None and x["error"]["code"] == -32600 for x in r)


def test_batch_with_one_invalid_entry(b):
    b.send_raw('[1]')
    r = b.next_message()
    assert isinstance(r, list) and len(r) == 1 and r[0]["error"]["code"] == -32600


def test_batch_mixing_valid_invalid_and_notifications(b):
    b.send_raw('[{"jsonrpc":"2.0","id":"a","method":"server/health"},'
               '{"jsonrpc":"2.0","method":"initialized"},'
               '{"foo":"boo"},'
               '{"jsonrpc":"2.0","id":"b","method":"nope/nope"},'
               '{"jsonrpc":"2.0","method":"no/such"}]')
    r = b.next_message()
    assert isinstance(r, list) and len(r) == 3
    ids = sorted((x["id"] is None, str(x["id"])) for x in r)
    assert ids == [(False, "a"), (False, "b"), (True, "None")]
    codes = {str(x["id"]): x.get("error", {}).get("code") for x in r}
    assert codes == {"a": None, "b": -32601, "None": -32600}


def test_batch_of_only_notifications_gets_no_reply(b):
    b.send_raw('[{"jsonrpc":"2.0","method":"initialized"},{"jsonrpc":"2.0","method":"no/such"}]')
    b.send_raw('{"jsonrpc":"2.0","id":1,"method":"server/health"}')
    first = b.next_message()
    assert isinstance(first, dict) and first.get("id") == 1, "notification batch got %r" % first


def test_invalid_json_batch_is_a_single_parse_error(b):
    b.send_raw('[{"jsonrpc":"2.0","method":"sum","params":[1,2,4],"id":"1"},{"jsonrpc":"2.0","method"]')
    r = b.next_message()
    assert isinstance(r, dict) and r["error"]["code"] == -32700 and r["id"] is None


def test_batch_runs_its_requests_concurrently(b):
    sid = b.create()
    t0 = time.monotonic()
    b.send([{"jsonrpc": "2.0", "id": i, "method": "sandbox/run",
             "params": {"sandboxId": sid, "command": "sleep 1; echo %d" % i}} for i in range(10, 13)])
    r = b.next_message(timeout=scaled(20))
    assert sorted(x["result"]["stdout"] for x in r) == ["10\n", "11\n", "12\n"]
    assert time.monotonic() - t0 < scaled(2.8)


# ---- limits


def test_message_over_max_message_is_rejected_and_skipped_ndjson(spawn):
    b = spawn(["--max-message", "1000"])
    b.send_raw(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "sandbox/create",
                           "params": {"env": {"PAD": "x" * 3000}}}))
    r = b.next_message()
    assert r["id"] is None and r["error"]["code"] == -32600
    assert r["error"]["data"]["limit"] == 1000
    b.send_raw('{"jsonrpc":"2.0","id":2,"method":"server/health"}')
    assert b.reply(2)["result"]["ok"] is True


def test_message_over_max_message_is_rejected_and_skipped_lsp(spawn):
    b = spawn(["--max-message", "1000"], framing="lsp")
    b.send_raw(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "sandbox/create",
                           "params": {"env": {"PAD": "x" * 3000}}}))
    r = b.next_message()
    assert r["id"] is None and r["error"]["code"] == -32600
    assert r["error"]["data"]["limit"] == 1000
    b.send_raw('{"jsonrpc":"2.0","id":2,"method":"server/health"}')
    assert b.reply(2)["result"]["ok"] is True


def test_huge_lsp_header_block_does_not_break_the_bridge(spawn):
    b = spawn([], framing="lsp")
    b.write(b"Content-Length: 10\r\nX-Pad: " + b"p" * 20000 + b"\r\n\r\n0123456789")
    # The contract calls this an error; whatever the bridge answers must be protocol, and it
    # must not crash (the tracker checks stdout, stderr and the exit status).
    time.sleep(0.5)
    assert b.proc.poll() in (None, 0, 1)


def test_requests_past_max_inflight_get_busy_error(spawn):
    b = spawn(["--max-inflight", "2"])
    sid = b.create()
    slow = [b.start("sandbox/run", {"sandboxId": sid, "command": "sleep 2"}) for _ in range(2)]
    time.sleep(0.3)
    e = b.error("sandbox/run", {"sandboxId": sid, "command": "true"}, code=-32008, timeout=scaled(1.5))
    assert e["data"]["limit"] == 2
    for i in slow:
        assert b.reply(i, timeout=scaled(20))["result"]["success"] is True
    assert b.run(sid, "echo free")["stdout"] == "free\n"


# ---- cancellation


def test_cancel_request_ends_a_run_with_request_cancelled(b):
    sid = b.create()
    rid = b.start("sandbox/run", {"sandboxId": sid, "command": "sleep 3; echo done > /tmp/finished"})
    time.sleep(0.5)
    t0 = time.monotonic()
    b.notify("$/cancelRequest", {"id": rid})
    r = b.reply(rid, timeout=scaled(5))
    assert r["error"]["code"] == -32800
    assert time.monotonic() - t0 < scaled(2)
    time.sleep(3.5)
    e = b.error("fs/read", {"sandboxId": sid, "path": "/tmp/finished"}, code=-32005)
    assert e["data"]["path"] == "/tmp/finished", "the cancelled command kept running"


def test_cancel_request_on_the_remote_backend(spawn, server):
    b = spawn(server.bridge_args())
    sid = b.create()
    rid = b.start("sandbox/run", {"sandboxId": sid, "command": "sleep 3; echo done > /tmp/finished"})
    time.sleep(0.5)
    b.notify("$/cancelRequest", {"id": rid})
    assert b.reply(rid, timeout=scaled(5))["error"]["code"] == -32800
    time.sleep(3.5)
    b.error("fs/read", {"sandboxId": sid, "path": "/tmp/finished"}, code=-32005)


def test_cancel_with_a_string_id(b):
    sid = b.create()
    b.start("sandbox/run", {"sandboxId": sid, "command": "sleep 20"}, id="run-1")
    time.sleep(0.3)
    b.notify("$/cancelRequest", {"id": "run-1"})
    assert b.reply("run-1", timeout=scaled(5))["error"]["code"] == -32800


def test_cancel_of_an_unknown_or_finished_id_is_ignored(b):
    r = b.request("server/health")
    b.notify("$/cancelRequest", {"id": r["id"]})
    b.notify("$/cancelRequest", {"id": 424242})
    b.assert_silent(0.5)
    assert b.request("server/health")["result"]["ok"] is True


# ---- lifecycle


def test_initialize_describes_server_and_methods(b):
    r = b.call("initialize", {"processId": None, "rootUri": None, "capabilities": {},
                              "clientInfo": {"name": "pytest"}, "trace": "off"})
    assert r["serverInfo"]["name"] == "opensandbox-bridge"
    assert r["serverInfo"]["version"]
    assert r["capabilities"]["backend"] == "local"
    assert sorted(r["capabilities"]["methods"]) == METHODS


def test_initialize_on_remote_reports_remote_backend(spawn, server):
    b = spawn(server.bridge_args())
    assert b.call("initialize", {})["capabilities"]["backend"] == "remote"


def test_rpc_discover_returns_the_schema_document(b):
    assert b.call("rpc.discover") == OPENRPC


def test_shutdown_returns_null_then_requests_are_invalid(b):
    assert b.call("shutdown") is None
    e = b.error("server/health", code=-32600)
    assert e["message"]
    e = b.error("sandbox/create", {}, code=-32600)


def test_exit_after_shutdown_exits_zero(b):
    b.call("shutdown")
    b.notify("exit")
    assert b.wait_exit() == 0


def test_exit_without_shutdown_exits_one(b):
    b.call("server/health")
    b.notify("exit")
    assert b.wait_exit() == 1


def test_eof_exits_zero(b):
    b.call("server/health")
    b.close_stdin()
    assert b.wait_exit() == 0


def test_eof_with_nothing_sent_exits_zero(b):
    b.close_stdin()
    assert b.wait_exit() == 0


# The bridge may give in-flight requests a grace period after EOF before it cancels them
# (API.md: "its result, or -32800 if it had to be cancelled"); it must stay bounded.
EOF_GRACE = 12.0


def test_eof_with_a_run_in_flight_still_replies_once_and_exits_zero(b):
    sid = b.create()
    rid = b.start("sandbox/run", {"sandboxId": sid, "command": "sleep 60"})
    time.sleep(0.3)
    t0 = time.monotonic()
    b.close_stdin()
    r = b.reply(rid, timeout=scaled(EOF_GRACE + 5))
    assert r["error"]["code"] == -32800, "a 60 s run cannot have finished: %r" % r
    assert b.wait_exit(scaled(10)) == 0
    assert time.monotonic() - t0 < scaled(EOF_GRACE + 5)
    assert len([m for m in b.messages if isinstance(m, dict) and m.get("id") == rid]) == 1


def test_eof_lets_a_short_run_finish_or_cancels_it(b):
    sid = b.create()
    rid = b.start("sandbox/run", {"sandboxId": sid, "command": "sleep 1; echo finished"})
    time.sleep(0.2)
    b.close_stdin()
    r = b.reply(rid, timeout=scaled(EOF_GRACE + 5))
    if "result" in r:
        assert r["result"]["stdout"] == "finished\n"
    else:
        assert r["error"]["code"] == -32800
    assert b.wait_exit(scaled(10)) == 0


def test_eof_on_the_remote_backend_leaves_nothing_running_on_the_server(spawn, server):
    b = spawn(server.bridge_args())
    sid = b.create()
    delay = EOF_GRACE + 3
    rid = b.start("sandbox/run", {"sandboxId": sid,
                                  "command": "sleep %d; echo x > /tmp/after-eof" % delay})
    time.sleep(0.5)
    t0 = time.monotonic()
    b.close_stdin()
    assert b.reply(rid, timeout=scaled(EOF_GRACE + 2))["error"]["code"] == -32800
    assert b.wait_exit(scaled(10)) == 0
    time.sleep(max(0.0, delay + 1.5 - (time.monotonic() - t0)))
    b2 = spawn(server.bridge_args())
    b2.error("fs/read", {"sandboxId": sid, "path": "/tmp/after-eof"}, code=-32005)


# ---- command line


def _cli(args):
    return subprocess.run([harness.BRIDGE] + args, stdin=subprocess.DEVNULL, capture_output=True,
                          timeout=scaled(10))


def test_help_exits_zero_and_describes_the_flags():
    p = _cli(["--help"])
    assert p.returncode == 0
    text = (p.stdout + p.stderr).decode()
    for flag in ("--url", "--framing", "--max-message", "--log-level"):
        assert flag in text


def test_version_exits_zero_and_prints_a_version():
    p = _cli(["--version"])
    assert p.returncode == 0
    assert any(c.isdigit() for c in (p.stdout + p.stderr).decode())


def test_unknown_flag_fails_without_serving():
    p = _cli(["--no-such-flag"])
    assert p.returncode != 0
    assert b"jsonrpc" not in p.stdout
    assert p.stderr


def test_bad_framing_value_fails():
    assert _cli(["--framing", "xml"]).returncode != 0
