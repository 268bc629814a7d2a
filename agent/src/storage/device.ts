// Finding the block device a request names: MAJ:MIN through sysfs (as
// upstream CDH does), a path, or an LVM volume activated on demand. Also the
// read-only probes run on a device before anything is written to it.

import { constants } from 'node:fs';
import { open, readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { DeviceNotFound, StorageCommandFailed, VolumeBusy } from './errors.ts';
import { runChecked, type Runner } from './exec.ts';
import type { DeviceSpec } from './options.ts';

export interface ResolvedDevice {
  /** /dev path of the block device. */
  readonly path: string;
  /** "MAJ:MIN", the identity used for locking and for state records. */
  readonly id: string;
}

export interface DeviceEnv {
  /** sysfs mount point, "/sys" in the guest. */
  readonly sysfs: string;
  readonly runner: Runner;
}

/** Splits a Linux dev_t (as stat returns it with bigint: true) into "MAJ:MIN". */
export function devId(rdev: bigint): string {
  const major = ((rdev >> 8n) & 0xfffn) | ((rdev >> 32n) & 0xfffff000n);
  const minor = (rdev & 0xffn) | ((rdev >> 12n) & 0xffffff00n);
  return `${major}:${minor}`;
}

async function blockDevice(path: string, what: string): Promise<ResolvedDevice> {
  let st;
  try {
    st = await stat(path, { bigint: true });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new DeviceNotFound(`${what}: ${path} does not exist`);
    throw err;
  }
  if (!st.isBlockDevice()) throw new DeviceNotFound(`${what}: ${path} is not a block device`);
  return { path, id: devId(st.rdev) };
}

/** DEVNAME from /sys/dev/block/MAJ:MIN/uevent. */
export async function devnameOf(sysfs: string, id: string): Promise<string> {
  let text: string;
  try {
    text = await readFile(join(sysfs, 'dev/block', id, 'uevent'), 'utf8');
  } catch {
    throw new DeviceNotFound(`no block device ${id} in ${sysfs}/dev/block`);
  }
  const name = /^DEVNAME=(.+)$/m.exec(text)?.[1];
  if (!name || !/^[A-Za-z0-9_.:+-]+(\/[A-Za-z0-9_.:+-]+)*$/.test(name) || name.split('/').includes('..')) {
    throw new DeviceNotFound(`block device ${id} has no usable DEVNAME in sysfs`);
  }
  return name;
}

// /dev/<vg>/<lv> for LVM; these first components are never volume groups.
const NOT_VG = new Set(['mapper', 'disk', 'block', 'char', 'shm', 'pts', 'net', 'bus', 'cpu', 'dri', 'input', 'snd', 'vfio', 'hugepages', 'mqueue']);

function lvmPathParts(path: string): { vg: string; lv: string } | undefined {
  const m = /^\/dev\/([A-Za-z0-9+_.][A-Za-z0-9+_.-]*)\/([A-Za-z0-9+_.][A-Za-z0-9+_.-]*)$/.exec(path);
  return m && !NOT_VG.has(m[1]!) ? { vg: m[1]!, lv: m[2]! } : undefined;
}

/** Activates VG/LV when needed and returns its device-mapper node (no udev symlinks needed). */
async function lvmDevice(env: DeviceEnv, vg: string, lv: string): Promise<ResolvedDevice> {
  const name = `${vg}/${lv}`;
  const dmPath = async (): Promise<string> => {
    const res = await runChecked(env.runner, `lvm lvs ${name}`, 'lvm', ['lvs', '--noheadings', '--options', 'lv_active,lv_dm_path', name], { okCodes: [0, 5] });
    if (res.code !== 0) throw new DeviceNotFound(`LVM volume ${name} does not exist`);
    const [active = '', path = ''] = res.stdout.trim().split(/\s+/);
    return active === 'active' ? path : '';
  };
  let path = await dmPath();
  if (!path) {
    await runChecked(env.runner, `lvm lvchange --activate y ${name}`, 'lvm', ['lvchange', '--activate', 'y', name]);
    path = await dmPath();
    if (!path) throw new StorageCommandFailed(`activating LVM volume ${name}`, 0, 'still inactive');
  }
  // lvm creates the node itself when no udev runs; give it a moment otherwise.
  for (let i = 0; ; i++) {
    try {
      return await blockDevice(path, `LVM volume ${name}`);
    } catch (err) {
      if (!(err instanceof DeviceNotFound) || i >= 20) throw err;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

export async function resolveDevice(spec: DeviceSpec, env: DeviceEnv): Promise<ResolvedDevice> {
  switch (spec.kind) {
    case 'id': {
      const id = `${spec.major}:${spec.minor}`;
      const dev = await blockDevice(`/dev/${await devnameOf(env.sysfs, id)}`, `deviceId ${id}`);
      if (dev.id !== id) throw new DeviceNotFound(`deviceId ${id}: ${dev.path} is device ${dev.id}`);
      return dev;
    }
    case 'path': {
      try {
        return await blockDevice(spec.path, 'devicePath');
      } catch (err) {
        const lvm = lvmPathParts(spec.path);
        if (!(err instanceof DeviceNotFound) || !lvm) throw err;
        return lvmDevice(env, lvm.vg, lvm.lv);
      }
    }
    case 'lvm':
      return lvmDevice(env, spec.vg, spec.lv);
  }
}

/** Refuses a device that is mounted or stacked under another device (a mapping, a VG, a RAID). */
export async function checkUnused(sysfs: string, dev: ResolvedDevice, mountinfo: string): Promise<void> {
  let holders: string[] = [];
  try {
    holders = await readdir(join(sysfs, 'dev/block', dev.id, 'holders'));
  } catch {
    // No holders directory: nothing stacked on it.
  }
  if (holders.length > 0) throw new VolumeBusy(`${dev.path} is in use by ${holders.join(', ')}`);
  for (const line of mountinfo.split('\n')) {
    if (line.split(' ')[2] === dev.id) throw new VolumeBusy(`${dev.path} is mounted`);
  }
}

const CHUNK = 1 << 20;

/** Reads `length` bytes (or all) from the start of a device. */
export async function readStart(path: string, length: number): Promise<Buffer> {
  const fh = await open(path, constants.O_RDONLY);
  try {
    const buf = Buffer.alloc(length);
    const { bytesRead } = await fh.read(buf, 0, length, 0);
    return buf.subarray(0, bytesRead);
  } finally {
    await fh.close();
  }
}

/** True when every byte of the device is zero; stops at the first non-zero chunk. */
export async function isAllZero(path: string, signal?: AbortSignal): Promise<boolean> {
  const fh = await open(path, constants.O_RDONLY);
  try {
    const buf = Buffer.alloc(CHUNK);
    const zero = Buffer.alloc(CHUNK);
    for (let pos = 0; ; ) {
      signal?.throwIfAborted();
      const { bytesRead } = await fh.read(buf, 0, CHUNK, pos);
      if (bytesRead === 0) return true;
      if (!buf.subarray(0, bytesRead).equals(zero.subarray(0, bytesRead))) return false;
      pos += bytesRead;
    }
  } finally {
    await fh.close();
  }
}
