"""sandbox/run: commands, exit codes, signals, env, cwd, output encoding and limits, on both
backends (the embedded engine, and opensandboxd over HTTP + gRPC)."""
import time

import pytest

from harness import RpcError, scaled


def test_run_echo_prints_hello_and_succeeds(bridge, sandbox):
    r = bridge.run(sandbox, "echo hello")
    assert r == {"stdout": "hello\n", "stderr": "", "exitCode": 0, "signal": 0,
                 "success": True, "truncated": False}


def test_run_argv_passes_arguments_without_a_shell(bridge, sandbox):
    r = bridge.run(sandbox, argv=["/bin/sh", "-c", "printf '%s|' \"$@\"", "sh", "a b", "$HOME", "*"])
    assert r["stdout"] == "a b|$HOME|*|"
    assert r["success"] is True


def test_run_argv_runs_the_program_directly(bridge, sandbox):
    r = bridge.run(sandbox, argv=["/bin/echo", "one", "two  three"])
    assert r["stdout"] == "one two  three\n"


def test_run_command_goes_through_sh(bridge, sandbox):
    r = bridge.run(sandbox, "echo a; echo b >&2; echo c | tr c d")
    assert r["stdout"] == "a\nd\n"
    assert r["stderr"] == "b\n"


def test_run_propagates_exit_code(bridge, sandbox):
    r = bridge.run(sandbox, "echo out; echo err >&2; exit 3")
    assert r["exitCode"] == 3
    assert r["signal"] == 0
    assert r["success"] is False
    assert r["stdout"] == "out\n"
    assert r["stderr"] == "err\n"


def test_run_missing_program_is_a_failed_run_not_an_error(bridge, sandbox):
    r = bridge.run(sandbox, "/no/such/program")
    assert r["exitCode"] == 127
    assert r["success"] is False


def test_run_with_check_fails_with_command_execution_error(bridge, sandbox):
    e = bridge.error("sandbox/run", {"sandboxId": sandbox, "command": "echo out; echo err >&2; exit 7",
                                     "check": True}, code=-32004)
    assert e["data"]["exitCode"] == 7
    assert e["data"]["signal"] == 0
    assert e["data"]["stdout"] == "out\n"
    assert e["data"]["stderr"] == "err\n"


def test_run_with_check_returns_normally_on_success(bridge, sandbox):
    r = bridge.run(sandbox, "echo fine", check=True)
    assert r["stdout"] == "fine\n"
    assert r["success"] is True


def test_run_killed_by_signal_reports_signal_and_exit_code_zero(bridge, sandbox):
    r = bridge.run(sandbox, "kill -9 $$")
    assert r["signal"] == 9
    assert r["exitCode"] == 0
    assert r["success"] is False


def test_run_killed_by_signal_with_check_fails_with_the_signal(bridge, sandbox):
    e = bridge.error("sandbox/run", {"sandboxId": sandbox, "command": "kill -TERM $$", "check": True},
                     code=-32004)
    assert e["data"]["signal"] == 15
    assert e["data"]["exitCode"] == 0


def test_run_sees_env_given_at_create(bridge):
    sid = bridge.create(env={"X": "from-create", "Y": "with space"})
    r = bridge.run(sid, 'echo "$X/$Y"')
    assert r["stdout"] == "from-create/with space\n"


def test_set_env_applies_to_later_runs(bridge, sandbox):
    assert bridge.call("sandbox/setEnv", {"sandboxId": sandbox, "env": {"X": "one"}}) is None
    assert bridge.run(sandbox, "echo $X")["stdout"] == "one\n"


def test_set_env_merges_and_overwrites(bridge):
    sid = bridge.create(env={"A": "a0", "B": "b0"})
    bridge.call("sandbox/setEnv", {"sandboxId": sid, "env": {"B": "b1"}})
    bridge.call("sandbox/setEnv", {"sandboxId": sid, "env": {"C": "c1"}})
    assert bridge.run(sid, 'echo "$A $B $C"')["stdout"] == "a0 b1 c1\n"


def test_run_env_overlays_the_session_env_for_that_run_only(bridge):
    sid = bridge.create(env={"X": "session", "KEEP": "k"})
    r = bridge.run(sid, 'echo "$X $KEEP $NEW"', env={"X": "overlay", "NEW": "n"})
    assert r["stdout"] == "overlay k n\n"
    assert bridge.run(sid, 'echo "$X $KEEP $NEW"')["stdout"] == "session k \n"


def test_run_has_a_usable_path_and_home(bridge, sandbox):
    r = bridge.run(sandbox, 'echo "$HOME"; ls / >/dev/null && echo ok')
    assert r["stdout"] == "/home\nok\n"


def test_set_cwd_changes_where_runs_start(bridge, sandbox):
    assert bridge.call("sandbox/setCwd", {"sandboxId": sandbox, "cwd": "/tmp"}) is None
    assert bridge.run(sandbox, "pwd")["stdout"] == "/tmp\n"


def test_run_cwd_applies_to_that_run_only(bridge, sandbox):
    bridge.call("sandbox/setCwd", {"sandboxId": sandbox, "cwd": "/tmp"})
    assert bridge.run(sandbox, "pwd", cwd="/home")["stdout"] == "/home\n"
    assert bridge.run(sandbox, "pwd")["stdout"] == "/tmp\n"


@pytest.mark.parametrize("cwd", ["", "/"])
def test_run_cwd_empty_or_root_means_the_session_cwd(bridge, sandbox, cwd):
    bridge.call("sandbox/setCwd", {"sandboxId": sandbox, "cwd": "/tmp"})
    assert bridge.run(sandbox, "pwd", cwd=cwd)["stdout"] == "/tmp\n"


def test_run_output_that_is_not_utf8_becomes_replacement_characters(bridge, sandbox):
    r = bridge.run(sandbox, r"printf 'a\377b'; printf '\376c' >&2")
    assert r["stdout"] == "a\ufffdb"
    assert r["stderr"] == "\ufffdc"
    assert r["success"] is True


def test_run_utf8_output_is_kept_as_is(bridge, sandbox):
    r = bridge.run(sandbox, "printf 'h\\303\\251llo \\342\\230\\203'")
    assert r["stdout"] == "h\u00e9llo \u2603"


def test_run_large_output_arrives_whole(bridge, sandbox):
    r = bridge.run(sandbox, "head -c 1048576 /dev/zero | tr '\\0' x")
    assert len(r["stdout"]) == 1048576
    assert set(r["stdout"]) == {"x"}
    assert r["truncated"] is False


def test_run_output_over_max_output_is_truncated(spawn, backend_args):
    b = spawn(backend_args + ["--max-output", "1000"])
    sid = b.create()
    r = b.run(sid, "head -c 5000 /dev/zero | tr '\\0' a")
    assert r["stdout"] == "a" * 1000
    assert r["truncated"] is True
    assert r["success"] is True


def test_run_output_is_truncated_at_a_utf8_boundary(spawn, backend_args):
    b = spawn(backend_args + ["--max-output", "1001"])
    sid = b.create()
    # 800 two-byte characters: 1600 bytes, cut to 1001 -> 500 whole characters.
    r = b.run(sid, "i=0; while [ $i -lt 800 ]; do printf '\\303\\251'; i=$((i+1)); done")
    assert r["truncated"] is True
    assert r["stdout"] == "\u00e9" * 500


def test_run_does_not_read_the_bridges_stdin(bridge, sandbox):
    r = bridge.run(sandbox, "cat; echo done", timeoutMs=int(scaled(10000)))
    assert r["stdout"] == "done\n"
    # The protocol stream is intact afterwards.
    assert bridge.run(sandbox, "echo still")["stdout"] == "still\n"


def test_run_time_limit_ends_a_long_sleep(bridge, sandbox):
    t0 = time.monotonic()
    r = bridge.run(sandbox, "sleep 30", timeoutMs=1000, timeout=scaled(25))
    elapsed = time.monotonic() - t0
    assert r["success"] is False
    assert elapsed < scaled(10), "a 1 s limit took %.1fs" % elapsed


def test_run_time_limit_ends_a_busy_loop(bridge, sandbox):
    t0 = time.monotonic()
    r = bridge.run(sandbox, "while :; do :; done", timeoutMs=1000, timeout=scaled(25))
    assert r["success"] is False
    assert r["signal"] != 0, r
    assert time.monotonic() - t0 < scaled(10)


def test_run_file_size_limit_applies(bridge, sandbox):
    r = bridge.run(sandbox, "head -c 200000 /dev/zero > /tmp/big; echo rc=$?", fsizeKb=64)
    assert "rc=0" not in r["stdout"], r
    size = bridge.run(sandbox, "stat -c %s /tmp/big")["stdout"].strip()
    assert int(size) <= 64 * 1024


def test_run_nofile_limit_applies(bridge, sandbox):
    r = bridge.run(sandbox, "ulimit -n", nofile=32)
    assert r["stdout"] == "32\n"


def test_run_default_limits_match_the_sdk_defaults(bridge, sandbox):
    r = bridge.run(sandbox, "ulimit -n; ulimit -v; ulimit -f; ulimit -t")
    nofile, vmem, fsize, cpu = r["stdout"].split()
    assert nofile == "256"
    assert vmem == str(2097152)
    assert fsize == str(1048576 * 1024 // 512) or fsize == str(1048576)  # dash counts 512-byte blocks
    assert cpu == "300"


def test_runs_in_one_sandbox_share_its_files(bridge, sandbox):
    bridge.run(sandbox, "echo shared > /tmp/s")
    assert bridge.run(sandbox, "cat /tmp/s")["stdout"] == "shared\n"


def test_sandboxes_do_not_see_each_others_files(bridge):
    a = bridge.create()
    b = bridge.create()
    bridge.run(a, "echo mine > /tmp/only-in-a")
    r = bridge.run(b, "cat /tmp/only-in-a")
    assert r["exitCode"] != 0
    assert r["stdout"] == ""


def test_sandbox_tmp_is_not_the_hosts_tmp(bridge, sandbox):
    import os
    name = "osb-e2e-host-probe-%d" % os.getpid()
    bridge.run(sandbox, "echo x > /tmp/%s" % name)
    assert not os.path.exists("/tmp/" + name), "a sandbox wrote into the host's /tmp"


def test_run_with_timeout_does_not_block_other_requests(bridge, sandbox):
    bridge.write_file(sandbox, "/tmp/quick.txt", "quick")
    slow = bridge.start("sandbox/run", {"sandboxId": sandbox, "command": "sleep 2; echo slow"})
    fast = bridge.start("fs/read", {"sandboxId": sandbox, "path": "/tmp/quick.txt"})
    first = bridge.next_message(timeout=scaled(20))
    assert first.get("id") == fast, "the fs/read reply must arrive before the sleep's: %r" % first
    assert first["result"]["content"] == "quick"
    r = bridge.reply(slow, timeout=scaled(20))
    assert r["result"]["stdout"] == "slow\n"


def test_concurrent_runs_overlap(bridge, sandbox):
    t0 = time.monotonic()
    ids = [bridge.start("sandbox/run", {"sandboxId": sandbox, "command": "sleep 1; echo %d" % i})
           for i in range(4)]
    outs = sorted(bridge.reply(i, timeout=scaled(20))["result"]["stdout"] for i in ids)
    assert outs == ["0\n", "1\n", "2\n", "3\n"]
    assert time.monotonic() - t0 < scaled(3.5), "4 one-second runs did not run concurrently"


def test_run_with_check_false_explicitly_returns_failure(bridge, sandbox):
    r = bridge.run(sandbox, "exit 1", check=False)
    assert r["exitCode"] == 1
    assert r["success"] is False


def test_run_exit_code_above_127_is_kept(bridge, sandbox):
    r = bridge.run(sandbox, "exit 200")
    assert r["exitCode"] == 200
    assert r["signal"] == 0


def test_run_error_on_unknown_sandbox_is_not_found(bridge):
    with pytest.raises(RpcError) as ei:
        bridge.run("no-such-sandbox-0000", "true")
    assert ei.value.code == -32001
    assert ei.value.data["sandboxId"] == "no-such-sandbox-0000"


def test_200_pipelined_runs_on_one_sandbox_all_succeed(bridge, sandbox):
    # Runs the API starts wait for room in their session instead of failing with 126
    # because other API runs hold its processes (the 64-process limit is for forks).
    ids = [bridge.start("sandbox/run", {"sandboxId": sandbox, "argv": ["echo", str(n)]})
           for n in range(200)]
    for n, i in enumerate(ids):
        r = bridge.reply(i, timeout=scaled(60))
        assert "result" in r, r
        res = r["result"]
        assert (res["exitCode"], res["signal"], res["stdout"]) == (0, 0, "%d\n" % n), res
