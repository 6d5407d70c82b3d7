// bridge.ts - one opensandbox-bridge child process and its JSON-RPC connection.
// Spawns the bridge, speaks LSP framing to it through vscode-jsonrpc, sends `initialize`
// first, bounds every request with a timeout, turns a failed spawn or an early exit into an
// error that carries the bridge's last stderr lines (never a silent timeout), and on stop
// sends `shutdown` + `exit`, then SIGTERM and SIGKILL if the process lingers.
// No `vscode` import: the extension and the node tests share this module.

import { ChildProcess, spawn } from 'child_process';
import { closeSync, openSync, readSync } from 'fs';
import * as path from 'path';
import { PassThrough } from 'stream';
import type * as Rpc from 'vscode-jsonrpc/node';
import { OpenSandboxError, fromResponseError } from './errors';

export interface BridgeOptions {
  command: string;
  args: string[];
  /** Extra environment for the bridge (e.g. OPENSANDBOX_API_KEY); merged over process.env. */
  env?: Record<string, string>;
  cwd?: string;
  /** Default bound on one request, in ms (30000). */
  requestTimeoutMs?: number;
  /** Bound on spawn + initialize, in ms (15000). */
  startTimeoutMs?: number;
  /** Gets every stderr line of the bridge and a trace of the JSON-RPC traffic. */
  log?: (line: string) => void;
  clientName?: string;
}

export interface RequestOptions {
  timeoutMs?: number;
  /** Aborting sends $/cancelRequest; the request then ends with RequestCancelled (-32800). */
  signal?: AbortSignal;
}

export interface InitializeResult {
  serverInfo?: { name: string; version: string };
  capabilities: { methods: string[]; backend: 'local' | 'remote' | string };
}

export interface ExitInfo { code: number | null; signal: NodeJS.Signals | null }

// vscode-jsonrpc is loaded on the first start, not when the extension activates: it is
// most of what requiring this module would cost (~50 ms), and many sessions never start a bridge.
let rpcModule: typeof Rpc | undefined;
function rpcLib(): typeof Rpc {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  return (rpcModule ??= require('vscode-jsonrpc/node') as typeof Rpc);
}

const STDERR_KEEP = 50;

const ELF_MACHINE: Record<string, number> = { x64: 62, arm64: 183, ia32: 3, arm: 40, riscv64: 243, ppc64: 21, s390x: 22, loong64: 258 };

/**
 * Why a binary that started could not be the bridge: an ELF file for another architecture
 * (the kernel refuses it with ENOEXEC and the C library then hands it to /bin/sh, so the
 * child "runs" and fails with 126/127). '' when nothing is found.
 */
export function binaryProblem(command: string): string {
  const dirs = command.includes('/') ? [''] : (process.env.PATH ?? '').split(':').filter(Boolean);
  for (const d of dirs) {
    const file = d ? path.join(d, command) : command;
    let fd: number;
    try { fd = openSync(file, 'r'); } catch { continue; }
    const h = Buffer.alloc(20);
    try { readSync(fd, h, 0, 20, 0); } finally { closeSync(fd); }
    if (h.readUInt32BE(0) !== 0x7f454c46) return h.subarray(0, 2).toString() === '#!' ? '' : `${file} is not an executable (no ELF header, no #! line)`;
    const machine = h[5] === 2 ? h.readUInt16BE(18) : h.readUInt16LE(18);
    const want = ELF_MACHINE[process.arch];
    if (want !== undefined && machine !== want) return `${file} is a binary for another architecture (ELF machine ${machine}; this is ${process.arch}, machine ${want}): ENOEXEC`;
    return '';
  }
  return '';
}
const STDERR_SHOW = 12;

export class BridgeProcess {
  readonly options: BridgeOptions;
  private child: ChildProcess | undefined;
  private conn: Rpc.MessageConnection | undefined;
  private toChild: PassThrough | undefined;
  private stderrLines: string[] = [];
  private stderrPartial = '';
  private stderrHead: string[] = [];
  private stderrCount = 0;
  private pending = new Set<(e: Error) => void>();
  private exitInfo: ExitInfo | undefined;
  private exitError: Error | undefined;
  private exited: Promise<ExitInfo> = Promise.resolve({ code: null, signal: null });
  private notificationHandlers = new Map<string, (params: any) => void>();
  private stopping = false;
  initializeResult: InitializeResult | undefined;
  /** Called once when the process ends (whether or not stop() asked it to). */
  onExit: ((info: ExitInfo, unexpected: boolean) => void) | undefined;

  constructor(options: BridgeOptions) {
    this.options = options;
  }

  get pid(): number | undefined { return this.child?.pid; }
  get alive(): boolean { return this.child !== undefined && this.exitInfo === undefined; }
  get methods(): string[] { return this.initializeResult?.capabilities.methods ?? []; }
  get backend(): string | undefined { return this.initializeResult?.capabilities.backend; }

  /** The last stderr lines of the bridge (what a failure message shows). */
  stderrTail(n = STDERR_SHOW): string[] {
    const lines = this.stderrPartial ? [...this.stderrLines, this.stderrPartial] : this.stderrLines;
    return lines.slice(-n);
  }

  private log(line: string): void {
    this.options.log?.(line);
  }

  private withTail(message: string): string {
    let tail = this.stderrTail();
    // Before initialize the first lines usually say what went wrong (a usage error above its help).
    if (!this.initializeResult && this.stderrCount > tail.length) {
      const head = this.stderrHead.slice(0, Math.min(4, this.stderrCount - tail.length));
      tail = [...head, ...(this.stderrCount > head.length + tail.length ? ['…'] : []), ...tail];
    }
    return tail.length ? `${message}\nlast stderr lines of the bridge:\n${tail.join('\n')}` : message;
  }

  private exitMessage(info: ExitInfo): string {
    const how = info.signal ? `killed by ${info.signal}` : `exited with code ${info.code}`;
    const why = this.initializeResult ? '' : binaryProblem(this.options.command);
    return this.withTail(`opensandbox-bridge (${this.options.command}) ${how}${why ? `: ${why}` : ''}`);
  }

  /** "exited with code 1" and the stderr tail, for a bridge that has ended. */
  exitSummary(): string {
    return this.exitError?.message ?? 'still running';
  }

  /** Registers a handler for a server notification such as `$/progress`. */
  onNotification(method: string, handler: (params: any) => void): void {
    this.notificationHandlers.set(method, handler);
    this.conn?.onNotification(method, handler);
  }

  /** Spawns the bridge and sends `initialize`; rejects with the spawn error or exit and stderr tail. */
  async start(initializationOptions: Record<string, unknown> = {}): Promise<InitializeResult> {
    if (this.child) throw new Error('BridgeProcess.start called twice');
    const o = this.options;
    const startTimeout = o.startTimeoutMs ?? 15000;
    this.log(`[bridge] starting ${o.command} ${o.args.join(' ')}`);
    let child: ChildProcess;
    try {
      child = spawn(o.command, o.args, {
        stdio: ['pipe', 'pipe', 'pipe'],
        env: { ...process.env, ...(o.env ?? {}) },
        cwd: o.cwd,
      });
    } catch (e) {
      throw new OpenSandboxError('BridgeSpawnError', `cannot start ${o.command}: ${(e as Error).message}`);
    }
    this.child = child;
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (chunk: string) => this.takeStderr(chunk));

    let resolveExit!: (i: ExitInfo) => void;
    this.exited = new Promise((r) => { resolveExit = r; });
    const failure = new Promise<never>((_, reject) => {
      child.on('error', (err: NodeJS.ErrnoException) => {
        // A spawn failure (ENOENT, EACCES, ENOEXEC): there is no process, so no 'exit'.
        const msg = this.withTail(`cannot start ${o.command}: ${err.code ?? ''} ${err.message}`.replace('  ', ' '));
        this.markExited({ code: null, signal: null }, new OpenSandboxError('BridgeSpawnError', msg));
        resolveExit({ code: null, signal: null });
        reject(new OpenSandboxError('BridgeSpawnError', msg));
      });
      child.on('exit', (code, signal) => {
        // Let stderr drain first (briefly: a grandchild may hold it open), so that the
        // message carries the bridge's last words.
        let once = false;
        const go = () => {
          if (once) return;
          once = true;
          const info = { code, signal };
          const err = new OpenSandboxError('BridgeExited', this.exitMessage(info));
          this.markExited(info, err);
          resolveExit(info);
          reject(err);
        };
        if (child.stderr!.readableEnded) go();
        else {
          child.stderr!.once('end', go);
          setTimeout(go, 300);
        }
      });
    });
    failure.catch(() => undefined);
    // Writes to a dead child's stdin fail with EPIPE; the exit path reports it.
    child.stdin!.on('error', (e) => this.log(`[bridge] stdin: ${e.message}`));

    // Nothing is written before the process exists: a spawn failure has no stdin to take it.
    await Promise.race([new Promise<void>((r) => child.once('spawn', () => r())), failure]);

    // vscode-jsonrpc leaves a write to a dead pipe as an unhandled rejection; a PassThrough in
    // between takes the writes, and the pipe's own error is logged by the handler above.
    const toChild = new PassThrough();
    toChild.pipe(child.stdin!);
    this.toChild = toChild;
    const rpc = rpcLib();
    const conn = rpc.createMessageConnection(
      new rpc.StreamMessageReader(child.stdout!),
      new rpc.StreamMessageWriter(toChild));
    this.conn = conn;
    conn.onError(([e]) => this.log(`[rpc] ${e?.message ?? e}`));
    conn.onUnhandledNotification((n) => this.log(`[rpc] notification ${n.method} (unhandled)`));
    for (const [m, h] of this.notificationHandlers) conn.onNotification(m, h);
    if (o.log) {
      const log = o.log;
      conn.trace(rpc.Trace.Verbose, { log: (m: string | object, d?: string) => log(`[trace] ${typeof m === 'string' ? m : JSON.stringify(m)}${d ? ' ' + d : ''}`) });
    }
    conn.listen();

    const init = this.requestRaw<InitializeResult>('initialize', {
      processId: process.pid,
      clientInfo: { name: o.clientName ?? 'opensandbox-vscode' },
      capabilities: {},
      initializationOptions,
    }, { timeoutMs: startTimeout });
    let result: InitializeResult;
    try {
      result = await Promise.race([init, failure]);
    } catch (e) {
      // A process that started but never answered initialize is no use: end it now.
      if (this.alive) {
        this.kill();
        await this.waitExit(5000);
      }
      throw e;
    }
    this.initializeResult = result;
    await conn.sendNotification('initialized', {});
    this.log(`[bridge] ready: pid ${child.pid}, backend ${result.capabilities.backend}`);
    return result;
  }

  private takeStderr(chunk: string): void {
    const parts = (this.stderrPartial + chunk).split('\n');
    this.stderrPartial = parts.pop() ?? '';
    for (const line of parts) {
      if (this.stderrHead.length < 4) this.stderrHead.push(line);
      this.stderrCount++;
      this.stderrLines.push(line);
      this.log(`[stderr] ${line}`);
    }
    if (this.stderrLines.length > STDERR_KEEP) this.stderrLines.splice(0, this.stderrLines.length - STDERR_KEEP);
  }

  private markExited(info: ExitInfo, err: Error): void {
    if (this.exitInfo) return;
    this.exitInfo = info;
    this.log(`[bridge] ${err.message.split('\n')[0]}`);
    for (const reject of this.pending) reject(err);
    this.pending.clear();
    // (The connection is not disposed here: that would fail writes still queued in it.)
    this.exitError = err;
    // Before initialize has answered, start() itself reports the failure: not unexpected.
    this.onExit?.(info, !this.stopping && this.initializeResult !== undefined);
  }

  /** Sends one request, bounded by a timeout; errors are OpenSandboxError. */
  request<T = any>(method: string, params?: object, opts: RequestOptions = {}): Promise<T> {
    if (!this.alive || !this.initializeResult) {
      return Promise.reject(new OpenSandboxError('BridgeExited',
        this.exitInfo ? this.exitMessage(this.exitInfo) : 'the bridge is not running'));
    }
    return this.requestRaw<T>(method, params, opts);
  }

  private requestRaw<T>(method: string, params: object | undefined, opts: RequestOptions): Promise<T> {
    if (opts.signal?.aborted) {
      return Promise.reject(new OpenSandboxError('RequestCancelled', `${method}: cancelled before it was sent`, -32800));
    }
    const conn = this.conn!;
    const rpc = rpcLib();
    const timeoutMs = opts.timeoutMs ?? this.options.requestTimeoutMs ?? 30000;
    const cts = new rpc.CancellationTokenSource();
    return new Promise<T>((resolve, reject) => {
      let done = false;
      const finish = (f: () => void) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        opts.signal?.removeEventListener('abort', onAbort);
        this.pending.delete(fail);
        f();
      };
      const fail = (e: Error) => finish(() => reject(e));
      const onAbort = () => cts.cancel();
      const timer = setTimeout(() => {
        cts.cancel(); // tells the bridge, which stops the work
        fail(new OpenSandboxError('TimeoutError', `${method}: no reply from the bridge within ${timeoutMs} ms`, 0, { timeoutMs }));
      }, timeoutMs);
      this.pending.add(fail);
      opts.signal?.addEventListener('abort', onAbort);
      let p: Promise<T>;
      try {
        p = params === undefined ? conn.sendRequest<T>(method, cts.token) : conn.sendRequest<T>(method, params, cts.token);
      } catch (e) { // the connection is closed: the process is gone
        fail(new OpenSandboxError('BridgeExited', this.exitInfo ? this.exitMessage(this.exitInfo) : `${method}: ${(e as Error).message}`));
        return;
      }
      p.then((r) => finish(() => resolve(r)), (e: any) => {
        if (e instanceof rpc.ResponseError) fail(fromResponseError(e));
        else fail(new OpenSandboxError('BridgeExited', this.exitInfo ? this.exitMessage(this.exitInfo) : `${method}: ${e?.message ?? e}`));
      });
    });
  }

  notify(method: string, params?: object): void {
    if (this.alive) void this.conn!.sendNotification(method, params).catch(() => undefined);
  }

  /** Waits for the process to end, at most ms; true when it has. */
  async waitExit(ms: number): Promise<boolean> {
    if (!this.child || this.exitInfo) return true;
    let t: NodeJS.Timeout | undefined;
    const r = await Promise.race([this.exited.then(() => true), new Promise<boolean>((res) => { t = setTimeout(() => res(false), ms); })]);
    clearTimeout(t);
    return r;
  }

  /** shutdown + exit, then SIGTERM and SIGKILL if the process lingers. Resolves once it is gone. */
  async stop(graceMs = 2000): Promise<ExitInfo | undefined> {
    if (!this.child) return undefined;
    this.stopping = true;
    if (this.alive && this.initializeResult) {
      try {
        await this.request('shutdown', undefined, { timeoutMs: graceMs });
      } catch (e) {
        this.log(`[bridge] shutdown: ${(e as Error).message}`);
      }
      await this.conn?.sendNotification('exit').catch(() => undefined);
    }
    // EOF ends the bridge too; a dead child's pipe is left alone (writes may still be queued).
    if (this.alive) this.toChild?.end();
    if (!(await this.waitExit(graceMs))) {
      this.log('[bridge] still running after exit: SIGTERM');
      this.child.kill('SIGTERM');
      if (!(await this.waitExit(1000))) {
        this.log('[bridge] still running after SIGTERM: SIGKILL');
        this.child.kill('SIGKILL');
        await this.waitExit(5000);
      }
    }
    return this.exitInfo;
  }

  /** Ends the process at once (for a bridge that no longer answers). */
  kill(): void {
    this.stopping = true;
    if (this.alive) this.child!.kill('SIGKILL');
  }
}
