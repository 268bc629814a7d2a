// AES_256_CTR_HMAC_SHA256 as ocicrypt defines it (blockcipher_aes_ctr.go):
// AES-256-CTR with the 16-byte nonce as the full initial counter block, and
// HMAC-SHA256 over the ciphertext with the same 32-byte key. The MAC is known
// only at EOF, so plaintext before it is unauthenticated: the stream errors
// in flush, before 'end', and the consumer must discard what it unpacked.

import { createCipheriv, createDecipheriv, createHmac, timingSafeEqual } from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';
import { LayerAuthenticationFailed } from '../errors.ts';
import { DigestCheck } from './digest-check.ts';

export const CTR_KEY_BYTES = 32;
export const CTR_NONCE_BYTES = 16;

export interface CtrHmacDecryptOptions {
  readonly key: Buffer;
  readonly nonce: Buffer;
  /** The expected HMAC from the public options. */
  readonly mac: Buffer;
  /** When set, the plaintext must hash to this digest (ocicrypt's private `digest`). */
  readonly plainDigest?: string;
  /** For error messages. */
  readonly layer: string;
}

export function ctrHmacDecryptStream(opts: CtrHmacDecryptOptions): Transform {
  const decipher = createDecipheriv('aes-256-ctr', opts.key, opts.nonce);
  const hmac = createHmac('sha256', opts.key);
  const digest = new DigestCheck(opts.plainDigest);
  const expected = Buffer.from(opts.mac);
  return new Transform({
    transform(chunk: Buffer, _enc, done: TransformCallback) {
      hmac.update(chunk);
      const out = decipher.update(chunk);
      digest.update(out);
      done(null, out);
    },
    flush(done: TransformCallback) {
      decipher.final();
      const mac = hmac.digest();
      if (mac.length !== expected.length || !timingSafeEqual(mac, expected)) {
        done(new LayerAuthenticationFailed(`layer ${opts.layer}: HMAC of the ciphertext does not match; the layer was tampered with or the key is wrong`));
        return;
      }
      done(digest.check(opts.layer) ?? null);
    },
  });
}

export interface CtrHmacEncryptor {
  readonly stream: Transform;
  /** The HMAC of the ciphertext; valid once the stream has ended. */
  mac(): Buffer;
}

export function ctrHmacEncryptStream(key: Buffer, nonce: Buffer): CtrHmacEncryptor {
  const cipher = createCipheriv('aes-256-ctr', key, nonce);
  const hmac = createHmac('sha256', key);
  let mac: Buffer | undefined;
  const stream = new Transform({
    transform(chunk: Buffer, _enc, done: TransformCallback) {
      const out = cipher.update(chunk);
      hmac.update(out);
      done(null, out);
    },
    flush(done: TransformCallback) {
      cipher.final();
      mac = hmac.digest();
      done();
    },
  });
  return {
    stream,
    mac() {
      if (!mac) throw new Error('ctr-hmac: mac() before the stream ended');
      return mac;
    },
  };
}
