// client.ts - OpenSandboxClient, the TypeScript client API of the extension.
// Owns the bridge process: starts it on the first request and again on the next request
// after it died; remembers the sandboxes it created and destroys them on dispose(); streams
// run output through `partialResultToken` + `$/progress`, falling back to the result's
// stdout/stderr when no chunk came; moves host files with fs/upload / fs/download, or with
// fs/read / fs/write (base64) when the backend lacks them (not in rpc.discover, no `upload`
// in server/health's features, or an answer of -32006 / -32601). No `vscode` import.

import { promises as fsp } from 'fs';
import { BridgeOptions, BridgeProcess, InitializeResult, RequestOptions } from './bridge';
import { OpenSandboxError } from './errors';

export interface RunResult {
  stdout: string; stderr: string; exitCode: number; signal: number; success: boolean; truncated: boolean;
}

export interface ExecState {
  running: boolean; stdout: string; stderr: string; exitCode: number | null; signal: number | null; truncated: boolean;
}

export interface RunSpec {
  command?: string;
  argv?: string[];
  env?: Record<string, string>;
  cwd?: string;
  timeoutMs?: number;
}

export interface OutputHandlers {
  onStdout?: (text: string) => void;
  onStderr?: (text: string) => void;
}

export interface ClientOptions {
  /** Called before each (re)start: the settings may have changed meanwhile. */
  bridgeOptions: () => BridgeOptions | Promise<BridgeOptions>;
  /** Told when a bridge dies without being asked to (the extension shows it at once). */
  onUnexpectedExit?: (message: string) => void;
  log?: (line: string) => void;
}

let tokenCounter = 0;

export class OpenSandboxClient {
  private readonly opts: ClientOptions;
  private bridge: BridgeProcess | undefined;
  private starting: Promise<BridgeProcess> | undefined;
  private progress = new Map<string, (value: { stdout?: string; stderr?: string }) => void>();
  private healthCache: { bridge: BridgeProcess; features: string[] } | undefined;
  /** Sandboxes this client created and has not destroyed, by the bridge generation that made them. */
  private created = new Map<string, BridgeProcess>();
  /** The bridge whose fs/upload / fs/download answered "unsupported". */
  private noHostFiles: BridgeProcess | undefined;
  private disposed = false;
  /** How many bridges this client has started (a restart makes it grow). */
  generation = 0;

  constructor(opts: ClientOptions) {
    this.opts = opts;
  }

  get process(): BridgeProcess | undefined { return this.bridge; }
  get running(): boolean { return !!this.bridge?.alive; }

  /** The running bridge, started (or restarted, when the last one died) if needed. */
  async ensureBridge(): Promise<BridgeProcess> {
    if (this.disposed) throw new OpenSandboxError('Disposed', 'the OpenSandbox client has been disposed');
    if (this.bridge?.alive && this.bridge.initializeResult) return this.bridge;
    if (!this.starting) {
      this.starting = this.startBridge().finally(() => { this.starting = undefined; });
    }
    return this.starting;
  }

  private async startBridge(): Promise<BridgeProcess> {
    const old = this.bridge;
    if (old?.alive) await old.stop();
    if (old && old.backend === 'local') {
      // The local backend's sandboxes lived inside that process.
      for (const [id, b] of this.created) if (b === old) this.created.delete(id);
    }
    const bo = await this.opts.bridgeOptions();
    const b = new BridgeProcess({ ...bo, log: bo.log ?? this.opts.log });
    b.onNotification('$/progress', (p: { token: string | number; value: { stdout?: string; stderr?: string } }) => {
      this.progress.get(String(p?.token))?.(p?.value ?? {});
    });
    b.onExit = (_info, unexpected) => {
      if (unexpected && this.bridge === b) this.opts.onUnexpectedExit?.(b.exitSummary());
    };
    this.bridge = b;
    this.generation++;
    await b.start();
    return b;
  }

  /** initialize's result of the running bridge (starting it if needed). */
  async initializeResult(): Promise<InitializeResult> {
    return (await this.ensureBridge()).initializeResult!;
  }

  /** Sends any bridge method; the reply's result, or an OpenSandboxError with the bridge's data.type. */
  async request<T = any>(method: string, params?: object, opts?: RequestOptions): Promise<T> {
    const b = await this.ensureBridge();
    return b.request<T>(method, params, opts);
  }

  async hasMethod(method: string): Promise<boolean> {
    return (await this.ensureBridge()).methods.includes(method);
  }

  /** server/health `features` (stream, exec, stdin, upload); [] for a bridge that lists none. */
  async features(): Promise<string[]> {
    const b = await this.ensureBridge();
    if (this.healthCache?.bridge === b) return this.healthCache.features;
    const h = await b.request<{ features?: string[] }>('server/health');
    const features = Array.isArray(h.features) ? h.features : [];
    this.healthCache = { bridge: b, features };
    return features;
  }

  async createSandbox(env?: Record<string, string>): Promise<string> {
    const b = await this.ensureBridge();
    const r = await b.request<{ sandboxId: string }>('sandbox/create', env ? { env } : {});
    this.created.set(r.sandboxId, b);
    return r.sandboxId;
  }

  async destroySandbox(sandboxId: string, opts?: RequestOptions): Promise<void> {
    try {
      await this.request('sandbox/destroy', { sandboxId }, opts);
    } finally {
      this.created.delete(sandboxId);
    }
  }

  /** Sandboxes created through this client that are still alive as far as it knows. */
  createdSandboxes(): string[] {
    return [...this.created.keys()];
  }

  /** True when sandboxId belongs to the running bridge (a local sandbox dies with its bridge). */
  async sandboxExists(sandboxId: string): Promise<boolean> {
    try {
      await this.request('sandbox/get', { sandboxId });
      return true;
    } catch (e) {
      if (e instanceof OpenSandboxError && e.type === 'SandboxNotFoundError') return false;
      throw e;
    }
  }

  /**
   * Runs a command and streams its output: chunks from `$/progress` as they come, or, when
   * the bridge sent none, the result's stdout/stderr once it is done.
   */
  async run(sandboxId: string, spec: RunSpec, handlers: OutputHandlers = {}, opts: RequestOptions = {}): Promise<RunResult> {
    const token = `osb-run-${process.pid}-${++tokenCounter}`;
    let gotStdout = false;
    let gotStderr = false;
    this.progress.set(token, (v) => {
      if (typeof v.stdout === 'string' && v.stdout.length) { gotStdout = true; handlers.onStdout?.(v.stdout); }
      if (typeof v.stderr === 'string' && v.stderr.length) { gotStderr = true; handlers.onStderr?.(v.stderr); }
    });
    const runTimeout = spec.timeoutMs ?? 300000;
    try {
      const r = await this.request<RunResult>('sandbox/run', { sandboxId, ...spec, partialResultToken: token },
        { timeoutMs: opts.timeoutMs ?? runTimeout + 35000, signal: opts.signal });
      if (!gotStdout && r.stdout) handlers.onStdout?.(r.stdout);
      if (!gotStderr && r.stderr) handlers.onStderr?.(r.stderr);
      return r;
    } finally {
      this.progress.delete(token);
    }
  }

  /** exec/start; output chunks go to handlers when the bridge streams (stream feature). */
  async execStart(sandboxId: string, spec: RunSpec & { stdin?: boolean; yieldMs?: number },
    handlers?: OutputHandlers): Promise<ExecState & { execId: string; token?: string }> {
    let token: string | undefined;
    if (handlers && (await this.features()).includes('stream')) {
      token = `osb-exec-${process.pid}-${++tokenCounter}`;
      this.progress.set(token, (v) => {
        if (typeof v.stdout === 'string' && v.stdout.length) handlers.onStdout?.(v.stdout);
        if (typeof v.stderr === 'string' && v.stderr.length) handlers.onStderr?.(v.stderr);
      });
    }
    try {
      const r = await this.request<ExecState & { execId: string }>('exec/start',
        { sandboxId, ...spec, ...(token ? { partialResultToken: token } : {}) },
        { timeoutMs: (spec.yieldMs ?? 0) + 30000 });
      return { ...r, token };
    } catch (e) {
      if (token) this.progress.delete(token);
      throw e;
    }
  }

  /** Stops delivering chunks for an exec's token (once it has ended). */
  releaseToken(token: string | undefined): void {
    if (token) this.progress.delete(token);
  }

  execRead(execId: string, yieldMs = 0): Promise<ExecState> {
    return this.request<ExecState>('exec/read', { execId, yieldMs }, { timeoutMs: yieldMs + 30000 });
  }

  execWrite(execId: string, data: string, eof = false): Promise<null> {
    return this.request('exec/write', eof && !data ? { execId, eof: true } : { execId, data, ...(eof ? { eof } : {}) });
  }

  execKill(execId: string, signal = 9): Promise<null> {
    return this.request('exec/kill', { execId, signal });
  }

  /**
   * Whether to try fs/upload + fs/download: the bridge lists both, and server/health says the
   * connected backend can do them (`upload` feature; a bridge that lists no features at all
   * predates them, so rpc.discover decides alone). The remote backend lists the methods but
   * may answer -32006 for them, hence the feature check and the fallback in hostCopy.
   */
  private async nativeHostFiles(): Promise<boolean> {
    if (!(await this.hasMethod('fs/upload')) || !(await this.hasMethod('fs/download'))) return false;
    const b = await this.ensureBridge();
    if (this.noHostFiles === b) return false;
    const f = await this.features();
    return f.length === 0 || f.includes('upload');
  }

  /** Runs native; falls back (and remembers it for this bridge) when the method is unsupported. */
  private async hostCopy<T>(native: () => Promise<T>, fallback: () => Promise<T>, useNative: boolean): Promise<T> {
    if (useNative && await this.nativeHostFiles()) {
      const b = this.bridge;
      try {
        return await native();
      } catch (e) {
        if (!(e instanceof OpenSandboxError) || (e.code !== -32006 && e.code !== -32601)) throw e;
        this.noHostFiles = b;
        this.opts.log?.(`[client] ${e.message}: using fs/write / fs/read with base64`);
      }
    }
    return fallback();
  }

  /** Host file → sandbox: fs/upload when the backend can, else fs/write with base64. */
  upload(sandboxId: string, localPath: string, path: string, opts: { native?: boolean } = {}): Promise<number> {
    return this.hostCopy(async () => {
      const r = await this.request<{ bytesWritten: number }>('fs/upload', { sandboxId, localPath, path }, { timeoutMs: 300000 });
      return r.bytesWritten;
    }, async () => {
      const data = await fsp.readFile(localPath);
      const r = await this.request<{ bytesWritten: number }>('fs/write',
        { sandboxId, path, content: data.toString('base64'), encoding: 'base64' }, { timeoutMs: 300000 });
      return r.bytesWritten;
    }, opts.native !== false);
  }

  /** Sandbox file → host: fs/download when the backend can, else fs/read with base64. */
  download(sandboxId: string, path: string, localPath: string, opts: { native?: boolean } = {}): Promise<number> {
    return this.hostCopy(async () => {
      const r = await this.request<{ bytesRead: number }>('fs/download', { sandboxId, path, localPath }, { timeoutMs: 300000 });
      return r.bytesRead;
    }, async () => {
      const data = await this.readFile(sandboxId, path);
      await fsp.writeFile(localPath, data);
      return data.length;
    }, opts.native !== false);
  }

  async readFile(sandboxId: string, path: string): Promise<Buffer> {
    const r = await this.request<{ content: string }>('fs/read', { sandboxId, path, encoding: 'base64' }, { timeoutMs: 120000 });
    return Buffer.from(r.content, 'base64');
  }

  async writeFile(sandboxId: string, path: string, data: Uint8Array): Promise<number> {
    const r = await this.request<{ bytesWritten: number }>('fs/write',
      { sandboxId, path, content: Buffer.from(data).toString('base64'), encoding: 'base64' }, { timeoutMs: 120000 });
    return r.bytesWritten;
  }

  listDir(sandboxId: string, path: string): Promise<{ entries: { name: string; path: string; isDirectory: boolean; size: number }[] }> {
    return this.request('fs/list', { sandboxId, path });
  }

  /** Restarts the bridge now (settings changed, or the user asked). */
  async restart(): Promise<BridgeProcess> {
    if (this.bridge?.alive) {
      if (this.bridge.backend !== 'local') await this.destroyCreated();
      await this.bridge.stop();
    }
    return this.ensureBridge();
  }

  /** Destroys every sandbox this client created (each bounded by timeoutMs). */
  async destroyCreated(timeoutMs = 3000): Promise<void> {
    const b = this.bridge;
    if (!b?.alive) return;
    await Promise.all([...this.created].filter(([, owner]) => owner === b || b.backend !== 'local')
      .map(async ([id]) => {
        try { await b.request('sandbox/destroy', { sandboxId: id }, { timeoutMs }); } catch { /* gone already */ }
        this.created.delete(id);
      }));
  }

  /** On deactivate: destroy our sandboxes, shutdown + exit, kill if the bridge lingers. */
  async dispose(): Promise<void> {
    if (this.disposed) return;
    this.disposed = true;
    await this.starting?.catch(() => undefined);
    await this.destroyCreated();
    await this.bridge?.stop();
  }
}
