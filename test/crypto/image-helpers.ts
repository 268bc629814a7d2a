// Compare an encrypted image in an OCI layout with its plain original by
// decrypting every layer blob with our decryptor.

import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createLayerDecryptor, isEncryptedLayer, type DecryptionKeys, type LayerDecryptOptions } from '../../agent/src/crypto/index.ts';
import { OciLayout, type Descriptor } from '../../agent/src/crypto/oci-layout.ts';
import { runOk } from './stream-helpers.ts';

export interface Manifest {
  config: Descriptor;
  layers: Descriptor[];
}

export async function manifestOf(dir: string, tag: string): Promise<Manifest> {
  const layout = new OciLayout(dir);
  return layout.readJson<Manifest>(await layout.resolve(tag));
}

export const sha256 = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

export interface ImageRef {
  readonly dir: string;
  readonly tag: string;
}

/** Decrypt every encrypted layer of `encRef` and check it equals the plain image's layer, byte for byte. Returns how many were encrypted. */
export async function assertDecryptsToPlain(encRef: ImageRef, plainRef: ImageRef, keys: DecryptionKeys, opts: LayerDecryptOptions = {}): Promise<number> {
  const encDir = encRef.dir;
  const enc = await manifestOf(encDir, encRef.tag);
  const plain = await manifestOf(plainRef.dir, plainRef.tag);
  assert.equal(enc.config.digest, plain.config.digest, 'the config (and its diff_ids) is unchanged');
  assert.equal(enc.layers.length, plain.layers.length);
  let encrypted = 0;
  for (const [i, layer] of enc.layers.entries()) {
    const want = plain.layers[i]!;
    const blob = readFileSync(new OciLayout(encDir).blobPath(layer.digest));
    assert.equal(sha256(blob), layer.digest, 'the manifest names the ciphertext by its digest');
    assert.equal(blob.length, layer.size);
    if (!isEncryptedLayer(layer)) {
      assert.deepEqual(layer, want, `layer ${i} left plain`);
      continue;
    }
    encrypted++;
    const d = await createLayerDecryptor(layer, keys, opts);
    const out = await runOk(d.stream, blob, 65536);
    d.verify();
    assert.equal(sha256(out), want.digest, `layer ${i} decrypts to the plain blob`);
    assert.equal(d.mediaType, want.mediaType);
    assert.equal(d.plainDigest, want.digest);
    assert.deepEqual(d.annotations, want.annotations ?? {});
  }
  return encrypted;
}
