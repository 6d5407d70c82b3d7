#!/usr/bin/python3
"""make_corpus.py - (re)write the seed corpora in tests/fuzz/corpus/.

corpus/fuzz_rpc/        raw client streams (what a client writes on stdin)
corpus/fuzz_transport/  the same streams with fuzz_transport's 2-byte prefix
                        (read size, framing/limit selector)
corpus/fuzz_json/       single JSON texts, well-formed and not, for the parser differential
Run it after changing the seeds; the files are committed so run.sh needs no Python.
"""
import hashlib
import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))


def lsp(body):
    if isinstance(body, str):
        body = body.encode()
    return b"Content-Length: %d\r\n\r\n" % len(body) + body


def nd(*bodies):
    return b"".join((b if isinstance(b, bytes) else b.encode()) + b"\n" for b in bodies)


def req(id, method, params=None):
    m = {"jsonrpc": "2.0", "id": id, "method": method}
    if params is not None:
        m["params"] = params
    return json.dumps(m, separators=(",", ":"))


def note(method, params=None):
    m = {"jsonrpc": "2.0", "method": method}
    if params is not None:
        m["params"] = params
    return json.dumps(m, separators=(",", ":"))


SEEDS = {
    "echo": nd(req(1, "echo", {"a": 1})),
    "echo_inline": nd(req("x", "echo/inline", {"s": "h\u00e9\u4e16\U0001F600"})),
    "fail": nd(req(2, "fail", {"why": "no"})),
    "fail_inline": nd(req(3, "fail/inline")),
    "nothing_bad": nd(req(4, "nothing"), req(5, "bad")),
    "async": nd(req(6, "async", {"a": 1}), req(7, "async", {})),
    "quick": nd(req(8, "quick", {}), req(9, "quick", {"a": 1}), req(10, "quick", {"a": 1, "b": 2})),
    "unknown_method": nd(req(8, "no/such")),
    "notification": nd(note("echo", {"a": 1}), note("initialized")),
    "ids": nd(req(1.0, "echo"), '{"jsonrpc":"2.0","id":-0,"method":"echo"}',
              '{"jsonrpc":"2.0","id":123456789012345678901234567890,"method":"echo"}',
              '{"jsonrpc":"2.0","id":1e400,"method":"echo"}',
              '{"jsonrpc":"2.0","id":1E-7,"method":"echo"}', req(None, "echo"), req("", "echo")),
    "bad_ids": nd('{"jsonrpc":"2.0","id":true,"method":"echo"}',
                  '{"jsonrpc":"2.0","id":[1],"method":"echo"}',
                  '{"jsonrpc":"2.0","id":{"a":1},"method":"echo"}'),
    "dup_id": nd('{"jsonrpc":"2.0","id":1,"id":2,"method":"echo","params":{"id":3}}'),
    "escaped_key": nd('{"jsonrpc":"2.0","\\u0069d":7,"method":"echo"}'),
    "params_kinds": nd(req(1, "echo", []), req(2, "echo", [1]), req(3, "echo", None),
                       '{"jsonrpc":"2.0","id":4,"method":"echo","params":5}',
                       '{"jsonrpc":"2.0","id":5,"method":"echo","params":"s"}'),
    "invalid_requests": nd('{"jsonrpc":"1.0","id":1,"method":"echo"}', '{"id":1,"method":"echo"}',
                           '{"jsonrpc":"2.0","id":1,"method":5}', '{"jsonrpc":"2.0","id":1}',
                           '{}', '1', '"s"', 'null', 'true', '[]'),
    "parse_errors": nd('{"jsonrpc":"2.0",', '{"a":1}x', "{'a':1}", '[1,]', '{"a":01}'),
    "batch": nd("[" + ",".join([req(1, "echo"), note("echo"), req(2, "fail"), "1",
                                req(3, "no/such")]) + "]"),
    "batch_notes": nd("[" + note("echo") + "," + note("initialized") + "]"),
    "batch_big": nd("[" + ",".join(req(i, "echo" if i % 2 else "echo/inline") for i in range(40)) + "]"),
    "batch_nested": nd('[[' + req(1, "echo") + ']]', '[1,2,3]', '[null]'),
    "cancel": nd(req(1, "echo"), note("$/cancelRequest", {"id": 1}), req(2, "$/cancelRequest", {"id": "z"})),
    "shutdown": nd(req(1, "shutdown"), req(2, "echo"), note("exit")),
    "exit": nd(note("exit"), req(9, "echo")),
    "exit_in_batch": nd("[" + note("exit") + "," + req(1, "echo") + "]"),
    "bom_ws": b"\xef\xbb\xbf  \r\n\t" + nd(req(1, "echo")),
    "crlf": req(1, "echo").encode() + b"\r\n" + req(2, "echo").encode() + b"\r\n",
    "no_final_newline": req(1, "echo").encode(),
    "blank_lines": b"\n\n   \n" + nd(req(1, "echo")) + b"\n\t\n",
    "invalid_utf8": b'{"jsonrpc":"2.0","id":1,"method":"echo","params":{"s":"\xff\xfe"}}\n',
    "surrogates": nd('{"jsonrpc":"2.0","id":1,"method":"echo","params":{"s":"\\ud800x\\udc00\\ud83d\\ude00"}}'),
    "nul": b'{"jsonrpc":"2.0","id":1,"method":"echo","params":{"s":"a\x00b"}}\n'
           + nd('{"jsonrpc":"2.0","id":2,"method":"echo","params":{"s":"a\\u0000b"}}'),
    "deep": nd("[" * 2000 + "]" * 2000, '{"a":' * 1100 + "1" + "}" * 1100),
    "long_method": nd(req(1, "\u00e9" * 150), req(2, "x" * 1000), req(3, "a" + "\u00e9" * 150)),
    "too_big": nd(req(1, "echo", {"s": "x" * 3000}), req(2, "echo")),
    "too_big_no_newline": ("x" * 5000).encode(),
    "lsp_one": lsp(req(1, "echo", {"a": [1, 2]})),
    "lsp_two_one_write": lsp(req(1, "echo")) + lsp(req(2, "fail")),
    "lsp_content_type": b"Content-Length: 42\r\nContent-Type: application/vscode-jsonrpc; charset=utf-8\r\n\r\n"
                        + req(1, "echo").encode()[:42].ljust(42, b" "),
    "lsp_lowercase": b"content-length: %d\n\n" % len(req(1, "echo")) + req(1, "echo").encode(),
    "lsp_bad_lengths": b"Content-Length: -1\r\n\r\n" + b"Content-Length: abc\r\n\r\n"
                       + b"Content-Length: 99999999999999999999\r\n\r\n" + b"Content-Length:\r\n\r\n"
                       + lsp(req(1, "echo")),
    "lsp_huge_length": b"Content-Length: 18446744073709551615\r\n\r\n{}" + lsp(req(1, "echo")),
    "lsp_zero": b"Content-Length: 0\r\n\r\n" + lsp(req(1, "echo")),
    "lsp_garbage_between": lsp(req(1, "echo")) + b"garbage here\r\n\r\n" + lsp(req(2, "echo")),
    "lsp_no_length": b"Content-Type: x\r\n\r\n{}" + lsp(req(1, "echo")),
    "lsp_big_header": b"Content-Length: 2\r\nX: " + b"a" * 9000 + b"\r\n\r\n{}" + lsp(req(1, "echo")),
    "lsp_too_big": lsp(req(1, "echo", {"s": "y" * 3000})) + lsp(req(2, "echo")),
    "lsp_truncated": lsp(req(1, "echo"))[:-5],
    "lsp_batch": lsp("[" + req(1, "echo") + "," + req(2, "fail/inline") + "]"),
    "lsp_parse_error": lsp('{"jsonrpc":"2.0"') + lsp(req(1, "echo")),
    "lsp_shutdown_exit": lsp(req(1, "shutdown")) + lsp(note("exit")),
    "flood": nd(*[req(i, ["echo", "echo/inline", "fail", "nothing"][i % 4]) for i in range(60)]),
}

# One JSON text each: the json-c corners jsonparse copies or declines (see jsonparse.h).
JSON_SEEDS = {
    "request": req(1, "fs/write", {"sandboxId": "s1", "path": "/tmp/x", "content": "a\nb\u00e9"}),
    "batch": "[" + req(1, "echo") + "," + note("initialized") + "]",
    "scalars": '[null,true,false,0,-0,1.5,-1e-5,1E+2,"s",{},[]]',
    "ws": ' \t\r\n{ "a" : [ 1 , 2 ] }\r\n',
    "dup_names": '{"a":1,"b":2,"a":{"c":3}}',
    "nul_name": '{"a\\u0000b":1,"a":2}',
    "escapes": '"\\"\\\\\\/\\b\\f\\n\\r\\t\\u0000\\u001f\\u007f\\u00e9\\uFFFF"',
    "surrogates": '"\\ud83d\\ude00\\ud800x\\udc00\\ud800\\ud800\\udc00\\ud800\\u0041"',
    "mangled_pairs": '"\\ud836\\udc00\\ud877\\udfff\\udbf7\\udc00\\udc00"',
    "raw_utf8": '"\u00e9\u4e16\U0001F600\U0010FFFF"',
    "big_ints": '[9223372036854775807,9223372036854775808,18446744073709551615,'
                '18446744073709551616,-9223372036854775809,123456789012345678901234567890]',
    "doubles": '[1e400,-1e400,1e-400,4.9e-324,2.2250738585072014e-308,0.1,1.50,-0.0]',
    "lax_numbers": '[00,-01,1.,1.e5,NaN,Infinity,-Infinity]',
    "lax_strings": '{\'a\':"tab\there"}',
    "bad": '{"a":1,}',
    "trailing": '{"a":1} x',
    "deep": "[" * 12 + "1" + "]" * 12,
}


def main():
    for target, prefixes in (("fuzz_rpc", [b""]),
                             ("fuzz_transport", [b"\x00\x00", b"\x07\x10", b"\x01\x14"])):
        d = os.path.join(HERE, "corpus", target)
        os.makedirs(d, exist_ok=True)
        for f in os.listdir(d):
            os.unlink(os.path.join(d, f))
        for name, data in SEEDS.items():
            for i, p in enumerate(prefixes):
                blob = p + data
                suffix = "" if len(prefixes) == 1 else "-%d" % i
                with open(os.path.join(d, name + suffix), "wb") as f:
                    f.write(blob)
    d = os.path.join(HERE, "corpus", "fuzz_json")
    os.makedirs(d, exist_ok=True)
    for f in os.listdir(d):
        os.unlink(os.path.join(d, f))
    for name, text in JSON_SEEDS.items():
        with open(os.path.join(d, name), "wb") as f:
            f.write(text.encode())
    print("wrote %d seeds per stream target, %d for fuzz_json" % (len(SEEDS), len(JSON_SEEDS)))


if __name__ == "__main__":
    main()
