// api/: the handler table. Each handler decodes nothing itself (the transport
// did), calls one capability function and returns the response message.
// Capabilities are built here from the resolved config, once.

import type { Logger } from 'pino';
import type { AgentConfig } from '../config/index.ts';
import type { Handlers } from '../server/table.ts';
import { createPuller, httpSettings } from '../image/setup.ts';
import { OfflineKeyStore } from '../attestation/offline-store.ts';
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
  const store = await LayerStore.open(config.image.work_dir, log, { bundleMode: config.image.bundle_mode });
  // kbs:/// policies, keys and auth.json; the cc_kbc KBS client (attestation/) takes this place when configured.
  const keySource = config.kbc.name === 'offline_fs_kbc' ? new OfflineKeyStore([config.kbc.offline_keys, config.kbc.offline_resources]) : undefined;
  const verifier = createSignatureVerifier(config.image, { log, ...(keySource ? { keySource } : {}), http: httpSettings(config) });
  // Layer decryption (crypto/) plugs in here as `decryptor`.
  const puller = createPuller(config, log, { store, ...(verifier ? { verifier } : {}), ...(keySource ? { keySource } : {}) });
  return {
    handlers: {
      'grpc.Health': healthHandlers,
      ...imageHandlers({ puller, bundleBase: config.image.bundle_base, createPauseBundle: (path) => createPauseBundle(path, config.image.pause_bundle) }),
    },
    close: async () => {
      await puller.deps.registry.close();
      await verifier?.close();
      store.close();
    },
  };
}
