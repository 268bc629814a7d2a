// SecureMount and SecureUnmount through the real daemon. The host kernel has
// no device-mapper, so everything here stops before a mapping would be
// opened: argument errors, refusals to format, rejected headers, recovery of
// leftovers. Mounts themselves are tested in the guest (test/vm/).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Code } from '../../agent/src/errors.ts';
import { TtrpcError } from '../../agent/src/server/ttrpc/client.ts';
import { startAgent, type AgentProcess } from '../helpers/agent.ts';
import { rewriteFile } from '../fixtures/luks2.ts';
import { luksFormatArgs } from '../../agent/src/storage/cryptsetup.ts';

// tmpfs for the run directory, as in the guest.
const shm = mkdtempSync('/dev/shm/tee-agent-api-storage-');
const runDir = join(shm, 'run');
const key = randomBytes(64);
const loops: string[] = [];
let agent: AgentProcess;

function loopDevice(name: string, size: number): { file: string; dev: string } {
  const file = join(shm, name);
  writeFileSync(file, '');
  truncateSync(file, size);
  const dev = execFileSync('losetup', ['--find', '--show', file]).toString().trim();
  loops.push(dev);
  return { file, dev };
}

const sha = (file: string) => createHash('sha256').update(readFileSync(file)).digest('hex');

function config(): string {
  writeFileSync(join(shm, 'keys.json'), JSON.stringify({ 'default/luks/vol1': key.toString('base64') }));
  return [
    '[kbc]',
    `offline_keys = "${join(shm, 'keys.json')}"`,
    `offline_resources = "${join(shm, 'none.json')}"`,
    '[storage]',
    `run_dir = "${runDir}"`,
  ].join('\n');
}

before(async () => {
  // Leftovers of a crashed agent: a record in the middle of set-up and a stray header.
  mkdirSync(join(runDir, 'volumes'), { recursive: true });
  mkdirSync(join(runDir, 'headers'), { recursive: true });
  writeFileSync(join(runDir, 'headers', 'crashed.header'), 'x');
  writeFileSync(join(runDir, 'headers', 'stray.header'), 'x');
  writeFileSync(
    join(runDir, 'volumes', 'crashed.json'),
    JSON.stringify({ version: 1, mapperName: 'crashed', device: '/dev/loop7', deviceId: '7:7', mountPoint: join(shm, 'gone'), target: 'fileSystem', header: join(runDir, 'headers', 'crashed.header'), ephemeral: true, integrity: true, phase: 'setup' }),
  );
  agent = await startAgent({ config: config() });
});

after(async () => {
  await agent?.stop();
  for (const dev of loops) execFileSync('losetup', ['-d', dev]);
  rmSync(shm, { recursive: true, force: true });
});

const secureMount = (options: Record<string, string>, mountPoint = join(shm, 'mnt')) =>
  agent.grpcCall('api.SecureMountService', 'SecureMount', { volume_type: 'block-device', options, flags: [], mount_point: mountPoint });

async function rejects(p: Promise<unknown>, code: number, message: RegExp): Promise<void> {
  await assert.rejects(p, (err: { code?: number; details?: string }) => {
    assert.equal(err.code, code, err.details);
    assert.match(err.details ?? '', message);
    return true;
  });
}

/** Nothing of a refused request is left in the run directory. */
function assertRunDirEmpty(): void {
  assert.deepEqual(readdirSync(join(runDir, 'volumes')), []);
  assert.deepEqual(readdirSync(join(runDir, 'headers')), []);
}

test('at start, the agent undoes a set-up a crash interrupted and removes stray headers', () => {
  assertRunDirEmpty();
  const line = agent.logs.find((l) => l.msg === 'secure volumes recovered');
  assert.deepEqual(line?.cleaned, ['crashed']);
});

test('bad requests are INVALID_ARGUMENT over gRPC and ttrpc', async () => {
  await rejects(secureMount({ devicePath: '/dev/loop0', encryptionType: 'luks2', sizeLimit: '1G' }), Code.INVALID_ARGUMENT, /option "sizeLimit" is not known/);
  await rejects(secureMount({ deviceId: 'vdb', encryptionType: 'luks2' }), Code.INVALID_ARGUMENT, /deviceId/);
  const c = await agent.ttrpc();
  await assert.rejects(
    c.call('api.SecureMountService', 'SecureMount', { volume_type: 'block-device', options: { devicePath: '/dev/loop0', encryptionType: 'luks2', dataIntegrity: 'maybe' }, flags: [], mount_point: '/x' }),
    (err: unknown) => err instanceof TtrpcError && err.code === Code.INVALID_ARGUMENT && /dataIntegrity/.test(err.message),
  );
});

test('a device that does not exist is NOT_FOUND', async () => {
  await rejects(secureMount({ devicePath: '/dev/none-such', encryptionType: 'luks2' }), Code.NOT_FOUND, /\/dev\/none-such does not exist/);
  await rejects(secureMount({ deviceId: '250:250', encryptionType: 'luks2' }), Code.NOT_FOUND, /no block device 250:250/);
});

test('a persistent volume on a device holding plain data is never formatted', async () => {
  const { file, dev } = loopDevice('plain.img', 16 << 20);
  execFileSync('mkfs.ext4', ['-q', '-F', dev]);
  const before = sha(file);
  await rejects(secureMount({ devicePath: dev, encryptionType: 'luks2', key: 'kbs:///default/luks/vol1' }), Code.FAILED_PRECONDITION, /holds a plain ext4 filesystem; refusing to format it/);
  writeFileSync(file, randomBytes(4096), { flag: 'r+' });
  const before2 = sha(file);
  await rejects(secureMount({ devicePath: dev, encryptionType: 'luks2', key: 'kbs:///default/luks/vol1' }), Code.FAILED_PRECONDITION, /holds data that is not a LUKS2 volume/);
  assert.notEqual(before, before2);
  assert.equal(sha(file), before2, 'the device is untouched');
  assertRunDirEmpty();
});

test('a LUKS2 volume whose header was swapped to cipher_null is refused before the key is even fetched', async () => {
  const { file, dev } = loopDevice('swapped.img', 32 << 20);
  execFileSync('cryptsetup', luksFormatArgs({ device: dev, integrity: false, kdf: 'ephemeral', noWipe: false }), { input: key });
  // The host rewrites the metadata in place on the disk.
  const header = join(shm, 'hdr');
  execFileSync('dd', [`if=${file}`, `of=${header}`, 'bs=1M', 'count=16', 'status=none']);
  rewriteFile(header, (m) => (m.segments['0'].encryption = 'cipher_null-ecb'));
  execFileSync('dd', [`if=${header}`, `of=${file}`, 'bs=1M', 'count=16', 'conv=notrunc', 'status=none']);
  await rejects(
    secureMount({ devicePath: dev, encryptionType: 'luks2', key: 'kbs:///default/luks/vol1', dataIntegrity: 'false' }),
    Code.FAILED_PRECONDITION,
    new RegExp(`LUKS2 header of ${dev} rejected: segment 0 encryption is cipher_null-ecb: data would be stored in plaintext \\(the LUKS2 header-swap attack, CVE-2025-59054\\)`),
  );
  // The same volume expected with integrity is refused for that too.
  await rejects(secureMount({ devicePath: dev, encryptionType: 'luks2', key: 'kbs:///default/luks/vol1', dataIntegrity: 'true' }), Code.FAILED_PRECONDITION, /rejected/);
  assertRunDirEmpty();
  assert.ok(!agent.stderr().includes(key.toString('hex')) && !agent.stderr().includes(key.toString('base64')), 'the key never reaches the log');
});

test('a key the store does not have is NOT_FOUND; nothing is formatted', async () => {
  const { file, dev } = loopDevice('zero.img', 8 << 20);
  await rejects(secureMount({ devicePath: dev, encryptionType: 'luks2', key: 'kbs:///default/luks/none' }), Code.NOT_FOUND, /resource kbs:\/\/\/default\/luks\/none not found/);
  assert.equal(sha(file), createHash('sha256').update(Buffer.alloc(8 << 20)).digest('hex'));
  assertRunDirEmpty();
});

test('SecureUnmount of a mount point the agent does not hold is a successful no-op', async () => {
  assert.deepEqual(await agent.grpcCall('teeagent.SecureStorageService', 'SecureUnmount', { mount_point: join(shm, 'never') }), { unmounted: false });
  await rejects(agent.grpcCall('teeagent.SecureStorageService', 'SecureUnmount', { mount_point: 'rel' }), Code.INVALID_ARGUMENT, /mount_point/);
  assert.ok(!existsSync(join(shm, 'never')));
});
