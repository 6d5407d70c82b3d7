"""cluster.py - many opensandboxd nodes behind HAProxy, for the e2e tests (issue 13).

Cluster starts N opensandboxd nodes (harness.Server, each with --node-id) and one HAProxy on
free 127.0.0.1 ports, configured by the shipped deploy/haproxy/gen-haproxy-cfg; with a PKI it
also serves HTTPS and gRPC over TLS. It looks like a harness.Server to the tests (url,
http_port, grpc_port, grpc_target, bridge_args(), stop(), problems(), stderr_text()), so the
conftest `server` fixture can hand one out in balancer mode (OSB_E2E_CLUSTER=1). Everything
it starts is stopped by PID. HAProxy's runtime API (a Unix socket in a temporary directory)
tells the tests which nodes the health checks hold UP.
"""
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import harness
from harness import closed_port, scaled

HAPROXY = shutil.which("haproxy") or ("/usr/sbin/haproxy" if os.access("/usr/sbin/haproxy", os.X_OK)
                                      else None)
GEN = os.path.join(harness.REPO, "deploy", "haproxy", "gen-haproxy-cfg")
NAMES = ("n1", "n2", "n3")


class PortTaken(Exception):
    pass


class Cluster:
    def __init__(self, names=NAMES, node_args=(), pki=None):
        if not HAPROXY:
            raise RuntimeError("haproxy is not installed")
        self.dir = tempfile.mkdtemp(prefix="osb-cluster-")
        self.nodes = {}
        self.proc = None
        self.returncode = None
        self.stderr_file = tempfile.TemporaryFile(prefix="haproxy-stderr-")
        try:
            for n in names:
                self.nodes[n] = harness.Server(["--node-id", n] + list(node_args))
            self._start_haproxy(pki)
        except BaseException:
            self.stop()
            raise

    def _start_haproxy(self, pki):
        # Ports are picked free, then bound by HAProxy: another process may take one
        # meanwhile. -dR (no SO_REUSEPORT) makes that a failed bind instead of a port shared
        # with a stranger (gRPC servers set SO_REUSEPORT too); then try other ports.
        for attempt in range(5):
            try:
                return self._try_haproxy(pki)
            except PortTaken:
                self._stop_haproxy()
        raise RuntimeError("haproxy could not bind free ports in 5 attempts:\n%s"
                           % self.stderr_text()[-3000:])

    def _try_haproxy(self, pki):
        self.stderr_file.seek(0)
        self.stderr_file.truncate()
        self.proc = None
        self.returncode = None
        self.http_port = closed_port()
        self.grpc_port = closed_port()
        self.stats = os.path.join(self.dir, "haproxy.sock")
        argv = [GEN, "--http-bind", "127.0.0.1:%d" % self.http_port,
                "--grpc-bind", "127.0.0.1:%d" % self.grpc_port, "--stats-socket", self.stats]
        if pki:
            # HAProxy wants the certificate and its key in one file.
            pem = os.path.join(self.dir, "balancer.pem")
            with open(pem, "w") as out:
                for part in (pki["cert"], pki["key"]):
                    with open(part) as f:
                        out.write(f.read())
            self.https_port = closed_port()
            self.grpcs_port = closed_port()
            argv += ["--cert", pem, "--https-bind", "127.0.0.1:%d" % self.https_port,
                     "--grpcs-bind", "127.0.0.1:%d" % self.grpcs_port]
        argv += ["%s=127.0.0.1:%d:%d" % (n, s.http_port, s.grpc_port) for n, s in self.nodes.items()]
        cfg = subprocess.run(argv, capture_output=True, timeout=30)
        if cfg.returncode != 0:
            raise RuntimeError("gen-haproxy-cfg failed: %s" % cfg.stderr.decode())
        self.cfg_path = os.path.join(self.dir, "haproxy.cfg")
        with open(self.cfg_path, "wb") as f:
            f.write(cfg.stdout)
        # -db: stay in the foreground (so the PID is HAProxy's own), logs on stderr.
        self.proc = subprocess.Popen([HAPROXY, "-db", "-dR", "-f", self.cfg_path],
                                     stdin=subprocess.DEVNULL, stdout=self.stderr_file,
                                     stderr=self.stderr_file, env=harness.clean_env())
        deadline = time.monotonic() + scaled(15)
        while True:
            if self.proc.poll() is not None:
                text = self.stderr_text()
                if "cannot bind socket" in text or "Address already in use" in text:
                    raise PortTaken()
                raise RuntimeError("haproxy exited at start (%r):\n%s"
                                   % (self.proc.returncode, text[-3000:]))
            try:
                self.servers()
                if all(self._accepts(p) for p in (self.http_port, self.grpc_port)):
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("haproxy did not come up:\n%s" % self.stderr_text()[-3000:])
            time.sleep(0.05)
        self.host = "127.0.0.1"
        self.url = "http://127.0.0.1:%d" % self.http_port
        self.grpc_target = "127.0.0.1:%d" % self.grpc_port
        if pki:
            self.https_url = "https://127.0.0.1:%d" % self.https_port

    @staticmethod
    def _accepts(port):
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return True

    # ---- what the tests use

    def bridge_args(self):
        return ["--url", self.url, "--grpc-port", str(self.grpc_port)]

    def tls_bridge_args(self, ca):
        return ["--url", self.https_url, "--grpc-port", str(self.grpcs_port), "--cacert", ca]

    def runtime_api(self, command):
        """One command of HAProxy's runtime API; its answer as text."""
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(self.stats)
            s.sendall(command.encode() + b"\n")
            out = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    return out.decode()
                out += chunk

    def servers(self):
        """{(backend, node): status} of the two pools, e.g. ("opensandbox_grpc_pool", "n1"):
        "UP" / "DOWN" / "UP 1/2"..."""
        lines = self.runtime_api("show stat").splitlines()
        head = lines[0].lstrip("# ").split(",")
        out = {}
        for row in lines[1:]:
            f = row.split(",")
            if len(f) == len(head) and f[0].endswith("_pool") and f[1] not in ("FRONTEND", "BACKEND"):
                out[(f[0], f[1])] = f[head.index("status")]
        return out

    def wait_status(self, node, want, seconds):
        """Wait until both pools report node as want ("UP" or "DOWN"); returns the seconds it
        took, or raises."""
        t0 = time.monotonic()
        while True:
            st = self.servers()
            mine = [v for (b, n), v in st.items() if n == node]
            if mine and all(v == want for v in mine):
                return time.monotonic() - t0
            if time.monotonic() - t0 > seconds:
                raise AssertionError("node %s is not %s after %.1fs: %r" % (node, want, seconds, st))
            time.sleep(0.1)

    def node_of(self, sandbox_id):
        return sandbox_id.split("-", 1)[0]

    def stderr_text(self):
        self.stderr_file.seek(0)
        text = self.stderr_file.read().decode("utf-8", "replace")
        return text + "".join(
            "\n---- node %s ----\n%s" % (n, s.stderr_text()[-2000:]) for n, s in self.nodes.items())

    def stop(self, timeout=None):
        """Stop HAProxy (SIGTERM by PID), then every node still running. HAProxy's status."""
        self._stop_haproxy(timeout)
        for s in self.nodes.values():
            s.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
        return self.returncode

    def _stop_haproxy(self, timeout=None):
        if self.proc is not None and self.returncode is None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout or scaled(10))
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(10)
            self.returncode = self.proc.returncode

    def problems(self, killed=()):
        """What went wrong: any node's problems (but the nodes in killed, which a test
        SIGKILLed on purpose) and HAProxy not stopping cleanly."""
        out = []
        rc = self.stop()
        if rc not in (0, -signal.SIGTERM, 128 + signal.SIGTERM):
            out.append("haproxy did not stop cleanly on SIGTERM: %r" % (rc,))
        for n, s in self.nodes.items():
            if n in killed or getattr(s, "killed", False):
                continue
            out += ["node %s: %s" % (n, p) for p in s.problems()]
        return out
