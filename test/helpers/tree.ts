// Snapshot and compare directory trees (a pulled rootfs against `umoci
// unpack` of the same image): paths, types, modes, owners, sizes, contents,
// link targets, hardlink groups and, for non-directories, mtimes.

import { createHash } from 'node:crypto';
import { lstatSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';

export interface EntryInfo {
  readonly type: 'file' | 'dir' | 'symlink' | 'char' | 'block' | 'fifo' | 'socket';
  readonly mode: number;
  readonly uid: number;
  readonly gid: number;
  readonly size?: number;
  readonly sha256?: string;
  readonly target?: string;
  readonly mtimeSec?: number;
  /** For regular files with nlink > 1: the other paths in this tree sharing the inode. */
  readonly hardlinks?: readonly string[];
  readonly rdev?: number;
}

export function snapshotTree(root: string): Map<string, EntryInfo> {
  const out = new Map<string, EntryInfo>();
  const inodes = new Map<string, string[]>();
  const walk = (dir: string, rel: string): void => {
    for (const name of readdirSync(dir).sort()) {
      const p = join(dir, name);
      const r = rel ? `${rel}/${name}` : name;
      const st = lstatSync(p);
      const base = { mode: st.mode & 0o7777, uid: st.uid, gid: st.gid };
      if (st.isDirectory()) {
        out.set(r, { type: 'dir', ...base });
        walk(p, r);
      } else if (st.isSymbolicLink()) {
        out.set(r, { type: 'symlink', ...base, mode: 0, target: readlinkSync(p), mtimeSec: Math.floor(st.mtimeMs / 1000) });
      } else if (st.isFile()) {
        out.set(r, { type: 'file', ...base, size: st.size, sha256: createHash('sha256').update(readFileSync(p)).digest('hex'), mtimeSec: Math.floor(st.mtimeMs / 1000) });
        if (st.nlink > 1) {
          const key = `${st.dev}:${st.ino}`;
          inodes.set(key, [...(inodes.get(key) ?? []), r]);
        }
      } else {
        const type = st.isCharacterDevice() ? 'char' : st.isBlockDevice() ? 'block' : st.isFIFO() ? 'fifo' : 'socket';
        out.set(r, { type, ...base, rdev: st.rdev });
      }
    }
  };
  walk(root, '');
  for (const group of inodes.values()) {
    if (group.length < 2) continue;
    for (const p of group) out.set(p, { ...out.get(p)!, hardlinks: group.filter((q) => q !== p) });
  }
  return out;
}

/** Human-readable differences between two snapshots; empty when equal. */
export function diffTrees(actual: Map<string, EntryInfo>, expected: Map<string, EntryInfo>, opts: { mtimes?: boolean } = {}): string[] {
  const diffs: string[] = [];
  for (const [p, e] of expected) {
    const a = actual.get(p);
    if (!a) {
      diffs.push(`missing: ${p} (${e.type})`);
      continue;
    }
    const fields: Array<keyof EntryInfo> = ['type', 'mode', 'uid', 'gid', 'size', 'sha256', 'target', 'rdev'];
    if (opts.mtimes !== false) fields.push('mtimeSec');
    for (const f of fields) {
      if (JSON.stringify(a[f]) !== JSON.stringify(e[f])) diffs.push(`${p}: ${f} ${JSON.stringify(a[f])} != expected ${JSON.stringify(e[f])}`);
    }
    if (JSON.stringify([...(a.hardlinks ?? [])].sort()) !== JSON.stringify([...(e.hardlinks ?? [])].sort())) {
      diffs.push(`${p}: hardlinks ${JSON.stringify(a.hardlinks ?? [])} != expected ${JSON.stringify(e.hardlinks ?? [])}`);
    }
  }
  for (const p of actual.keys()) if (!expected.has(p)) diffs.push(`unexpected: ${p} (${actual.get(p)!.type})`);
  return diffs;
}
