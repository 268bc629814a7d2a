// Real peers: skopeo 1.9.3 (containers/ocicrypt) encrypts, we decrypt; we
// encrypt, skopeo decrypts. Images are OCI layouts on disk made by umoci.

import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { decryptionKeys } from '../../agent/src/crypto/index.ts';
import { encryptImage } from '../../agent/src/crypto/encrypt-image.ts';
import { CIPHER_CTR_HMAC } from '../../agent/src/crypto/options.ts';
import { keyPair, tempDir } from '../fixtures/keys.ts';
import { plainImage, skopeo } from '../fixtures/oci-image.ts';
import { assertDecryptsToPlain, manifestOf } from './image-helpers.ts';

const dir = tempDir('interop');
const plain = join(dir, 'plain');
const TAG = 'v1';
const rsa = keyPair(dir, 'rsa', 'rsa');
const rsa4096 = keyPair(dir, 'rsa4096', 'rsa4096');
const p256 = keyPair(dir, 'p256', 'p256');
const p384 = keyPair(dir, 'p384', 'p384');

before(async () => {
  await plainImage(plain, TAG, [
    [{ path: 'etc/hello', content: Buffer.from('hello\n') }],
    [{ path: 'data/random.bin', content: randomBytes(3 << 20) }, { path: 'data/small', content: randomBytes(10) }],
    [{ path: 'empty', content: Buffer.alloc(0) }],
  ]);
});

test('layers skopeo encrypts for RSA and EC public keys decrypt with the matching private key', async () => {
  for (const [name, pair] of [['rsa', rsa], ['rsa4096', rsa4096], ['p256', p256], ['p384', p384]] as const) {
    const enc = join(dir, `skopeo-${name}`);
    await skopeo('copy', '--encryption-key', `jwe:${pair.publicPem}`, `oci:${plain}:${TAG}`, `oci:${enc}:${TAG}`);
    const n = await assertDecryptsToPlain({ dir: enc, tag: TAG }, { dir: plain, tag: TAG }, decryptionKeys({ flags: [pair.privatePem] }));
    assert.equal(n, 3, name);
  }
});

test('several skopeo recipients (general JWE); only the chosen layers encrypted; a wrong key is refused', async () => {
  const enc = join(dir, 'skopeo-multi');
  await skopeo('copy', '--encryption-key', `jwe:${rsa.publicPem}`, '--encryption-key', `jwe:${p256.publicPem}`, '--encrypt-layer', '-1', '--encrypt-layer', '1', `oci:${plain}:${TAG}`, `oci:${enc}:${TAG}`);
  const m = await manifestOf(enc, TAG);
  assert.deepEqual(m.layers.map((l) => l.mediaType.endsWith('+encrypted')), [false, true, true]);
  assert.equal(await assertDecryptsToPlain({ dir: enc, tag: TAG }, { dir: plain, tag: TAG }, decryptionKeys({ flags: [p256.privatePem] })), 2);
  assert.equal(await assertDecryptsToPlain({ dir: enc, tag: TAG }, { dir: plain, tag: TAG }, decryptionKeys({ flags: [rsa.privatePem] })), 2);
  await assert.rejects(assertDecryptsToPlain({ dir: enc, tag: TAG }, { dir: plain, tag: TAG }, decryptionKeys({ flags: [p384.privatePem] })), /no usable key for encrypted layer/);
});

test('images we encrypt (ctr-hmac, JWE for RSA and EC) decrypt with skopeo copy --decryption-key', async () => {
  const enc = join(dir, 'ours');
  await encryptImage({
    input: { dir: plain, tag: TAG },
    output: { dir: enc, tag: TAG },
    recipients: { jwe: [{ key: rsa.publicKey }, { key: p256.publicKey }], kbs: [] },
    cipher: CIPHER_CTR_HMAC,
  });
  for (const [name, pair] of [['rsa', rsa], ['p256', p256]] as const) {
    const dec = join(dir, `skopeo-dec-${name}`);
    await skopeo('copy', '--decryption-key', pair.privatePem, `oci:${enc}:${TAG}`, `oci:${dec}:${TAG}`);
    const [d, p] = [await manifestOf(dec, TAG), await manifestOf(plain, TAG)];
    assert.deepEqual(d.layers.map((l) => [l.mediaType, l.digest, l.size]), p.layers.map((l) => [l.mediaType, l.digest, l.size]), `skopeo decrypted with ${name}`);
    assert.equal(d.config.digest, p.config.digest);
  }
  await assert.rejects(skopeo('copy', '--decryption-key', p384.privatePem, `oci:${enc}:${TAG}`, `oci:${join(dir, 'nope')}:${TAG}`));
});
