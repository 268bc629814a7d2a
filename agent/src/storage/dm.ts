// What the kernel actually runs: the device-mapper tables of an open volume
// (dmsetup never prints a key without --showkeys, and cryptsetup passes it as
// a logon keyring reference anyway). Used for the facts in the request log
// line and as a last check that the mapping encrypts the way we asked.

import { runChecked, type Runner } from './exec.ts';

export interface DmFacts {
  /** dm-crypt cipher spec, e.g. "aes-xts-plain64" or "capi:authenc(hmac(sha256),xts(aes))-plain64". */
  readonly cipher: string;
  readonly keyInKeyring: boolean;
  readonly sectorSize: number;
  /** "integrity:<tag bytes>:aead" of the crypt table, or undefined without integrity. */
  readonly integrity?: { readonly tagBytes: number; readonly mode: string };
}

/** The cipher specs a volume of ours may run with. */
export function expectedCipher(integrity: boolean): string {
  return integrity ? 'capi:authenc(hmac(sha256),xts(aes))-plain64' : 'aes-xts-plain64';
}

const INTEGRITY_MODES: Record<string, string> = { J: 'journal', D: 'direct (no journal)', B: 'bitmap', R: 'recovery' };

/** Parses one `dmsetup table` line of a crypt target. */
export function parseCryptTable(line: string): DmFacts | undefined {
  const f = line.trim().split(/\s+/);
  if (f[2] !== 'crypt' || f.length < 8) return undefined;
  const opts = f.slice(9);
  const sector = opts.find((o) => o.startsWith('sector_size:'));
  const integ = opts.find((o) => o.startsWith('integrity:'));
  return {
    cipher: f[3]!,
    keyInKeyring: f[4]!.startsWith(':'),
    sectorSize: sector ? Number(sector.slice('sector_size:'.length)) : 512,
    ...(integ ? { integrity: { tagBytes: Number(integ.split(':')[1]), mode: '' } } : {}),
  };
}

/** Journal mode of a dm-integrity table line ("… integrity <dev> <offset> <tag size> <mode> …"). */
export function parseIntegrityMode(line: string): string | undefined {
  const f = line.trim().split(/\s+/);
  return f[2] === 'integrity' ? (INTEGRITY_MODES[f[6] ?? ''] ?? f[6]) : undefined;
}

export async function dmFacts(runner: Runner, name: string): Promise<DmFacts | undefined> {
  const crypt = await runChecked(runner, `dmsetup table ${name}`, 'dmsetup', ['table', name], { okCodes: [0, 1] });
  const facts = crypt.code === 0 ? parseCryptTable(crypt.stdout) : undefined;
  if (!facts?.integrity) return facts;
  const dif = await runChecked(runner, `dmsetup table ${name}_dif`, 'dmsetup', ['table', `${name}_dif`], { okCodes: [0, 1] });
  const mode = dif.code === 0 ? parseIntegrityMode(dif.stdout) : undefined;
  return { ...facts, integrity: { tagBytes: facts.integrity.tagBytes, mode: mode ?? 'unknown' } };
}
