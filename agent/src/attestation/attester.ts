// The attester interface: one per TEE type, chosen at start (detected, or
// forced by [attestation] tee). Sample is the fallback when nothing is
// detected, as in guest-components.

import type { Logger } from 'pino';
import type { AgentConfig } from '../config/index.ts';
import { SampleAttester } from './sample.ts';
import { TdxAttester, tdxPaths } from './tdx.ts';

export type TeeType = 'tdx' | 'sample';

/** Runtime measurement registers, addressed by TPM PCR index as the AA API does. */
export interface RuntimeMeasurement {
  /** CC measurement register index (1-based; MRTD is 0) that a PCR maps to. */
  ccmr(pcr: number): number;
  read(pcr: number): Promise<Buffer>;
  /** Extend the register `pcr` maps to with a digest (padded to the register width). */
  extend(pcr: number, digest: Buffer): Promise<void>;
}

export interface Attester {
  readonly tee: TeeType;
  /** Evidence bound to `reportData` (at most 64 bytes), as the JSON the KBS verifier for this TEE reads. */
  evidence(reportData: Buffer): Promise<Record<string, unknown>>;
  /** Present when this TEE can extend runtime measurements. */
  readonly measurements: RuntimeMeasurement | undefined;
  /** Check an initdata digest against the TEE's launch-time binding; 'unsupported' when it has none. */
  bindInitData(digest: Buffer): Promise<'ok' | 'unsupported'>;
}

export async function detectTee(cfg: AgentConfig['attestation']): Promise<TeeType> {
  return (await TdxAttester.detect(tdxPaths(cfg))) ? 'tdx' : 'sample';
}

export async function createAttester(config: AgentConfig, log: Logger, tee?: TeeType): Promise<Attester> {
  const cfg = config.attestation;
  const chosen: TeeType = tee ?? (cfg.tee === 'auto' ? await detectTee(cfg) : cfg.tee);
  log.info({ tee: chosen, configured: tee ?? cfg.tee }, 'attester');
  if (chosen === 'tdx') return TdxAttester.open(tdxPaths(cfg), cfg.eventlog_path);
  return new SampleAttester();
}
