// runner.ts - what "run" means for the extension, apart from VS Code: which interpreter runs
// a file (shebang first, then the language id), and a run streamed into a text sink that
// ends with a line giving the exit status. No `vscode` import.

import { OpenSandboxClient, RunResult, RunSpec } from './client';
import { describeError, isCancelled } from './errors';

/** An interpreter and the flag that makes it run program text given as an argument. */
const inline: Record<string, string> = {
  sh: '-c', bash: '-c', dash: '-c', zsh: '-c',
  python: '-c', python3: '-c',
  node: '-e', nodejs: '-e',
  lua: '-e', perl: '-e', ruby: '-e',
};

const byLanguage: Record<string, string> = {
  shellscript: 'sh', sh: 'sh', bash: 'bash',
  python: 'python3', javascript: 'node', lua: 'lua', perl: 'perl', ruby: 'ruby',
};

/** The interpreter named by a `#!` line (`/usr/bin/env -S python3 -u` gives python3), if any. */
export function shebangInterpreter(firstLine: string): string | undefined {
  if (!firstLine.startsWith('#!')) return undefined;
  const words = firstLine.slice(2).trim().split(/\s+/).filter(Boolean);
  if (!words.length) return undefined;
  let prog = words[0].split('/').pop()!;
  if (prog === 'env') {
    const rest = words.slice(1).filter((w) => !w.startsWith('-') && !w.includes('='));
    if (!rest.length) return undefined;
    prog = rest[0].split('/').pop()!;
  }
  return prog;
}

/** Collapses versioned names: python3.11 → python3, nodejs → node. */
function normalize(prog: string): string | undefined {
  if (/^python3(\.\d+)?$/.test(prog)) return 'python3';
  if (prog === 'python') return 'python3';
  if (/^lua(5\.\d|jit)?$/.test(prog)) return 'lua';
  if (prog === 'nodejs') return 'node';
  return inline[prog] ? prog : undefined;
}

/**
 * The argv that runs `text` in the sandbox: interpreter from the shebang, else from the
 * language id. Throws with a clear message when neither names one we know.
 */
export function runFileArgv(text: string, languageId: string): string[] {
  const firstLine = text.split('\n', 1)[0];
  const fromShebang = shebangInterpreter(firstLine);
  const prog = fromShebang !== undefined ? normalize(fromShebang) : byLanguage[languageId];
  if (!prog) {
    const what = fromShebang !== undefined ? `the interpreter "${fromShebang}" of the #! line` : `files of language "${languageId}"`;
    throw new Error(`OpenSandbox cannot run ${what}: known are sh, bash, python, node, lua, perl, ruby`);
  }
  // A #! line is not a comment in every language (lua -e): blank it, keeping line numbers.
  const body = fromShebang !== undefined ? text.slice(firstLine.length) : text;
  return [prog, inline[prog], body];
}

/** "[exit 0]", "[exit 2]", "[killed by signal 9]": the last line of a run's output. */
export function statusLine(r: Pick<RunResult, 'exitCode' | 'signal' | 'truncated'>): string {
  const base = r.signal ? `[killed by signal ${r.signal}]` : `[exit ${r.exitCode}]`;
  return r.truncated ? `${base} (output truncated)` : base;
}

export interface Sink { append(text: string): void }

/**
 * Runs spec and writes "$ command", the output as it comes, and the status line (or the
 * error, "Type: message") to sink. Resolves with the result, or undefined after an error.
 */
export async function runToSink(client: OpenSandboxClient, sandboxId: string, spec: RunSpec, sink: Sink,
  signal?: AbortSignal, title?: string): Promise<RunResult | undefined> {
  sink.append(`$ ${title ?? spec.command ?? (spec.argv ?? []).join(' ')}\n`);
  let atLineStart = true;
  const out = (t: string) => { sink.append(t); atLineStart = t.endsWith('\n'); };
  const nl = () => (atLineStart ? '' : '\n');
  try {
    const r = await client.run(sandboxId, spec, { onStdout: out, onStderr: out }, { signal });
    sink.append(`${nl()}${statusLine(r)}\n`);
    return r;
  } catch (e) {
    sink.append(`${nl()}${isCancelled(e) ? '[stopped]' : `[error] ${describeError(e)}`}\n`);
    return undefined;
  }
}
