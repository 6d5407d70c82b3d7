"""sandbox/*: create, destroy, list, get, and what clients see for unknown or destroyed
sandboxes; process/*: background processes."""
import time

import pytest

from harness import scaled


def test_create_returns_an_id_and_a_preview_url_or_null(bridge):
    r = bridge.call("sandbox/create", {})
    assert isinstance(r["sandboxId"], str) and r["sandboxId"]
    assert r["previewUrl"] is None or isinstance(r["previewUrl"], str)


def test_each_create_makes_a_new_sandbox(bridge):
    ids = {bridge.create() for _ in range(3)}
    assert len(ids) == 3


def test_destroy_returns_null_and_the_sandbox_is_gone(bridge, sandbox):
    assert bridge.call("sandbox/destroy", {"sandboxId": sandbox}) is None
    e = bridge.error("sandbox/run", {"sandboxId": sandbox, "command": "true"}, code=-32001)
    assert e["data"]["sandboxId"] == sandbox


def test_destroying_twice_fails_with_not_found(bridge, sandbox):
    bridge.call("sandbox/destroy", {"sandboxId": sandbox})
    e = bridge.error("sandbox/destroy", {"sandboxId": sandbox}, code=-32001)
    assert e["data"]["sandboxId"] == sandbox


def test_destroy_ends_running_commands(bridge, sandbox):
    run = bridge.start("sandbox/run", {"sandboxId": sandbox, "command": "sleep 30"})
    time.sleep(0.5)
    t0 = time.monotonic()
    bridge.call("sandbox/destroy", {"sandboxId": sandbox})
    r = bridge.reply(run, timeout=scaled(15))
    assert time.monotonic() - t0 < scaled(10)
    if "result" in r:
        assert r["result"]["success"] is False
    else:
        assert r["error"]["code"] in (-32001, -32000, -32800)


@pytest.mark.parametrize("method,params", [
    ("sandbox/destroy", {}),
    ("sandbox/get", {}),
    ("sandbox/run", {"command": "true"}),
    ("sandbox/setEnv", {"env": {"A": "b"}}),
    ("sandbox/setCwd", {"cwd": "/tmp"}),
    ("process/status", {}),
    ("process/killAll", {}),
    ("process/start", {"command": "sleep 1", "port": 0}),
])
def test_sandbox_methods_on_an_unknown_sandbox_fail_with_not_found(bridge, method, params):
    e = bridge.error(method, dict(params, sandboxId="nonexistent-sandbox-id"), code=-32001)
    assert e["data"]["sandboxId"] == "nonexistent-sandbox-id"


def test_list_shows_created_sandboxes_and_not_destroyed_ones(bridge):
    a = bridge.create()
    b = bridge.create()
    ids = {s["sandboxId"] for s in bridge.call("sandbox/list", {})["sandboxes"]}
    assert {a, b} <= ids
    bridge.call("sandbox/destroy", {"sandboxId": a})
    ids = {s["sandboxId"] for s in bridge.call("sandbox/list", {})["sandboxes"]}
    assert b in ids and a not in ids


def test_get_describes_env_and_cwd(bridge):
    sid = bridge.create(env={"K": "v"})
    bridge.call("sandbox/setCwd", {"sandboxId": sid, "cwd": "/tmp"})
    bridge.call("sandbox/setEnv", {"sandboxId": sid, "env": {"L": "w"}})
    info = bridge.call("sandbox/get", {"sandboxId": sid})
    assert info["sandboxId"] == sid
    assert info["env"].get("K") == "v" and info["env"].get("L") == "w"
    assert info["cwd"] == "/tmp"
    assert info["ageSecs"] >= 0 and info["idleSecs"] >= 0
    assert isinstance(info["status"], str) and info["status"]


def test_server_health_is_ok_with_the_backend_name(bridge, backend):
    r = bridge.call("server/health")
    assert r["ok"] is True
    assert r["backend"] == backend
    assert r["latencyMs"] >= 0


# ---- process/*


def _wait_for(pred, seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(0.1)
    return pred()


def test_process_start_runs_in_background_with_its_port(bridge, sandbox):
    r = bridge.call("process/start", {"sandboxId": sandbox,
                                      "command": 'echo "$PORT" > /tmp/port; echo started; sleep 30',
                                      "port": 0})
    assert r["pid"] > 0
    assert 0 < r["port"] <= 65535
    got = _wait_for(lambda: bridge.request("fs/read", {"sandboxId": sandbox, "path": "/tmp/port"})
                    .get("result"), scaled(10))
    assert got and got["content"].strip() == str(r["port"])
    status = bridge.call("process/status", {"sandboxId": sandbox})
    assert {"pid": r["pid"], "alive": True} in status["processes"]
    log = _wait_for(lambda: "started" in bridge.call("process/status", {"sandboxId": sandbox})["log"],
                    scaled(10))
    assert log, "process/status log never showed the process output"
    killed = bridge.call("process/killAll", {"sandboxId": sandbox})
    assert r["pid"] in killed["killed"]
    assert killed["total"] >= 1
    after = _wait_for(lambda: all(not p["alive"] for p in
                                  bridge.call("process/status", {"sandboxId": sandbox})["processes"]
                                  if p["pid"] == r["pid"]), scaled(10))
    assert after


def test_process_start_argv_form(bridge, sandbox):
    r = bridge.call("process/start", {"sandboxId": sandbox,
                                      "argv": ["/bin/sh", "-c", "echo argv-ok > /tmp/argv; sleep 30"],
                                      "port": 0})
    got = _wait_for(lambda: bridge.request("fs/read", {"sandboxId": sandbox, "path": "/tmp/argv"})
                    .get("result"), scaled(10))
    assert got and got["content"] == "argv-ok\n"
    bridge.call("process/killAll", {"sandboxId": sandbox})
    assert r["pid"] > 0


def test_kill_all_with_nothing_running_kills_nothing(bridge, sandbox):
    assert bridge.call("process/killAll", {"sandboxId": sandbox}) == {"killed": [], "total": 0}
