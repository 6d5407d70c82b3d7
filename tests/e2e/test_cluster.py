"""Many opensandboxd nodes behind HAProxy (issue 13; deploy/README.md): three nodes with
--node-id n1..n3 and HAProxy configured by the shipped deploy/haproxy/gen-haproxy-cfg, all on
free 127.0.0.1 ports, and the bridge pointed at the balancer's one HTTP and one gRPC address.

- the bridge's remote e2e suite passes through the balancer (a second pytest run of this
  directory in balancer mode, OSB_E2E_CLUSTER=1: see conftest.py);
- 30 creates land on all three nodes; sandbox/list answers all of them; sandbox/get, runs and
  file calls work for every id, and HAProxy's per-node counters show that every gRPC call
  went to its session's node by the opensandbox-session metadata (none to the pool);
- a node SIGKILLed mid-run: its sessions fail with -32003 within the request timeout, the
  other nodes' sessions are untouched, the health checks take it out, new sessions go to the
  live nodes;
- the same over TLS (HTTPS and gRPC over TLS at the balancer, a CA made here with openssl).
Skipped when haproxy is not installed (Debian package haproxy, in `make deps`)."""
import concurrent.futures
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

import harness
from harness import scaled

cluster = pytest.importorskip("cluster")

pytestmark = pytest.mark.skipif(not cluster.HAPROXY, reason="haproxy is not installed "
                                "(Debian package haproxy; make deps installs it)")

REQUEST_TIMEOUT_MS = 5000


@pytest.fixture
def start_cluster(tracker):
    def start(**kw):
        c = cluster.Cluster(**kw)
        tracker.servers.append(c)
        return c
    return start


def backend_counts(c):
    """{backend name: requests it forwarded} (HAProxy's stot of each backend)."""
    lines = c.runtime_api("show stat").splitlines()
    head = lines[0].lstrip("# ").split(",")
    out = {}
    for row in lines[1:]:
        f = row.split(",")
        if len(f) == len(head) and f[1] == "BACKEND":
            out[f[0]] = int(f[head.index("stot")] or 0)
    return out


def held_by(node, sid):
    """Whether the node (a harness.Server) itself holds session sid (asked directly)."""
    try:
        with urllib.request.urlopen("%s/sessions/%s" % (node.url, sid), timeout=10) as r:
            return r.status == 200
    except urllib.error.HTTPError as e:
        assert e.code == 404, e
        return False


@pytest.mark.skipif(harness.SCALE > 1, reason="sanitizer pass: the whole suite through the "
                    "balancer runs in the normal pass (tests/run's time budget); the other "
                    "cluster tests run here")
def test_remote_suite_passes_through_the_balancer():
    """Every test of the bridge against a server, run again with `server` = the balancer."""
    env = dict(os.environ, OSB_E2E_CLUSTER="1", OSB_BRIDGE=harness.BRIDGE,
               OSB_SERVER=harness.SERVER, PYTHONDONTWRITEBYTECODE="1")
    p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        "-rfE", harness.HERE], env=env, cwd=harness.REPO, capture_output=True,
                       timeout=scaled(600))
    out = p.stdout.decode("utf-8", "replace")
    tail = "\n".join(out.splitlines()[-40:])
    failed = [l.split()[1] for l in out.splitlines() if l.startswith("FAILED ")]
    if p.returncode != 0 and len(failed) == 1:
        # One known race (docs/SCALING.md, "Exec behind HAProxy"): an exec's last event and
        # the server's status can be lost to the proxy's RST_STREAM. The failed test gets one
        # more try, visibly; a second failure, or any other, fails this test.
        print("OSB-FLAKE through the balancer, retried once:\n" + tail)
        p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                            "-rfE", failed[0]], env=env, cwd=harness.REPO,
                           capture_output=True, timeout=scaled(300))
        retry = p.stdout.decode("utf-8", "replace")
        assert p.returncode == 0, "the suite failed through the balancer:\n" + tail + \
            "\nand again:\n" + "\n".join(retry.splitlines()[-40:])
    else:
        assert p.returncode == 0, "the suite failed through the balancer:\n" + tail
    summary = out.strip().splitlines()[-1]
    passed = int(summary.split(" passed")[0].split()[-1])
    assert passed >= 100, "too few tests ran through the balancer: " + summary


def test_creates_spread_over_every_node_and_each_call_reaches_its_node(spawn, start_cluster):
    c = start_cluster()
    b = spawn(c.bridge_args() + ["--request-timeout-ms", str(REQUEST_TIMEOUT_MS)])
    before = backend_counts(c)
    ids = [b.create() for _ in range(30)]
    per_node = {n: [i for i in ids if c.node_of(i) == n] for n in c.nodes}
    assert all(per_node.values()), "30 creates did not reach every node: %r" % (
        {n: len(v) for n, v in per_node.items()})
    assert sum(len(v) for v in per_node.values()) == 30
    # every id names the node that holds it, and only that node
    for n, sids in per_node.items():
        for sid in sids[:3]:
            assert [m for m, s in c.nodes.items() if held_by(s, sid)] == [n]
    # gRPC calls (runs, file writes and reads) for every session, routed by metadata
    for sid in ids:
        assert b.run(sid, "echo $((6*7))")["stdout"] == "42\n"
        b.write_file(sid, "/tmp/who", sid)
        assert b.read_file(sid, "/tmp/who")["content"] == sid
    after = backend_counts(c)
    for n, sids in per_node.items():
        got = after["opensandbox_grpc_" + n] - before.get("opensandbox_grpc_" + n, 0)
        assert got == 3 * len(sids), "node %s's gRPC backend forwarded %d calls, not %d" % (
            n, got, 3 * len(sids))
    assert after["opensandbox_grpc_pool"] == before.get("opensandbox_grpc_pool", 0), \
        "a gRPC call went to the pool: it carried no opensandbox-session metadata"
    # sandbox/list: every node's sessions; sandbox/get: any id
    listed = {s["sandboxId"] for s in b.call("sandbox/list", {})["sandboxes"]}
    assert listed == set(ids)
    for sid in ids:
        assert b.call("sandbox/get", {"sandboxId": sid})["sandboxId"] == sid
    # an id without a known node prefix: not found, as on one server
    b.error("sandbox/get", {"sandboxId": "n9-" + ids[0].split("-", 1)[1]}, code=-32001)
    b.error("sandbox/run", {"sandboxId": "no-such-node", "command": "true"}, code=-32001)
    # ids that cannot be a header value (sent without the metadata) or are very long
    for bad in ("n1-\nx", "n1-" + "x" * 300, "n1-\u00e9"):
        b.error("sandbox/run", {"sandboxId": bad, "command": "true"}, code=-32001)
        b.error("fs/read", {"sandboxId": bad, "path": "/tmp/x"}, code=-32001)


def test_a_node_killed_mid_run_fails_only_its_own_sessions(spawn, start_cluster):
    c = start_cluster()
    b = spawn(c.bridge_args() + ["--request-timeout-ms", str(REQUEST_TIMEOUT_MS)])
    ids = []
    while not all(any(c.node_of(i) == n for i in ids) for n in c.nodes) or len(ids) < 9:
        ids.append(b.create())
        assert len(ids) < 40, "creates do not reach every node"
    for sid in ids:
        b.write_file(sid, "/tmp/mark", sid)
    dead = "n2"
    # runs in flight on every node when the node dies
    run_s = scaled(3)  # still running when the node is killed, sanitizer builds too
    inflight = {sid: b.start("sandbox/run", {"sandboxId": sid, "command": "sleep %g; echo done" % run_s})
                for sid in ids}
    time.sleep(scaled(0.7))
    node = c.nodes[dead]
    node.killed = True
    node.proc.send_signal(signal.SIGKILL)
    node.proc.wait(10)
    limit = REQUEST_TIMEOUT_MS / 1000 + 3
    for sid, rid in inflight.items():
        r = b.reply(rid, timeout=run_s + scaled(limit + 5))
        if c.node_of(sid) == dead:
            assert r.get("error", {}).get("code") == -32003, r
        else:
            assert r.get("result", {}).get("stdout") == "done\n", r
    # its sessions: -32003 within the request timeout, on every channel
    for sid in (i for i in ids if c.node_of(i) == dead):
        for method, params in (("sandbox/run", {"command": "true"}), ("fs/read", {"path": "/tmp/mark"}),
                               ("sandbox/get", {}), ("fs/list", {"path": "/tmp"})):
            t0 = time.monotonic()
            e = b.error(method, dict(params, sandboxId=sid), code=-32003, timeout=scaled(limit + 5))
            assert time.monotonic() - t0 < scaled(limit), "%s took %.1fs" % (method, time.monotonic() - t0)
            assert e["data"]["url"]
    # the others: untouched
    for sid in (i for i in ids if c.node_of(i) != dead):
        assert b.read_file(sid, "/tmp/mark")["content"] == sid
        assert b.run(sid, "echo ok")["stdout"] == "ok\n"
    # the health checks take the node out of both pools; new sessions go to live nodes
    c.wait_status(dead, "DOWN", scaled(10))
    new = [b.create() for _ in range(12)]
    assert {c.node_of(i) for i in new} == set(c.nodes) - {dead}
    for sid in new:
        assert b.run(sid, "echo new")["stdout"] == "new\n"
    listed = {s["sandboxId"] for s in b.call("sandbox/list", {})["sandboxes"]}
    assert listed == {i for i in ids + new if c.node_of(i) != dead}
    assert b.call("server/health")["ok"] is True


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    openssl = shutil.which("openssl") or "/usr/bin/openssl"
    if not os.access(openssl, os.X_OK):
        pytest.skip("the openssl command-line tool is not installed (Debian package openssl)")
    d = str(tmp_path_factory.mktemp("cluster-pki"))

    def run(*args):
        p = subprocess.run([openssl] + list(args), cwd=d, capture_output=True, timeout=60)
        assert p.returncode == 0, p.stderr.decode()
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
        "-days", "2", "-subj", "/CN=opensandbox cluster test CA")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "lb.key", "-out", "lb.csr",
        "-subj", "/CN=localhost")
    with open(os.path.join(d, "ext.cnf"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n"
                "keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n")
    run("x509", "-req", "-in", "lb.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "lb.pem", "-days", "2", "-extfile", "ext.cnf")
    return {"ca": os.path.join(d, "ca.pem"), "cert": os.path.join(d, "lb.pem"),
            "key": os.path.join(d, "lb.key")}


def test_the_balancer_over_tls_routes_both_channels(spawn, start_cluster, pki):
    c = start_cluster(pki=pki)
    b = spawn(c.tls_bridge_args(pki["ca"]) + ["--transport", "grpc"])
    before = backend_counts(c)
    ids = [b.create() for _ in range(6)]
    assert {c.node_of(i) for i in ids} == set(c.nodes)
    for sid in ids:
        b.write_file(sid, "/tmp/t", "over tls " + sid)
        assert b.run(sid, "cat /tmp/t")["stdout"] == "over tls " + sid
    after = backend_counts(c)
    for n in c.nodes:
        mine = sum(1 for i in ids if c.node_of(i) == n)
        assert after["opensandbox_grpc_" + n] - before.get("opensandbox_grpc_" + n, 0) == 2 * mine
    assert {s["sandboxId"] for s in b.call("sandbox/list", {})["sandboxes"]} == set(ids)
    # without the CA, the balancer's certificate is refused
    other = spawn(c.tls_bridge_args(pki["ca"])[:4])
    other.error("sandbox/create", {}, code=-32003)


def test_nodes_with_an_api_key_work_through_the_balancer(spawn, start_cluster):
    """The key goes through HAProxy to the nodes (also in the merged list); health checks
    need none; without the key the nodes refuse."""
    c = start_cluster(node_args=("--api-key", "cluster-key"))
    b = spawn(c.bridge_args() + ["--api-key", "cluster-key"])
    ids = [b.create() for _ in range(3)]
    assert {c.node_of(i) for i in ids} == set(c.nodes)
    for sid in ids:
        assert b.run(sid, "echo k")["stdout"] == "k\n"
    assert {s["sandboxId"] for s in b.call("sandbox/list", {})["sandboxes"]} == set(ids)
    for n in c.nodes:  # the checks pass on both pools: they need no key
        c.wait_status(n, "UP", scaled(10))
    nokey = spawn(c.bridge_args())
    nokey.error("sandbox/list", {})
    nokey.error("sandbox/run", {"sandboxId": ids[0], "command": "true"})
