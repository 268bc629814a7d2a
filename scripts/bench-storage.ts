// bench-storage: encrypted volumes in the guest, against the raw virtio disk
// in the same boot. Sequential write and read throughput on the block device
// (raw disk; dm-crypt; dm-crypt + dm-integrity hmac-sha256 without journal,
// as ephemeral volumes run), interleaved round by round so machine noise hits
// all three alike, reported as medians and as ratios to raw. Plus the time
// SecureMount takes to set up a 1 GiB ephemeral volume the way kata asks for
// an encrypted emptyDir (format, open, ext4, mount), with and without integrity.

import { mkdtempSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { bootVm, type Vm } from './lib/qemu.ts';

const { values: args } = parseArgs({
  options: {
    size: { type: 'string', default: '64' },
    rounds: { type: 'string', default: '3' },
    'setup-gib': { type: 'string', default: '1' },
    'setup-rounds': { type: 'string', default: '3' },
    accel: { type: 'string', default: 'auto' },
    help: { type: 'boolean', short: 'h' },
  },
});
if (args.help) {
  console.log(`Usage: scripts/bench-storage [--size MIB] [--rounds N] [--setup-gib G] [--setup-rounds N] [--accel auto|tcg|kvm|tdx]

Boots the guest image (build/guest, made by guest-rootfs/build) once with three
scratch disks and measures, inside the guest:
  - sequential write (1 MiB writes, then fsync) and read (after dropping caches)
    of --size MiB on: the raw virtio disk; an ephemeral dm-crypt volume
    (aes-xts-plain64, 4096-byte sectors); the same with dm-integrity
    hmac-sha256 (no journal). Ratios are to the raw disk in the same round.
  - wall time of SecureMount for a --setup-gib GiB ephemeral volume with the
    options kata sends for an encrypted emptyDir (mkfs included), with and
    without integrity, then SecureUnmount.
Figures are medians over the rounds. Under TCG (no KVM) the absolute numbers
are emulation speed; the ratios are what to compare.`);
  process.exit(0);
}
const sizeMiB = Number(args.size);
const rounds = Number(args.rounds);
const setupGiB = Number(args['setup-gib']);
const setupRounds = Number(args['setup-rounds']);

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

// Runs in the guest with its node: times a sequential write or read of a block device.
const GUEST_IO = `
const fs = require('fs');
const [op, dev, mib] = process.argv.slice(2);
const chunk = Buffer.alloc(1 << 20);
for (let i = 0; i < chunk.length; i += 4) chunk.writeUInt32LE((i * 2654435761) >>> 0, i);
const n = Number(mib);
if (op === 'read') fs.writeFileSync('/proc/sys/vm/drop_caches', '3');
const fd = fs.openSync(dev, op === 'write' ? 'r+' : 'r');
const t0 = process.hrtime.bigint();
for (let i = 0; i < n; i++) {
  if (op === 'write') fs.writeSync(fd, chunk, 0, chunk.length, i * chunk.length);
  else fs.readSync(fd, chunk, 0, chunk.length, i * chunk.length);
}
if (op === 'write') fs.fsyncSync(fd);
const s = Number(process.hrtime.bigint() - t0) / 1e9;
fs.closeSync(fd);
process.stdout.write(JSON.stringify({ mibPerS: n / s }));
`;

async function io(vm: Vm, op: 'write' | 'read', dev: string): Promise<number> {
  return (JSON.parse(await vm.run(`node /tmp/bench-io.js ${op} ${dev} ${sizeMiB}`, { timeoutMs: 900_000 })) as { mibPerS: number }).mibPerS;
}

async function diskBySerial(vm: Vm, serial: string): Promise<{ dev: string; id: string }> {
  const out = (await vm.run(`for d in /sys/block/vd*; do [ "$(cat $d/serial)" = ${serial} ] && echo /dev/\${d##*/} $(cat $d/dev); done; true`)).trim();
  const [dev = '', id = ''] = out.split(' ');
  if (!dev) throw new Error(`no disk ${serial} in the guest`);
  return { dev, id };
}

const secureMount = (vm: Vm, options: Record<string, string>, mountPoint: string) =>
  vm.grpcCall('api.SecureMountService', 'SecureMount', { volume_type: 'block-device', options, flags: [], mount_point: mountPoint }, 1_800_000);
const secureUnmount = (vm: Vm, mountPoint: string) => vm.grpcCall('teeagent.SecureStorageService', 'SecureUnmount', { mount_point: mountPoint }, 600_000);

const dir = mkdtempSync(join(tmpdir(), 'tee-bench-storage-'));
let vm: Vm | undefined;
try {
  const disks = [
    { name: 'raw', size: (sizeMiB + 16) << 20 },
    { name: 'crypt', size: (sizeMiB + 16) << 20 },
    { name: 'integ', size: Math.ceil(sizeMiB * 1.1 + 32) << 20 },
    { name: 'setup', size: setupGiB * (1 << 30) },
  ];
  for (const d of disks) {
    writeFileSync(join(dir, `${d.name}.img`), '');
    truncateSync(join(dir, `${d.name}.img`), d.size);
  }
  process.stderr.write('bench-storage: booting the guest\n');
  vm = await bootVm({ debugConsole: true, accel: args.accel as 'auto', disks: disks.map((d) => ({ path: join(dir, `${d.name}.img`), serial: d.name })), memoryMb: 1536 });
  process.stderr.write(`bench-storage: guest up (${vm.accel}) in ${vm.readyMs} ms\n`);
  await vm.writeFile('/tmp/bench-io.js', GUEST_IO);

  const raw = await diskBySerial(vm, 'raw');
  const crypt = await diskBySerial(vm, 'crypt');
  const integ = await diskBySerial(vm, 'integ');
  const setup = await diskBySerial(vm, 'setup');
  // Ephemeral volumes as raw mapped devices (targetType device): no filesystem between dd and dm.
  await secureMount(vm, { deviceId: crypt.id, encryptionType: 'luks2', dataIntegrity: 'false', targetType: 'device' }, '/run/bench/crypt');
  await secureMount(vm, { deviceId: integ.id, encryptionType: 'luks2', dataIntegrity: 'true', targetType: 'device' }, '/run/bench/integ');
  const targets = { raw: raw.dev, crypt: '/run/bench/crypt', integ: '/run/bench/integ' } as const;

  const results: Record<keyof typeof targets, { write: number[]; read: number[] }> = { raw: { write: [], read: [] }, crypt: { write: [], read: [] }, integ: { write: [], read: [] } };
  for (let r = 0; r < rounds; r++) {
    for (const [name, dev] of Object.entries(targets) as Array<[keyof typeof targets, string]>) {
      results[name].write.push(await io(vm, 'write', dev));
      results[name].read.push(await io(vm, 'read', dev));
      process.stderr.write(`bench-storage: round ${r + 1}/${rounds} ${name}: write ${results[name].write.at(-1)!.toFixed(1)} MiB/s, read ${results[name].read.at(-1)!.toFixed(1)} MiB/s\n`);
    }
  }
  await secureUnmount(vm, '/run/bench/crypt');
  await secureUnmount(vm, '/run/bench/integ');

  const setupMs: Record<'integrity' | 'plain', number[]> = { integrity: [], plain: [] };
  const kataOptions = { deviceId: setup.id, sourceType: 'empty', targetType: 'fileSystem', filesystemType: 'ext4', mkfsOpts: '-O ^has_journal -m 0 -i 163840 -I 128', encryptionType: 'luks2' };
  for (let r = 0; r < setupRounds; r++) {
    for (const kind of ['integrity', 'plain'] as const) {
      const t0 = performance.now();
      await secureMount(vm, { ...kataOptions, dataIntegrity: String(kind === 'integrity') }, '/run/bench/setup');
      setupMs[kind].push(performance.now() - t0);
      await secureUnmount(vm, '/run/bench/setup');
      process.stderr.write(`bench-storage: setup round ${r + 1}/${setupRounds} ${kind}: ${Math.round(setupMs[kind].at(-1)!)} ms\n`);
    }
  }

  const m = (name: keyof typeof targets, op: 'write' | 'read') => median(results[name][op]);
  const ratio = (name: keyof typeof targets, op: 'write' | 'read') => median(results[name][op].map((v, i) => v / results.raw[op][i]!));
  console.log(`guest: ${vm.accel}, ${sizeMiB} MiB sequential, median of ${rounds} rounds`);
  console.log('volume                     write MiB/s  (÷ raw)   read MiB/s  (÷ raw)');
  for (const [name, label] of [['raw', 'raw virtio disk'], ['crypt', 'dm-crypt aes-xts'], ['integ', 'dm-crypt + hmac-sha256']] as const) {
    console.log(`${label.padEnd(26)} ${m(name, 'write').toFixed(1).padStart(11)}  ${ratio(name, 'write').toFixed(2).padStart(7)}  ${m(name, 'read').toFixed(1).padStart(11)}  ${ratio(name, 'read').toFixed(2).padStart(7)}`);
  }
  console.log(`setup of a ${setupGiB} GiB ephemeral volume (SecureMount, kata emptyDir options), median of ${setupRounds}: integrity ${Math.round(median(setupMs.integrity))} ms, no integrity ${Math.round(median(setupMs.plain))} ms`);
  console.log(
    JSON.stringify({
      accel: vm.accel,
      sizeMiB,
      rounds,
      mibPerS: Object.fromEntries(Object.keys(targets).map((k) => [k, { write: m(k as 'raw', 'write'), read: m(k as 'raw', 'read') }])),
      ratioToRaw: { crypt: { write: ratio('crypt', 'write'), read: ratio('crypt', 'read') }, integ: { write: ratio('integ', 'write'), read: ratio('integ', 'read') } },
      setupMs: { gib: setupGiB, integrity: median(setupMs.integrity), plain: median(setupMs.plain) },
    }),
  );
} finally {
  await vm?.shutdown();
  rmSync(dir, { recursive: true, force: true });
}
