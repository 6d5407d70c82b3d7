"""conftest.py - fixtures for the e2e suite.

backend   "local" (the bridge without --url: the embedded engine) or "remote" (the bridge
          with --url/--grpc-port against a fresh opensandboxd); tests that take `bridge`
          run once for each.
server    a fresh opensandboxd for this test, stopped (SIGTERM by PID) afterwards.
bridge    a bridge for the backend, NDJSON framing; closed (EOF) afterwards.
sandbox   a sandbox created through `bridge`.
spawn     a factory for more bridges (other flags, LSP framing); each is cleaned up.
Every bridge and server a test started must end cleanly: no protocol violation on stdout, no
sanitizer report on stderr, no hang, no death by signal.

Balancer mode (OSB_E2E_CLUSTER=1, run by test_cluster.py): `server` is three opensandboxd
nodes behind HAProxy (cluster.py), and only the tests of the bridge against a server run:
backend "remote" and the tests that take `server`, but for the files in CLUSTER_SKIP_FILES,
which test opensandboxd itself rather than the bridge through it.
"""
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # noqa: E402

CLUSTER = os.environ.get("OSB_E2E_CLUSTER") == "1"
CLUSTER_SKIP_FILES = {
    "test_sdk_compat.py",        # the public SDKs' own clients, straight to opensandboxd
    "test_server_ext.py",        # opensandboxd's extension by grpcio, straight to it (no
                                 # opensandbox-session metadata for a balancer to route by)
    "test_live_remote.py",       # kills its one opensandboxd mid-run
    "test_security.py",          # opensandboxd's isolation, by gRPC/HTTP straight to it
    "test_server_lifecycle.py",  # opensandboxd's process life (signals, ports, flags)
    "test_cluster.py",           # starts its own clusters
    "test_valgrind.py", "test_soak.py",  # long runs of one process
}


def pytest_collection_modifyitems(config, items):
    if not CLUSTER:
        return
    keep, drop = [], []
    for item in items:
        cs = getattr(item, "callspec", None)
        remote = cs is not None and cs.params.get("backend") == "remote"
        takes_server = "server" in getattr(item, "fixturenames", ())
        if os.path.basename(str(item.fspath)) not in CLUSTER_SKIP_FILES and (remote or takes_server):
            keep.append(item)
        else:
            drop.append(item)
    items[:] = keep
    config.hook.pytest_deselected(items=drop)


def pytest_report_header(config):
    return ["bridge: %s" % harness.BRIDGE, "server: %s" % harness.SERVER]


class Tracker:
    def __init__(self):
        self.bridges = []
        self.servers = []

    def finish(self):
        problems = []
        for b in self.bridges:
            if b.returncode is None:
                b.close()
            problems += b.problems()
            if b.problems():
                print("---- bridge %s stderr tail ----\n%s" % (b.argv, b.stderr_tail()))
        for s in self.servers:
            p = s.problems()
            problems += p
            if p:
                print("---- opensandboxd stderr tail ----\n%s" % s.stderr_text()[-3000:])
        return problems


@pytest.fixture
def tracker():
    t = Tracker()
    yield t
    problems = t.finish()
    if problems:
        pytest.fail("process problems:\n" + "\n".join(problems), pytrace=False)


@pytest.fixture
def start_server(tracker):
    """Factory: start an opensandboxd with extra args; stopped at the end of the test."""
    def start(*args):
        s = harness.Server(args)
        tracker.servers.append(s)
        return s
    return start


@pytest.fixture
def server(start_server, tracker):
    if CLUSTER:
        import cluster
        c = cluster.Cluster()
        tracker.servers.append(c)
        return c
    return start_server()


@pytest.fixture
def spawn(tracker):
    """Factory: spawn(args=(), env=None, framing="ndjson") -> Bridge, cleaned up after."""
    def make(args=(), env=None, framing="ndjson", validate=True):
        b = harness.Bridge(args, env=env, framing=framing, validate=validate)
        tracker.bridges.append(b)
        return b
    return make


@pytest.fixture(params=["local", "remote"])
def backend(request):
    return request.param


@pytest.fixture
def backend_args(request, backend):
    """Bridge flags that select the backend under test."""
    if backend == "remote":
        return request.getfixturevalue("server").bridge_args()
    return []


@pytest.fixture
def bridge(spawn, backend_args):
    return spawn(backend_args)


@pytest.fixture
def sandbox(bridge):
    return bridge.create()
