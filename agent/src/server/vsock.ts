// AF_VSOCK listeners. Node's net module has no AF_VSOCK, so a vsock address
// is served through a bridge: socat accepts on the vsock port and connects
// each client to a private unix socket that the real server listens on.
// socat binds VMADDR_CID_ANY whatever CID is given; the guest has one CID.

import { spawn, type ChildProcess } from 'node:child_process';
import type { Logger } from 'pino';
import type { ListenAddress } from './address.ts';

export interface Bridge {
  stop(): void;
}

/** socat arguments for a bridge: exposed for tests, since this host has no vsock. */
export function bridgeArgs(port: number, unixPath: string): string[] {
  return ['-d', `VSOCK-LISTEN:${port},fork,reuseaddr`, `UNIX-CONNECT:${unixPath}`];
}

/** Start socat and give it a moment to fail on a missing vsock driver before declaring success. */
export async function startVsockBridge(addr: Extract<ListenAddress, { kind: 'vsock' }>, unixPath: string, log: Logger, socat = 'socat'): Promise<Bridge> {
  const child: ChildProcess = spawn(socat, bridgeArgs(addr.port, unixPath), { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr?.on('data', (b: Buffer) => (stderr = (stderr + b.toString()).slice(-2000)));
  const early = await new Promise<Error | undefined>((resolve) => {
    const t = setTimeout(() => resolve(undefined), 200);
    child.once('error', (err) => {
      clearTimeout(t);
      resolve(err);
    });
    child.once('exit', (code) => {
      clearTimeout(t);
      resolve(new Error(`socat exited with ${code}: ${stderr.trim()}`));
    });
  });
  if (early) throw new Error(`cannot listen on ${addr.text}: ${early.message}`);
  child.once('exit', (code, signal) => {
    if (signal !== 'SIGTERM') log.error({ address: addr.text, code, signal, stderr: stderr.trim() }, 'vsock bridge exited');
  });
  return { stop: () => void child.kill('SIGTERM') };
}
