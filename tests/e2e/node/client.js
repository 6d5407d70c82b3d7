// client.js - drive opensandbox-bridge the way a VS Code extension would: with VS Code's
// own JSON-RPC library (vscode-jsonrpc), LSP framing over the bridge's stdio.
//
//   node client.js BRIDGE [BRIDGE-ARGS...]
//
// Prints one JSON object on stdout ({"ok": true, "steps": {...}}) and exits 0 when every
// step behaved; on failure prints {"ok": false, "error": ..., "steps": {...}} and exits 1.
// Used by tests/e2e/test_vscode_jsonrpc.py.
'use strict';

const { spawn } = require('child_process');
const rpc = require('vscode-jsonrpc/node');

const bridgePath = process.argv[2];
const bridgeArgs = process.argv.slice(3);
const timeScale = Number(process.env.OSB_TIMEOUT_SCALE || '1');
const steps = {};
let stderr = '';

function withTimeout(promise, ms, what) {
  let timer;
  const t = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timeout: ${what} after ${ms} ms`)), ms * timeScale);
  });
  return Promise.race([promise, t]).finally(() => clearTimeout(timer));
}

function assert(cond, msg) {
  if (!cond) throw new Error(`assertion failed: ${msg}`);
}

async function main() {
  const child = spawn(bridgePath, bridgeArgs, { stdio: ['pipe', 'pipe', 'pipe'] });
  child.stderr.on('data', (d) => { stderr += d.toString(); });
  const exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));

  const conn = rpc.createMessageConnection(
    new rpc.StreamMessageReader(child.stdout),
    new rpc.StreamMessageWriter(child.stdin));
  const problems = [];
  conn.onError(([err]) => problems.push(`connection error: ${err && err.message}`));
  conn.onUnhandledNotification((n) => problems.push(`unexpected notification ${n.method}`));
  conn.listen();

  const init = await withTimeout(conn.sendRequest('initialize', {
    processId: process.pid, rootUri: null, capabilities: {}, clientInfo: { name: 'vscode-jsonrpc-test' },
    initializationOptions: {},
  }), 10000, 'initialize');
  assert(init.serverInfo && init.serverInfo.name, 'serverInfo.name');
  assert(Array.isArray(init.capabilities.methods) && init.capabilities.methods.includes('sandbox/run'),
    'capabilities.methods lists sandbox/run');
  steps.initialize = { serverInfo: init.serverInfo, backend: init.capabilities.backend };
  await conn.sendNotification('initialized', {});

  const created = await withTimeout(conn.sendRequest('sandbox/create', { env: { GREETING: 'hi' } }),
    30000, 'sandbox/create');
  const sid = created.sandboxId;
  assert(typeof sid === 'string' && sid.length > 0, 'sandboxId');
  steps.create = { sandboxId: sid };

  const ran = await withTimeout(conn.sendRequest('sandbox/run',
    { sandboxId: sid, command: 'echo "$GREETING from vscode-jsonrpc"' }), 30000, 'sandbox/run');
  steps.run = { stdout: ran.stdout, exitCode: ran.exitCode, success: ran.success };

  const content = 'héllo wörld ✓\n';
  const wrote = await withTimeout(conn.sendRequest('fs/write',
    { sandboxId: sid, path: 'note.txt', content }), 30000, 'fs/write');
  const read = await withTimeout(conn.sendRequest('fs/read', { sandboxId: sid, path: 'note.txt' }),
    30000, 'fs/read');
  steps.fs = { bytesWritten: wrote.bytesWritten, content: read.content, size: read.size,
    roundTrip: read.content === content };

  // Cancel a long run with a CancellationTokenSource: the library sends $/cancelRequest.
  const source = new rpc.CancellationTokenSource();
  const t0 = Date.now();
  const long = conn.sendRequest('sandbox/run', { sandboxId: sid, command: 'sleep 60' }, source.token);
  setTimeout(() => source.cancel(), 500);
  let cancelled;
  try {
    const r = await withTimeout(long, 20000, 'the cancelled sandbox/run');
    cancelled = { result: r };
  } catch (e) {
    cancelled = { code: e.code, message: e.message, isResponseError: e instanceof rpc.ResponseError };
  }
  cancelled.elapsedMs = Date.now() - t0;
  steps.cancel = cancelled;

  // The connection is still fine after the cancel.
  const after = await withTimeout(conn.sendRequest('sandbox/run', { sandboxId: sid, command: 'echo after' }),
    30000, 'sandbox/run after cancel');
  steps.afterCancel = { stdout: after.stdout };

  // An error reply surfaces as a ResponseError with its code and data.
  try {
    await withTimeout(conn.sendRequest('sandbox/get', { sandboxId: 'no-such-sandbox' }), 30000, 'sandbox/get');
    steps.notFound = { result: 'unexpected success' };
  } catch (e) {
    steps.notFound = { code: e.code, type: e.data && e.data.type };
  }

  await withTimeout(conn.sendRequest('sandbox/destroy', { sandboxId: sid }), 30000, 'sandbox/destroy');
  const shut = await withTimeout(conn.sendRequest('shutdown'), 10000, 'shutdown');
  steps.shutdown = { result: shut === undefined ? null : shut };
  await conn.sendNotification('exit');
  const ex = await withTimeout(exited, 20000, 'bridge exit');
  steps.exit = ex;
  conn.dispose();
  steps.problems = problems;
  return steps;
}

main().then(
  (s) => {
    process.stdout.write(JSON.stringify({ ok: true, steps: s, stderr: stderr.slice(-5000) }) + '\n');
    process.exit(0);
  },
  (e) => {
    process.stdout.write(JSON.stringify({ ok: false, error: String(e && e.stack || e), steps,
      stderr: stderr.slice(-3000) }) + '\n');
    process.exit(1);
  });
