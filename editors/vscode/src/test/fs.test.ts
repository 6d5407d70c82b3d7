// fs.test.ts - the opensandbox: file system core against the real bridge: what VS Code's
// FileSystemProvider calls (stat, readDirectory, readFile, writeFile with create/overwrite,
// createDirectory, delete, rename), saved bytes arriving byte for byte, and the error kinds.

import { test, after } from 'node:test';
import * as assert from 'node:assert/strict';
import { FsError, parseUri, SandboxFsCore, uriString } from '../core/fs';
import { newClient } from './env';

const c = newClient();
const core = new SandboxFsCore(c);
let sid = '';
after(() => c.dispose());

const enc = (s: string) => new TextEncoder().encode(s);
const kind = (k: string) => (e: unknown) => e instanceof FsError && e.kind === k;

test('setup: a sandbox and a directory to work in', async () => {
  sid = await c.createSandbox();
  await core.createDirectory(sid, '/tmp/ws');
});

test('URIs: opensandbox://<sandboxId>/<path>', () => {
  assert.equal(uriString('abc', 'tmp/x'), 'opensandbox://abc/tmp/x');
  assert.deepEqual(parseUri('abc', '/tmp//x/'), { sandboxId: 'abc', path: '/tmp/x' });
  assert.deepEqual(parseUri('abc', ''), { sandboxId: 'abc', path: '/' });
  assert.throws(() => parseUri('', '/x'), kind('FileNotFound'));
});

test('save: writeFile puts the bytes as the editor wrote them, final newline included', async () => {
  const text = 'line one\r\nline two\n\ttabbed ünïcödé\n';
  await core.writeFile(sid, '/tmp/ws/a.txt', enc(text), { create: true, overwrite: true });
  const r = await c.run(sid, { command: 'od -An -c /tmp/ws/a.txt | tr -s " " | tr -d "\\n"; echo; wc -c < /tmp/ws/a.txt' });
  assert.equal(r.stdout.split('\n')[1], String(enc(text).length));
  assert.deepEqual(Buffer.from(await core.readFile(sid, '/tmp/ws/a.txt')), Buffer.from(enc(text)));
  // No final newline stays without one.
  await core.writeFile(sid, '/tmp/ws/a.txt', enc('no newline'), { create: false, overwrite: true });
  const r2 = await c.run(sid, { argv: ['cat', '/tmp/ws/a.txt'] });
  assert.equal(r2.stdout, 'no newline');
});

test('binary content round-trips', async () => {
  const b = Uint8Array.from([0, 255, 254, 10, 13, 0x80, 0xc3]);
  await core.writeFile(sid, '/tmp/ws/b.bin', b, { create: true, overwrite: false });
  assert.deepEqual(Buffer.from(await core.readFile(sid, '/tmp/ws/b.bin')), Buffer.from(b));
});

test('stat and readDirectory', async () => {
  assert.deepEqual(await core.stat(sid, '/tmp/ws/b.bin'), { type: 'file', size: 7 });
  assert.deepEqual(await core.stat(sid, '/tmp/ws'), { type: 'directory', size: 0 });
  assert.deepEqual(await core.stat(sid, '/'), { type: 'directory', size: 0 });
  const list = (await core.readDirectory(sid, '/tmp/ws')).sort();
  assert.deepEqual(list, [['a.txt', 'file'], ['b.bin', 'file']]);
  await assert.rejects(core.stat(sid, '/tmp/ws/nope'), kind('FileNotFound'));
  await assert.rejects(core.stat(sid, '/tmp/ws/a.txt/x'), kind('FileNotFound'));
  await assert.rejects(core.readDirectory(sid, '/tmp/ws/nope'), kind('FileNotFound'));
  await assert.rejects(core.readDirectory(sid, '/tmp/ws/a.txt'), kind('FileNotADirectory'));
  await assert.rejects(core.readFile(sid, '/tmp/ws/nope'), kind('FileNotFound'));
  await assert.rejects(core.readFile(sid, '/tmp/ws'), kind('FileIsADirectory'));
});

test('writeFile honours create and overwrite as VS Code asks', async () => {
  await assert.rejects(core.writeFile(sid, '/tmp/ws/new.txt', enc('x'), { create: false, overwrite: true }), kind('FileNotFound'));
  await assert.rejects(core.writeFile(sid, '/tmp/ws/a.txt', enc('x'), { create: true, overwrite: false }), kind('FileExists'));
  await assert.rejects(core.writeFile(sid, '/tmp/ws', enc('x'), { create: true, overwrite: true }), kind('FileIsADirectory'));
  await assert.rejects(core.writeFile(sid, '/tmp/ws/missing/dir/f', enc('x'), { create: true, overwrite: true }), kind('FileNotFound'));
});

test('createDirectory, rename, delete', async () => {
  await core.createDirectory(sid, '/tmp/ws/sub');
  await assert.rejects(core.createDirectory(sid, '/tmp/ws/sub'), kind('FileExists'));
  await core.writeFile(sid, '/tmp/ws/sub/f.txt', enc('f'), { create: true, overwrite: false });
  await core.rename(sid, '/tmp/ws/sub/f.txt', '/tmp/ws/g.txt', { overwrite: false });
  await assert.rejects(core.stat(sid, '/tmp/ws/sub/f.txt'), kind('FileNotFound'));
  assert.equal(Buffer.from(await core.readFile(sid, '/tmp/ws/g.txt')).toString(), 'f');
  await assert.rejects(core.rename(sid, '/tmp/ws/g.txt', '/tmp/ws/a.txt', { overwrite: false }), kind('FileExists'));
  await core.rename(sid, '/tmp/ws/g.txt', '/tmp/ws/a.txt', { overwrite: true });
  assert.equal(Buffer.from(await core.readFile(sid, '/tmp/ws/a.txt')).toString(), 'f');
  await core.writeFile(sid, '/tmp/ws/sub/h.txt', enc('h'), { create: true, overwrite: false });
  await assert.rejects(core.delete(sid, '/tmp/ws/sub', { recursive: false }), (e) => e instanceof FsError);
  await core.delete(sid, '/tmp/ws/sub', { recursive: true });
  await core.delete(sid, '/tmp/ws/a.txt', { recursive: false });
  assert.deepEqual((await core.readDirectory(sid, '/tmp/ws')).sort(), [['b.bin', 'file']]);
  await assert.rejects(core.delete(sid, '/tmp/ws/nope', { recursive: true }), kind('FileNotFound'));
});

test('a sandbox that does not exist is FileNotFound (the explorer shows it as missing)', async () => {
  await assert.rejects(core.stat('no-such-sandbox', '/'), kind('FileNotFound'));
  await assert.rejects(core.readFile('no-such-sandbox', '/etc/hostname'), kind('FileNotFound'));
});
