// errors.ts - the errors the client raises, and how they read for a person.
// A bridge error keeps its JSON-RPC code, `data.type` (the SDK's exception name) and `data`;
// failures of our own (spawn, early exit, timeout) get a type of their own so that the
// extension can show every failure the same way: "Type: message".

export class OpenSandboxError extends Error {
  /** JSON-RPC error code (negative), or 0 for failures on the client's side. */
  readonly code: number;
  /** `error.data.type` from the bridge (SandboxNotFoundError, ...), or our own kind. */
  readonly type: string;
  readonly data: Record<string, unknown> | undefined;

  constructor(type: string, message: string, code = 0, data?: Record<string, unknown>) {
    super(message);
    this.name = type;
    this.type = type;
    this.code = code;
    this.data = data;
  }
}

const standardNames: Record<number, string> = {
  [-32700]: 'ParseError',
  [-32600]: 'InvalidRequest',
  [-32601]: 'MethodNotFound',
  [-32602]: 'InvalidParams',
  [-32603]: 'InternalError',
  [-32800]: 'RequestCancelled',
};

/** A JSON-RPC error object (or vscode-jsonrpc's ResponseError) as an OpenSandboxError. */
export function fromResponseError(e: { code: number; message: string; data?: unknown }): OpenSandboxError {
  const data = (e.data && typeof e.data === 'object') ? e.data as Record<string, unknown> : undefined;
  const type = (data && typeof data.type === 'string') ? data.type : (standardNames[e.code] ?? 'OpenSandboxError');
  return new OpenSandboxError(type, e.message, e.code, data);
}

/** "Type: message" for any thrown value: what the extension shows. */
export function describeError(e: unknown): string {
  if (e instanceof OpenSandboxError) return `${e.type}: ${e.message}`;
  if (e instanceof Error) return e.message;
  return String(e);
}

export function isCancelled(e: unknown): boolean {
  return e instanceof OpenSandboxError && (e.code === -32800 || e.type === 'Cancelled');
}
