// An independent implementation of docs/aes-256-gcm-stream.md for the
// differential tests: @noble/ciphers' pure-JS GCM, whole buffers, no streams.

import { gcm } from '@noble/ciphers/aes.js';
import { hkdfSync, randomBytes } from 'node:crypto';

const LABEL = Buffer.from('tee-agent AES_256_GCM_STREAM v1\0', 'ascii');

function keys(symkey: Uint8Array, prefix: Buffer): { key: Uint8Array; commitment: Buffer } {
  const okm = Buffer.from(hkdfSync('sha256', symkey, prefix.subarray(9, 41), Buffer.concat([LABEL, prefix]), 64));
  return { key: okm.subarray(0, 32), commitment: okm.subarray(32) };
}

function nonce(prefix: Buffer, i: number, last: boolean): Uint8Array {
  const n = Buffer.alloc(12);
  prefix.copy(n, 0, 41, 48);
  n.writeUInt32BE(i, 7);
  n[11] = last ? 1 : 0;
  return n;
}

export function referenceEncrypt(symkey: Uint8Array, plaintext: Buffer, chunkSize: number): Buffer {
  const prefix = Buffer.concat([Buffer.from('GCMS'), Buffer.from([1]), Buffer.alloc(4), randomBytes(39)]);
  prefix.writeUInt32BE(chunkSize, 5);
  const { key, commitment } = keys(symkey, prefix);
  const out: Uint8Array[] = [prefix, commitment];
  const n = Math.floor(plaintext.length / chunkSize) + 1;
  for (let i = 0; i < n; i++) {
    out.push(gcm(key, nonce(prefix, i, i === n - 1)).encrypt(plaintext.subarray(i * chunkSize, Math.min(plaintext.length, (i + 1) * chunkSize))));
  }
  return Buffer.concat(out);
}

export function referenceDecrypt(symkey: Uint8Array, blob: Buffer): Buffer {
  if (blob.length < 80 || !blob.subarray(0, 4).equals(Buffer.from('GCMS')) || blob[4] !== 1) throw new Error('bad header');
  const prefix = blob.subarray(0, 48);
  const chunkSize = prefix.readUInt32BE(5);
  const { key, commitment } = keys(symkey, Buffer.from(prefix));
  if (!commitment.equals(blob.subarray(48, 80))) throw new Error('bad commitment');
  const out: Uint8Array[] = [];
  let o = 80;
  for (let i = 0; ; i++) {
    const rest = blob.length - o;
    const last = rest < chunkSize + 16;
    if (last && rest < 16) throw new Error('truncated');
    const len = last ? rest : chunkSize + 16;
    out.push(gcm(key, nonce(Buffer.from(prefix), i, last)).decrypt(blob.subarray(o, o + len)));
    o += len;
    if (last) return Buffer.concat(out);
  }
}
