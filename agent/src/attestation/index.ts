// attestation/: proving the TEE and getting secrets for it. Owns the
// attesters (tdx through configfs-tsm and sysfs, sample), the TDX quote
// parser and event logs, initdata binding, the Trustee KBS client (RCAR
// 0.4.0, token reuse, JWE responses), the key sources every kbs:/// secret
// comes through (KBS or offline store), sealed secrets and the AA API.

import type { Logger } from 'pino';
import type { AgentConfig } from '../config/index.ts';
import { AttestationAgent } from './aa.ts';
import { createAttester, type Attester, type TeeType } from './attester.ts';
import { loadInitData, type InitData } from './initdata.ts';
import { createKeySource, type ManagedKeySource } from './key-sources.ts';
import { unsealSecret } from './sealed.ts';

export { AttestationAgent, type MeasurementResult } from './aa.ts';
export { createAttester, detectTee, type Attester, type RuntimeMeasurement, type TeeType } from './attester.ts';
export * from './errors.ts';
export { loadInitData, parseInitData, type InitData } from './initdata.ts';
export { KbsClient, KbsKeySource, type KbsClientOptions } from './kbs-client.ts';
export { createKeySource, type KeySourceDeps, type ManagedKeySource } from './key-sources.ts';
export { OfflineKeyStore } from './offline-store.ts';
export { unsealSecret, type UnsealDeps } from './sealed.ts';
export { parseTdxQuote, type TdxQuote } from './tdx-quote.ts';

export interface Attestation {
  readonly attester: Attester;
  readonly initdata: InitData | undefined;
  /** Every kbs:/// secret (keys, policies, auth files) comes through here. */
  readonly keys: ManagedKeySource;
  readonly agent: AttestationAgent;
  unseal(secret: Buffer, signal?: AbortSignal): Promise<Buffer>;
  close(): Promise<void>;
}

/**
 * Build the attestation capability once at start: pick the attester, bind
 * the initdata (a mismatch with MRCONFIGID stops the agent, as upstream AA
 * does), and choose the key source. Nothing talks to the KBS yet.
 */
export async function createAttestation(config: AgentConfig, log: Logger, tee?: TeeType): Promise<Attestation> {
  const attester = await createAttester(config, log, tee);
  const initdata = await loadInitData(config.attestation.initdata);
  if (initdata) {
    const bound = await attester.bindInitData(initdata.digest);
    log.info({ algorithm: initdata.algorithm, binding: bound }, 'initdata');
  }
  const keys = await createKeySource(config, { attester, initdata, log });
  const a = config.attestation;
  const agent = new AttestationAgent({ attester, kbs: keys.kbs, eventlog: { enabled: a.eventlog, path: a.eventlog_path, pcr: a.eventlog_pcr }, log });
  return {
    attester,
    initdata,
    keys,
    agent,
    unseal: (secret, signal) => unsealSecret(secret, { keys, keyDir: a.sealed_secret_keys }, signal),
    close: () => keys.close(),
  };
}
