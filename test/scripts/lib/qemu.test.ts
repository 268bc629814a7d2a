// The pure parts of scripts/lib/qemu.ts: the kata initdata device, the TDX
// MRCONFIGID, and the QEMU command line for each boot mode (TDX cannot boot
// on this host, so its arguments are checked here).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { gunzipSync } from 'node:zlib';
import { initdataDevice, initdataMrConfigId, qemuArgs, type QemuPlan } from '../../../scripts/lib/qemu.ts';

const toml = (alg: string): Buffer => Buffer.from(`version = "0.1.0"\nalgorithm = "${alg}"\n[data]\n"aa.toml" = "x"\n`);

test('initdata device: "initdata", u64 LE length, gzip TOML, whole sectors', () => {
  const t = toml('sha384');
  const dev = initdataDevice(t);
  assert.equal(dev.subarray(0, 8).toString('ascii'), 'initdata');
  const len = Number(dev.readBigUInt64LE(8));
  assert.ok(gunzipSync(dev.subarray(16, 16 + len)).equals(t));
  assert.equal(dev.length % 512, 0);
  assert.ok(dev.subarray(16 + len).every((b) => b === 0));
});

test('MRCONFIGID is the initdata digest under its algorithm, zero-padded or cut to 48 bytes', () => {
  const t384 = toml('sha384');
  assert.ok(initdataMrConfigId(t384).equals(createHash('sha384').update(t384).digest()));
  const t256 = toml('sha256');
  assert.ok(initdataMrConfigId(t256).equals(Buffer.concat([createHash('sha256').update(t256).digest(), Buffer.alloc(16)])));
  const t512 = toml('sha512');
  assert.ok(initdataMrConfigId(t512).equals(createHash('sha512').update(t512).digest().subarray(0, 48)));
  assert.throws(() => initdataMrConfigId(toml('sha-256')), /algorithm must be sha256, sha384 or sha512/);
});

const plan: QemuPlan = {
  accel: 'tcg',
  kernel: '/k',
  initrd: '/i',
  append: 'console=ttyS0',
  memoryMb: 512,
  cpus: 2,
  consoleLog: '/w/console.log',
  qmpSocket: '/w/qmp.sock',
  hostfwd: [{ host: 40001, guest: 50000 }],
  guestfwd: [{ guest: 5000, host: 40002 }],
  disks: [{ path: '/d/a.img', serial: 'scratch' }, { path: '/d/b.img', readonly: true }],
};
const after = (args: string[], flag: string): string[] => args.flatMap((a, i) => (args[i - 1] === flag ? [a] : []));

test('TCG: -accel tcg -cpu max, restricted user net with loopback-only forwards, raw virtio-blk disks', () => {
  const args = qemuArgs(plan);
  assert.deepEqual(args.slice(0, 6), ['-accel', 'tcg', '-cpu', 'max', '-machine', 'q35']);
  const [netdev] = after(args, '-netdev');
  assert.match(netdev!, /^user,id=n0,restrict=on,/);
  assert.match(netdev!, /,hostfwd=tcp:127\.0\.0\.1:40001-:50000/);
  assert.match(netdev!, /,guestfwd=tcp:10\.0\.2\.100:5000-cmd:socat - TCP:127\.0\.0\.1:40002/);
  assert.deepEqual(after(args, '-drive'), ['file=/d/a.img,if=none,id=d0,format=raw,cache=none,aio=threads', 'file=/d/b.img,if=none,id=d1,format=raw,cache=none,aio=threads,readonly=on']);
  assert.ok(after(args, '-device').includes('virtio-blk-pci,drive=d0,serial=scratch'));
  assert.deepEqual(after(args, '-append'), ['console=ttyS0']);
  assert.ok(!args.includes('kvm'));
});

test('TDX: q35 with split irqchip and confidential-guest-support, tdx-guest with mrconfigid, TDVF', () => {
  const mr = initdataMrConfigId(toml('sha384'));
  const args = qemuArgs({ ...plan, accel: 'tdx', tdvf: '/fw/OVMF.inteltdx.fd', mrConfigId: mr });
  assert.deepEqual(after(args, '-accel'), ['kvm']);
  assert.deepEqual(after(args, '-machine'), ['q35,kernel_irqchip=split,confidential-guest-support=tdx0,hpet=off']);
  assert.deepEqual(after(args, '-object'), [`tdx-guest,id=tdx0,mrconfigid=${mr.toString('base64')}`]);
  assert.deepEqual(after(args, '-bios'), ['/fw/OVMF.inteltdx.fd']);
  assert.deepEqual(after(qemuArgs({ ...plan, accel: 'tdx', tdvf: '/fw' }), '-object'), ['tdx-guest,id=tdx0']);
  assert.throws(() => qemuArgs({ ...plan, accel: 'tdx' }), /TDVF/);
});

test('KVM: -accel kvm -cpu host', () => {
  assert.deepEqual(qemuArgs({ ...plan, accel: 'kvm' }).slice(0, 6), ['-accel', 'kvm', '-cpu', 'host', '-machine', 'q35']);
});
