// A fault-injecting HTTP proxy for registry tests. It forwards to an
// upstream registry (plain HTTP on loopback) and, per request, can answer a
// status (500, 429 + Retry-After), reset or cut the connection mid-body,
// corrupt a byte, trickle slowly, ignore Range, redirect elsewhere, or ask
// for Basic auth. Every request is recorded (method, path, headers, bytes
// sent) so tests can count downloads and check for leaked Authorization.

import { createServer, request as httpRequest, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

export type Fault =
  /** Answer this status with an empty JSON error body. */
  | { kind: 'status'; status: number; retryAfter?: string }
  /** Send headers and this many body bytes, then a TCP reset. */
  | { kind: 'reset'; afterBytes: number }
  /** Send headers (full Content-Length) and this many body bytes, then close cleanly. */
  | { kind: 'truncate'; afterBytes: number }
  /** Flip one byte of the body at this offset (the length stays right). */
  | { kind: 'corrupt'; offset: number }
  /** Send the body at this rate. */
  | { kind: 'trickle'; bytesPerSec: number }
  /** Drop the Range header, so the registry answers 200 with the whole body. */
  | { kind: 'ignore-range' }
  /** Answer 307 to the same path on another origin. */
  | { kind: 'redirect'; to: string }
  /** Hold the request until released (for kill -9 tests). */
  | { kind: 'hang' }
  /** Answer with this response instead of the registry's (a hostile registry). */
  | { kind: 'respond'; status?: number; headers?: Record<string, string>; body: Buffer | string };

export interface RecordedRequest {
  readonly method: string;
  readonly path: string;
  readonly headers: Readonly<Record<string, string | string[] | undefined>>;
  readonly fault: Fault['kind'] | undefined;
  /** Response status sent to the client. */
  status?: number;
  /** Body bytes sent to the client. */
  bytes: number;
}

/** Picks a fault for a request; `n` counts earlier requests that matched the same rule. */
export interface FaultRule {
  match: (req: { method: string; path: string; headers: IncomingMessage['headers'] }) => boolean;
  fault: Fault;
  /** Apply to the first `times` matching requests only (default: all). */
  times?: number;
}

export interface FaultProxyOptions {
  /** Upstream origin, e.g. "http://127.0.0.1:5000". */
  upstream: string;
  /** Require these Basic credentials (401 + WWW-Authenticate: Basic otherwise). */
  basicAuth?: { username: string; password: string };
}

export interface FaultProxy {
  /** "127.0.0.1:PORT" */
  readonly host: string;
  readonly url: string;
  readonly requests: RecordedRequest[];
  /** Add a rule; rules are checked in the order added. Returns a function that removes it. */
  addRule(rule: FaultRule): () => void;
  clearRules(): void;
  /** Blob GETs seen for a digest (any status). */
  blobGets(digest: string): RecordedRequest[];
  close(): Promise<void>;
}

/** Matches GETs of blobs (optionally one digest). */
export const blobGet = (digest?: string) => (r: { method: string; path: string }): boolean =>
  r.method === 'GET' && /\/blobs\/sha256:[a-f0-9]{64}$/.test(r.path) && (digest === undefined || r.path.endsWith(`/blobs/${digest}`));

/** Matches GETs of manifests. */
export const manifestGet = () => (r: { method: string; path: string }): boolean => r.method === 'GET' && r.path.includes('/manifests/');

export async function startFaultProxy(opts: FaultProxyOptions): Promise<FaultProxy> {
  const upstream = new URL(opts.upstream);
  const requests: RecordedRequest[] = [];
  let rules: Array<FaultRule & { used: number }> = [];
  const sockets = new Set<Socket>();
  const hung = new Set<ServerResponse>();

  const pick = (req: IncomingMessage): Fault | undefined => {
    for (const r of rules) {
      if (!r.match({ method: req.method ?? 'GET', path: req.url ?? '/', headers: req.headers })) continue;
      if (r.times !== undefined && r.used >= r.times) continue;
      r.used++;
      return r.fault;
    }
    return undefined;
  };

  const handler = (req: IncomingMessage, res: ServerResponse): void => {
    const fault = pick(req);
    const rec: RecordedRequest = { method: req.method ?? 'GET', path: req.url ?? '/', headers: { ...req.headers }, fault: fault?.kind, bytes: 0 };
    requests.push(rec);
    const answer = (status: number, headers: Record<string, string>, body = ''): void => {
      rec.status = status;
      res.writeHead(status, headers).end(body);
    };
    if (opts.basicAuth) {
      const want = `Basic ${Buffer.from(`${opts.basicAuth.username}:${opts.basicAuth.password}`).toString('base64')}`;
      if (req.headers.authorization !== want) {
        answer(401, { 'www-authenticate': 'Basic realm="fault-proxy, with a comma"', 'content-type': 'application/json' }, '{"errors":[{"code":"UNAUTHORIZED"}]}');
        return;
      }
    }
    if (fault?.kind === 'status') {
      answer(fault.status, { 'content-type': 'application/json', ...(fault.retryAfter !== undefined ? { 'retry-after': fault.retryAfter } : {}) }, '{"errors":[{"code":"UNAVAILABLE"}]}');
      return;
    }
    if (fault?.kind === 'redirect') {
      answer(307, { location: new URL(req.url ?? '/', fault.to).toString() });
      return;
    }
    if (fault?.kind === 'respond') {
      const body = typeof fault.body === 'string' ? Buffer.from(fault.body) : fault.body;
      rec.bytes = body.length;
      rec.status = fault.status ?? 200;
      res.writeHead(rec.status, { 'content-length': String(body.length), ...(fault.headers ?? {}) }).end(body);
      return;
    }
    if (fault?.kind === 'hang') {
      hung.add(res);
      return;
    }
    const headers = { ...req.headers, host: upstream.host };
    delete headers.authorization; // the upstream registry is open; auth is this proxy's job
    if (fault?.kind === 'ignore-range') delete headers.range;
    const up = httpRequest({ host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers }, (ures) => {
      rec.status = ures.statusCode ?? 502;
      res.writeHead(rec.status, ures.headers);
      let sent = 0;
      const write = (chunk: Buffer): boolean => {
        rec.bytes += chunk.length;
        return res.write(chunk);
      };
      if (fault?.kind === 'trickle') {
        ures.pause();
        const step = Math.max(1, Math.floor(fault.bytesPerSec / 20));
        let pending = Buffer.alloc(0);
        let ended = false;
        ures.on('data', (c: Buffer) => (pending = Buffer.concat([pending, c])));
        ures.on('end', () => (ended = true));
        ures.resume();
        const timer = setInterval(() => {
          if (res.destroyed) {
            clearInterval(timer);
            ures.destroy();
            return;
          }
          if (pending.length > 0) {
            write(pending.subarray(0, step));
            pending = pending.subarray(step);
          } else if (ended) {
            clearInterval(timer);
            res.end();
          }
        }, 50);
        return;
      }
      ures.on('data', (chunk: Buffer) => {
        if (fault?.kind === 'reset' || fault?.kind === 'truncate') {
          const room = fault.afterBytes - sent;
          if (room <= 0) return;
          const part = chunk.subarray(0, room);
          sent += part.length;
          write(part);
          if (sent >= fault.afterBytes) {
            ures.destroy();
            // Let the bytes leave before cutting the connection.
            setTimeout(() => (fault.kind === 'reset' ? res.socket?.resetAndDestroy() : res.socket?.end()), 20);
          }
          return;
        }
        if (fault?.kind === 'corrupt' && fault.offset >= sent && fault.offset < sent + chunk.length) {
          chunk = Buffer.from(chunk);
          chunk[fault.offset - sent] = chunk[fault.offset - sent]! ^ 0xff;
        }
        sent += chunk.length;
        if (!write(chunk)) {
          ures.pause();
          res.once('drain', () => ures.resume());
        }
      });
      ures.on('end', () => {
        if (fault?.kind !== 'reset' && fault?.kind !== 'truncate') res.end();
      });
      ures.on('error', () => res.destroy());
    });
    up.on('error', () => {
      if (!res.headersSent) answer(502, {});
      else res.destroy();
    });
    req.pipe(up);
  };

  const server: Server = createServer(handler);
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    host: `127.0.0.1:${port}`,
    url: `http://127.0.0.1:${port}`,
    requests,
    addRule(rule) {
      const entry = { ...rule, used: 0 };
      rules.push(entry);
      return () => {
        rules = rules.filter((r) => r !== entry);
      };
    },
    clearRules() {
      rules = [];
    },
    blobGets(digest) {
      return requests.filter((r) => r.method === 'GET' && r.path.endsWith(`/blobs/${digest}`));
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const res of hung) res.destroy();
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}
