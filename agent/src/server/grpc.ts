// gRPC transport (@grpc/grpc-js): HTTP/2 over unix sockets and TCP, serving
// the same table as ttrpc. Unknown services and methods get UNIMPLEMENTED
// from grpc-js itself.

import * as grpc from '@grpc/grpc-js';
import type { Logger } from 'pino';
import type { ListenAddress } from './address.ts';
import { prepareSocketPath, removeSocketFile } from './socket.ts';
import { invoke, type Method, type ServiceTable } from './table.ts';

export interface GrpcServerOptions {
  readonly table: ServiceTable;
  readonly log: Logger;
}

function target(addr: ListenAddress): string {
  if (addr.kind === 'unix') return `unix:${addr.path}`;
  if (addr.kind === 'tcp') return addr.host.includes(':') ? `[${addr.host}]:${addr.port}` : `${addr.host}:${addr.port}`;
  throw new Error(`gRPC cannot bind ${addr.text} directly`);
}

export class GrpcServer {
  private readonly server = new grpc.Server({
    'grpc.max_receive_message_length': 4 << 20,
    'grpc.max_send_message_length': 4 << 20,
  });
  private readonly unixPaths: string[] = [];

  private readonly opts: GrpcServerOptions;

  constructor(opts: GrpcServerOptions) {
    this.opts = opts;
    for (const methods of opts.table.services().values()) {
      const definition: Record<string, grpc.MethodDefinition<object, object>> = {};
      const implementation: grpc.UntypedServiceImplementation = {};
      for (const [name, method] of methods) {
        definition[name] = method.definition as unknown as grpc.MethodDefinition<object, object>;
        implementation[name] = this.unary(method);
      }
      this.server.addService(definition, implementation);
    }
  }

  /** Bind one address; returns the bound address text (with the real port for tcp port 0). */
  async listen(addr: ListenAddress): Promise<string> {
    if (addr.kind === 'unix') await prepareSocketPath(addr.path);
    const port = await new Promise<number>((resolve, reject) =>
      this.server.bindAsync(target(addr), grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
    );
    if (addr.kind === 'unix') {
      this.unixPaths.push(addr.path);
      return addr.text;
    }
    return addr.kind === 'tcp' ? `tcp://${addr.host.includes(':') ? `[${addr.host}]` : addr.host}:${port}` : addr.text;
  }

  async close(graceMs: number): Promise<void> {
    await Promise.race([
      new Promise<void>((resolve) => this.server.tryShutdown(() => resolve())),
      new Promise<void>((resolve) => setTimeout(resolve, graceMs).unref()),
    ]);
    // Cancels what is still running; each call's 'cancelled' event aborts its handler.
    this.server.forceShutdown();
    for (const p of this.unixPaths) removeSocketFile(p);
  }

  private unary(method: Method): grpc.handleUnaryCall<object, object> {
    return (call, callback) => {
      const ac = new AbortController();
      call.on('cancelled', () => ac.abort(new Error('cancelled by client')));
      const deadline = call.getDeadline();
      const ms = deadline instanceof Date ? deadline.getTime() - Date.now() : Number.isFinite(deadline) ? Number(deadline) - Date.now() : Infinity;
      const timer = Number.isFinite(ms) ? setTimeout(() => ac.abort(new Error('deadline exceeded')), Math.max(0, ms)) : undefined;
      const metadata = new Map<string, string[]>();
      for (const [k, v] of Object.entries(call.metadata.getMap())) metadata.set(k, [String(v)]);
      void invoke(method, call.request, {
        signal: ac.signal,
        transport: 'grpc',
        metadata,
        log: this.opts.log,
      }).then((outcome) => {
        if (timer) clearTimeout(timer);
        if (outcome.response && outcome.code === 0) callback(null, outcome.response);
        else callback({ code: outcome.code, details: outcome.message } as grpc.ServiceError, null);
      });
    };
  }
}
