// The daemon: builds the capabilities from the config, then serves one
// handler table over every configured gRPC and ttrpc address.

import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { createApi, type Api } from './api/index.ts';
import type { AgentConfig } from './config/index.ts';
import type { ListenAddress } from './server/address.ts';
import { GrpcServer } from './server/grpc.ts';
import { loadProtos, serviceMethods } from './server/protos.ts';
import { ServiceTable } from './server/table.ts';
import { TtrpcServer } from './server/ttrpc/server.ts';
import { startVsockBridge, type Bridge } from './server/vsock.ts';

export interface Daemon {
  readonly addresses: { readonly grpc: readonly string[]; readonly ttrpc: readonly string[] };
  /** Stop accepting, let in-flight calls finish for up to graceMs, then release everything. */
  stop(graceMs?: number): Promise<void>;
}

/** Private unix socket a vsock bridge forwards to. */
function bridgeSocket(config: AgentConfig, transport: string, addr: ListenAddress & { kind: 'vsock' }): string {
  mkdirSync(config.listen.bridge_dir, { recursive: true, mode: 0o700 });
  return join(config.listen.bridge_dir, `${transport}-vsock-${addr.port}.sock`);
}

export async function startDaemon(config: AgentConfig, log: Logger): Promise<Daemon> {
  const protos = loadProtos();
  const api: Api = await createApi(config, log);
  const table = new ServiceTable(serviceMethods(protos.definition), api.handlers);
  const bridges: Bridge[] = [];

  const grpc = config.listen.grpc.length > 0 ? new GrpcServer({ table, log }) : undefined;
  const ttrpc = config.listen.ttrpc.length > 0 ? new TtrpcServer({ table, envelope: protos.envelope, log }) : undefined;
  const bound = { grpc: [] as string[], ttrpc: [] as string[] };

  const stop = async (graceMs = 10_000): Promise<void> => {
    await Promise.all([grpc?.close(graceMs), ttrpc?.close(graceMs)]);
    for (const b of bridges) b.stop();
    await api.close();
  };

  try {
    for (const addr of config.listen.grpc) {
      if (addr.kind === 'vsock') {
        const path = bridgeSocket(config, 'grpc', addr);
        await grpc!.listen({ kind: 'unix', path, text: `unix://${path}` });
        bridges.push(await startVsockBridge(addr, path, log));
        bound.grpc.push(addr.text);
      } else bound.grpc.push(await grpc!.listen(addr));
    }
    for (const addr of config.listen.ttrpc) {
      if (addr.kind === 'vsock') {
        const path = bridgeSocket(config, 'ttrpc', addr);
        await ttrpc!.listen({ kind: 'unix', path, text: `unix://${path}` });
        bridges.push(await startVsockBridge(addr, path, log));
        bound.ttrpc.push(addr.text);
      } else bound.ttrpc.push(await ttrpc!.listen(addr));
    }
  } catch (err) {
    await stop(0);
    throw err;
  }

  return { addresses: bound, stop };
}
