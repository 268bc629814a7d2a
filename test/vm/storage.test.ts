// Secure storage in the guest, with real cryptsetup, device-mapper and
// virtio-blk disks whose image files the host (this test) can read and
// tamper with. Two boots: the second proves that a persistent volume keeps
// its data across a reboot and that a swapped header is refused.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { closeSync, mkdtempSync, openSync, readFileSync, readSync, rmSync, truncateSync, writeFileSync, writeSync, fsyncSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Code } from '../../agent/src/errors.ts';
import { grpcCall, grpcClient } from '../../scripts/lib/agent-process.ts';
import { KATA_EMPTYDIR_OPTIONS } from '../fixtures/kata.ts';
import { nullKeyslot } from '../fixtures/luks2.ts';
import { startKbs, type TestKbs } from '../helpers/kbs.ts';
import { bootVm, ensureImage, startGuestAgent, vmSkipReason, GUESTFWD_ADDR, type Vm } from './helpers.ts';

const skip = vmSkipReason();
const MiB = 1 << 20;
const KATA_EMPTYDIR = KATA_EMPTYDIR_OPTIONS;
const RUN = '/run/tee-agent/storage';
const B_PORT = 50010;

// Guest-side data checker: 4 KiB chunks of a deterministic pattern, read back one by one.
const PATTERN_JS = `
const fs = require('fs'), crypto = require('crypto');
const [op, file, mib, seed] = process.argv.slice(2);
const chunk = (i) => Buffer.concat(Array(128).fill(crypto.createHash('sha256').update(seed + ':' + i).digest()));
const n = Number(mib) * 256;
if (op === 'write') {
  const fd = fs.openSync(file, 'w');
  for (let i = 0; i < n; i++) fs.writeSync(fd, chunk(i));
  fs.fsyncSync(fd);
  fs.closeSync(fd);
  process.stdout.write('{}');
} else {
  fs.writeFileSync('/proc/sys/vm/drop_caches', '3');
  const out = { ok: 0, bad: 0, eio: 0, errors: [] };
  let fd;
  try { fd = fs.openSync(file, 'r'); } catch (e) { out.eio = 1; out.errors.push(e.code); process.stdout.write(JSON.stringify(out)); process.exit(0); }
  const buf = Buffer.alloc(4096);
  for (let i = 0; i < n; i++) {
    try {
      const r = fs.readSync(fd, buf, 0, 4096, i * 4096);
      if (r === 4096 && buf.equals(chunk(i))) out.ok++; else out.bad++;
    } catch (e) { out.eio++; if (!out.errors.includes(e.code)) out.errors.push(e.code); }
  }
  process.stdout.write(JSON.stringify(out));
}
`;

interface Check {
  ok: number;
  bad: number;
  eio: number;
  errors: string[];
}

/** Hashes of every 4 KiB block of a disk image, to see where the guest wrote. */
function blockHashes(file: string): string[] {
  const data = readFileSync(file);
  const out: string[] = [];
  for (let o = 0; o < data.length; o += 4096) out.push(createHash('sha1').update(data.subarray(o, o + 4096)).digest('hex'));
  return out;
}

/** Runs of at least 64 changed blocks: the file's data extents (metadata changes are single blocks). */
function changedRuns(before: string[], after: string[]): Array<{ start: number; length: number }> {
  const runs: Array<{ start: number; length: number }> = [];
  let start = -1;
  for (let i = 0; i <= after.length; i++) {
    const changed = i < after.length && before[i] !== after[i];
    if (changed && start < 0) start = i;
    if (!changed && start >= 0) {
      if (i - start >= 64) runs.push({ start, length: i - start });
      start = -1;
    }
  }
  return runs;
}

/** What the host does: flip one byte in every 16th 4 KiB block of a range, and flush. */
function flipBytes(file: string, run: { start: number; length: number }): number {
  const fd = openSync(file, 'r+');
  let n = 0;
  try {
    for (let b = run.start; b < run.start + run.length; b += 16) {
      const at = b * 4096 + 1234;
      const one = Buffer.alloc(1);
      readSync(fd, one, 0, 1, at);
      one[0] = one[0]! ^ 0x5a;
      writeSync(fd, one, 0, 1, at);
      n++;
    }
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  return n;
}

function findLuksHeader(file: string): number {
  const data = readFileSync(file);
  for (let o = 0; o < data.length; o += MiB) if (data.subarray(o, o + 6).equals(Buffer.from('LUKS\xba\xbe', 'latin1'))) return o;
  throw new Error(`no LUKS header in ${file}`);
}

describe('secure storage in the guest', { skip: skip ? `qemu is unusable here: ${skip}` : false, timeout: 12 * 60_000 }, () => {
  let vm: Vm;
  let dir: string;
  // Volume keys live in the dev KBS on the host; the guest's agent attests (sample) and fetches them through guestfwd.
  let kbs: TestKbs;
  const KBS_PORT = 8081;
  const img = (name: string) => join(dir, `${name}.img`);
  const pvKey = randomBytes(32);
  const disks: Array<[string, number]> = [
    ['eph-int', 64 * MiB],
    ['eph-plain', 64 * MiB],
    ['pv', 64 * MiB],
    ['junk', 8 * MiB],
    ['crash', 32 * MiB],
    ['crash2', 16 * MiB],
  ];

  before(async () => {
    ensureImage();
    dir = mkdtempSync(join(tmpdir(), 'tee-vm-storage-'));
    for (const [name, size] of disks) {
      writeFileSync(img(name), name === 'junk' ? randomBytes(size) : '');
      if (name !== 'junk') truncateSync(img(name), size);
    }
    kbs = await startKbs({ resources: { 'default/luks/pv': pvKey, 'default/luks/wrong': randomBytes(32) } });
    vm = await bootVm({
      debugConsole: true,
      disks: disks.map(([name]) => ({ path: img(name), serial: name })),
      hostfwd: [{ host: 0, guest: B_PORT }],
      guestfwd: [{ guest: KBS_PORT, host: kbs.port }],
      // As kata passes the KBS to the guest.
      append: `agent.aa_kbc_params=cc_kbc::http://${GUESTFWD_ADDR}:${KBS_PORT}`,
      workDir: join(dir, 'vm'),
      keepWorkDir: true,
    });
    process.stdout.write(`# guest booted (${vm.accel}) in ${vm.readyMs} ms\n`);
    await guestSetup();
  });

  after(async () => {
    await vm?.kill();
    await kbs?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  /** Per boot: the pattern checker (it lives in guest memory). */
  async function guestSetup(): Promise<void> {
    await vm.writeFile('/tmp/pattern.js', PATTERN_JS);
  }

  const disk = async (serial: string): Promise<{ dev: string; id: string }> => {
    const out = (await vm.run(`for d in /sys/block/vd*; do [ "$(cat $d/serial)" = ${serial} ] && echo /dev/\${d##*/} $(cat $d/dev); done; true`)).trim();
    const [dev = '', id = ''] = out.split(' ');
    assert.match(dev, /^\/dev\/vd[a-z]+$/, `no disk ${serial}`);
    return { dev, id };
  };

  const secureMount = (options: Record<string, string>, mountPoint: string, port?: number) => {
    const req = { volume_type: 'block-device', options, flags: [], mount_point: mountPoint };
    return port === undefined ? vm.grpcCall('api.SecureMountService', 'SecureMount', req, 600_000) : callPort(port, 'api.SecureMountService', 'SecureMount', req);
  };
  const secureUnmount = (mountPoint: string, port?: number) =>
    port === undefined
      ? vm.grpcCall<{ unmounted: boolean }>('teeagent.SecureStorageService', 'SecureUnmount', { mount_point: mountPoint }, 600_000)
      : callPort<{ unmounted: boolean }>(port, 'teeagent.SecureStorageService', 'SecureUnmount', { mount_point: mountPoint });

  /** A call to a second agent in the guest, through its own forwarded port. */
  async function callPort<Res = object>(port: number, service: string, method: string, req: object): Promise<Res> {
    const c = grpcClient(service, `127.0.0.1:${port}`);
    try {
      return await grpcCall<Res>(c, method, req, 600_000);
    } finally {
      c.close();
    }
  }

  async function rejects(p: Promise<unknown>, code: number, message: RegExp): Promise<void> {
    await assert.rejects(p, (err: { code?: number; details?: string }) => {
      assert.equal(err.code, code, err.details);
      assert.match(err.details ?? '', message);
      return true;
    });
  }

  const mapperOf = async (mountPoint: string): Promise<string> => {
    const line = (await vm.run('cat /proc/mounts')).split('\n').find((l) => l.split(' ')[1] === mountPoint);
    assert.ok(line, `${mountPoint} is not mounted`);
    return line.split(' ')[0]!.replace('/dev/mapper/', '');
  };
  const check = async (file: string, mib: number, seed: string): Promise<Check> => JSON.parse(await vm.run(`node /tmp/pattern.js check ${file} ${mib} ${seed}`, { timeoutMs: 300_000 })) as Check;
  const headers = async (): Promise<string[]> => (await vm.run(`ls ${RUN}/headers`)).split('\n').filter(Boolean);

  test('ephemeral volumes with and without integrity, set up at the same time', async () => {
    const [a, b] = [await disk('eph-int'), await disk('eph-plain')];
    await Promise.all([
      secureMount({ ...KATA_EMPTYDIR, deviceId: a.id, dataIntegrity: 'true' }, '/run/vol/int'),
      secureMount({ ...KATA_EMPTYDIR, deviceId: b.id, dataIntegrity: 'false' }, '/run/vol/plain'),
    ]);
    for (const [mp, integrity] of [['/run/vol/int', true], ['/run/vol/plain', false]] as const) {
      const name = await mapperOf(mp);
      const status = await vm.run(`cryptsetup status ${name}`);
      assert.match(status, /type:\s+n\/a/, 'detached header');
      assert.match(status, /key location: keyring/);
      assert.match(status, integrity ? /keysize: 768 bits/ : /keysize: 512 bits/);
      const table = await vm.run(`dmsetup table --showkeys ${name}`);
      assert.match(table, integrity ? /crypt capi:authenc\(hmac\(sha256\),xts\(aes\)\)-plain64 :96:logon:/ : /crypt aes-xts-plain64 :64:logon:/);
      assert.match(table, /sector_size:4096/);
      assert.doesNotMatch(table, /[0-9a-f]{64}/, 'no hex key in the dm table, even with --showkeys');
      if (integrity) assert.match(await vm.run(`dmsetup table ${name}_dif`), / integrity \S+ 0 32 D /, 'dm-integrity without journal');
      assert.ok((await headers()).includes(`${name}.header`), 'the detached header is in tmpfs');
      assert.match(await vm.run(`stat -f -c %T ${RUN}/headers`), /tmpfs/);
      // Written, read back after dropping caches: every block intact, no EIO on a fresh ext4.
      await vm.run(`node /tmp/pattern.js write ${mp}/data 8 ${name}`, { timeoutMs: 300_000 });
      assert.deepEqual(await check(`${mp}/data`, 8, name), { ok: 2048, bad: 0, eio: 0, errors: [] });
    }
    // The agent's request line carries the cryptsetup-status-level facts.
    assert.match(vm.console(), /"volume":\{"dm":\{"cipher":"capi:authenc\(hmac\(sha256\),xts\(aes\)\)-plain64","keyInKeyring":true,"sectorSize":4096,"integrity":\{"tagBytes":32,"mode":"direct \(no journal\)"\}\}/);
  });

  test('a retried SecureMount returns the mounted volume; the same device on another mount point is refused', async () => {
    const a = await disk('eph-int');
    const before = await mapperOf('/run/vol/int');
    await secureMount({ ...KATA_EMPTYDIR, deviceId: a.id, dataIntegrity: 'true' }, '/run/vol/int');
    assert.equal(await mapperOf('/run/vol/int'), before);
    assert.deepEqual(await check('/run/vol/int/data', 8, before), { ok: 2048, bad: 0, eio: 0, errors: [] });
    await rejects(secureMount({ ...KATA_EMPTYDIR, deviceId: a.id, dataIntegrity: 'true' }, '/run/vol/other'), Code.FAILED_PRECONDITION, /is already open as/);
  });

  test('the host flips bytes on the disk: integrity turns them into read errors, never altered data', async () => {
    for (const [serial, mp, integrity] of [['eph-int', '/run/vol/int', true], ['eph-plain', '/run/vol/plain', false]] as const) {
      const name = await mapperOf(mp);
      const before = blockHashes(img(serial));
      await vm.run(`node /tmp/pattern.js write ${mp}/victim 4 v-${name} && sync`, { timeoutMs: 300_000 });
      const runs = changedRuns(before, blockHashes(img(serial)));
      const blocks = runs.reduce((n, r) => n + r.length, 0);
      assert.ok(blocks >= 1000, `found the file's 1024 blocks on the disk (${blocks} in ${runs.length} runs)`);
      assert.ok(runs.reduce((n, r) => n + flipBytes(img(serial), r), 0) > 50);
      const got = await check(`${mp}/victim`, 4, `v-${name}`);
      if (integrity) {
        assert.equal(got.bad, 0, 'never altered data');
        assert.ok(got.eio > 0, 'reads of tampered blocks fail');
        assert.deepEqual(got.errors, ['EIO']);
        assert.match(await vm.run('dmesg | tail -50'), /INTEGRITY AEAD ERROR/);
      } else {
        // Without integrity the same tampering comes back as silently altered data: what integrity buys.
        assert.ok(got.bad > 0 && got.eio === 0, JSON.stringify(got));
      }
    }
  });

  test('SecureUnmount tears down: umount, cryptsetup close, header deleted; a retry is a no-op', async () => {
    const names = [await mapperOf('/run/vol/int'), await mapperOf('/run/vol/plain')];
    assert.deepEqual(await secureUnmount('/run/vol/int'), { unmounted: true });
    assert.deepEqual(await secureUnmount('/run/vol/plain'), { unmounted: true });
    assert.deepEqual(await secureUnmount('/run/vol/int'), { unmounted: false });
    const mounts = await vm.run('cat /proc/mounts');
    assert.ok(!mounts.includes('/run/vol/'), mounts);
    const mapper = await vm.run('ls /dev/mapper');
    for (const n of names) assert.ok(!mapper.includes(n), `${n} closed`);
    assert.deepEqual(await headers(), []);
    assert.equal((await vm.run(`ls ${RUN}/volumes`)).trim(), '');
  });

  test('persistent volume on LVM: activated on demand, formatted only because it is all zero', async () => {
    const pv = await disk('pv');
    await vm.run(`lvm pvcreate -q ${pv.dev} && lvm vgcreate -q tee ${pv.dev} && lvm lvcreate -q -y -L 32M -n data tee && lvm lvchange -q -an tee/data`);
    await secureMount({ lvmVolume: 'tee/data', encryptionType: 'luks2', key: 'kbs:///default/luks/pv', dataIntegrity: 'true' }, '/run/pv');
    assert.match(vm.console(), /"device":"\/dev\/mapper\/tee-data","mountPoint":"\/run\/pv","ephemeral":false,"formatted":true/);
    const name = await mapperOf('/run/pv');
    const status = await vm.run(`cryptsetup status ${name}`);
    assert.match(status, /integrity: hmac\(sha256\)/);
    assert.match(status, /key location: keyring/);
    // The persistent volume keeps dm-integrity's journal.
    assert.match(await vm.run(`dmsetup table ${name}_dif`), / integrity \S+ \d+ 32 J /);
    await vm.run('node /tmp/pattern.js write /run/pv/data 2 persistent && sync', { timeoutMs: 300_000 });
    assert.deepEqual(await secureUnmount('/run/pv'), { unmounted: true });
  });

  test('a wrong key is refused and leaves nothing behind', async () => {
    await rejects(secureMount({ lvmVolume: 'tee/data', encryptionType: 'luks2', key: 'kbs:///default/luks/wrong', dataIntegrity: 'true' }, '/run/pv'), Code.PERMISSION_DENIED, /the key does not open the LUKS2 volume on \/dev\/mapper\/tee-data/);
    assert.deepEqual(await headers(), []);
    assert.doesNotMatch(await vm.run('ls /dev/mapper'), /-.*-.*-.*-/);
  });

  test('a device holding data that is not ours is never formatted', async () => {
    const junk = await disk('junk');
    const before = createHash('sha256').update(readFileSync(img('junk'))).digest('hex');
    await rejects(secureMount({ deviceId: junk.id, encryptionType: 'luks2', key: 'kbs:///default/luks/pv' }, '/run/junk'), Code.FAILED_PRECONDITION, /holds data that is not a LUKS2 volume; refusing to format it/);
    assert.equal(createHash('sha256').update(readFileSync(img('junk'))).digest('hex'), before);
  });

  test('crash recovery: a restarted agent adopts a volume that was ready and undoes a half-done one', async () => {
    const crash = await disk('crash');
    const crash2 = await disk('crash2');
    const bRun = '/run/b-storage';
    const port = vm.hostfwd.find((f) => f.guest === B_PORT)!.host;
    const startB = () => startGuestAgent(vm, 'b-agent', { listen: { grpc: [`tcp://0.0.0.0:${B_PORT}`], ttrpc: [] }, storage: { run_dir: bRun } });
    const b = await startB();
    await secureMount({ ...KATA_EMPTYDIR, deviceId: crash.id, dataIntegrity: 'true' }, '/run/crash', port);
    const adopted = await mapperOf('/run/crash');
    await vm.run('echo survives > /run/crash/f && sync');
    await b.stop('KILL');
    // A set-up the crash interrupted: its mapping is open, its record still says "setup".
    await vm.run(
      [
        'head -c 64 /dev/urandom > /tmp/k2',
        `truncate -s 1081344 ${bRun}/headers/halfdone.header`,
        `cryptsetup luksFormat -q --type luks2 --header ${bRun}/headers/halfdone.header --luks2-keyslots-size 1m --pbkdf pbkdf2 --pbkdf-force-iterations 1000 --key-file=/tmp/k2 ${crash2.dev} 2>/dev/null`,
        `cryptsetup open --header ${bRun}/headers/halfdone.header --key-file=/tmp/k2 ${crash2.dev} halfdone`,
        'rm /tmp/k2',
      ].join(' && '),
    );
    await vm.writeFile(
      `${bRun}/volumes/halfdone.json`,
      JSON.stringify({ version: 1, mapperName: 'halfdone', device: crash2.dev, deviceId: crash2.id, mountPoint: '/run/halfdone', target: 'fileSystem', header: `${bRun}/headers/halfdone.header`, ephemeral: true, integrity: false, phase: 'setup' }),
    );
    const b2 = await startB();
    assert.match(await b2.log(), new RegExp(`"adopted":\\["${adopted}"\\],"cleaned":\\["halfdone"\\]`));
    assert.doesNotMatch(await vm.run('ls /dev/mapper'), /halfdone/);
    assert.deepEqual((await vm.run(`ls ${bRun}/headers`)).trim(), `${adopted}.header`);
    assert.equal((await vm.run('cat /run/crash/f')).trim(), 'survives');
    // The adopted volume answers a retry and tears down like any other.
    await secureMount({ ...KATA_EMPTYDIR, deviceId: crash.id, dataIntegrity: 'true' }, '/run/crash', port);
    assert.deepEqual(await secureUnmount('/run/crash', port), { unmounted: true });
    assert.doesNotMatch(await vm.run('ls /dev/mapper'), new RegExp(adopted));
    await b2.stop();
  });

  test('after a reboot the persistent volume opens with its KBS key, data intact', async () => {
    vm = await vm.reboot();
    await guestSetup();
    // After the reboot nothing activates the LV; SecureMount does, by path this time.
    assert.doesNotMatch(await vm.run('ls /dev/mapper'), /tee-data/);
    await secureMount({ devicePath: '/dev/tee/data', encryptionType: 'luks2', key: 'kbs:///default/luks/pv', dataIntegrity: 'true' }, '/run/pv');
    assert.deepEqual(await check('/run/pv/data', 2, 'persistent'), { ok: 512, bad: 0, eio: 0, errors: [] });
    assert.match(vm.console(), /"device":"\/dev\/mapper\/tee-data","mountPoint":"\/run\/pv","ephemeral":false,"formatted":false/);
    assert.equal(kbs.stats.attest, 2, 'one attestation per boot');
    assert.ok(!vm.console().includes(pvKey.toString('base64')) && !vm.console().includes(pvKey.toString('hex')), 'the volume key never reaches the log');
    assert.deepEqual(await secureUnmount('/run/pv'), { unmounted: true });
  });

  test('a header swapped for a cipher_null one is refused, though plain cryptsetup would open it with our key', async () => {
    // The attacker formats a volume of its own with a cipher_null segment...
    await vm.writeFile('/tmp/attacker-key', 'attacker');
    await vm.run('truncate -s 32M /tmp/evil.img && cryptsetup luksFormat -q --type luks2 --cipher cipher_null-ecb --pbkdf pbkdf2 --pbkdf-force-iterations 1000 --key-file=/tmp/attacker-key /tmp/evil.img');
    // (its binary headers, JSON and keyslot material sit in the first 192 KiB)
    await vm.run('head -c 196608 /tmp/evil.img > /tmp/evil.hdr');
    const evil = await vm.readFile('/tmp/evil.hdr');
    // ...makes its keyslot cipher_null too, so any key unlocks it, and writes it over our header area on the disk.
    const swapped = Buffer.concat([nullKeyslot(evil, Buffer.from('attacker')), Buffer.alloc(16 * MiB - evil.length)]);
    const at = findLuksHeader(img('pv'));
    const fd = openSync(img('pv'), 'r+');
    writeSync(fd, swapped, 0, swapped.length, at);
    fsyncSync(fd);
    closeSync(fd);
    await vm.run('echo 3 > /proc/sys/vm/drop_caches');
    // The attack is real: cryptsetup alone accepts our key for the swapped header.
    await vm.writeFile('/tmp/pv-key', pvKey, 0o600);
    assert.equal((await vm.exec('cryptsetup open --test-passphrase --type luks2 --key-file=/tmp/pv-key /dev/mapper/tee-data')).code, 0);
    await vm.run('rm /tmp/pv-key');
    await rejects(
      secureMount({ lvmVolume: 'tee/data', encryptionType: 'luks2', key: 'kbs:///default/luks/pv', dataIntegrity: 'true' }, '/run/pv'),
      Code.FAILED_PRECONDITION,
      /LUKS2 header of \/dev\/mapper\/tee-data rejected: segment 0 encryption is cipher_null-ecb: data would be stored in plaintext/,
    );
    assert.deepEqual(await headers(), []);
  });
});
