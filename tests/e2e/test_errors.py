"""What a client sees when things go wrong: invalid params (-32602 naming the field), an
unreachable server (-32003), server authorization, configuration from flags, environment
and initializationOptions."""
import pytest

from harness import closed_port, scaled


@pytest.mark.parametrize("params,field", [
    ({"command": "true"}, "sandboxId"),
    ({"sandboxId": 5, "command": "true"}, "sandboxId"),
    ({"sandboxId": "", "command": "true"}, "sandboxId"),
    ({"sandboxId": "S", "command": 5}, "command"),
    ({"sandboxId": "S", "argv": []}, "argv"),
    ({"sandboxId": "S", "argv": [1, 2]}, "argv"),
    ({"sandboxId": "S", "argv": "echo"}, "argv"),
    ({"sandboxId": "S", "command": "true", "timeoutMs": 0}, "timeoutMs"),
    ({"sandboxId": "S", "command": "true", "timeoutMs": -5}, "timeoutMs"),
    ({"sandboxId": "S", "command": "true", "timeoutMs": "10"}, "timeoutMs"),
    ({"sandboxId": "S", "command": "true", "timeoutMs": 1.5}, "timeoutMs"),
    ({"sandboxId": "S", "command": "true", "memKb": "big"}, "memKb"),
    ({"sandboxId": "S", "command": "true", "fsizeKb": -1}, "fsizeKb"),
    ({"sandboxId": "S", "command": "true", "nofile": True}, "nofile"),
    ({"sandboxId": "S", "command": "true", "env": {"X": 1}}, "env"),
    ({"sandboxId": "S", "command": "true", "env": ["X=1"]}, "env"),
    ({"sandboxId": "S", "command": "true", "cwd": 7}, "cwd"),
    ({"sandboxId": "S", "command": "true", "check": "yes"}, "check"),
])
def test_run_with_invalid_params_names_the_field(bridge, params, field):
    e = bridge.error("sandbox/run", params, code=-32602)
    assert field in e["message"], "message %r should name %r" % (e["message"], field)


@pytest.mark.parametrize("field,value", [
    ("nofile", 2 ** 64), ("nofile", 2 ** 64 - 1), ("nofile", 2 ** 63 - 1), ("timeoutMs", 10 ** 30),
    ("memKb", 2 ** 200), ("fsizeKb", -(2 ** 70)), ("timeoutMs", -(2 ** 63)),
])
def test_integer_past_its_range_is_invalid_however_large(bridge, sandbox, field, value):
    # json-c saturates big integers: the bridge must refuse them, not clamp and run.
    e = bridge.error("sandbox/run", {"sandboxId": sandbox, "command": "touch /tmp/ran",
                                     field: value}, code=-32602)
    assert field in e["message"], e
    e = bridge.error("fs/read", {"sandboxId": sandbox, "path": "/tmp/ran"})
    assert e["code"] == -32005, e


def test_run_with_both_command_and_argv_is_invalid(bridge, sandbox):
    e = bridge.error("sandbox/run", {"sandboxId": sandbox, "command": "true", "argv": ["true"]},
                     code=-32602)
    assert "command" in e["message"] or "argv" in e["message"]


def test_run_with_neither_command_nor_argv_is_invalid(bridge, sandbox):
    e = bridge.error("sandbox/run", {"sandboxId": sandbox}, code=-32602)
    assert "command" in e["message"] or "argv" in e["message"]


@pytest.mark.parametrize("method,params,field", [
    ("sandbox/create", {"env": "X=1"}, "env"),
    ("sandbox/create", {"env": {"X": None}}, "env"),
    ("sandbox/destroy", {}, "sandboxId"),
    ("sandbox/get", {"sandboxId": None}, "sandboxId"),
    ("sandbox/setEnv", {"sandboxId": "S"}, "env"),
    ("sandbox/setEnv", {"sandboxId": "S", "env": {"A": False}}, "env"),
    ("sandbox/setCwd", {"sandboxId": "S"}, "cwd"),
    ("sandbox/setCwd", {"sandboxId": "S", "cwd": ["/tmp"]}, "cwd"),
    ("fs/write", {"sandboxId": "S", "path": "/tmp/x"}, "content"),
    ("fs/write", {"sandboxId": "S", "content": "x"}, "path"),
    ("fs/write", {"sandboxId": "S", "path": 1, "content": "x"}, "path"),
    ("fs/read", {"sandboxId": "S"}, "path"),
    ("fs/writeMany", {"sandboxId": "S"}, "files"),
    ("fs/writeMany", {"sandboxId": "S", "files": [{"content": "x"}]}, "path"),
    ("fs/list", {"sandboxId": "S"}, "path"),
    ("process/start", {"sandboxId": "S", "command": "x", "port": 70000}, "port"),
    ("process/start", {"sandboxId": "S", "command": "x", "port": "80"}, "port"),
])
def test_methods_with_invalid_params_name_the_field(bridge, method, params, field):
    e = bridge.error(method, params, code=-32602)
    assert field in e["message"], "message %r should name %r" % (e["message"], field)


def test_unknown_method_is_method_not_found(bridge):
    e = bridge.error("sandbox/teleport", {}, code=-32601)
    assert "sandbox/teleport" in e["message"]


def test_unreachable_server_fails_with_connection_error_naming_the_url(spawn):
    port = closed_port()
    url = "http://127.0.0.1:%d" % port
    b = spawn(["--url", url, "--grpc-port", str(closed_port()), "--request-timeout-ms", "5000"])
    e = b.error("sandbox/create", {}, code=-32003, timeout=scaled(20))
    assert "127.0.0.1:%d" % port in e["data"]["url"]


def test_unreachable_grpc_port_fails_runs_with_connection_error(spawn, server):
    gport = closed_port()
    # --transport grpc: with the default (auto) the run would succeed over HTTP instead.
    b = spawn(["--url", server.url, "--grpc-port", str(gport), "--request-timeout-ms", "5000",
               "--transport", "grpc"])
    sid = b.create()
    e = b.error("sandbox/run", {"sandboxId": sid, "command": "true"}, code=-32003, timeout=scaled(40))
    assert str(gport) in e["data"]["url"]


def test_health_of_an_unreachable_server_is_not_ok_rather_than_an_error(spawn):
    url = "http://127.0.0.1:%d" % closed_port()
    b = spawn(["--url", url, "--grpc-port", str(closed_port()), "--request-timeout-ms", "5000"])
    r = b.call("server/health", timeout=scaled(20))
    assert r["ok"] is False
    assert r["backend"] == "remote"
    assert r.get("url") in (None, url, url + "/")


def test_server_stopped_mid_session_fails_with_connection_error(spawn, start_server):
    s = start_server()
    b = spawn(s.bridge_args() + ["--request-timeout-ms", "5000"])
    sid = b.create()
    s.stop()
    e = b.error("sandbox/run", {"sandboxId": sid, "command": "true"}, code=-32003, timeout=scaled(40))
    assert e["data"]["url"]


def test_api_key_is_sent_to_the_server(spawn, start_server):
    s = start_server("--api-key", "sekrit-key")
    b = spawn(s.bridge_args() + ["--api-key", "sekrit-key"])
    sid = b.create()
    assert b.run(sid, "echo authorized")["stdout"] == "authorized\n"
    b.write_file(sid, "/tmp/k", "v")
    assert b.read_file(sid, "/tmp/k")["content"] == "v"
    assert "sekrit-key" not in b.stderr_text()


def test_missing_api_key_is_refused_by_the_server(spawn, start_server):
    s = start_server("--api-key", "sekrit-key")
    b = spawn(s.bridge_args())
    r = b.request("sandbox/create", {})
    assert "error" in r, "a server with --api-key accepted a request without it: %r" % r
    assert r["error"]["code"] == -32000


def test_url_from_the_environment_selects_the_remote_backend(spawn, server):
    b = spawn([], env={"OPENSANDBOX_URL": server.url,
                       "OPENSANDBOX_GRPC_PORT": str(server.grpc_port)})
    r = b.call("initialize", {})
    assert r["capabilities"]["backend"] == "remote"
    sid = b.create()
    assert b.run(sid, "echo via-env")["stdout"] == "via-env\n"


def test_initialization_options_override_flags(spawn, server):
    b = spawn(["--url", "http://127.0.0.1:%d" % closed_port()])
    r = b.call("initialize", {"initializationOptions": {"baseUrl": server.url,
                                                        "grpcPort": server.grpc_port}})
    assert r["capabilities"]["backend"] == "remote"
    sid = b.create()
    assert b.run(sid, "echo via-init")["stdout"] == "via-init\n"


def test_empty_initialization_options_change_nothing(spawn, server):
    b = spawn(server.bridge_args())
    r = b.call("initialize", {"processId": 1234, "rootUri": None, "capabilities": {},
                              "clientInfo": {"name": "test", "version": "1"},
                              "initializationOptions": {}})
    assert r["capabilities"]["backend"] == "remote"
    sid = b.create()
    assert b.run(sid, "echo same")["stdout"] == "same\n"


def test_initialization_options_with_wrong_types_are_invalid_params(spawn):
    b = spawn([])
    e = b.error("initialize", {"initializationOptions": {"grpcPort": "fifty"}}, code=-32602)
    assert "grpcPort" in e["message"]


def test_cli_grpc_port_flag_is_used(spawn, server):
    # With the default gRPC port (50051, nothing there) runs could not work; the flag fixes it.
    b = spawn(["--url", server.url, "--grpc-port", str(server.grpc_port)])
    sid = b.create()
    assert b.run(sid, "echo grpc")["stdout"] == "grpc\n"
