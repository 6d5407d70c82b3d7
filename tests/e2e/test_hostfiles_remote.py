"""Host files through a real opensandboxd (API.md, "Live output, exec sessions and host
files"): fs/upload and fs/download on the remote backend go in chunks over the server's
Upload/Download extension, files of any size, content checked by sha256 on both sides; a
server without the extension (--no-ext, as the public server) still takes small files as one
WriteFile/ReadFile and refuses larger ones with -32006 naming what it lacks; bad local paths
are -32005; a cancelled upload leaves nothing in the sandbox; a server killed mid-transfer
gets the request answered within 2 s with no partial local file; a frozen server ends the
transfer with -32007 once it made no progress for the request timeout. Every server here is
one the test started, stopped (or killed) by its PID."""
import hashlib
import os
import signal
import time

from harness import scaled
from test_remote_faults import servers  # noqa: F401 (fixture: servers killed by PID)

MiB = 1 << 20


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(MiB)
            if not b:
                return h.hexdigest()
            h.update(b)


def random_file(path, size):
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 4 * MiB)
            f.write(os.urandom(n))
            left -= n
    return sha256_file(path)


def sandbox_sha(b, sid, path):
    r = b.call("sandbox/run", {"sandboxId": sid, "command": "sha256sum %s" % path},
               timeout=scaled(60))
    assert r["exitCode"] == 0, r
    return r["stdout"].split()[0]


def leftovers(dirpath):
    return sorted(n for n in os.listdir(dirpath) if "osb-part" in n)


def wait_empty(dirpath):
    deadline = time.monotonic() + scaled(2)
    while os.listdir(dirpath) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert os.listdir(dirpath) == []


def test_chunked_round_trip_64mib(spawn, server, tmp_path):
    b = spawn(server.bridge_args())
    sid = b.create()
    src = tmp_path / "src.bin"
    digest = random_file(src, 64 * MiB + 123)
    r = b.call("fs/upload", {"sandboxId": sid, "localPath": str(src), "path": "/data/big.bin"},
               timeout=scaled(120))
    assert r == {"bytesWritten": 64 * MiB + 123}
    assert sandbox_sha(b, sid, "/data/big.bin") == digest
    dst = tmp_path / "dst.bin"
    r = b.call("fs/download", {"sandboxId": sid, "path": "/data/big.bin", "localPath": str(dst)},
               timeout=scaled(120))
    assert r == {"bytesRead": 64 * MiB + 123}
    assert sha256_file(dst) == digest
    assert leftovers(tmp_path) == []
    # the extension is known now: health says host files of any size
    assert "upload" in b.call("server/health")["features"]


def test_chunked_edges_empty_and_whole_chunks(spawn, server, tmp_path):
    """An empty file, and one of exactly two chunks (the commit then comes in a chunk of
    its own); an existing localPath is replaced."""
    b = spawn(server.bridge_args() + ["--transport", "grpc"])
    sid = b.create()
    for name, size in (("empty", 0), ("two", 2 * MiB), ("odd", 1)):
        src = tmp_path / name
        digest = random_file(src, size)
        assert b.call("fs/upload", {"sandboxId": sid, "localPath": str(src),
                                    "path": "/e/" + name}) == {"bytesWritten": size}
        assert sandbox_sha(b, sid, "/e/" + name) == digest
        dst = tmp_path / (name + ".back")
        dst.write_bytes(b"old content")
        assert b.call("fs/download", {"sandboxId": sid, "path": "/e/" + name,
                                      "localPath": str(dst)}) == {"bytesRead": size}
        assert sha256_file(dst) == digest
    # errors on the sandbox side come through the chunked calls as before
    e = b.error("fs/download", {"sandboxId": sid, "path": "/nope", "localPath":
                                str(tmp_path / "nope")}, code=-32005)
    assert e["data"]["path"] == "/nope"
    b.error("fs/upload", {"sandboxId": sid, "localPath": str(tmp_path / "odd"), "path": "/e"},
            code=-32005)
    b.error("fs/upload", {"sandboxId": "nope", "localPath": str(tmp_path / "odd"),
                          "path": "/z"}, code=-32001)
    b.error("fs/download", {"sandboxId": "nope", "path": "/e/odd",
                            "localPath": str(tmp_path / "z")}, code=-32001)
    assert leftovers(tmp_path) == [] and not (tmp_path / "nope").exists()


def test_download_to_a_bad_local_path(spawn, server, tmp_path):
    b = spawn(server.bridge_args())
    sid = b.create()
    b.write_file(sid, "/f.txt", "hello")
    for lp in (str(tmp_path / "missing" / "f.txt"), str(tmp_path)):
        e = b.error("fs/download", {"sandboxId": sid, "path": "/f.txt", "localPath": lp},
                    code=-32005)
        assert e["data"]["localPath"] == lp and e["data"]["reason"]
    assert os.listdir(tmp_path) == []


def test_server_without_the_extension(spawn, start_server, tmp_path):
    """--no-ext answers Upload/Download UNIMPLEMENTED, as the public server: small files go
    as one WriteFile/ReadFile; larger ones are -32006 naming what the server lacks."""
    s = start_server("--no-ext")
    b = spawn(s.bridge_args() + ["--transport", "grpc", "--max-message", str(2 * MiB)])
    sid = b.create()
    small = tmp_path / "small"
    digest = random_file(small, MiB)
    for _ in range(2):  # the second time, the lack is known beforehand
        assert b.call("fs/upload", {"sandboxId": sid, "localPath": str(small),
                                    "path": "/s"}) == {"bytesWritten": MiB}
        dst = tmp_path / "small.back"
        assert b.call("fs/download", {"sandboxId": sid, "path": "/s",
                                      "localPath": str(dst)}) == {"bytesRead": MiB}
        assert sha256_file(dst) == digest
    assert sandbox_sha(b, sid, "/s") == digest
    big = tmp_path / "big"
    random_file(big, 5 * MiB)
    e = b.error("fs/upload", {"sandboxId": sid, "localPath": str(big), "path": "/b"},
                code=-32006)
    assert e["data"]["method"] == "fs/upload"
    assert "chunked" in e["message"] and "Upload" in e["message"] and "lacks" in e["message"]
    assert "upload" not in b.call("server/health")["features"]
    r = b.call("sandbox/run", {"sandboxId": sid, "command": "ls -a / | grep -c '^b$' || true"})
    assert r["stdout"] == "0\n"
    # a ReadFile reply over the bridge's --max-message: the same, for fs/download
    b.call("sandbox/run", {"sandboxId": sid, "command": "head -c 3145728 /dev/zero > /z"})
    e = b.error("fs/download", {"sandboxId": sid, "path": "/z",
                                "localPath": str(tmp_path / "z")}, code=-32006)
    assert e["data"]["method"] == "fs/download" and "Download" in e["message"]
    assert sorted(os.listdir(tmp_path)) == ["big", "small", "small.back"]


def test_cancel_during_a_large_upload_leaves_nothing(spawn, server, tmp_path):
    b = spawn(server.bridge_args())
    sid = b.create()
    big = tmp_path / "big"
    with open(big, "wb") as f:
        f.truncate(1 << 30)  # sparse: read fast, written for real in the sandbox
    b.call("sandbox/run", {"sandboxId": sid, "command": "mkdir -p /up"})
    id = b.start("fs/upload", {"sandboxId": sid, "localPath": str(big), "path": "/up/big"})
    time.sleep(0.3)
    t0 = time.monotonic()
    b.notify("$/cancelRequest", {"id": id})
    assert b.reply(id, timeout=scaled(10))["error"]["code"] == -32800
    assert time.monotonic() - t0 < scaled(2)
    deadline = time.monotonic() + scaled(5)
    while True:
        r = b.call("sandbox/run", {"sandboxId": sid, "command": "ls -A /up"})
        if r["stdout"] == "" or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert r["stdout"] == "", "left in the sandbox: %r" % r["stdout"]


def test_server_killed_during_an_upload_answers_within_2s(spawn, servers, tmp_path):  # noqa: F811
    s = servers.start()
    b = spawn(s.bridge_args() + ["--transport", "grpc"])
    sid = b.create()
    big = tmp_path / "big"
    with open(big, "wb") as f:
        f.truncate(1 << 30)
    id = b.start("fs/upload", {"sandboxId": sid, "localPath": str(big), "path": "/big"})
    time.sleep(0.3)
    killed = time.monotonic()
    servers.kill(s)
    e = b.reply(id, timeout=scaled(2) + 0.5)["error"]
    assert time.monotonic() - killed < scaled(2)
    assert e["code"] in (-32003, -32000), e


def test_server_killed_during_a_download_leaves_no_partial_file(spawn, servers, tmp_path):  # noqa: F811
    s = servers.start()
    b = spawn(s.bridge_args() + ["--transport", "grpc"])
    sid = b.create()
    b.call("sandbox/run", {"sandboxId": sid, "command": "head -c 536870912 /dev/zero > /big"},
           timeout=scaled(60))
    dst = tmp_path / "big"
    id = b.start("fs/download", {"sandboxId": sid, "path": "/big", "localPath": str(dst)})
    deadline = time.monotonic() + scaled(10)
    while time.monotonic() < deadline:  # wait until it is under way
        parts = [tmp_path / n for n in leftovers(tmp_path)]
        if parts and parts[0].stat().st_size > 0:
            break
        time.sleep(0.01)
    assert parts, "the download never started writing"
    killed = time.monotonic()
    servers.kill(s)
    e = b.reply(id, timeout=scaled(2) + 0.5)["error"]
    assert time.monotonic() - killed < scaled(2)
    assert e["code"] in (-32003, -32000), e
    assert os.listdir(tmp_path) == []


def test_frozen_server_ends_a_download_with_timeout(spawn, servers, tmp_path):  # noqa: F811
    """No chunk for the request timeout: TimeoutError, not a hang (the transfer itself has
    no deadline: it may last as long as it makes progress)."""
    s = servers.start()
    b = spawn(s.bridge_args() + ["--transport", "grpc", "--request-timeout-ms", "1500"])
    sid = b.create()
    b.call("sandbox/run", {"sandboxId": sid, "command": "head -c 536870912 /dev/zero > /big"},
           timeout=scaled(60))
    dst = tmp_path / "big"
    id = b.start("fs/download", {"sandboxId": sid, "path": "/big", "localPath": str(dst)})
    deadline = time.monotonic() + scaled(10)
    while time.monotonic() < deadline:
        parts = [tmp_path / n for n in leftovers(tmp_path)]
        if parts and parts[0].stat().st_size > 0:
            break
        time.sleep(0.01)
    os.kill(s.proc.pid, signal.SIGSTOP)
    frozen = time.monotonic()
    e = b.reply(id, timeout=scaled(10))["error"]
    took = time.monotonic() - frozen
    assert e["code"] == -32007 and e["data"]["timeoutMs"] == 1500, e
    assert 1.0 < took < scaled(5), took
    assert os.listdir(tmp_path) == []
    os.kill(s.proc.pid, signal.SIGCONT)


def test_cancel_during_a_large_download_leaves_no_file(spawn, server, tmp_path):
    b = spawn(server.bridge_args())
    sid = b.create()
    b.call("sandbox/run", {"sandboxId": sid, "command": "head -c 536870912 /dev/zero > /big"},
           timeout=scaled(60))
    dst = tmp_path / "big"
    id = b.start("fs/download", {"sandboxId": sid, "path": "/big", "localPath": str(dst)})
    deadline = time.monotonic() + scaled(10)
    while time.monotonic() < deadline and not leftovers(tmp_path):
        time.sleep(0.01)
    t0 = time.monotonic()
    b.notify("$/cancelRequest", {"id": id})
    assert b.reply(id, timeout=scaled(10))["error"]["code"] == -32800
    assert time.monotonic() - t0 < scaled(2)
    # the -32800 goes at once; the temporary file goes as the call stops, a moment later
    wait_empty(tmp_path)
    # the bridge and the server go on
    b.call("sandbox/run", {"sandboxId": sid, "command": "rm /big"})
    b.write_file(sid, "/small", "x")
    assert b.call("fs/download", {"sandboxId": sid, "path": "/small",
                                  "localPath": str(dst)}) == {"bytesRead": 1}


def test_http_transport_takes_small_files_only(spawn, server, tmp_path):
    """Over HTTP there is no chunked transfer: one request each way, as before."""
    b = spawn(server.bridge_args() + ["--transport", "http"])
    sid = b.create()
    small = tmp_path / "small"
    digest = random_file(small, 100000)
    assert b.call("fs/upload", {"sandboxId": sid, "localPath": str(small),
                                "path": "/s"}) == {"bytesWritten": 100000}
    assert sandbox_sha(b, sid, "/s") == digest
    back = tmp_path / "back"
    assert b.call("fs/download", {"sandboxId": sid, "path": "/s",
                                  "localPath": str(back)}) == {"bytesRead": 100000}
    assert sha256_file(back) == digest
    big = tmp_path / "big"
    random_file(big, 5 * MiB)
    e = b.error("fs/upload", {"sandboxId": sid, "localPath": str(big), "path": "/b"},
                code=-32006)
    assert e["data"]["method"] == "fs/upload" and "--transport http" in e["message"]


def test_frozen_server_ends_an_upload_with_timeout(spawn, servers, tmp_path):  # noqa: F811
    """The same for an upload (no chunk goes out for the request timeout); once the server
    runs again it finds the call cancelled without its commit: nothing in the sandbox."""
    s = servers.start()
    b = spawn(s.bridge_args() + ["--transport", "grpc", "--request-timeout-ms", "1500"])
    sid = b.create()
    b.call("sandbox/run", {"sandboxId": sid, "command": "mkdir /up"})
    big = tmp_path / "big"
    with open(big, "wb") as f:
        f.truncate(1 << 30)
    id = b.start("fs/upload", {"sandboxId": sid, "localPath": str(big), "path": "/up/big"})
    time.sleep(0.2)
    os.kill(s.proc.pid, signal.SIGSTOP)
    frozen = time.monotonic()
    e = b.reply(id, timeout=scaled(10))["error"]
    took = time.monotonic() - frozen
    os.kill(s.proc.pid, signal.SIGCONT)
    assert e["code"] == -32007 and e["data"]["timeoutMs"] == 1500, e
    assert 1.0 < took < scaled(5), took
    deadline = time.monotonic() + scaled(5)
    while True:
        r = b.call("sandbox/run", {"sandboxId": sid, "command": "ls -A /up"})
        if r["stdout"] == "" or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert r["stdout"] == "", "left in the sandbox: %r" % r["stdout"]
