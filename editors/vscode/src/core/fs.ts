// fs.ts - the sandbox file system as VS Code's FileSystemProvider needs it, without VS Code:
// URIs opensandbox://<sandboxId>/<absolute path>, stat / readDirectory / readFile /
// writeFile / createDirectory / delete / rename on top of fs/list, fs/read, fs/write and, for
// what those lack (mkdir, rm, mv), a sandbox/run with an argv. Failures become FsError with
// the kind VS Code's FileSystemError has (FileNotFound, FileExists, ...). No `vscode` import.

import { OpenSandboxClient } from './client';
import { OpenSandboxError, describeError } from './errors';

export type FsErrorKind = 'FileNotFound' | 'FileExists' | 'FileNotADirectory' | 'FileIsADirectory' | 'NoPermissions' | 'Unavailable';

export class FsError extends Error {
  constructor(readonly kind: FsErrorKind, message: string) {
    super(message);
    this.name = kind;
  }
}

export interface FsStat { type: 'file' | 'directory'; size: number }

export const SCHEME = 'opensandbox';

/** The sandbox id and absolute path a URI's authority and path name. */
export function parseUri(authority: string, path: string): { sandboxId: string; path: string } {
  if (!authority) throw new FsError('FileNotFound', `${SCHEME}: URI without a sandbox id`);
  const p = '/' + path.split('/').filter(Boolean).join('/');
  return { sandboxId: authority, path: p };
}

export function uriString(sandboxId: string, path: string): string {
  return `${SCHEME}://${sandboxId}${path.startsWith('/') ? path : '/' + path}`;
}

function parentAndName(path: string): [string, string] {
  const i = path.lastIndexOf('/');
  return [i <= 0 ? '/' : path.slice(0, i), path.slice(i + 1)];
}

/** Maps a bridge error to the FileSystemError kind VS Code expects. */
export function toFsError(e: unknown, path: string): FsError {
  if (e instanceof FsError) return e;
  if (e instanceof OpenSandboxError) {
    const reason = String(e.data?.reason ?? e.message);
    if (e.type === 'SandboxNotFoundError') return new FsError('FileNotFound', `${path}: ${describeError(e)}`);
    if (/No such file/i.test(reason)) return new FsError('FileNotFound', `${path}: ${reason}`);
    if (/Not a directory/i.test(reason)) return new FsError('FileNotADirectory', `${path}: ${reason}`);
    if (/Is a directory/i.test(reason)) return new FsError('FileIsADirectory', `${path}: ${reason}`);
    if (/File exists/i.test(reason)) return new FsError('FileExists', `${path}: ${reason}`);
    if (/Permission denied|Read-only|not permitted/i.test(reason)) return new FsError('NoPermissions', `${path}: ${reason}`);
    if (e.type === 'FileOperationError') return new FsError('NoPermissions', `${path}: ${reason}`);
  }
  return new FsError('Unavailable', `${path}: ${describeError(e)}`);
}

export class SandboxFsCore {
  constructor(private readonly client: OpenSandboxClient) {}

  async stat(sandboxId: string, path: string): Promise<FsStat> {
    if (path === '/') {
      if (!(await this.client.sandboxExists(sandboxId))) throw new FsError('FileNotFound', `sandbox ${sandboxId} does not exist`);
      return { type: 'directory', size: 0 };
    }
    const [parent, name] = parentAndName(path);
    let entries;
    try {
      entries = (await this.client.listDir(sandboxId, parent)).entries;
    } catch (e) {
      const fe = toFsError(e, path);
      throw fe.kind === 'FileNotADirectory' ? new FsError('FileNotFound', fe.message) : fe;
    }
    const hit = entries.find((x) => x.name === name);
    if (!hit) throw new FsError('FileNotFound', `${path}: No such file or directory`);
    if (hit.isDirectory) return { type: 'directory', size: 0 };
    return { type: 'file', size: hit.size };
  }

  async readDirectory(sandboxId: string, path: string): Promise<[string, 'file' | 'directory'][]> {
    try {
      const r = await this.client.listDir(sandboxId, path);
      return r.entries.map((x) => [x.name, x.isDirectory ? 'directory' : 'file']);
    } catch (e) {
      throw toFsError(e, path);
    }
  }

  async readFile(sandboxId: string, path: string): Promise<Uint8Array> {
    try {
      return await this.client.readFile(sandboxId, path);
    } catch (e) {
      throw toFsError(e, path);
    }
  }

  private async exists(sandboxId: string, path: string): Promise<FsStat | undefined> {
    try {
      return await this.stat(sandboxId, path);
    } catch (e) {
      if (e instanceof FsError && e.kind === 'FileNotFound') return undefined;
      throw e;
    }
  }

  /** Writes the bytes as they are (the final newline as the editor wrote it). */
  async writeFile(sandboxId: string, path: string, content: Uint8Array, opts: { create: boolean; overwrite: boolean }): Promise<void> {
    const st = await this.exists(sandboxId, path);
    if (st?.type === 'directory') throw new FsError('FileIsADirectory', `${path}: Is a directory`);
    if (!st && !opts.create) throw new FsError('FileNotFound', `${path}: No such file or directory`);
    if (st && !opts.overwrite) throw new FsError('FileExists', `${path}: File exists`);
    const [parent] = parentAndName(path);
    if (!st && parent !== '/' && !(await this.exists(sandboxId, parent))) {
      throw new FsError('FileNotFound', `${parent}: No such file or directory`);
    }
    try {
      await this.client.writeFile(sandboxId, path, content);
    } catch (e) {
      throw toFsError(e, path);
    }
  }

  /** Runs argv in the sandbox; a non-zero exit becomes an FsError carrying its stderr. */
  private async argv(sandboxId: string, path: string, argv: string[]): Promise<void> {
    let r;
    try {
      r = await this.client.request<{ exitCode: number; signal: number; stderr: string }>('sandbox/run',
        { sandboxId, argv, timeoutMs: 60000 }, { timeoutMs: 95000 });
    } catch (e) {
      throw toFsError(e, path);
    }
    if (r.exitCode !== 0 || r.signal !== 0) {
      const msg = r.stderr.trim() || `${argv[0]} failed with exit ${r.exitCode}`;
      throw toFsError(new OpenSandboxError('FileOperationError', msg, -32005, { path, reason: msg }), path);
    }
  }

  async createDirectory(sandboxId: string, path: string): Promise<void> {
    if (await this.exists(sandboxId, path)) throw new FsError('FileExists', `${path}: File exists`);
    await this.argv(sandboxId, path, ['mkdir', '--', path]);
  }

  async delete(sandboxId: string, path: string, opts: { recursive: boolean }): Promise<void> {
    const st = await this.stat(sandboxId, path);
    if (st.type === 'directory') await this.argv(sandboxId, path, opts.recursive ? ['rm', '-rf', '--', path] : ['rmdir', '--', path]);
    else await this.argv(sandboxId, path, ['rm', '-f', '--', path]);
  }

  async rename(sandboxId: string, from: string, to: string, opts: { overwrite: boolean }): Promise<void> {
    await this.stat(sandboxId, from);
    const target = await this.exists(sandboxId, to);
    if (target && !opts.overwrite) throw new FsError('FileExists', `${to}: File exists`);
    if (target?.type === 'directory') await this.argv(sandboxId, to, ['rm', '-rf', '--', to]);
    await this.argv(sandboxId, from, ['mv', '-f', '--', from, to]);
  }
}
