// ttrpc server: containerd's framing and envelopes over stream sockets.
// Unary calls only (every service we serve is unary). Many streams run
// concurrently on one connection; each may carry its own timeout.

import { chmodSync } from 'node:fs';
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import type { Logger } from 'pino';
import { Code, codeName } from '../../errors.ts';
import type { ListenAddress } from '../address.ts';
import type { Protos } from '../protos.ts';
import { prepareSocketPath, removeSocketFile } from '../socket.ts';
import { invoke, type ServiceTable } from '../table.ts';
import { encodeFrame, FrameReader, FrameType, MAX_MESSAGE_LENGTH, type FrameHeader } from './frame.ts';

export interface TtrpcServerOptions {
  readonly table: ServiceTable;
  readonly envelope: Protos['envelope'];
  readonly log: Logger;
  /** Concurrent calls allowed on one connection before RESOURCE_EXHAUSTED. */
  readonly maxStreamsPerConnection?: number;
}

interface RequestEnvelope {
  service: string;
  method: string;
  payload: Uint8Array;
  timeout_nano: number | { toNumber(): number };
  metadata: Array<{ key: string; value: string }>;
}

export class TtrpcServer {
  private readonly servers: Array<{ server: Server; path?: string }> = [];
  private readonly connections = new Set<Connection>();
  private inflight = 0;
  private idle: (() => void) | undefined;

  private readonly opts: TtrpcServerOptions;

  constructor(opts: TtrpcServerOptions) {
    this.opts = opts;
  }

  /** Listen on a unix socket or TCP address (vsock arrives through a bridge to a unix socket). Returns the bound address. */
  async listen(addr: ListenAddress): Promise<string> {
    if (addr.kind === 'vsock') throw new Error(`ttrpc cannot bind ${addr.text} directly`);
    if (addr.kind === 'unix') await prepareSocketPath(addr.path);
    const server = createServer({ allowHalfOpen: false, noDelay: true }, (socket) => this.accept(socket));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      const done = (): void => {
        server.off('error', reject);
        resolve();
      };
      if (addr.kind === 'unix') server.listen(addr.path, done);
      else server.listen(addr.port, addr.host, done);
    });
    server.on('error', (err) => this.opts.log.error({ err, address: addr.text }, 'ttrpc listener error'));
    if (addr.kind === 'unix') {
      chmodSync(addr.path, 0o600);
      this.servers.push({ server, path: addr.path });
      return addr.text;
    }
    this.servers.push({ server });
    const port = (server.address() as AddressInfo).port;
    return `tcp://${addr.host.includes(':') ? `[${addr.host}]` : addr.host}:${port}`;
  }

  /** Stop accepting, wait for in-flight calls up to graceMs, then cut what is left (their handlers see the abort). */
  async close(graceMs: number): Promise<void> {
    for (const { server } of this.servers) server.close();
    if (this.inflight > 0) {
      await Promise.race([
        new Promise<void>((resolve) => (this.idle = resolve)),
        new Promise<void>((resolve) => setTimeout(resolve, graceMs).unref()),
      ]);
    }
    for (const c of this.connections) c.destroy();
    for (const { path } of this.servers) if (path) removeSocketFile(path);
    this.servers.length = 0;
  }

  private accept(socket: Socket): void {
    const conn = new Connection(socket, this.opts, {
      started: () => this.inflight++,
      finished: () => {
        if (--this.inflight === 0) this.idle?.();
      },
    });
    this.connections.add(conn);
    socket.once('close', () => this.connections.delete(conn));
  }
}

class Connection {
  private readonly reader = new FrameReader();
  private readonly streams = new Map<number, AbortController>();
  private lastStreamId = 0;
  private readonly log: Logger;

  private readonly socket: Socket;
  private readonly opts: TtrpcServerOptions;
  private readonly counter: { started(): void; finished(): void };

  constructor(socket: Socket, opts: TtrpcServerOptions, counter: { started(): void; finished(): void }) {
    this.socket = socket;
    this.opts = opts;
    this.counter = counter;
    this.log = opts.log;
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', (err) => this.log.debug({ err }, 'ttrpc connection error'));
    socket.once('close', () => {
      for (const ac of this.streams.values()) ac.abort(new Error('connection closed'));
      this.streams.clear();
    });
  }

  destroy(): void {
    this.socket.destroy();
  }

  private onData(chunk: Buffer): void {
    try {
      for (const ev of this.reader.push(chunk)) {
        if (this.socket.destroyed) return;
        if (ev.kind === 'oversized') {
          if (this.acceptStream(ev.header)) {
            this.sendStatus(ev.header.streamId, Code.RESOURCE_EXHAUSTED, `message length ${ev.header.length} exceed maximum message size of ${MAX_MESSAGE_LENGTH}`);
          }
          continue;
        }
        this.onFrame(ev.header, ev.data);
      }
    } catch (err) {
      this.log.warn({ err }, 'ttrpc connection dropped');
      this.socket.destroy();
    }
  }

  /** Validate a new client stream; answers the stream itself when the id is unusable. */
  private acceptStream(header: FrameHeader): boolean {
    if (header.type !== FrameType.Request) {
      // No streaming methods are served, so a Data or Response frame, or an
      // unknown type, means the peer is not speaking ttrpc unary to us.
      this.log.warn({ type: header.type, streamId: header.streamId }, 'ttrpc: unexpected frame type, closing connection');
      this.socket.destroy();
      return false;
    }
    if (header.streamId % 2 !== 1) {
      this.sendStatus(header.streamId, Code.INVALID_ARGUMENT, 'StreamID must be odd for client initiated streams');
      return false;
    }
    if (header.streamId <= this.lastStreamId) {
      this.sendStatus(header.streamId, Code.INVALID_ARGUMENT, 'StreamID cannot be re-used and must increment');
      return false;
    }
    this.lastStreamId = header.streamId;
    return true;
  }

  private onFrame(header: FrameHeader, data: Buffer): void {
    if (!this.acceptStream(header)) return;
    const id = header.streamId;
    let envelope: RequestEnvelope;
    try {
      envelope = this.opts.envelope.Request.decode(data) as unknown as RequestEnvelope;
    } catch {
      this.sendStatus(id, Code.INVALID_ARGUMENT, 'malformed ttrpc request envelope');
      return;
    }
    const method = this.opts.table.lookup(envelope.service, envelope.method);
    if (!method) {
      this.sendStatus(id, Code.UNIMPLEMENTED, `${envelope.service}/${envelope.method} is not served`);
      return;
    }
    let request: object;
    try {
      request = method.definition.requestDeserialize(Buffer.from(envelope.payload));
    } catch {
      this.sendStatus(id, Code.INVALID_ARGUMENT, `malformed ${method.path} request payload`);
      return;
    }
    if (this.streams.size >= (this.opts.maxStreamsPerConnection ?? 1024)) {
      this.sendStatus(id, Code.RESOURCE_EXHAUSTED, 'too many concurrent streams on this connection');
      return;
    }
    void this.run(id, envelope, method, request);
  }

  private async run(id: number, envelope: RequestEnvelope, method: NonNullable<ReturnType<ServiceTable['lookup']>>, request: object): Promise<void> {
    const ac = new AbortController();
    this.streams.set(id, ac);
    this.counter.started();
    const timeoutNs = typeof envelope.timeout_nano === 'number' ? envelope.timeout_nano : envelope.timeout_nano.toNumber();
    let timer: NodeJS.Timeout | undefined;
    let answered = false;
    if (timeoutNs > 0) {
      timer = setTimeout(() => {
        answered = true;
        ac.abort(new Error('deadline exceeded'));
        this.log.warn({ method: method.path, transport: 'ttrpc', status: codeName(Code.DEADLINE_EXCEEDED) }, 'request');
        this.sendStatus(id, Code.DEADLINE_EXCEEDED, `${method.path}: deadline exceeded`);
      }, Math.max(1, Math.ceil(timeoutNs / 1e6)));
    }
    const metadata = new Map<string, string[]>();
    for (const kv of envelope.metadata ?? []) metadata.set(kv.key, [...(metadata.get(kv.key) ?? []), kv.value]);
    try {
      const outcome = await invoke(method, request, {
        signal: ac.signal,
        transport: 'ttrpc',
        metadata,
        log: this.log,
      });
      if (answered || this.socket.destroyed) return;
      answered = true;
      if (outcome.code !== Code.OK || !outcome.response) {
        this.sendStatus(id, outcome.code, outcome.message);
        return;
      }
      const payload = method.definition.responseSerialize(outcome.response);
      if (payload.length > MAX_MESSAGE_LENGTH - 64) {
        this.sendStatus(id, Code.RESOURCE_EXHAUSTED, `${method.path}: response exceeds the ttrpc message limit`);
        return;
      }
      this.send(id, { status: { code: Code.OK, message: '' }, payload });
    } finally {
      if (timer) clearTimeout(timer);
      this.streams.delete(id);
      this.counter.finished();
    }
  }

  private sendStatus(id: number, code: number, message: string): void {
    this.send(id, { status: { code, message }, payload: Buffer.alloc(0) });
  }

  private send(id: number, response: { status: { code: number; message: string }; payload: Uint8Array }): void {
    if (this.socket.destroyed) return;
    const R = this.opts.envelope.Response;
    const data = R.encode(response).finish();
    this.socket.write(encodeFrame(id, FrameType.Response, data));
  }
}
