"""opensandboxd's gRPC extension (proto/sandbox_ext.proto, service sandbox.ext.SandboxExt),
through Python grpcio against a real server: RunStream (output as it comes), Exec (an exec
session on a bidirectional stream), Upload and Download (files of any size in chunks).

Message classes come from proto/sandbox.proto and proto/sandbox_ext.proto through
grpc_tools.protoc (python3-grpc-tools); calls go through channel.unary_stream /
stream_stream / stream_unary with the method paths, which is what generated stubs do."""
import hashlib
import importlib
import json
import os
import queue
import sys
import tempfile
import threading
import time
import urllib.request

import pytest

from harness import REPO, scaled

grpc = pytest.importorskip("grpc", reason="python3-grpcio is not installed")
protoc = pytest.importorskip("grpc_tools.protoc", reason="python3-grpc-tools is not installed")

SVC = "/sandbox.ext.SandboxExt/"


@pytest.fixture(scope="module")
def pb():
    out = tempfile.mkdtemp(prefix="osb-ext-pb2-")
    proto_dir = os.path.join(REPO, "proto")
    rc = protoc.main(["protoc", "-I" + proto_dir, "--python_out=" + out,
                      os.path.join(proto_dir, "sandbox.proto"),
                      os.path.join(proto_dir, "sandbox_ext.proto")])
    assert rc == 0, "grpc_tools.protoc failed"
    sys.path.insert(0, out)
    try:
        base = importlib.import_module("sandbox_pb2")
        ext = importlib.import_module("sandbox_ext_pb2")
    finally:
        sys.path.remove(out)
    return base, ext


class Ext:
    def __init__(self, server, pb):
        self.server = server
        self.base, self.ext = pb
        self.channel = grpc.insecure_channel(server.grpc_target)
        b, e = self.base, self.ext
        self.run_stream = self.channel.unary_stream(
            SVC + "RunStream", request_serializer=b.RunCommandRequest.SerializeToString,
            response_deserializer=e.OutputEvent.FromString)
        self.exec = self.channel.stream_stream(
            SVC + "Exec", request_serializer=e.ExecInput.SerializeToString,
            response_deserializer=e.OutputEvent.FromString)
        self.upload = self.channel.stream_unary(
            SVC + "Upload", request_serializer=e.UploadChunk.SerializeToString,
            response_deserializer=e.UploadResponse.FromString)
        self.download = self.channel.unary_stream(
            SVC + "Download", request_serializer=e.DownloadRequest.SerializeToString,
            response_deserializer=e.DownloadChunk.FromString)
        self.run = self.channel.unary_unary(
            "/sandbox.SandboxService/RunCommand",
            request_serializer=b.RunCommandRequest.SerializeToString,
            response_deserializer=b.RunCommandResponse.FromString)
        self.read = self.channel.unary_unary(
            "/sandbox.SandboxService/ReadFile",
            request_serializer=b.ReadFileRequest.SerializeToString,
            response_deserializer=b.ReadFileResponse.FromString)

    def close(self):
        self.channel.close()

    def create(self):
        req = urllib.request.Request(self.server.url + "/sessions", data=b"{}", method="POST",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=scaled(30)) as r:
            return json.loads(r.read())["session_id"]

    def req(self, sid, script):
        return self.base.RunCommandRequest(session_id=sid, command=["/bin/sh", "-c", script])

    def sh(self, sid, script):
        return self.run(self.req(sid, script), timeout=scaled(30))

    def gone(self, sid, pidfile, timeout=2.0):
        """Wait until the process whose pid is in pidfile (in the sandbox) is gone."""
        deadline = time.monotonic() + scaled(timeout)
        while time.monotonic() < deadline:
            r = self.sh(sid, "kill -0 $(cat %s) 2>/dev/null && echo alive || echo gone" % pidfile)
            if r.stdout == "gone\n":
                return True
            time.sleep(0.05)
        return False


@pytest.fixture
def ext(server, pb):
    c = Ext(server, pb)
    yield c
    c.close()


class ExecCall:
    """A bidirectional Exec call fed from a queue."""

    def __init__(self, ext, first):
        self.q = queue.Queue()
        self.q.put(first)
        self.call = ext.exec(self._inputs(), timeout=scaled(60))

    def _inputs(self):
        while True:
            m = self.q.get()
            if m is None:
                return
            yield m

    def send(self, m):
        self.q.put(m)

    def end_input(self):
        self.q.put(None)

    def next(self):
        return next(self.call)


# ---- RunStream ----

def test_run_stream_sends_output_as_it_comes(ext):
    sid = ext.create()
    t0 = time.monotonic()
    events = []
    for ev in ext.run_stream(ext.req(sid, "echo one; echo err >&2; sleep 1; echo two; exit 3"),
                             timeout=scaled(30)):
        events.append((time.monotonic() - t0, ev))
    last = events[-1][1]
    assert last.exited and last.exit_code == 3 and last.signal == 0 and not last.truncated
    out = b"".join(e.stdout for _, e in events)
    err = b"".join(e.stderr for _, e in events)
    assert out == b"one\ntwo\n" and err == b"err\n"
    first_one = next(t for t, e in events if b"one" in e.stdout)
    assert events[-1][0] - first_one > 0.7, "the first line came only at the end"


def test_run_stream_is_capped_at_max_output_and_says_truncated(start_server, pb):
    s = start_server("--max-output", "100000")
    c = Ext(s, pb)
    try:
        sid = c.create()
        events = list(c.run_stream(c.req(sid, "head -c 3000000 /dev/zero; echo done >&2"),
                                   timeout=scaled(30)))
        assert sum(len(e.stdout) for e in events) == 100000
        assert b"".join(e.stderr for e in events) == b"done\n"
        assert events[-1].exited and events[-1].truncated
        assert all(len(e.stdout) + len(e.stderr) <= 1 << 20 for e in events)
    finally:
        c.close()


def test_run_stream_refusals(ext):
    with pytest.raises(grpc.RpcError) as ei:
        list(ext.run_stream(ext.req("no-such-session", "true"), timeout=scaled(30)))
    assert ei.value.code() == grpc.StatusCode.NOT_FOUND
    sid = ext.create()
    with pytest.raises(grpc.RpcError) as ei:
        list(ext.run_stream(ext.base.RunCommandRequest(session_id=sid), timeout=scaled(30)))
    assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_run_stream_cancel_kills_the_command(ext):
    sid = ext.create()
    call = ext.run_stream(ext.req(sid, "echo $$ > /tmp/p; echo up; exec sleep 60"),
                          timeout=scaled(30))
    ev = next(call)
    assert ev.stdout == b"up\n"
    call.cancel()
    assert ext.gone(sid, "/tmp/p")


# ---- Exec ----

def test_exec_cat_round_trips_stdin_then_ends_at_eof(ext):
    sid = ext.create()
    e = ext.ext
    x = ExecCall(ext, e.ExecInput(start=ext.req(sid, "cat"), stdin=True))
    assert x.next().started
    for line in (b"hello\n", b"again\n"):
        x.send(e.ExecInput(data=line))
        got = b""
        while got != line:
            ev = x.next()
            got += ev.stdout
    x.send(e.ExecInput(eof=True))
    x.end_input()
    rest = list(x.call)
    assert rest[-1].exited and rest[-1].exit_code == 0 and rest[-1].signal == 0


def test_exec_moves_large_stdin_with_flow_control(ext):
    sid = ext.create()
    e = ext.ext
    x = ExecCall(ext, e.ExecInput(start=ext.req(sid, "sha256sum"), stdin=True))
    assert x.next().started
    blob = os.urandom(1 << 20)
    for _ in range(6):
        x.send(e.ExecInput(data=blob))
    x.send(e.ExecInput(eof=True))
    x.end_input()
    evs = list(x.call)
    want = hashlib.sha256(blob * 6).hexdigest()
    assert b"".join(ev.stdout for ev in evs).decode().split()[0] == want
    assert evs[-1].exited and evs[-1].exit_code == 0


def test_exec_signal_and_cancel_end_the_command(ext):
    sid = ext.create()
    e = ext.ext
    x = ExecCall(ext, e.ExecInput(start=ext.req(sid, "exec sleep 60")))
    assert x.next().started
    x.send(e.ExecInput(signal=15))
    evs = list(x.call)
    assert evs[-1].exited and evs[-1].signal == 15 and evs[-1].exit_code == 0

    x = ExecCall(ext, e.ExecInput(start=ext.req(sid, "echo $$ > /tmp/q; exec sleep 60")))
    assert x.next().started
    time.sleep(0.2)
    x.call.cancel()
    assert ext.gone(sid, "/tmp/q")


def test_exec_output_arrives_while_it_runs_and_without_stdin(ext):
    sid = ext.create()
    e = ext.ext
    x = ExecCall(ext, e.ExecInput(start=ext.req(sid, "cat; echo a; sleep 1; echo b")))
    x.end_input()  # half-closing the input does not end the command
    assert x.next().started
    t0 = time.monotonic()
    out = b""
    while b"a\n" not in out:
        out += x.next().stdout
    assert time.monotonic() - t0 < scaled(0.8)
    evs = list(x.call)
    assert out + b"".join(ev.stdout for ev in evs) == b"a\nb\n"
    assert evs[-1].exited


def test_exec_refusals(ext):
    e = ext.ext
    x = ExecCall(ext, e.ExecInput(data=b"no start"))
    with pytest.raises(grpc.RpcError) as ei:
        x.next()
    assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    x = ExecCall(ext, e.ExecInput(start=ext.req("no-such-session", "true")))
    with pytest.raises(grpc.RpcError) as ei:
        x.next()
    assert ei.value.code() == grpc.StatusCode.NOT_FOUND
    sid = ext.create()
    x = ExecCall(ext, e.ExecInput(start=ext.req(sid, "exec sleep 60"), stdin=True))
    assert x.next().started
    x.send(e.ExecInput(start=ext.req(sid, "true")))  # a second start: killed, refused
    with pytest.raises(grpc.RpcError) as ei:
        list(x.call)
    assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_server_stop_ends_streams_promptly(start_server, pb):
    s = start_server()
    c = Ext(s, pb)
    try:
        sid = c.create()
        x = ExecCall(c, c.ext.ExecInput(start=c.req(sid, "exec sleep 60")))
        assert x.next().started
        r = c.run_stream(c.req(sid, "echo x; exec sleep 60"), timeout=scaled(30))
        assert next(r).stdout == b"x\n"
        t0 = time.monotonic()
        s.stop()
        for call in (x.call, r):
            with pytest.raises(grpc.RpcError):
                list(call)
        assert time.monotonic() - t0 < scaled(2)
    finally:
        c.close()


# ---- Upload and Download ----

def chunks(ext, sid, path, data, size=1 << 20):
    e = ext.ext
    yield e.UploadChunk(session_id=sid, path=path)
    for i in range(0, len(data), size):
        yield e.UploadChunk(data=data[i:i + size], commit=i + size >= len(data))


def test_upload_and_download_lift_max_file(start_server, pb):
    s = start_server("--max-file", "1048576")
    c = Ext(s, pb)
    try:
        sid = c.create()
        data = os.urandom(9 << 20) + b"tail"
        r = c.upload(chunks(c, sid, "/data/big.bin", data), timeout=scaled(60))
        assert r.bytes_written == len(data)
        assert c.read(c.base.ReadFileRequest(session_id=sid, path="/data/big.bin"),
                      timeout=scaled(30)).error  # past --max-file for ReadFile
        got = list(c.download(c.ext.DownloadRequest(session_id=sid, path="/data/big.bin"),
                              timeout=scaled(60)))
        assert got[0].size == len(data)
        assert hashlib.sha256(b"".join(g.data for g in got)).digest() == hashlib.sha256(data).digest()
        assert all(len(g.data) <= 1 << 20 for g in got)
        # empty file: one empty chunk
        r = c.upload(iter([c.ext.UploadChunk(session_id=sid, path="empty", commit=True)]),
                     timeout=scaled(30))
        assert r.bytes_written == 0
        got = list(c.download(c.ext.DownloadRequest(session_id=sid, path="/empty"),
                              timeout=scaled(30)))
        assert len(got) == 1 and got[0].data == b"" and got[0].size == 0
    finally:
        c.close()


def test_cancelled_upload_leaves_nothing(ext):
    sid = ext.create()
    ext.sh(sid, "mkdir -p /up && echo old > /up/f")
    gate = threading.Event()

    def slow():
        yield ext.ext.UploadChunk(session_id=sid, path="/up/f", data=b"new" * 1000)
        yield ext.ext.UploadChunk(data=b"x" * (1 << 20))
        gate.set()
        time.sleep(scaled(30))  # never ends by itself
        yield ext.ext.UploadChunk(data=b"late")

    fut = ext.upload.future(slow(), timeout=scaled(60))
    assert gate.wait(scaled(10))
    time.sleep(0.3)
    fut.cancel()
    deadline = time.monotonic() + scaled(5)
    while time.monotonic() < deadline:
        out = ext.sh(sid, "ls -a /up; cat /up/f").stdout
        if "osb-upload" not in out:
            break
        time.sleep(0.05)
    assert out == ".\n..\nf\nold\n"
    # input that ends without a commit writes nothing either
    with pytest.raises(grpc.RpcError) as ei:
        ext.upload(iter([ext.ext.UploadChunk(session_id=sid, path="/up/g", data=b"x")]),
                   timeout=scaled(30))
    assert ei.value.code() == grpc.StatusCode.CANCELLED
    assert ext.sh(sid, "ls -a /up").stdout == ".\n..\nf\n"


def test_file_refusals(ext):
    sid = ext.create()
    e = ext.ext
    with pytest.raises(grpc.RpcError) as ei:
        ext.upload(iter([e.UploadChunk(session_id=sid, path="/tmp", data=b"x", commit=True)]),
                   timeout=scaled(30))
    assert ei.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "directory" in ei.value.details()
    with pytest.raises(grpc.RpcError) as ei:
        ext.upload(iter([e.UploadChunk(data=b"x")]), timeout=scaled(30))
    assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as ei:
        ext.upload(iter([e.UploadChunk(session_id="nope", path="/x")]), timeout=scaled(30))
    assert ei.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as ei:
        list(ext.download(e.DownloadRequest(session_id=sid, path="/missing"), timeout=scaled(30)))
    assert ei.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(grpc.RpcError) as ei:
        list(ext.download(e.DownloadRequest(session_id=sid, path="/tmp"), timeout=scaled(30)))
    assert ei.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(grpc.RpcError) as ei:
        list(ext.download(e.DownloadRequest(session_id="nope", path="/x"), timeout=scaled(30)))
    assert ei.value.code() == grpc.StatusCode.NOT_FOUND
