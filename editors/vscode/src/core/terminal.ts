// terminal.ts - the interactive terminal behind opensandbox.openTerminal, without VS Code:
// an exec session with stdin (`exec/start` with stdin: true, then `exec/write`, and output
// from `$/progress` chunks or `exec/read`). The sandbox's shell has no pty, so this module
// is the line discipline: it echoes what is typed, handles backspace, sends a line on Enter,
// Ctrl-C as SIGINT to the shell's process group, Ctrl-D as end of input, and turns "\n" into "\r\n" for the terminal.
// A bridge without exec/* (or whose server lacks exec with stdin) gets a clear message.

import { ExecState, OpenSandboxClient } from './client';
import { describeError } from './errors';

export interface TerminalSink {
  /** Text for the terminal (already with \r\n line ends). */
  write(text: string): void;
  /** The session is over; the terminal closes with this exit code. */
  close(code: number): void;
}

export const NO_EXEC_MESSAGE =
  'This OpenSandbox bridge has no exec sessions (exec/start), so there is no interactive terminal. ' +
  'Update opensandbox-bridge, or use "OpenSandbox: Run Command".';
export const NO_STDIN_MESSAGE =
  'The OpenSandbox server behind this bridge cannot feed stdin to a command (server/health lacks the ' +
  '"stdin" feature), so there is no interactive terminal. Use "OpenSandbox: Run Command".';

let terminalCounter = 0;

function crlf(text: string): string {
  return text.replace(/\r?\n/g, '\r\n');
}

export class ExecTerminalCore {
  private execId: string | undefined;
  private token: string | undefined;
  private line = '';
  private closed = false;
  private ended = false;
  /** A chunk of this exec's output came through `$/progress`. */
  private streaming = false;
  private sid: string | undefined;
  /** Where, in the sandbox, the wrapper wrote the shell's pid (for Ctrl-C). */
  private pidFile: string | undefined;
  /** exec/write requests go one after another: the bridge may serve concurrent ones out of order. */
  private writes: Promise<unknown> = Promise.resolve();

  constructor(private readonly client: OpenSandboxClient, private readonly sandboxId: () => Promise<string>,
    private readonly sink: TerminalSink, private readonly argv: string[] = ['/bin/sh', '-i']) {}

  /** Whether the bridge can back a terminal: '' when it can, else the message to show. */
  static async unsupportedReason(client: OpenSandboxClient): Promise<string> {
    if (!(await client.hasMethod('exec/start')) || !(await client.hasMethod('exec/write'))) return NO_EXEC_MESSAGE;
    if (!(await client.features()).includes('stdin')) return NO_STDIN_MESSAGE;
    return '';
  }

  get id(): string | undefined { return this.execId; }

  async open(): Promise<void> {
    try {
      const why = await ExecTerminalCore.unsupportedReason(this.client);
      if (why) {
        this.sink.write(crlf(why + '\n'));
        this.finish(1);
        return;
      }
      const sid = await this.sandboxId();
      const out = (t: string) => { this.streaming = true; if (!this.closed) this.sink.write(crlf(t)); };
      this.sid = sid;
      this.pidFile = `/tmp/.opensandbox-terminal-${process.pid}-${++terminalCounter}-${Date.now()}`;
      const r = await this.client.execStart(sid, {
        argv: ['/bin/sh', '-c', 'printf %s "$$" > "$OSB_TERMINAL_PIDFILE"; exec "$@"', 'sh', ...this.argv],
        stdin: true, env: { TERM: 'dumb', PS1: '$ ', OSB_TERMINAL_PIDFILE: this.pidFile },
      }, { onStdout: out, onStderr: out });
      this.execId = r.execId;
      this.token = r.token;
      this.show(r);
      void this.pump();
    } catch (e) {
      this.sink.write(crlf(`\n${describeError(e)}\n`));
      this.finish(1);
    }
  }

  private show(s: ExecState): void {
    if (this.closed) return;
    if (s.stdout) this.sink.write(crlf(s.stdout));
    if (s.stderr) this.sink.write(crlf(s.stderr));
  }

  /**
   * Reads until the process ends: short polls (exec/read brings the output) until a
   * `$/progress` chunk has shown that output streams, then long polls that only wait for the
   * end. The `stream` feature is not enough: a bridge may stream runs but not execs, and a
   * long poll then holds typed lines' output back for seconds.
   */
  private async pump(): Promise<void> {
    while (!this.closed && this.execId) {
      let s: ExecState;
      try {
        s = await this.client.execRead(this.execId, this.streaming ? 5000 : 100);
      } catch (e) {
        if (!this.closed) this.sink.write(crlf(`\n${describeError(e)}\n`));
        this.finish(1);
        return;
      }
      this.show(s);
      if (!s.running) {
        const code = s.signal ? 128 + s.signal : (s.exitCode ?? 0);
        this.ended = true;
        if (!this.closed) this.sink.write(crlf(`\n[process exited with ${s.signal ? `signal ${s.signal}` : `code ${s.exitCode}`}]\n`));
        this.finish(code);
        return;
      }
    }
  }

  private finish(code: number): void {
    this.client.releaseToken(this.token);
    if (this.closed) return;
    this.closed = true;
    this.sink.close(code);
  }

  /** Keys typed in the terminal. */
  handleInput(data: string): void {
    if (!this.execId || this.closed) return;
    for (const ch of data) {
      if (ch === '\r' || ch === '\n') {
        const line = this.line + '\n';
        this.line = '';
        this.sink.write('\r\n');
        this.send(line);
      } else if (ch === '\x7f' || ch === '\b') {
        if (this.line.length) {
          this.line = [...this.line].slice(0, -1).join('');
          this.sink.write('\b \b');
        }
      } else if (ch === '\x03') {
        this.line = '';
        this.sink.write('^C\r\n');
        this.interrupt();
      } else if (ch === '\x04') {
        if (!this.line) {
          const id = this.execId;
          this.writes = this.writes.then(() => this.client.execWrite(id, '', true)).catch(() => undefined);
        }
      } else if (ch === '\x1b') {
        // Escape sequences (arrows) would need line editing the shell cannot see: dropped.
        return;
      } else if (ch >= ' ' || ch === '\t') {
        this.line += ch;
        this.sink.write(ch);
      }
    }
  }

  /**
   * Ctrl-C: SIGINT to the session's whole process group, as a tty would send it. exec/kill
   * signals only the session's process (the shell, which survives it), so a command it runs
   * in the foreground would go on; the group is the shell's pid (each exec is a session
   * leader), which the wrapper wrote to pidFile. Falls back to exec/kill.
   */
  private interrupt(): void {
    const id = this.execId!;
    const sid = this.sid;
    const pidFile = this.pidFile;
    const viaGroup = sid && pidFile
      ? this.client.run(sid, { argv: ['/bin/sh', '-c', 'kill -INT -"$(cat "$1")"', 'sh', pidFile], timeoutMs: 10000 })
        .then((r) => r.exitCode === 0)
      : Promise.resolve(false);
    void viaGroup.catch(() => false).then((ok) => ok ? undefined : this.client.execKill(id, 2)).catch(() => undefined);
  }

  private send(text: string): void {
    const id = this.execId!;
    this.writes = this.writes.then(() => this.client.execWrite(id, text)).catch((e) => {
      if (!this.closed) this.sink.write(crlf(`${describeError(e)}\n`));
    });
  }

  /** The terminal was closed by the user: end the session's process. */
  async dispose(): Promise<void> {
    const running = this.execId && !this.ended;
    this.finish(0);
    if (running) await this.client.execKill(this.execId!, 9).catch(() => undefined);
    if (this.sid && this.pidFile && this.client.running) { // never start a bridge for this
      await this.client.run(this.sid, { argv: ['rm', '-f', this.pidFile], timeoutMs: 10000 }).catch(() => undefined);
    }
  }
}
