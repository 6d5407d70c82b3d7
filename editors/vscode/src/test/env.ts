// env.ts - what the tests run against, from the environment that
// tests/e2e/test_editor_vscode.py sets: OSB_BRIDGE (the bridge binary), OSB_BRIDGE_ARGS (a
// JSON array: --url/--grpc-port for the remote backend), OSB_BACKEND (local|remote).

import { BridgeOptions } from '../core/bridge';
import { OpenSandboxClient } from '../core/client';

export const BRIDGE = process.env.OSB_BRIDGE ?? '';
export const BRIDGE_ARGS: string[] = JSON.parse(process.env.OSB_BRIDGE_ARGS ?? '[]');
export const BACKEND = process.env.OSB_BACKEND ?? 'local';
export const SCALE = Number(process.env.OSB_TIMEOUT_SCALE ?? '1');

if (!BRIDGE) throw new Error('set OSB_BRIDGE to the opensandbox-bridge binary');

export const logLines: string[] = [];

export function options(extra: Partial<BridgeOptions> = {}): BridgeOptions {
  return {
    command: BRIDGE, args: [...BRIDGE_ARGS, '--framing', 'lsp'], requestTimeoutMs: 30000 * SCALE,
    log: (l) => { logLines.push(l); if (logLines.length > 400) logLines.shift(); }, ...extra,
  };
}

export function newClient(extra: Partial<BridgeOptions> = {}, onUnexpectedExit?: (m: string) => void): OpenSandboxClient {
  return new OpenSandboxClient({ bridgeOptions: () => options(extra), onUnexpectedExit });
}

/** True while a process with this pid exists (signal 0 probes without sending). */
export function pidAlive(pid: number): boolean {
  try { process.kill(pid, 0); return true; } catch { return false; }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

// A sanitizer build of the bridge reports on stderr: make the run fail loudly if it did.
const SANITIZER = /AddressSanitizer|LeakSanitizer|UndefinedBehaviorSanitizer|runtime error:/;
process.on('exit', () => {
  const bad = logLines.filter((l) => l.startsWith('[stderr]') && SANITIZER.test(l));
  if (bad.length) {
    console.log(`SANITIZER REPORT from the bridge:\n${bad.slice(0, 20).join('\n')}`);
    process.exitCode = 1;
  }
});
