// A ttrpc client for unary calls: used by the tests, the benchmarks and the
// CLI to talk to a running agent exactly as the kata shim and kata-agent do.

import { connect, type Socket } from 'node:net';
import { Code } from '../../errors.ts';
import { loadProtos, serviceMethods, type MethodDefinition } from '../protos.ts';
import { encodeFrame, FrameReader, FrameType } from './frame.ts';

export class TtrpcError extends Error {
  readonly code: number;
  readonly details: string;
  constructor(code: number, details: string) {
    super(`ttrpc status ${code}: ${details}`);
    this.code = code;
    this.details = details;
    this.name = 'TtrpcError';
  }
}

interface Pending {
  resolve(payload: Buffer): void;
  reject(err: Error): void;
}

export class TtrpcClient {
  private readonly reader = new FrameReader();
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private readonly protos = loadProtos();
  private readonly methods = serviceMethods(this.protos.definition);
  private closedError: Error | undefined;

  private readonly socket: Socket;

  private constructor(socket: Socket) {
    this.socket = socket;
    socket.on('data', (chunk: Buffer) => {
      for (const ev of this.reader.push(chunk)) {
        if (ev.kind !== 'frame' || ev.header.type !== FrameType.Response) continue;
        const p = this.pending.get(ev.header.streamId);
        if (!p) continue;
        this.pending.delete(ev.header.streamId);
        const res = this.protos.envelope.Response.decode(ev.data) as unknown as {
          status?: { code: number; message: string };
          payload: Uint8Array;
        };
        if (res.status && res.status.code !== Code.OK) p.reject(new TtrpcError(res.status.code, res.status.message));
        else p.resolve(Buffer.from(res.payload));
      }
    });
    const fail = (err: Error): void => {
      this.closedError = err;
      for (const p of this.pending.values()) p.reject(err);
      this.pending.clear();
    };
    socket.on('error', fail);
    socket.on('close', () => fail(new Error('ttrpc connection closed')));
  }

  /** Connect to a unix socket path, or to host:port over TCP (a guest's forwarded port). */
  static connect(target: string | { host: string; port: number }): Promise<TtrpcClient> {
    return new Promise((resolve, reject) => {
      const socket = typeof target === 'string' ? connect(target) : connect(target.port, target.host);
      socket.once('connect', () => {
        socket.off('error', reject);
        resolve(new TtrpcClient(socket));
      });
      socket.once('error', reject);
    });
  }

  /** Send raw bytes: for tests that speak broken ttrpc on purpose. */
  writeRaw(bytes: Uint8Array): void {
    this.socket.write(bytes);
  }

  /** Call with an already-encoded payload; resolves to the raw response payload. */
  callRaw(service: string, method: string, payload: Uint8Array, opts: { timeoutMs?: number; metadata?: Record<string, string> } = {}): Promise<Buffer> {
    if (this.closedError) return Promise.reject(this.closedError);
    const id = this.nextId;
    this.nextId += 2;
    const R = this.protos.envelope.Request;
    const envelope = R.encode({
      service,
      method,
      payload,
      timeout_nano: (opts.timeoutMs ?? 0) * 1e6,
      metadata: Object.entries(opts.metadata ?? {}).map(([key, value]) => ({ key, value })),
    }).finish();
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.socket.write(encodeFrame(id, FrameType.Request, envelope));
    });
  }

  /** Call a method of our protos with a plain request object. */
  async call<Res extends object = Record<string, unknown>>(service: string, method: string, request: object, opts?: { timeoutMs?: number; metadata?: Record<string, string> }): Promise<Res> {
    const def: MethodDefinition<object, object> | undefined = this.methods.get(service)?.get(method);
    if (!def) throw new Error(`${service}/${method} is not in our protos`);
    const payload = await this.callRaw(service, method, def.requestSerialize(request), opts);
    return def.responseDeserialize(payload) as Res;
  }

  close(): void {
    this.socket.end();
    this.socket.destroy();
  }
}
