// lib.mjs - what the MCP tests share: where the bridge is, which backend to use, official SDK
// clients connected to a real bridge process with its raw stdout recorded, and a look at
// opensandboxd's sessions over HTTP. No MCP message is written by hand here: the SDKs do it.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { Client as LegacyClient } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport as LegacyStdio } from '@modelcontextprotocol/sdk/client/stdio.js';
import { Client as ModernClient } from '@modelcontextprotocol/client';
import { StdioClientTransport as ModernStdio } from '@modelcontextprotocol/client/stdio';

const HERE = path.dirname(fileURLToPath(import.meta.url));
export const REPO = path.resolve(HERE, '..', '..');
export const BRIDGE = process.env.OSB_BRIDGE || path.join(REPO, 'build', 'opensandbox-bridge');
// Set by tests/e2e/test_mcp.py for the remote backend (an opensandboxd it started).
export const URL = process.env.OSB_MCP_URL || '';
export const GRPC_PORT = process.env.OSB_MCP_GRPC_PORT || '';
export const BACKEND = URL ? 'remote' : 'local';
export const SCALE = Number(process.env.OSB_TIMEOUT_SCALE || '1');

export function bridgeArgs(extra = []) {
  const args = [...extra];
  if (URL) args.push('--url', URL, '--grpc-port', GRPC_PORT);
  return args;
}

// The tools the schema says there are, in its order: every sandbox/, fs/, exec/ and process/
// method, "/" written as "_".
export function schemaTools() {
  const doc = JSON.parse(fs.readFileSync(path.join(REPO, 'schema', 'openrpc.json'), 'utf8'));
  return doc.methods
    .map((m) => m.name)
    .filter((n) => /^(sandbox|fs|exec|process)\//.test(n))
    .map((n) => n.replace(/\//g, '_'));
}

// A connected client on a fresh bridge. era: 'legacy' (sdk 1.32.2), 'v2-legacy' (client 2.4.0
// with the initialize handshake at `version`), 'modern' (client 2.4.0 pinned to 2026-07-28),
// 'auto' (client 2.4.0 probing with server/discover, as hosts do).
export async function connect(era, { version, extraArgs = [], supported } = {}) {
  // The SDKs pass a minimal environment; the sanitizer settings of tests/run go along.
  const env = {};
  for (const k of ['ASAN_OPTIONS', 'UBSAN_OPTIONS', 'LSAN_OPTIONS']) {
    if (process.env[k]) env[k] = process.env[k];
  }
  const params = { command: BRIDGE, args: bridgeArgs(extraArgs), stderr: 'pipe', env };
  let client;
  let transport;
  if (era === 'legacy') {
    transport = new LegacyStdio(params);
    client = new LegacyClient({ name: 'osb-mcp-test', version: '1.0.0' });
  } else {
    transport = new ModernStdio(params);
    const opts = {};
    if (era === 'v2-legacy') opts.supportedProtocolVersions = [version];
    if (era === 'modern') opts.versionNegotiation = { mode: { pin: '2026-07-28' } };
    if (era === 'auto') opts.versionNegotiation = { mode: 'auto' };
    if (supported) opts.supportedProtocolVersions = supported;
    client = new ModernClient({ name: 'osb-mcp-test', version: '1.0.0' }, opts);
  }
  // Record the bridge's stdout byte for byte: both SDKs feed every chunk to _readBuffer.
  const raw = [];
  const append = transport._readBuffer.append.bind(transport._readBuffer);
  transport._readBuffer.append = (chunk) => {
    raw.push(Buffer.from(chunk));
    append(chunk);
  };
  let stderr = '';
  transport.stderr?.on('data', (d) => {
    stderr += d.toString();
  });
  await client.connect(transport);
  const proc = transport._process;
  const exited = new Promise((resolve) => {
    proc.once('exit', (code, signal) => resolve({ code, signal, at: Date.now() }));
  });
  return {
    client,
    transport,
    proc,
    exited,
    raw,
    stderr: () => stderr,
    // Every line of stdout is one JSON-RPC 2.0 message: nothing else ever appears.
    messages() {
      const text = Buffer.concat(raw).toString('utf8');
      assert.ok(text === '' || text.endsWith('\n'), 'stdout ends mid-line');
      return text
        .split('\n')
        .filter((l) => l !== '')
        .map((l) => {
          let m;
          assert.doesNotThrow(() => {
            m = JSON.parse(l);
          }, `stdout line is not JSON: ${l.slice(0, 200)}`);
          assert.equal(m.jsonrpc, '2.0', `not a JSON-RPC message: ${l.slice(0, 200)}`);
          return m;
        });
    },
  };
}

// Sanitizer reports in a bridge's stderr (the sanitizer build of tests/run).
export function sanitizerLines(stderr) {
  return stderr.split('\n').filter((l) => /(Address|Leak|Thread|Memory)Sanitizer|runtime error:/.test(l));
}

// Close stdin and wait for the exit; returns {code, signal, ms} (ms from close to exit).
// Also checks stdout held MCP messages only and stderr no sanitizer report.
export async function closeAndWait(conn) {
  const t0 = Date.now();
  conn.proc.stdin.end();
  const e = await conn.exited;
  await conn.client.close().catch(() => {});
  conn.messages();
  await sleep(50); // the last stderr bytes
  assert.deepEqual(sanitizerLines(conn.stderr()), []);
  return { code: e.code, signal: e.signal, ms: e.at - t0 };
}

// The session ids opensandboxd holds (remote backend only).
export async function serverSessions() {
  const r = await fetch(`${URL}/sessions`);
  assert.equal(r.status, 200);
  const list = await r.json();
  return list.map((s) => s.id ?? s.sandboxId ?? s.session_id ?? s.sessionId);
}

// The tools this backend's bridge lists: the schema's, without exec_* when the backend has no
// exec sessions (a server without opensandboxd's extension, as the public one or opensandboxd
// --no-ext: every exec/ call would be UnsupportedError). test_mcp.py sets OSB_MCP_EXEC=0 then.
export const HAS_EXEC = process.env.OSB_MCP_EXEC !== '0';
export function expectedTools() {
  return schemaTools().filter((n) => HAS_EXEC || !n.startsWith('exec_'));
}

// Whether a process whose command line contains marker runs on this machine (sandboxed
// processes of either backend are this machine's processes, in their own namespaces).
export function processAlive(marker) {
  for (const pid of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    let cmd = '';
    try {
      cmd = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ');
    } catch {
      continue;
    }
    if (cmd.includes(marker)) return true;
  }
  return false;
}

// Whether the schema's sandbox/run streams its output (partialResultToken): MCP progress
// needs it.
export function schemaStreams() {
  const doc = JSON.parse(fs.readFileSync(path.join(REPO, 'schema', 'openrpc.json'), 'utf8'));
  const run = doc.methods.find((m) => m.name === 'sandbox/run');
  return run.params.some((p) => p.name === 'partialResultToken');
}

export function text(result) {
  return result.content.filter((c) => c.type === 'text').map((c) => c.text).join('\n');
}

export function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}
