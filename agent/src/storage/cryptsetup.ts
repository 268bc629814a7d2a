// cryptsetup command lines. Building argv is kept pure (and tested) so it is
// plain to see that no key ever lands on it: every key goes on stdin with
// --key-file=-, which reads to EOF, newlines included.

import { runChecked, type Runner } from './exec.ts';
import { WrongKey } from './errors.ts';

export const CIPHER = 'aes-xts-plain64';
/** aes-xts-plain64 with two 256-bit AES keys. */
export const CIPHER_KEY_BITS = 512;
export const SECTOR_SIZE = 4096;
/** cryptsetup's --integrity name, and the name LUKS2 metadata and dm use for it. */
export const INTEGRITY = 'hmac-sha256';
export const INTEGRITY_METADATA = 'hmac(sha256)';
/** The HMAC key cryptsetup appends to the volume key with --integrity hmac-sha256. */
export const INTEGRITY_KEY_BITS = 256;

/**
 * Key derivation for a keyslot. An ephemeral key is 64 random bytes, so
 * stretching it buys nothing: the minimum PBKDF2 count. A persistent key is
 * whatever the KBS holds, possibly a passphrase, so it gets a modest Argon2id
 * that still fits a small guest.
 */
export type Kdf = 'ephemeral' | 'persistent';

const KDF_ARGS: Record<Kdf, readonly string[]> = {
  ephemeral: ['--pbkdf', 'pbkdf2', '--pbkdf-force-iterations', '1000'],
  persistent: ['--pbkdf', 'argon2id', '--pbkdf-memory', '32768', '--pbkdf-parallel', '1', '--pbkdf-force-iterations', '4'],
};

export interface FormatArgs {
  readonly device: string;
  readonly integrity: boolean;
  readonly kdf: Kdf;
  /** Detached header file (ephemeral volumes); absent: the header goes on the device. */
  readonly header?: string;
  /**
   * Skip the dm-integrity wipe. Reads of never-written sectors then fail
   * until written, which the ext4 creation in mkfs.ts works around; only for
   * ephemeral volumes, where a full wipe of a large disk would cost minutes.
   */
  readonly noWipe: boolean;
}

export function luksFormatArgs(a: FormatArgs): string[] {
  const args = ['luksFormat', '--batch-mode', '--type', 'luks2', '--cipher', CIPHER, '--key-size', String(CIPHER_KEY_BITS), '--sector-size', String(SECTOR_SIZE)];
  if (a.integrity) {
    args.push('--integrity', INTEGRITY);
    if (a.noWipe) args.push('--integrity-no-wipe');
  }
  args.push(...KDF_ARGS[a.kdf]);
  // A detached header lives in tmpfs, i.e. guest memory: keep it small (one
  // keyslot of a 96-byte key with 4000 AF stripes needs 375 KiB).
  if (a.header !== undefined) args.push('--header', a.header, '--luks2-keyslots-size', '1m');
  args.push('--key-file=-', a.device);
  return args;
}

export interface OpenArgs {
  readonly device: string;
  readonly name: string;
  /** The header to use: the tmpfs header of an ephemeral volume, or the validated copy of a persistent one. */
  readonly header: string;
  /**
   * --integrity-no-journal only acts at activation (luksFormat ignores it).
   * Ephemeral volumes do not survive a crash anyway, so they skip the journal
   * and its double writes; persistent volumes keep it.
   */
  readonly noJournal: boolean;
}

export function luksOpenArgs(a: OpenArgs): string[] {
  const args = ['open', '--type', 'luks2', '--header', a.header, '--key-file=-'];
  if (a.noJournal) args.push('--integrity-no-journal');
  args.push('--perf-no_read_workqueue', '--perf-no_write_workqueue', a.device, a.name);
  return args;
}

export const closeArgs = (name: string): string[] => ['close', name];
export const statusArgs = (name: string): string[] => ['status', name];
export const headerBackupArgs = (device: string, file: string): string[] => ['luksHeaderBackup', device, '--header-backup-file', file];
export const dumpJsonArgs = (header: string): string[] => ['luksDump', '--dump-json-metadata', header];

/** cryptsetup exit codes (cryptsetup(8) RETURN CODES). */
export const EXIT = { OK: 0, BAD_PARAMS: 1, NO_PERMISSION: 2, NO_MEMORY: 3, WRONG_DEVICE: 4, BUSY: 5 } as const;

export class Cryptsetup {
  private readonly runner: Runner;
  constructor(runner: Runner) {
    this.runner = runner;
  }

  async format(a: FormatArgs, key: Buffer): Promise<void> {
    await runChecked(this.runner, `cryptsetup luksFormat ${a.device}`, 'cryptsetup', luksFormatArgs(a), { stdin: key });
  }

  /** Opens the volume; a key that fits no keyslot is WrongKey. */
  async open(a: OpenArgs, key: Buffer): Promise<void> {
    const res = await runChecked(this.runner, `cryptsetup open ${a.device}`, 'cryptsetup', luksOpenArgs(a), { stdin: key, okCodes: [EXIT.OK, EXIT.NO_PERMISSION] });
    if (res.code === EXIT.NO_PERMISSION) throw new WrongKey(a.device);
  }

  /** Closes a mapping; false when it was not active. Retries while the device is briefly busy. */
  async close(name: string): Promise<boolean> {
    for (let attempt = 0; ; attempt++) {
      const res = await runChecked(this.runner, `cryptsetup close ${name}`, 'cryptsetup', closeArgs(name), {
        okCodes: attempt < 5 ? [EXIT.OK, EXIT.WRONG_DEVICE, EXIT.BUSY] : [EXIT.OK, EXIT.WRONG_DEVICE],
      });
      if (res.code === EXIT.OK) return true;
      if (res.code === EXIT.WRONG_DEVICE) return false;
      await new Promise((r) => setTimeout(r, 200 * (attempt + 1)));
    }
  }

  /** `cryptsetup status` as key/value facts, or undefined when the mapping is not active. */
  async status(name: string): Promise<Record<string, string> | undefined> {
    const res = await runChecked(this.runner, `cryptsetup status ${name}`, 'cryptsetup', statusArgs(name), { okCodes: [EXIT.OK, EXIT.WRONG_DEVICE] });
    return res.code === EXIT.OK ? parseStatus(res.stdout) : undefined;
  }

  async headerBackup(device: string, file: string): Promise<void> {
    await runChecked(this.runner, `cryptsetup luksHeaderBackup ${device}`, 'cryptsetup', headerBackupArgs(device, file));
  }

  /** The LUKS2 JSON metadata as cryptsetup reads it. */
  async dumpJson(header: string): Promise<string> {
    return (await runChecked(this.runner, `cryptsetup luksDump ${header}`, 'cryptsetup', dumpJsonArgs(header))).stdout;
  }
}

/** Parses `cryptsetup status` output ("  key location: keyring") into {"key location": "keyring", ...}. */
export function parseStatus(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const m = /^\s+([a-z][a-z ]*):\s+(.*?)\s*$/.exec(line);
    if (m) out[m[1]!] = m[2]!;
  }
  return out;
}
