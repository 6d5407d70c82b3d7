// vscode-shim.ts - a stand-in for the `vscode` module, just large enough for
// src/extension.ts, so that glue.test.ts can activate the real extension code in node and
// drive its commands against the real bridge. It is not VS Code: it records what the
// extension asks of the editor (output text, messages, registrations) and answers input
// boxes from a queue. Only the editor is stood in for; the bridge and sandboxes are real.

type Listener<T> = (e: T) => unknown;

export class Disposable {
  constructor(private readonly fn: () => void) {}
  dispose(): void { this.fn(); }
}

export class EventEmitter<T> {
  private listeners: Listener<T>[] = [];
  readonly event = (l: Listener<T>) => { this.listeners.push(l); return new Disposable(() => { this.listeners = this.listeners.filter((x) => x !== l); }); };
  fire(e: T): void { for (const l of [...this.listeners]) l(e); }
  dispose(): void { this.listeners = []; }
}

export class Uri {
  private constructor(readonly scheme: string, readonly authority: string, readonly path: string) {}
  static parse(s: string): Uri {
    const m = /^([a-z][a-z0-9+.-]*):\/\/([^/]*)(\/.*)?$/i.exec(s);
    if (!m) throw new Error(`shim: cannot parse URI ${s}`);
    return new Uri(m[1], m[2], m[3] ?? '/');
  }
  static file(p: string): Uri { return new Uri('file', '', p); }
  get fsPath(): string { return this.path; }
  toString(): string { return `${this.scheme}://${this.authority}${this.path}`; }
}

export class FileSystemError extends Error {
  constructor(readonly code: string, message: string) { super(message); }
  static FileNotFound(u?: unknown) { return new FileSystemError('FileNotFound', String(u)); }
  static FileExists(u?: unknown) { return new FileSystemError('FileExists', String(u)); }
  static FileNotADirectory(u?: unknown) { return new FileSystemError('FileNotADirectory', String(u)); }
  static FileIsADirectory(u?: unknown) { return new FileSystemError('FileIsADirectory', String(u)); }
  static NoPermissions(u?: unknown) { return new FileSystemError('NoPermissions', String(u)); }
  static Unavailable(u?: unknown) { return new FileSystemError('Unavailable', String(u)); }
}

export enum FileType { Unknown = 0, File = 1, Directory = 2, SymbolicLink = 64 }
export enum FileChangeType { Changed = 1, Created = 2, Deleted = 3 }

export class McpStdioServerDefinition {
  constructor(readonly label: string, public command: string, public args: string[] = [],
    public env: Record<string, string | number | null> = {}, public version?: string) {}
}

/** What the extension did to the editor, for the tests to look at. */
export const recorded = {
  channels: new Map<string, { text: string; shown: number }>(),
  errors: [] as string[],
  infos: [] as string[],
  commands: new Map<string, (...a: unknown[]) => unknown>(),
  fileSystems: new Map<string, any>(),
  mcpProviders: new Map<string, any>(),
  terminals: [] as { name: string; pty: any }[],
  inputAnswers: [] as (string | undefined)[],
  saveAnswers: [] as (Uri | undefined)[],
  settings: {} as Record<string, unknown>,
  activeTextEditor: undefined as unknown,
  configListeners: [] as Listener<{ affectsConfiguration: (s: string) => boolean }>[],
};

export const window = {
  createOutputChannel(name: string) {
    const ch = { text: '', shown: 0 };
    recorded.channels.set(name, ch);
    return {
      name,
      append: (t: string) => { ch.text += t; },
      appendLine: (t: string) => { ch.text += t + '\n'; },
      show: () => { ch.shown++; },
      dispose: () => undefined,
    };
  },
  showErrorMessage: async (m: string) => { recorded.errors.push(m); return undefined; },
  showInformationMessage: async (m: string) => { recorded.infos.push(m); return undefined; },
  showInputBox: async () => recorded.inputAnswers.shift(),
  showOpenDialog: async () => undefined,
  showSaveDialog: async () => recorded.saveAnswers.shift(),
  showTextDocument: async () => undefined,
  createTerminal(o: { name: string; pty: unknown }) {
    recorded.terminals.push(o as { name: string; pty: any });
    return { show: () => undefined };
  },
  get activeTextEditor() { return recorded.activeTextEditor; },
};

export const workspace = {
  getConfiguration: (section: string) => ({
    get: <T>(key: string) => recorded.settings[`${section}.${key}`] as T | undefined,
  }),
  registerFileSystemProvider(scheme: string, provider: unknown) {
    recorded.fileSystems.set(scheme, provider);
    return new Disposable(() => recorded.fileSystems.delete(scheme));
  },
  onDidChangeConfiguration(l: Listener<{ affectsConfiguration: (s: string) => boolean }>) {
    recorded.configListeners.push(l);
    return new Disposable(() => undefined);
  },
  workspaceFolders: [] as unknown[],
  updateWorkspaceFolders: () => true,
  openTextDocument: async () => ({}),
};

export const commands = {
  registerCommand(id: string, fn: (...a: unknown[]) => unknown) {
    recorded.commands.set(id, fn);
    return new Disposable(() => recorded.commands.delete(id));
  },
  executeCommand: async (id: string, ...a: unknown[]) => recorded.commands.get(id)?.(...a),
};

export const lm = {
  registerMcpServerDefinitionProvider(id: string, p: unknown) {
    recorded.mcpProviders.set(id, p);
    return new Disposable(() => recorded.mcpProviders.delete(id));
  },
};
