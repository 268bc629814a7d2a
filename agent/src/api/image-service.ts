// The image capability wired together once, for the daemon and for
// `tee-agent pull`: the layer store, the puller, signature verification
// (signature/) and layer decryption (crypto/), all taking their secrets from
// the one KeySource of the attestation capability.

import type { Logger } from 'pino';
import type { AgentConfig } from '../config/index.ts';
import { decryptionKeys, pullDecryptor } from '../crypto/index.ts';
// Not through image/index.ts, which would load the layer unpacker (the worker's code) here too.
import { LayerStore } from '../image/store.ts';
import type { ImagePuller } from '../image/pull.ts';
import { createPuller, httpSettings } from '../image/setup.ts';
import type { KeySource } from '../resource.ts';
import { createSignatureVerifier } from '../signature/index.ts';

export interface ImageService {
  readonly store: LayerStore;
  readonly puller: ImagePuller;
  close(): Promise<void>;
}

export interface ImageServiceOptions {
  /** Extra private key files for keys.jwe layers (the CLI's --decryption-key). */
  readonly decryptionKeyFiles?: readonly string[];
  /** Extra plain-HTTP registries (the CLI's --insecure-registry). */
  readonly insecureHosts?: readonly string[];
}

export async function openImageService(config: AgentConfig, log: Logger, keySource: KeySource, opts: ImageServiceOptions = {}): Promise<ImageService> {
  const store = await LayerStore.open(config.image.work_dir, log, { bundleMode: config.image.bundle_mode });
  const verifier = createSignatureVerifier(config.image, { log, keySource, http: httpSettings(config) });
  const keys = decryptionKeys({ config: config.image.decryption_keys, flags: opts.decryptionKeyFiles ?? [], keySource });
  const decryptor = pullDecryptor(keys, { verifyPlainDigest: config.image.verify_gcm_stream_digest });
  const puller = createPuller(config, log, {
    store,
    keySource,
    decryptor,
    ...(verifier ? { verifier } : {}),
    ...(opts.insecureHosts ? { insecureHosts: opts.insecureHosts } : {}),
  });
  return {
    store,
    puller,
    close: async () => {
      await puller.deps.registry.close();
      await verifier?.close();
      await store.close();
    },
  };
}
