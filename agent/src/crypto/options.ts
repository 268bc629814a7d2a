// ocicrypt's layer block cipher options (blockcipher/blockcipher.go): the
// public options travel in enc.pubopts, the private ones are what every key
// wrapper wraps. Byte fields are standard base64 in JSON.

import { decodeJsonBytes, decodeStdBase64, parseJsonObject } from './fields.ts';
import { BadEncryptionMetadata } from './errors.ts';

export const CIPHER_CTR_HMAC = 'AES_256_CTR_HMAC_SHA256';
export const CIPHER_GCM_STREAM = 'AES_256_GCM_STREAM';
export type CipherName = typeof CIPHER_CTR_HMAC | typeof CIPHER_GCM_STREAM;

export interface PublicOptions {
  readonly cipher: string;
  /** ctr-hmac: the HMAC-SHA256 of the ciphertext. */
  readonly hmac?: Buffer;
}

export interface PrivateOptions {
  /** The layer key. The holder zeroes it once the cipher is set up. */
  readonly symkey: Buffer;
  /** Digest of the plaintext (compressed) layer blob, when the encrypter recorded one. */
  readonly digest?: string;
  /** ctr-hmac: the 16-byte initial counter block. */
  readonly nonce?: Buffer;
}

const DIGEST = /^(sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128})$/;

const object = (value: unknown): Record<string, unknown> | undefined =>
  typeof value === 'object' && value !== null && !Array.isArray(value) ? (value as Record<string, unknown>) : undefined;

export function parsePublicOptions(pubopts: string | undefined, layer: string): PublicOptions {
  const bad = (why: string) => new BadEncryptionMetadata(`layer ${layer}: org.opencontainers.image.enc.pubopts ${why}`);
  if (pubopts === undefined) throw bad('is missing, so the cipher is unknown');
  const json = decodeStdBase64(pubopts);
  if (!json) throw bad('is not standard base64');
  const doc = parseJsonObject(json);
  if (!doc) throw bad('is not a JSON object');
  if (typeof doc.cipher !== 'string' || doc.cipher === '') throw bad('names no cipher');
  let hmac: Buffer | undefined;
  if (doc.hmac !== undefined && doc.hmac !== null && doc.hmac !== '') {
    hmac = decodeJsonBytes(doc.hmac);
    if (!hmac) throw bad('has a malformed hmac');
  }
  return { cipher: doc.cipher, hmac };
}

/** Parse the unwrapped private options. The input buffer is zeroed: it holds the key. */
export function parsePrivateOptions(json: Buffer, layer: string): PrivateOptions {
  const bad = (why: string) => new BadEncryptionMetadata(`layer ${layer}: the unwrapped private options ${why}`);
  const doc = parseJsonObject(json);
  json.fill(0);
  if (!doc) throw bad('are not a JSON object');
  const symkey = decodeJsonBytes(doc.symkey);
  if (!symkey || symkey.length !== 32) {
    symkey?.fill(0);
    throw bad('have no 32-byte symkey');
  }
  const digest = doc.digest === undefined || doc.digest === '' ? undefined : doc.digest;
  if (digest !== undefined && (typeof digest !== 'string' || !DIGEST.test(digest))) {
    symkey.fill(0);
    throw bad('have a malformed digest');
  }
  const cipherOptions = object(doc.cipheroptions) ?? {};
  const nonce = cipherOptions.nonce === undefined ? undefined : decodeJsonBytes(cipherOptions.nonce);
  if (cipherOptions.nonce !== undefined && !nonce) {
    symkey.fill(0);
    throw bad('have a malformed nonce');
  }
  return { symkey, digest: digest as string | undefined, nonce };
}

export function serializePublicOptions(opts: PublicOptions): string {
  const doc: Record<string, unknown> = { cipher: opts.cipher };
  if (opts.hmac) doc.hmac = opts.hmac.toString('base64');
  doc.cipheroptions = {};
  return Buffer.from(JSON.stringify(doc)).toString('base64');
}

/** The private options JSON to wrap. The caller zeroes the result after wrapping. */
export function serializePrivateOptions(opts: PrivateOptions): Buffer {
  const cipheroptions: Record<string, string> = {};
  if (opts.nonce) cipheroptions.nonce = opts.nonce.toString('base64');
  return Buffer.from(JSON.stringify({ symkey: opts.symkey.toString('base64'), digest: opts.digest ?? '', cipheroptions }));
}
