// mcp.test.ts - the MCP server definition the extension gives VS Code's agent mode: the
// bridge with --mcp (offered only when its --help lists the flag). When this bridge has MCP
// mode, the test starts exactly what the definition says and drives it as an MCP host
// would: initialize, tools/list, tools/call sandbox_run, then EOF.

import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawn } from 'child_process';
import { createInterface } from 'readline';
import { bridgeArgs, bridgeSupportsMcp, mcpServerCommand } from '../core/config';
import { BRIDGE, BRIDGE_ARGS, SCALE } from './env';

test('settings become bridge arguments; the API key only in the environment', () => {
  const s = { bridgePath: '/x/bridge', url: 'http://127.0.0.1:1', grpcPort: 2, bridgeArgs: ['--log-level', 'info'], requestTimeoutMs: 1 };
  assert.deepEqual(bridgeArgs(s), ['--url', 'http://127.0.0.1:1', '--grpc-port', '2', '--log-level', 'info']);
  assert.deepEqual(bridgeArgs({ ...s, url: '' }), ['--log-level', 'info']);
  const m = mcpServerCommand(s, 'secret');
  assert.equal(m.command, '/x/bridge');
  assert.equal(m.args[m.args.length - 1], '--mcp');
  assert.ok(!m.args.some((a) => a.includes('secret')));
  assert.deepEqual(m.env, { OPENSANDBOX_API_KEY: 'secret' });
});

test('no MCP server is offered for a bridge that cannot be run', async () => {
  assert.equal(await bridgeSupportsMcp('/nonexistent/opensandbox-bridge'), false);
});

test('the MCP definition starts a bridge that agent mode can use', async (t) => {
  if (!(await bridgeSupportsMcp(BRIDGE))) {
    t.skip('this bridge has no --mcp yet (the MCP issue): the extension offers no MCP server');
    return;
  }
  const m = mcpServerCommand({ bridgePath: BRIDGE, url: '', grpcPort: null, bridgeArgs: BRIDGE_ARGS, requestTimeoutMs: 30000 }, undefined);
  const child = spawn(m.command, m.args, { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, ...m.env } });
  let stderr = '';
  child.stderr.on('data', (d) => { stderr += d; });
  const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
  const replies = new Map<number, (v: any) => void>();
  createInterface({ input: child.stdout }).on('line', (line) => {
    const msg = JSON.parse(line);
    if (msg.id !== undefined) replies.get(msg.id)?.(msg);
  });
  let id = 0;
  const call = (method: string, params: object) => new Promise<any>((resolve, reject) => {
    const my = ++id;
    const timer = setTimeout(() => reject(new Error(`${method}: no reply; stderr: ${stderr}`)), 20000 * SCALE);
    replies.set(my, (v) => { clearTimeout(timer); resolve(v); });
    child.stdin.write(JSON.stringify({ jsonrpc: '2.0', id: my, method, params }) + '\n');
  });
  try {
    const init = await call('initialize', { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'vscode-test', version: '1' } });
    assert.equal(init.result.protocolVersion, '2025-06-18');
    child.stdin.write(JSON.stringify({ jsonrpc: '2.0', method: 'notifications/initialized' }) + '\n');
    const tools = await call('tools/list', {});
    const names = tools.result.tools.map((x: { name: string }) => x.name);
    assert.ok(names.includes('sandbox_run') && names.includes('fs_read'), names.join(' '));
    const w = await call('tools/call', { name: 'fs_write', arguments: { path: '/tmp/agent.txt', content: 'from agent mode\n' } });
    assert.equal(w.result.isError ?? false, false, JSON.stringify(w));
    const rd = await call('tools/call', { name: 'fs_read', arguments: { path: '/tmp/agent.txt' } });
    assert.equal(rd.result.structuredContent.content, 'from agent mode\n', JSON.stringify(rd));
    const run = await call('tools/call', { name: 'sandbox_run', arguments: { command: 'cat /tmp/agent.txt' } });
    const text = JSON.stringify(run);
    if (run.result.isError && /exec\/start is not supported/.test(text)) {
      // A bridge bug, not the extension's: MCP mode runs sandbox_run as exec/start (to
      // yield), and a backend without exec sessions (opensandboxd today) answers -32006
      // instead of the bridge falling back to sandbox/run. Visible as TODO until fixed.
      t.todo(`bridge: MCP sandbox_run does not fall back to sandbox/run without exec sessions: ${run.result.content[0].text.split('\n')[0]}`);
    }
    assert.equal(run.result.isError ?? false, false, text);
    assert.equal(run.result.structuredContent.stdout, 'from agent mode\n');
  } finally {
    child.stdin.end();
  }
  assert.equal(await exited, 0, stderr);
});
