// The pull's decryption hook (image/hooks.ts LayerDecryptor), filled by the
// ocicrypt decryptor: keys are unwrapped per layer from the configured key
// files and the KeySource, and never kept between layers.

import type { DecryptedLayer, EncryptedLayer, LayerDecryptor } from '../image/hooks.ts';
import type { DecryptionKeys } from './keys.ts';
import { createLayerDecryptor } from './layer.ts';

export function pullDecryptor(keys: DecryptionKeys, opts: { verifyPlainDigest: boolean }): LayerDecryptor {
  const open = (layer: EncryptedLayer, signal: AbortSignal) =>
    createLayerDecryptor(layer.descriptor, keys, { signal, verifyPlainDigest: opts.verifyPlainDigest, ...(layer.diffId ? { diffId: layer.diffId } : {}) });
  return {
    async check(layer, signal) {
      // Unwrapping is the proof; the stream that holds the key is dropped at once.
      (await open(layer, signal)).stream.destroy();
    },
    async decrypt(layer, signal): Promise<DecryptedLayer> {
      const d = await open(layer, signal);
      return { stream: d.stream, mediaType: d.mediaType };
    },
  };
}
