// Sealed secrets (guest-components confidential-data-hub SEALED_SECRET.md):
// "sealed." + a JWS compact serialisation signed with ES256. The kid names
// the verification key: a resource URI (fetched through the KeySource) or a
// file in the sealed-secret key directory. Payload types:
// - vault:    {"type":"vault","provider":"kbs","name":"kbs:///r/t/k"} → that resource;
// - envelope: {"type":"envelope","provider":"kbs","key_id":"kbs:///r/t/k",
//              "encrypted_key": base64(AES-256-KW(KEK, DEK)), "wrap_type":"A256GCM",
//              "iv": base64(12 bytes), "encrypted_data": base64(ciphertext ‖ tag)}.
// Upstream's envelope providers are cloud KMSes; here the KEK comes from the KBS.

import { compactVerify, decodeProtectedHeader, importJWK, type JWK } from 'jose';
import { createDecipheriv, type webcrypto } from 'node:crypto';
import { readFile, realpath } from 'node:fs/promises';
import { join, sep } from 'node:path';
import { parseResourceUri, type KeySource, type ResourceUri } from '../resource.ts';
import { SealedSecretInvalid, SealedSecretRejected } from './errors.ts';

export const SEALED_PREFIX = 'sealed.';
const VERSION = '0.1.0';

export interface UnsealDeps {
  readonly keys: KeySource;
  /** Directory of JWK files for kids that are not resource URIs. */
  readonly keyDir: string;
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

function resourceUri(text: string): ResourceUri | undefined {
  try {
    return parseResourceUri(text);
  } catch {
    return undefined;
  }
}

async function verificationKey(kid: string, deps: UnsealDeps, signal?: AbortSignal): Promise<Buffer> {
  const uri = resourceUri(kid);
  if (uri) return deps.keys.get(uri, signal);
  let base: string;
  let path: string;
  try {
    base = await realpath(deps.keyDir);
    path = await realpath(join(base, kid));
  } catch {
    throw new SealedSecretRejected(`no verification key for kid ${JSON.stringify(kid)}`);
  }
  if (!path.startsWith(base + sep)) throw new SealedSecretRejected(`kid ${JSON.stringify(kid)} is outside the key directory`);
  return readFile(path);
}

async function importVerificationKey(bytes: Buffer): Promise<webcrypto.CryptoKey | Uint8Array> {
  let jwk: unknown;
  try {
    jwk = JSON.parse(bytes.toString('utf8'));
  } catch {
    throw new SealedSecretRejected('verification key is not a JWK');
  } finally {
    bytes.fill(0);
  }
  if (!isObject(jwk) || jwk.kty !== 'EC' || jwk.crv !== 'P-256' || typeof jwk.x !== 'string' || typeof jwk.y !== 'string') {
    throw new SealedSecretRejected('verification key must be an EC P-256 JWK');
  }
  // Only the public members: a key file may hold the private key too.
  return importJWK({ kty: 'EC', crv: 'P-256', x: jwk.x, y: jwk.y } satisfies JWK, 'ES256');
}

function b64(value: unknown, field: string): Buffer {
  if (typeof value !== 'string' || !/^[A-Za-z0-9+/]*={0,2}$/.test(value)) throw new SealedSecretInvalid(`${field} must be standard base64`);
  return Buffer.from(value, 'base64');
}

function uriField(value: unknown, field: string): ResourceUri {
  const uri = typeof value === 'string' ? resourceUri(value) : undefined;
  if (!uri) throw new SealedSecretInvalid(`${field} must be a kbs:/// resource URI`);
  return uri;
}

async function unsealEnvelope(p: Record<string, unknown>, keys: KeySource, signal?: AbortSignal): Promise<Buffer> {
  if (p.wrap_type !== 'A256GCM') throw new SealedSecretInvalid('envelope wrap_type must be A256GCM');
  const wrapped = b64(p.encrypted_key, 'encrypted_key');
  const iv = b64(p.iv, 'iv');
  const data = b64(p.encrypted_data, 'encrypted_data');
  if (iv.length !== 12 || data.length < 16 || wrapped.length !== 40) throw new SealedSecretInvalid('envelope iv, key or data has the wrong size');
  const kek = await keys.get(uriField(p.key_id, 'key_id'), signal);
  let dek: Buffer | undefined;
  try {
    if (kek.length !== 32) throw new SealedSecretRejected('envelope key encryption key must be 32 bytes');
    try {
      const unwrap = createDecipheriv('id-aes256-wrap', kek, Buffer.from('A6A6A6A6A6A6A6A6', 'hex'));
      dek = Buffer.concat([unwrap.update(wrapped), unwrap.final()]);
    } catch {
      throw new SealedSecretRejected('envelope key does not unwrap with the key encryption key');
    }
    try {
      const gcm = createDecipheriv('aes-256-gcm', dek, iv);
      gcm.setAuthTag(data.subarray(data.length - 16));
      return Buffer.concat([gcm.update(data.subarray(0, data.length - 16)), gcm.final()]);
    } catch {
      throw new SealedSecretRejected('envelope data fails authentication');
    }
  } finally {
    kek.fill(0);
    dek?.fill(0);
  }
}

/** Verify a sealed secret and return its plaintext; the caller owns (and zeroes) the buffer. */
export async function unsealSecret(secret: Buffer | string, deps: UnsealDeps, signal?: AbortSignal): Promise<Buffer> {
  const text = Buffer.isBuffer(secret) ? secret.toString('utf8') : secret;
  if (!text.startsWith(SEALED_PREFIX)) throw new SealedSecretInvalid('must start with "sealed."');
  const jws = text.slice(SEALED_PREFIX.length);
  if (jws.split('.').length !== 3) throw new SealedSecretInvalid('expected sealed.<header>.<payload>.<signature>');
  let header: ReturnType<typeof decodeProtectedHeader>;
  try {
    header = decodeProtectedHeader(jws);
  } catch {
    throw new SealedSecretInvalid('JWS header is not base64url JSON');
  }
  if (header.alg !== 'ES256') throw new SealedSecretRejected('JWS algorithm must be ES256');
  if (typeof header.kid !== 'string' || header.kid === '') throw new SealedSecretInvalid('JWS header has no kid');

  const key = await importVerificationKey(await verificationKey(header.kid, deps, signal));
  let payloadBytes: Uint8Array;
  try {
    payloadBytes = (await compactVerify(jws, key, { algorithms: ['ES256'] })).payload;
  } catch {
    throw new SealedSecretRejected('signature does not verify');
  }
  let payload: unknown;
  try {
    payload = JSON.parse(Buffer.from(payloadBytes).toString('utf8'));
  } catch {
    throw new SealedSecretInvalid('payload is not JSON');
  }
  if (!isObject(payload)) throw new SealedSecretInvalid('payload is not a JSON object');
  if (payload.version !== VERSION) throw new SealedSecretInvalid(`payload version must be ${VERSION}`);
  if (payload.provider !== 'kbs') throw new SealedSecretInvalid(`provider ${JSON.stringify(payload.provider)} is not supported (only "kbs")`);
  if (payload.type === 'vault') return deps.keys.get(uriField(payload.name, 'name'), signal);
  if (payload.type === 'envelope') return unsealEnvelope(payload, deps.keys, signal);
  throw new SealedSecretInvalid('payload type must be vault or envelope');
}
