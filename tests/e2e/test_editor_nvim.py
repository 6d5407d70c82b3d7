"""test_editor_nvim.py - the Neovim plugin (editors/nvim) in headless Neovim against the real
bridge, on both backends.

Per backend, one `nvim --headless` runs editors/nvim/tests/test_commands.lua (its own small
Lua test runner: every command, buffer contents, bytes in the sandbox, the Lua API, spawn
failures, a bridge killed mid-session); each Lua test is reported here as its own case.
Separate cases quit Neovim and check that no process outlives it: the bridge's PID is gone
once nvim has exited (also mid-run), the sandboxes the plugin created are destroyed (asked
of the server), and a bridge that ignores shutdown and SIGTERM is killed. Others check that
the API key comes from the environment only and never reaches the plugin's log.
"""
import json
import os
import re
import shutil
import subprocess
import tempfile

import pytest

import harness

NVIM = shutil.which("nvim")
PLUGIN = os.path.join(harness.REPO, "editors", "nvim")
LUA_TESTS = os.path.join(PLUGIN, "tests", "test_commands.lua")
BACKENDS = ["local", "remote"]

with open(LUA_TESTS, encoding="utf-8") as _f:
    LUA_NAMES = re.findall(r"^T\.test\('([a-z0-9_]+)'", _f.read(), re.M)

pytestmark = pytest.mark.skipif(NVIM is None, reason="nvim is not installed (Debian: neovim)")


def nvim_env(extra):
    env = harness.clean_env({"OSB_BRIDGE": harness.BRIDGE,
                             "OSB_TIMEOUT_SCALE": str(harness.SCALE)})
    env.pop("OSB_URL", None)
    env.pop("OSB_GRPC_PORT", None)
    env.update(extra)
    return env


def run_nvim(args, env, timeout):
    argv = [NVIM, "--headless", "-u", os.path.join(PLUGIN, "tests", "init.lua"), "-i", "NONE",
            "-n"] + args
    return subprocess.run(argv, cwd=PLUGIN, env=env, stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          timeout=timeout)


def pid_alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.fixture(scope="module")
def lua_results():
    """backend -> {results: {name: result}, output, measures}; nvim run once per backend."""
    cache = {}

    def get(backend):
        if backend in cache:
            return cache[backend]
        tmp = tempfile.mkdtemp(prefix="osb-nvim-")
        server = None
        try:
            extra = {"OSB_TMP": tmp, "OSB_NVIM_RESULTS": os.path.join(tmp, "results.json")}
            if backend == "remote":
                server = harness.Server()
                extra.update({"OSB_URL": server.url, "OSB_GRPC_PORT": str(server.grpc_port)})
            proc = run_nvim(["-c", "luafile " + LUA_TESTS], nvim_env(extra),
                            timeout=harness.scaled(240))
            output = proc.stdout.decode("utf-8", "replace")
            results, measures = {}, {}
            try:
                with open(extra["OSB_NVIM_RESULTS"], encoding="utf-8") as f:
                    doc = json.load(f)
                results = {r["name"]: r for r in doc["results"]}
                measures = doc["measures"] if isinstance(doc["measures"], dict) else {}
            except (OSError, ValueError):
                pass
            problems = []
            if server is not None:
                problems = server.problems()
            cache[backend] = {"results": results, "output": output, "measures": measures,
                              "rc": proc.returncode, "server_problems": problems}
        finally:
            if server is not None:
                server.stop()
            shutil.rmtree(tmp, ignore_errors=True)
        if cache[backend]["measures"]:
            print("nvim %s measures: %s" % (backend, cache[backend]["measures"]))
        return cache[backend]
    return get


@pytest.mark.parametrize("name", LUA_NAMES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_nvim(lua_results, backend, name):
    run = lua_results(backend)
    r = run["results"].get(name)
    if r is None:
        pytest.fail("Lua test %s did not run (nvim exit %s); output:\n%s"
                    % (name, run["rc"], run["output"][-4000:]), pytrace=False)
    if r["status"] == "skip":
        pytest.skip(r["message"])
    if r["status"] != "pass":
        pytest.fail(r["message"], pytrace=False)
    assert not run["server_problems"], run["server_problems"]


QUIT_SCRIPT = r"""
local osb = require('opensandbox')
osb.setup({ cmd = os.getenv('OSB_CMD'), url = os.getenv('OSB_URL'),
  grpc_port = tonumber(os.getenv('OSB_GRPC_PORT') or ''),
  shutdown_timeout_ms = tonumber(os.getenv('OSB_SHUTDOWN_MS') or '')
    or math.floor(2000 * tonumber(os.getenv('OSB_TIMEOUT_SCALE') or '1')) })
local seq = osb.status.seq
vim.cmd('OpenSandboxRun ' .. (os.getenv('OSB_RUN') or 'echo hi'))
if os.getenv('OSB_NO_WAIT') then
  vim.wait(300)
else
  vim.wait(30000, function() return osb.status.seq > seq end, 5)
end
local f = io.open(os.getenv('OSB_INFO'), 'w')
f:write(vim.json.encode({ pid = osb.client().pid, sandbox = osb._state.sandbox or vim.NIL,
  output = vim.api.nvim_buf_get_lines(require('opensandbox.commands').output_buffer(), 0, -1, false) }))
f:close()
-- Runs after the plugin's VimLeavePre: keep the log of how the bridge was stopped.
vim.api.nvim_create_autocmd('VimLeave', { callback = function()
  local g = io.open(os.getenv('OSB_INFO') .. '.log', 'w')
  g:write(table.concat(require('opensandbox.log').lines(), '\n'))
  g:close()
end })
vim.cmd('qa!')
"""


def quit_nvim(tmp, extra):
    script = os.path.join(tmp, "quit.lua")
    with open(script, "w") as f:
        f.write(QUIT_SCRIPT)
    info = os.path.join(tmp, "info.json")
    env = nvim_env(dict(extra, OSB_INFO=info))
    env.setdefault("OSB_CMD", harness.BRIDGE)
    proc = run_nvim(["-c", "luafile " + script], env, timeout=harness.scaled(60))
    with open(info) as f:
        doc = json.load(f)
    with open(info + ".log") as f:
        doc["log"] = f.read()
    doc["rc"] = proc.returncode
    doc["stdout"] = proc.stdout.decode("utf-8", "replace")
    return doc


@pytest.mark.parametrize("backend", BACKENDS)
def test_nvim_quit_leaves_no_process(backend, start_server, spawn, tmp_path):
    extra = {}
    server = None
    if backend == "remote":
        server = start_server()
        extra = {"OSB_URL": server.url, "OSB_GRPC_PORT": str(server.grpc_port)}
    doc = quit_nvim(str(tmp_path), extra)
    assert doc["rc"] == 0, doc["stdout"]
    assert doc["output"] == ["$ echo hi", "hi", "[exit status 0]"], doc
    pid = doc["pid"]
    assert not pid_alive(pid), "bridge pid %d outlived nvim" % pid
    log = doc["log"]
    assert '"method":"sandbox\\/destroy"' in log, log
    assert '"method":"shutdown"' in log and '"method":"exit"' in log, log
    assert "exited, code 0, signal 0" in log, log
    assert "SIGTERM" not in log and "SIGKILL" not in log, log
    assert not harness.sanitizer_lines(log), log
    if server is not None:
        # The sandbox the plugin created is gone from the server.
        b = spawn(server.bridge_args())
        with pytest.raises(harness.RpcError) as e:
            b.call("sandbox/get", {"sandboxId": doc["sandbox"]})
        assert e.value.code == -32001, e.value


def test_nvim_quit_kills_lingering_bridge(tmp_path):
    # A "bridge" that never answers and ignores SIGTERM: quitting must still end it.
    fake = tmp_path / "stubborn-bridge"
    fake.write_text("#!/bin/sh\ntrap '' TERM\nexec sleep 600\n")
    fake.chmod(0o755)
    doc = quit_nvim(str(tmp_path), {"OSB_CMD": str(fake), "OSB_NO_WAIT": "1",
                                    "OSB_SHUTDOWN_MS": "500"})
    assert doc["rc"] == 0, doc["stdout"]
    pid = doc["pid"]
    assert not pid_alive(pid), "stubborn bridge pid %d outlived nvim" % pid
    assert "SIGKILL" in doc["log"], doc["log"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_nvim_quit_during_run(backend, start_server, tmp_path):
    # Quitting while a command runs: the run is cancelled with its sandbox, the bridge exits
    # cleanly and is gone when nvim is.
    extra = {"OSB_RUN": "echo started; sleep 60", "OSB_NO_WAIT": "1"}
    if backend == "remote":
        server = start_server()
        extra.update({"OSB_URL": server.url, "OSB_GRPC_PORT": str(server.grpc_port)})
    doc = quit_nvim(str(tmp_path), extra)
    assert doc["rc"] == 0, doc["stdout"]
    assert not pid_alive(doc["pid"]), "bridge pid %d outlived nvim" % doc["pid"]
    assert "exited, code 0, signal 0" in doc["log"], doc["log"]
    assert not harness.sanitizer_lines(doc["log"]), doc["log"]


KEY_SCRIPT = r"""
local osb = require('opensandbox')
local notes = {}
vim.notify = function(msg) notes[#notes + 1] = msg end
osb.setup({ cmd = os.getenv('OSB_BRIDGE'), url = os.getenv('OSB_URL'),
  grpc_port = tonumber(os.getenv('OSB_GRPC_PORT')), api_key_env = os.getenv('OSB_KEY_VAR') })
local seq = osb.status.seq
vim.cmd('OpenSandboxRun echo authorised')
vim.wait(30000, function() return osb.status.seq > seq end, 5)
local f = io.open(os.getenv('OSB_INFO'), 'w')
f:write(vim.json.encode({
  output = vim.api.nvim_buf_get_lines(require('opensandbox.commands').output_buffer(), 0, -1, false),
  log = table.concat(require('opensandbox.log').lines(), '\n'),
}))
f:close()
vim.cmd('qa!')
"""


@pytest.mark.parametrize("key_var", ["OPENSANDBOX_API_KEY", "MY_SANDBOX_KEY", None])
def test_nvim_api_key_from_environment(key_var, start_server, tmp_path):
    # The key reaches the bridge from the environment only (under its own name, or another
    # named by api_key_env); it is never on the command line or in the log.
    key = "k3y-" + os.urandom(6).hex()
    server = start_server("--api-key", key)
    script = tmp_path / "key.lua"
    script.write_text(KEY_SCRIPT)
    info = tmp_path / "info.json"
    extra = {"OSB_URL": server.url, "OSB_GRPC_PORT": str(server.grpc_port), "OSB_INFO": str(info),
             "OSB_KEY_VAR": key_var or "MY_SANDBOX_KEY"}
    if key_var:
        extra[key_var] = key
    proc = run_nvim(["-c", "luafile " + str(script)], nvim_env(extra), timeout=harness.scaled(60))
    assert proc.returncode == 0, proc.stdout
    doc = json.loads(info.read_text())
    assert key not in doc["log"], "the API key is in the log"
    if key_var:
        assert doc["output"] == ["$ echo authorised", "authorised", "[exit status 0]"], doc
    else:
        status = doc["output"][-1]
        assert re.match(r"^\[error\] \[[A-Za-z]+Error\] ", doc["output"][1]), doc["output"]
        assert "authorised" not in doc["output"][1:], doc["output"]
        assert status != "[exit status 0]", doc["output"]
