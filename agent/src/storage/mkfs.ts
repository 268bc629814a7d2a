// ext4 on a fresh mapping. On dm-integrity formatted without a wipe, every
// sector that was never written has no valid tag, so reading it fails with
// EIO. mke2fs reads a few blocks before writing them, and ext4 reads inode
// tables it would otherwise initialise lazily. So (cryptsetup issue #525):
// a dry run tells where the superblock and its backups go, those blocks are
// written with zeros first, and the real run initialises the inode tables
// (lazy_itable_init=0) instead of leaving them unwritten.

import { constants } from 'node:fs';
import { open } from 'node:fs/promises';
import { runChecked, type Runner } from './exec.ts';
import { SECTOR_SIZE } from './cryptsetup.ts';
import { StorageCommandFailed } from './errors.ts';

export interface MkfsLayout {
  readonly blockSize: number;
  /** Block numbers: 0 (the primary superblock) and each backup. */
  readonly superblocks: readonly number[];
}

/** Parses `mkfs.ext4 -n` output: "Creating filesystem with N 4k blocks" and "Superblock backups stored on blocks: …". */
export function parseDryRun(text: string): MkfsLayout {
  const size = /Creating filesystem with \d+ (\d+)k blocks/.exec(text);
  if (!size) throw new StorageCommandFailed('mkfs.ext4 -n', 0, 'no block size in its output');
  const blockSize = Number(size[1]) * 1024;
  const backups: number[] = [];
  const at = text.indexOf('Superblock backups stored on blocks:');
  if (at >= 0) {
    const rest = text.slice(at).split('\n');
    // The numbers follow on the same and the next indented lines, up to a blank line.
    for (const [i, line] of rest.entries()) {
      if (i > 0 && line.trim() === '') break;
      for (const m of line.replace(/^.*blocks:/, '').matchAll(/\d+/g)) backups.push(Number(m[0]));
    }
  }
  return { blockSize, superblocks: [0, ...backups] };
}

/** -E options merged, since mke2fs only honours the last -E it is given. */
export function withExtended(opts: readonly string[], extra: string): string[] {
  const out: string[] = [];
  const extended: string[] = [];
  for (let i = 0; i < opts.length; i++) {
    if (opts[i] === '-E') extended.push(opts[++i]!);
    else out.push(opts[i]!);
  }
  extended.push(extra);
  return [...out, '-E', extended.join(',')];
}

export function mkfsArgs(device: string, opts: readonly string[], integrityNoWipe: boolean): string[] {
  return ['-F', ...(integrityNoWipe ? withExtended(opts, 'lazy_itable_init=0') : opts), device];
}

/**
 * Byte ranges to zero: each superblock's block, widened to whole 4096-byte
 * sectors, since a partial-sector write would read the unreadable sector
 * first. Block 0 covers the primary superblock at byte 1024 for any block size.
 */
export function zeroRanges(layout: MkfsLayout): Array<{ offset: number; length: number }> {
  const unit = Math.max(layout.blockSize, SECTOR_SIZE);
  const offsets = new Set(layout.superblocks.map((b) => Math.floor((b * layout.blockSize) / unit) * unit));
  return [...offsets].sort((a, b) => a - b).map((offset) => ({ offset, length: unit }));
}

async function zeroBlocks(device: string, layout: MkfsLayout): Promise<void> {
  const fh = await open(device, constants.O_WRONLY);
  try {
    const ranges = zeroRanges(layout);
    const zero = Buffer.alloc(ranges[0]?.length ?? 0);
    for (const r of ranges) await fh.write(zero, 0, r.length, r.offset);
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** Creates ext4 on `device` with the caller's mkfs options. */
export async function makeExt4(runner: Runner, device: string, opts: readonly string[], integrityNoWipe: boolean): Promise<void> {
  if (integrityNoWipe) {
    // mke2fs probes block 0 for old signatures even in a dry run; make it readable first.
    await zeroBlocks(device, { blockSize: SECTOR_SIZE, superblocks: [0] });
    const dry = await runChecked(runner, `mkfs.ext4 -n ${device}`, 'mkfs.ext4', ['-F', '-n', ...opts, device]);
    await zeroBlocks(device, parseDryRun(dry.stdout));
  }
  await runChecked(runner, `mkfs.ext4 ${device}`, 'mkfs.ext4', mkfsArgs(device, opts, integrityNoWipe));
}

const EXT4_MAGIC_OFFSET = 1080;

/** True when the superblock magic 0xEF53 is at byte 1080. */
export function hasExt4Magic(start: Buffer): boolean {
  return start.length >= EXT4_MAGIC_OFFSET + 2 && start.readUInt16LE(EXT4_MAGIC_OFFSET) === 0xef53;
}
