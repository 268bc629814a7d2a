// Bundles may be overlay mounts; tests unmount everything under their temp
// directory before removing it.

import { execFileSync } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';

/** Mount points at or below `dir`, deepest first (octal escapes in /proc/self/mounts decoded). */
export function mountsUnder(dir: string): string[] {
  const decode = (s: string): string => s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
  return readFileSync('/proc/self/mounts', 'utf8')
    .split('\n')
    .map((l) => decode(l.split(' ')[1] ?? ''))
    .filter((m) => m === dir || m.startsWith(`${dir}/`))
    .sort((a, b) => b.length - a.length);
}

/** Unmount whatever is mounted under `dir`, then remove it. */
export function removeTree(dir: string): void {
  for (const m of mountsUnder(dir)) execFileSync('umount', [m]);
  rmSync(dir, { recursive: true, force: true });
}
