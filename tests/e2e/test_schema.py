"""schema/: the OpenRPC document is well formed, the per-method schemas are generated from it
and agree with it, it covers API.md's methods and errors, and the bridge serves exactly it."""
import json
import os
import re
import subprocess
import sys

import jsonschema
import pytest

import harness
from harness import OPENRPC, REPO

API_MD_CANDIDATES = [
    os.environ.get("OSB_API_MD", ""),
    os.path.join(REPO, "..", "shared", "API.md"),
    os.path.join(REPO, "shared", "API.md"),
    "/work/shared/API.md",
]


def _api_md():
    for p in API_MD_CANDIDATES:
        if p and os.path.isfile(p):
            with open(p, encoding="utf-8") as f:
                return f.read()
    pytest.skip("API.md (shared/) is not beside this checkout; set OSB_API_MD to check against it")


def _walk(node):
    if isinstance(node, dict):
        yield node
        for v in node.values():
            yield from _walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from _walk(v)


def test_openrpc_document_has_the_required_shape():
    assert OPENRPC["openrpc"].startswith("1.2.")
    assert OPENRPC["info"]["title"] and OPENRPC["info"]["version"]
    names = [m["name"] for m in OPENRPC["methods"]]
    assert len(names) == len(set(names)), "duplicate method names"
    for m in OPENRPC["methods"]:
        assert m.get("paramStructure") == "by-name", m["name"]
        assert isinstance(m["params"], list), m["name"]
        assert {"name", "schema"} <= set(m["result"]), m["name"]
        for p in m["params"]:
            assert {"name", "schema", "required"} <= set(p), (m["name"], p)


def test_every_schema_in_the_document_is_valid_draft7():
    for m in OPENRPC["methods"]:
        for p in m["params"]:
            jsonschema.Draft7Validator.check_schema(p["schema"])
        jsonschema.Draft7Validator.check_schema(m["result"]["schema"])
    for name, s in OPENRPC["components"]["schemas"].items():
        jsonschema.Draft7Validator.check_schema(s)


def test_every_ref_in_the_document_resolves():
    resolver = jsonschema.RefResolver.from_schema(OPENRPC)
    for node in _walk(OPENRPC):
        ref = node.get("$ref")
        if isinstance(ref, str):
            resolver.resolve(ref)


def test_per_method_schemas_are_generated_from_openrpc():
    p = subprocess.run([sys.executable, os.path.join(REPO, "schema", "gen.py"), "--check"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr


def test_per_method_schemas_accept_and_reject_like_the_document():
    """The standalone files and the document agree on sample results and params."""
    d = os.path.join(REPO, "schema", "methods")
    run_ok = {"stdout": "", "stderr": "", "exitCode": 0, "signal": 0, "success": True,
              "truncated": False}
    run_bad = dict(run_ok, exitCode=None)
    res_file = jsonschema.Draft7Validator(json.load(open(os.path.join(d, "sandbox.run.result.json"))))
    res_doc = harness.RESULT_VALIDATORS["sandbox/run"]
    for sample in (run_ok, run_bad, dict(run_ok, extra=1), {}):
        assert res_file.is_valid(sample) == res_doc.is_valid(sample), sample
    params = jsonschema.Draft7Validator(json.load(open(os.path.join(d, "sandbox.run.params.json"))))
    assert params.is_valid({"sandboxId": "s", "command": "true"})
    assert params.is_valid({"sandboxId": "s", "argv": ["true"]})
    assert not params.is_valid({"sandboxId": "s", "command": "true", "argv": ["true"]})
    assert not params.is_valid({"sandboxId": "s"})
    assert not params.is_valid({"command": "true"})
    assert not params.is_valid({"sandboxId": "s", "command": "true", "timeoutMs": 0})
    err = jsonschema.Draft7Validator(json.load(open(os.path.join(d, "error.json"))))
    assert err.is_valid({"code": -32601, "message": "Method not found"})
    assert not err.is_valid({"code": -32001, "message": "x", "data": {"type": "SandboxNotFoundError"}})
    assert err.is_valid({"code": -32001, "message": "x",
                         "data": {"type": "SandboxNotFoundError", "sandboxId": "s"}})
    assert not err.is_valid({"code": -32601, "message": "x", "extra": 1})


def test_error_codes_cover_api_md():
    codes = {e["code"] for e in OPENRPC["components"]["errors"].values()}
    assert {-32700, -32600, -32601, -32602, -32603, -32800} <= codes
    assert set(harness.APP_ERROR_TYPES) <= codes
    for e in OPENRPC["components"]["errors"].values():
        if e["code"] in harness.APP_ERROR_TYPES:
            assert e["data"]["type"] == harness.APP_ERROR_TYPES[e["code"]]


def test_methods_match_api_md():
    text = _api_md()
    listed = set()
    for table in re.split(r"\n\s*\n", text):
        if re.search(r"^\| method \|", table, re.M):
            listed |= set(re.findall(r"^\| `([a-zA-Z$./]+)`", table, re.M))
    # methods given in prose, as `fs/upload {sandboxId, ...}` in "Host files"
    listed |= set(re.findall(r"`([a-z]+/[a-zA-Z]+)\s+\{sandboxId", text))
    notifications = {"initialized", "exit", "$/cancelRequest"}
    assert listed - notifications == set(harness.METHODS)
    # $/progress is sent by the bridge (live output), not received
    assert {n["name"] for n in OPENRPC["x-notifications"]} == notifications | {"$/progress"}


def test_application_error_types_match_api_md():
    text = _api_md()
    rows = re.findall(r"^\| (-320\d\d) \| (\w+) \|", text, re.M)
    assert {int(c): t for c, t in rows} == harness.APP_ERROR_TYPES


def test_rpc_discover_returns_the_document_on_both_backends(bridge):
    assert bridge.call("rpc.discover") == OPENRPC


def test_initialize_methods_equal_the_documents_methods(bridge, backend):
    r = bridge.call("initialize", {})
    assert sorted(r["capabilities"]["methods"]) == harness.METHODS
    assert len(r["capabilities"]["methods"]) == len(set(r["capabilities"]["methods"]))
    assert r["capabilities"]["backend"] == backend


def test_every_documented_method_is_served(bridge):
    """No method of the document answers -32601 (params may be invalid: that is fine)."""
    for m in harness.METHODS:
        if m in ("shutdown",):
            continue
        r = bridge.request(m, {})
        if "error" in r:
            assert r["error"]["code"] != -32601, "%s is documented but not served" % m
