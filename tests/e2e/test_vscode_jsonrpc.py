"""A real editor client library against the bridge: VS Code's vscode-jsonrpc (Node), LSP
framing over stdio, driving initialize, sandbox/create, sandbox/run, fs/write + fs/read, a
cancel through a CancellationTokenSource, an error reply, shutdown and exit
(tests/e2e/node/client.js). The package is installed into tests/e2e/node/node_modules with
`npm ci` when missing; the test skips only when node or npm is not installed."""
import json
import os
import shutil
import subprocess

import pytest

import harness
from harness import scaled

NODE_DIR = os.path.join(harness.HERE, "node")


def ensure_node_modules():
    node = shutil.which("node")
    npm = shutil.which("npm")
    if not node or not npm:
        pytest.skip("node and npm are needed for the vscode-jsonrpc client (Debian: nodejs, npm)")
    if os.path.isdir(os.path.join(NODE_DIR, "node_modules", "vscode-jsonrpc")):
        return node
    cmd = [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"]
    if not os.path.exists(os.path.join(NODE_DIR, "package-lock.json")):
        cmd[1] = "install"
    try:
        p = subprocess.run(cmd, cwd=NODE_DIR, stdin=subprocess.DEVNULL, capture_output=True,
                           timeout=300)
    except subprocess.TimeoutExpired:
        pytest.fail("npm ci in %s timed out" % NODE_DIR)
    assert p.returncode == 0, "npm ci failed in %s:\n%s" % (
        NODE_DIR, (p.stdout + p.stderr).decode("utf-8", "replace")[-3000:])
    return node


def run_client(node, args):
    p = subprocess.run([node, os.path.join(NODE_DIR, "client.js"), harness.BRIDGE] + args,
                       cwd=NODE_DIR, stdin=subprocess.DEVNULL, capture_output=True,
                       timeout=scaled(120), env=harness.clean_env())
    out = p.stdout.decode("utf-8", "replace").strip().splitlines()
    assert out, "client printed nothing (exit %d); stderr:\n%s" % (
        p.returncode, p.stderr.decode("utf-8", "replace")[-3000:])
    res = json.loads(out[-1])
    assert p.returncode == 0 and res["ok"], json.dumps(res, indent=1)[-4000:]
    san = harness.sanitizer_lines(res.get("stderr", ""))
    assert not san, "bridge stderr has sanitizer reports:\n" + "\n".join(san[:20])
    return res["steps"]


def check_steps(s, backend):
    assert s["initialize"]["serverInfo"]["name"] == "opensandbox-bridge"
    assert s["initialize"]["backend"] == backend
    assert s["run"] == {"stdout": "hi from vscode-jsonrpc\n", "exitCode": 0, "success": True}
    assert s["fs"]["roundTrip"] is True and s["fs"]["bytesWritten"] == s["fs"]["size"] == 18
    assert s["cancel"]["isResponseError"] is True and s["cancel"]["code"] == -32800, s["cancel"]
    assert s["cancel"]["elapsedMs"] < scaled(15000), s["cancel"]
    assert s["afterCancel"]["stdout"] == "after\n"
    assert s["notFound"] == {"code": -32001, "type": "SandboxNotFoundError"}
    assert s["shutdown"]["result"] is None
    assert s["exit"] == {"code": 0, "signal": None}
    assert s["problems"] == []


def test_vscode_jsonrpc_client_local_backend():
    node = ensure_node_modules()
    check_steps(run_client(node, []), "local")


def test_vscode_jsonrpc_client_remote_backend(start_server):
    node = ensure_node_modules()
    server = start_server()
    check_steps(run_client(node, server.bridge_args()), "remote")
