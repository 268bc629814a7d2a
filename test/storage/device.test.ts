import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Code } from '../../agent/src/errors.ts';
import { checkUnused, devId, isAllZero, resolveDevice } from '../../agent/src/storage/device.ts';
import { DeviceNotFound, VolumeBusy } from '../../agent/src/storage/errors.ts';
import { processRunner } from '../../agent/src/storage/exec.ts';
import { mountedAt } from '../../agent/src/storage/mount.ts';

const dir = mkdtempSync(join(tmpdir(), 'tee-agent-dev-'));
test.after(() => rmSync(dir, { recursive: true, force: true }));
const env = (sysfs: string) => ({ sysfs, runner: processRunner });

function fakeUevent(sysfs: string, id: string, devname: string): void {
  mkdirSync(join(sysfs, 'dev/block', id), { recursive: true });
  writeFileSync(join(sysfs, 'dev/block', id, 'uevent'), `MAJOR=${id.split(':')[0]}\nMINOR=${id.split(':')[1]}\nDEVNAME=${devname}\nDEVTYPE=disk\n`);
}

test('dev_t splits into MAJ:MIN the way the kernel encodes it', () => {
  assert.equal(devId(0x0700n), '7:0');
  assert.equal(devId(0xfe10n), '254:16');
  assert.equal(devId(1050668n), '8:300'); // minor bits above 0xff live at bit 20
  assert.equal(devId(4096n << 32n), '4096:0'); // major bits above 0xfff live at bit 44
  assert.equal(devId(259n << 8n | 1n), '259:1');
});

test('deviceId resolves through sysfs uevent DEVNAME, and the node must be that very device', async () => {
  // The host's own sysfs: loop0 is 7:0.
  assert.deepEqual(await resolveDevice({ kind: 'id', major: 7, minor: 0 }, env('/sys')), { path: '/dev/loop0', id: '7:0' });
  const sysfs = join(dir, 'sys1');
  fakeUevent(sysfs, '7:0', 'loop1');
  await assert.rejects(resolveDevice({ kind: 'id', major: 7, minor: 0 }, env(sysfs)), /deviceId 7:0: \/dev\/loop1 is device 7:1/);
  fakeUevent(sysfs, '7:5', '../etc/passwd');
  await assert.rejects(resolveDevice({ kind: 'id', major: 7, minor: 5 }, env(sysfs)), /no usable DEVNAME/);
  await assert.rejects(resolveDevice({ kind: 'id', major: 99, minor: 99 }, env(sysfs)), (err: unknown) => err instanceof DeviceNotFound && err.code === Code.NOT_FOUND);
});

test('devicePath must be an existing block device', async () => {
  assert.deepEqual(await resolveDevice({ kind: 'path', path: '/dev/loop2' }, env('/sys')), { path: '/dev/loop2', id: '7:2' });
  await assert.rejects(resolveDevice({ kind: 'path', path: '/dev/null' }, env('/sys')), /\/dev\/null is not a block device/);
  await assert.rejects(resolveDevice({ kind: 'path', path: '/dev/mapper/none-such' }, env('/sys')), /does not exist/);
});

test('a device that is mounted or held by another device is refused', async () => {
  const sysfs = join(dir, 'sys2');
  mkdirSync(join(sysfs, 'dev/block/7:3/holders'), { recursive: true });
  const dev = { path: '/dev/loop3', id: '7:3' };
  await checkUnused(sysfs, dev, '');
  writeFileSync(join(sysfs, 'dev/block/7:3/holders/dm-0'), '');
  await assert.rejects(checkUnused(sysfs, dev, ''), (err: unknown) => err instanceof VolumeBusy && /in use by dm-0/.test(err.message));
  rmSync(join(sysfs, 'dev/block/7:3/holders/dm-0'));
  await assert.rejects(checkUnused(sysfs, dev, '36 25 7:3 / /mnt rw,relatime shared:1 - ext4 /dev/loop3 rw\n'), /is mounted/);
});

test('mountinfo: the topmost mount on a path, with octal escapes', () => {
  const info = ['30 1 254:0 / / rw - ext4 /dev/vda rw', '40 30 253:1 / /run/a\\040b rw - ext4 /dev/mapper/x rw', '41 40 253:2 / /run/a\\040b rw - ext4 /dev/mapper/y rw'].join('\n');
  assert.equal(mountedAt(info, '/run/a b'), '253:2');
  assert.equal(mountedAt(info, '/run/c'), undefined);
});

test('all-zero detection reads to the end and stops at the first data', async () => {
  const p = join(dir, 'z.img');
  writeFileSync(p, '');
  truncateSync(p, (3 << 20) + 17);
  assert.equal(await isAllZero(p), true);
  writeFileSync(p, Buffer.from([1]), { flag: 'r+' });
  assert.equal(await isAllZero(p), false);
  writeFileSync(p, Buffer.from([0]), { flag: 'r+' });
  const fh = await import('node:fs/promises').then((m) => m.open(p, 'r+'));
  await fh.write(Buffer.from([9]), 0, 1, (3 << 20) + 16);
  await fh.close();
  assert.equal(await isAllZero(p), false);
});
