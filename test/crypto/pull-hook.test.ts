import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { OfflineKeyStore } from '../../agent/src/attestation/offline-store.ts';
import { decryptionKeys, pullDecryptor, type LayerDescriptor } from '../../agent/src/crypto/index.ts';
import { createLayerEncryptor } from '../../agent/src/crypto/encrypt-layer.ts';
import { NoKeyForLayer } from '../../agent/src/crypto/errors.ts';
import { CIPHER_CTR_HMAC } from '../../agent/src/crypto/options.ts';
import type { KeySource, ResourceUri } from '../../agent/src/resource.ts';
import { newKek, offlineKeyFile, tempDir } from '../fixtures/keys.ts';
import { runOk } from './stream-helpers.ts';

const GZ = 'application/vnd.oci.image.layer.v1.tar+gzip';
const kek = newKek();
const store = new OfflineKeyStore([offlineKeyFile(tempDir('pull-hook'), { 'default/key/image': kek })]);

/** The offline store, counting what it is asked for (as the KBS would count resource requests). */
function counting(): KeySource & { gets: number } {
  const src = {
    gets: 0,
    get(uri: ResourceUri, signal?: AbortSignal) {
      src.gets++;
      signal?.throwIfAborted();
      return store.get(uri);
    },
  };
  return src;
}

async function packetLayer(plain: Buffer) {
  const desc: LayerDescriptor = { mediaType: GZ, digest: `sha256:${createHash('sha256').update(plain).digest('hex')}`, size: plain.length };
  const enc = createLayerEncryptor(desc, { jwe: [], kbs: [{ kid: 'kbs:///default/key/image', kek }] }, CIPHER_CTR_HMAC, 4096);
  const blob = await runOk(enc.stream, plain, 10_000);
  const { mediaType, annotations } = await enc.finish();
  return { blob, descriptor: { mediaType, digest: `sha256:${createHash('sha256').update(blob).digest('hex')}`, size: blob.length, annotations } };
}

test('check() unwraps once; open() reuses the key, also for a restarted download; after dispose() it unwraps afresh', async () => {
  const plain = randomBytes(20_000);
  const { blob, descriptor } = await packetLayer(plain);
  const source = counting();
  const hook = pullDecryptor(decryptionKeys({ keySource: source }), { verifyPlainDigest: false });
  const layer = { descriptor, index: 0, image: 'example.test/app:v1' };
  const signal = new AbortController().signal;

  const key = await hook.check(layer, signal);
  assert.equal(source.gets, 1, 'check() fetched the KEK once');
  for (let i = 0; i < 2; i++) {
    const d = await key.open({ ...layer, diffId: 'sha256:' + '0'.repeat(64) }, signal);
    assert.equal(d.mediaType, GZ);
    assert.ok((await runOk(d.stream, blob, 3000)).equals(plain));
  }
  assert.equal(source.gets, 1, 'opening twice fetched nothing more');

  key.dispose();
  key.dispose(); // idempotent
  const d = await key.open(layer, signal);
  assert.ok((await runOk(d.stream, blob)).equals(plain));
  assert.equal(source.gets, 2, 'a disposed key is unwrapped again, not revived');
});

test('check() without a usable key fails with NoKeyForLayer and returns nothing to dispose', async () => {
  const { descriptor } = await packetLayer(randomBytes(100));
  const hook = pullDecryptor(decryptionKeys({}), { verifyPlainDigest: false });
  await assert.rejects(hook.check({ descriptor, index: 3, image: 'example.test/app:v1' }, new AbortController().signal), NoKeyForLayer);
});
