"""test_network.py - sealed sandboxes (issue 12): each session's own network namespace, egress
on request, preview ports forwarded from the host, the seccomp filter, and the last wire gaps
(a killed background process is no longer listed; truncation told out of band).

Every check runs from inside real sandboxes, on the bridge's local backend and through
opensandboxd, as root and rootless (uid 65534 through setpriv, as test_rootless.py does).
Network checks touch only this machine: listeners the test opens on the host's 127.0.0.1
and ::1, the server's own ports, another session's listener, and, for egress, a network
namespace the test makes itself (ip netns + a veth pair with addresses from 10.213.0.0/16
that exist only on that pair). The link-local block is checked in the sandbox's routes
(`ip route`), never by sending a packet to 169.254.0.0/16."""
import base64
import json
import os
import platform
import random
import select
import shutil
import socket
import subprocess
import time

import pytest

import harness
from harness import scaled
from test_rootless import AS_NOBODY, SETPRIV, SKIP as ROOTLESS_SKIP, NobodyServer
from test_sdk_compat import pb  # noqa: F401  (a fixture)

MiB = 1 << 20
KINDS = ["local", "remote", "local-rootless", "remote-rootless"]

# Connects to each "family,host,port" argument and prints the errno (0: connected), then
# proves that its own loopback works: a listener of its own, connected to ("self 0").
PROBE = r"""
import socket, sys
for a in sys.argv[1:]:
    fam, host, port = a.split(",")
    s = socket.socket(socket.AF_INET6 if fam == "6" else socket.AF_INET)
    s.settimeout(5)
    try:
        print(s.connect_ex((host, int(port))))
    except OSError as e:
        print(e.errno)
    s.close()
l = socket.socket(); l.bind(("127.0.0.1", 0)); l.listen(1)
c = socket.socket(); c.settimeout(5)
print("self", c.connect_ex(l.getsockname()))
"""


class Target:
    """A bridge driving sandboxes on one kind of backend; server_ports: the server's own."""

    def __init__(self, kind, bridge, server_ports=(), cleanup=None):
        self.kind = kind
        self.bridge = bridge
        self.server_ports = list(server_ports)
        self._cleanup = cleanup

    def create(self):
        return self.bridge.create()

    def run(self, sid, argv, **kw):
        params = {"sandboxId": sid, "argv": argv}
        params.update(kw)
        return self.bridge.call("sandbox/run", params, timeout=scaled(60))

    def sh(self, sid, cmd, **kw):
        return self.run(sid, ["/bin/sh", "-c", cmd], **kw)

    def probe(self, sid, targets):
        """errno of a connect() from inside sid to each (family, host, port)."""
        r = self.run(sid, ["python3", "-c", PROBE] + ["%s,%s,%d" % t for t in targets])
        lines = r["stdout"].split("\n")
        assert r["exitCode"] == 0 and lines[len(targets)] == "self 0", r
        return [int(x) for x in lines[:len(targets)]]

    def close(self):
        if self._cleanup:
            self._cleanup()


def _need_rootless():
    if ROOTLESS_SKIP:
        pytest.skip(ROOTLESS_SKIP)


def open_target(kind, start_server, spawn, server_args=(), bridge_args=()):
    if kind == "local":
        return Target(kind, spawn(list(bridge_args)))
    if kind == "local-userns":  # rootless mode's code path, as root (OSB_ENGINE_ROOTLESS=1)
        return Target(kind, spawn(list(bridge_args), env={"OSB_ENGINE_ROOTLESS": "1"}))
    if kind == "remote":
        s = start_server(*server_args)
        return Target(kind, spawn(s.bridge_args()), [s.http_port, s.grpc_port])
    _need_rootless()
    if kind == "local-rootless":
        b = harness.Bridge(args=AS_NOBODY[1:] + [harness.BRIDGE] + list(bridge_args),
                           executable=SETPRIV)

        def done():
            b.close()
            assert not b.problems(), (b.problems(), b.stderr_tail())
        return Target(kind, b, cleanup=done)
    s = NobodyServer(server_args)
    b = spawn(["--url", s.url, "--grpc-port", str(s.grpc_port)])

    def stop():
        b.close()
        rc = s.close()
        assert rc == 0, (rc, s.stderr_text())
        assert not harness.sanitizer_lines(s.stderr_text()), s.stderr_text()
    return Target(kind, b, [s.http_port, s.grpc_port], cleanup=stop)


@pytest.fixture(params=KINDS)
def target(request, start_server, spawn):
    t = open_target(request.param, start_server, spawn)
    yield t
    t.close()


def _tun_usable_by_nobody():
    st = os.stat("/dev/net/tun")
    return (st.st_mode & 0o006) == 0o006 or st.st_uid == 65534


@pytest.fixture(params=KINDS + ["local-userns"])
def egress_target(request, start_server, spawn, test_netns):
    if request.param.endswith("rootless") and not _tun_usable_by_nobody():
        pytest.skip("/dev/net/tun is not open to uid 65534 here (mode %o): rootless egress "
                    "cannot work (test_rootless_egress_without_tun_fails_at_start checks the "
                    "error)" % (os.stat("/dev/net/tun").st_mode & 0o777))
    t = open_target(request.param, start_server, spawn, server_args=("--network", "egress"),
                    bridge_args=("--network", "egress"))
    yield t
    t.close()


class Listener:
    """A TCP listener of the test on the host (or in the test's namespace, via ns)."""

    def __init__(self, family, host):
        self.sock = socket.socket(family)
        self.sock.bind((host, 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]

    def accepted_any(self):
        r, _, _ = select.select([self.sock], [], [], 0)
        return bool(r)

    def close(self):
        self.sock.close()


def _wait_http(port, want, timeout):
    end = time.monotonic() + timeout
    last = None
    while time.monotonic() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
                c.sendall(b"GET /index.html HTTP/1.0\r\n\r\n")
                data = b""
                while True:
                    chunk = c.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                if want in data:
                    return data
                last = data
        except OSError as e:
            last = e
        time.sleep(0.1)
    raise AssertionError("nothing served %r on 127.0.0.1:%d: %r" % (want, port, last))


def _serve_preview(t, sid, text, bind="127.0.0.1"):
    """Start python's http.server on the sandbox's PORT as a background process; returns
    the reported port once the host can fetch text through it."""
    t.bridge.call("fs/write", {"sandboxId": sid, "path": "/home/index.html", "content": text})
    r = t.bridge.call("process/start", {
        "sandboxId": sid, "port": 0,
        "command": "cd /home && exec python3 -m http.server --bind %s $PORT" % bind})
    _wait_http(r["port"], text.encode(), scaled(20))
    return r["port"]


# ---------------------------------------------------------------------------------------
# network: nothing outside the sandbox by default


def test_sandbox_reaches_nothing_outside_itself(target):
    t = target
    l4 = Listener(socket.AF_INET, "127.0.0.1")
    l6 = Listener(socket.AF_INET6, "::1")
    try:
        other = t.create()
        other_port = _serve_preview(t, other, "other-session")  # reachable from the host
        sid = t.create()
        probes = [(4, "127.0.0.1", l4.port), (6, "::1", l6.port), (4, "127.0.0.1", other_port)]
        probes += [(4, "127.0.0.1", p) for p in t.server_ports]
        errs = t.probe(sid, probes)
        assert all(e != 0 for e in errs), list(zip(probes, errs))
        assert not l4.accepted_any() and not l6.accepted_any()
        # only a loopback: no interface, no route to anywhere
        r = t.sh(sid, "ip -o link show | cut -d: -f2; ip route show; ip -6 route show | "
                      "grep -v '^local\\|^::1\\|^fe80' || true")
        assert r["stdout"].split() == ["lo"], r
    finally:
        l4.close()
        l6.close()


def test_preview_port_is_served_from_the_host_for_ipv4_and_ipv6_servers(target):
    t = target
    sid = t.create()
    _serve_preview(t, sid, "preview-v4")
    t.bridge.call("process/killAll", {"sandboxId": sid})
    # a server bound to ::1 only (Node's "localhost") is reached too
    _serve_preview(t, sid, "preview-v6", bind="::1")


ECHO_SERVER = r"""
import os, socket, threading
l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind(("127.0.0.1", int(os.environ["PORT"]))); l.listen(16)
def serve(c):
    while True:
        b = c.recv(65536)
        if not b:
            break
        c.sendall(b)
    c.shutdown(socket.SHUT_WR)
    c.close()
while True:
    c, _ = l.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"""


def test_preview_forwarding_carries_megabytes_both_ways_and_half_closes(target):
    t = target
    sid = t.create()
    t.bridge.call("fs/write", {"sandboxId": sid, "path": "/home/echo.py", "content": ECHO_SERVER})
    port = t.bridge.call("process/start", {"sandboxId": sid, "port": 0,
                                           "command": "exec python3 /home/echo.py"})["port"]
    data = os.urandom(8 * MiB)
    end = time.monotonic() + scaled(20)
    while True:
        try:
            c = socket.create_connection(("127.0.0.1", port), timeout=scaled(30))
            c.sendall(b"x")
            if c.recv(1) == b"x":
                break
        except OSError:
            pass
        assert time.monotonic() < end, "the echo server never answered through the forward"
        time.sleep(0.1)
    got = bytearray()

    def reader():
        while True:
            b = c.recv(1 << 20)
            if not b:
                return
            got.extend(b)
    th = __import__("threading").Thread(target=reader)
    th.start()
    c.sendall(data)
    c.shutdown(socket.SHUT_WR)  # half-close: the echo still comes back, then EOF
    th.join(scaled(60))
    c.close()
    assert not th.is_alive() and bytes(got) == data, (len(got), len(data))


# ---------------------------------------------------------------------------------------
# egress, opt-in


@pytest.fixture
def test_netns():
    """A network namespace of the test's own, joined to the host by a veth pair whose two
    addresses (10.213.x.1 host side, 10.213.x.2 inside) exist nowhere else; a listener in
    it answers b"egress-ok". Yields (address, port, host-side address)."""
    if os.geteuid() != 0:
        pytest.skip("making a network namespace needs root")
    if not shutil.which("ip"):
        pytest.skip("ip (iproute2) is not installed")
    tag = "%d%d" % (os.getpid() % 1000, random.randrange(100))
    ns, host_if, ns_if = "osbt" + tag, "osbh" + tag, "osbn" + tag
    x = random.randrange(1, 250)
    host_ip, ns_ip = "10.213.%d.1" % x, "10.213.%d.2" % x

    def ip(*args, check=True):
        return subprocess.run(["ip"] + list(args), check=check, capture_output=True, timeout=20)

    ip("netns", "add", ns)
    listener = None
    try:
        ip("link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        ip("link", "set", ns_if, "netns", ns)
        ip("addr", "add", host_ip + "/30", "dev", host_if)
        ip("link", "set", host_if, "up")
        ip("-n", ns, "addr", "add", ns_ip + "/30", "dev", ns_if)
        ip("-n", ns, "link", "set", ns_if, "up")
        ip("-n", ns, "link", "set", "lo", "up")
        code = ("import socket\nl=socket.socket()\nl.setsockopt(socket.SOL_SOCKET,"
                "socket.SO_REUSEADDR,1)\nl.bind((%r,0))\nl.listen(8)\nprint(l.getsockname()[1],"
                "flush=True)\nwhile True:\n c,_=l.accept()\n c.sendall(b'egress-ok')\n c.close()\n"
                % ns_ip)
        listener = subprocess.Popen(["ip", "netns", "exec", ns, "/usr/bin/python3", "-c", code],
                                    stdout=subprocess.PIPE, text=True)
        port = int(listener.stdout.readline())
        yield ns_ip, port, host_ip
    finally:
        if listener:
            listener.kill()
            listener.wait(10)
        ip("link", "del", host_if, check=False)
        ip("netns", "del", ns, check=False)


FETCH = r"""
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
print(s.recv(100).decode())
"""


def test_egress_reaches_the_outside_but_never_the_host(egress_target, test_netns):
    t = egress_target
    ns_ip, ns_port, host_ip = test_netns
    l4 = Listener(socket.AF_INET, "127.0.0.1")
    lh = Listener(socket.AF_INET, host_ip)  # the host's own address on the veth
    try:
        sid = t.create()
        r = t.run(sid, ["python3", "-c", FETCH, ns_ip, str(ns_port)])
        assert r["stdout"] == "egress-ok\n", r
        # the host: its loopback (directly, and through slirp's gateway 10.0.2.2, which
        # would map to it), its own addresses, the server's ports
        probes = [(4, "127.0.0.1", l4.port), (4, "10.0.2.2", l4.port), (4, host_ip, lh.port)]
        probes += [(4, "127.0.0.1", p) for p in t.server_ports]
        probes += [(4, "10.0.2.2", p) for p in t.server_ports]
        errs = t.probe(sid, probes)
        assert all(e != 0 for e in errs), list(zip(probes, errs))
        assert not l4.accepted_any() and not lh.accepted_any()
        # link-local (cloud metadata) is refused by a route, before any packet goes out
        r = t.sh(sid, "ip route show; ip route get 169.254.169.254")
        assert "prohibit 169.254.0.0/16" in r["stdout"], r
        assert r["exitCode"] != 0 and "Permission denied" in r["stderr"], r
    finally:
        l4.close()
        lh.close()


def test_rootless_egress_without_tun_fails_at_start():
    _need_rootless()
    if _tun_usable_by_nobody():
        pytest.skip("/dev/net/tun is open to uid 65534 here: rootless egress works")
    with pytest.raises(RuntimeError) as e:
        NobodyServer(("--network", "egress"))
    assert "/dev/net/tun" in str(e.value), str(e.value)


def test_egress_is_refused_where_the_server_does_not_offer_it(start_server):
    s = start_server()
    status, body = _http(s.http_port, "POST", "/sessions", {"network": "egress"})
    assert status == 403 and "egress" in body.decode(), (status, body)
    status, body = _http(s.http_port, "POST", "/sessions", {"network": "sideways"})
    assert status == 400 and "network" in body.decode(), (status, body)


def test_a_create_may_ask_for_no_network_on_an_egress_server(start_server, test_netns):
    s = start_server("--network", "egress")
    status, body = _http(s.http_port, "POST", "/sessions", {"network": "none"})
    assert status == 200, (status, body)
    sid = json.loads(body)["session_id"]
    status, body = _http(s.http_port, "POST", "/sessions/%s/run" % sid,
                         {"command": ["sh", "-c", "ip -o link show | cut -d: -f2"]})
    assert json.loads(body)["stdout"].split() == ["lo"], body


# ---------------------------------------------------------------------------------------
# the seccomp filter

SYSCALLS = r"""
import ctypes, json
libc = ctypes.CDLL(None, use_errno=True)
def sc(nr, *a):
    ctypes.set_errno(0)
    r = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(x) for x in a])
    return 0 if r >= 0 else ctypes.get_errno()
print(json.dumps({
    "keyctl": sc(250, 0, 0, 0, 0), "add_key": sc(248, 0, 0, 0, 0, 0), "bpf": sc(321, 0, 0, 0),
    "perf_event_open": sc(298, 0, 0, 0, 0, 0), "userfaultfd": sc(323, 0),
    "io_uring_setup": sc(425, 1, 0), "mount": sc(165, 0, 0, 0, 0, 0), "setns": sc(308, 0, 0),
    "unshare_user": sc(272, 0x10000000), "unshare_net": sc(272, 0x40000000),
    "clone_newuser": sc(56, 0x10000000 | 17, 0, 0, 0, 0), "init_module": sc(175, 0, 0, 0),
    "kexec_load": sc(246, 0, 0, 0, 0), "clone3": sc(435, 0, 0)}))
"""


@pytest.mark.skipif(platform.machine() != "x86_64", reason="syscall numbers are x86-64's")
def test_seccomp_denies_with_eperm_and_kills_nothing(target):
    t = target
    sid = t.create()
    r = t.sh(sid, "grep '^Seccomp:' /proc/self/status")
    assert r["stdout"].split() == ["Seccomp:", "2"], r
    r = t.run(sid, ["python3", "-c", SYSCALLS])
    assert r["exitCode"] == 0 and r["signal"] == 0, r
    got = json.loads(r["stdout"])
    want = {k: 1 for k in got}  # EPERM
    want["clone3"] = 38         # ENOSYS: libc falls back to clone, whose flags are checked
    assert got == want, got
    for cmd in ("unshare -U true", "unshare -n true", "unshare -m true",
                "mount -t tmpfs none /tmp", "umount /proc"):
        r = t.sh(sid, cmd)
        assert r["exitCode"] != 0 and r["signal"] == 0, (cmd, r)


WORKLOAD = r"""
import concurrent.futures, hashlib, mmap, os, subprocess, sys, threading
d = "/tmp/many"
os.makedirs(d, exist_ok=True)
for i in range(2000):                                   # pip-style: many small files
    with open("%s/f%04d.py" % (d, i), "w") as f:
        f.write("x = %d\n" % i)
assert len(os.listdir(d)) == 2000
with open("/tmp/blob", "wb") as f:
    f.write(os.urandom(1 << 20))
with open("/tmp/blob", "r+b") as f:                      # mmap
    m = mmap.mmap(f.fileno(), 0)
    h = hashlib.sha256(m[:]).hexdigest()
    m.close()
with concurrent.futures.ThreadPoolExecutor(16) as ex:    # threads
    sums = list(ex.map(lambda i: sum(range(i * 1000)), range(64)))
sys.path.insert(0, d)
import f1999                                             # imports from those files
print("ok", len(sums), f1999.x, len(h), threading.active_count() >= 1)
"""

C_PROGRAM = r"""
#include <pthread.h>
#include <stdio.h>
static void *work(void *p) { return p; }
int main(void) {
  pthread_t t[8];
  for (int i = 0; i < 8; i++) pthread_create(&t[i], NULL, work, NULL);
  for (int i = 0; i < 8; i++) pthread_join(t[i], NULL);
  puts("compiled-ok");
  return 0;
}
"""


@pytest.mark.parametrize("kind", ["local", "remote-rootless"])
def test_shells_compilers_python_and_node_work_under_the_filter(kind, start_server, spawn):
    t = open_target(kind, start_server, spawn)
    try:
        sid = t.create()
        r = t.sh(sid, "for i in 1 2 3; do echo $i; done | wc -l; (sleep 0.1 &) ; wait; "
                      "bash -c 'echo bash-ok' 2>/dev/null || echo bash-ok")
        assert r["stdout"] == "3\nbash-ok\n", r
        r = t.run(sid, ["python3", "-c", WORKLOAD], timeoutMs=120000)
        assert r["stdout"] == "ok 64 1999 64 True\n", r
        if shutil.which("gcc"):
            t.bridge.call("fs/write", {"sandboxId": sid, "path": "/tmp/t.c", "content": C_PROGRAM})
            r = t.sh(sid, "cd /tmp && gcc -O1 -pthread -o t t.c && ./t", timeoutMs=120000)
            assert r["stdout"] == "compiled-ok\n", r
        if os.path.exists("/usr/bin/node"):
            r = t.run(sid, ["/usr/bin/node", "-e",
                            "const {Worker}=require('worker_threads');"
                            "const w=new Worker('require(\"worker_threads\").parentPort"
                            ".postMessage(6*7)',{eval:true});"
                            "w.on('message',m=>{require('fs').writeFileSync('/tmp/n',''+m);"
                            "console.log('node-ok',m)})"], timeoutMs=120000)
            assert r["stdout"] == "node-ok 42\n", r
    finally:
        t.close()


# ---------------------------------------------------------------------------------------
# wire gaps


def _http(port, method, path, body=None, headers=None):
    import http.client
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=scaled(60))
    try:
        hdrs = {"Content-Type": "application/json"}
        hdrs.update(headers or {})
        c.request(method, path, body=None if body is None else json.dumps(body), headers=hdrs)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def test_killed_background_processes_are_never_listed_again(start_server):
    s = start_server()
    status, body = _http(s.http_port, "POST", "/sessions", {})
    sid = json.loads(body)["session_id"]
    for _ in range(20):
        status, body = _http(s.http_port, "POST", "/sessions/%s/background" % sid,
                             {"command": ["sh", "-c", "trap '' TERM; sleep 30"], "port": 0})
        assert status == 200, (status, body)
        pid = json.loads(body)["pid"]
        status, body = _http(s.http_port, "DELETE", "/sessions/%s/background" % sid)
        assert status == 200 and pid in json.loads(body)["killed"], (status, body)
        status, body = _http(s.http_port, "GET", "/sessions/%s/background/status" % sid)
        assert status == 200 and json.loads(body)["pids"] == [], body


def test_local_backend_returns_the_commands_bytes_only_with_truncated(spawn):
    b = spawn(["--max-output", "65536"])
    sid = b.create()
    r = b.run(sid, "head -c 200000 /dev/zero | tr '\\0' a; printf e >&2")
    assert r["truncated"] is True and r["stdout"] == "a" * 65536, len(r["stdout"])
    assert r["stderr"] == "e", r["stderr"][-200:]


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_twenty_megabytes_through_opensandboxd_come_back_cut_and_flagged(start_server, spawn,
                                                                          transport):
    s = start_server()
    b = spawn(s.bridge_args() + ["--transport", transport])
    sid = b.create()
    r = b.run(sid, "head -c 20000000 /dev/zero | tr '\\0' z", timeout=scaled(120))
    assert r["truncated"] is True and len(r["stdout"]) == 16 * MiB, len(r["stdout"])
    assert r["stdout"] == "z" * (16 * MiB)
    assert r["stderr"] == "", r["stderr"][-200:]
    r = b.run(sid, "echo small")
    assert r["truncated"] is False and r["stderr"] == ""


def test_opensandboxd_tells_truncation_in_trailers_only_to_clients_that_ask(start_server, pb):
    grpc = pytest.importorskip("grpc", reason="python3-grpcio is not installed")
    s = start_server("--max-output", "64K")
    status, body = _http(s.http_port, "POST", "/sessions", {})
    sid = json.loads(body)["session_id"]
    ch = grpc.insecure_channel(s.grpc_target)
    run = ch.unary_unary("/sandbox.SandboxService/RunCommand",
                         request_serializer=pb.RunCommandRequest.SerializeToString,
                         response_deserializer=pb.RunCommandResponse.FromString)
    req = pb.RunCommandRequest(session_id=sid, command=["sh", "-c", "yes | head -c 1M"])
    try:
        resp, call = run.with_call(req, timeout=scaled(60),
                                   metadata=[("x-opensandbox-truncation", "report")])
        assert len(resp.stdout) == 65536 and resp.stderr == ""
        assert ("x-opensandbox-truncated", "1") in call.trailing_metadata()
        resp, call = run.with_call(req, timeout=scaled(60))  # the public SDKs
        assert "cut at 65536 bytes" in resp.stderr
        assert not any(k == "x-opensandbox-truncated" for k, _ in call.trailing_metadata())
    finally:
        ch.close()
    path = "/sessions/%s/run" % sid
    body = {"command": ["sh", "-c", "yes | head -c 1M"]}
    status, raw = _http(s.http_port, "POST", path, body, {"x-opensandbox-truncation": "report"})
    out = json.loads(raw)
    assert out["truncated"] is True and out["stderr"] == "" and len(out["stdout"]) == 65536
    status, raw = _http(s.http_port, "POST", path, body)
    out = json.loads(raw)
    assert out["truncated"] is True and "cut at 65536 bytes" in out["stderr"]


@pytest.mark.parametrize("backend", ["local", "remote"])
def test_bridge_create_chooses_its_network_where_the_backend_allows(backend, start_server, spawn):
    # sandbox/create's per-create choice: "none" anywhere, "egress" only where the backend
    # offers it (here: neither the local backend nor the server was started with egress).
    args = [] if backend == "local" else list(start_server().bridge_args())
    b = spawn(args)
    sid = b.call("sandbox/create", {"network": "none"})["sandboxId"]
    r = b.run(sid, "ip -o link show | cut -d: -f2")
    assert r["stdout"].split() == ["lo"], r
    e = b.error("sandbox/create", {"network": "sideways"}, code=-32602)
    assert "network" in e["message"], e
    e = b.error("sandbox/create", {"network": "egress"})
    assert "egress" in e["message"], e
    assert e["code"] == (-32602 if backend == "local" else -32000), e
