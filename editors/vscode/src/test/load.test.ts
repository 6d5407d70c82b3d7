// load.test.ts - what activation costs apart from VS Code itself: activate() requires the
// core modules (and vscode-jsonrpc through them), creates two output channels and registers
// commands and providers; it starts no bridge (the first command does). This measures the
// require part in fresh node processes and prints "MEASURE activation-require-ms ...".

import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { execFileSync } from 'child_process';
import * as path from 'path';

test('loading the core modules (what activate() requires)', () => {
  const core = path.join(__dirname, '..', 'core');
  const script = `const t0 = process.hrtime.bigint();
for (const m of ['client', 'fs', 'runner', 'terminal', 'config']) require(${JSON.stringify(core)} + '/' + m);
console.log(Number(process.hrtime.bigint() - t0) / 1e6);`;
  const ms: number[] = [];
  for (let i = 0; i < 5; i++) ms.push(Number(execFileSync(process.execPath, ['-e', script]).toString().trim()));
  ms.sort((a, b) => a - b);
  assert.ok(ms.every((x) => x > 0));
  console.log(`MEASURE activation-require-ms median=${ms[2].toFixed(1)} min=${ms[0].toFixed(1)} max=${ms[4].toFixed(1)} (the core modules; vscode-jsonrpc loads at the first bridge start; fresh node ${process.version})`);
});
