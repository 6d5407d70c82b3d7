// bridge.test.ts - the bridge's life cycle as the extension manages it, against the real
// bridge: initialize, request timeouts, spawn failures and early exits reported at once with
// the bridge's stderr, restart of a dead bridge, dispose (sandboxes destroyed, shutdown +
// exit, kill when the process lingers), errors with data.type.

import { after, test } from 'node:test';
import * as assert from 'node:assert/strict';
import { promises as fsp, chmodSync, copyFileSync, mkdtempSync, writeFileSync } from 'fs';
import * as os from 'os';
import * as path from 'path';
import { BridgeProcess } from '../core/bridge';
import { describeError, OpenSandboxError } from '../core/errors';
import { BACKEND, BRIDGE, BRIDGE_ARGS, newClient, options, pidAlive, SCALE, sleep } from './env';

const tmp = mkdtempSync(path.join(os.tmpdir(), 'osb-vscode-test-'));
after(() => fsp.rm(tmp, { recursive: true, force: true }));

async function startFails(command: string, args: string[] = []): Promise<{ err: OpenSandboxError; ms: number }> {
  const b = new BridgeProcess(options({ command, args }));
  const t0 = Date.now();
  try {
    await b.start();
  } catch (e) {
    return { err: e as OpenSandboxError, ms: Date.now() - t0 };
  } finally {
    await b.stop();
  }
  throw new Error(`${command} started, but should not have`);
}

test('initialize reports the backend and the methods', async () => {
  const b = new BridgeProcess(options());
  const r = await b.start();
  assert.equal(r.serverInfo?.name, 'opensandbox-bridge');
  assert.equal(r.capabilities.backend, BACKEND);
  assert.ok(r.capabilities.methods.includes('sandbox/run'));
  const info = await b.stop();
  assert.deepEqual(info, { code: 0, signal: null }, 'shutdown + exit ends the bridge with 0');
});

test('missing binary: BridgeSpawnError at once, naming the path', async () => {
  const missing = path.join(tmp, 'no-such-bridge');
  const { err, ms } = await startFails(missing);
  assert.equal(err.type, 'BridgeSpawnError');
  assert.match(err.message, /ENOENT/);
  assert.ok(err.message.includes(missing));
  assert.ok(ms < 3000, `reported after ${ms} ms`);
});

test('binary without the exec bit: BridgeSpawnError EACCES at once', async () => {
  const p = path.join(tmp, 'bridge-noexec');
  copyFileSync(BRIDGE, p);
  chmodSync(p, 0o644);
  const { err, ms } = await startFails(p);
  assert.equal(err.type, 'BridgeSpawnError');
  assert.match(err.message, /EACCES/);
  assert.ok(ms < 3000, `reported after ${ms} ms`);
});

test('binary for another architecture: an error at once, not a timeout', async () => {
  // An ELF header whose machine is not ours (AArch64 on x86-64, else x86-64): execve says ENOEXEC.
  const p = path.join(tmp, 'bridge-otherarch');
  const h = Buffer.alloc(64);
  Buffer.from([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1]).copy(h);
  h.writeUInt16LE(2, 16);
  h.writeUInt16LE(process.arch === 'x64' ? 183 : 62, 18);
  h.writeUInt32LE(1, 20);
  writeFileSync(p, h, { mode: 0o755 });
  const { err, ms } = await startFails(p);
  assert.ok(err.type === 'BridgeSpawnError' || err.type === 'BridgeExited', err.type);
  assert.match(err.message, /ENOEXEC|exec format|cannot execute|another architecture/i, err.message);
  assert.ok(ms < 3000, `reported after ${ms} ms`);
});

test('early exit (a flag the bridge rejects): BridgeExited with its last stderr lines', async () => {
  const { err, ms } = await startFails(BRIDGE, ['--no-such-flag']);
  assert.equal(err.type, 'BridgeExited');
  assert.match(err.message, /exited with code [1-9]/);
  assert.match(err.message, /last stderr lines of the bridge:\n[^]*no-such-flag/, err.message);
  assert.ok(ms < 3000, `reported after ${ms} ms`);
});

test('a program that never answers initialize: TimeoutError, and the process is ended', async () => {
  // `sleep` reads nothing and writes nothing: a wrong bridgePath that starts but never speaks.
  const b = new BridgeProcess(options({ command: 'sleep', args: ['30'], startTimeoutMs: 500 }));
  await assert.rejects(b.start(), (e: OpenSandboxError) => e.type === 'TimeoutError' && /initialize/.test(e.message));
  assert.equal(b.alive, false);
  assert.ok(!pidAlive(b.pid!));
});

test('every request has a timeout; the bridge stays usable after one', async () => {
  const c = newClient();
  try {
    const sid = await c.createSandbox();
    const t0 = Date.now();
    await assert.rejects(c.request('sandbox/run', { sandboxId: sid, command: 'sleep 5' }, { timeoutMs: 300 }),
      (e: OpenSandboxError) => e.type === 'TimeoutError' && /no reply from the bridge within 300 ms/.test(e.message));
    assert.ok(Date.now() - t0 < 2000 * SCALE);
    const r = await c.request('sandbox/run', { sandboxId: sid, command: 'echo still here' });
    assert.equal(r.stdout, 'still here\n');
  } finally {
    await c.dispose();
  }
});

test('bridge errors carry data.type and read as "Type: message"', async () => {
  const c = newClient();
  try {
    await c.ensureBridge();
    const e = await c.request('sandbox/get', { sandboxId: 'no-such-sandbox' }).then(() => undefined, (x) => x);
    assert.ok(e instanceof OpenSandboxError);
    assert.equal(e.code, -32001);
    assert.equal(e.type, 'SandboxNotFoundError');
    assert.equal(e.data?.sandboxId, 'no-such-sandbox');
    assert.match(describeError(e), /^SandboxNotFoundError: \S/);
    const bad = await c.request('sandbox/run', { sandboxId: 'x' }).then(() => undefined, (x) => x);
    assert.equal(bad.type, 'InvalidParams');
    const unknown = await c.request('no/such', {}).then(() => undefined, (x) => x);
    assert.equal(unknown.type, 'MethodNotFound');
  } finally {
    await c.dispose();
  }
});

test('a bridge that died is reported at once and restarted by the next request', async () => {
  const exits: string[] = [];
  const c = newClient({}, (m) => exits.push(m));
  try {
    const b1 = await c.ensureBridge();
    const pid1 = b1.pid!;
    process.kill(pid1, 'SIGKILL');
    for (let i = 0; i < 50 && !exits.length; i++) await sleep(20);
    assert.equal(exits.length, 1, 'onUnexpectedExit called');
    assert.match(exits[0], /killed by SIGKILL/);
    assert.equal(c.running, false);
    const sid = await c.createSandbox();
    assert.ok(sid);
    assert.notEqual(c.process!.pid, pid1);
    assert.equal(c.generation, 2);
  } finally {
    await c.dispose();
  }
});

test('a request in flight when the bridge dies fails with BridgeExited, not a timeout', async () => {
  const c = newClient();
  try {
    const sid = await c.createSandbox();
    const p = c.request('sandbox/run', { sandboxId: sid, command: 'sleep 20' });
    await sleep(200);
    process.kill(c.process!.pid!, 'SIGKILL');
    const t0 = Date.now();
    await assert.rejects(p, (e: OpenSandboxError) => e.type === 'BridgeExited');
    assert.ok(Date.now() - t0 < 2000);
  } finally {
    await c.dispose();
  }
});

test('dispose destroys the sandboxes it created, then shutdown + exit', async () => {
  const c = newClient();
  const a = await c.createSandbox();
  const b = await c.createSandbox();
  const proc = c.process!;
  await c.dispose();
  assert.equal(proc.alive, false);
  assert.ok(!pidAlive(proc.pid!), 'bridge process gone');
  assert.deepEqual(c.createdSandboxes(), []);
  if (BACKEND === 'remote') {
    // A second bridge to the same server: the sandboxes must be gone there.
    const check = newClient();
    try {
      for (const id of [a, b]) assert.equal(await check.sandboxExists(id), false, `${id} destroyed`);
    } finally {
      await check.dispose();
    }
  }
});

test('a bridge that lingers after exit is killed', async () => {
  // The spawned process ignores SIGTERM and outlives the bridge it runs: only SIGKILL ends it.
  const script = path.join(tmp, 'lingering.sh');
  await fsp.writeFile(script, '#!/bin/sh\ntrap "" TERM\n"$@"\nexec sleep 60\n', { mode: 0o755 });
  const b = new BridgeProcess(options({ command: script, args: [BRIDGE, ...BRIDGE_ARGS, '--framing', 'lsp'] }));
  await b.start();
  const t0 = Date.now();
  const info = await b.stop(500);
  assert.equal(info?.signal, 'SIGKILL');
  assert.ok(!pidAlive(b.pid!));
  assert.ok(Date.now() - t0 < 5000);
});
