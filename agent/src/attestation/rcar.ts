// RCAR (Request, Challenge, Attestation, Response), KBS protocol 0.4.0 as
// Trustee implements it: the message shapes and the runtime-data digest.
// Pure functions; the HTTP exchange lives in kbs-client.ts.

import canonicalize from 'canonicalize';
import { createHash, getHashes } from 'node:crypto';
import type { ResourceUri } from '../resource.ts';
import { KbsProtocolError } from './errors.ts';
import type { InitData } from './initdata.ts';
import type { TeePubKey } from './tee-key.ts';

export const PROTOCOL_VERSION = '0.4.0';
export const KBS_PREFIX = '/kbs/v0';
export const SESSION_COOKIE = 'kbs-session-id';

export type HashAlgorithm = 'sha256' | 'sha384' | 'sha512' | 'sm3';
const HASHES: readonly HashAlgorithm[] = (['sha256', 'sha384', 'sha512', 'sm3'] as const).filter((h) => getHashes().includes(h));
/** Used when the challenge selects none (guest-components get_hash_algorithm). */
export const DEFAULT_HASH: HashAlgorithm = 'sha384';

export function authRequest(tee: string): object {
  return { version: PROTOCOL_VERSION, tee, 'extra-params': { 'supported-hash-algorithms': HASHES } };
}

export interface Challenge {
  readonly nonce: string;
  readonly hash: HashAlgorithm;
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

export function parseJson(body: Buffer, what: string): unknown {
  try {
    return JSON.parse(body.toString('utf8'));
  } catch {
    throw new KbsProtocolError(`KBS ${what} is not JSON`);
  }
}

/** `extra-params` is "" from Trustee, or an object that may select the hash (IBM SE). */
export function parseChallenge(body: unknown): Challenge {
  if (!isObject(body) || typeof body.nonce !== 'string') throw new KbsProtocolError('KBS challenge has no nonce');
  const extra = body['extra-params'];
  let hash = DEFAULT_HASH;
  if (isObject(extra) && extra['selected-hash-algorithm'] !== undefined) {
    const sel = extra['selected-hash-algorithm'];
    const name = typeof sel === 'string' ? sel.toLowerCase() : '';
    if (!(HASHES as readonly string[]).includes(name)) throw new KbsProtocolError(`KBS selected an unsupported hash algorithm ${JSON.stringify(sel)}`);
    hash = name as HashAlgorithm;
  }
  return { nonce: body.nonce, hash };
}

/** The object whose JCS (RFC 8785) form is hashed into the evidence; the KBS rebuilds it. */
export function runtimeData(pubkey: TeePubKey, nonce: string, additionalEvidence: string): object {
  return { 'tee-pubkey': pubkey, nonce, 'additional-evidence': additionalEvidence };
}

export function runtimeDataDigest(hash: HashAlgorithm, data: object): Buffer {
  return createHash(hash).update(canonicalize(data)!, 'utf8').digest();
}

export function attestationRequest(args: { pubkey: TeePubKey; nonce: string; evidence: object; additionalEvidence: string; initdata?: InitData | undefined }): object {
  return {
    'init-data': args.initdata ? { format: 'toml', body: args.initdata.toml } : null,
    'runtime-data': { nonce: args.nonce, 'tee-pubkey': args.pubkey },
    'tee-evidence': { primary_evidence: args.evidence, additional_evidence: args.additionalEvidence },
  };
}

export interface TokenInfo {
  readonly token: string;
  /** Seconds since the epoch, when present in the claims. */
  readonly exp: number | undefined;
  readonly nbf: number | undefined;
}

/** The client cannot verify the token (the KBS does); it only reads exp/nbf to know when to attest again. */
export function parseToken(body: unknown): TokenInfo {
  if (!isObject(body) || typeof body.token !== 'string') throw new KbsProtocolError('KBS attest response has no token');
  const payload = body.token.split('.')[1];
  let claims: unknown;
  try {
    claims = JSON.parse(Buffer.from(payload ?? '', 'base64url').toString('utf8'));
  } catch {
    throw new KbsProtocolError('KBS token is not a JWT');
  }
  if (!isObject(claims)) throw new KbsProtocolError('KBS token is not a JWT');
  const num = (v: unknown): number | undefined => (typeof v === 'number' && Number.isFinite(v) ? v : undefined);
  return { token: body.token, exp: num(claims.exp), nbf: num(claims.nbf) };
}

export function tokenUsable(t: TokenInfo, nowMs = Date.now()): boolean {
  const now = nowMs / 1000;
  return (t.exp === undefined || t.exp > now) && (t.nbf === undefined || t.nbf <= now + 1);
}

/** Trustee's error body {"type": ".../errors/<Variant>", "detail": "…"}, shortened for messages. */
export function parseErrorInfo(body: Buffer): { variant: string; detail: string } {
  let variant = 'unknown';
  let detail = '';
  try {
    const info = JSON.parse(body.toString('utf8')) as unknown;
    if (isObject(info)) {
      if (typeof info.type === 'string') variant = info.type.slice(info.type.lastIndexOf('/') + 1).slice(0, 64);
      if (typeof info.detail === 'string') detail = info.detail;
    }
  } catch {
    detail = body.toString('utf8');
  }
  // The detail is the KBS's text, not ours: keep it printable and short.
  return { variant, detail: detail.replace(/[^\x20-\x7e]/g, '?').slice(0, 300) };
}

export function resourcePath(uri: ResourceUri): string {
  const seg = [uri.repository, uri.type, uri.tag].map(encodeURIComponent).join('/');
  return `${KBS_PREFIX}/${uri.plugin}/${seg}${uri.query ? `?${uri.query}` : ''}`;
}

/** The kbs-session-id value from Set-Cookie headers, with its expiry when given. */
export function sessionCookie(setCookie: string | string[] | undefined): { value: string; expires: number | undefined } | undefined {
  for (const line of Array.isArray(setCookie) ? setCookie : setCookie ? [setCookie] : []) {
    const [pair, ...attrs] = line.split(';');
    const eq = pair!.indexOf('=');
    if (eq < 0 || pair!.slice(0, eq).trim() !== SESSION_COOKIE) continue;
    let expires: number | undefined;
    for (const a of attrs) {
      const [k, v] = a.split('=');
      if (k?.trim().toLowerCase() === 'expires' && v) {
        const t = Date.parse(v.trim());
        if (!Number.isNaN(t)) expires = t;
      }
    }
    return { value: pair!.slice(eq + 1).trim(), expires };
  }
  return undefined;
}
