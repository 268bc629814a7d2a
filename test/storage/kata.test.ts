import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chownSync, lstatSync, mkdirSync, mkdtempSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Code, InvalidArgument } from '../../agent/src/errors.ts';
import { DeviceNotFound } from '../../agent/src/storage/errors.ts';
import { isEncryptedBlockStorage, mountEncryptedStorage, secureMountForStorage, storageDevice, type KataStorage } from '../../agent/src/storage/kata.ts';
import type { SecureMountRequest } from '../../agent/src/storage/options.ts';
import { KATA_EMPTYDIR_OPTIONS } from '../fixtures/kata.ts';
import { applyFsGroup } from '../../agent/src/storage/ownership.ts';
import { parseSecureMount } from '../../agent/src/storage/options.ts';

const dir = mkdtempSync(join(tmpdir(), 'tee-agent-kata-'));
test.after(() => rmSync(dir, { recursive: true, force: true }));

const storage = (over: Partial<KataStorage> = {}): KataStorage => ({
  driver: 'blk',
  driver_options: ['encryption_key=ephemeral', 'create_filesystem'],
  source: '02/01',
  fstype: 'ext4',
  options: [],
  mount_point: join(dir, 'mnt'),
  fs_group: null,
  shared: true,
  ...over,
});

/** A sysfs tree like QEMU's: virtio-blk behind a PCI bridge in slot 02, device in slot 01 of bus 01. */
function pciSysfs(root: string, blockName: string): void {
  const fn = join(root, 'devices/pci0000:00/0000:00:02.0');
  mkdirSync(join(fn, 'pci_bus/0000:01'), { recursive: true });
  mkdirSync(join(fn, '0000:01:01.0/virtio3/block', blockName), { recursive: true });
  mkdirSync(join(root, 'block'), { recursive: true });
  symlinkSync(`../devices/pci0000:00/0000:00:02.0/0000:01:01.0/virtio3/block/${blockName}`, join(root, 'block', blockName));
}

test('an encrypted emptyDir Storage maps to exactly the SecureMount kata-agent sends', () => {
  const s = storage();
  assert.ok(isEncryptedBlockStorage(s));
  assert.deepEqual(secureMountForStorage(s, '254:16', true), {
    volume_type: 'block-device',
    options: { deviceId: '254:16', ...KATA_EMPTYDIR_OPTIONS, dataIntegrity: 'true' },
    flags: [],
    mount_point: s.mount_point,
  });
  assert.equal(secureMountForStorage(storage({ driver: 'scsi', source: '0:1' }), '8:0', false).options.dataIntegrity, 'false');
  // And the request is one our own SecureMount parser accepts as an ephemeral volume.
  const spec = parseSecureMount(secureMountForStorage(s, '254:16', true), false);
  assert.equal(spec.key.kind, 'ephemeral');
  assert.equal(spec.source, 'empty');
});

test('encryption_key=ephemeral without create_filesystem is refused, as kata does; plain storage is not ours', async () => {
  assert.throws(() => secureMountForStorage(storage({ driver_options: ['encryption_key=ephemeral'] }), '1:1', true), (err: unknown) => err instanceof InvalidArgument && /requires create_filesystem/.test(err.message));
  assert.ok(!isEncryptedBlockStorage(storage({ driver_options: ['create_filesystem'] })));
  // Refused before waiting for a device that will never appear.
  const t0 = Date.now();
  await assert.rejects(
    mountEncryptedStorage(storage({ driver_options: ['encryption_key=ephemeral'] }), { wait: { sysfs: join(dir, 'nothing'), timeoutMs: 10_000 }, integrity: true, secureMount: async () => assert.fail('not called') }),
    /requires create_filesystem/,
  );
  assert.ok(Date.now() - t0 < 1000);
  assert.ok(!isEncryptedBlockStorage(storage({ driver: 'virtio-fs' })));
});

test('blk PCI paths and SCSI addresses resolve through sysfs, waiting for hot-plug', async () => {
  const sysfs = join(dir, 'sys1');
  setTimeout(() => pciSysfs(sysfs, 'loop5'), 150);
  assert.equal(await storageDevice(storage(), { sysfs, timeoutMs: 3000 }), '/dev/loop5');
  const scsi = join(dir, 'sys2');
  mkdirSync(join(scsi, 'bus/scsi/devices/0:0:0:1/block/loop6'), { recursive: true });
  assert.equal(await storageDevice(storage({ driver: 'scsi', source: '0:1' }), { sysfs: scsi, timeoutMs: 100 }), '/dev/loop6');
  await assert.rejects(storageDevice(storage({ source: '03' }), { sysfs, timeoutMs: 120 }), (err: unknown) => err instanceof DeviceNotFound && err.code === Code.NOT_FOUND && /did not appear within 120 ms/.test(err.message));
  await assert.rejects(storageDevice(storage({ source: '../x' }), { sysfs, timeoutMs: 10 }), InvalidArgument);
  await assert.rejects(storageDevice(storage({ driver: 'scsi', source: 'x' }), { sysfs, timeoutMs: 10 }), InvalidArgument);
});

test('the whole flow: resolve, SecureMount with the device\'s MAJ:MIN, then fsGroup ownership', async () => {
  const sysfs = join(dir, 'sys3');
  pciSysfs(sysfs, 'loop7');
  const mnt = join(dir, 'vol');
  const calls: SecureMountRequest[] = [];
  const s = storage({ mount_point: mnt, fs_group: { group_id: 4242, group_change_policy: 'Always' } });
  const out = await mountEncryptedStorage(s, {
    wait: { sysfs, timeoutMs: 1000 },
    integrity: true,
    // Stands in for the storage capability: makes the mount point with some content.
    secureMount: async (req) => {
      calls.push(req);
      mkdirSync(join(req.mount_point, 'sub'), { recursive: true });
      writeFileSync(join(req.mount_point, 'sub/f'), 'x', { mode: 0o600 });
      symlinkSync('/etc/passwd', join(req.mount_point, 'link'));
    },
  });
  assert.equal(out, mnt);
  assert.equal(calls.length, 1);
  assert.equal(calls[0]!.options.deviceId, '7:7');
  for (const p of [mnt, join(mnt, 'sub')]) {
    const st = statSync(p);
    assert.equal(st.gid, 4242);
    assert.equal(st.mode & 0o2770, 0o2770, p);
  }
  const f = statSync(join(mnt, 'sub/f'));
  assert.equal(f.gid, 4242);
  assert.equal(f.mode & 0o777, 0o660);
  assert.notEqual(lstatSync(join(mnt, 'link')).gid, 4242, 'symlinks are left alone');

  // OnRootMismatch: the root already fits, so nothing below it is touched.
  chownSync(join(mnt, 'sub/f'), 0, 0);
  await applyFsGroup(mnt, { group_id: 4242, group_change_policy: 'OnRootMismatch' }, false);
  assert.equal(statSync(join(mnt, 'sub/f')).gid, 0);
  await applyFsGroup(mnt, { group_id: 4343, group_change_policy: 'OnRootMismatch' }, false);
  assert.equal(statSync(join(mnt, 'sub/f')).gid, 4343);
});
