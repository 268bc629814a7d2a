// Entry names: cleaned lexically and never resolved by the kernel. Absolute
// names are relative to the root; any `..` component is refused outright
// (real layers never need one, and refusing is simpler to trust than clamping).

import { UnsafeArchive } from './errors.ts';

export const WHITEOUT_PREFIX = '.wh.';
export const OPAQUE_MARKER = '.wh..wh..opq';
const META_PREFIX = '.wh..wh.';
const PATH_MAX = 4095;
const NAME_MAX = 255;

/** Root-relative components of an entry name ([] is the root itself). */
export function cleanName(raw: string, what = 'name'): string[] {
  if (raw.includes('\0')) throw new UnsafeArchive(`${what} contains a NUL byte`, raw);
  if (Buffer.byteLength(raw) > PATH_MAX) throw new UnsafeArchive(`${what} is longer than ${PATH_MAX} bytes`, raw);
  const parts: string[] = [];
  for (const p of raw.split('/')) {
    if (p === '' || p === '.') continue;
    if (p === '..') throw new UnsafeArchive(`${what} has a ".." component`, raw);
    if (Buffer.byteLength(p) > NAME_MAX) throw new UnsafeArchive(`${what} has a component longer than ${NAME_MAX} bytes`, raw);
    parts.push(p);
  }
  return parts;
}

export type Whiteout =
  | { kind: 'none' }
  | { kind: 'opaque' }
  /** AUFS bookkeeping (.wh..wh.plnk, .wh..wh.aufs): not content, skipped. */
  | { kind: 'meta' }
  | { kind: 'whiteout'; target: string };

/** What an entry's cleaned components mean under the image-spec whiteout rules. */
export function classifyWhiteout(parts: readonly string[], raw: string): Whiteout {
  for (let i = 0; i < parts.length - 1; i++) {
    if (parts[i]!.startsWith(WHITEOUT_PREFIX)) throw new UnsafeArchive('whiteout name used as a directory', raw);
  }
  const base = parts[parts.length - 1];
  if (base === undefined || !base.startsWith(WHITEOUT_PREFIX)) return { kind: 'none' };
  if (base === OPAQUE_MARKER) return { kind: 'opaque' };
  if (base.startsWith(META_PREFIX)) return { kind: 'meta' };
  const target = base.slice(WHITEOUT_PREFIX.length);
  if (target === '') throw new UnsafeArchive('bare whiteout ".wh." names nothing', raw);
  if (target === '.' || target === '..') throw new UnsafeArchive('whiteout of "." or ".."', raw);
  return { kind: 'whiteout', target };
}
