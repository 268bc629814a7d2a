// The X-Registry-Supports-Signatures API extension (containers/image
// docs/signature-protocols.md, as OpenShift's registry serves it) in front of
// Debian's docker-registry, which lacks it: /v2/ answers gain the header,
// /extensions/v2/<repo>/signatures/<digest> keeps signatures in memory (GET
// lists, PUT appends, as skopeo copy --sign-by uploads them); everything
// else is forwarded untouched.

import { createServer, request as httpRequest, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface ExtensionSignature {
  schemaVersion: number;
  name: string;
  type: string;
  /** base64 */
  content: string;
}

export interface SignatureExtensionProxy {
  readonly host: string;
  readonly url: string;
  /** Stored signatures by "<repo>@<digest>". */
  readonly store: Map<string, ExtensionSignature[]>;
  close(): Promise<void>;
}

const EXT = /^\/extensions\/v2\/(.+)\/signatures\/(sha256:[a-f0-9]{64})$/;

export async function startSignatureExtensionProxy(upstream: string): Promise<SignatureExtensionProxy> {
  const store = new Map<string, ExtensionSignature[]>();
  const up = new URL(upstream);
  const server: Server = createServer((req, res) => {
    const path = new URL(req.url ?? '/', 'http://x').pathname;
    const m = EXT.exec(path);
    if (m) {
      const key = `${m[1]}@${m[2]}`;
      if (req.method === 'GET') {
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ signatures: store.get(key) ?? [] }));
        return;
      }
      if (req.method === 'PUT') {
        const parts: Buffer[] = [];
        req.on('data', (c: Buffer) => parts.push(c));
        req.on('end', () => {
          store.set(key, [...(store.get(key) ?? []), JSON.parse(Buffer.concat(parts).toString('utf8')) as ExtensionSignature]);
          res.writeHead(201).end();
        });
        return;
      }
      res.writeHead(405).end();
      return;
    }
    const fwd = httpRequest({ host: up.hostname, port: up.port, method: req.method, path: req.url, headers: { ...req.headers, host: up.host } }, (upRes) => {
      const headers = { ...upRes.headers };
      if (path === '/v2/' || path === '/v2') headers['x-registry-supports-signatures'] = '1';
      res.writeHead(upRes.statusCode ?? 502, headers);
      upRes.pipe(res);
    });
    fwd.on('error', () => res.destroy());
    req.pipe(fwd);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const host = `127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    host,
    url: `http://${host}`,
    store,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
