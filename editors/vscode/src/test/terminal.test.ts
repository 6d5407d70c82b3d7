// terminal.test.ts - the interactive terminal core against the real bridge. Without exec
// sessions with stdin (before issue 9, or a server without the "stdin" feature) it must say
// so clearly and close; with them, typed lines reach the shell and its output comes back.

import { test, after } from 'node:test';
import * as assert from 'node:assert/strict';
import { ExecTerminalCore, NO_EXEC_MESSAGE, NO_STDIN_MESSAGE } from '../core/terminal';
import { newClient, SCALE, sleep } from './env';

const c = newClient();
after(() => c.dispose());

function sink() {
  const s = { text: '', closed: undefined as number | undefined };
  return { s, sink: { write: (t: string) => { s.text += t; }, close: (code: number) => { s.closed = code; } } };
}

/** What the terminal shows: "\b \b" (our erase of one typed character) applied. */
function screen(text: string): string {
  let out = '';
  for (let i = 0; i < text.length; i++) {
    if (text.startsWith('\b \b', i)) { out = out.slice(0, -1); i += 2; } else out += text[i];
  }
  return out;
}

async function until(pred: () => boolean, ms: number, what: string): Promise<void> {
  const t0 = Date.now();
  while (!pred()) {
    if (Date.now() - t0 > ms) throw new Error(`timeout waiting for ${what}`);
    await sleep(20);
  }
}

test('a bridge without exec with stdin: a clear message, and the terminal closes', async (t) => {
  const why = await ExecTerminalCore.unsupportedReason(c);
  if (!why) {
    t.skip('this bridge has exec sessions with stdin: the interactive test below covers it');
    return;
  }
  assert.ok(why === NO_EXEC_MESSAGE || why === NO_STDIN_MESSAGE);
  const { s, sink: k } = sink();
  const core = new ExecTerminalCore(c, () => c.createSandbox(), k);
  await core.open();
  assert.equal(s.closed, 1);
  assert.ok(s.text.includes(why.slice(0, 40)), s.text);
  assert.ok(!/\n(?<!\r\n)/.test(s.text.replace(/\r\n/g, '')), 'lines end with \\r\\n');
});

test('interactive: typed lines run in the shell, output comes back, exit closes', async (t) => {
  const why = await ExecTerminalCore.unsupportedReason(c);
  if (why) {
    t.skip(`no exec sessions with stdin on this bridge yet (issue 9): ${why.split('.')[0]}`);
    return;
  }
  const { s, sink: k } = sink();
  const core = new ExecTerminalCore(c, () => c.createSandbox(), k);
  await core.open();
  core.handleInput('echo hel');
  core.handleInput('x\x7flo $((6*7))\r');
  await until(() => s.text.includes('hello 42'), 10000 * SCALE, 'echo output');
  assert.ok(s.text.includes('echo helx\b \blo $((6*7))\r\n'), `typed text is echoed, backspace erases: ${JSON.stringify(s.text)}`);
  assert.ok(screen(s.text).includes('echo hello $((6*7))'), 'the screen shows the line as sent');
  assert.ok(s.text.includes('hello 42\r\n'), 'output lines end with \\r\\n');
  // Ctrl-C drops a typed line, and interrupts what the shell runs in the foreground (the
  // rest of that list too); the shell survives both.
  core.handleInput('echo dropped\x03');
  const t0 = Date.now();
  core.handleInput('sleep 30; echo slept\r');
  await sleep(500);
  core.handleInput('\x03');
  core.handleInput('echo after-interrupt\r');
  // Output, not the echo of the typed line (which also ends in "after-interrupt\r\n").
  await until(() => /(?<!echo )after-interrupt\r\n/.test(s.text), 10000 * SCALE, 'the shell after ^C');
  assert.ok(Date.now() - t0 < 20000, 'the sleep was interrupted');
  assert.ok(!/(?<!echo )slept\r\n/.test(s.text), JSON.stringify(s.text));
  core.handleInput('exit 3\r');
  await until(() => s.closed !== undefined, 10000 * SCALE, 'the terminal to close');
  assert.equal(s.closed, 3);
  assert.ok(s.text.includes('echo dropped^C\r\n') && !s.text.includes('dropped\r\n'), JSON.stringify(s.text));
  assert.ok(s.text.includes('[process exited with code 3]'));
});

test('closing the terminal kills the session', async (t) => {
  const why = await ExecTerminalCore.unsupportedReason(c);
  if (why) {
    t.skip('no exec sessions with stdin on this bridge yet (issue 9)');
    return;
  }
  const sid = await c.createSandbox();
  const { sink: k } = sink();
  const core = new ExecTerminalCore(c, async () => sid, k);
  await core.open();
  const id = core.id!;
  await core.dispose();
  await sleep(300);
  const list = await c.request<{ execs: { execId: string; running: boolean }[] }>('exec/list', { sandboxId: sid });
  assert.ok(!list.execs.some((e) => e.execId === id && e.running), JSON.stringify(list));
});
