// Where kbs:/// secrets come from, picked from config as upstream CDH does:
// kbc.name = cc_kbc → the KBS (RCAR once, token reused); offline_fs_kbc (the
// default) → the offline key files.

import { readFile } from 'node:fs/promises';
import type { Logger } from 'pino';
import type { AgentConfig } from '../config/index.ts';
import type { KeySource } from '../resource.ts';
import type { Attester } from './attester.ts';
import { KbsNotConfigured } from './errors.ts';
import type { InitData } from './initdata.ts';
import { KbsClient, KbsKeySource } from './kbs-client.ts';
import { OfflineKeyStore } from './offline-store.ts';

export interface ManagedKeySource extends KeySource {
  /** The KBS client when kbc.name is cc_kbc (for AA GetToken), else undefined. */
  readonly kbs: KbsClient | undefined;
  close(): Promise<void>;
}

export interface KeySourceDeps {
  readonly attester: Attester;
  readonly initdata?: InitData | undefined;
  readonly log: Logger;
}

export async function createKeySource(config: AgentConfig, deps: KeySourceDeps): Promise<ManagedKeySource> {
  const kbc = config.kbc;
  if (kbc.name === 'offline_fs_kbc') {
    const store = new OfflineKeyStore([kbc.offline_keys, kbc.offline_resources]);
    deps.log.info({ kbc: kbc.name }, 'key source');
    return { kbs: undefined, get: (uri) => store.get(uri), close: async () => {} };
  }
  if (!/^https?:\/\/[^/]/.test(kbc.url)) throw new KbsNotConfigured(`kbc.url must be an http(s) URL for cc_kbc, got ${JSON.stringify(kbc.url)}`);
  let ca: Buffer | undefined;
  if (kbc.cert) {
    try {
      ca = await readFile(kbc.cert);
    } catch (err) {
      throw new KbsNotConfigured(`cannot read kbc.cert ${kbc.cert}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`);
    }
  }
  const client = new KbsClient({
    url: kbc.url,
    ca,
    attester: deps.attester,
    teeKeyAlgorithm: kbc.tee_key_algorithm,
    timeoutMs: kbc.timeout_ms,
    retries: kbc.retries,
    retryDelayMs: kbc.retry_delay_ms,
    resourceAttempts: kbc.resource_attempts,
    initdata: deps.initdata,
    log: deps.log,
  });
  const source = new KbsKeySource(client);
  deps.log.info({ kbc: kbc.name, url: kbc.url, tee_key: kbc.tee_key_algorithm }, 'key source');
  return { kbs: client, get: (uri, signal) => source.get(uri, signal), close: () => client.close() };
}
