// A forward HTTP proxy for tests: CONNECT tunnels (https targets) and
// absolute-form requests (plain http targets), optionally behind Basic
// Proxy-Authorization, recording what went through it.

import { connect } from 'node:net';
import { createServer, request as httpRequest, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

export interface ForwardProxy {
  readonly url: string;
  /** "CONNECT host:port" or "GET http://host:port/path", in arrival order. */
  readonly log: string[];
  close(): Promise<void>;
}

export async function startForwardProxy(opts: { credentials?: string } = {}): Promise<ForwardProxy> {
  const log: string[] = [];
  const sockets = new Set<Socket>();
  const authorized = (req: IncomingMessage): boolean =>
    !opts.credentials || req.headers['proxy-authorization'] === `Basic ${Buffer.from(opts.credentials).toString('base64')}`;

  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    log.push(`${req.method} ${req.url}`);
    if (!authorized(req)) {
      res.writeHead(407, { 'proxy-authenticate': 'Basic realm="test"' }).end();
      return;
    }
    const target = new URL(req.url ?? '');
    const headers = { ...req.headers };
    delete headers['proxy-authorization'];
    const up = httpRequest({ host: target.hostname, port: target.port, path: `${target.pathname}${target.search}`, method: req.method, headers }, (r) => {
      res.writeHead(r.statusCode ?? 502, r.headers);
      r.pipe(res);
    });
    up.on('error', () => res.writeHead(502).end());
    req.pipe(up);
  });
  server.on('connect', (req: IncomingMessage, client: Socket, head: Buffer) => {
    log.push(`CONNECT ${req.url}`);
    sockets.add(client);
    client.on('close', () => sockets.delete(client));
    if (!authorized(req)) {
      client.end('HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm="test"\r\n\r\n');
      return;
    }
    const [host, port] = (req.url ?? '').split(':');
    const up = connect(Number(port), host, () => {
      client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
      up.write(head);
      up.pipe(client);
      client.pipe(up);
    });
    sockets.add(up);
    up.on('close', () => sockets.delete(up));
    up.on('error', () => client.destroy());
    client.on('error', () => up.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    log,
    close: async () => {
      for (const s of sockets) s.destroy();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
