// Intel TDX through the kernel's file interfaces only (no ioctls):
// - quotes from configfs-tsm (one report entry per quote, removed after);
// - RTMRs and MRCONFIGID from tdx_guest sysfs measurements (kernel ≥ 6.16),
//   falling back to the quote body to read them when sysfs lacks them;
// - the CCEL from ACPI, followed by our AA event log.
// All roots come from config so tests can point them at a fake tree.

import { randomBytes } from 'node:crypto';
import { access, mkdir, readFile, rmdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { AgentConfig } from '../config/index.ts';
import type { Attester, RuntimeMeasurement } from './attester.ts';
import { AttesterError, InblobConflict, InitDataMismatch } from './errors.ts';
import { readEventLog } from './eventlog.ts';
import { padToRegister, pcrToCcmr, RTMR_SIZE } from './rtmr.ts';
import { parseTdxQuote } from './tdx-quote.ts';

const REPORT_DATA_SIZE = 64;
const TSM_PROVIDER = 'tdx_guest\n';

export interface TdxPaths {
  /** configfs-tsm report directory: mkdir an entry here per quote. */
  readonly tsmReport: string;
  /** The tdx_guest misc device's sysfs node: present iff /dev/tdx_guest is. */
  readonly device: string;
  readonly measurements: string;
  readonly ccel: string;
}

export function tdxPaths(cfg: AgentConfig['attestation']): TdxPaths {
  const device = join(cfg.sysfs_root, 'devices/virtual/misc/tdx_guest');
  return {
    tsmReport: join(cfg.configfs_root, 'tsm/report'),
    device,
    measurements: join(device, 'measurements'),
    ccel: join(cfg.sysfs_root, 'firmware/acpi/tables/data/CCEL'),
  };
}

const exists = (path: string): Promise<boolean> =>
  access(path).then(
    () => true,
    () => false,
  );

const errno = (err: unknown): string => (err as NodeJS.ErrnoException).code ?? 'error';

/** One configfs-tsm report: mkdir, check provider, write inblob, read outblob, check generation, rmdir. */
async function tsmReport(root: string, inblob: Buffer): Promise<Buffer> {
  const entry = join(root, `tee-agent-${randomBytes(6).toString('hex')}`);
  try {
    await mkdir(entry);
  } catch (err) {
    throw new AttesterError(`cannot create a TSM report entry under ${root}: ${errno(err)}`);
  }
  try {
    const step = async <T>(name: string, fn: () => Promise<T>): Promise<T> => {
      try {
        return await fn();
      } catch (err) {
        throw new AttesterError(`TSM report ${name}: ${errno(err)}`);
      }
    };
    const provider = await step('provider', () => readFile(join(entry, 'provider'), 'utf8'));
    if (provider !== TSM_PROVIDER) throw new AttesterError(`TSM report provider is ${JSON.stringify(provider.trim())}, not tdx_guest`);
    await step('inblob', () => writeFile(join(entry, 'inblob'), inblob));
    const quote = await step('outblob', () => readFile(join(entry, 'outblob')));
    const generation = Number((await step('generation', () => readFile(join(entry, 'generation'), 'utf8'))).trim());
    if (!Number.isInteger(generation)) throw new AttesterError('TSM report generation is not a number');
    // Someone else wrote inblob between our write and read: the quote may carry their data.
    if (generation > 1) throw new InblobConflict(generation);
    return quote;
  } finally {
    await rmdir(entry).catch(() => {});
  }
}

class SysfsMeasurements implements RuntimeMeasurement {
  private readonly dir: string;
  constructor(dir: string) {
    this.dir = dir;
  }
  ccmr(pcr: number): number {
    return pcrToCcmr(pcr);
  }
  private path(pcr: number): string {
    return join(this.dir, `rtmr${pcrToCcmr(pcr) - 1}:sha384`);
  }
  async read(pcr: number): Promise<Buffer> {
    try {
      return await readFile(this.path(pcr));
    } catch (err) {
      throw new AttesterError(`cannot read RTMR${pcrToCcmr(pcr) - 1}: ${errno(err)}`);
    }
  }
  async extend(pcr: number, digest: Buffer): Promise<void> {
    try {
      await writeFile(this.path(pcr), padToRegister(digest));
    } catch (err) {
      throw new AttesterError(`cannot extend RTMR${pcrToCcmr(pcr) - 1}: ${errno(err)}`);
    }
  }
}

export class TdxAttester implements Attester {
  readonly tee = 'tdx' as const;
  readonly measurements: RuntimeMeasurement | undefined;
  private readonly paths: TdxPaths;
  private readonly aaelPath: string;

  private constructor(paths: TdxPaths, aaelPath: string, sysfsMeasurements: boolean) {
    this.paths = paths;
    this.aaelPath = aaelPath;
    // Without sysfs measurements, extending needs ioctls we do not use.
    this.measurements = sysfsMeasurements ? new SysfsMeasurements(paths.measurements) : undefined;
  }

  static async open(paths: TdxPaths, aaelPath: string): Promise<TdxAttester> {
    return new TdxAttester(paths, aaelPath, await exists(paths.measurements));
  }

  /** TDX when the tdx_guest device exists or configfs-tsm hands out TDX reports (guest-components detect_platform). */
  static async detect(paths: TdxPaths): Promise<boolean> {
    return (await exists(paths.device)) || ((await exists(paths.tsmReport)) && (await TdxAttester.probe(paths)));
  }

  /** True when configfs-tsm hands out TDX reports here. */
  static async probe(paths: TdxPaths): Promise<boolean> {
    const entry = join(paths.tsmReport, `tee-agent-probe-${randomBytes(6).toString('hex')}`);
    try {
      await mkdir(entry);
    } catch {
      return false;
    }
    try {
      return (await readFile(join(entry, 'provider'), 'utf8')) === TSM_PROVIDER;
    } catch {
      return false;
    } finally {
      await rmdir(entry).catch(() => {});
    }
  }

  /** A raw TD quote whose REPORTDATA is `reportData` padded with zeros to 64 bytes. */
  async quote(reportData: Buffer): Promise<Buffer> {
    if (reportData.length > REPORT_DATA_SIZE) throw new AttesterError(`TDX report data must be at most ${REPORT_DATA_SIZE} bytes`);
    const inblob = Buffer.alloc(REPORT_DATA_SIZE);
    reportData.copy(inblob);
    return tsmReport(this.paths.tsmReport, inblob);
  }

  async evidence(reportData: Buffer): Promise<Record<string, unknown>> {
    const quote = await this.quote(reportData);
    const log = await readEventLog(this.paths.ccel, this.aaelPath);
    return { cc_eventlog: log ? log.toString('base64') : null, quote: quote.toString('base64') };
  }

  /** MRCONFIGID from sysfs, or from the body of a fresh quote when sysfs does not export it. */
  async mrConfigId(): Promise<Buffer> {
    const path = join(this.paths.measurements, 'mrconfigid');
    if (await exists(path)) {
      try {
        return await readFile(path);
      } catch (err) {
        throw new AttesterError(`cannot read MRCONFIGID: ${errno(err)}`);
      }
    }
    return parseTdxQuote(await this.quote(Buffer.alloc(0))).body.mrConfigId;
  }

  async bindInitData(digest: Buffer): Promise<'ok'> {
    const expected = padToRegister(digest);
    const actual = await this.mrConfigId();
    if (actual.length !== RTMR_SIZE || !actual.equals(expected)) throw new InitDataMismatch();
    return 'ok';
  }
}
