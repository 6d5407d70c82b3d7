// mcp.test.mjs - MCP mode end to end: the official SDKs (@modelcontextprotocol/sdk 1.32.2 for
// the legacy handshake, @modelcontextprotocol/client 2.4.0 for 2026-07-28 and for each legacy
// version) drive the real bridge on the backend lib.mjs picked (local, or the opensandboxd
// tests/e2e/test_mcp.py started). Every test checks that stdout carried MCP messages only.
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';

import {
  BACKEND,
  closeAndWait,
  connect,
  expectedTools,
  HAS_EXEC,
  processAlive,
  schemaStreams,
  SCALE,
  serverSessions,
  sleep,
  text,
} from './lib.mjs';

const open = [];
async function start(era, opts) {
  const c = await connect(era, opts);
  open.push(c);
  return c;
}
after(async () => {
  for (const c of open) await c.client.close().catch(() => {});
});

// The replies in a connection's stdout, by id.
function replies(conn) {
  const byId = new Map();
  for (const m of conn.messages()) if ('id' in m && !('method' in m)) byId.set(m.id, m);
  return byId;
}

async function call(client, name, args = {}) {
  return client.callTool({ name, arguments: args });
}

describe(`MCP mode, ${BACKEND} backend`, () => {
  test('legacy handshake (sdk 1.32.2): tools, every tool called, errors, ping, EOF', async () => {
    const conn = await start('legacy');
    const { client } = conn;
    assert.equal(client.getServerVersion().name, 'opensandbox-bridge');
    assert.ok(client.getServerCapabilities().tools);
    await client.ping();

    const { tools } = await client.listTools();
    assert.deepEqual(tools.map((t) => t.name), expectedTools(), 'one tool per method, schema order');
    const byName = Object.fromEntries(tools.map((t) => [t.name, t]));
    const run = byName.sandbox_run;
    assert.deepEqual(run.inputSchema.required, ['command']);
    assert.equal(run.inputSchema.properties.argv, undefined);
    assert.ok(run.outputSchema && run.outputSchema.properties.exitCode);
    assert.match(run.description, /non-zero exit code is a normal result/);
    for (const t of tools) {
      assert.equal(t.inputSchema.type, 'object');
      assert.ok(!(t.inputSchema.required || []).includes('sandboxId'), `${t.name}: sandboxId optional`);
      assert.ok(t.description.length > 20, `${t.name} has a description`);
      assert.equal(typeof t.annotations.readOnlyHint, 'boolean');
    }
    assert.equal(byName.fs_read.annotations.readOnlyHint, true);
    assert.equal(byName.sandbox_list.annotations.readOnlyHint, true);
    assert.equal(byName.sandbox_destroy.annotations.destructiveHint, true);
    assert.equal(byName.process_killAll.annotations.destructiveHint, true);
    assert.equal(byName.fs_write.annotations.readOnlyHint, false);
    assert.equal(byName.fs_write.annotations.destructiveHint, false);

    // The default sandbox: created on first use, the same one for later calls.
    let r = await call(client, 'sandbox_run', { command: 'echo hello' });
    assert.equal(r.isError, false);
    assert.deepEqual(r.structuredContent, {
      stdout: 'hello\n', stderr: '', exitCode: 0, signal: 0, success: true, truncated: false,
      ...(HAS_EXEC ? { running: false } : {}),
    });
    assert.match(text(r), /hello\n[\s\S]*exit code: 0/);
    r = await call(client, 'fs_write', { path: '/tmp/default.txt', content: 'kept' });
    assert.equal(r.structuredContent.bytesWritten, 4);
    r = await call(client, 'sandbox_run', { command: 'cat /tmp/default.txt' });
    assert.equal(r.structuredContent.stdout, 'kept');

    // A non-zero exit is a result, not an error.
    r = await call(client, 'sandbox_run', { command: 'echo out; echo oops >&2; exit 3' });
    assert.equal(r.isError, false);
    assert.equal(r.structuredContent.exitCode, 3);
    assert.match(text(r), /stdout:\nout\n[\s\S]*stderr:\noops\n[\s\S]*exit code: 3/);

    // Every other tool, on a sandbox of its own.
    r = await call(client, 'sandbox_create', { env: { GREETING: 'hi' } });
    const sid = r.structuredContent.sandboxId;
    assert.ok(sid);
    r = await call(client, 'sandbox_get', { sandboxId: sid });
    assert.equal(r.structuredContent.sandboxId, sid);
    assert.equal(r.structuredContent.env.GREETING, 'hi');
    r = await call(client, 'sandbox_list');
    assert.ok(r.structuredContent.sandboxes.some((s) => s.sandboxId === sid));
    r = await call(client, 'sandbox_setEnv', { sandboxId: sid, env: { X: '1' } });
    assert.equal(r.isError, false);
    r = await call(client, 'fs_write', { sandboxId: sid, path: '/tmp/w/a.txt', content: 'A' });
    assert.equal(r.isError, false);
    r = await call(client, 'sandbox_setCwd', { sandboxId: sid, cwd: '/tmp/w' });
    assert.equal(r.isError, false);
    r = await call(client, 'sandbox_run', { sandboxId: sid, command: 'echo $X$GREETING; cat a.txt' });
    assert.equal(r.structuredContent.stdout, '1hi\nA');
    r = await call(client, 'fs_writeMany', {
      sandboxId: sid,
      files: [{ path: '/tmp/w/b.txt', content: 'B' }, { path: '/tmp/w/c.bin', content: 'AAE=', encoding: 'base64' }],
    });
    assert.deepEqual(r.structuredContent.errors, []);
    r = await call(client, 'fs_read', { sandboxId: sid, path: '/tmp/w/b.txt' });
    assert.equal(r.structuredContent.content, 'B');
    assert.equal(text(r), 'B');
    r = await call(client, 'fs_read', { sandboxId: sid, path: '/tmp/w/c.bin', encoding: 'base64' });
    assert.equal(r.structuredContent.content, 'AAE=');
    r = await call(client, 'fs_list', { sandboxId: sid, path: '/tmp/w' });
    assert.deepEqual(r.structuredContent.entries.map((e) => e.name), ['a.txt', 'b.txt', 'c.bin']);
    r = await call(client, 'process_start', { sandboxId: sid, command: 'echo started; sleep 60', port: 0 });
    assert.equal(r.isError, false, text(r));
    assert.ok(r.structuredContent.pid > 0);
    r = await call(client, 'process_status', { sandboxId: sid });
    assert.equal(r.isError, false, text(r));
    assert.ok(r.structuredContent.processes.length >= 1);
    r = await call(client, 'process_killAll', { sandboxId: sid });
    assert.equal(r.isError, false, text(r));
    assert.ok(r.structuredContent.total >= 1);
    r = await call(client, 'sandbox_destroy', { sandboxId: sid });
    assert.equal(r.isError, false);
    assert.match(text(r), /succeeded/);

    // Errors the MCP way: a result with isError and a text that says what to do.
    r = await call(client, 'sandbox_get', { sandboxId: sid });
    assert.equal(r.isError, true);
    assert.match(text(r), /SandboxNotFoundError[\s\S]*sandbox_create/);
    r = await call(client, 'fs_read', { path: '/no/such/file' });
    assert.equal(r.isError, true);
    assert.match(text(r), /FileOperationError[\s\S]*fs_list/);
    r = await call(client, 'sandbox_run', { command: 'true', timeoutMs: 0 });
    assert.equal(r.isError, true);
    assert.match(text(r), /timeoutMs[\s\S]*Fix that argument/);
    r = await call(client, 'sandbox_run', { argv: ['echo', 'x'] });
    assert.equal(r.isError, true);
    assert.match(text(r), /argv[\s\S]*command/);
    r = await call(client, 'fs_write', { path: '/tmp/x' });
    assert.equal(r.isError, true);
    assert.match(text(r), /content/);
    await assert.rejects(call(client, 'no_such_tool'), (e) => e.code === -32602 && /Unknown tool/.test(e.message));

    const ids = replies(conn);
    assert.ok(ids.size >= 25, `${ids.size} replies`);
    const { code, ms } = await closeAndWait(conn);
    assert.equal(code, 0);
    assert.ok(ms < 2000, `exit took ${ms} ms`);
  });

  for (const version of ['2024-11-05', '2025-03-26', '2025-06-18', '2025-11-25']) {
    test(`legacy handshake at ${version} (client 2.4.0)`, async () => {
      const conn = await start('v2-legacy', { version });
      const init = conn.messages().find((m) => m.id !== undefined && m.result?.protocolVersion);
      assert.equal(init.result.protocolVersion, version);
      const { tools } = await conn.client.listTools();
      assert.deepEqual(tools.map((t) => t.name), expectedTools());
      const run = tools.find((t) => t.name === 'sandbox_run');
      // What each version knows: annotations from 2025-03-26, outputSchema from 2025-06-18.
      assert.equal(run.annotations !== undefined, version >= '2025-03-26');
      assert.equal(run.outputSchema !== undefined, version >= '2025-06-18');
      const r = await call(conn.client, 'sandbox_run', { command: 'echo v' });
      assert.equal(r.isError, false);
      assert.equal(r.structuredContent !== undefined, version >= '2025-06-18');
      assert.match(text(r), /v\n[\s\S]*exit code: 0/);
      await conn.client.ping();
      for (const m of conn.messages()) if (m.result) assert.equal(m.result.resultType, undefined);
      const { code, ms } = await closeAndWait(conn);
      assert.equal(code, 0);
      assert.ok(ms < 2000, `exit took ${ms} ms`);
    });
  }

  test('2026-07-28 (client 2.4.0 pinned): stateless requests, resultType, serverInfo', async () => {
    const conn = await start('modern');
    const { client } = conn;
    const first = conn.messages();
    const { tools } = await client.listTools();
    assert.deepEqual(tools.map((t) => t.name), expectedTools());
    let r = await call(client, 'sandbox_run', { command: 'echo modern; exit 2' });
    assert.equal(r.isError, false);
    assert.equal(r.structuredContent.exitCode, 2);
    assert.match(text(r), /modern\n[\s\S]*exit code: 2/);
    r = await call(client, 'fs_read', { path: '/nope' });
    assert.equal(r.isError, true);
    await assert.rejects(call(client, 'no_such_tool'), (e) => e.code === -32602);
    const msgs = conn.messages();
    assert.ok(msgs.length > first.length);
    for (const m of msgs) {
      if (!m.result) continue;
      assert.equal(m.result.resultType, 'complete', JSON.stringify(m).slice(0, 200));
      assert.equal(m.result._meta['io.modelcontextprotocol/serverInfo'].name, 'opensandbox-bridge');
    }
    const list = msgs.find((m) => m.result?.tools);
    assert.ok(list.result.ttlMs > 0);
    assert.equal(list.result.cacheScope, 'public');
    const { code, ms } = await closeAndWait(conn);
    assert.equal(code, 0);
    assert.ok(ms < 2000, `exit took ${ms} ms`);
  });

  test('2026-07-28 auto negotiation: server/discover probe, then requests with _meta', async () => {
    const conn = await start('auto');
    const r = await call(conn.client, 'sandbox_run', { command: 'echo auto' });
    assert.equal(r.structuredContent.stdout, 'auto\n');
    // The process the client kept never saw initialize: it was opened by a request with _meta.
    for (const m of conn.messages()) if (m.result) assert.equal(m.result.resultType, 'complete');
    assert.equal((await closeAndWait(conn)).code, 0);
  });

  test('-32022 with data.supported: the client corrects to a version both speak', async () => {
    const conn = await start('auto', { supported: ['2099-01-01', '2026-07-28'] });
    const r = await call(conn.client, 'sandbox_run', { command: 'echo corrected' });
    assert.equal(r.structuredContent.stdout, 'corrected\n');
    assert.equal((await closeAndWait(conn)).code, 0);
    // A client that speaks no version of ours gets the error itself, with the list.
    await assert.rejects(
      start('auto', { supported: ['2099-01-01'] }).then(() => {}),
      (e) => e.code === -32022 && e.data.supported.includes('2026-07-28') &&
        e.data.requested === '2099-01-01',
    );
  });

  test('cancellation: the run is killed and the request gets no reply', async () => {
    const conn = await start('legacy');
    const { client } = conn;
    await call(client, 'sandbox_run', { command: 'true' }); // the default sandbox exists
    const ac = new AbortController();
    const p = client.callTool(
      { name: 'sandbox_run', arguments: { command: 'echo $$ > /tmp/victim.pid; exec sleep 60' } },
      undefined,
      { signal: ac.signal },
    );
    await sleep(700 * SCALE);
    ac.abort('test');
    await assert.rejects(p);
    await sleep(500 * SCALE);
    const r = await call(client, 'sandbox_run', {
      command: 'kill -0 $(cat /tmp/victim.pid) 2>/dev/null && echo alive || echo gone',
    });
    assert.equal(r.structuredContent.stdout, 'gone\n');
    // The cancelled request (the third tools/call) got no reply at all.
    const sent = conn.messages().filter((m) => 'id' in m);
    const ids = sent.map((m) => m.id);
    assert.equal(new Set(ids).size, ids.length);
    const callIds = ids.filter((id) => typeof id === 'number').sort((a, b) => a - b);
    assert.ok(!callIds.includes(2), `the cancelled call was answered: ${JSON.stringify(callIds)}`);
    assert.equal((await closeAndWait(conn)).code, 0);
  });

  test('progress: output as notifications/progress, all before the result', {
    skip: !schemaStreams() && 'sandbox/run has no partialResultToken in this tree (no live output yet)',
  }, async () => {
    const conn = await start('legacy');
    const seen = [];
    const r = await conn.client.callTool(
      { name: 'sandbox_run', arguments: { command: 'for i in 1 2 3; do echo line$i; sleep 0.3; done' } },
      undefined,
      { onprogress: (p) => seen.push(p) },
    );
    assert.equal(r.structuredContent.stdout, 'line1\nline2\nline3\n');
    if (BACKEND === 'local') assert.ok(seen.length >= 2, `${seen.length} progress notifications`);
    let bytes = 0;
    for (const p of seen) {
      bytes += Buffer.byteLength(p.message);
      assert.equal(p.progress, bytes, 'progress counts the bytes so far');
    }
    assert.equal(seen.map((p) => p.message).join(''), seen.length ? r.structuredContent.stdout : '');
    // On the wire: every notifications/progress of the call before its reply.
    const msgs = conn.messages();
    const replyAt = msgs.findIndex((m) => m.result?.structuredContent?.stdout === 'line1\nline2\nline3\n');
    const lastNote = msgs.map((m) => m.method).lastIndexOf('notifications/progress');
    assert.ok(lastNote < replyAt);
    assert.equal((await closeAndWait(conn)).code, 0);
  });

  test('progress with a run that yields: notifications until the result, exec_read the rest', {
    skip: !HAS_EXEC && 'this server has no exec sessions (sandbox_run does not yield)',
  }, async () => {
    const conn = await start('legacy', { extraArgs: ['--mcp-yield-ms', '800'] });
    const { client } = conn;
    const seen = [];
    let r = await client.callTool(
      { name: 'sandbox_run', arguments: { command: 'echo first; sleep 0.3; echo second; sleep 1.5; echo done' } },
      undefined,
      { onprogress: (p) => seen.push(p) },
    );
    const sc = r.structuredContent;
    assert.equal(sc.running, true, 'it yielded although the call asked for progress');
    assert.equal(sc.stdout, 'first\nsecond\n');
    assert.ok(seen.length >= 2, `${seen.length} progress notifications`);
    assert.equal(seen.map((p) => p.message).join(''), 'first\nsecond\n');
    let bytes = 0;
    for (const p of seen) {
      bytes += Buffer.byteLength(p.message);
      assert.equal(p.progress, bytes, 'progress counts the bytes so far');
    }
    r = await call(client, 'exec_read', { execId: sc.execId, yieldMs: 5000 });
    assert.equal(r.structuredContent.running, false);
    assert.equal(r.structuredContent.stdout, 'done\n', 'exec_read has what came after the result');
    // On the wire: no notifications/progress after the call's reply.
    const msgs = conn.messages();
    const replyAt = msgs.findIndex((m) => m.result?.structuredContent?.execId === sc.execId);
    const lastNote = msgs.map((m) => m.method).lastIndexOf('notifications/progress');
    assert.ok(replyAt > 0 && lastNote < replyAt, `progress at ${lastNote}, reply at ${replyAt}`);
    assert.equal((await closeAndWait(conn)).code, 0);
  });

  test('calls run concurrently: a slow run does not hold up a quick read', async () => {
    const conn = await start('modern');
    const { client } = conn;
    await call(client, 'fs_write', { path: '/tmp/q.txt', content: 'quick' });
    let slowDone = 0;
    const slow = call(client, 'sandbox_run', { command: 'sleep 2; echo slow' }).then((r) => {
      slowDone = Date.now();
      return r;
    });
    await sleep(100);
    const r = await call(client, 'fs_read', { path: '/tmp/q.txt' });
    const quickDone = Date.now();
    assert.equal(r.structuredContent.content, 'quick');
    assert.equal(slowDone, 0, 'the read waited for the run');
    assert.equal((await slow).structuredContent.stdout, 'slow\n');
    assert.ok(slowDone >= quickDone);
    assert.equal((await closeAndWait(conn)).code, 0);
  });

  test('EOF and SIGTERM: every sandbox the connection created is destroyed, exit 0 < 2 s', async () => {
    const before = BACKEND === 'remote' ? await serverSessions() : [];
    for (const how of ['eof', 'sigterm']) {
      const conn = await start(how === 'eof' ? 'legacy' : 'modern');
      const { client } = conn;
      const a = (await call(client, 'sandbox_create')).structuredContent.sandboxId;
      const b = (await call(client, 'sandbox_create')).structuredContent.sandboxId;
      await call(client, 'sandbox_run', { command: 'true' }); // and the default one
      // One call still running when the end comes.
      const pending = call(client, 'sandbox_run', { command: 'sleep 30' }).catch(() => {});
      await sleep(300 * SCALE);
      if (BACKEND === 'remote') {
        const during = await serverSessions();
        assert.ok(during.includes(a) && during.includes(b));
        assert.equal(during.length, before.length + 3);
      }
      const t0 = Date.now();
      if (how === 'eof') conn.proc.stdin.end();
      else conn.proc.kill('SIGTERM');
      const e = await conn.exited;
      assert.equal(e.code, 0, `${how}: exit status`);
      assert.ok(e.at - t0 < 2000, `${how}: exit took ${e.at - t0} ms`);
      conn.messages();
      if (BACKEND === 'remote') {
        const afterEnd = await serverSessions();
        assert.deepEqual(afterEnd.sort(), [...before].sort(), `${how}: sessions left on the server`);
      }
      await client.close().catch(() => {});
      await pending;
    }
  });

  test('--mcp forces MCP mode, --mcp-yield-ms is accepted', async () => {
    const conn = await start('legacy', { extraArgs: ['--mcp', '--mcp-yield-ms', '5000'] });
    const { tools } = await conn.client.listTools();
    assert.ok(tools.length > 0);
    assert.equal((await closeAndWait(conn)).code, 0);
  });

  // sandbox_run's yield (API.md, "MCP mode"): with exec sessions, a command still running
  // after --mcp-yield-ms returns running: true and an execId that exec_read continues;
  // without them (a server without opensandboxd's Exec) sandbox_run waits for the end and no
  // exec tool is listed.
  for (const era of ['legacy', 'modern']) {
    test(`sandbox_run yields after --mcp-yield-ms, exec_read continues (${era})`, async () => {
      const conn = await start(era, { extraArgs: ['--mcp-yield-ms', '300'] });
      const { client } = conn;
      const { tools } = await client.listTools();
      const run = tools.find((t) => t.name === 'sandbox_run');
      if (HAS_EXEC) {
        assert.deepEqual(run.outputSchema.properties.exitCode.type, ['integer', 'null']);
        assert.ok(run.outputSchema.properties.running && run.outputSchema.properties.execId);
        assert.match(run.description, /running: true with an execId[\s\S]*exec_read/);
      } else {
        assert.ok(!tools.some((t) => t.name.startsWith('exec_')), 'no exec tools without exec sessions');
        assert.equal(run.outputSchema.properties.running, undefined);
        assert.match(run.description, /waits for the command to end/);
      }
      const t0 = Date.now();
      let r = await call(client, 'sandbox_run', { command: 'echo first; sleep 1; echo done' });
      assert.equal(r.isError, false, text(r));
      if (!HAS_EXEC) {
        // It waited for the end: a model gets the whole output, nothing to continue.
        assert.ok(Date.now() - t0 >= 900);
        assert.equal(r.structuredContent.stdout, 'first\ndone\n');
        assert.equal(r.structuredContent.exitCode, 0);
        assert.equal(r.structuredContent.execId, undefined);
        assert.doesNotMatch(text(r), /exec_read/);
        assert.equal((await closeAndWait(conn)).code, 0);
        return;
      }
      const sc = r.structuredContent;
      assert.equal(sc.running, true);
      assert.equal(sc.exitCode, null);
      assert.equal(sc.success, false);
      assert.equal(typeof sc.execId, 'string');
      assert.match(text(r), new RegExp(`still running[\\s\\S]*exec_read[\\s\\S]*"${sc.execId}"`));
      let out = sc.stdout;
      let reads = 0;
      do {
        r = await call(client, 'exec_read', { execId: sc.execId, yieldMs: 2000 });
        assert.equal(r.isError, false, text(r));
        out += r.structuredContent.stdout;
        reads++;
      } while (r.structuredContent.running && reads < 20);
      assert.equal(r.structuredContent.running, false);
      assert.equal(r.structuredContent.exitCode, 0);
      assert.equal(out, 'first\ndone\n');
      assert.match(text(r), /exit code: 0/);
      // Its end was reported: the id is gone, and the model is told what to do.
      r = await call(client, 'exec_read', { execId: sc.execId });
      assert.equal(r.isError, true);
      assert.match(text(r), /not found/);
      // A quick command does not yield.
      r = await call(client, 'sandbox_run', { command: 'echo quick' });
      assert.equal(r.structuredContent.running, false);
      assert.equal(r.structuredContent.execId, undefined);
      assert.equal(r.structuredContent.stdout, 'quick\n');
      const end = await closeAndWait(conn);
      assert.equal(end.code, 0, `signal ${end.signal}: ${conn.stderr().slice(-1500)}`);
    });
  }

  test('exec tools: exec_start with stdin, exec_write, exec_read, exec_list, exec_kill', {
    skip: !HAS_EXEC && 'this server has no exec sessions (the exec tools are not listed)',
  }, async () => {
    const conn = await start('legacy');
    const { client } = conn;
    let r = await call(client, 'exec_start', { command: 'cat; echo end', stdin: true, yieldMs: 100 });
    assert.equal(r.isError, false, text(r));
    const id = r.structuredContent.execId;
    assert.equal(r.structuredContent.running, true);
    assert.match(text(r), new RegExp(`exec_read with execId "${id}"`));
    r = await call(client, 'exec_write', { execId: id, data: 'hello\n' });
    assert.equal(r.isError, false, text(r));
    r = await call(client, 'exec_list');
    assert.ok(r.structuredContent.execs.some((e) => e.execId === id && e.running));
    r = await call(client, 'exec_write', { execId: id, eof: true });
    assert.equal(r.isError, false, text(r));
    let out = '';
    for (let i = 0; i < 20; i++) {
      r = await call(client, 'exec_read', { execId: id, yieldMs: 1000 });
      out += r.structuredContent.stdout;
      if (!r.structuredContent.running) break;
    }
    assert.equal(out, 'hello\nend\n');
    assert.equal(r.structuredContent.exitCode, 0);
    // A bad argument and a write to an exec without stdin: isError with what to do.
    r = await call(client, 'exec_write', { execId: id });
    assert.equal(r.isError, true);
    r = await call(client, 'exec_start', { command: 'exec sleep 60', yieldMs: 0 });
    const sleeper = r.structuredContent.execId;
    r = await call(client, 'exec_write', { execId: sleeper, data: 'x' });
    assert.equal(r.isError, true);
    assert.match(text(r), /without stdin[\s\S]*Fix that argument/);
    r = await call(client, 'exec_kill', { execId: sleeper });
    assert.equal(r.isError, false, text(r));
    r = await call(client, 'exec_read', { execId: sleeper, yieldMs: 2000 });
    assert.equal(r.structuredContent.running, false);
    assert.equal(r.structuredContent.signal, 9);
    assert.match(text(r), /killed by signal 9/);
    assert.equal((await closeAndWait(conn)).code, 0);
  });

  test('EOF ends a yielded run (or a run still waiting): its process is gone', async () => {
    const marker = `${31000 + Math.floor(Math.random() * 1000)}.${process.pid}`;
    const conn = await start('legacy', { extraArgs: ['--mcp-yield-ms', '300'] });
    const { client } = conn;
    await call(client, 'sandbox_run', { command: 'true' }); // the default sandbox exists
    const pending = call(client, 'sandbox_run', { command: `exec sleep ${marker}` }).catch(() => null);
    if (HAS_EXEC) {
      const r = await pending;
      assert.equal(r.structuredContent.running, true, 'the run yielded');
    } else {
      await sleep(500 * SCALE);
    }
    assert.ok(processAlive(`sleep ${marker}`), 'the command runs');
    conn.proc.stdin.end();
    const e = await conn.exited;
    assert.equal(e.code, 0);
    await client.close().catch(() => {});
    await pending;
    conn.messages();
    for (let i = 0; i < 20 && processAlive(`sleep ${marker}`); i++) await sleep(100);
    assert.ok(!processAlive(`sleep ${marker}`), 'the yielded run survived the bridge');
  });
});
