// Run the tee-agent CLI as a user does: a child process, with its exit code,
// stdout and stderr.

import { spawn } from 'node:child_process';
import { AGENT_BIN } from './agent.ts';

export interface CliResult {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

export function runCli(args: readonly string[], opts: { env?: NodeJS.ProcessEnv; input?: string } = {}): Promise<CliResult> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [AGENT_BIN, ...args], { stdio: ['pipe', 'pipe', 'pipe'], env: opts.env ?? process.env });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d: Buffer) => (stdout += d));
    p.stderr.on('data', (d: Buffer) => (stderr += d));
    p.stdin.end(opts.input ?? '');
    p.on('exit', (code) => resolve({ code, stdout, stderr }));
  });
}
