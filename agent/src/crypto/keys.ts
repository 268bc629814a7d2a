// Key files and key references for layer decryption and encryption: PEM,
// DER or JWK private keys (decryption, from config, --decryption-key or the
// KBS) and public keys or certificates (encryption recipients).

import { createPrivateKey, createPublicKey, X509Certificate, type KeyObject } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { parseResourceUri, type KeySource } from '../resource.ts';
import { BadKey } from './errors.ts';

/** The keys a pull may use to open encrypted layers. */
export interface DecryptionKeys {
  /**
   * Private keys for keys.jwe recipients: paths of PEM, DER or JWK files, or
   * kbs:/// URIs of such files held by the KBS (fetched through keySource).
   */
  readonly privateKeys: readonly string[];
  /** Resolves kbs:/// URIs: the KEKs of CoCo annotation packets and KBS-held private keys. */
  readonly keySource?: KeySource;
}

/** The configured keys (image.decryption_keys) plus those given on the command line (--decryption-key, repeatable). */
export function decryptionKeys(opts: { config?: readonly string[]; flags?: readonly string[]; keySource?: KeySource }): DecryptionKeys {
  const privateKeys = [...new Set([...(opts.config ?? []), ...(opts.flags ?? [])])].filter((s) => s !== '');
  return Object.freeze({ privateKeys: Object.freeze(privateKeys), keySource: opts.keySource });
}

export interface NamedKey {
  /** The file path or kbs:/// URI, for messages. */
  readonly name: string;
  readonly key: KeyObject;
}

const ALLOWED_TYPES = new Set(['rsa', 'ec']);

function checkType(key: KeyObject, name: string): KeyObject {
  if (!key.asymmetricKeyType || !ALLOWED_TYPES.has(key.asymmetricKeyType)) {
    throw new BadKey(`key ${name}: ${key.asymmetricKeyType ?? 'unknown'} keys are not supported (RSA or EC only)`);
  }
  return key;
}

/** Parse a private key file's bytes; the bytes are zeroed afterwards. */
export function parsePrivateKey(bytes: Buffer, name: string): KeyObject {
  try {
    const text = bytes.toString('utf8').trim();
    if (text.startsWith('{')) {
      const jwk = JSON.parse(text) as Record<string, unknown>;
      if (typeof jwk.d !== 'string') throw new BadKey(`key ${name}: the JWK has no private part`);
      return checkType(createPrivateKey({ key: jwk, format: 'jwk' }), name);
    }
    if (text.includes('-----BEGIN')) {
      if (/-----BEGIN ENCRYPTED PRIVATE KEY-----|Proc-Type: 4,ENCRYPTED/.test(text)) {
        throw new BadKey(`key ${name}: passphrase-protected private keys are not supported`);
      }
      return checkType(createPrivateKey({ key: text, format: 'pem' }), name);
    }
    for (const type of ['pkcs8', 'pkcs1', 'sec1'] as const) {
      try {
        return checkType(createPrivateKey({ key: bytes, format: 'der', type }), name);
      } catch (err) {
        if (err instanceof BadKey) throw err;
      }
    }
    throw new BadKey(`key ${name}: not a PEM, DER or JWK private key`);
  } catch (err) {
    if (err instanceof BadKey) throw err;
    throw new BadKey(`key ${name}: not a usable PEM, DER or JWK private key`);
  } finally {
    bytes.fill(0);
  }
}

export interface PublicRecipientKey {
  readonly key: KeyObject;
  /** A JWK's "alg", which selects the JWE key algorithm. */
  readonly alg?: string;
}

/** Parse a public key, certificate or public JWK (an encryption recipient). */
export function parsePublicKey(bytes: Buffer, name: string): PublicRecipientKey {
  const text = bytes.toString('utf8').trim();
  try {
    if (text.startsWith('{')) {
      const jwk = JSON.parse(text) as Record<string, unknown>;
      if (jwk.d !== undefined) throw new BadKey(`key ${name}: expected a public key, got a private JWK`);
      return { key: checkType(createPublicKey({ key: jwk, format: 'jwk' }), name), alg: typeof jwk.alg === 'string' ? jwk.alg : undefined };
    }
    if (text.includes('-----BEGIN CERTIFICATE-----')) return { key: checkType(new X509Certificate(text).publicKey, name) };
    if (text.includes('-----BEGIN')) {
      if (text.includes('PRIVATE KEY')) throw new BadKey(`key ${name}: expected a public key, got a private key`);
      return { key: checkType(createPublicKey({ key: text, format: 'pem' }), name) };
    }
    for (const type of ['spki', 'pkcs1'] as const) {
      try {
        return { key: checkType(createPublicKey({ key: bytes, format: 'der', type }), name) };
      } catch (err) {
        if (err instanceof BadKey) throw err;
      }
    }
    throw new BadKey(`key ${name}: not a PEM, DER or JWK public key`);
  } catch (err) {
    if (err instanceof BadKey) throw err;
    throw new BadKey(`key ${name}: not a usable PEM, DER or JWK public key`);
  }
}

/** Read a key file; errors name the path and the reason, never the content. */
export async function readKeyFile(path: string): Promise<Buffer> {
  try {
    return await readFile(path);
  } catch (err) {
    throw new BadKey(`key file ${path}: ${(err as NodeJS.ErrnoException).code ?? 'unreadable'}`);
  }
}

/**
 * Load every private key of the set: files from disk, kbs:/// URIs through
 * the key source. With `skip`, a key that cannot be loaded is reported to it
 * and left out (when skip returns true) instead of failing the whole set.
 */
export async function loadPrivateKeys(keys: DecryptionKeys, signal?: AbortSignal, skip?: (err: unknown) => boolean): Promise<NamedKey[]> {
  const out: NamedKey[] = [];
  for (const name of keys.privateKeys) {
    try {
      let bytes: Buffer;
      if (name.startsWith('kbs:') || name.startsWith('kbs+')) {
        if (!keys.keySource) throw new BadKey(`key ${name}: no key source is configured to fetch it`);
        bytes = await keys.keySource.get(parseResourceUri(name), signal);
      } else bytes = await readKeyFile(name);
      out.push({ name, key: parsePrivateKey(bytes, name) });
    } catch (err) {
      if (!skip?.(err)) throw err;
    }
  }
  return out;
}
