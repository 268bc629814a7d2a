import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { decryptionKeys } from '../../agent/src/crypto/index.ts';
import { encryptImage } from '../../agent/src/crypto/encrypt-image.ts';
import { MT_INDEX, OciLayout, parseOciReference, type Descriptor } from '../../agent/src/crypto/oci-layout.ts';
import { CIPHER_GCM_STREAM } from '../../agent/src/crypto/options.ts';
import { keyPair, tempDir } from '../fixtures/keys.ts';
import { plainImage, skopeo } from '../fixtures/oci-image.ts';
import { assertDecryptsToPlain } from './image-helpers.ts';

test('oci: references as skopeo spells them', () => {
  assert.deepEqual(parseOciReference('oci:/a/b:tag'), { dir: '/a/b', tag: 'tag' });
  assert.deepEqual(parseOciReference('oci:/a/b'), { dir: '/a/b', tag: undefined });
  assert.deepEqual(parseOciReference('oci:/a:b/c'), { dir: '/a:b/c', tag: undefined });
  assert.throws(() => parseOciReference('docker://x'), /oci:DIR/);
});

test('an image index: every platform manifest is encrypted and the index rewritten; skopeo reads the result', async () => {
  const dir = tempDir('encrypt-index');
  const plain = join(dir, 'plain');
  await plainImage(plain, 'v1', [[{ path: 'x', content: randomBytes(5000) }], [{ path: 'y', content: randomBytes(70_000) }]]);
  const layout = new OciLayout(plain);
  const manifest = await layout.resolve('v1');
  const platforms = [{ architecture: 'amd64', os: 'linux' }, { architecture: 'arm64', os: 'linux' }];
  const index = await layout.writeJson({ schemaVersion: 2, mediaType: MT_INDEX, manifests: platforms.map((platform) => ({ ...manifest, annotations: undefined, platform })) });
  await layout.tag({ mediaType: MT_INDEX, ...index }, 'multi');
  const rsa = keyPair(dir, 'rsa', 'rsa');
  const out = join(dir, 'out');
  const r = await encryptImage({ input: { dir: plain, tag: 'multi' }, output: { dir: out, tag: 'multi' }, recipients: { jwe: [{ key: rsa.publicKey }], kbs: [] }, cipher: CIPHER_GCM_STREAM });
  assert.equal(r.encryptedLayers, 4);
  const outLayout = new OciLayout(out);
  const top = await outLayout.resolve('multi');
  assert.equal(top.digest, r.digest);
  const outIndex = await outLayout.readJson<{ manifests: Descriptor[] }>(top);
  assert.deepEqual(outIndex.manifests.map((m) => m.platform), platforms);
  for (const [i, m] of outIndex.manifests.entries()) {
    await outLayout.tag(m, `p${i}`);
    assert.equal(await assertDecryptsToPlain({ dir: out, tag: `p${i}` }, { dir: plain, tag: 'v1' }, decryptionKeys({ flags: [rsa.privatePem] })), 2);
  }
  const raw = JSON.parse((await skopeo('inspect', '--raw', `oci:${out}:multi`)).stdout) as { manifests: unknown[] };
  assert.equal(raw.manifests.length, 2);
});
