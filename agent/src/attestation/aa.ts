// The attestation-agent API: evidence, tokens, runtime measurements and the
// initdata binding, over the chosen attester and the shared KBS client.

import { mkdir } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { Logger } from 'pino';
import { InvalidArgument } from '../errors.ts';
import type { Attester } from './attester.ts';
import { KbsNotConfigured } from './errors.ts';
import { aaelEntry, appendEntry, type AaelEvent } from './eventlog.ts';
import type { KbsClient } from './kbs-client.ts';

export type MeasurementResult = 'OK' | 'NOT_SUPPORTED' | 'NOT_ENABLED';

export interface AttestationAgentOptions {
  readonly attester: Attester;
  readonly kbs: KbsClient | undefined;
  readonly eventlog: { readonly enabled: boolean; readonly path: string; readonly pcr: number };
  readonly log: Logger;
}

export class AttestationAgent {
  private readonly opts: AttestationAgentOptions;
  /** Extends and log appends run one at a time so the log order is the extend order. */
  private chain: Promise<unknown> = Promise.resolve();

  constructor(opts: AttestationAgentOptions) {
    this.opts = opts;
  }

  get tee(): string {
    return this.opts.attester.tee;
  }

  /** The attester's evidence for caller-chosen runtime data (at most 64 bytes), as JSON bytes. */
  async evidence(runtimeData: Buffer): Promise<Buffer> {
    if (runtimeData.length > 64) throw new InvalidArgument('runtime data must be at most 64 bytes');
    return Buffer.from(JSON.stringify(await this.opts.attester.evidence(runtimeData)));
  }

  /** TokenType "kbs": {"token": "<JWT>"} from the shared client; the TEE key never leaves the agent. */
  async token(type: string, signal?: AbortSignal): Promise<Buffer> {
    if (type !== 'kbs') throw new InvalidArgument(`token type ${JSON.stringify(type)} is not supported (only "kbs")`);
    if (!this.opts.kbs) throw new KbsNotConfigured('no KBS configured (kbc.name is not cc_kbc)');
    return Buffer.from(JSON.stringify({ token: await this.opts.kbs.token(signal) }));
  }

  async extendRuntimeMeasurement(event: AaelEvent, pcr?: number): Promise<MeasurementResult> {
    const { attester, eventlog } = this.opts;
    if (!eventlog.enabled) return 'NOT_ENABLED';
    const mr = attester.measurements;
    if (!mr) return 'NOT_SUPPORTED';
    const index = pcr ?? eventlog.pcr;
    const entry = aaelEntry(event, mr.ccmr(index));
    const run = this.chain.then(async () => {
      await mkdir(dirname(eventlog.path), { recursive: true, mode: 0o700 });
      await mr.extend(index, entry.digest);
      await appendEntry(eventlog.path, entry.bytes);
    });
    this.chain = run.catch(() => {});
    await run;
    this.opts.log.info({ pcr: index, ccmr: mr.ccmr(index), domain: event.domain, operation: event.operation }, 'runtime measurement extended');
    return 'OK';
  }

  async bindInitData(digest: Buffer): Promise<void> {
    if (digest.length === 0 || digest.length > 64) throw new InvalidArgument('initdata digest must be 1 to 64 bytes');
    const result = await this.opts.attester.bindInitData(digest);
    if (result === 'unsupported') this.opts.log.info({ tee: this.tee }, 'initdata binding is not supported by this TEE');
  }
}
