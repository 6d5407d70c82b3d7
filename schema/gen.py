#!/usr/bin/python3
"""gen.py - derive the per-method JSON Schemas in schema/methods/ from schema/openrpc.json.

openrpc.json is the one source of truth (it is what rpc.discover returns). For every method
this writes <name>.params.json (the params object: one property per content descriptor,
`required` from the descriptors, plus the method's x-params-constraints) and
<name>.result.json, with "/" in the method name written as ".". Each file is self-contained:
the components it uses are copied under "definitions". error.json is the error object.

    schema/gen.py          rewrite schema/methods/
    schema/gen.py --check  exit 1 (naming the files) when schema/methods/ is out of date
"""
import copy
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
DRAFT = "http://json-schema.org/draft-07/schema#"
BASE_ID = "https://opensandbox-bridge.invalid/schema/methods/"


def _rewrite(node, used):
    """Point #/components/schemas/X refs at #/definitions/X, collecting the names."""
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            if k == "$ref" and isinstance(v, str) and v.startswith("#/components/schemas/"):
                name = v[len("#/components/schemas/"):]
                used.add(name)
                out[k] = "#/definitions/" + name
            else:
                out[k] = _rewrite(v, used)
        return out
    if isinstance(node, list):
        return [_rewrite(v, used) for v in node]
    return node


def _with_definitions(schema, components, file_id, title):
    used = set()
    body = _rewrite(copy.deepcopy(schema), used)
    defs = {}
    pending = sorted(used)
    while pending:
        name = pending.pop()
        if name in defs:
            continue
        more = set()
        defs[name] = _rewrite(components[name], more)
        pending.extend(sorted(more - set(defs)))
    out = {"$schema": DRAFT, "$id": BASE_ID + file_id, "title": title}
    if set(body) == {"$ref"}:
        body = {"allOf": [body]}  # draft-07 ignores the siblings of a $ref
    out.update(body)
    if defs:
        out["definitions"] = {k: defs[k] for k in sorted(defs)}
    return out


def file_stem(method):
    return method.replace("/", ".").replace("$", "_")


def params_schema(method):
    """The JSON Schema of one method's params object (as the bridge sees it)."""
    props = {}
    required = []
    for p in method.get("params", []):
        props[p["name"]] = p["schema"]
        if p.get("required"):
            required.append(p["name"])
    s = {"type": "object", "properties": props}
    if required:
        s["required"] = required
    extra = method.get("x-params-constraints")
    if extra:
        s["allOf"] = [extra]
    return s


def generate(doc):
    """Map of file name -> schema object for every file in schema/methods/."""
    components = doc["components"]["schemas"]
    files = {}
    for m in doc["methods"]:
        stem = file_stem(m["name"])
        files[stem + ".params.json"] = _with_definitions(
            params_schema(m), components, stem + ".params.json", m["name"] + " params")
        files[stem + ".result.json"] = _with_definitions(
            m["result"]["schema"], components, stem + ".result.json", m["name"] + " result")
    files["error.json"] = _with_definitions(
        {"$ref": "#/components/schemas/ErrorObject"}, components, "error.json", "JSON-RPC error object")
    return files


def render(obj):
    return json.dumps(obj, indent=2, sort_keys=False) + "\n"


def main(argv):
    check = "--check" in argv
    with open(os.path.join(HERE, "openrpc.json"), encoding="utf-8") as f:
        doc = json.load(f)
    outdir = os.path.join(HERE, "methods")
    files = generate(doc)
    stale = []
    existing = set(os.listdir(outdir)) if os.path.isdir(outdir) else set()
    for name, obj in files.items():
        text = render(obj)
        path = os.path.join(outdir, name)
        try:
            with open(path, encoding="utf-8") as f:
                same = f.read() == text
        except FileNotFoundError:
            same = False
        if not same:
            stale.append(name)
            if not check:
                os.makedirs(outdir, exist_ok=True)
                with open(path, "w", encoding="utf-8") as f:
                    f.write(text)
    extra = sorted(n for n in existing - set(files) if n.endswith(".json"))
    if check:
        if stale or extra:
            for n in stale:
                print("out of date: schema/methods/" + n)
            for n in extra:
                print("not generated from openrpc.json: schema/methods/" + n)
            print("run schema/gen.py to regenerate")
            return 1
        return 0
    for n in extra:
        os.remove(os.path.join(outdir, n))
    print("schema/methods: %d files, %d rewritten, %d removed" % (len(files), len(stale), len(extra)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
