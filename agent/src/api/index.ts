// api/: the handler table. Each handler decodes nothing itself (the transport
// did), calls one capability function and returns the response message.
// Capabilities are built here from the resolved config, once.

import type { Logger } from 'pino';
import { OfflineKeyStore } from '../attestation/offline-store.ts';
import type { AgentConfig } from '../config/index.ts';
import { Unimplemented } from '../errors.ts';
import type { KeySource } from '../resource.ts';
import type { Handlers } from '../server/table.ts';
import { healthHandlers } from './health.ts';
import { keyProviderHandlers } from './keyprovider.ts';

export interface Api {
  readonly handlers: Handlers;
  /** Release what the capabilities hold (mounts, keys, sessions). */
  close(): Promise<void>;
}

/** Where keys come from: the offline store, or (cc_kbc) the KBS client of the attestation capability. */
function keySourceFor(config: AgentConfig): KeySource {
  if (config.kbc.name === 'offline_fs_kbc') return new OfflineKeyStore([config.kbc.offline_keys, config.kbc.offline_resources]);
  return {
    get: async () => {
      throw new Unimplemented('the cc_kbc key source');
    },
  };
}

export async function createApi(config: AgentConfig, _log: Logger): Promise<Api> {
  const keySource = keySourceFor(config);
  return {
    handlers: {
      'grpc.Health': healthHandlers,
      'keyprovider.KeyProviderService': keyProviderHandlers(keySource),
    },
    close: async () => {},
  };
}
