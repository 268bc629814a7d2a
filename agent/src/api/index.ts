// api/: the handler table. Each handler decodes nothing itself (the transport
// did), calls one capability function and returns the response message.
// Capabilities are built here from the resolved config, once.

import type { Logger } from 'pino';
import { OfflineKeyStore } from '../attestation/offline-store.ts';
import type { AgentConfig } from '../config/index.ts';
import type { KeySource } from '../resource.ts';
import type { Handlers } from '../server/table.ts';
import { SecureStorage } from '../storage/index.ts';
import { healthHandlers } from './health.ts';
import { secureMountHandlers, secureStorageHandlers } from './storage.ts';

export interface Api {
  readonly handlers: Handlers;
  /** Release what the capabilities hold (mounts, keys, sessions). */
  close(): Promise<void>;
}

export async function createApi(config: AgentConfig, log: Logger): Promise<Api> {
  // The attestation capability replaces this with its KBS-backed KeySource (cc_kbc).
  const keys: KeySource = new OfflineKeyStore([config.kbc.offline_keys, config.kbc.offline_resources]);
  const storage = new SecureStorage({ config: config.storage, keys, log });
  // A failed recovery must not keep the agent from serving everything else.
  await storage.recover().catch((err: unknown) => log.error({ err }, 'secure storage recovery failed'));
  return {
    handlers: {
      'grpc.Health': healthHandlers,
      'api.SecureMountService': secureMountHandlers(storage),
      'teeagent.SecureStorageService': secureStorageHandlers(storage),
    },
    close: async () => {},
  };
}
