// glue.test.ts - src/extension.ts itself, activated in node with a stand-in for the
// `vscode` module (vscode-shim.ts; VS Code cannot be installed here) and driven through its
// registered commands and providers against the real bridge: activation starts no bridge,
// commands write to the output channel, the opensandbox: provider reads and writes, the API
// key reaches the bridge's environment only, a bad bridgePath is shown at once, and
// deactivate leaves no bridge and no sandbox behind.

import { test, after } from 'node:test';
import * as assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'fs';
import * as os from 'os';
import * as path from 'path';
import { BACKEND, BRIDGE, BRIDGE_ARGS, newClient, pidAlive, SCALE, sleep } from './env';

// eslint-disable-next-line @typescript-eslint/no-require-imports
const Module = require('module');
const shimPath = require.resolve('./vscode-shim');
const resolve0 = Module._resolveFilename;
Module._resolveFilename = function (req: string, ...rest: unknown[]) {
  return req === 'vscode' ? shimPath : resolve0.call(this, req, ...rest);
};
// eslint-disable-next-line @typescript-eslint/no-require-imports
const shim = require('./vscode-shim') as typeof import('./vscode-shim');
// eslint-disable-next-line @typescript-eslint/no-require-imports
const ext = require('../extension') as typeof import('../extension');
const rec = shim.recorded;

const url = BRIDGE_ARGS[BRIDGE_ARGS.indexOf('--url') + 1];
const grpc = BRIDGE_ARGS.includes('--grpc-port') ? Number(BRIDGE_ARGS[BRIDGE_ARGS.indexOf('--grpc-port') + 1]) : null;
rec.settings = {
  'opensandbox.bridgePath': BRIDGE,
  'opensandbox.url': BACKEND === 'remote' ? url : '',
  'opensandbox.grpcPort': BACKEND === 'remote' ? grpc : null,
  'opensandbox.bridgeArgs': [],
};

const secrets = new Map<string, string>();
function context() {
  return {
    subscriptions: [] as { dispose(): unknown }[],
    secrets: {
      get: async (k: string) => secrets.get(k),
      store: async (k: string, v: string) => { secrets.set(k, v); },
      delete: async (k: string) => { secrets.delete(k); },
    },
    extension: { packageJSON: { version: '0.1.0' } },
  };
}

const ctx = context();
after(async () => { await ext.deactivate(); });

const log = () => rec.channels.get('OpenSandbox Log')?.text ?? '';
const output = () => rec.channels.get('OpenSandbox')?.text ?? '';
const bridgePid = () => Number([...log().matchAll(/ready: pid (\d+)/g)].pop()?.[1]);

test('activate registers every contributed command and the providers, and starts no bridge', async () => {
  ext.activate(ctx as any);
  const pkg = JSON.parse(readFileSync(path.join(__dirname, '..', '..', 'package.json'), 'utf8'));
  const contributed = pkg.contributes.commands.map((c: { command: string }) => c.command).sort();
  assert.deepEqual([...rec.commands.keys()].sort(), contributed);
  assert.ok(rec.fileSystems.has('opensandbox'));
  assert.ok(rec.mcpProviders.has(pkg.contributes.mcpServerDefinitionProviders[0].id));
  await sleep(100);
  assert.equal(log(), '', 'no bridge started at activation');
});

test('opensandbox.run: output channel gets the command, its output, the exit status', async () => {
  await rec.commands.get('opensandbox.run')!('echo hello');
  assert.equal(output(), '$ echo hello\nhello\n[exit 0]\n');
  assert.match(log(), /\[bridge\] ready: pid \d+, backend /);
  assert.match(log(), /\[trace\] Sending request 'sandbox\/run/, 'the log has the JSON-RPC traffic');
  assert.deepEqual(rec.errors, []);
});

test('opensandbox.runFile and runSelection use the active editor', async () => {
  const text = '#!/usr/bin/env python3\nprint("file", 6 * 7)\n';
  rec.activeTextEditor = {
    document: { getText: (r?: unknown) => (r ? 'echo selected' : text), languageId: 'plaintext', fileName: '/w/a.py',
      lineAt: () => ({ text: 'echo line' }) },
    selection: { isEmpty: false, active: { line: 0 } },
  };
  await rec.commands.get('opensandbox.runFile')!();
  assert.ok(output().endsWith('$ python3 a.py\nfile 42\n[exit 0]\n'), output());
  (rec.activeTextEditor as any).document.languageId = 'shellscript';
  await rec.commands.get('opensandbox.runSelection')!();
  assert.ok(output().endsWith('$ sh (selection)\nselected\n[exit 0]\n'), output());
});

test('opensandbox.stop ends a running command', async () => {
  const p = rec.commands.get('opensandbox.run')!('sleep 30');
  await sleep(400);
  const t0 = Date.now();
  await rec.commands.get('opensandbox.stop')!();
  await p;
  assert.ok(output().endsWith('$ sleep 30\n[stopped]\n'), output());
  assert.ok(Date.now() - t0 < 10000 * SCALE);
});

test('the opensandbox: file system provider writes and reads the current sandbox', async () => {
  const sid = /sandbox ([0-9a-f-]+)/.exec(log())?.[1];
  assert.ok(sid, 'the log names the sandbox');
  const fsp = rec.fileSystems.get('opensandbox');
  const uri = shim.Uri.parse(`opensandbox://${sid}/tmp/saved.txt`);
  await fsp.writeFile(uri, new TextEncoder().encode('saved\n'), { create: true, overwrite: true });
  assert.equal(Buffer.from(await fsp.readFile(uri)).toString(), 'saved\n');
  assert.deepEqual(await fsp.stat(uri), { type: shim.FileType.File, ctime: 0, mtime: 0, size: 6 });
  const dir = await fsp.readDirectory(shim.Uri.parse(`opensandbox://${sid}/tmp`));
  assert.ok(dir.some(([n, t]: [string, number]) => n === 'saved.txt' && t === shim.FileType.File));
  await assert.rejects(fsp.readFile(shim.Uri.parse(`opensandbox://${sid}/tmp/none`)), (e: any) => e.code === 'FileNotFound');
  await rec.commands.get('opensandbox.run')!('cat /tmp/saved.txt');
  assert.ok(output().endsWith('$ cat /tmp/saved.txt\nsaved\n[exit 0]\n'));
});

test('setApiKey: the key goes to SecretStorage and the bridge environment, never its command line', async () => {
  rec.inputAnswers.push('k3y-for-test');
  await rec.commands.get('opensandbox.setApiKey')!();
  assert.equal(secrets.get('opensandbox.apiKey'), 'k3y-for-test');
  const pid = bridgePid();
  assert.ok(pidAlive(pid), 'the bridge was restarted with the key');
  const environ = readFileSync(`/proc/${pid}/environ`).toString().split('\0');
  assert.ok(environ.includes('OPENSANDBOX_API_KEY=k3y-for-test'));
  assert.ok(!readFileSync(`/proc/${pid}/cmdline`).toString().includes('k3y'));
  assert.ok(!log().includes('k3y-for-test'), 'the key is not in the log');
  rec.inputAnswers.push('');
  await rec.commands.get('opensandbox.setApiKey')!();
  assert.equal(secrets.has('opensandbox.apiKey'), false);
});

test('opensandbox.openTerminal: a Pseudoterminal over an exec session (or a clear message)', async () => {
  await rec.commands.get('opensandbox.openTerminal')!();
  const { pty } = rec.terminals[rec.terminals.length - 1];
  let text = '';
  let closed: number | undefined;
  pty.onDidWrite((t: string) => { text += t; });
  pty.onDidClose((c: number) => { closed = c; });
  pty.open();
  const t0 = Date.now();
  while (closed === undefined && !text.includes('$ ') && Date.now() - t0 < 10000 * SCALE) await sleep(20);
  if (closed !== undefined) {
    assert.match(text, /no exec sessions|cannot feed stdin/);
  } else {
    pty.handleInput('echo in-terminal\r');
    while (!text.includes('in-terminal\r\n') && Date.now() - t0 < 10000 * SCALE) await sleep(20);
    assert.ok(text.includes('in-terminal\r\n'), text);
    pty.close();
  }
});

test('the MCP definition: offered only for a bridge with --mcp; the key added on resolve', async () => {
  const p = rec.mcpProviders.get('opensandbox.bridge');
  const defs = await p.provideMcpServerDefinitions();
  const help = require('child_process').execFileSync(BRIDGE, ['--help']).toString();
  if (!/--mcp\b/.test(help)) {
    assert.deepEqual(defs, []);
    return;
  }
  assert.equal(defs.length, 1);
  assert.equal(defs[0].command, BRIDGE);
  assert.equal(defs[0].args[defs[0].args.length - 1], '--mcp');
  secrets.set('opensandbox.apiKey', 'mcp-key');
  const r = await p.resolveMcpServerDefinition(defs[0]);
  assert.equal(r.env.OPENSANDBOX_API_KEY, 'mcp-key');
  secrets.delete('opensandbox.apiKey');
});

test('upload, download, restartBridge, destroy', async () => {
  const tmp = mkdtempSync(path.join(os.tmpdir(), 'osb-vscode-glue-'));
  try {
    const local = path.join(tmp, 'up.txt');
    writeFileSync(local, 'up\u00e9\n');
    rec.inputAnswers.push('/tmp/up.txt');
    await rec.commands.get('opensandbox.upload')!(shim.Uri.file(local));
    assert.equal(rec.infos[rec.infos.length - 1], 'OpenSandbox: uploaded 5 bytes to /tmp/up.txt');
    const sid = [...log().matchAll(/\[ext\] sandbox ([0-9a-f-]+)/g)].pop()![1];
    rec.saveAnswers.push(shim.Uri.file(path.join(tmp, 'down.txt')));
    await rec.commands.get('opensandbox.download')!(shim.Uri.parse(`opensandbox://${sid}/tmp/up.txt`));
    assert.equal(readFileSync(path.join(tmp, 'down.txt'), 'utf8'), 'up\u00e9\n');
    const pid = bridgePid();
    await rec.commands.get('opensandbox.restartBridge')!();
    assert.notEqual(bridgePid(), pid);
    assert.ok(!pidAlive(pid));
    await rec.commands.get('opensandbox.run')!('echo after restart');
    assert.ok(output().endsWith('$ echo after restart\nafter restart\n[exit 0]\n'), output());
    const sid2 = [...log().matchAll(/\[ext\] sandbox ([0-9a-f-]+)/g)].pop()![1];
    await rec.commands.get('opensandbox.destroy')!();
    assert.equal(rec.infos[rec.infos.length - 1], `OpenSandbox: destroyed sandbox ${sid2}`);
    const check = newClient({ args: [...BRIDGE_ARGS, '--framing', 'lsp'] });
    try {
      if (BACKEND === 'remote') assert.equal(await check.sandboxExists(sid2), false);
    } finally { await check.dispose(); }
    await rec.commands.get('opensandbox.run')!('echo new sandbox');
    const sid3 = [...log().matchAll(/\[ext\] sandbox ([0-9a-f-]+)/g)].pop()![1];
    assert.notEqual(sid3, sid2);
    assert.deepEqual(rec.errors.filter((e) => !/killed by SIGKILL/.test(e)), []);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
});

test('a bridge killed behind the extension is reported at once; the next command restarts it', async () => {
  const pid = bridgePid();
  const errors = rec.errors.length;
  process.kill(pid, 'SIGKILL');
  const t0 = Date.now();
  while (rec.errors.length === errors && Date.now() - t0 < 3000) await sleep(20);
  assert.match(rec.errors[rec.errors.length - 1], /killed by SIGKILL.*next command starts it again/);
  await rec.commands.get('opensandbox.run')!('echo back');
  assert.ok(output().endsWith('$ echo back\nback\n[exit 0]\n'), output());
  assert.notEqual(bridgePid(), pid);
});

test('deactivate: the sandboxes are destroyed and the bridge is gone', async () => {
  const pid = bridgePid();
  const sid = [...log().matchAll(/\[ext\] sandbox ([0-9a-f-]+)/g)].pop()![1];
  await ext.deactivate();
  assert.ok(!pidAlive(pid), 'bridge process gone');
  assert.match(log(), /Sending request 'sandbox\/destroy/);
  assert.match(log(), /Sending request 'shutdown/);
  if (BACKEND === 'remote') {
    const check = newClient();
    try { assert.equal(await check.sandboxExists(sid), false); } finally { await check.dispose(); }
  }
});

test('a bridgePath that does not exist is shown at once as BridgeSpawnError', async () => {
  rec.settings['opensandbox.bridgePath'] = '/nonexistent/opensandbox-bridge';
  ext.activate(context() as any);
  const errors = rec.errors.length;
  const t0 = Date.now();
  await rec.commands.get('opensandbox.run')!('echo never');
  assert.ok(Date.now() - t0 < 3000);
  assert.match(rec.errors[errors] ?? '', /^BridgeSpawnError: cannot start \/nonexistent\/opensandbox-bridge: ENOENT/);
  assert.match(output(), /\[error\] BridgeSpawnError: /);
  rec.settings['opensandbox.bridgePath'] = BRIDGE;
});
