// Public keys named by a policy: read from a file, a kbs:/// resource
// through the KeySource, or the policy text (PEM or armored text as written,
// or base64 of it, which is what containers/image writes for Go []byte).
// Raw buffers are zeroed once parsed; parsed keys are kept by the caller.

import { createPublicKey, type KeyObject } from 'node:crypto';
import { open } from 'node:fs/promises';
import type { PublicKey } from 'openpgp';
import { parseResourceUri, type KeySource } from '../resource.ts';
import { PolicyInvalid } from './errors.ts';
import type { KeySpec } from './policy.ts';

const MAX_KEY_FILE = 1024 * 1024;

export interface KeyContext {
  readonly keySource?: KeySource;
  readonly signal?: AbortSignal;
}

const where = (spec: KeySpec): string => (spec.kind === 'path' ? spec.path : 'keyData');

async function readCappedFile(path: string): Promise<Buffer> {
  let fh;
  try {
    fh = await open(path, 'r');
  } catch (err) {
    throw new PolicyInvalid(`key ${path}: ${(err as NodeJS.ErrnoException).code ?? 'unreadable'}`);
  }
  try {
    const { size } = await fh.stat();
    if (size > MAX_KEY_FILE) throw new PolicyInvalid(`key ${path}: larger than ${MAX_KEY_FILE} bytes`);
    return await fh.readFile();
  } finally {
    await fh.close();
  }
}

/** The bytes of one key spec. The caller zeroes them. */
export async function keyBytes(spec: KeySpec, ctx: KeyContext): Promise<Buffer> {
  if (spec.kind === 'data') return Buffer.from(spec.data, 'utf8');
  if (!spec.path.startsWith('/')) {
    if (!ctx.keySource) throw new PolicyInvalid(`key ${spec.path}: no key source (KBS or offline store) is configured`);
    return ctx.keySource.get(parseResourceUri(spec.path), ctx.signal);
  }
  return readCappedFile(spec.path);
}

const BASE64 = /^[A-Za-z0-9+/]+={0,2}$/;

/** Inline key data may be the text itself or base64 of it. */
function unwrapInline(spec: KeySpec, bytes: Buffer, armourMarker: string): Buffer {
  if (spec.kind !== 'data' || bytes.includes(armourMarker)) return bytes;
  const compact = bytes.toString('latin1').replace(/\s+/g, '');
  if (!BASE64.test(compact)) throw new PolicyInvalid('keyData: neither PEM/armored text nor base64');
  return Buffer.from(compact, 'base64');
}

async function forEachSpec<T>(specs: readonly KeySpec[], ctx: KeyContext, parse: (spec: KeySpec, bytes: Buffer) => Promise<T[]> | T[]): Promise<T[]> {
  const out: T[] = [];
  for (const spec of specs) {
    const raw = await keyBytes(spec, ctx);
    try {
      out.push(...(await parse(spec, raw)));
    } finally {
      raw.fill(0);
    }
  }
  return out;
}

const PEM_BLOCK = /-----BEGIN ([A-Z0-9 ]+)-----\r?\n([\s\S]*?)-----END \1-----/g;
const EC_CURVES = new Set(['prime256v1', 'secp384r1', 'secp521r1']);

function checkSigstoreKey(key: KeyObject, name: string): KeyObject {
  const type = key.asymmetricKeyType;
  const details = key.asymmetricKeyDetails ?? {};
  if (type === 'ec' && EC_CURVES.has(details.namedCurve ?? '')) return key;
  if (type === 'rsa' && (details.modulusLength ?? 0) >= 2048) return key;
  if (type === 'ed25519') return key;
  throw new PolicyInvalid(`key ${name}: unsupported sigstore key (${type}${details.namedCurve ? ` ${details.namedCurve}` : ''}${details.modulusLength ? ` ${details.modulusLength} bits` : ''}); use ECDSA P-256/384/521, RSA ≥ 2048 or Ed25519`);
}

/** sigstoreSigned keys: every "PUBLIC KEY" PEM block of every spec. */
export function loadSigstoreKeys(specs: readonly KeySpec[], ctx: KeyContext): Promise<KeyObject[]> {
  return forEachSpec(specs, ctx, (spec, raw) => {
    const bytes = unwrapInline(spec, raw, '-----BEGIN');
    const text = bytes.toString('utf8');
    if (bytes !== raw) bytes.fill(0);
    const keys: KeyObject[] = [];
    for (const m of text.matchAll(PEM_BLOCK)) {
      if (m[1] !== 'PUBLIC KEY') throw new PolicyInvalid(`key ${where(spec)}: a ${m[1]} block where a PUBLIC KEY was expected`);
      let key: KeyObject;
      try {
        key = createPublicKey({ key: m[0], format: 'pem' });
      } catch {
        throw new PolicyInvalid(`key ${where(spec)}: not a valid PEM public key`);
      }
      keys.push(checkSigstoreKey(key, where(spec)));
    }
    if (keys.length === 0) throw new PolicyInvalid(`key ${where(spec)}: no PEM "PUBLIC KEY" block`);
    return keys;
  });
}

/** signedBy GPGKeys: every key of every keyring, armored or binary. */
export function loadGpgKeys(specs: readonly KeySpec[], ctx: KeyContext): Promise<PublicKey[]> {
  return forEachSpec(specs, ctx, async (spec, raw) => {
    const bytes = unwrapInline(spec, raw, '-----BEGIN PGP');
    try {
      const armored = bytes.subarray(0, 64).toString('latin1').trimStart().startsWith('-----BEGIN PGP');
      let keys;
      try {
        // openpgp keeps views into a binary input, so it gets its own copy: ours is zeroed below.
        // openpgp is large: loaded on the first GPG key, not at agent start.
        const { readKeys } = await import('openpgp');
        keys = armored ? await readKeys({ armoredKeys: bytes.toString('utf8') }) : await readKeys({ binaryKeys: Uint8Array.from(bytes) });
      } catch {
        throw new PolicyInvalid(`key ${where(spec)}: not an OpenPGP keyring`);
      }
      if (keys.some((k) => k.isPrivate())) throw new PolicyInvalid(`key ${where(spec)}: contains a private key; give the public key only`);
      return keys as PublicKey[];
    } finally {
      if (bytes !== raw) bytes.fill(0);
    }
  });
}
