// fsGroup ownership of a freshly mounted volume, as kata-agent's
// set_ownership does it: the group of every file becomes fsGroup, files gain
// group rw (ro: r), directories also group x and setgid; symlinks are left
// alone. With OnRootMismatch nothing changes when the root already fits.

import { chown, lstat, readdir, chmod } from 'node:fs/promises';
import { join } from 'node:path';

/** kata types.proto FSGroup; the policy arrives as the enum name or number. */
export interface FsGroup {
  group_id: number;
  group_change_policy?: string | number;
}

const RW = 0o660;
const RO = 0o440;
const EXEC = 0o110;
const SETGID = 0o2000;

const onRootMismatch = (p: FsGroup['group_change_policy']): boolean => p === 'OnRootMismatch' || p === 1;

async function change(path: string, gid: number, readOnly: boolean): Promise<void> {
  const st = await lstat(path);
  if (st.isSymbolicLink()) return;
  let mask = readOnly ? RO : RW;
  if (st.isDirectory()) {
    for (const name of await readdir(path)) await change(join(path, name), gid, readOnly);
    mask |= EXEC | SETGID;
  }
  await chown(path, -1, gid);
  await chmod(path, (st.mode & 0o7777) | mask);
}

export async function applyFsGroup(mountPoint: string, group: FsGroup, readOnly: boolean): Promise<void> {
  if (onRootMismatch(group.group_change_policy)) {
    const st = await lstat(mountPoint);
    const mask = (readOnly ? RO : RW) | EXEC;
    if (st.gid === group.group_id && (st.mode & mask) === mask && (st.mode & SETGID) !== 0) return;
  }
  await change(mountPoint, group.group_id, readOnly);
}
