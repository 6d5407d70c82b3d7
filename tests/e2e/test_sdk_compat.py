"""opensandboxd speaks the OpenSandbox wire protocol the way the official Python SDK uses it:
HTTP for sessions, gRPC (python3-grpcio, a different gRPC implementation from ours) for
commands and files, with the SDK's defaults. No bridge involved.

Message classes come from proto/sandbox.proto through grpc_tools.protoc when
python3-grpc-tools is installed, else from a FileDescriptorProto written here from WIRE.md
(and when both exist, a test checks that they agree)."""
import importlib
import json
import os
import sys
import tempfile
import time
import urllib.error
import urllib.request

import pytest

from harness import REPO, scaled

grpc = pytest.importorskip("grpc", reason="python3-grpcio is not installed")
from google.protobuf import descriptor_pb2, descriptor_pool  # noqa: E402

try:
    from google.protobuf import message_factory
except ImportError:  # pragma: no cover
    message_factory = None

SDK_DEFAULTS = {"time_ms": 300000, "mem_kb": 2097152, "fsize_kb": 1048576, "nofile": 256}

# WIRE.md's messages: name -> [(field, number, type)], type "string"/"bytes"/"uint64"/
# "int32"/"bool"/"map"/"repeated string"/"repeated <Message>".
WIRE = {
    "RunCommandRequest": [("session_id", 1, "string"), ("command", 2, "repeated string"),
                          ("time_ms", 3, "uint64"), ("mem_kb", 4, "uint64"),
                          ("fsize_kb", 5, "uint64"), ("nofile", 6, "uint64"),
                          ("env", 7, "map"), ("cwd", 8, "string")],
    "RunCommandResponse": [("stdout", 1, "string"), ("stderr", 2, "string"),
                           ("exit_code", 3, "int32"), ("signal", 4, "int32")],
    "WriteFileRequest": [("session_id", 1, "string"), ("path", 2, "string"), ("content", 3, "bytes")],
    "WriteFileResponse": [("success", 1, "bool"), ("error", 2, "string")],
    "ReadFileRequest": [("session_id", 1, "string"), ("path", 2, "string")],
    "ReadFileResponse": [("content", 1, "bytes"), ("error", 2, "string")],
    "SetEnvRequest": [("session_id", 1, "string"), ("env", 2, "map")],
    "SetEnvResponse": [("success", 1, "bool")],
    "SetCwdRequest": [("session_id", 1, "string"), ("cwd", 2, "string")],
    "SetCwdResponse": [("success", 1, "bool")],
    "BulkFileEntry": [("path", 1, "string"), ("content", 2, "bytes")],
    "WriteFilesRequest": [("session_id", 1, "string"), ("files", 2, "repeated BulkFileEntry")],
    "FileError": [("path", 1, "string"), ("error", 2, "string")],
    "WriteFilesResponse": [("success", 1, "bool"), ("errors", 2, "repeated FileError")],
}
SERVICE = [("RunCommand", "RunCommandRequest", "RunCommandResponse"),
           ("WriteFile", "WriteFileRequest", "WriteFileResponse"),
           ("WriteFiles", "WriteFilesRequest", "WriteFilesResponse"),
           ("ReadFile", "ReadFileRequest", "ReadFileResponse"),
           ("SetEnv", "SetEnvRequest", "SetEnvResponse"),
           ("SetCwd", "SetCwdRequest", "SetCwdResponse")]


def _wire_file_descriptor():
    F = descriptor_pb2.FieldDescriptorProto
    scalar = {"string": F.TYPE_STRING, "bytes": F.TYPE_BYTES, "uint64": F.TYPE_UINT64,
              "int32": F.TYPE_INT32, "bool": F.TYPE_BOOL}
    fdp = descriptor_pb2.FileDescriptorProto(name="osb_wire_test.proto", package="sandbox",
                                             syntax="proto3")
    for msg, fields in WIRE.items():
        m = fdp.message_type.add(name=msg)
        for fname, num, ftype in fields:
            f = m.field.add(name=fname, number=num)
            if ftype == "map":
                entry = "".join(p.capitalize() for p in fname.split("_")) + "Entry"
                e = m.nested_type.add(name=entry)
                e.options.map_entry = True
                e.field.add(name="key", number=1, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
                e.field.add(name="value", number=2, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
                f.label = F.LABEL_REPEATED
                f.type = F.TYPE_MESSAGE
                f.type_name = ".sandbox.%s.%s" % (msg, entry)
            elif ftype.startswith("repeated "):
                inner = ftype.split(" ", 1)[1]
                f.label = F.LABEL_REPEATED
                if inner in scalar:
                    f.type = scalar[inner]
                else:
                    f.type = F.TYPE_MESSAGE
                    f.type_name = ".sandbox." + inner
            else:
                f.label = F.LABEL_OPTIONAL
                f.type = scalar[ftype]
    return fdp


class _Messages:
    def __init__(self, classes, source):
        self.__dict__.update(classes)
        self.source = source


def _from_protoc():
    try:
        from grpc_tools import protoc
    except ImportError:
        return None
    out = tempfile.mkdtemp(prefix="osb-pb2-")
    proto_dir = os.path.join(REPO, "proto")
    rc = protoc.main(["protoc", "-I" + proto_dir, "--python_out=" + out,
                      os.path.join(proto_dir, "sandbox.proto")])
    assert rc == 0, "grpc_tools.protoc failed on proto/sandbox.proto"
    sys.path.insert(0, out)
    try:
        mod = importlib.import_module("sandbox_pb2")
    finally:
        sys.path.remove(out)
    return _Messages({n: getattr(mod, n) for n in WIRE}, "protoc")


def _from_descriptor():
    pool = descriptor_pool.DescriptorPool()
    pool.Add(_wire_file_descriptor())
    classes = {}
    for n in WIRE:
        d = pool.FindMessageTypeByName("sandbox." + n)
        if hasattr(message_factory, "GetMessageClass"):
            classes[n] = message_factory.GetMessageClass(d)
        else:
            classes[n] = message_factory.MessageFactory(pool).GetPrototype(d)
    return _Messages(classes, "descriptor")


@pytest.fixture(scope="module")
def pb():
    return _from_protoc() or _from_descriptor()


class Client:
    """What the SDK does: HTTP on the base URL, gRPC unary calls on the gRPC port."""

    def __init__(self, server, pb, api_key=None):
        self.base = server.url
        self.pb = pb
        self.api_key = api_key
        self.channel = grpc.insecure_channel(server.grpc_target)
        self.calls = {}
        for name, req, resp in SERVICE:
            self.calls[name] = self.channel.unary_unary(
                "/sandbox.SandboxService/" + name,
                request_serializer=getattr(pb, req).SerializeToString,
                response_deserializer=getattr(pb, resp).FromString)

    def close(self):
        self.channel.close()

    def metadata(self):
        return [("authorization", "Bearer " + self.api_key)] if self.api_key else None

    def grpc(self, name, **fields):
        req_cls = getattr(self.pb, dict((n, r) for n, r, _ in SERVICE)[name])
        return self.calls[name](req_cls(**fields), timeout=scaled(30), metadata=self.metadata())

    def http(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if self.api_key:
            req.add_header("Authorization", "Bearer " + self.api_key)
        try:
            with urllib.request.urlopen(req, timeout=scaled(30)) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def create(self, env=None):
        status, body = self.http("POST", "/sessions", {"env": env} if env else {})
        assert status == 200, (status, body)
        return json.loads(body)

    def run(self, sid, cmd, **kw):
        fields = dict(SDK_DEFAULTS)
        fields.update(kw)
        return self.grpc("RunCommand", session_id=sid, command=["/bin/sh", "-c", cmd], **fields)


@pytest.fixture
def client(server, pb):
    c = Client(server, pb)
    yield c
    c.close()


def test_proto_file_matches_the_wire_contract(pb):
    if pb.source != "protoc":
        pytest.skip("python3-grpc-tools is not installed: proto/sandbox.proto not compiled here")
    ref = _from_descriptor()
    for name in WIRE:
        got = getattr(pb, name).DESCRIPTOR
        want = getattr(ref, name).DESCRIPTOR
        assert [(f.name, f.number, f.type, f.label) for f in got.fields] == \
            [(f.name, f.number, f.type, f.label) for f in want.fields], name


def test_sdk_quick_start_against_opensandboxd(client):
    s = client.create()
    assert set(s) >= {"session_id", "preview_url"}
    sid = s["session_id"]
    assert isinstance(sid, str) and sid
    assert s["preview_url"] is None or isinstance(s["preview_url"], str)

    r = client.run(sid, "echo hello")
    assert (r.stdout, r.stderr, r.exit_code, r.signal) == ("hello\n", "", 0, 0)

    w = client.grpc("WriteFile", session_id=sid, path="/tmp/test.py", content=b"print('hi')")
    assert w.success is True and w.error == ""
    rd = client.grpc("ReadFile", session_id=sid, path="/tmp/test.py")
    assert rd.content == b"print('hi')" and rd.error == ""

    assert client.grpc("SetEnv", session_id=sid, env={"MY_VAR": "value"}).success is True
    assert client.run(sid, "echo $MY_VAR").stdout == "value\n"

    assert client.grpc("SetCwd", session_id=sid, cwd="/tmp").success is True
    assert client.run(sid, "pwd").stdout == "/tmp\n"

    status, _ = client.http("DELETE", "/sessions/" + sid)
    assert status == 204
    with pytest.raises(grpc.RpcError) as ei:
        client.run(sid, "true")
    assert ei.value.code() == grpc.StatusCode.NOT_FOUND


def test_unknown_session_is_grpc_not_found_for_every_method(client):
    calls = [("RunCommand", {"command": ["/bin/true"]}), ("WriteFile", {"path": "/tmp/x", "content": b""}),
             ("ReadFile", {"path": "/tmp/x"}), ("SetEnv", {"env": {"A": "b"}}),
             ("SetCwd", {"cwd": "/tmp"}), ("WriteFiles", {"files": []})]
    for name, fields in calls:
        with pytest.raises(grpc.RpcError) as ei:
            client.grpc(name, session_id="no-such-session", **fields)
        assert ei.value.code() == grpc.StatusCode.NOT_FOUND, name


def test_zero_limits_mean_the_defaults(client):
    sid = client.create()["session_id"]
    r = client.grpc("RunCommand", session_id=sid, command=["/bin/sh", "-c", "ulimit -n; ulimit -t"])
    assert r.stdout == "256\n300\n"


def test_run_env_and_cwd_fields(client):
    sid = client.create(env={"A": "session"})["session_id"]
    r = client.run(sid, 'echo "$A $B"; pwd', env={"B": "req"}, cwd="/home")
    assert r.stdout == "session req\n/home\n"
    assert client.run(sid, "pwd", cwd="/").stdout == client.run(sid, "pwd").stdout


def test_signal_and_exit_code_fields(client):
    sid = client.create()["session_id"]
    r = client.run(sid, "exit 5")
    assert (r.exit_code, r.signal) == (5, 0)
    r = client.run(sid, "kill -9 $$")
    assert (r.exit_code, r.signal) == (0, 9)


def test_non_utf8_output_is_still_a_valid_proto_string(client):
    # Python's protobuf rejects invalid UTF-8 in a string field; the call must parse.
    sid = client.create()["session_id"]
    r = client.run(sid, r"printf 'a\377b'")
    assert r.stdout == "a\ufffdb"


def test_file_failures_are_not_grpc_errors(client):
    sid = client.create()["session_id"]
    rd = client.grpc("ReadFile", session_id=sid, path="/tmp/missing")
    assert rd.error != "" and rd.content == b""
    client.run(sid, "mkdir -p /tmp/dir")
    w = client.grpc("WriteFile", session_id=sid, path="/tmp/dir", content=b"x")
    assert w.success is False and w.error != ""


def test_write_file_creates_parents_with_mode_0644(client):
    sid = client.create()["session_id"]
    assert client.grpc("WriteFile", session_id=sid, path="/tmp/p/q/r.txt", content=b"\x00\xff").success
    assert client.run(sid, "stat -c %a /tmp/p/q/r.txt").stdout == "644\n"
    assert client.grpc("ReadFile", session_id=sid, path="/tmp/p/q/r.txt").content == b"\x00\xff"


def test_write_files_reports_per_file_errors(client):
    sid = client.create()["session_id"]
    client.run(sid, "mkdir -p /tmp/d")
    E = client.pb.BulkFileEntry
    r = client.grpc("WriteFiles", session_id=sid, files=[E(path="/tmp/a.txt", content=b"a"),
                                                          E(path="/tmp/d", content=b"b")])
    assert [e.path for e in r.errors] == ["/tmp/d"]
    assert r.success is False
    assert client.run(sid, "cat /tmp/a.txt").stdout == "a"


def test_http_session_routes(client):
    sid = client.create(env={"K": "v"})["session_id"]
    status, body = client.http("GET", "/sessions/" + sid)
    assert status == 200
    info = json.loads(body)
    assert set(info) >= {"id", "env", "cwd", "age_secs", "idle_secs", "preview_url", "ports", "status"}
    assert info["id"] == sid and info["env"].get("K") == "v"
    status, body = client.http("GET", "/sessions")
    assert status == 200 and sid in [s["id"] for s in json.loads(body)]
    assert client.http("GET", "/sessions/no-such-session")[0] == 404
    assert client.http("DELETE", "/sessions/no-such-session")[0] == 404
    assert client.http("DELETE", "/sessions/" + sid)[0] == 204
    assert client.http("GET", "/sessions/" + sid)[0] == 404


def test_http_run_env_cwd_and_files(client):
    sid = client.create()["session_id"]
    status, body = client.http("POST", "/sessions/%s/run" % sid,
                               {"command": ["/bin/sh", "-c", "echo hi; exit 2"]})
    assert status == 200
    r = json.loads(body)
    assert r["stdout"] == "hi\n" and r["exit_code"] == 2
    assert client.http("POST", "/sessions/%s/env" % sid, {"env": {"Z": "zz"}})[0] == 200
    assert client.http("POST", "/sessions/%s/cwd" % sid, {"cwd": "/tmp"})[0] == 200
    assert client.run(sid, 'echo "$Z"; pwd').stdout == "zz\n/tmp\n"
    import base64
    status, body = client.http("POST", "/sessions/%s/files/write" % sid,
                               {"path": "/tmp/h.txt", "content": base64.b64encode(b"via http").decode()})
    assert status == 200 and json.loads(body)["success"] is True
    status, body = client.http("GET", "/sessions/%s/files/read?path=/tmp/h.txt" % sid)
    assert status == 200 and base64.b64decode(json.loads(body)["content"]) == b"via http"
    assert client.http("GET", "/sessions/%s/files/read?path=/tmp/none" % sid)[0] == 404
    status, body = client.http("GET", "/sessions/%s/files/list?path=/tmp" % sid)
    assert status == 200
    files = json.loads(body)["files"]
    assert "h.txt" in [f["name"] for f in files]
    assert [f["name"] for f in files] == sorted(f["name"] for f in files)


def test_http_one_shot_run_and_health(client):
    status, body = client.http("POST", "/run", {"command": ["/bin/echo", "once"]})
    assert status == 200 and json.loads(body)["stdout"] == "once\n"
    status, body = client.http("GET", "/health")
    assert status == 200 and body.strip() == b"OK"


def test_http_background_processes(client):
    sid = client.create()["session_id"]
    status, body = client.http("POST", "/sessions/%s/background" % sid,
                               {"command": ["/bin/sh", "-c", "echo bg-$PORT; sleep 30"], "port": 0})
    assert status == 200
    started = json.loads(body)
    assert started["pid"] > 0 and started["port"] > 0
    deadline = time.monotonic() + scaled(10)
    while True:
        st = json.loads(client.http("GET", "/sessions/%s/background/status" % sid)[1])
        if "bg-%d" % started["port"] in st["log"] or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert {"pid": started["pid"], "alive": True} in st["pids"]
    assert "bg-%d" % started["port"] in st["log"]
    status, body = client.http("DELETE", "/sessions/%s/background" % sid)
    assert status == 200
    killed = json.loads(body)
    assert started["pid"] in killed["killed"] and killed["total"] >= 1


def test_api_key_is_required_when_the_server_has_one(start_server, pb):
    s = start_server("--api-key", "k-123")
    anon = Client(s, pb)
    keyed = Client(s, pb, api_key="k-123")
    try:
        status, _ = anon.http("POST", "/sessions", {})
        assert status == 401
        sid = keyed.create()["session_id"]
        assert keyed.run(sid, "echo ok").stdout == "ok\n"
        with pytest.raises(grpc.RpcError) as ei:
            anon.run(sid, "true")
        assert ei.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        anon.close()
        keyed.close()


def test_cancelled_grpc_run_is_killed_on_the_server(client):
    sid = client.create()["session_id"]
    fut = client.calls["RunCommand"].future(client.pb.RunCommandRequest(
        session_id=sid, command=["/bin/sh", "-c", "sleep 3; echo x > /tmp/ran-on"], **SDK_DEFAULTS))
    time.sleep(0.5)
    fut.cancel()
    time.sleep(3.5)
    assert client.grpc("ReadFile", session_id=sid, path="/tmp/ran-on").error != ""
