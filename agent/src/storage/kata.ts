// kata Storage → SecureMount, as kata-agent's block storage handlers do it
// (src/agent/src/storage/block_handler.rs): a `blk` or `scsi` Storage whose
// driver_options hold "encryption_key=ephemeral" (which requires
// "create_filesystem") becomes a block-device SecureMount of the resolved
// device's MAJ:MIN onto the Storage mount point, then the fsGroup ownership
// change of kata's set_ownership.

import { readdir, readlink, stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { InvalidArgument } from '../errors.ts';
import { devId } from './device.ts';
import { DeviceNotFound } from './errors.ts';
import type { SecureMountRequest } from './options.ts';
import { applyFsGroup, type FsGroup } from './ownership.ts';

/** kata agent.proto Storage, as decoded (field names as in the proto). */
export interface KataStorage {
  driver: string;
  driver_options: string[];
  source: string;
  fstype: string;
  options: string[];
  mount_point: string;
  fs_group?: FsGroup | null;
  shared?: boolean;
}

export const EPHEMERAL_ENCRYPTION = 'encryption_key=ephemeral';
export const CREATE_FILESYSTEM = 'create_filesystem';
/** kata's BLOCK_EMPTYDIR_EXT4_MKFS_OPTS. */
export const EMPTYDIR_MKFS_OPTS = '-O ^has_journal -m 0 -i 163840 -I 128';
const BLOCK_DRIVERS = new Set(['blk', 'scsi']);

/** True for the Storage kata hands to CDH: a blk/scsi Storage asking for ephemeral encryption. */
export function isEncryptedBlockStorage(s: KataStorage): boolean {
  return BLOCK_DRIVERS.has(s.driver) && s.driver_options.includes(EPHEMERAL_ENCRYPTION);
}

/** Refuses what kata refuses: not an encrypted blk/scsi Storage, or encryption without create_filesystem. */
function checkEncryptedStorage(s: KataStorage): void {
  if (!isEncryptedBlockStorage(s)) throw new InvalidArgument(`storage ${s.mount_point} is not an encrypted blk/scsi storage`);
  if (!s.driver_options.includes(CREATE_FILESYSTEM)) throw new InvalidArgument(`${EPHEMERAL_ENCRYPTION} requires ${CREATE_FILESYSTEM} for block storage`);
}

/** The exact SecureMount request kata-agent sends for this Storage, given its device's MAJ:MIN. */
export function secureMountForStorage(s: KataStorage, deviceId: string, integrity: boolean): SecureMountRequest {
  checkEncryptedStorage(s);
  return {
    volume_type: 'block-device',
    options: {
      deviceId,
      sourceType: 'empty',
      targetType: 'fileSystem',
      filesystemType: 'ext4',
      mkfsOpts: EMPTYDIR_MKFS_OPTS,
      encryptionType: 'luks2',
      dataIntegrity: String(integrity),
    },
    flags: [],
    mount_point: s.mount_point,
  };
}

export interface DeviceWait {
  readonly sysfs: string;
  readonly timeoutMs: number;
}

async function poll<T>(what: string, wait: DeviceWait, find: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + wait.timeoutMs;
  for (;;) {
    const found = await find();
    if (found !== undefined) return found;
    if (Date.now() >= deadline) throw new DeviceNotFound(`${what} did not appear within ${wait.timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** sysfs directory of the PCI function a kata PCI path ("02/01", slots from the root bus down) names. */
async function pciDir(sysfs: string, pciPath: string): Promise<string | undefined> {
  const slots = pciPath.split('/');
  let dir = join(sysfs, 'devices/pci0000:00');
  let bus = '0000:00';
  for (const [i, slot] of slots.entries()) {
    dir = join(dir, `${bus}:${slot}.0`);
    if (i === slots.length - 1) break;
    const buses = await readdir(join(dir, 'pci_bus')).catch(() => [] as string[]);
    if (buses.length !== 1) return undefined;
    bus = buses[0]!;
  }
  return (await stat(dir).catch(() => undefined)) ? dir : undefined;
}

/** The block device whose sysfs node lies under `parent`. */
async function blockUnder(sysfs: string, parent: string): Promise<string | undefined> {
  for (const name of await readdir(join(sysfs, 'block')).catch(() => [] as string[])) {
    const target = await readlink(join(sysfs, 'block', name)).catch(() => undefined);
    if (target && resolve(join(sysfs, 'block'), target).startsWith(`${parent}/`)) return name;
  }
  return undefined;
}

/** Resolves a Storage source to its /dev path, waiting for hot-plugged devices as kata does. */
export async function storageDevice(s: KataStorage, wait: DeviceWait): Promise<string> {
  if (s.source.startsWith('/dev/')) return s.source;
  if (s.driver === 'blk') {
    if (!/^[0-9a-f]{2}(\/[0-9a-f]{2}){0,7}$/.test(s.source)) throw new InvalidArgument(`blk storage source ${JSON.stringify(s.source)} is not a PCI path`);
    const name = await poll(`virtio-blk device at PCI path ${s.source}`, wait, async () => {
      const dir = await pciDir(wait.sysfs, s.source);
      return dir ? blockUnder(wait.sysfs, dir) : undefined;
    });
    return `/dev/${name}`;
  }
  if (!/^\d{1,5}:\d{1,5}$/.test(s.source)) throw new InvalidArgument(`scsi storage source ${JSON.stringify(s.source)} is not a SCSI address`);
  // kata addresses SCSI disks as "<target>:<lun>" on host 0, channel 0.
  const name = await poll(`SCSI device ${s.source}`, wait, async () => {
    const names = await readdir(join(wait.sysfs, 'bus/scsi/devices', `0:0:${s.source}`, 'block')).catch(() => [] as string[]);
    return names[0];
  });
  return `/dev/${name}`;
}

/** Whatever performs the SecureMount (the storage capability, or a CDH client). */
export type SecureMountFn = (req: SecureMountRequest) => Promise<unknown>;

/**
 * kata's encrypted emptyDir flow: resolve the device, SecureMount it with the
 * exact upstream options, then apply fsGroup. Returns the mount point.
 */
export async function mountEncryptedStorage(s: KataStorage, deps: { wait: DeviceWait; integrity: boolean; secureMount: SecureMountFn }): Promise<string> {
  checkEncryptedStorage(s); // before waiting for any device
  const path = await storageDevice(s, deps.wait);
  const st = await stat(path, { bigint: true }).catch(() => undefined);
  if (!st?.isBlockDevice()) throw new DeviceNotFound(`${path} is not a block device`);
  await deps.secureMount(secureMountForStorage(s, devId(st.rdev), deps.integrity));
  if (s.fs_group) await applyFsGroup(s.mount_point, s.fs_group, s.options.includes('ro'));
  return s.mount_point;
}
