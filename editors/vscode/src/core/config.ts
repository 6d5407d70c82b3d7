// config.ts - from the extension's settings to the bridge's command line, without VS Code.
// The API key never goes on the command line (other users' `ps` would show it) nor into a
// settings file: it reaches the bridge as OPENSANDBOX_API_KEY in its environment.

import { execFile } from 'child_process';
import { BridgeOptions } from './bridge';

export interface Settings {
  bridgePath: string;
  url: string;
  grpcPort: number | null;
  bridgeArgs: string[];
  requestTimeoutMs: number;
}

export const DEFAULT_SETTINGS: Settings = {
  bridgePath: 'opensandbox-bridge', url: '', grpcPort: null, bridgeArgs: [], requestTimeoutMs: 30000,
};

/** The bridge's arguments for these settings (URL and gRPC port only when set). */
export function bridgeArgs(s: Settings): string[] {
  const args: string[] = [];
  if (s.url) args.push('--url', s.url);
  if (s.url && s.grpcPort) args.push('--grpc-port', String(s.grpcPort));
  return [...args, ...s.bridgeArgs];
}

export function bridgeOptions(s: Settings, apiKey: string | undefined, log?: (l: string) => void): BridgeOptions {
  return {
    command: s.bridgePath || 'opensandbox-bridge',
    args: [...bridgeArgs(s), '--framing', 'lsp'],
    env: apiKey ? { OPENSANDBOX_API_KEY: apiKey } : undefined,
    requestTimeoutMs: s.requestTimeoutMs,
    log,
  };
}

/** What VS Code's agent mode is given to start the bridge as an MCP server. */
export function mcpServerCommand(s: Settings, apiKey: string | undefined): { command: string; args: string[]; env: Record<string, string> } {
  return {
    command: s.bridgePath || 'opensandbox-bridge',
    args: [...bridgeArgs(s), '--mcp'],
    env: apiKey ? { OPENSANDBOX_API_KEY: apiKey } : {},
  };
}

/**
 * Whether this bridge binary has MCP mode (`--mcp` in its --help). The extension offers the
 * MCP server to agent mode only then, so that agent mode never starts a bridge that would
 * reject the flag.
 */
export function bridgeSupportsMcp(bridgePath: string, timeoutMs = 5000): Promise<boolean> {
  return new Promise((resolve) => {
    execFile(bridgePath || 'opensandbox-bridge', ['--help'], { timeout: timeoutMs }, (_err, stdout, stderr) => {
      resolve(/(^|\s)--mcp\b/m.test(`${stdout}\n${stderr}`));
    });
  });
}
