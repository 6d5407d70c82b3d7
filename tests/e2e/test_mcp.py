"""MCP mode (API.md, "MCP mode"). The official MCP SDKs drive the real bridge in
tests/mcp (node's test runner; packages installed there by `make deps` with `npm ci`): one
run per backend, the remote one against an opensandboxd started here. The rest checks, with
the harness, what no SDK would send: that the first-message switch leaves an LSP initialize
to JSON-RPC, and that bad input in MCP mode gets MCP errors and nothing else on stdout."""
import json
import os
import shutil
import subprocess
import time

import pytest

import harness
from harness import scaled

MCP_DIR = os.path.join(harness.REPO, "tests", "mcp")


def node_or_skip():
    node = shutil.which("node")
    if not node:
        pytest.skip("node is needed for the MCP SDK tests (Debian: nodejs)")
    for pkg in ("@modelcontextprotocol/sdk", "@modelcontextprotocol/client"):
        if not os.path.isdir(os.path.join(MCP_DIR, "node_modules", pkg)):
            pytest.fail("%s is not installed in tests/mcp: run `make deps` (npm ci)" % pkg)
    return node


def run_node_tests(node, extra_env):
    env = dict(os.environ)
    env["OSB_BRIDGE"] = harness.BRIDGE
    env.update(extra_env)
    p = subprocess.run([node, "--test", "--test-reporter=spec", "mcp.test.mjs"], cwd=MCP_DIR,
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=scaled(240), env=env)
    out = (p.stdout + p.stderr).decode("utf-8", "replace")
    print(out[-6000:])
    assert p.returncode == 0, "MCP SDK tests failed:\n" + out[-8000:]
    assert "# fail 0" in out or "ℹ fail 0" in out, out[-3000:]


def test_mcp_sdks_local_backend():
    run_node_tests(node_or_skip(), {})


def test_mcp_sdks_remote_backend(start_server):
    node = node_or_skip()
    server = start_server()
    run_node_tests(node, {"OSB_MCP_URL": server.url, "OSB_MCP_GRPC_PORT": str(server.grpc_port)})


def test_mcp_sdks_remote_backend_without_the_extension(start_server):
    """Against a server without opensandboxd's Exec (the public one; --no-ext here): no exec
    tools, and sandbox_run waits for the end."""
    node = node_or_skip()
    server = start_server("--no-ext")
    run_node_tests(node, {"OSB_MCP_URL": server.url, "OSB_MCP_GRPC_PORT": str(server.grpc_port),
                          "OSB_MCP_EXEC": "0"})


def test_lsp_initialize_stays_json_rpc(spawn):
    """An LSP initialize (processId, capabilities, rootUri, no protocolVersion) is JSON-RPC."""
    for framing in ("lsp", "ndjson"):
        b = spawn(framing=framing)
        res = b.call("initialize", {"processId": os.getpid(), "rootUri": None,
                                    "capabilities": {"workspace": {}},
                                    "clientInfo": {"name": "editor"}})
        assert "sandbox/run" in res["capabilities"]["methods"]
        assert "protocolVersion" not in res
        sid = b.create()
        assert b.run(sid, "echo still json-rpc")["stdout"] == "still json-rpc\n"


def test_tools_list_first_is_json_rpc(spawn):
    """A request without MCP's markers stays JSON-RPC, even when named like an MCP method."""
    b = spawn()
    err = b.error("tools/list", code=-32601)
    assert "tools/list" in err["message"] or err["code"] == -32601


def raw_session(lines, args=()):
    p = subprocess.Popen([harness.BRIDGE] + list(args), stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=harness.clean_env())
    out, err = p.communicate(("\n".join(lines) + "\n").encode(), timeout=scaled(30))
    msgs = [json.loads(line) for line in out.decode().splitlines() if line]
    for m in msgs:
        assert m["jsonrpc"] == "2.0"
    assert not harness.sanitizer_lines(err.decode("utf-8", "replace"))
    return p.returncode, msgs, err.decode("utf-8", "replace")


def test_mcp_bad_input_gets_mcp_errors():
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                       "clientInfo": {"name": "t", "version": "1"}}}
    meta = {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {}}
    lines = [json.dumps(init), "not json", "[1,2]",
             json.dumps({"jsonrpc": "2.0", "id": 2, "method": "resources/list"}),
             json.dumps({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
                         "params": {"name": "sandbox_run", "arguments": "echo"}}),
             json.dumps({"jsonrpc": "2.0", "id": 4, "method": "tools/list",
                         "params": {"_meta": {"io.modelcontextprotocol/protocolVersion": "1999-01-01",
                                              "io.modelcontextprotocol/clientCapabilities": {}}}}),
             json.dumps({"jsonrpc": "2.0", "id": 5, "method": "tools/list",
                         "params": {"_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28"}}}),
             json.dumps({"jsonrpc": "2.0", "id": 6, "method": "ping", "params": {"_meta": meta}}),
             json.dumps({"jsonrpc": "2.0", "method": "notifications/cancelled",
                         "params": {"requestId": 99}}),
             json.dumps({"jsonrpc": "2.0", "id": 7, "method": "ping"})]
    code, msgs, err = raw_session(lines)
    assert code == 0, err[-2000:]
    by_id = {m.get("id"): m for m in msgs}
    errors_without_id = [m["error"]["code"] for m in msgs if m.get("id") is None]
    assert sorted(errors_without_id) == [-32700, -32600]
    assert by_id[2]["error"]["code"] == -32601
    assert by_id[3]["result"]["isError"] is True
    assert by_id[4]["error"]["code"] == -32022
    assert "2026-07-28" in by_id[4]["error"]["data"]["supported"]
    assert by_id[4]["error"]["data"]["requested"] == "1999-01-01"
    assert by_id[5]["error"]["code"] == -32602  # no clientCapabilities
    assert by_id[6]["error"]["code"] == -32601  # no ping in the stateless era
    assert by_id[7]["result"] == {}
    assert len(msgs) == 9


def test_mcp_first_request_with_meta_switches():
    """A 2026-era host may open the process it keeps with tools/call: _meta switches."""
    meta = {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {}}
    call = {"jsonrpc": "2.0", "id": "a", "method": "tools/call",
            "params": {"name": "sandbox_run", "arguments": {"command": "echo first"},
                       "_meta": meta}}
    t0 = time.monotonic()
    code, msgs, err = raw_session([json.dumps(call)])
    assert code == 0, err[-2000:]
    assert time.monotonic() - t0 < scaled(10)
    assert len(msgs) == 1
    res = msgs[0]["result"]
    assert res["resultType"] == "complete"
    assert res["structuredContent"]["stdout"] == "first\n"
    assert res["_meta"]["io.modelcontextprotocol/serverInfo"]["name"] == "opensandbox-bridge"
