// Mounting the opened volume, or exposing it as a device symlink, and the
// mount table queries teardown and recovery rely on.

import { lstat, mkdir, readFile, readlink, rm, symlink } from 'node:fs/promises';
import { runChecked, type Runner } from './exec.ts';
import { VolumeBusy } from './errors.ts';

/** As upstream CDH: ext4 with noatime and no data options. */
export const EXT4_MOUNT_OPTIONS = 'noatime';

export const MOUNTINFO = '/proc/self/mountinfo';

export async function readMountinfo(path = MOUNTINFO): Promise<string> {
  return readFile(path, 'utf8');
}

/** mountinfo escapes space, tab, newline and backslash as octal. */
const unescape = (s: string): string => s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));

/** The "MAJ:MIN" of what is mounted on `mountPoint` (the topmost mount), or undefined. */
export function mountedAt(mountinfo: string, mountPoint: string): string | undefined {
  let found: string | undefined;
  for (const line of mountinfo.split('\n')) {
    const f = line.split(' ');
    if (f.length > 4 && unescape(f[4]!) === mountPoint) found = f[2];
  }
  return found;
}

export async function mountExt4(runner: Runner, device: string, mountPoint: string): Promise<void> {
  await mkdir(mountPoint, { recursive: true, mode: 0o755 });
  await runChecked(runner, `mount ${device} on ${mountPoint}`, 'mount', ['-t', 'ext4', '-o', EXT4_MOUNT_OPTIONS, device, mountPoint]);
}

export async function unmount(runner: Runner, mountPoint: string): Promise<void> {
  await runChecked(runner, `umount ${mountPoint}`, 'umount', [mountPoint]);
}

/** targetType "device": mount_point becomes a symlink to /dev/mapper/<name>, as upstream. */
export async function linkDevice(mapperPath: string, mountPoint: string): Promise<void> {
  const existing = await readlink(mountPoint).catch(() => undefined);
  if (existing === mapperPath) return;
  const st = await lstat(mountPoint).catch(() => undefined);
  if (st) throw new VolumeBusy(`${mountPoint} already exists`);
  await mkdir(mountPoint.slice(0, mountPoint.lastIndexOf('/')) || '/', { recursive: true });
  await symlink(mapperPath, mountPoint);
}

export async function unlinkDevice(mapperPath: string, mountPoint: string): Promise<void> {
  if ((await readlink(mountPoint).catch(() => undefined)) === mapperPath) await rm(mountPoint);
}
