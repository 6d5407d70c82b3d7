"""test_rootless.py - the engine as an ordinary user (uid/gid 65534): rootless mode.

opensandboxd and the bridge's local backend are started through
`setpriv --reuid=65534 --regid=65534 --clear-groups`, without --unsafe-no-isolation: the
engine must build each session in a user namespace of its own (uid 0 inside, the host's
65534 outside) and keep its isolation: its own root, a host file the test made with mode
0600 out of reach of commands and file calls alike. Skipped, saying why, where setpriv is
missing, the tests do not run as root, or uid 65534 cannot create a user namespace.
"""
import base64
import json
import os
import re
import select
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

import harness

NOBODY = 65534
SETPRIV = shutil.which("setpriv")
AS_NOBODY = [SETPRIV or "setpriv", "--reuid=%d" % NOBODY, "--regid=%d" % NOBODY,
             "--clear-groups"]


def _skip_reason():
    if not SETPRIV:
        return "setpriv (util-linux) is not installed"
    if os.geteuid() != 0:
        return "needs root to switch to uid %d" % NOBODY
    unshare = shutil.which("unshare")
    if not unshare:
        return "unshare (util-linux) is not installed: cannot probe user namespaces"
    r = subprocess.run(AS_NOBODY + [unshare, "-Urm", "true"], capture_output=True, timeout=20)
    if r.returncode != 0:
        return ("user namespaces are unavailable to uid %d here: %s"
                % (NOBODY, r.stderr.decode("utf-8", "replace").strip()))
    return None


SKIP = _skip_reason()
pytestmark = pytest.mark.skipif(SKIP is not None, reason=SKIP or "")


@pytest.fixture
def host_secret():
    """A host file only root may read (mode 0600), removed afterwards."""
    fd, path = tempfile.mkstemp(prefix="osb-rootless-secret-")
    os.write(fd, b"HOST-SECRET")
    os.close(fd)
    os.chmod(path, 0o600)
    yield path
    os.unlink(path)


class NobodyServer:
    """opensandboxd as uid 65534 on free ports, with a state dir that user owns."""

    def __init__(self, args=()):
        self.tmp = tempfile.mkdtemp(prefix="osbd-rootless-")
        os.chown(self.tmp, NOBODY, NOBODY)
        self.state_dir = os.path.join(self.tmp, "state")
        self.stderr_file = tempfile.TemporaryFile(prefix="osbd-rootless-stderr-")
        argv = AS_NOBODY + [harness.SERVER, "--port", "0", "--grpc-port", "0",
                            "--bind", "127.0.0.1", "--state-dir", self.state_dir] + list(args)
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=self.stderr_file, env=harness.clean_env())
        deadline = time.monotonic() + harness.scaled(20)
        line = b""
        fd = self.proc.stdout.fileno()
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0:
                self.stop()
                raise RuntimeError("no ready line in time; stderr:\n" + self.stderr_text())
            r, _, _ = select.select([fd], [], [], left)
            if not r:
                continue
            chunk = os.read(fd, 1)
            if not chunk:
                self.stop()
                raise RuntimeError("opensandboxd exited before ready; stderr:\n"
                                   + self.stderr_text())
            line += chunk
        m = harness.Server.READY.match(line)
        assert m, line
        self.url = "http://127.0.0.1:%d" % int(m.group(2))
        self.http_port, self.grpc_port = int(m.group(2)), int(m.group(4))

    def stderr_text(self):
        self.stderr_file.seek(0)
        return self.stderr_file.read().decode("utf-8", "replace")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(harness.scaled(15))
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
                return "hung after SIGTERM"
        return self.proc.returncode

    def close(self):
        rc = self.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)
        return rc

    def http(self, method, path, body=None, query=None):
        url = self.url + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=harness.TIMEOUT) as resp:
                raw = resp.read()
                return resp.status, (json.loads(raw) if raw else None)
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                return e.code, json.loads(raw)
            except ValueError:
                return e.code, raw.decode("utf-8", "replace")

    def run(self, sid, command):
        status, out = self.http("POST", "/sessions/%s/run" % sid, {"command": command})
        assert status == 200, (status, out)
        return out


@pytest.fixture
def nobody_server():
    s = NobodyServer()
    yield s
    rc = s.close()
    text = s.stderr_text()
    assert rc == 0, "opensandboxd (uid %d) did not exit 0: %r\n%s" % (NOBODY, rc, text)
    assert not harness.sanitizer_lines(text), text


def test_server_as_ordinary_user_runs_rootless_and_isolated(nobody_server, host_secret):
    s = nobody_server
    status, body = s.http("POST", "/sessions", {})
    assert status in (200, 201), (status, body)
    sid = body["session_id"]

    out = s.run(sid, ["echo", "hello"])
    assert out["stdout"] == "hello\n" and out["exit_code"] == 0, out

    # root inside its user namespace, without capabilities
    out = s.run(sid, ["sh", "-c", "id -u; id -g; grep CapEff /proc/self/status"])
    assert out["stdout"] == "0\n0\nCapEff:\t0000000000000000\n", out

    # files: the API writes, the command reads, and back
    content = base64.b64encode(b"from the api\n").decode()
    status, body = s.http("POST", "/sessions/%s/files/write" % sid,
                          {"path": "/home/a.txt", "content": content})
    assert status == 200, (status, body)
    out = s.run(sid, ["sh", "-c", "cat /home/a.txt; echo from sh > /tmp/b.txt"])
    assert out["stdout"] == "from the api\n", out
    status, body = s.http("GET", "/sessions/%s/files/read" % sid, query={"path": "/tmp/b.txt"})
    assert status == 200, (status, body)
    assert base64.b64decode(body["content"]) == b"from sh\n"

    # isolation: the host's 0600 file is out of reach, by path, `..` or a planted symlink
    out = s.run(sid, ["sh", "-c", "cat %s; ln -s / /tmp/esc; ln -s %s /tmp/p; cat /tmp/p"
                      % (host_secret, host_secret)])
    assert out["exit_code"] != 0 and "HOST-SECRET" not in out["stdout"], out
    for path in ("../../../.." + host_secret, "/tmp/esc" + host_secret, "/tmp/p"):
        status, body = s.http("GET", "/sessions/%s/files/read" % sid, query={"path": path})
        assert status != 200, (path, status, body)
        assert "HOST-SECRET" not in json.dumps(body)
    # the host's password hashes too, and /usr stays read-only
    out = s.run(sid, ["sh", "-c", "cat /etc/shadow; touch /usr/x"])
    assert out["stdout"] == "" and out["exit_code"] != 0, out
    # its own /proc: only the session's processes
    out = s.run(sid, ["sh", "-c", "set -- /proc/[0-9]*; echo $#"])
    assert out["stdout"] == "2\n", out

    status, _ = s.http("DELETE", "/sessions/%s" % sid)
    assert status == 204
    status, _ = s.http("GET", "/sessions/%s" % sid)
    assert status == 404
    with open(host_secret, "rb") as f:
        assert f.read() == b"HOST-SECRET"


def test_server_as_ordinary_user_says_rootless_and_bounds_processes(nobody_server):
    s = nobody_server
    status, body = s.http("POST", "/sessions", {})
    sid = body["session_id"]
    out = s.run(sid, ["sh", "-c", "sh -c 'for i in $(seq 100); do sleep 5 & done' 2>/dev/null; "
                      "echo $?; set -- /proc/[0-9]*; echo $#"])
    rc, procs = (int(x) for x in out["stdout"].split())
    assert rc != 0, out                  # the inner shell could not fork them all
    assert procs <= 64 + 1, out          # the limit, plus the session's init
    s.http("DELETE", "/sessions/%s" % sid)
    assert re.search(r"RLIMIT_NPROC", s.stderr_text()), s.stderr_text()


def test_bridge_local_backend_as_ordinary_user():
    """The bridge without --url embeds the engine: as uid 65534 it runs rootless too."""
    b = harness.Bridge(args=AS_NOBODY[1:] + [harness.BRIDGE], executable=SETPRIV)
    try:
        sid = b.create()
        res = b.run(sid, "echo hi")
        assert res["stdout"] == "hi\n", res
        res = b.run(sid, "id -u")
        assert res["stdout"] == "0\n", res
        b.call("sandbox/destroy", {"sandboxId": sid})
    finally:
        b.close()
    assert not b.problems(), (b.problems(), b.stderr_tail())
    assert "UNSAFE" not in b.stderr_text()
