"""opensandboxd over TLS (--tls-cert/--tls-key: HTTPS and gRPC over TLS on the same
certificate) and the bridge against it: an https:// URL with --cacert works end to end over
both channels; without the CA the certificate cannot be verified (-32003); --grpc-insecure
(plaintext gRPC) against opensandboxd's TLS-only gRPC port fails cleanly (-32003 naming
host:port) with --transport grpc, while auto moves those operations to HTTPS.

The private CA and the server certificate (for 127.0.0.1 and localhost) are made with the
openssl command-line tool in a temporary directory; without it the tests are skipped."""
import os
import shutil
import subprocess

import pytest

import harness
from harness import scaled

OPENSSL = "/usr/bin/openssl" if os.access("/usr/bin/openssl", os.X_OK) else shutil.which("openssl")


def openssl(*args, cwd):
    p = subprocess.run([OPENSSL] + list(args), cwd=cwd, capture_output=True, timeout=60)
    assert p.returncode == 0, "openssl %s failed: %s" % (" ".join(args), p.stderr.decode())


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """{ca, cert, key, other_ca}: a CA, a server certificate it signed, its key, and a second
    CA that signed nothing of ours."""
    if not OPENSSL:
        pytest.skip("the openssl command-line tool is not installed (Debian package openssl)")
    d = str(tmp_path_factory.mktemp("pki"))
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
            "ca.pem", "-days", "2", "-subj", "/CN=opensandbox test CA", cwd=d)
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "other.key", "-out",
            "other.pem", "-days", "2", "-subj", "/CN=some other CA", cwd=d)
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out",
            "server.csr", "-subj", "/CN=localhost", cwd=d)
    with open(os.path.join(d, "ext.cnf"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n"
                "keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf", cwd=d)
    return {k: os.path.join(d, v) for k, v in (("ca", "ca.pem"), ("cert", "server.pem"),
                                               ("key", "server.key"), ("other_ca", "other.pem"))}


@pytest.fixture
def tls_server(start_server, pki):
    s = start_server("--tls-cert", pki["cert"], "--tls-key", pki["key"])
    s.https_url = "https://127.0.0.1:%d" % s.http_port
    return s


def tls_args(s, *extra):
    return ["--url", s.https_url, "--grpc-port", str(s.grpc_port)] + list(extra)


@pytest.mark.parametrize("transport", ["grpc", "auto", "http"])
def test_bridge_works_end_to_end_over_tls_with_the_ca(spawn, tls_server, pki, transport):
    b = spawn(tls_args(tls_server, "--cacert", pki["ca"], "--transport", transport,
                       "--log-level", "info"))
    sid = b.create({"GREETING": "hello"})
    r = b.run(sid, 'printf "%s" "$GREETING"')
    assert r["stdout"] == "hello" and r["success"] is True
    assert b.write_file(sid, "/tmp/t.txt", "over tls")["bytesWritten"] == 8
    assert b.read_file(sid, "/tmp/t.txt")["content"] == "over tls"
    names = [e["name"] for e in b.call("fs/list", {"sandboxId": sid, "path": "/tmp"})["entries"]]
    assert "t.txt" in names
    assert b.call("server/health")["ok"] is True
    b.call("sandbox/destroy", {"sandboxId": sid})
    b.error("sandbox/get", {"sandboxId": sid}, code=-32001)
    # with gRPC usable, auto never fell back to HTTP
    assert "using HTTP" not in b.stderr_text()


def test_without_the_ca_the_certificate_cannot_be_verified(spawn, tls_server, pki):
    for extra in ([], ["--cacert", pki["other_ca"]]):
        b = spawn(tls_args(tls_server, *extra))
        e = b.error("sandbox/create", {}, code=-32003, timeout=scaled(10))
        assert e["data"]["url"] == tls_server.https_url
        assert "certificate" in e["message"].lower(), e
        # gRPC refuses the certificate too (the request never leaves: no TLS session)
        g = spawn(tls_args(tls_server, "--transport", "grpc", *extra))
        e = g.error("fs/read", {"sandboxId": "S", "path": "/x"}, code=-32003, timeout=scaled(10))
        assert e["data"]["url"] == "127.0.0.1:%d" % tls_server.grpc_port


def test_plaintext_grpc_against_a_tls_grpc_port_fails_cleanly(spawn, tls_server, pki):
    """opensandboxd serves gRPC over TLS only: --grpc-insecure (plaintext gRPC) cannot talk to
    it. With --transport grpc that is a -32003 naming host:port; with auto the operations
    that have HTTP routes go over HTTPS instead."""
    b = spawn(tls_args(tls_server, "--cacert", pki["ca"], "--grpc-insecure",
                       "--transport", "grpc"))
    sid = b.create()  # HTTPS works
    e = b.error("sandbox/run", {"sandboxId": sid, "command": "true"}, code=-32003,
                timeout=scaled(10))
    assert e["data"]["url"] == "127.0.0.1:%d" % tls_server.grpc_port
    a = spawn(tls_args(tls_server, "--cacert", pki["ca"], "--grpc-insecure"))
    assert a.run(sid, "echo fine")["stdout"] == "fine\n"


def test_plain_http_to_the_tls_server_fails_cleanly(spawn, tls_server):
    b = spawn(["--url", tls_server.url, "--grpc-port", str(tls_server.grpc_port)])
    e = b.error("sandbox/create", {}, code=-32003, timeout=scaled(10))
    assert e["data"]["url"] == tls_server.url


def test_server_refuses_half_or_bad_tls_flags(pki, tmp_path):
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate\n")
    cases = [["--tls-cert", pki["cert"]],
             ["--tls-key", pki["key"]],
             ["--tls-cert", str(bad), "--tls-key", pki["key"]],
             ["--tls-cert", pki["cert"], "--tls-key", str(tmp_path / "missing.pem")],
             ["--tls-cert", pki["key"], "--tls-key", pki["cert"]]]  # swapped
    for args in cases:
        p = subprocess.run([harness.SERVER, "--port", "0", "--grpc-port", "0",
                            "--state-dir", str(tmp_path)] + args, stdin=subprocess.DEVNULL,
                           capture_output=True, timeout=scaled(20), env=harness.clean_env())
        assert p.returncode > 0, "opensandboxd accepted (or crashed on) %s: %r" % (args, p.returncode)
        assert b"ready" not in p.stdout
        assert p.stderr, "opensandboxd said nothing about %s" % args
