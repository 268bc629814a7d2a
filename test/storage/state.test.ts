import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Code } from '../../agent/src/errors.ts';
import { StorageUnavailable } from '../../agent/src/storage/errors.ts';
import { KeyedLock } from '../../agent/src/storage/lock.ts';
import { RunDir, type VolumeRecord } from '../../agent/src/storage/state.ts';

// /dev/shm is tmpfs on Linux; the test directory under it stands in for /run.
const shm = mkdtempSync('/dev/shm/tee-agent-state-');
const disk = mkdtempSync(join(tmpdir(), 'tee-agent-state-'));
test.after(() => {
  rmSync(shm, { recursive: true, force: true });
  rmSync(disk, { recursive: true, force: true });
});

const rec = (name: string, over: Partial<VolumeRecord> = {}): VolumeRecord => ({
  version: 1,
  mapperName: name,
  device: '/dev/vdb',
  deviceId: '254:16',
  mountPoint: `/run/m/${name}`,
  target: 'fileSystem',
  header: join(shm, 'headers', `${name}.header`),
  ephemeral: true,
  integrity: true,
  phase: 'setup',
  ...over,
});

test('the run directory must be tmpfs; it is created private', async (t) => {
  const run = new RunDir(join(shm, 'run'));
  await run.ensure();
  assert.equal(statSync(run.headers).mode & 0o777, 0o700);
  const onDisk = new RunDir(join(disk, 'run'));
  if (statSync(disk).dev === statSync(shm).dev) return t.skip('the temporary directory is itself on tmpfs here');
  await assert.rejects(onDisk.ensure(), (err: unknown) => err instanceof StorageUnavailable && err.code === Code.FAILED_PRECONDITION && /not on tmpfs/.test(err.message));
});

test('records round-trip atomically, never hold a key, and broken ones are reported', async () => {
  const run = new RunDir(join(shm, 'run2'));
  await run.ensure();
  await run.write(rec('a'));
  await run.write(rec('a', { phase: 'ready' }));
  await run.write(rec('b'));
  writeFileSync(join(run.volumes, 'junk.json'), '{');
  writeFileSync(join(run.volumes, 'c.json.123.tmp'), '{}');
  const { records, broken } = await run.list();
  assert.deepEqual(records.map((r) => [r.mapperName, r.phase]).sort(), [['a', 'ready'], ['b', 'setup']]);
  assert.deepEqual(broken, ['junk.json']);
  assert.ok(!existsSync(join(run.volumes, 'c.json.123.tmp')), 'leftover temporary files are removed');
  assert.deepEqual(Object.keys(JSON.parse(readFileSync(join(run.volumes, 'a.json'), 'utf8'))).sort(), ['device', 'deviceId', 'ephemeral', 'header', 'integrity', 'mapperName', 'mountPoint', 'phase', 'target', 'version']);
  await run.remove('a');
  assert.deepEqual((await run.list()).records.map((r) => r.mapperName), ['b']);
  mkdirSync(run.headers, { recursive: true });
  writeFileSync(run.headerPath('b'), '');
  writeFileSync(run.headerPath('stray'), '');
  assert.deepEqual(await run.strayHeaders(new Set([run.headerPath('b')])), [run.headerPath('stray')]);
});

test('the keyed lock serialises one key and runs different keys in parallel', async () => {
  const lock = new KeyedLock();
  const log: string[] = [];
  const job = (name: string, keys: string[], ms: number) =>
    lock.run(keys, async () => {
      log.push(`${name}+`);
      await new Promise((r) => setTimeout(r, ms));
      log.push(`${name}-`);
    });
  await Promise.all([job('a', ['dev:1'], 60), job('b', ['dev:1'], 10), job('c', ['dev:2'], 10), job('d', ['dev:2', 'dev:1'], 1)]);
  // a and c start at once; b waits for a; d waits for both keys.
  assert.deepEqual(log.slice(0, 2), ['a+', 'c+']);
  assert.ok(log.indexOf('b+') > log.indexOf('a-'));
  assert.ok(log.indexOf('d+') > log.indexOf('b-') && log.indexOf('d+') > log.indexOf('c-'));
  assert.equal(lock.size, 0);
  await assert.rejects(lock.run(['x'], async () => { throw new Error('boom'); }), /boom/);
  await lock.run(['x'], async () => {}); // released after a failure
});
