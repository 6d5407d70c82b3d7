"""harness.py - drive the real binaries over real pipes and sockets for the e2e tests.

Server: an `opensandboxd` on free ports (it prints its ready line; we wait for it with a
deadline) stopped by SIGTERM on its own PID. Bridge: `opensandbox-bridge` as a subprocess on
pipes, speaking NDJSON or LSP framing. Every byte the bridge writes on stdout is parsed as a
protocol frame as it arrives; every reply is checked against schema/openrpc.json (the reply
envelope, the error object, and the result schema of the method the id was sent with).
Anything else on stdout, a reply that breaks the contract, or a sanitizer report on stderr is
a violation that fails the test. Every wait has a deadline: nothing here can hang a test run.

Binaries come from OSB_BRIDGE and OSB_SERVER (tests/run sets them), defaulting to build/.
"""
import base64
import json
import os
import re
import select
import signal
import socket
import subprocess
import tempfile
import threading
import time

import jsonschema

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
BRIDGE = os.environ.get("OSB_BRIDGE") or os.path.join(REPO, "build", "opensandbox-bridge")
SERVER = os.environ.get("OSB_SERVER") or os.path.join(REPO, "build", "opensandboxd")
SCHEMA_PATH = os.path.join(REPO, "schema", "openrpc.json")

# Sanitizer builds run slower: tests/run sets OSB_TIMEOUT_SCALE for them.
SCALE = float(os.environ.get("OSB_TIMEOUT_SCALE", "1"))
TIMEOUT = 30.0 * SCALE  # default deadline for one reply

SANITIZER_MARKERS = ("AddressSanitizer", "LeakSanitizer", "UndefinedBehaviorSanitizer",
                     "ThreadSanitizer", "runtime error:")

NO_PARAMS = object()  # request() sentinel: send no "params" member at all

with open(SCHEMA_PATH, encoding="utf-8") as _f:
    OPENRPC = json.load(_f)

_RESOLVER = jsonschema.RefResolver.from_schema(OPENRPC)
RESULT_VALIDATORS = {
    m["name"]: jsonschema.Draft7Validator(m["result"]["schema"], resolver=_RESOLVER)
    for m in OPENRPC["methods"]
}
ERROR_VALIDATOR = jsonschema.Draft7Validator(
    {"$ref": "#/components/schemas/ErrorObject"}, resolver=_RESOLVER)
METHODS = sorted(m["name"] for m in OPENRPC["methods"])

APP_ERROR_TYPES = {
    -32000: "OpenSandboxError", -32001: "SandboxNotFoundError", -32003: "SandboxConnectionError",
    -32004: "CommandExecutionError", -32005: "FileOperationError", -32006: "UnsupportedError",
    -32007: "TimeoutError", -32008: "BusyError",
}


def scaled(seconds):
    return seconds * SCALE


def schema_errors(validator, instance):
    return ["%s at %s" % (e.message, "/".join(str(p) for p in e.absolute_path) or "(root)")
            for e in validator.iter_errors(instance)]


def b64(data):
    return base64.b64encode(data).decode("ascii")


def closed_port():
    """A TCP port on 127.0.0.1 that nothing listens on (bound, then released)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def clean_env(extra=None):
    """The environment for a child: ours without OPENSANDBOX_* (so a developer's settings do
    not leak into the tests), plus extra."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENSANDBOX_")}
    if extra:
        env.update(extra)
    return env


def _id_key(value):
    """A key that tells 1 from 1.0 from True from "1"."""
    return (type(value).__name__, json.dumps(value))


def sanitizer_lines(text):
    return [l for l in text.splitlines() if any(m in l for m in SANITIZER_MARKERS)]


class RpcError(Exception):
    def __init__(self, error):
        self.error = error
        self.code = error.get("code")
        self.message = error.get("message")
        self.data = error.get("data")
        super().__init__("JSON-RPC error %s: %s (data=%r)" % (self.code, self.message, self.data))


# --------------------------------------------------------------------------------------------
# opensandboxd


class Server:
    """An opensandboxd on free ports. url, http_port, grpc_port are set once ready."""

    READY = re.compile(rb"^opensandboxd ready http=([0-9.]+):(\d+) grpc=([0-9.]+):(\d+)\s*$")

    def __init__(self, args=(), ready_timeout=None):
        self.state_dir = tempfile.mkdtemp(prefix="osbd-state-")
        self.stderr_file = tempfile.TemporaryFile(prefix="osbd-stderr-")
        self.argv = [SERVER, "--port", "0", "--grpc-port", "0", "--bind", "127.0.0.1",
                     "--state-dir", self.state_dir] + list(args)
        if not os.access(SERVER, os.X_OK):
            raise RuntimeError("opensandboxd not built: %s" % SERVER)
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=self.stderr_file, env=clean_env())
        self.returncode = None
        deadline = time.monotonic() + (ready_timeout or scaled(20))
        line = b""
        fd = self.proc.stdout.fileno()
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0:
                self.stop()
                raise RuntimeError("opensandboxd printed no ready line in time (got %r); stderr:\n%s"
                                   % (line, self.stderr_text()[-3000:]))
            r, _, _ = select.select([fd], [], [], left)
            if not r:
                continue
            chunk = os.read(fd, 1)
            if not chunk:
                self.stop()
                raise RuntimeError("opensandboxd exited before ready (got %r); stderr:\n%s"
                                   % (line, self.stderr_text()[-3000:]))
            line += chunk
        m = self.READY.match(line)
        if not m:
            self.stop()
            raise RuntimeError("unexpected ready line from opensandboxd: %r" % line)
        self.host = m.group(1).decode()
        self.http_port = int(m.group(2))
        self.grpc_port = int(m.group(4))
        self.url = "http://127.0.0.1:%d" % self.http_port
        self.grpc_target = "127.0.0.1:%d" % self.grpc_port
        # Keep draining stdout so a chatty server can never block on a full pipe.
        self.extra_stdout = bytearray()
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self):
        try:
            while True:
                chunk = os.read(self.proc.stdout.fileno(), 65536)
                if not chunk:
                    return
                self.extra_stdout += chunk
        except OSError:
            return

    def bridge_args(self):
        return ["--url", self.url, "--grpc-port", str(self.grpc_port)]

    def stderr_text(self):
        self.stderr_file.seek(0)
        return self.stderr_file.read().decode("utf-8", "replace")

    def stop(self, timeout=None):
        """SIGTERM by PID, wait; SIGKILL if it does not stop. Returns the exit status."""
        if self.returncode is not None:
            return self.returncode
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout or scaled(15))
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
                self.returncode = "hung after SIGTERM (killed)"
                return self.returncode
        self.returncode = self.proc.returncode
        return self.returncode

    def problems(self):
        """What went wrong with this server, as strings (empty when it behaved)."""
        out = []
        rc = self.stop()
        if rc != 0:
            out.append("opensandboxd did not exit 0 on SIGTERM: %r" % (rc,))
        san = sanitizer_lines(self.stderr_text())
        if san:
            out.append("opensandboxd stderr has sanitizer reports:\n" + "\n".join(san[:20]))
        return out


# --------------------------------------------------------------------------------------------
# opensandbox-bridge


class Bridge:
    """opensandbox-bridge on pipes. framing: how we frame what we send ("ndjson" or "lsp");
    replies are expected in the same framing."""

    LSP_HEADER = re.compile(rb"^Content-Length: (\d+)\r\n\r\n$")

    def __init__(self, args=(), env=None, framing="ndjson", validate=True, executable=None):
        exe = executable or BRIDGE
        if not os.access(exe, os.X_OK):
            raise RuntimeError("opensandbox-bridge not built: %s" % exe)
        self.framing = framing
        self.validate = validate
        self.argv = [exe] + list(args)
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=clean_env(env))
        self.cond = threading.Condition()
        self.messages = []      # every frame parsed from stdout, in arrival order
        self.raw = []           # the raw bytes of each frame (LSP: header included)
        self.consumed = set()   # indexes of self.messages already returned to the test
        self.violations = []    # protocol problems seen on stdout
        self.eof = False
        self.stderr = bytearray()
        self.sent_methods = {}  # id key -> method, for result validation
        self.next_id = 1
        self.returncode = None
        self._stdin_closed = False
        self._out = threading.Thread(target=self._read_stdout, daemon=True)
        self._err = threading.Thread(target=self._read_stderr, daemon=True)
        self._out.start()
        self._err.start()

    # ---- reading

    def _read_stderr(self):
        fd = self.proc.stderr.fileno()
        while True:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                return
            if not chunk:
                return
            with self.cond:
                self.stderr += chunk

    def _read_stdout(self):
        fd = self.proc.stdout.fileno()
        buf = b""
        while True:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                chunk = b""
            if not chunk:
                break
            buf += chunk
            buf = self._parse_frames(buf)
        with self.cond:
            if buf:
                self.violations.append("stdout ended inside a frame: %r" % buf[:200])
            self.eof = True
            self.cond.notify_all()

    def _parse_frames(self, buf):
        while True:
            if self.framing == "lsp":
                end = buf.find(b"\r\n\r\n")
                prefix_ok = buf.startswith(b"Content-Length: ") or b"Content-Length: ".startswith(buf)
                if end < 0 and (len(buf) > 8192 or not prefix_ok):
                    self._violation("stdout is not an LSP header: %r" % buf[:200])
                    return b""
                if end < 0:
                    return buf
                header = buf[:end + 4]
                m = self.LSP_HEADER.match(header)
                if not m:
                    self._violation("LSP reply header is not exactly Content-Length: N\\r\\n\\r\\n: %r"
                                    % header[:200])
                    return b""
                n = int(m.group(1))
                if len(buf) < end + 4 + n:
                    return buf
                body = buf[end + 4:end + 4 + n]
                self._frame(header + body, body)
                buf = buf[end + 4 + n:]
            else:
                nl = buf.find(b"\n")
                if nl < 0:
                    return buf
                line = buf[:nl]
                self._frame(line + b"\n", line)
                buf = buf[nl + 1:]

    def _violation(self, text):
        with self.cond:
            self.violations.append(text)
            self.cond.notify_all()

    def _frame(self, raw, body):
        try:
            msg = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            self._violation("stdout frame is not UTF-8 JSON (%s): %r" % (e, body[:300]))
            return
        problems = self.check_reply(msg)
        with self.cond:
            for p in problems:
                self.violations.append("%s in %s" % (p, body[:300]))
            self.messages.append(msg)
            self.raw.append(raw)
            self.cond.notify_all()

    def check_reply(self, msg):
        """Contract problems of one stdout frame (a reply or a batch of replies)."""
        if isinstance(msg, list):
            if not msg:
                return ["an empty array was sent as a batch reply"]
            out = []
            for m in msg:
                out += self._check_one(m)
            return out
        return self._check_one(msg)

    def _check_one(self, m):
        if not isinstance(m, dict):
            return ["a reply that is not an object: %r" % (m,)]
        out = []
        if "method" in m and "id" not in m:  # a notification of ours: $/progress
            if set(m) != {"jsonrpc", "method", "params"} or m.get("jsonrpc") != "2.0":
                out.append("notification with members beyond jsonrpc/method/params")
            if m["method"] != "$/progress":
                out.append("unexpected notification %r" % m["method"])
            p = m.get("params")
            if not isinstance(p, dict) or isinstance(p.get("token"), bool) or \
                    not isinstance(p.get("token"), (str, int)) or not isinstance(p.get("value"), dict) \
                    or set(p["value"]) - {"stdout", "stderr"} or not p["value"] or \
                    not all(isinstance(v, str) for v in p["value"].values()):
                out.append("$/progress params are not {token, value: {stdout?, stderr?}}")
            return out
        extra = set(m) - {"jsonrpc", "id", "result", "error"}
        if extra:
            out.append("reply has members beyond jsonrpc/id/result/error: %s" % sorted(extra))
        if m.get("jsonrpc") != "2.0":
            out.append('reply lacks "jsonrpc": "2.0"')
        if "id" not in m:
            out.append("reply has no id")
        elif isinstance(m["id"], bool) or not isinstance(m["id"], (str, int, float, type(None))):
            out.append("reply id is not a string, number or null: %r" % (m["id"],))
        if ("result" in m) == ("error" in m):
            out.append("reply must hold exactly one of result and error")
        if not self.validate:
            return out
        if "error" in m:
            out += ["error object: " + e for e in schema_errors(ERROR_VALIDATOR, m["error"])]
        elif "result" in m and "id" in m:
            method = self.sent_methods.get(_id_key(m["id"]))
            if method in RESULT_VALIDATORS:
                out += ["%s result: %s" % (method, e)
                        for e in schema_errors(RESULT_VALIDATORS[method], m["result"])]
        return out

    def _wait(self, pred, timeout, what):
        deadline = time.monotonic() + (timeout if timeout is not None else TIMEOUT)
        with self.cond:
            while True:
                found = pred()
                if found is not None:
                    return found
                if self.eof:
                    found = pred()
                    if found is not None:
                        return found
                    raise AssertionError("bridge closed stdout while waiting for %s (exit %r); "
                                         "stderr tail:\n%s" % (what, self.proc.poll(), self.stderr_tail()))
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("no %s within %.1fs; stderr tail:\n%s"
                                         % (what, timeout if timeout is not None else TIMEOUT,
                                            self.stderr_tail()))
                self.cond.wait(min(left, 0.2))

    def reply(self, id, timeout=None):
        """The reply (a dict) whose id is exactly id (1 is not 1.0 nor true)."""
        key = _id_key(id)

        def find():
            for i, m in enumerate(self.messages):
                if i not in self.consumed and isinstance(m, dict) and "id" in m \
                        and _id_key(m["id"]) == key:
                    self.consumed.add(i)
                    return m
            return None
        m = self._wait(find, timeout, "reply with id %r" % (id,))
        problems = self.check_reply(m)
        assert not problems, "reply breaks the contract: %s\n%r" % (problems, m)
        return m

    def next_message(self, timeout=None):
        """The next frame not yet returned, in arrival order (a dict, or a list for a batch)."""
        def find():
            for i, m in enumerate(self.messages):
                if i not in self.consumed:
                    self.consumed.add(i)
                    return (m,)
            return None
        return self._wait(find, timeout, "message")[0]

    def assert_silent(self, seconds):
        """Assert that no frame arrives in the next seconds (beyond those already read)."""
        end = time.monotonic() + seconds
        with self.cond:
            while time.monotonic() < end:
                pending = [m for i, m in enumerate(self.messages) if i not in self.consumed]
                assert not pending, "unexpected message(s): %r" % pending
                self.cond.wait(max(0.0, min(0.1, end - time.monotonic())))
            pending = [m for i, m in enumerate(self.messages) if i not in self.consumed]
            assert not pending, "unexpected message(s): %r" % pending

    # ---- writing

    def frame(self, body):
        if isinstance(body, str):
            body = body.encode("utf-8")
        if self.framing == "lsp":
            return b"Content-Length: %d\r\n\r\n" % len(body) + body
        return body + b"\n"

    def _note_ids(self, msg):
        items = msg if isinstance(msg, list) else [msg]
        for m in items:
            if isinstance(m, dict) and "id" in m and isinstance(m.get("method"), str):
                self.sent_methods[_id_key(m["id"])] = m["method"]

    def write(self, data, timeout=None):
        """Write raw bytes to the bridge's stdin, with a deadline."""
        fd = self.proc.stdin.fileno()
        os.set_blocking(fd, False)
        deadline = time.monotonic() + (timeout if timeout is not None else TIMEOUT)
        view = memoryview(data)
        while view:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("bridge did not read its stdin within the deadline")
            _, w, _ = select.select([], [fd], [], min(left, 0.5))
            if not w:
                continue
            try:
                n = os.write(fd, view[:65536])
            except BlockingIOError:
                continue
            except BrokenPipeError:
                raise AssertionError("bridge closed its stdin (exit status %r); stderr tail:\n%s"
                                     % (self.proc.poll(), self.stderr_tail()))
            view = view[n:]

    def send(self, msg):
        """Send a message (an object or a batch list), framed."""
        self._note_ids(msg)
        self.write(self.frame(json.dumps(msg, separators=(",", ":"), ensure_ascii=False)))

    def send_raw(self, text):
        """Send one message body as given (str or bytes), framed; ids in it are noted when it
        parses as JSON."""
        try:
            self._note_ids(json.loads(text))
        except (ValueError, UnicodeDecodeError):
            pass
        self.write(self.frame(text))

    def new_id(self):
        i = self.next_id
        self.next_id += 1
        return i

    def start(self, method, params=NO_PARAMS, id=None):
        """Send a request without waiting; returns its id."""
        if id is None:
            id = self.new_id()
        msg = {"jsonrpc": "2.0", "id": id, "method": method}
        if params is not NO_PARAMS:
            msg["params"] = params
        self.send(msg)
        return id

    def notify(self, method, params=NO_PARAMS):
        msg = {"jsonrpc": "2.0", "method": method}
        if params is not NO_PARAMS:
            msg["params"] = params
        self.send(msg)

    def request(self, method, params=NO_PARAMS, id=None, timeout=None):
        """Send a request and return its reply (the whole reply object)."""
        return self.reply(self.start(method, params, id), timeout)

    def call(self, method, params=NO_PARAMS, timeout=None):
        """Send a request; return its result or raise RpcError."""
        r = self.request(method, params, timeout=timeout)
        if "error" in r:
            raise RpcError(r["error"])
        return r["result"]

    def error(self, method, params=NO_PARAMS, code=None, timeout=None):
        """Send a request that must fail; return its error object (checking code if given,
        and data.type for application errors)."""
        r = self.request(method, params, timeout=timeout)
        assert "error" in r, "expected an error%s from %s, got result %r" % (
            "" if code is None else " %d" % code, method, r.get("result"))
        e = r["error"]
        if code is not None:
            assert e["code"] == code, "expected error code %d from %s, got %r" % (code, method, e)
        if e["code"] in APP_ERROR_TYPES:
            assert isinstance(e.get("data"), dict) and \
                e["data"].get("type") == APP_ERROR_TYPES[e["code"]], \
                "error %d must carry data.type %s: %r" % (e["code"], APP_ERROR_TYPES[e["code"]], e)
        return e

    # ---- conveniences over the methods

    def create(self, env=None):
        params = {} if env is None else {"env": env}
        return self.call("sandbox/create", params)["sandboxId"]

    def run(self, sandbox_id, command=None, timeout=None, **kw):
        params = {"sandboxId": sandbox_id}
        if command is not None:
            params["command"] = command
        params.update(kw)
        return self.call("sandbox/run", params, timeout=timeout)

    def write_file(self, sandbox_id, path, content, encoding=None):
        params = {"sandboxId": sandbox_id, "path": path, "content": content}
        if encoding:
            params["encoding"] = encoding
        return self.call("fs/write", params)

    def read_file(self, sandbox_id, path, encoding=None):
        params = {"sandboxId": sandbox_id, "path": path}
        if encoding:
            params["encoding"] = encoding
        return self.call("fs/read", params)

    # ---- ending

    def close_stdin(self):
        if not self._stdin_closed:
            self._stdin_closed = True
            try:
                self.proc.stdin.close()
            except OSError:
                pass

    def wait_exit(self, timeout=None):
        """Wait for the process to exit (it must, by the deadline); returns its status."""
        try:
            self.proc.wait(timeout if timeout is not None else scaled(20))
        except subprocess.TimeoutExpired:
            raise AssertionError("bridge did not exit within the deadline; stderr tail:\n%s"
                                 % self.stderr_tail())
        self._out.join(5)
        self._err.join(5)
        self.returncode = self.proc.returncode
        return self.returncode

    def close(self):
        """EOF on stdin, wait for exit (kill after the deadline). Returns the exit status, or
        None when it had to be killed."""
        self.close_stdin()
        try:
            return self.wait_exit()
        except AssertionError:
            self.proc.kill()
            self.proc.wait(10)
            self.violations.append("bridge did not exit after EOF on stdin (killed)")
            return None

    def stderr_text(self):
        with self.cond:
            return bytes(self.stderr).decode("utf-8", "replace")

    def stderr_tail(self, n=3000):
        return self.stderr_text()[-n:]

    def problems(self):
        """Everything that broke the contract in this bridge's life, as strings. Call after
        the process ended."""
        out = list(self.violations)
        san = sanitizer_lines(self.stderr_text())
        if san:
            out.append("bridge stderr has sanitizer reports:\n" + "\n".join(san[:20]))
        if self.returncode is not None and self.returncode < 0:
            out.append("bridge died from signal %d" % -self.returncode)
        return out
