import { test } from 'node:test';
import assert from 'node:assert/strict';
import { aeskw, gcm } from '@noble/ciphers/aes.js';
import { constants, createPublicKey, diffieHellman, createPrivateKey, publicEncrypt, webcrypto } from 'node:crypto';
import { decryptResponse, generateTeeKey, type TeeKey } from '../../agent/src/attestation/tee-key.ts';
import { concatKdf } from '../fixtures/concat-kdf.ts';

// RFC 7518 Appendix C: ECDH-ES key agreement between Alice (ephemeral) and Bob (static).
const alice = { kty: 'EC', crv: 'P-256', x: 'gI0GAILBdu7T53akrFmMyGcsF3n5dO7MmwNBHKW5SV0', y: 'SLW_xSffzlPWrHEVI30DHM_4egVwt3NQqeUD7nMFpps', d: '0_NxaRPUMQoAJt50Gz8YiTr8gRTwyEaCumd-MToTmIo' };
const bob = { kty: 'EC', crv: 'P-256', x: 'weNJy2HscCSM6AEDTDg04biOvhFhyyWvOHQfeF_PxMQ', y: 'e8lnCO-AlStT-NJVX-crhB7QRYhiix03illJOVAOyck', d: 'VEmDZpDXXK8p8N0Cndsxs924q6nS1RXFASRl6BfUqdw' };
const pub = ({ d: _d, ...rest }: typeof alice) => rest;
const z = diffieHellman({ privateKey: createPrivateKey({ key: alice, format: 'jwk' }), publicKey: createPublicKey({ key: pub(bob), format: 'jwk' }) });

test('Concat KDF reproduces RFC 7518 Appendix C', () => {
  assert.equal(z.toString('base64url'), 'nlbZHYFxNdNyg0KDv4QmnPsxbqPagGpI9tqneYz-kMQ');
  const k = concatKdf(z, 'A128GCM', 128, Buffer.from('Alice'), Buffer.from('Bob'));
  assert.equal(k.toString('base64url'), 'VqqN6vgjbSBcIijNcacQGg');
});

async function teeKeyFrom(jwk: typeof bob): Promise<TeeKey> {
  const privateKey = await webcrypto.subtle.importKey('jwk', jwk, { name: 'ECDH', namedCurve: 'P-256' }, false, ['deriveBits']);
  return { publicJwk: { kty: 'EC', crv: 'P-256', alg: 'ECDH-ES+A256KW', x: jwk.x, y: jwk.y }, privateKey };
}

test('ECDH-ES+A256KW: a JWE built by hand the way Trustee builds it decrypts to the plaintext', async () => {
  // Trustee: Concat KDF(SHA-256, AlgorithmID "ECDH-ES+A256KW", empty apu/apv, 256 bits), AES-KW the CEK, A256GCM with AAD = protected.
  const kek = concatKdf(z, 'ECDH-ES+A256KW', 256);
  // Fixed vector (also computed with Python hashlib from the same Z).
  assert.equal(kek.toString('hex'), '89ab838633757805bd678cb164f2427776824e8f784152f23747096449921f46');
  const cek = Buffer.alloc(32, 0x11);
  const iv = Buffer.alloc(12, 0x22);
  const encryptedKey = Buffer.from(aeskw(kek).encrypt(cek));
  assert.equal(encryptedKey.length, 40);
  const protectedB64 = Buffer.from(JSON.stringify({ alg: 'ECDH-ES+A256KW', enc: 'A256GCM', epk: { crv: 'P-256', kty: 'EC', x: alice.x, y: alice.y } })).toString('base64url');
  const sealed = Buffer.from(gcm(cek, iv, Buffer.from(protectedB64, 'ascii')).encrypt(Buffer.from('the resource')));
  const jwe = {
    protected: protectedB64,
    encrypted_key: encryptedKey.toString('base64url'),
    iv: iv.toString('base64url'),
    ciphertext: sealed.subarray(0, -16).toString('base64url'),
    tag: sealed.subarray(-16).toString('base64url'),
  };
  const key = await teeKeyFrom(bob);
  assert.equal((await decryptResponse(key, jwe)).toString(), 'the resource');
  // The protected header is the AAD: any change to it fails.
  const other = Buffer.from(JSON.stringify({ alg: 'ECDH-ES+A256KW', enc: 'A256GCM', epk: { kty: 'EC', crv: 'P-256', x: alice.x, y: alice.y } })).toString('base64url');
  await assert.rejects(decryptResponse(key, { ...jwe, protected: other }));
  // A downgraded algorithm is refused before any decryption.
  const dir = Buffer.from(JSON.stringify({ alg: 'dir', enc: 'A256GCM' })).toString('base64url');
  await assert.rejects(decryptResponse(key, { ...jwe, protected: dir }));
});

test('generated keys export only the members Trustee re-serialises, and the private half is not extractable', async () => {
  const ec = await generateTeeKey('ECDH-ES+A256KW-P256');
  assert.deepEqual(Object.keys(ec.publicJwk).sort(), ['alg', 'crv', 'kty', 'x', 'y']);
  assert.equal(ec.publicJwk.alg, 'ECDH-ES+A256KW');
  await assert.rejects(webcrypto.subtle.exportKey('jwk', ec.privateKey));
  const p521 = await generateTeeKey('ECDH-ES+A256KW-P521');
  assert.equal(p521.publicJwk.kty === 'EC' && p521.publicJwk.crv, 'P-521');
  const rsa = await generateTeeKey('RSA-OAEP-256');
  assert.deepEqual(Object.keys(rsa.publicJwk).sort(), ['alg', 'e', 'kty', 'n']);
  assert.equal(rsa.publicJwk.kty === 'RSA' && Buffer.from(rsa.publicJwk.n, 'base64url').length, 256);
  await assert.rejects(webcrypto.subtle.exportKey('pkcs8', rsa.privateKey));
});

test('RSA-OAEP-256: OAEP with SHA-256 decrypts; plain RSA-OAEP (SHA-1) is refused', async () => {
  const key = await generateTeeKey('RSA-OAEP-256');
  if (key.publicJwk.kty !== 'RSA') throw new Error('unreachable');
  const rsaPub = createPublicKey({ key: { kty: 'RSA', n: key.publicJwk.n, e: key.publicJwk.e }, format: 'jwk' });
  const cek = Buffer.alloc(32, 0x33);
  const iv = Buffer.alloc(12, 0x44);
  const build = (alg: string, oaepHash: string) => {
    const protectedB64 = Buffer.from(JSON.stringify({ alg, enc: 'A256GCM' })).toString('base64url');
    const sealed = Buffer.from(gcm(cek, iv, Buffer.from(protectedB64)).encrypt(Buffer.from('rsa secret')));
    return {
      protected: protectedB64,
      encrypted_key: publicEncrypt({ key: rsaPub, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash }, cek).toString('base64url'),
      iv: iv.toString('base64url'),
      ciphertext: sealed.subarray(0, -16).toString('base64url'),
      tag: sealed.subarray(-16).toString('base64url'),
    };
  };
  assert.equal((await decryptResponse(key, build('RSA-OAEP-256', 'sha256'))).toString(), 'rsa secret');
  await assert.rejects(decryptResponse(key, build('RSA-OAEP', 'sha1')));
});
