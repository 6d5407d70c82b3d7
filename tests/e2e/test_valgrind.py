"""The bridge under valgrind (memcheck, --leak-check=full): the remote backend against a
real opensandboxd, through a short scripted session (initialize, create, run, fs/write,
fs/read, setEnv, setCwd, an error path, a cancelled run, exec sessions (one ended by its
sandbox's destroy, one still running at the exit), destroy, shutdown, exit). Any
memcheck error or definitely/indirectly lost block fails the test (--error-exitcode=99).

The local backend is not run under valgrind: the engine uses openat2(2), which valgrind
3.19 does not know. Skips when valgrind is not installed, or when the bridge under test is
a sanitizer build (ASan and valgrind do not mix)."""
import os
import re
import shutil
import time

import pytest

import harness
from harness import scaled

VALGRIND = shutil.which("valgrind")


@pytest.fixture
def vg_bridge(tracker, server, tmp_path):
    if not VALGRIND:
        pytest.skip("valgrind is not installed (Debian package: valgrind)")
    if "asan" in os.path.basename(os.path.dirname(harness.BRIDGE)) or \
            os.environ.get("ASAN_OPTIONS"):
        pytest.skip("the bridge under test is a sanitizer build; valgrind runs the normal one")
    log = tmp_path / "valgrind.log"
    supp = os.path.join(harness.REPO, "tests", "valgrind.supp")
    vg = [VALGRIND, "--tool=memcheck", "--leak-check=full", "--show-leak-kinds=definite,indirect",
          "--errors-for-leak-kinds=definite,indirect", "--error-exitcode=99",
          "--track-fds=no", "--num-callers=30", "--log-file=%s" % log]
    if os.path.exists(supp):
        vg.append("--suppressions=%s" % supp)
    # harness.Bridge runs [executable] + args: valgrind's flags and the bridge come first.
    b = harness.Bridge(vg[1:] + [harness.BRIDGE] + server.bridge_args(), executable=VALGRIND)
    tracker.bridges.append(b)
    b.vg_log = log
    return b


def test_remote_session_under_valgrind_is_clean(vg_bridge, server):
    b = vg_bridge
    t = scaled(60)  # valgrind is ~20-50x slower
    init = b.call("initialize", {"processId": None, "capabilities": {}}, timeout=t)
    assert init["capabilities"]["backend"] == "remote"
    b.notify("initialized")
    sid = b.call("sandbox/create", {"env": {"A": "1"}}, timeout=t)["sandboxId"]
    r = b.call("sandbox/run", {"sandboxId": sid, "command": "echo $A; echo err >&2; exit 3"},
               timeout=t)
    assert r["stdout"] == "1\n" and r["exitCode"] == 3
    assert b.call("fs/write", {"sandboxId": sid, "path": "a.txt", "content": "h\u00e9llo"},
                  timeout=t)["bytesWritten"] == 6
    assert b.call("fs/read", {"sandboxId": sid, "path": "a.txt"}, timeout=t)["content"] == "h\u00e9llo"
    assert b.call("fs/read", {"sandboxId": sid, "path": "a.txt", "encoding": "base64"},
                  timeout=t)["content"] == harness.b64("h\u00e9llo".encode())
    assert b.call("sandbox/setEnv", {"sandboxId": sid, "env": {"B": "2"}}, timeout=t) is None
    assert b.call("sandbox/setCwd", {"sandboxId": sid, "cwd": "/tmp"}, timeout=t) is None
    r = b.call("sandbox/run", {"sandboxId": sid, "command": "echo $B; pwd"}, timeout=t)
    assert r["stdout"] == "2\n/tmp\n"
    assert b.call("sandbox/get", {"sandboxId": sid}, timeout=t)["sandboxId"] == sid
    # Error paths: an unknown sandbox, a missing file, bad params, an unknown method.
    assert b.error("sandbox/get", {"sandboxId": "nope"}, timeout=t)["code"] == -32001
    assert b.error("fs/read", {"sandboxId": sid, "path": "missing.txt"}, timeout=t)["code"] == -32005
    assert b.error("sandbox/run", {"sandboxId": sid}, timeout=t)["code"] == -32602
    assert b.error("no/such", {}, timeout=t)["code"] == -32601
    # A cancelled run.
    rid = b.start("sandbox/run", {"sandboxId": sid, "command": "sleep 30"})
    time.sleep(scaled(2))
    b.notify("$/cancelRequest", {"id": rid})
    r = b.reply(rid, timeout=t)
    assert r["error"]["code"] == -32800, r
    # An exec session over opensandboxd's Exec stream, and one still running at the exit.
    x = b.call("exec/start", {"sandboxId": sid, "command": "cat", "stdin": True},
               timeout=t)["execId"]
    assert b.call("exec/write", {"execId": x, "data": "ping\n", "eof": True}, timeout=t) is None
    r = b.call("exec/read", {"execId": x, "yieldMs": 30000}, timeout=t)
    assert r["stdout"] == "ping\n" and r["running"] is False and r["exitCode"] == 0, r
    assert b.call("exec/start", {"sandboxId": sid, "command": "sleep 60", "yieldMs": 200},
                  timeout=t)["running"] is True
    sid2 = b.call("sandbox/create", {}, timeout=t)["sandboxId"]
    assert b.call("exec/start", {"sandboxId": sid2, "command": "sleep 60"},
                  timeout=t)["running"] is True
    assert b.call("sandbox/destroy", {"sandboxId": sid}, timeout=t) is None
    assert b.call("shutdown", timeout=t) is None
    b.notify("exit")
    rc = b.wait_exit(timeout=scaled(120))
    text = b.vg_log.read_text(errors="replace")
    summary = [l for l in text.splitlines() if re.search(
        r"ERROR SUMMARY|definitely lost|indirectly lost|possibly lost|still reachable|"
        r"Invalid (read|write)|uninitialised|unaddressable|Unsupported|unhandled", l)]
    print("valgrind:\n" + "\n".join(summary))
    assert rc == 0, "bridge under valgrind exited %r:\n%s" % (rc, text[-6000:])
    m = re.search(r"ERROR SUMMARY: (\d+) errors", text)
    assert m and m.group(1) == "0", text[-6000:]
