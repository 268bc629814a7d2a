// The ephemeral TEE key of one RCAR session: the KBS wraps every resource
// to it. The private half is a non-extractable WebCrypto key, so it cannot
// leave this process; the public half is sent with exactly the JWK members
// Trustee's TeePubKey re-serialises (extra members would break the hash).

import { flattenedDecrypt, type FlattenedJWE } from 'jose';
import { webcrypto } from 'node:crypto';

export type TeeKeyAlgorithm = 'ECDH-ES+A256KW-P256' | 'ECDH-ES+A256KW-P521' | 'RSA-OAEP-256';

export type TeePubKey =
  | { readonly kty: 'EC'; readonly crv: 'P-256' | 'P-521'; readonly alg: 'ECDH-ES+A256KW'; readonly x: string; readonly y: string }
  | { readonly kty: 'RSA'; readonly alg: 'RSA-OAEP-256'; readonly n: string; readonly e: string };

export interface TeeKey {
  readonly publicJwk: TeePubKey;
  readonly privateKey: webcrypto.CryptoKey;
}

export async function generateTeeKey(algorithm: TeeKeyAlgorithm): Promise<TeeKey> {
  const subtle = webcrypto.subtle;
  if (algorithm === 'RSA-OAEP-256') {
    const pair = (await subtle.generateKey(
      { name: 'RSA-OAEP', modulusLength: 2048, publicExponent: new Uint8Array([1, 0, 1]), hash: 'SHA-256' },
      false,
      ['encrypt', 'decrypt', 'wrapKey', 'unwrapKey'],
    )) as webcrypto.CryptoKeyPair;
    const jwk = await subtle.exportKey('jwk', pair.publicKey);
    return { publicJwk: { kty: 'RSA', alg: 'RSA-OAEP-256', n: jwk.n!, e: jwk.e! }, privateKey: pair.privateKey };
  }
  const crv = algorithm === 'ECDH-ES+A256KW-P521' ? 'P-521' : 'P-256';
  const pair = (await subtle.generateKey({ name: 'ECDH', namedCurve: crv }, false, ['deriveBits'])) as webcrypto.CryptoKeyPair;
  const jwk = await subtle.exportKey('jwk', pair.publicKey);
  return { publicJwk: { kty: 'EC', crv, alg: 'ECDH-ES+A256KW', x: jwk.x!, y: jwk.y! }, privateKey: pair.privateKey };
}

/**
 * Decrypt a KBS resource response (flattened JWE, A256GCM, the protected
 * header as AAD) with the session's key. Only this key's algorithm and
 * A256GCM are accepted, so a downgraded header fails.
 */
export async function decryptResponse(key: TeeKey, jwe: FlattenedJWE): Promise<Buffer> {
  const { plaintext } = await flattenedDecrypt(jwe, key.privateKey, {
    keyManagementAlgorithms: [key.publicJwk.alg],
    contentEncryptionAlgorithms: ['A256GCM'],
  });
  return Buffer.from(plaintext.buffer, plaintext.byteOffset, plaintext.byteLength);
}
