// load.test.ts - what activation costs apart from VS Code itself: activate() requires the
// core modules (and vscode-jsonrpc through them), creates two output channels and registers
// commands and providers; it starts no bridge (the first command does). This measures the
// require part in fresh node processes and prints "MEASURE activation-require-ms ...".

import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { execFileSync } from 'child_process';
import * as path from 'path';

function timeRequires(mods: string[]): number[] {
  const script = `const t0 = process.hrtime.bigint();
for (const m of ${JSON.stringify(mods)}) require(m);
console.log(Number(process.hrtime.bigint() - t0) / 1e6);`;
  const ms: number[] = [];
  for (let i = 0; i < 5; i++) ms.push(Number(execFileSync(process.execPath, ['-e', script], { cwd: path.join(__dirname, '..', '..') }).toString().trim()));
  return ms.sort((a, b) => a - b);
}

test('loading the core modules (what activate() requires), side by side with vscode-jsonrpc', () => {
  const core = ['client', 'fs', 'runner', 'terminal', 'config'].map((m) => path.join(__dirname, '..', 'core', m));
  const lazy = timeRequires(core);
  const eager = timeRequires([require.resolve('vscode-jsonrpc/node'), ...core]);
  assert.ok(lazy.every((x) => x > 0) && eager.every((x) => x > 0));
  console.log(`MEASURE activation-require-ms median=${lazy[2].toFixed(1)} min=${lazy[0].toFixed(1)} (core modules; vscode-jsonrpc loads at the first bridge start); ` +
    `with vscode-jsonrpc loaded eagerly median=${eager[2].toFixed(1)} min=${eager[0].toFixed(1)} (fresh node ${process.version} each, 5 runs)`);
});
