"""The harness itself: it must catch what it claims to catch, or every other test could pass
against a broken bridge. A tiny fake bridge (a shell script) misbehaves on purpose."""
import os
import stat

import pytest

import harness


def _fake(tmp_path, body):
    path = tmp_path / "fake-bridge"
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def _run_fake(tmp_path, body, framing="ndjson", method="sandbox/run"):
    b = harness.Bridge([], framing=framing, executable=_fake(tmp_path, body))
    b.start(method, {"sandboxId": "s", "command": "true"}, id=1)
    try:
        b.reply(1, timeout=5)
    except AssertionError:
        pass
    b.close()
    return b.problems()


def test_harness_flags_log_lines_on_stdout(tmp_path):
    p = _run_fake(tmp_path, 'read x; echo "starting up"; echo \'{"jsonrpc":"2.0","id":1,"result":null}\'')
    assert any("not UTF-8 JSON" in x for x in p), p


def test_harness_flags_a_result_that_breaks_the_schema(tmp_path):
    p = _run_fake(tmp_path, 'read x; echo \'{"jsonrpc":"2.0","id":1,"result":{"stdout":"","stderr":"",'
                            '"exitCode":null,"signal":0,"success":true,"truncated":false}}\'')
    assert any("exitCode" in x for x in p), p


def test_harness_flags_extra_reply_members(tmp_path):
    p = _run_fake(tmp_path, 'read x; echo \'{"jsonrpc":"2.0","id":1,"result":null,"x":1}\'', method="shutdown")
    assert any("beyond" in x for x in p), p


def test_harness_flags_error_without_data_type(tmp_path):
    p = _run_fake(tmp_path, 'read x; echo \'{"jsonrpc":"2.0","id":1,"error":{"code":-32001,"message":"m"}}\'')
    assert any("error object" in x for x in p), p


def test_harness_flags_a_sloppy_lsp_header(tmp_path):
    p = _run_fake(tmp_path, 'head -c 20 >/dev/null; printf \'Content-Length:  24\\r\\nContent-Type: x\\r\\n\\r\\n'
                            '{"jsonrpc":"2.0","id":1}\'; cat >/dev/null', framing="lsp")
    assert any("LSP" in x for x in p), p


def test_harness_flags_sanitizer_reports(tmp_path):
    p = _run_fake(tmp_path, 'read x; echo "==1==ERROR: AddressSanitizer: heap-use-after-free" >&2; '
                            'echo \'{"jsonrpc":"2.0","id":1,"result":null}\'', method="shutdown")
    assert any("sanitizer" in x for x in p), p


def test_harness_flags_a_bridge_that_ignores_eof(tmp_path):
    b = harness.Bridge([], executable=_fake(tmp_path, "exec sleep 600"))
    import time
    t0 = time.monotonic()
    harness_wait = harness.scaled
    try:
        harness.scaled = lambda s: 1.0
        b.close()
    finally:
        harness.scaled = harness_wait
    assert any("did not exit" in x for x in b.problems())
    assert time.monotonic() - t0 < 30


def test_harness_accepts_a_well_behaved_reply(tmp_path):
    p = _run_fake(tmp_path, 'read x; echo \'{"jsonrpc":"2.0","id":1,"result":{"stdout":"","stderr":"",'
                            '"exitCode":0,"signal":0,"success":true,"truncated":false}}\'')
    assert p == []
