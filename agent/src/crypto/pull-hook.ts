// The pull's decryption hook (image/hooks.ts LayerDecryptor), filled by the
// ocicrypt decryptor: check() unwraps a layer's key from the configured key
// files and the KeySource once per pull (one KBS resource request per layer)
// and holds it until the pull disposes it; it is never kept between pulls.

import type { DecryptedLayer, EncryptedLayer, LayerDecryptor, LayerKey } from '../image/hooks.ts';
import type { DecryptionKeys } from './keys.ts';
import { decryptorFromOptions, unwrapLayerOptions, type LayerDecryptOptions } from './layer.ts';

export function pullDecryptor(keys: DecryptionKeys, opts: { verifyPlainDigest: boolean }): LayerDecryptor {
  const options = (layer: EncryptedLayer): LayerDecryptOptions => ({ verifyPlainDigest: opts.verifyPlainDigest, ...(layer.diffId ? { diffId: layer.diffId } : {}) });
  // decryptorFromOptions zeroes what it is given: each use gets its own copy.
  const start = (layer: EncryptedLayer, optsdata: Buffer): DecryptedLayer => {
    const d = decryptorFromOptions(layer.descriptor, Buffer.from(optsdata), options(layer));
    return { stream: d.stream, mediaType: d.mediaType };
  };
  return {
    async check(layer, signal): Promise<LayerKey> {
      let optsdata: Buffer | undefined = await unwrapLayerOptions(layer.descriptor, keys, signal);
      try {
        // The private options must make a decryptor (key and nonce sizes), not just unwrap.
        start(layer, optsdata).stream.destroy();
      } catch (err) {
        optsdata.fill(0);
        throw err;
      }
      return {
        async open(l, s) {
          if (optsdata) return start(l, optsdata);
          // Disposed (its pull ended) while a shared layer download still runs for another pull.
          const fresh = await unwrapLayerOptions(l.descriptor, keys, s);
          try {
            return start(l, fresh);
          } finally {
            fresh.fill(0);
          }
        },
        dispose() {
          optsdata?.fill(0);
          optsdata = undefined;
        },
      };
    },
  };
}
