// The keys.jwe key wrapping (ocicrypt keywrap/jwe): the private options as
// the payload of a JWE in JSON serialisation, flattened for one recipient and
// general for several, with jose.

import { FlattenedEncrypt, GeneralEncrypt, flattenedDecrypt, generalDecrypt, type FlattenedJWE, type GeneralJWE } from 'jose';
import type { KeyObject } from 'node:crypto';
import { UnsupportedEncryption } from '../errors.ts';
import { parseJsonObject } from '../fields.ts';
import type { NamedKey, PublicRecipientKey } from '../keys.ts';

/** Key management algorithms ocicrypt accepts when unwrapping. */
export const JWE_KEY_ALGORITHMS = ['RSA-OAEP', 'RSA-OAEP-256', 'ECDH-ES+A128KW', 'ECDH-ES+A192KW', 'ECDH-ES+A256KW'];
export const JWE_CONTENT_ALGORITHMS = ['A128GCM', 'A192GCM', 'A256GCM', 'A128CBC-HS256', 'A192CBC-HS384', 'A256CBC-HS512'];

export interface JweUnwrapResult {
  /** The private options JSON; the caller zeroes it. */
  readonly payload?: Buffer;
  /** Why no key opened it (safe to show). */
  readonly reason?: string;
}

/** Try each private key on one keys.jwe entry. */
export async function unwrapJwe(entry: Buffer, keys: readonly NamedKey[]): Promise<JweUnwrapResult> {
  const jwe = parseJsonObject(entry) as FlattenedJWE | GeneralJWE | undefined;
  if (!jwe) return { reason: 'not a JWE in JSON serialisation' };
  const options = { keyManagementAlgorithms: JWE_KEY_ALGORITHMS, contentEncryptionAlgorithms: JWE_CONTENT_ALGORITHMS };
  for (const { key } of keys) {
    try {
      const { plaintext } =
        'recipients' in jwe && Array.isArray(jwe.recipients)
          ? await generalDecrypt(jwe as GeneralJWE, key, options)
          : await flattenedDecrypt(jwe as FlattenedJWE, key, options);
      return { payload: Buffer.from(plaintext.buffer, plaintext.byteOffset, plaintext.byteLength) };
    } catch {
      // Not this key (or an algorithm outside the allowed lists); try the next.
    }
  }
  return { reason: keys.length ? `none of the ${keys.length} private key(s) opens it` : 'no private keys are configured' };
}

function keyAlgorithm(recipient: PublicRecipientKey): string {
  if (recipient.alg !== undefined) {
    if (!JWE_KEY_ALGORITHMS.includes(recipient.alg)) throw new UnsupportedEncryption(`JWE key algorithm ${recipient.alg} is not supported`);
    return recipient.alg;
  }
  // ocicrypt's defaults: RSA-OAEP (SHA-1) for RSA keys, ECDH-ES+A256KW for EC keys.
  return (recipient.key as KeyObject).asymmetricKeyType === 'rsa' ? 'RSA-OAEP' : 'ECDH-ES+A256KW';
}

/** Wrap the private options for every recipient in one JWE, as ocicrypt does (A256GCM content). */
export async function wrapJwe(payload: Buffer, recipients: readonly PublicRecipientKey[]): Promise<Buffer> {
  if (recipients.length === 0) throw new RangeError('wrapJwe: no recipients');
  if (recipients.length === 1) {
    const only = recipients[0]!;
    const jwe = await new FlattenedEncrypt(payload).setProtectedHeader({ alg: keyAlgorithm(only), enc: 'A256GCM' }).encrypt(only.key);
    return Buffer.from(JSON.stringify(jwe));
  }
  const enc = new GeneralEncrypt(payload).setProtectedHeader({ enc: 'A256GCM' });
  for (const r of recipients) enc.addRecipient(r.key).setUnprotectedHeader({ alg: keyAlgorithm(r) });
  return Buffer.from(JSON.stringify(await enc.encrypt()));
}
