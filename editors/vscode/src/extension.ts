// extension.ts - the VS Code glue: commands, settings, output channels, the opensandbox:
// file system, the terminal and the MCP server definition. Everything that can live without
// `vscode` is in src/core/ (tested by node's test runner against the real bridge); this file
// only connects it to the editor.

import * as path from 'path';
import * as vscode from 'vscode';
import { OpenSandboxClient } from './core/client';
import { bridgeOptions, bridgeSupportsMcp, DEFAULT_SETTINGS, mcpServerCommand, Settings } from './core/config';
import { describeError } from './core/errors';
import { FsError, parseUri, SandboxFsCore, SCHEME } from './core/fs';
import { runFileArgv, runToSink } from './core/runner';
import { ExecTerminalCore } from './core/terminal';

const SECRET_KEY = 'opensandbox.apiKey';
const MCP_PROVIDER_ID = 'opensandbox.bridge';

let client: OpenSandboxClient | undefined;

function readSettings(): Settings {
  const c = vscode.workspace.getConfiguration('opensandbox');
  return {
    bridgePath: c.get<string>('bridgePath') || DEFAULT_SETTINGS.bridgePath,
    url: c.get<string>('url') ?? '',
    grpcPort: c.get<number | null>('grpcPort') ?? null,
    bridgeArgs: c.get<string[]>('bridgeArgs') ?? [],
    requestTimeoutMs: c.get<number>('requestTimeoutMs') ?? DEFAULT_SETTINGS.requestTimeoutMs,
  };
}

class SandboxFileSystem implements vscode.FileSystemProvider {
  private readonly emitter = new vscode.EventEmitter<vscode.FileChangeEvent[]>();
  readonly onDidChangeFile = this.emitter.event;
  constructor(private readonly core: SandboxFsCore) {}

  private async call<T>(uri: vscode.Uri, f: (sid: string, p: string) => Promise<T>): Promise<T> {
    const { sandboxId, path: p } = parseUri(uri.authority, uri.path);
    try {
      return await f(sandboxId, p);
    } catch (e) {
      if (e instanceof FsError) {
        switch (e.kind) {
          case 'FileNotFound': throw vscode.FileSystemError.FileNotFound(uri);
          case 'FileExists': throw vscode.FileSystemError.FileExists(uri);
          case 'FileNotADirectory': throw vscode.FileSystemError.FileNotADirectory(uri);
          case 'FileIsADirectory': throw vscode.FileSystemError.FileIsADirectory(uri);
          case 'NoPermissions': throw vscode.FileSystemError.NoPermissions(e.message);
          default: throw vscode.FileSystemError.Unavailable(e.message);
        }
      }
      throw vscode.FileSystemError.Unavailable(describeError(e));
    }
  }

  watch(): vscode.Disposable { return new vscode.Disposable(() => undefined); }

  stat(uri: vscode.Uri): Promise<vscode.FileStat> {
    return this.call(uri, async (sid, p) => {
      const st = await this.core.stat(sid, p);
      return { type: st.type === 'directory' ? vscode.FileType.Directory : vscode.FileType.File, ctime: 0, mtime: 0, size: st.size };
    });
  }

  readDirectory(uri: vscode.Uri): Promise<[string, vscode.FileType][]> {
    return this.call(uri, async (sid, p) => (await this.core.readDirectory(sid, p))
      .map(([n, t]) => [n, t === 'directory' ? vscode.FileType.Directory : vscode.FileType.File] as [string, vscode.FileType]));
  }

  readFile(uri: vscode.Uri): Promise<Uint8Array> {
    return this.call(uri, (sid, p) => this.core.readFile(sid, p));
  }

  async writeFile(uri: vscode.Uri, content: Uint8Array, options: { create: boolean; overwrite: boolean }): Promise<void> {
    await this.call(uri, (sid, p) => this.core.writeFile(sid, p, content, options));
    this.emitter.fire([{ type: vscode.FileChangeType.Changed, uri }]);
  }

  async createDirectory(uri: vscode.Uri): Promise<void> {
    await this.call(uri, (sid, p) => this.core.createDirectory(sid, p));
    this.emitter.fire([{ type: vscode.FileChangeType.Created, uri }]);
  }

  async delete(uri: vscode.Uri, options: { recursive: boolean }): Promise<void> {
    await this.call(uri, (sid, p) => this.core.delete(sid, p, options));
    this.emitter.fire([{ type: vscode.FileChangeType.Deleted, uri }]);
  }

  async rename(oldUri: vscode.Uri, newUri: vscode.Uri, options: { overwrite: boolean }): Promise<void> {
    if (oldUri.authority !== newUri.authority) throw vscode.FileSystemError.NoPermissions('cannot move files between sandboxes');
    const to = parseUri(newUri.authority, newUri.path).path;
    await this.call(oldUri, (sid, p) => this.core.rename(sid, p, to, options));
    this.emitter.fire([{ type: vscode.FileChangeType.Deleted, uri: oldUri }, { type: vscode.FileChangeType.Created, uri: newUri }]);
  }
}

export function activate(context: vscode.ExtensionContext): void {
  const output = vscode.window.createOutputChannel('OpenSandbox');
  const logChannel = vscode.window.createOutputChannel('OpenSandbox Log');
  const log = (line: string) => logChannel.appendLine(`${new Date().toISOString()} ${line}`);
  const showError = (e: unknown) => {
    void vscode.window.showErrorMessage(describeError(e).replace(/\n/g, ' ⏎ '), 'Show Log')
      .then((pick) => { if (pick) logChannel.show(true); });
  };

  const c = new OpenSandboxClient({
    bridgeOptions: async () => bridgeOptions(readSettings(), await context.secrets.get(SECRET_KEY), log),
    onUnexpectedExit: (msg) => showError(new Error(msg + ' (the next command starts it again)')),
    log,
  });
  client = c;
  const fsCore = new SandboxFsCore(c);

  // The sandbox the commands work in: created on first use, again after destroy or after a
  // local bridge (whose sandboxes live in its process) was restarted.
  let current: string | undefined;
  const sandbox = async (): Promise<string> => {
    if (current && c.running && await c.sandboxExists(current)) return current;
    current = await c.createSandbox();
    log(`[ext] sandbox ${current}`);
    return current;
  };

  const runs = new Set<AbortController>();
  const runInOutput = async (spec: { command?: string; argv?: string[] }, title?: string) => {
    const ac = new AbortController();
    runs.add(ac);
    output.show(true);
    try {
      const sid = await sandbox();
      await runToSink(c, sid, spec, { append: (t) => output.append(t) }, ac.signal, title);
    } catch (e) {
      output.appendLine(`[error] ${describeError(e)}`);
      showError(e);
    } finally {
      runs.delete(ac);
    }
  };

  const guard = (f: (...a: any[]) => Promise<unknown>) => async (...a: any[]) => {
    try { await f(...a); } catch (e) { showError(e); }
  };

  const reg = (id: string, f: (...a: any[]) => Promise<unknown>) =>
    context.subscriptions.push(vscode.commands.registerCommand(id, guard(f)));

  reg('opensandbox.run', async (cmd?: string) => {
    const command = typeof cmd === 'string' ? cmd : await vscode.window.showInputBox({ prompt: 'Command to run in the sandbox (/bin/sh -c)' });
    if (command) await runInOutput({ command });
  });

  reg('opensandbox.runFile', async () => {
    const ed = vscode.window.activeTextEditor;
    if (!ed) throw new Error('OpenSandbox: no active editor to run');
    const argv = runFileArgv(ed.document.getText(), ed.document.languageId);
    await runInOutput({ argv }, `${argv[0]} ${path.basename(ed.document.fileName)}`);
  });

  reg('opensandbox.runSelection', async () => {
    const ed = vscode.window.activeTextEditor;
    if (!ed) throw new Error('OpenSandbox: no active editor');
    const text = ed.selection.isEmpty ? ed.document.lineAt(ed.selection.active.line).text : ed.document.getText(ed.selection);
    const argv = runFileArgv(text, ed.document.languageId);
    await runInOutput({ argv }, `${argv[0]} (selection)`);
  });

  reg('opensandbox.stop', async () => {
    if (!runs.size) { void vscode.window.showInformationMessage('OpenSandbox: nothing is running'); return; }
    for (const ac of runs) ac.abort();
  });

  reg('opensandbox.openTerminal', async () => {
    const writeEmitter = new vscode.EventEmitter<string>();
    const closeEmitter = new vscode.EventEmitter<number>();
    const core = new ExecTerminalCore(c, sandbox, {
      write: (t) => writeEmitter.fire(t),
      close: (code) => closeEmitter.fire(code),
    });
    const pty: vscode.Pseudoterminal = {
      onDidWrite: writeEmitter.event,
      onDidClose: closeEmitter.event,
      open: () => { void core.open(); },
      close: () => { void core.dispose(); },
      handleInput: (d) => core.handleInput(d),
    };
    vscode.window.createTerminal({ name: 'OpenSandbox', pty }).show();
  });

  reg('opensandbox.upload', async (arg?: vscode.Uri) => {
    const local = arg instanceof vscode.Uri && arg.scheme === 'file' ? arg
      : (await vscode.window.showOpenDialog({ canSelectMany: false, openLabel: 'Upload to sandbox' }))?.[0];
    if (!local) return;
    const remote = await vscode.window.showInputBox({ prompt: 'Path in the sandbox', value: `/tmp/${path.basename(local.fsPath)}` });
    if (!remote) return;
    const n = await c.upload(await sandbox(), local.fsPath, remote);
    void vscode.window.showInformationMessage(`OpenSandbox: uploaded ${n} bytes to ${remote}`);
  });

  reg('opensandbox.download', async (arg?: vscode.Uri) => {
    const remote = arg instanceof vscode.Uri && arg.scheme === SCHEME ? arg.path
      : await vscode.window.showInputBox({ prompt: 'Path in the sandbox to download' });
    if (!remote) return;
    const sid = arg instanceof vscode.Uri && arg.scheme === SCHEME ? arg.authority : await sandbox();
    const local = await vscode.window.showSaveDialog({ saveLabel: 'Download', defaultUri: vscode.Uri.file(path.basename(remote)) });
    if (!local) return;
    const n = await c.download(sid, remote, local.fsPath);
    void vscode.window.showInformationMessage(`OpenSandbox: downloaded ${n} bytes to ${local.fsPath}`);
  });

  reg('opensandbox.destroy', async () => {
    if (!current) { void vscode.window.showInformationMessage('OpenSandbox: no sandbox to destroy'); return; }
    const sid = current;
    current = undefined;
    for (const ac of runs) ac.abort();
    const folders = vscode.workspace.workspaceFolders ?? [];
    const i = folders.findIndex((f) => f.uri.scheme === SCHEME && f.uri.authority === sid);
    if (i >= 0) vscode.workspace.updateWorkspaceFolders(i, 1);
    await c.destroySandbox(sid);
    void vscode.window.showInformationMessage(`OpenSandbox: destroyed sandbox ${sid}`);
  });

  reg('opensandbox.openFolder', async () => {
    const sid = await sandbox();
    const uri = vscode.Uri.parse(`${SCHEME}://${sid}/`);
    const n = vscode.workspace.workspaceFolders?.length ?? 0;
    vscode.workspace.updateWorkspaceFolders(n, 0, { uri, name: `sandbox ${sid.slice(0, 8)}` });
  });

  reg('opensandbox.openFile', async () => {
    const p = await vscode.window.showInputBox({ prompt: 'Path of a file in the sandbox', value: '/tmp/' });
    if (!p) return;
    const doc = await vscode.workspace.openTextDocument(vscode.Uri.parse(`${SCHEME}://${await sandbox()}${p.startsWith('/') ? p : '/' + p}`));
    await vscode.window.showTextDocument(doc);
  });

  reg('opensandbox.showLog', async () => logChannel.show());

  reg('opensandbox.restartBridge', async () => {
    await c.restart();
    void vscode.window.showInformationMessage(`OpenSandbox: bridge restarted (pid ${c.process?.pid})`);
  });

  reg('opensandbox.setApiKey', async () => {
    const key = await vscode.window.showInputBox({ prompt: 'OpenSandbox API key (kept in VS Code\'s secret storage; empty removes it)', password: true, ignoreFocusOut: true });
    if (key === undefined) return;
    if (key) await context.secrets.store(SECRET_KEY, key);
    else await context.secrets.delete(SECRET_KEY);
    mcpChanged.fire();
    if (c.running) await c.restart();
    void vscode.window.showInformationMessage(key ? 'OpenSandbox: API key stored' : 'OpenSandbox: API key removed');
  });

  context.subscriptions.push(
    output, logChannel,
    vscode.workspace.registerFileSystemProvider(SCHEME, new SandboxFileSystem(fsCore), { isCaseSensitive: true }));

  // Agent mode: the bridge in MCP mode, offered only when this bridge binary has --mcp.
  const mcpChanged = new vscode.EventEmitter<void>();
  context.subscriptions.push(mcpChanged);
  const lm = (vscode as any).lm;
  if (lm && typeof lm.registerMcpServerDefinitionProvider === 'function') {
    context.subscriptions.push(vscode.lm.registerMcpServerDefinitionProvider(MCP_PROVIDER_ID, {
      onDidChangeMcpServerDefinitions: mcpChanged.event,
      provideMcpServerDefinitions: async () => {
        const s = readSettings();
        if (!(await bridgeSupportsMcp(s.bridgePath))) {
          log(`[mcp] ${s.bridgePath} has no --mcp: no MCP server offered`);
          return [];
        }
        const m = mcpServerCommand(s, undefined);
        return [new vscode.McpStdioServerDefinition('OpenSandbox', m.command, m.args, m.env, context.extension.packageJSON.version)];
      },
      resolveMcpServerDefinition: async (def: vscode.McpServerDefinition) => {
        const key = await context.secrets.get(SECRET_KEY);
        if (key && def instanceof vscode.McpStdioServerDefinition) def.env = { ...def.env, OPENSANDBOX_API_KEY: key };
        return def;
      },
    }));
  }

  context.subscriptions.push(vscode.workspace.onDidChangeConfiguration((e) => {
    if (!e.affectsConfiguration('opensandbox')) return;
    mcpChanged.fire();
    if (c.running) {
      void vscode.window.showInformationMessage('OpenSandbox settings changed: restart the bridge to use them.', 'Restart Bridge')
        .then((pick) => { if (pick) void vscode.commands.executeCommand('opensandbox.restartBridge'); });
    }
  }));
}

/** Destroys the sandboxes this extension created, then shutdown + exit (kill if the bridge lingers). */
export async function deactivate(): Promise<void> {
  const c = client;
  client = undefined;
  await c?.dispose();
}
