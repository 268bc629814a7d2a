// api/: the handler table. Each handler decodes nothing itself (the transport
// did), calls one capability function and returns the response message.
// Capabilities are built here from the resolved config, once.

import type { Logger } from 'pino';
import { createAttestation } from '../attestation/index.ts';
import type { AgentConfig } from '../config/index.ts';
import type { Handlers } from '../server/table.ts';
import { attestationAgentHandlers, resourceHandlers, sealedSecretHandlers } from './attestation.ts';
import { createPuller, httpSettings } from '../image/setup.ts';
import { createSignatureVerifier } from '../signature/index.ts';
import { createPauseBundle, LayerStore } from '../image/index.ts';
import { healthHandlers } from './health.ts';
import { imageHandlers } from './image.ts';

export interface Api {
  readonly handlers: Handlers;
  /** Release what the capabilities hold (mounts, keys, sessions). */
  close(): Promise<void>;
}

export async function createApi(config: AgentConfig, log: Logger): Promise<Api> {
  // attestation.keys is the KeySource for every kbs:/// secret (keyprovider KEKs, policies, auth).
  const attestation = await createAttestation(config, log);
  const store = await LayerStore.open(config.image.work_dir, log, { bundleMode: config.image.bundle_mode });
  const keySource = attestation.keys;
  const verifier = createSignatureVerifier(config.image, { log, keySource, http: httpSettings(config) });
  // Layer decryption (crypto/) plugs in here as `decryptor`.
  const puller = createPuller(config, log, { store, keySource, ...(verifier ? { verifier } : {}) });
  return {
    handlers: {
      'grpc.Health': healthHandlers,
      'api.GetResourceService': resourceHandlers(attestation),
      'api.SealedSecretService': sealedSecretHandlers(attestation),
      'attestation_agent.AttestationAgentService': attestationAgentHandlers(attestation),
      ...imageHandlers({ puller, bundleBase: config.image.bundle_base, createPauseBundle: (path) => createPauseBundle(path, config.image.pause_bundle) }),
    },
    close: async () => {
      await puller.deps.registry.close();
      await verifier?.close();
      store.close();
      await attestation.close();
    },
  };
}
