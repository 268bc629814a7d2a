// A small Docker token server (distribution docs/spec/auth/token.md) for
// tests: GET /token?service=…&scope=… with optional Basic credentials
// answers a JWT signed ES256 whose x5c chain ends at a CA that the registry
// trusts through auth.token.rootcertbundle. Grants come from a callback, and
// every request is recorded so tests can count token fetches.

import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { randomUUID } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { importPKCS8, SignJWT } from 'jose';
import { issueCert, makeCa, pemToDerBase64, type CertFiles } from './pki.ts';

export interface TokenRequestLog {
  readonly user: string | undefined;
  readonly scope: string | undefined;
  readonly service: string | undefined;
  readonly authorization: string | undefined;
}

export interface TokenServerOptions {
  /** user -> password accepted in Basic auth. */
  users?: Record<string, string>;
  /** Actions granted to `user` (undefined: anonymous) on `repository`; default: pull for everyone, push for every known user. */
  grant?: (user: string | undefined, repository: string, requested: readonly string[]) => string[];
  /** Serve HTTPS with this certificate (and key). */
  tls?: CertFiles;
  /** Token lifetime in seconds (expires_in). */
  ttlSeconds?: number;
  service?: string;
  issuer?: string;
}

export interface TokenServer {
  /** http(s)://127.0.0.1:PORT/token */
  readonly realm: string;
  readonly service: string;
  readonly issuer: string;
  /** The PEM bundle to put in the registry's auth.token.rootcertbundle. */
  readonly rootCertFile: string;
  readonly requests: TokenRequestLog[];
  close(): Promise<void>;
}

export async function startTokenServer(dir: string, opts: TokenServerOptions = {}): Promise<TokenServer> {
  const ca = makeCa(dir, 'token-ca');
  const signer = issueCert(dir, ca, 'token-signer', { usage: 'signing' });
  const key = await importPKCS8(signer.keyPem, 'ES256');
  const x5c = [pemToDerBase64(signer.certPem), pemToDerBase64(ca.certPem)];
  const service = opts.service ?? 'tee-agent-test-registry';
  const issuer = opts.issuer ?? 'tee-agent-test-token-issuer';
  const users = opts.users ?? {};
  const grant =
    opts.grant ?? ((user: string | undefined, _repo: string, requested: readonly string[]) => requested.filter((a) => a === 'pull' || (user !== undefined && a === 'push')));
  const requests: TokenRequestLog[] = [];

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const url = new URL(req.url ?? '/', 'http://x');
    if (url.pathname !== '/token') {
      res.writeHead(404).end();
      return;
    }
    let user: string | undefined;
    const authorization = req.headers.authorization;
    if (authorization) {
      const m = /^Basic (.+)$/i.exec(authorization);
      const decoded = m ? Buffer.from(m[1]!, 'base64').toString('utf8') : '';
      const i = decoded.indexOf(':');
      const [u, p] = [decoded.slice(0, i), decoded.slice(i + 1)];
      if (i < 0 || users[u] === undefined || users[u] !== p) {
        requests.push({ user: u || undefined, scope: url.searchParams.get('scope') ?? undefined, service: url.searchParams.get('service') ?? undefined, authorization });
        res.writeHead(401, { 'content-type': 'application/json' }).end('{"details":"bad credentials"}');
        return;
      }
      user = u;
    }
    const scopes = url.searchParams.getAll('scope');
    requests.push({ user, scope: scopes.join(' ') || undefined, service: url.searchParams.get('service') ?? undefined, authorization });
    const access = scopes.flatMap((s) => {
      const [type, ...rest] = s.split(':');
      const actions = rest.pop()?.split(',') ?? [];
      const name = rest.join(':');
      if (type !== 'repository') return [];
      return [{ type, name, actions: grant(user, name, actions) }];
    });
    const now = Math.floor(Date.now() / 1000);
    const ttl = opts.ttlSeconds ?? 300;
    const token = await new SignJWT({ access })
      .setProtectedHeader({ alg: 'ES256', typ: 'JWT', x5c })
      .setIssuer(issuer)
      .setSubject(user ?? '')
      .setAudience(service)
      .setIssuedAt(now)
      .setNotBefore(now - 10)
      .setExpirationTime(now + ttl)
      .setJti(randomUUID())
      .sign(key);
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ token, access_token: token, expires_in: ttl, issued_at: new Date(now * 1000).toISOString() }));
  };

  const listener = (req: IncomingMessage, res: ServerResponse): void => {
    handle(req, res).catch(() => res.writeHead(500).end());
  };
  const server: Server = opts.tls ? createHttpsServer({ cert: opts.tls.certPem, key: opts.tls.keyPem }, listener) : createHttpServer(listener);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    realm: `${opts.tls ? 'https' : 'http'}://127.0.0.1:${port}/token`,
    service,
    issuer,
    rootCertFile: ca.certFile,
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
