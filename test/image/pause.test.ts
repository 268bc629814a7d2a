import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Code } from '../../agent/src/errors.ts';
import { BundleUnavailable } from '../../agent/src/image/errors.ts';
import { createPauseBundle } from '../../agent/src/image/pause.ts';

const top = mkdtempSync(join(tmpdir(), 'pause-'));
const src = join(top, 'pause_bundle');
mkdirSync(join(src, 'rootfs'), { recursive: true });
writeFileSync(join(src, 'config.json'), '{"process":{"args":["/pause"]}}');
writeFileSync(join(src, 'rootfs/pause'), '\x7fELF fake pause');
chmodSync(join(src, 'rootfs/pause'), 0o755);

test('the pause bundle is copied from the built-in one, whole and idempotently', async () => {
  const bundle = join(top, 'sandbox');
  const r = await createPauseBundle(bundle, src);
  assert.equal(r.rootfs, join(bundle, 'rootfs'));
  assert.deepEqual(readdirSync(bundle).sort(), ['config.json', 'rootfs']);
  assert.equal(readFileSync(join(bundle, 'config.json'), 'utf8'), '{"process":{"args":["/pause"]}}');
  assert.equal(lstatSync(join(bundle, 'rootfs/pause')).mode & 0o777, 0o755);
  await createPauseBundle(bundle, src);
  assert.deepEqual(readdirSync(bundle).sort(), ['config.json', 'rootfs']);
});

test('a missing built-in pause bundle is FAILED_PRECONDITION and creates nothing', async () => {
  const bundle = join(top, 'nothing');
  await assert.rejects(createPauseBundle(bundle, join(top, 'absent')), (err: BundleUnavailable) => err instanceof BundleUnavailable && err.code === Code.FAILED_PRECONDITION);
  assert.throws(() => lstatSync(bundle));
});

test.after(() => rmSync(top, { recursive: true, force: true }));
