// api/: the handler table. Each handler decodes nothing itself (the transport
// did), calls one capability function and returns the response message.
// Capabilities are built here from the resolved config, once.

import type { Logger } from 'pino';
import { createAttestation } from '../attestation/index.ts';
import type { AgentConfig } from '../config/index.ts';
// Not through image/index.ts, which would load the layer unpacker (the worker's code) here too.
import { createPauseBundle } from '../image/pause.ts';
import type { Handlers } from '../server/table.ts';
import { attestationAgentHandlers, resourceHandlers, sealedSecretHandlers } from './attestation.ts';
import { healthHandlers } from './health.ts';
import { imageHandlers } from './image.ts';
import { openImageService } from './image-service.ts';
import { keyProviderHandlers } from './keyprovider.ts';
import { SecureStorage } from '../storage/index.ts';
import { secureMountHandlers, secureStorageHandlers } from './storage.ts';

export interface Api {
  readonly handlers: Handlers;
  /** Release what the capabilities hold (mounts, keys, sessions). */
  close(): Promise<void>;
}

export async function createApi(config: AgentConfig, log: Logger): Promise<Api> {
  // attestation.keys is the KeySource for every kbs:/// secret (keyprovider KEKs, policies, auth, volume keys).
  const attestation = await createAttestation(config, log);
  const image = await openImageService(config, log, attestation.keys);
  const storage = new SecureStorage({
    config: config.storage,
    keys: attestation.keys,
    sealed: { unseal: (secret, signal) => attestation.unseal(Buffer.from(secret), signal) },
    log,
  });
  // A failed recovery must not keep the agent from serving everything else.
  await storage.recover().catch((err: unknown) => log.error({ err }, 'secure storage recovery failed'));
  return {
    handlers: {
      'grpc.Health': healthHandlers,
      'api.GetResourceService': resourceHandlers(attestation),
      'api.SealedSecretService': sealedSecretHandlers(attestation),
      'attestation_agent.AttestationAgentService': attestationAgentHandlers(attestation),
      'keyprovider.KeyProviderService': keyProviderHandlers(attestation.keys),
      'api.SecureMountService': secureMountHandlers(storage),
      'teeagent.SecureStorageService': secureStorageHandlers(storage),
      ...imageHandlers({ puller: image.puller, bundleBase: config.image.bundle_base, createPauseBundle: (path) => createPauseBundle(path, config.image.pause_bundle) }),
    },
    close: async () => {
      await image.close();
      await attestation.close();
    },
  };
}
