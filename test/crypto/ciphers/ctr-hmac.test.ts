import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, createHmac, randomBytes, randomInt } from 'node:crypto';
import { ctr } from '@noble/ciphers/aes.js';
import { ctrHmacDecryptStream, ctrHmacEncryptStream } from '../../../agent/src/crypto/ciphers/ctr-hmac.ts';
import { LayerAuthenticationFailed, PlainDigestMismatch } from '../../../agent/src/crypto/errors.ts';
import { run, runOk } from '../stream-helpers.ts';

const digestOf = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

test('differential: node:crypto stream against @noble/ciphers CTR (128-bit big-endian counter), both directions', async () => {
  for (let i = 0; i < 10; i++) {
    const key = randomBytes(32);
    // Nonces near the counter wrap check that the whole 16-byte block increments.
    const nonce = i < 3 ? Buffer.concat([randomBytes(8), Buffer.alloc(8, 0xff)]) : randomBytes(16);
    const plain = randomBytes(i === 0 ? 0 : randomInt(300_000));
    const enc = ctrHmacEncryptStream(key, nonce);
    const ours = await runOk(enc.stream, plain, 1 + randomInt(70_000));
    assert.ok(Buffer.from(ctr(key, nonce).encrypt(plain)).equals(ours), `ciphertext ${plain.length}`);
    assert.ok(enc.mac().equals(createHmac('sha256', key).update(ours).digest()), 'HMAC over the ciphertext with the same key');
    const theirs = Buffer.from(ctr(key, nonce).encrypt(plain));
    const out = await runOk(ctrHmacDecryptStream({ key, nonce, mac: createHmac('sha256', key).update(theirs).digest(), plainDigest: digestOf(plain), layer: 'l' }), theirs, 1 + randomInt(70_000));
    assert.ok(out.equals(plain));
  }
});

test('a tampered layer errors at EOF, before end, after releasing unauthenticated plaintext', async () => {
  const key = randomBytes(32);
  const nonce = randomBytes(16);
  const plain = randomBytes(200_000);
  const enc = ctrHmacEncryptStream(key, nonce);
  const ct = await runOk(enc.stream, plain);
  const bad = Buffer.from(ct);
  bad[1000]! ^= 4;
  const r = await run(ctrHmacDecryptStream({ key, nonce, mac: enc.mac(), layer: 'sha256:abc' }), bad, 16384);
  assert.ok(r.error instanceof LayerAuthenticationFailed);
  assert.match((r.error as Error).message, /sha256:abc/);
  assert.equal(r.ended, false);
  // CTR is malleable and the verdict comes at EOF: the consumer must roll back what it got.
  assert.equal(r.out.length, plain.length);
  assert.equal(r.out[1000], plain[1000]! ^ 4);
  for (const [name, input] of [
    ['truncated', ct.subarray(0, ct.length - 1)],
    ['extended', Buffer.concat([ct, Buffer.from([0])])],
  ] as const) {
    assert.ok((await run(ctrHmacDecryptStream({ key, nonce, mac: enc.mac(), layer: 'l' }), input)).error instanceof LayerAuthenticationFailed, name);
  }
  const wrongKey = await run(ctrHmacDecryptStream({ key: randomBytes(32), nonce, mac: enc.mac(), layer: 'l' }), ct);
  assert.ok(wrongKey.error instanceof LayerAuthenticationFailed);
});

test('the private digest is checked at EOF too', async () => {
  const key = randomBytes(32);
  const nonce = randomBytes(16);
  const plain = randomBytes(5000);
  const enc = ctrHmacEncryptStream(key, nonce);
  const ct = await runOk(enc.stream, plain);
  const r = await run(ctrHmacDecryptStream({ key, nonce, mac: enc.mac(), plainDigest: digestOf(randomBytes(1)), layer: 'l' }), ct);
  assert.ok(r.error instanceof PlainDigestMismatch);
  assert.equal(r.ended, false);
});
