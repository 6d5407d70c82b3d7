"""The sandbox holds: escapes a command or a file call could try, attempted for real against
opensandboxd over its gRPC and HTTP channels. Host files (reached by path, by `..`, by
symlinks a command plants, by /proc's root and cwd links), other sessions, the kernel's
knobs, privileged syscalls, special files handed to ReadFile, and every per-run limit.
Each test asserts what a client sees and, where an escape would leave a trace on the host,
looks at the host as well. No test trusts a single channel: file escapes go through gRPC
ReadFile/WriteFile, HTTP files/read|write|list and a command alike.

Also home of `Sdk`, a small client in the SDK's shape (HTTP through http.client, so that raw
bodies and any headers can be sent; gRPC through python3-grpcio with a 64 MiB receive limit),
reused by test_server_lifecycle.py."""
import base64
import http.client
import json
import os
import subprocess
import time
import uuid
from urllib.parse import quote

import pytest

from harness import scaled

grpc = pytest.importorskip("grpc", reason="python3-grpcio is not installed")
from test_sdk_compat import SDK_DEFAULTS, SERVICE, pb  # noqa: E402,F401  (pb: a fixture)

MiB = 1 << 20


# --------------------------------------------------------------------------------------------
# helpers shared with test_server_lifecycle.py


class Sdk:
    """HTTP + gRPC client of one opensandboxd, with optional bearer key."""

    def __init__(self, server, pb, api_key=None):
        self.server = server
        self.pb = pb
        self.api_key = api_key
        self.channel = grpc.insecure_channel(
            server.grpc_target, options=[("grpc.max_receive_message_length", 64 * MiB),
                                         ("grpc.max_send_message_length", 64 * MiB)])
        self.calls = {}
        self.req_cls = {}
        for name, req, resp in SERVICE:
            self.req_cls[name] = getattr(pb, req)
            self.calls[name] = self.channel.unary_unary(
                "/sandbox.SandboxService/" + name,
                request_serializer=getattr(pb, req).SerializeToString,
                response_deserializer=getattr(pb, resp).FromString)

    def close(self):
        self.channel.close()

    def metadata(self, key=None):
        key = self.api_key if key is None else key
        return [("authorization", "Bearer " + key)] if key else None

    # ---- gRPC

    def grpc(self, name, timeout=None, key=None, **fields):
        return self.calls[name](self.req_cls[name](**fields),
                                timeout=timeout or scaled(30), metadata=self.metadata(key))

    def grpc_future(self, name, timeout=None, **fields):
        return self.calls[name].future(self.req_cls[name](**fields),
                                       timeout=timeout or scaled(60), metadata=self.metadata())

    def run(self, sid, cmd, timeout=None, **kw):
        fields = dict(SDK_DEFAULTS)
        fields.update(kw)
        return self.grpc("RunCommand", timeout=timeout, session_id=sid,
                         command=["/bin/sh", "-c", cmd], **fields)

    def run_future(self, sid, cmd, timeout=None, **kw):
        fields = dict(SDK_DEFAULTS)
        fields.update(kw)
        return self.grpc_future("RunCommand", timeout=timeout, session_id=sid,
                                command=["/bin/sh", "-c", cmd], **fields)

    def read(self, sid, path, timeout=None):
        return self.grpc("ReadFile", timeout=timeout, session_id=sid, path=path)

    def write(self, sid, path, content):
        return self.grpc("WriteFile", session_id=sid, path=path, content=content)

    # ---- HTTP

    def http(self, method, path, body=None, raw=None, headers=None, key=None, timeout=None):
        """One request on a fresh connection; returns (status, body bytes). body is sent as
        JSON, raw as given; key overrides the client's bearer key ("" sends none)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.server.http_port,
                                          timeout=timeout or scaled(30))
        try:
            data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
            hdrs = {}
            if data is not None:
                hdrs["Content-Type"] = "application/json"
            key = self.api_key if key is None else key
            if key:
                hdrs["Authorization"] = "Bearer " + key
            hdrs.update(headers or {})
            conn.request(method, path, body=data, headers=hdrs)
            r = conn.getresponse()
            return r.status, r.read()
        finally:
            conn.close()

    def create(self):
        status, body = self.http("POST", "/sessions", {})
        assert status == 200, (status, body)
        return json.loads(body)["session_id"]

    def http_read(self, sid, path):
        """(status, decoded content or None) of GET files/read."""
        status, body = self.http("GET", "/sessions/%s/files/read?path=%s" % (sid, quote(path, safe="")))
        if status != 200:
            return status, None
        return status, base64.b64decode(json.loads(body)["content"])

    def http_write(self, sid, path, content):
        return self.http("POST", "/sessions/%s/files/write" % sid,
                         {"path": path, "content": base64.b64encode(content).decode()})

    def background(self, sid, cmd):
        status, body = self.http("POST", "/sessions/%s/background" % sid,
                                 {"command": ["/bin/sh", "-c", cmd], "port": 0})
        assert status == 200, (status, body)
        return json.loads(body)


def unique_token():
    """A number no other process on the host has in its command line: `sleep TOKEN` runs
    (a long time) and can be found from the host by it."""
    n = uuid.uuid4().int
    return "%d.%06d" % (5000 + n % 1000, (n >> 20) % 1000000)


def host_pids_with(token):
    """PIDs of host processes whose command line contains token."""
    out = []
    needle = token.encode()
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == os.getpid():
            continue
        try:
            with open("/proc/%s/cmdline" % d, "rb") as f:
                if needle in f.read():
                    out.append(int(d))
        except OSError:
            continue
    return out


def wait_until(pred, timeout, step=0.05):
    """Poll pred until it returns something true or timeout passes; returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() > deadline:
            return v
        time.sleep(step)


@pytest.fixture
def sdk(server, pb):
    c = Sdk(server, pb)
    yield c
    c.close()


@pytest.fixture
def marker():
    """Secret files on the host, in /tmp and /root, that no sandbox may read."""
    name = "osb-host-marker-" + uuid.uuid4().hex
    secret = b"HOST-SECRET-" + uuid.uuid4().hex.encode()
    paths = ["/tmp/" + name, "/root/" + name]
    for p in paths:
        with open(p, "wb") as f:
            f.write(secret)
    yield name, secret
    for p in paths:
        try:
            os.unlink(p)
        except OSError:
            pass


def assert_not_leaked(secret, what, data):
    if isinstance(data, str):
        data = data.encode("utf-8", "replace")
    assert secret not in (data or b""), "host secret leaked through %s: %r" % (what, data[:200])


def assert_reads_fail_or_hide(sdk, sid, secret, paths):
    """Each path, through gRPC ReadFile and HTTP files/read, fails or shows no secret."""
    for p in paths:
        r = sdk.read(sid, p)
        assert_not_leaked(secret, "ReadFile %r" % p, r.content)
        status, content = sdk.http_read(sid, p)
        assert_not_leaked(secret, "files/read %r (status %d)" % (p, status), content)


# --------------------------------------------------------------------------------------------
# host files


def test_commands_cannot_read_host_files_by_path(sdk, marker):
    name, secret = marker
    sid = sdk.create()
    r = sdk.run(sid, "cat /tmp/%s /root/%s; ls -a /tmp /root; cat /tmp/* /root/*" % (name, name))
    assert_not_leaked(secret, "cat", r.stdout + r.stderr)
    assert name not in r.stdout, "the sandbox lists the host's marker: %r" % r.stdout
    assert r.exit_code != 0


def test_file_calls_cannot_climb_out_with_dotdot(sdk, marker):
    name, secret = marker
    sid = sdk.create()
    paths = []
    for d in ("tmp", "root"):
        paths += ["../../../../../../%s/%s" % (d, name), "/../../../../%s/%s" % (d, name),
                  "/tmp/../../../../../%s/%s" % (d, name), "tmp/../../../../../../%s/%s" % (d, name),
                  "/home/../../../../../../../../%s/%s" % (d, name), "./../../%s/%s" % (d, name)]
    assert_reads_fail_or_hide(sdk, sid, secret, paths)
    for d in ("../../../../../../root", "/../../../tmp", "/home/../../../../root"):
        status, body = sdk.http("GET", "/sessions/%s/files/list?path=%s" % (sid, d))
        assert name.encode() not in body, "files/list %r shows the host's marker: %r" % (d, body[:300])


def test_symlinks_planted_in_the_sandbox_stay_inside_it(sdk, marker):
    name, secret = marker
    sid = sdk.create()
    r = sdk.run(sid, " && ".join([
        "ln -s /tmp/%s /tmp/l-abs-tmp" % name,
        "ln -s /root/%s /tmp/l-abs-root" % name,
        "ln -s ../../../../../../../tmp /tmp/d-rel-tmp",
        "ln -s ../../../../../../../root /tmp/d-rel-root",
        "ln -s / /tmp/d-slash",
        "ln -s /root /tmp/d-abs-root",
        "mkdir -p /home/a/b",
        "ln -s ../../../../../../../.. /home/a/b/up",
        "ln -s /tmp/d-rel-root /tmp/chain"]))
    assert r.exit_code == 0, r.stderr
    paths = ["/tmp/l-abs-tmp", "/tmp/l-abs-root", "/tmp/d-rel-tmp/" + name,
             "/tmp/d-rel-root/" + name, "/tmp/d-slash/root/" + name, "/tmp/d-slash/tmp/" + name,
             "/tmp/d-abs-root/" + name, "/home/a/b/up/tmp/" + name, "/home/a/b/up/root/" + name,
             "/tmp/chain/" + name, "/tmp/d-rel-tmp/../root/" + name]
    assert_reads_fail_or_hide(sdk, sid, secret, paths)
    r = sdk.run(sid, "cat %s; ls -a /tmp/d-rel-root /tmp/d-abs-root /home/a/b/up/root" % " ".join(paths))
    assert_not_leaked(secret, "cat through symlinks", r.stdout + r.stderr)
    assert name not in r.stdout
    for d in ("/tmp/d-rel-root", "/tmp/d-abs-root", "/home/a/b/up/tmp", "/tmp/chain"):
        status, body = sdk.http("GET", "/sessions/%s/files/list?path=%s" % (sid, d))
        assert name.encode() not in body, "files/list %s shows the host's marker" % d


def test_proc_root_and_cwd_links_lead_nowhere_outside(sdk, server, marker):
    name, secret = marker
    sid = sdk.create()
    foreign = [os.getpid(), server.proc.pid, 1]
    cmd = ("for p in /proc/[0-9]* /proc/self /proc/thread-self %s; do "
           "cat $p/root/tmp/%s $p/root/root/%s $p/cwd/%s $p/cwd/../../root/%s; "
           "ls -a $p/root/root $p/root/tmp; done"
           % (" ".join("/proc/%d" % p for p in foreign), name, name, name, name))
    r = sdk.run(sid, cmd)
    assert_not_leaked(secret, "/proc links in a command", r.stdout + r.stderr)
    assert name not in r.stdout
    paths = []
    for p in ["1", "self", "thread-self"] + [str(p) for p in foreign]:
        paths += ["/proc/%s/root/tmp/%s" % (p, name), "/proc/%s/root/root/%s" % (p, name),
                  "/proc/%s/cwd/../../../root/%s" % (p, name)]
    assert_reads_fail_or_hide(sdk, sid, secret, paths)


def test_write_file_through_planted_symlinks_never_touches_the_host(sdk, marker):
    name, secret = marker
    target = "osb-host-target-" + uuid.uuid4().hex
    sid = sdk.create()
    r = sdk.run(sid, " && ".join([
        "ln -s /tmp/%s /tmp/w-new" % target,
        "ln -s /tmp/%s /tmp/w-old" % name,
        "ln -s /root/%s /tmp/w-old-root" % name,
        "ln -s ../../../../../../../tmp /tmp/wd-tmp",
        "ln -s ../../../../../../../root /tmp/wd-root",
        "ln -s / /tmp/wd-slash"]))
    assert r.exit_code == 0, r.stderr
    paths = ["/tmp/w-new", "/tmp/w-old", "/tmp/w-old-root", "/tmp/wd-tmp/" + target,
             "/tmp/wd-tmp/" + name, "/tmp/wd-root/" + name, "/tmp/wd-root/" + target,
             "/tmp/wd-slash/root/" + name, "/tmp/wd-slash/tmp/" + target,
             "../../../../../../tmp/" + target, "/../../../../root/" + name,
             "/proc/1/root/tmp/" + target, "/proc/1/root/root/" + name,
             "/proc/self/root/tmp/" + target, "/tmp/wd-tmp/sub/dir/" + target]
    for p in paths:
        sdk.write(sid, p, b"PWNED")
        sdk.http_write(sid, p, b"PWNED")
    E = sdk.pb.BulkFileEntry
    sdk.grpc("WriteFiles", session_id=sid, files=[E(path=p, content=b"PWNED") for p in paths])
    sdk.http("POST", "/sessions/%s/files/write-bulk" % sid,
             {"files": [{"path": p, "content": base64.b64encode(b"PWNED").decode()} for p in paths]})
    for host in ("/tmp/" + target, "/root/" + target, "/tmp/sub"):
        assert not os.path.exists(host), "a write in the sandbox created %s on the host" % host
    for host in ("/tmp/" + name, "/root/" + name):
        with open(host, "rb") as f:
            assert f.read() == secret, "a write in the sandbox changed %s on the host" % host


def test_etc_shadow_is_not_readable(sdk):
    sid = sdk.create()
    r = sdk.run(sid, "cat /etc/shadow")
    assert "root:" not in r.stdout, "a command reads the host's /etc/shadow: %r" % r.stdout[:80]
    rd = sdk.read(sid, "/etc/shadow")
    assert b"root:" not in rd.content, "ReadFile returns the host's /etc/shadow"
    status, content = sdk.http_read(sid, "/etc/shadow")
    assert b"root:" not in (content or b""), "files/read returns the host's /etc/shadow"


# --------------------------------------------------------------------------------------------
# read-only system, privileged syscalls


@pytest.fixture
def host_probe_files():
    """Files created on the host under /etc and /usr: the sandbox sees them (read-only)."""
    tag = uuid.uuid4().hex
    paths = ["/etc/osb-ro-probe-" + tag, "/usr/osb-ro-probe-" + tag]
    for p in paths:
        with open(p, "w") as f:
            f.write("original\n")
    yield tag, paths
    for p in paths:
        try:
            os.unlink(p)
        except OSError:
            pass


def test_system_dirs_are_read_only(sdk, host_probe_files):
    tag, probes = host_probe_files
    sid = sdk.create()
    # the sandbox does see the host's /etc and /usr (else the refusals below prove nothing)
    r = sdk.run(sid, "cat " + " ".join(probes))
    assert r.stdout == "original\n" * 2, (r.stdout, r.stderr)
    new = ["/%s/osb-ro-new-%s" % (d, tag) for d in ("usr", "etc", "bin", "sbin", "lib", "usr/bin")]
    for p in probes:
        r = sdk.run(sid, "echo PWNED > %s" % p)
        assert r.exit_code != 0, "overwriting %s in the sandbox succeeded" % p
        r = sdk.run(sid, "rm -f %s" % p)
        assert r.exit_code != 0, "removing %s in the sandbox succeeded" % p
        assert sdk.write(sid, p, b"PWNED\n").success is False, "WriteFile %s succeeded" % p
        status, _ = sdk.http_write(sid, p, b"PWNED\n")
        assert status != 200, "files/write %s answered 200" % p
    for p in new:
        r = sdk.run(sid, "touch %s" % p)
        assert r.exit_code != 0, "creating %s in the sandbox succeeded" % p
        assert sdk.write(sid, p, b"x").success is False, "WriteFile %s succeeded" % p
    r = sdk.run(sid, "mkdir /usr/osb-dir-%s || mkdir /etc/osb-dir-%s" % (tag, tag))
    assert r.exit_code != 0
    for p in probes:
        with open(p) as f:
            assert f.read() == "original\n", "%s changed on the host" % p
    for p in new + ["/usr/osb-dir-" + tag, "/etc/osb-dir-" + tag]:
        assert not os.path.exists(p), "%s appeared on the host" % p


def test_kernel_knobs_under_proc_are_read_only(sdk):
    sid = sdk.create()
    # each write is harmless even if it went through (same value back, 'h' = sysrq help)
    for cmd in ["cat /proc/sys/kernel/hostname > /proc/sys/kernel/hostname",
                "cat /proc/sys/vm/swappiness > /proc/sys/vm/swappiness",
                "echo h > /proc/sysrq-trigger"]:
        r = sdk.run(sid, cmd)
        assert r.exit_code != 0, "%r succeeded in the sandbox" % cmd


@pytest.mark.parametrize("cmd", [
    "mkdir -p /tmp/m && mount -t tmpfs none /tmp/m",
    "mount --bind /tmp /home",
    "mount -o remount,rw /usr",
    "/usr/sbin/chroot /tmp /bin/true",
    "python3 -c 'import os; os.chroot(\"/tmp\")'",
    "unshare --mount true",
    "unshare --pid --fork true",
    "unshare --net true",
    "unshare --ipc true",
    "unshare --uts sh -c 'hostname \"$(hostname)\"'",
    "unshare --user --map-root-user --mount mount -t tmpfs none /tmp",
    "unshare --user --mount mount -t tmpfs none /tmp",
    "mknod /tmp/sda b 8 0",
    "mknod /tmp/mem c 1 1",
    "python3 -c 'import os; os.mknod(\"/tmp/kmsg\", 0o20600, os.makedev(1, 11))'",
    "hostname \"$(hostname)\"",  # the same name: harmless should it ever succeed
    "python3 -c 'import os; os.setuid(0); os.setgroups([])'",
], ids=lambda c: c.split("&&")[-1].strip()[:40])
def test_privileged_operations_fail_inside(sdk, cmd):
    sid = sdk.create()
    before = sdk.run(sid, "cat /proc/self/mountinfo").stdout
    r = sdk.run(sid, cmd)
    assert "not found" not in r.stderr, "the tool is missing, the test proves nothing: %r" % r.stderr
    assert r.exit_code != 0 or r.signal != 0, "%r succeeded: %r %r" % (cmd, r.stdout, r.stderr)
    assert sdk.run(sid, "cat /proc/self/mountinfo").stdout == before, "the mount table changed"


def test_commands_have_no_capabilities(sdk):
    sid = sdk.create()
    r = sdk.run(sid, "grep -E '^(CapEff|CapPrm|CapBnd|CapAmb|NoNewPrivs)' /proc/self/status")
    fields = dict(l.split(":\t") for l in r.stdout.splitlines())
    assert int(fields["CapEff"], 16) == 0, r.stdout
    assert int(fields["CapPrm"], 16) == 0, r.stdout
    assert int(fields["CapBnd"], 16) == 0, r.stdout
    assert fields.get("NoNewPrivs") == "1", r.stdout


# --------------------------------------------------------------------------------------------
# processes and other sessions


def test_proc_shows_only_the_sessions_own_processes(sdk, server):
    sid = sdk.create()
    r = sdk.run(sid, "ls /proc | grep -c '^[0-9]'; "
                     "for p in /proc/[0-9]*; do tr '\\0' ' ' < $p/cmdline; echo; done; "
                     "kill -0 %d; echo server=$?; kill -0 %d; echo test=$?"
                     % (server.proc.pid, os.getpid()))
    lines = r.stdout.splitlines()
    count = int(lines[0])
    assert 1 <= count <= 8, "the sandbox sees %d processes:\n%s" % (count, r.stdout)
    assert "opensandboxd" not in r.stdout and "pytest" not in r.stdout, r.stdout
    assert "server=0" not in lines and "test=0" not in lines, "host processes are signalable: %r" % lines


def test_sessions_cannot_see_each_others_files_or_processes(sdk):
    a = sdk.create()
    b = sdk.create()
    token = unique_token()
    assert sdk.write(a, "/tmp/only-in-a", b"a's file").success
    bg = sdk.background(a, "sleep " + token)
    try:
        ps = "cat /proc/[0-9]*/cmdline | tr '\\0' ' '"
        seen_a = wait_until(lambda: token in sdk.run(a, ps).stdout, scaled(5))
        assert seen_a, "session a does not see its own background process"
        assert token not in sdk.run(b, ps).stdout, "session b sees a's process"
        r = sdk.run(b, "ls -a /tmp; cat /tmp/only-in-a; kill -9 %d; echo kill=$?" % bg["pid"])
        assert "only-in-a" not in r.stdout and "a's file" not in r.stdout, r.stdout
        assert "kill=0" not in r.stdout
        assert sdk.read(b, "/tmp/only-in-a").error != ""
        assert sdk.http_read(b, "/tmp/only-in-a")[0] == 404
        assert sdk.read(a, "/tmp/only-in-a").content == b"a's file"
        assert token in sdk.run(a, ps).stdout, "b's kill reached a's process"
    finally:
        sdk.http("DELETE", "/sessions/%s/background" % a)


# --------------------------------------------------------------------------------------------
# special files through ReadFile


@pytest.mark.parametrize("setup,path", [
    ("mkfifo /tmp/fifo", "/tmp/fifo"),
    ("mkfifo /tmp/fifo; (sleep 30 > /tmp/fifo &)", "/tmp/fifo"),
    ("true", "/dev/zero"),
    ("true", "/dev/urandom"),
    ("true", "/dev/random"),
    ("mkdir -p /tmp/dir", "/tmp/dir"),
], ids=["fifo", "fifo-with-writer", "dev-zero", "dev-urandom", "dev-random", "directory"])
def test_reading_a_special_file_fails_promptly(sdk, setup, path):
    sid = sdk.create()
    assert sdk.run(sid, setup, time_ms=5000).exit_code == 0
    t0 = time.monotonic()
    r = sdk.read(sid, path, timeout=scaled(15))
    took = time.monotonic() - t0
    assert r.error != "" and r.content == b"", (r.error, r.content[:50])
    assert took < scaled(5), "ReadFile %s took %.1fs" % (path, took)
    t0 = time.monotonic()
    status, _ = sdk.http_read(sid, path)
    assert status != 200 and time.monotonic() - t0 < scaled(5), status
    assert sdk.run(sid, "echo alive").stdout == "alive\n"


def test_reading_a_file_over_max_file_fails_without_crashing(start_server, pb):
    s = start_server("--max-file", "1M")
    sdk = Sdk(s, pb)
    try:
        sid = sdk.create()
        r = sdk.run(sid, "head -c 2M /dev/zero > /tmp/big && head -c 1000 /dev/urandom > /tmp/small"
                         " && truncate -s 900M /tmp/sparse")
        assert r.exit_code == 0, r.stderr
        for p in ("/tmp/big", "/tmp/sparse"):
            t0 = time.monotonic()
            rd = sdk.read(sid, p)
            assert rd.error != "" and rd.content == b"", (p, rd.error)
            assert time.monotonic() - t0 < scaled(5)
            status, _ = sdk.http_read(sid, p)
            assert status != 200, (p, status)
        assert len(sdk.read(sid, "/tmp/small").content) == 1000
        assert sdk.http("GET", "/health")[0] == 200
    finally:
        sdk.close()


# --------------------------------------------------------------------------------------------
# per-run limits


def timed_run(sdk, sid, cmd, **kw):
    t0 = time.monotonic()
    r = sdk.run(sid, cmd, **kw)
    return r, time.monotonic() - t0


def test_wall_timeout_ends_a_run_with_signal_9(sdk):
    sid = sdk.create()
    r, took = timed_run(sdk, sid, "sleep 100", time_ms=1000)
    assert (r.exit_code, r.signal) == (0, 9), (r.exit_code, r.signal, r.stderr)
    assert 0.9 <= took < 1 + scaled(3), "a 1 s run took %.1fs" % took


def test_wall_timeout_also_ends_what_the_command_left_behind(sdk):
    sid = sdk.create()
    token = unique_token()
    r, took = timed_run(sdk, sid, "sleep %s & sleep 100" % token, time_ms=1000)
    assert r.signal == 9 and took < 1 + scaled(3)
    assert wait_until(lambda: not host_pids_with(token), scaled(3)), \
        "the run's background child outlived its timeout: %r" % host_pids_with(token)
    assert sdk.run(sid, "echo next").stdout == "next\n"


def test_cpu_limit_ends_a_busy_loop(sdk):
    sid = sdk.create()
    assert sdk.run(sid, "ulimit -t", time_ms=3000).stdout == "3\n"
    r, took = timed_run(sdk, sid, "while :; do :; done", time_ms=1000)
    assert r.signal in (9, 24), (r.exit_code, r.signal)
    assert took < 1 + scaled(4), "a 1 s busy loop took %.1fs" % took


def test_memory_limit_makes_big_allocations_fail(sdk):
    sid = sdk.create()
    assert sdk.run(sid, "ulimit -v", mem_kb=262144).stdout == "262144\n"
    r = sdk.run(sid, "python3 -c 'b = bytearray(16 << 20); print(\"small ok\"); "
                     "c = bytearray(1 << 30); print(\"big ok\")'", mem_kb=262144)
    assert "small ok" in r.stdout, (r.stdout, r.stderr)
    assert "big ok" not in r.stdout and "MemoryError" in r.stderr, (r.stdout, r.stderr)
    assert r.exit_code != 0


def test_file_size_limit_stops_big_writes(sdk):
    sid = sdk.create()
    r = sdk.run(sid, "head -c 1M /dev/zero > /tmp/f; echo rc=$?; stat -c %s /tmp/f", fsize_kb=64)
    lines = r.stdout.split()
    assert lines[0] != "rc=0", r.stdout
    assert lines[0] == "rc=%d" % (128 + 25) or "File too large" in r.stderr, (r.stdout, r.stderr)
    assert int(lines[1]) <= 64 * 1024, "the file grew to %s bytes" % lines[1]
    r = sdk.run(sid, "head -c 1M /dev/zero > /tmp/f", fsize_kb=64)
    assert r.signal == 25 or r.exit_code != 0, (r.exit_code, r.signal)


def test_nofile_limit_caps_open_files(sdk):
    sid = sdk.create()
    assert sdk.run(sid, "ulimit -n", nofile=20).stdout == "20\n"
    r = sdk.run(sid, "python3 -c 'import os\n"
                     "fds = []\n"
                     "try:\n"
                     "    for i in range(200): fds.append(os.open(\"/dev/null\", os.O_RDONLY))\n"
                     "except OSError as e: print(\"failed at\", len(fds), e.errno)'", nofile=20)
    words = r.stdout.split()
    assert words[:2] == ["failed", "at"], (r.stdout, r.stderr)
    assert int(words[2]) <= 20 and int(words[3]) == 24, r.stdout  # EMFILE


def test_process_count_is_capped_and_the_host_is_unaffected(sdk):
    sid = sdk.create()
    fut = sdk.run_future(sid, "for i in $(seq 100); do sleep 2 & done; wait", time_ms=10000)
    r = sdk.run(sid, "python3 -c 'import os, time\n"
                     "n = 0\n"
                     "try:\n"
                     "    for i in range(200):\n"
                     "        if os.fork() == 0:\n"
                     "            time.sleep(2); os._exit(0)\n"
                     "        n += 1\n"
                     "except OSError as e: print(\"fork failed after\", n, e.errno)\n"
                     "else: print(\"forked\", n)'", time_ms=10000)
    shell = fut.result(timeout=scaled(20))
    assert shell.exit_code != 0 and "fork" in shell.stderr.lower(), (shell.exit_code, shell.stderr)
    words = r.stdout.split()
    assert words[:3] == ["fork", "failed", "after"], (r.stdout, r.stderr)
    assert int(words[3]) < 64, r.stdout
    # the host still forks freely, and the session recovers once its processes end
    assert all(subprocess.run(["/bin/true"]).returncode == 0 for _ in range(5))
    ok = wait_until(lambda: sdk.run(sid, "echo ok").stdout == "ok\n", scaled(10), step=0.3)
    assert ok, "the session stayed unable to run anything"


def test_kill_9_of_the_shell_reports_signal_9(sdk):
    sid = sdk.create()
    r = sdk.run(sid, "echo before; kill -9 $$; echo after")
    assert (r.stdout, r.exit_code, r.signal) == ("before\n", 0, 9)


def vm_hwm_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def test_output_over_max_output_is_cut_and_the_server_stays_small(start_server, pb):
    s = start_server("--max-output", "64K")
    sdk = Sdk(s, pb)
    try:
        sid = sdk.create()
        sdk.run(sid, "true")
        before = vm_hwm_kib(s.proc.pid)
        r, took = timed_run(sdk, sid, "yes abcdefgh | head -c 200M; yes ERR | head -c 50M >&2",
                            time_ms=60000)
        grown = vm_hwm_kib(s.proc.pid) - before
        assert r.exit_code == 0 and r.signal == 0
        assert 60000 <= len(r.stdout) <= 64 * 1024, len(r.stdout)
        assert r.stdout.startswith("abcdefgh\n")
        assert 60000 <= len(r.stderr) <= 64 * 1024, len(r.stderr)
        # the wire has no truncated flag: stderr says what was cut
        assert r.stderr.endswith("[opensandbox: stdout and stderr cut at 65536 bytes; "
                                 "the rest was discarded]\n"), r.stderr[-200:]
        assert grown < 64 * 1024, "the server's peak memory grew by %d KiB for 64 KiB kept" % grown
        status, body = sdk.http("POST", "/sessions/%s/run" % sid,
                                {"command": ["/bin/sh", "-c", "yes | head -c 10M"]})
        assert status == 200 and len(json.loads(body)["stdout"]) <= 64 * 1024
    finally:
        sdk.close()


def test_ten_megabytes_on_each_stream_arrive_whole(sdk):
    sid = sdk.create()
    # all of stderr first, then stdout: a server draining one pipe at a time deadlocks here
    r = sdk.run(sid, "head -c 10M /dev/zero | tr '\\0' e >&2; head -c 10M /dev/zero | tr '\\0' o",
                timeout=scaled(60))
    assert (r.exit_code, r.signal) == (0, 0)
    assert len(r.stdout) == 10 * MiB and r.stdout == "o" * (10 * MiB)
    assert len(r.stderr) == 10 * MiB and r.stderr == "e" * (10 * MiB)


def test_invalid_utf8_output_arrives_as_valid_utf8(sdk):
    sid = sdk.create()
    bad = r"ok\377\376|\342\202|\300\257|\355\240\200|\360\237\230|end"
    r = sdk.run(sid, "printf '%s'; printf '%s' >&2" % (bad, bad))
    for text in (r.stdout, r.stderr):
        assert text.startswith("ok") and text.endswith("|end"), text
        assert "\ufffd" in text
        assert all(not ("\ud800" <= ch <= "\udfff") for ch in text)
        text.encode("utf-8")
    status, body = sdk.http("POST", "/sessions/%s/run" % sid,
                            {"command": ["/bin/sh", "-c", "printf '%s'" % bad]})
    assert status == 200
    out = json.loads(body.decode("utf-8"))["stdout"]
    assert out.startswith("ok") and out.endswith("|end") and "\ufffd" in out


def test_valid_multibyte_text_survives_pipe_chunk_boundaries(sdk):
    sid = sdk.create()
    r = sdk.run(sid, "head -c 65535 /dev/zero | tr '\\0' a; i=0; while [ $i -lt 20000 ]; do "
                     "printf '\\342\\202\\254\\360\\237\\230\\200'; i=$((i+1)); done")
    assert r.stdout == "a" * 65535 + "\u20ac\U0001F600" * 20000


def test_strings_with_nul_bytes_are_refused_not_cut_short(sdk):
    # a C string ends at the first NUL: "/tmp/a\0b" must not quietly become "/tmp/a"
    sid = sdk.create()
    assert sdk.write(sid, "/tmp/real", b"real file").success

    def refused(method, **kw):
        """The call was refused: INVALID_ARGUMENT for the malformed request, or an in-band
        failure (success=false / a non-empty error)."""
        try:
            reply = sdk.grpc(method, **kw)
        except grpc.RpcError as e:
            return e.code() == grpc.StatusCode.INVALID_ARGUMENT
        return getattr(reply, "success", True) is False or getattr(reply, "error", "") != ""

    assert refused("WriteFile", session_id=sid, path="/tmp/a\x00b", content=b"x"), \
        "WriteFile of a path with a NUL succeeded"
    assert sdk.read(sid, "/tmp/a").error != "", "WriteFile \"/tmp/a\\0b\" wrote /tmp/a"
    assert refused("ReadFile", session_id=sid, path="/tmp/real\x00.txt"), \
        "ReadFile \"/tmp/real\\0.txt\" read /tmp/real"
    status, _ = sdk.http("GET", "/sessions/%s/files/read?path=/tmp/real%%00.txt" % sid)
    assert status != 200, "files/read?path=/tmp/real%00.txt read /tmp/real"
    with pytest.raises(grpc.RpcError) as ei:
        sdk.grpc("RunCommand", session_id=sid, command=["/bin/echo", "x\x00y"])
    assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    ok = True
    try:
        ok = sdk.grpc("SetEnv", session_id=sid, env={"A\x00B": "v"}).success
    except grpc.RpcError as e:
        ok = e.code() != grpc.StatusCode.INVALID_ARGUMENT
    assert not ok or "A=v" not in sdk.run(sid, "env").stdout.split("\n"), \
        "SetEnv of key \"A\\0B\" set A"


# --------------------------------------------------------------------------------------------
# working directories


def test_relative_cwds_with_dotdot_stay_inside(sdk, marker):
    name, secret = marker
    sid = sdk.create()
    root_listing = sdk.run(sid, "ls -a /").stdout
    assert sdk.grpc("SetCwd", session_id=sid, cwd="../../..").success in (True, False)
    r = sdk.run(sid, "pwd; ls -a; cat tmp/%s root/%s ../../tmp/%s" % (name, name, name))
    assert_not_leaked(secret, "a command in cwd ../../..", r.stdout)
    pwd = r.stdout.splitlines()[0] if r.stdout else ""
    assert pwd.startswith("/"), r.stdout
    if pwd == "/":
        assert r.stdout[2:].startswith(root_listing), "cwd / lists something else than /"
    for cwd in ("../../../..", "../../../../tmp", "/../../../../root", "tmp/../../../.."):
        r = sdk.run(sid, "pwd; ls -a; cat %s ../../../tmp/%s" % (name, name), cwd=cwd)
        assert_not_leaked(secret, "a command in cwd %r" % cwd, r.stdout)
        assert name not in r.stdout, (cwd, r.stdout)
    status, _ = sdk.http("POST", "/sessions/%s/cwd" % sid, {"cwd": "../../../../../root"})
    r = sdk.run(sid, "pwd; cat %s" % name)
    assert_not_leaked(secret, "a command after cwd ../../../../../root over HTTP", r.stdout)
