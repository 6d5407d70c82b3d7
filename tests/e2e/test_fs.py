"""fs/*: writing and reading files in a sandbox (utf8 and base64), what runs see, failures
as FileOperationError, containment of paths, fs/writeMany and fs/list."""
import base64
import os

import pytest

from harness import b64, scaled


def test_write_then_read_returns_the_text(bridge, sandbox):
    w = bridge.write_file(sandbox, "/tmp/test.py", "print('hi')\n")
    assert w == {"bytesWritten": 12}
    r = bridge.read_file(sandbox, "/tmp/test.py")
    assert r == {"content": "print('hi')\n", "encoding": "utf8", "size": 12}


def test_write_counts_bytes_not_characters(bridge, sandbox):
    text = "h\u00e9llo \u2603 \U0001f600"
    w = bridge.write_file(sandbox, "/tmp/u.txt", text)
    assert w["bytesWritten"] == len(text.encode("utf-8"))
    r = bridge.read_file(sandbox, "/tmp/u.txt", encoding="utf8")
    assert r["content"] == text
    assert r["size"] == len(text.encode("utf-8"))


def test_base64_round_trips_every_byte_value(bridge, sandbox):
    data = bytes(range(256)) * 4
    w = bridge.write_file(sandbox, "/tmp/bin.dat", b64(data), encoding="base64")
    assert w["bytesWritten"] == len(data)
    r = bridge.read_file(sandbox, "/tmp/bin.dat", encoding="base64")
    assert r["encoding"] == "base64"
    assert r["size"] == len(data)
    assert base64.b64decode(r["content"]) == data


def test_write_defaults_to_utf8_not_base64(bridge, sandbox):
    bridge.write_file(sandbox, "/tmp/lit.txt", "aGk=")
    assert bridge.read_file(sandbox, "/tmp/lit.txt")["content"] == "aGk="


def test_empty_file_round_trips(bridge, sandbox):
    assert bridge.write_file(sandbox, "/tmp/empty", "") == {"bytesWritten": 0}
    assert bridge.read_file(sandbox, "/tmp/empty") == {"content": "", "encoding": "utf8", "size": 0}


def test_write_replaces_existing_content(bridge, sandbox):
    bridge.write_file(sandbox, "/tmp/f", "long original content")
    bridge.write_file(sandbox, "/tmp/f", "short")
    assert bridge.read_file(sandbox, "/tmp/f")["content"] == "short"


def test_written_file_is_what_a_run_reads(bridge, sandbox):
    bridge.write_file(sandbox, "/tmp/data.txt", "from fs/write\n")
    assert bridge.run(sandbox, "cat /tmp/data.txt")["stdout"] == "from fs/write\n"


def test_file_written_by_a_run_is_what_fs_read_returns(bridge, sandbox):
    bridge.run(sandbox, "printf 'from run' > /tmp/by-run.txt")
    assert bridge.read_file(sandbox, "/tmp/by-run.txt")["content"] == "from run"


def test_write_creates_parent_directories_and_mode_0644(bridge, sandbox):
    bridge.write_file(sandbox, "/tmp/a/b/c/deep.txt", "deep")
    r = bridge.run(sandbox, "cat /tmp/a/b/c/deep.txt; echo; stat -c %a /tmp/a/b/c/deep.txt")
    assert r["stdout"] == "deep\n644\n"


def test_relative_and_home_paths_are_inside_the_sandbox(bridge, sandbox):
    bridge.write_file(sandbox, "/home/notes.txt", "home")
    assert bridge.run(sandbox, "cat /home/notes.txt")["stdout"] == "home"


def test_a_large_file_round_trips(bridge, sandbox):
    data = os.urandom(1024 * 1024)
    bridge.write_file(sandbox, "/tmp/big.bin", b64(data), encoding="base64")
    r = bridge.read_file(sandbox, "/tmp/big.bin", encoding="base64")
    assert r["size"] == len(data)
    assert base64.b64decode(r["content"]) == data


def test_read_of_non_utf8_as_utf8_fails_and_points_to_base64(bridge, sandbox):
    bridge.write_file(sandbox, "/tmp/bad.bin", b64(b"ok\xff\xfe"), encoding="base64")
    e = bridge.error("fs/read", {"sandboxId": sandbox, "path": "/tmp/bad.bin"}, code=-32005)
    assert e["data"]["path"] == "/tmp/bad.bin"
    assert "base64" in e["message"] or "base64" in e["data"]["reason"]
    # base64 still reads it.
    r = bridge.read_file(sandbox, "/tmp/bad.bin", encoding="base64")
    assert base64.b64decode(r["content"]) == b"ok\xff\xfe"


def test_read_of_a_missing_file_fails_with_its_path(bridge, sandbox):
    e = bridge.error("fs/read", {"sandboxId": sandbox, "path": "/tmp/does-not-exist"}, code=-32005)
    assert e["data"]["path"] == "/tmp/does-not-exist"
    assert isinstance(e["data"]["reason"], str) and e["data"]["reason"]


def test_read_of_a_directory_fails_with_file_operation_error(bridge, sandbox):
    e = bridge.error("fs/read", {"sandboxId": sandbox, "path": "/tmp"}, code=-32005)
    assert e["data"]["path"] == "/tmp"


def test_read_of_a_fifo_fails_instead_of_hanging(bridge, sandbox):
    bridge.run(sandbox, "mkfifo /tmp/fifo")
    e = bridge.error("fs/read", {"sandboxId": sandbox, "path": "/tmp/fifo"}, code=-32005,
                     timeout=scaled(10))
    assert e["data"]["path"] == "/tmp/fifo"


def test_write_onto_a_directory_fails_with_file_operation_error(bridge, sandbox):
    bridge.run(sandbox, "mkdir -p /tmp/adir")
    e = bridge.error("fs/write", {"sandboxId": sandbox, "path": "/tmp/adir", "content": "x"}, code=-32005)
    assert e["data"]["path"] == "/tmp/adir"


def test_write_of_invalid_base64_is_invalid_params(bridge, sandbox):
    e = bridge.error("fs/write", {"sandboxId": sandbox, "path": "/tmp/x", "content": "not base64!!",
                                  "encoding": "base64"}, code=-32602)
    assert "content" in e["message"]


@pytest.mark.parametrize("method", ["fs/write", "fs/read"])
def test_unknown_encoding_is_invalid_params(bridge, sandbox, method):
    params = {"sandboxId": sandbox, "path": "/tmp/x", "encoding": "hex"}
    if method == "fs/write":
        params["content"] = "00"
    e = bridge.error(method, params, code=-32602)
    assert "encoding" in e["message"]


def test_dotdot_paths_stay_inside_the_sandbox(bridge, sandbox):
    name = "osb-e2e-escape-%d" % os.getpid()
    path = "/tmp/../../../../../../%s/f" % name
    r = bridge.request("fs/write", {"sandboxId": sandbox, "path": path, "content": "x"})
    assert not os.path.exists("/" + name), "fs/write escaped the sandbox root"
    if "result" in r:
        # It landed inside the sandbox, where a run sees it at /<name>/f.
        assert bridge.run(sandbox, "cat /%s/f" % name)["stdout"] == "x"
    else:
        assert r["error"]["code"] == -32005


def test_symlinks_cannot_lead_out_of_the_sandbox(bridge, sandbox):
    name = "osb-e2e-symlink-%d" % os.getpid()
    bridge.run(sandbox, "ln -s / /tmp/rootlink")
    r = bridge.request("fs/write", {"sandboxId": sandbox, "path": "/tmp/rootlink/%s" % name,
                                    "content": "x"})
    assert not os.path.exists("/" + name), "fs/write followed a symlink out of the sandbox"
    if "error" in r:
        assert r["error"]["code"] == -32005
    # Reading through a symlink to a host file must not read the host's copy either.
    with open("/tmp/%s-host" % name, "w") as f:
        f.write("host secret")
    try:
        bridge.run(sandbox, "ln -s /tmp/%s-host /tmp/hostlink" % name)
        r = bridge.request("fs/read", {"sandboxId": sandbox, "path": "/tmp/hostlink"})
        if "result" in r:
            assert r["result"]["content"] != "host secret"
        else:
            assert r["error"]["code"] == -32005
    finally:
        os.unlink("/tmp/%s-host" % name)


def test_write_many_writes_every_file(bridge, sandbox):
    r = bridge.call("fs/writeMany", {"sandboxId": sandbox, "files": [
        {"path": "/tmp/m/one.txt", "content": "one"},
        {"path": "/tmp/m/two.bin", "content": b64(b"\x00\x01two"), "encoding": "base64"},
    ]})
    assert r == {"errors": []}
    assert bridge.read_file(sandbox, "/tmp/m/one.txt")["content"] == "one"
    got = bridge.read_file(sandbox, "/tmp/m/two.bin", encoding="base64")["content"]
    assert base64.b64decode(got) == b"\x00\x01two"


def test_write_many_reports_the_files_it_could_not_write(bridge, sandbox):
    bridge.run(sandbox, "mkdir -p /tmp/isdir")
    r = bridge.call("fs/writeMany", {"sandboxId": sandbox, "files": [
        {"path": "/tmp/ok.txt", "content": "ok"},
        {"path": "/tmp/isdir", "content": "nope"},
    ]})
    assert [e["path"] for e in r["errors"]] == ["/tmp/isdir"]
    assert r["errors"][0]["error"]
    assert bridge.read_file(sandbox, "/tmp/ok.txt")["content"] == "ok"


def test_write_many_with_no_files_is_fine(bridge, sandbox):
    assert bridge.call("fs/writeMany", {"sandboxId": sandbox, "files": []}) == {"errors": []}


def test_list_shows_entries_sorted_with_types_and_sizes(bridge, sandbox):
    bridge.write_file(sandbox, "/tmp/l/b.txt", "bee")
    bridge.write_file(sandbox, "/tmp/l/a.txt", "a")
    bridge.run(sandbox, "mkdir -p /tmp/l/sub")
    r = bridge.call("fs/list", {"sandboxId": sandbox, "path": "/tmp/l"})
    entries = r["entries"]
    assert [e["name"] for e in entries] == ["a.txt", "b.txt", "sub"]
    assert [e["path"] for e in entries] == ["/tmp/l/a.txt", "/tmp/l/b.txt", "/tmp/l/sub"]
    assert [e["isDirectory"] for e in entries] == [False, False, True]
    assert entries[0]["size"] == 1
    assert entries[1]["size"] == 3


def test_list_of_a_missing_directory_fails_with_file_operation_error(bridge, sandbox):
    e = bridge.error("fs/list", {"sandboxId": sandbox, "path": "/tmp/no-such-dir"}, code=-32005)
    assert e["data"]["path"] == "/tmp/no-such-dir"


@pytest.mark.parametrize("method,params", [
    ("fs/write", {"path": "/tmp/x", "content": "x"}),
    ("fs/read", {"path": "/tmp/x"}),
    ("fs/writeMany", {"files": [{"path": "/tmp/x", "content": "x"}]}),
    ("fs/list", {"path": "/tmp"}),
])
def test_fs_methods_on_an_unknown_sandbox_fail_with_not_found(bridge, method, params):
    p = dict(params, sandboxId="nonexistent-sandbox-id")
    e = bridge.error(method, p, code=-32001)
    assert e["data"]["sandboxId"] == "nonexistent-sandbox-id"
