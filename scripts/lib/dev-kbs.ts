// A development KBS that speaks Trustee's KBS protocol 0.4.0 on the wire:
// POST /kbs/v0/auth → challenge + kbs-session-id cookie; POST /kbs/v0/attest
// → token; GET /kbs/v0/resource/<repo>/<type>/<tag> → flattened JWE to the
// TEE key in the token. Errors are Trustee's {"type","detail"} bodies with
// its status codes (404 for a bad path or plugin, 401 for everything else).
//
// Verification is for development only:
// - sample evidence: report_data must equal the runtime-data digest exactly;
// - TDX evidence (only with tdxTestMode): the quote's REPORTDATA (and
//   MRCONFIGID when init-data is sent) are checked, but the quote signature
//   is NOT verified. Never use this KBS to protect real secrets.
//
// Not shipped in the guest. Written independently of the agent's client so
// that the tests exercise two implementations of the protocol.

import canonicalize from 'canonicalize';
import { FlattenedEncrypt, SignJWT, generateKeyPair, importJWK, jwtVerify, type JWK, type FlattenedJWE } from 'jose';
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { createServer as createHttp, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttps } from 'node:https';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { parse as parseToml } from 'smol-toml';

const VERSION = '0.4.0';
const ERROR_PREFIX = 'https://github.com/confidential-containers/kbs/errors';
const COOKIE = 'kbs-session-id';
const MAX_REQUEST = 2 << 20;

export interface DevKbsOptions {
  /** Resource directory: the file <dir>/<repo>/<type>/<tag> is kbs:///<repo>/<type>/<tag>. */
  readonly resources: string;
  readonly host?: string;
  /** 0 (default) picks a free port. */
  readonly port?: number;
  /** PEM server certificate and key: serve HTTPS instead of HTTP. */
  readonly tls?: { readonly cert: string | Buffer; readonly key: string | Buffer };
  /** Session lifetime in seconds (Trustee default 5 minutes); fractions allowed for tests. */
  readonly sessionTimeoutS?: number;
  /** Token lifetime in seconds. */
  readonly tokenTtlS?: number;
  /** TEST MODE: accept TDX quotes after checking REPORTDATA/MRCONFIGID only, without verifying the signature. */
  readonly tdxTestMode?: boolean;
  /** Resource policy; allows everything when absent (Trustee's InsecureAllowAll). */
  readonly allow?: (req: { tee: string; path: readonly string[] }) => boolean;
  /** Diagnostics, one line per request; never given keys, tokens or resource bytes. */
  readonly log?: (line: string) => void;
}

/** Misbehaviour on demand, for the client's error-path tests. Mutable while running. */
export interface DevKbsFaults {
  /** Require this protocol version instead of 0.4.0. */
  version?: string;
  /** Remember a different nonce than the one sent in the challenge. */
  nonce?: 'mismatch';
  /** Damage resource responses: a flipped tag, wrapped key or ciphertext byte, a changed header, or another key. */
  jwe?: 'tag' | 'key' | 'ciphertext' | 'header' | 'other-key';
  /** Wait this long before answering each request. */
  delayMs?: number;
  /** Answer every request with this status and a Trustee error body. */
  status?: number;
  /** Refuse every token as if it had expired (TokenVerifierError), without touching sessions. */
  rejectTokens?: boolean;
}

export interface DevKbsStats {
  auth: number;
  /** Tokens issued by a fresh attestation (not replays of an attested session). */
  attest: number;
  /** Digests (sha384 hex) of the init-data bodies that attestations carried, in order. */
  readonly initData: string[];
  resource: number;
  /** Why requests were refused, newest last (our diagnostics, not sent to clients verbatim). */
  readonly refusals: string[];
}

export interface DevKbs {
  readonly url: string;
  readonly port: number;
  readonly stats: DevKbsStats;
  readonly faults: DevKbsFaults;
  /** Forget every session and token, as a restarted KBS would. */
  restart(): Promise<void>;
  stop(): Promise<void>;
}

type TeePubKey = { kty: 'EC'; crv: string; alg: string; x: string; y: string } | { kty: 'RSA'; alg: string; n: string; e: string };

type Session =
  | { state: 'authed'; id: string; expires: number; tee: string; nonce: string }
  | { state: 'attested'; id: string; expires: number; token: string };

class KbsError extends Error {
  readonly status: number;
  readonly variant: string;
  readonly reason: string;
  constructor(variant: string, detail: string, reason = detail, status = 401) {
    super(detail);
    this.variant = variant;
    this.status = status;
    this.reason = reason;
  }
}

const attestError = (step: 'Auth' | 'Attest', reason: string): KbsError =>
  // Trustee shows the cause for auth failures but hides it for attest failures.
  new KbsError('AttestationError', step === 'Auth' ? `Attestation error: RCAR handshake Auth failed: ${reason}` : 'Attestation error: RCAR handshake Attest failed', reason);

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Trustee re-serialises the key through its TeePubKey type: only these members survive. */
function teePubKey(v: unknown): TeePubKey {
  if (isObject(v) && v.kty === 'EC' && [v.crv, v.alg, v.x, v.y].every((s) => typeof s === 'string')) {
    return { kty: 'EC', crv: v.crv as string, alg: v.alg as string, x: v.x as string, y: v.y as string };
  }
  if (isObject(v) && v.kty === 'RSA' && [v.alg, v.n, v.e].every((s) => typeof s === 'string')) {
    return { kty: 'RSA', alg: v.alg as string, n: v.n as string, e: v.e as string };
  }
  throw attestError('Attest', 'tee-pubkey is not an EC or RSA TeePubKey');
}

function reportDataOffsets(quote: Buffer): { reportData: number; mrConfigId: number } {
  const version = quote.length >= 2 ? quote.readUInt16LE(0) : 0;
  const body = version === 4 ? 48 : version === 5 ? 54 : -1;
  if (body < 0 || quote.length < body + 584) throw attestError('Attest', `unsupported or short TDX quote (version ${version})`);
  return { reportData: body + 520, mrConfigId: body + 184 };
}

function initDataDigest(init: { body: string }): Buffer {
  let algorithm: unknown;
  try {
    algorithm = (parseToml(init.body) as Record<string, unknown>).algorithm;
  } catch {
    throw attestError('Attest', 'init-data is not TOML');
  }
  if (algorithm !== 'sha256' && algorithm !== 'sha384' && algorithm !== 'sha512') throw attestError('Attest', 'init-data algorithm unsupported');
  return createHash(algorithm).update(init.body, 'utf8').digest();
}

function flip(b64url: string, at = 0): string {
  const b = Buffer.from(b64url, 'base64url');
  b[at % b.length]! ^= 0x01;
  return b.toString('base64url');
}

export async function startDevKbs(opts: DevKbsOptions): Promise<DevKbs> {
  const sessionMs = (opts.sessionTimeoutS ?? 300) * 1000;
  const tokenTtl = opts.tokenTtlS ?? 300;
  let signer = await generateKeyPair('ES256');
  const sessions = new Map<string, Session>();
  const stats: DevKbsStats = { auth: 0, attest: 0, initData: [], resource: 0, refusals: [] };
  const faults: DevKbsFaults = {};
  const log = opts.log ?? (() => {});

  const session = (req: IncomingMessage): Session | undefined => {
    const m = new RegExp(`(?:^|;\\s*)${COOKIE}=([^;]+)`).exec(req.headers.cookie ?? '');
    const s = m ? sessions.get(m[1]!) : undefined;
    if (s && s.expires < Date.now()) {
      sessions.delete(s.id);
      return undefined;
    }
    return s;
  };
  const setCookie = (res: ServerResponse, s: Session): void => {
    res.setHeader('set-cookie', `${COOKIE}=${s.id}; Expires=${new Date(s.expires).toUTCString()}`);
  };

  async function auth(body: Buffer, res: ServerResponse): Promise<object> {
    let request: unknown;
    try {
      request = JSON.parse(body.toString('utf8'));
    } catch {
      throw attestError('Auth', 'deserialize Request');
    }
    if (!isObject(request) || typeof request.version !== 'string' || typeof request.tee !== 'string' || !('extra-params' in request)) {
      throw attestError('Auth', 'deserialize Request');
    }
    const want = faults.version ?? VERSION;
    if (request.version !== want) throw attestError('Auth', `KBS Client Protocol Version Mismatch: expect =${want} while the request is ${request.version}`);
    const nonce = randomBytes(32).toString('base64');
    const s: Session = {
      state: 'authed',
      id: randomUUID().replaceAll('-', ''),
      expires: Date.now() + sessionMs,
      tee: request.tee,
      nonce: faults.nonce === 'mismatch' ? randomBytes(32).toString('base64') : nonce,
    };
    sessions.set(s.id, s);
    setCookie(res, s);
    stats.auth++;
    return { nonce, 'extra-params': '' };
  }

  function verifyEvidence(tee: string, evidence: unknown, expected: Buffer, init: { body: string } | null): Record<string, unknown> {
    if (tee === 'sample') {
      if (!isObject(evidence) || typeof evidence.report_data !== 'string') throw attestError('Attest', 'sample evidence has no report_data');
      if (!Buffer.from(evidence.report_data, 'base64').equals(expected)) throw attestError('Attest', 'sample report_data does not match the runtime data');
      return { svn: evidence.svn, report_data: evidence.report_data, launch_digest: 'abcde', debug: false };
    }
    if (tee === 'tdx' && opts.tdxTestMode) {
      if (!isObject(evidence) || typeof evidence.quote !== 'string') throw attestError('Attest', 'TDX evidence has no quote');
      const quote = Buffer.from(evidence.quote, 'base64');
      const at = reportDataOffsets(quote);
      const want = Buffer.alloc(64);
      expected.copy(want);
      if (!quote.subarray(at.reportData, at.reportData + 64).equals(want)) throw attestError('Attest', 'TDX REPORTDATA does not match the runtime data');
      if (init) {
        const mr = Buffer.alloc(48);
        initDataDigest(init).copy(mr);
        if (!quote.subarray(at.mrConfigId, at.mrConfigId + 48).equals(mr)) throw attestError('Attest', 'TDX MRCONFIGID does not match the init-data digest');
      }
      const hex = (off: number, len: number): string => quote.subarray(off, off + len).toString('hex');
      const b = at.reportData - 520;
      return {
        quote: { body: { mr_td: hex(b + 136, 48), mr_config_id: hex(b + 184, 48), rtmr_0: hex(b + 328, 48), rtmr_1: hex(b + 376, 48), rtmr_2: hex(b + 424, 48), rtmr_3: hex(b + 472, 48), report_data: hex(at.reportData, 64) } },
        signature_verified: false,
      };
    }
    throw attestError('Attest', `no verifier for tee ${tee}${tee === 'tdx' ? ' (start with tdxTestMode to check TDX quotes without signature verification)' : ''}`);
  }

  async function attest(req: IncomingMessage, body: Buffer, res: ServerResponse): Promise<object> {
    const s = session(req);
    if (!s) throw attestError('Attest', 'session not found or expired');
    if (s.state === 'attested') {
      setCookie(res, s);
      return { token: s.token };
    }
    let a: unknown;
    try {
      a = JSON.parse(body.toString('utf8'));
    } catch {
      throw attestError('Attest', 'deserialize Attestation');
    }
    if (!isObject(a) || !isObject(a['runtime-data']) || !isObject(a['tee-evidence'])) throw attestError('Attest', 'deserialize Attestation');
    const rd = a['runtime-data'];
    if (rd.nonce !== s.nonce) throw attestError('Attest', 'nonce mismatch');
    const pubkey = teePubKey(rd['tee-pubkey']);
    const te = a['tee-evidence'];
    const additional = te.additional_evidence;
    if (typeof additional !== 'string') throw attestError('Attest', 'additional_evidence must be a string');
    const init = a['init-data'] ?? null;
    if (init !== null && !(isObject(init) && init.format === 'toml' && typeof init.body === 'string')) throw attestError('Attest', 'init-data must be {format:"toml", body}');
    const expected = createHash('sha384')
      .update(canonicalize({ 'tee-pubkey': pubkey, nonce: s.nonce, 'additional-evidence': additional })!, 'utf8')
      .digest();
    const claims = verifyEvidence(s.tee, te.primary_evidence, expected, init as { body: string } | null);
    const now = Math.floor(Date.now() / 1000);
    const token = await new SignJWT({
      submods: {
        cpu0: {
          'ear.status': 'affirming',
          'ear.veraison.annotated-evidence': { [s.tee]: claims, runtime_data_claims: { 'tee-pubkey': pubkey }, ...(init ? { init_data_claims: { body_sha384: createHash('sha384').update((init as { body: string }).body).digest('hex') } } : {}) },
        },
      },
    })
      .setProtectedHeader({ alg: 'ES256', typ: 'JWT' })
      .setIssuer('tee-agent-dev-kbs')
      .setIssuedAt(now)
      .setNotBefore(now)
      .setExpirationTime(now + tokenTtl)
      .setJti(randomUUID())
      .sign(signer.privateKey);
    const attested: Session = { state: 'attested', id: s.id, expires: s.expires, token };
    sessions.set(s.id, attested);
    setCookie(res, attested);
    stats.attest++;
    if (init) stats.initData.push(createHash('sha384').update((init as { body: string }).body).digest('hex'));
    return { token };
  }

  async function resource(req: IncomingMessage, path: readonly string[]): Promise<FlattenedJWE> {
    const s = session(req);
    let token = s?.state === 'attested' ? s.token : undefined;
    const bearer = /^Bearer (\S+)$/.exec(req.headers.authorization ?? '');
    token ??= bearer?.[1];
    if (!token) throw new KbsError('TokenNotFound', 'Attestation Token not found', 'no attested session and no bearer token');
    let claims: Record<string, unknown>;
    try {
      if (faults.rejectTokens) throw new Error('token rejected by fault injection');
      claims = (await jwtVerify(token, signer.publicKey, { issuer: 'tee-agent-dev-kbs' })).payload;
    } catch (err) {
      throw new KbsError('TokenVerifierError', 'Token Verifier error', `token: ${(err as Error).message}`);
    }
    const annotated = (claims.submods as Record<string, Record<string, Record<string, unknown>>> | undefined)?.cpu0?.['ear.veraison.annotated-evidence'];
    const pubkey = teePubKey((annotated?.runtime_data_claims as Record<string, unknown> | undefined)?.['tee-pubkey']);
    const tee = Object.keys(annotated ?? {}).find((k) => k !== 'runtime_data_claims' && k !== 'init_data_claims') ?? '';
    if (path.length !== 3 || path.some((p) => p === '' || p === '.' || p === '..' || p.includes('\0'))) {
      throw new KbsError('PluginInternalError', 'Plugin internal error', `bad resource path ${path.join('/')}`);
    }
    if (opts.allow && !opts.allow({ tee, path })) throw new KbsError('PolicyDeny', 'Access denied by policy', `policy denies ${path.join('/')}`);
    let data: Buffer;
    try {
      data = await readFile(join(opts.resources, ...path));
    } catch {
      throw new KbsError('PluginInternalError', 'Plugin internal error', `no resource ${path.join('/')}`);
    }
    stats.resource++;
    try {
      return await encryptTo(pubkey, data);
    } finally {
      data.fill(0);
    }
  }

  async function encryptTo(pubkey: TeePubKey, data: Buffer): Promise<FlattenedJWE> {
    let alg: string;
    let jwk: JWK;
    if (pubkey.kty === 'EC' && pubkey.alg === 'ECDH-ES+A256KW' && (pubkey.crv === 'P-256' || pubkey.crv === 'P-521')) {
      alg = pubkey.alg;
      jwk = { kty: 'EC', crv: pubkey.crv, x: pubkey.x, y: pubkey.y };
    } else if (pubkey.kty === 'RSA' && pubkey.alg === 'RSA-OAEP-256') {
      alg = pubkey.alg;
      jwk = { kty: 'RSA', n: pubkey.n, e: pubkey.e };
    } else {
      throw new KbsError('JweError', 'JWE failed', `unsupported tee-pubkey ${pubkey.kty}/${pubkey.alg}`);
    }
    let key = await importJWK(jwk, alg);
    if (faults.jwe === 'other-key') {
      const other = pubkey.kty === 'EC' ? await generateKeyPair(alg, { crv: pubkey.crv }) : await generateKeyPair(alg, { modulusLength: 2048 });
      key = other.publicKey;
    }
    const jwe = await new FlattenedEncrypt(data).setProtectedHeader({ alg, enc: 'A256GCM' }).encrypt(key);
    if (faults.jwe === 'tag') jwe.tag = flip(jwe.tag!);
    if (faults.jwe === 'key') jwe.encrypted_key = flip(jwe.encrypted_key!, 7);
    if (faults.jwe === 'ciphertext') jwe.ciphertext = flip(jwe.ciphertext);
    if (faults.jwe === 'header') {
      const header = JSON.parse(Buffer.from(jwe.protected!, 'base64url').toString('utf8')) as Record<string, unknown>;
      jwe.protected = Buffer.from(JSON.stringify({ ...header, kid: 'swapped' })).toString('base64url');
    }
    return jwe;
  }

  async function route(req: IncomingMessage, res: ServerResponse, body: Buffer): Promise<object> {
    if (faults.status) throw new KbsError('FaultInjected', `status ${faults.status} by fault injection`, 'fault', faults.status);
    const url = new URL(req.url ?? '/', 'http://kbs');
    const prefix = '/kbs/v0/';
    if (!url.pathname.startsWith(prefix)) throw new KbsError('InvalidRequestPath', `Request path ${url.pathname} is invalid`, 'not under /kbs/v0', 404);
    const [plugin = '', ...rest] = url.pathname.slice(prefix.length).split('/').map((p) => decodeURIComponent(p));
    if (plugin === 'auth' && req.method === 'POST') return auth(body, res);
    if (plugin === 'attest' && req.method === 'POST') return attest(req, body, res);
    if (plugin === 'resource' && req.method === 'GET') return resource(req, rest);
    if (plugin === '') throw new KbsError('InvalidRequestPath', `Request path ${url.pathname} is invalid`, 'empty plugin', 404);
    throw new KbsError('PluginNotFound', `Plugin ${plugin} not found`, `plugin ${plugin}`, 404);
  }

  const handler = (req: IncomingMessage, res: ServerResponse): void => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size <= MAX_REQUEST) chunks.push(c);
    });
    req.on('end', () => {
      void (async () => {
        if (faults.delayMs) await new Promise((r) => setTimeout(r, faults.delayMs));
        let status = 200;
        let payload: object;
        try {
          if (size > MAX_REQUEST) throw new KbsError('PayloadTooLarge', 'request too large');
          payload = await route(req, res, Buffer.concat(chunks));
        } catch (err) {
          const e = err instanceof KbsError ? err : new KbsError('InternalError', 'internal error', (err as Error).message);
          status = e.status;
          payload = { type: `${ERROR_PREFIX}/${e.variant}`, detail: e.message };
          stats.refusals.push(`${req.method} ${req.url?.split('?')[0]}: ${e.variant}: ${e.reason}`);
        }
        log(`${req.method} ${req.url?.split('?')[0]} ${status}`);
        if (res.destroyed) return;
        res.writeHead(status, { 'content-type': 'application/json' });
        res.end(JSON.stringify(payload));
      })();
    });
  };

  const server: Server = opts.tls ? createHttps({ cert: opts.tls.cert, key: opts.tls.key }, handler) : createHttp(handler);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, opts.host ?? '127.0.0.1', () => resolve());
  });
  const { port, address } = server.address() as AddressInfo;
  const host = address.includes(':') ? `[${address}]` : address;
  return {
    url: `${opts.tls ? 'https' : 'http'}://${host}:${port}`,
    port,
    stats,
    faults,
    async restart() {
      sessions.clear();
      signer = await generateKeyPair('ES256');
    },
    stop: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
