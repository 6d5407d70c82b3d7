"""exec/kill signals the exec's whole process group (API.md, "Exec sessions"): a shell's
children go with it, whatever the signal, on the local backend."""
import os
import time

import pytest

from harness import scaled


def procs_with(marker):
    """Pids of `sleep MARKER` (not of the shell whose command line names it)."""
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open("/proc/%s/cmdline" % pid, "rb") as f:
                    if f.read().endswith(b"sleep\0" + marker.encode() + b"\0"):
                        found.append(int(pid))
            except OSError:
                pass
    return found


def wait_for(pred, timeout):
    deadline = time.monotonic() + scaled(timeout)
    while not pred() and time.monotonic() < deadline:
        time.sleep(0.05)
    return pred()


@pytest.mark.parametrize("sig", [9, 15])
def test_exec_kill_takes_the_shells_children(spawn, sig):
    b = spawn([])
    sid = b.create()
    m1, m2 = "1001.%d%d" % (os.getpid(), sig), "1002.%d%d" % (os.getpid(), sig)
    if sig == 9:
        cmd = "sleep %s & sleep %s" % (m1, m2)  # the brief's case
    else:
        # the shell ignores TERM (its children, started before the trap, do not): only a
        # signal to the whole group ends the sleeps, and then the shell's wait returns
        cmd = "sleep %s & sleep %s & trap '' TERM; wait" % (m1, m2)
    x = b.call("exec/start", {"sandboxId": sid, "command": cmd})["execId"]
    assert wait_for(lambda: len(procs_with(m1)) + len(procs_with(m2)) == 2, 5)
    assert b.call("exec/kill", {"execId": x, "signal": sig}) is None
    r = b.call("exec/read", {"execId": x, "yieldMs": int(scaled(5) * 1000)})
    assert r["running"] is False
    assert wait_for(lambda: not procs_with(m1) and not procs_with(m2), 3), \
        "children of the killed shell survive"
