"""server/health against a frozen server (SIGSTOP) answers within one request timeout: the
RunStream probe and then /health share the call's one deadline (/health gets what the probe
left), so the whole call is bounded by --request-timeout-ms, not twice that."""
import os
import signal
import time

from harness import scaled


def test_health_of_a_frozen_server_takes_one_request_timeout(spawn, server):
    s = server
    b = spawn(s.bridge_args() + ["--request-timeout-ms", "1000"])
    os.kill(s.proc.pid, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        r = b.call("server/health", timeout=scaled(10))
        took = time.monotonic() - t0
    finally:
        os.kill(s.proc.pid, signal.SIGCONT)
    assert r["ok"] is False and "stream" not in r["features"]
    assert 0.9 < took < scaled(1.6), "server/health took %.2fs" % took
    # once the server is back, the probe that never answered is asked again
    r = b.call("server/health")
    assert r["ok"] is True and "stream" in r["features"], r
