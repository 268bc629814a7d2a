// Our unpack and bundle of a real image, compared with `umoci unpack` of the
// same image: every path, type, mode, owner, size, content, link target,
// device number, hard-link grouping and (for non-directories) mtime.
// The image is built by umoci and re-encoded by skopeo (gzip, zstd, none).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { lstatSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Code } from '../../agent/src/errors.ts';
import { DigestMismatch } from '../../agent/src/image/errors.ts';
import { LayerStore } from '../../agent/src/image/store.ts';
import { unpackLayer } from '../../agent/src/image/unpack.ts';
import { createLogger } from '../../agent/src/log.ts';
import { diffSnapshots, snapshot } from '../fixtures/fs-snapshot.ts';
import { bundleFromLayout, buildUmociImage, convertLayout, layerTar, readLayout, TEST_LIMITS, umociUnpack } from '../fixtures/oci-layout.ts';

const log = createLogger('silent');
const work = mkdtempSync(join(tmpdir(), 'umoci-cmp-'));
const gzip = buildUmociImage(work);
const layouts = { gzip, zstd: convertLayout(gzip, join(work, 'zstd'), 'zstd'), none: convertLayout(gzip, join(work, 'none'), 'none') };
const reference = snapshot(umociUnpack(gzip, join(work, 'reference')), { mtimes: true });

test('the layouts carry the layer encodings under test', () => {
  const types = Object.fromEntries(Object.entries(layouts).map(([k, l]) => [k, [...new Set(readLayout(l, 'latest').layers.map((x) => x.mediaType))]]));
  assert.deepEqual(types, {
    gzip: ['application/vnd.oci.image.layer.v1.tar+gzip'],
    zstd: ['application/vnd.oci.image.layer.v1.tar+zstd'],
    none: ['application/vnd.oci.image.layer.v1.tar'],
  });
  assert.equal(readLayout(gzip, 'latest').layers.length, 3);
  // The reference really has what the comparison is about.
  const kinds = new Set([...reference.values()].map((n) => n.type));
  for (const k of ['file', 'dir', 'symlink', 'char', 'fifo']) assert.ok(kinds.has(k as never), k);
  assert.equal(reference.get('opt/c')?.type, 'file');
  assert.equal(reference.has('opt/a'), false);
  assert.equal(reference.get('data/h3')?.linkGroup, 'data/h1');
  assert.equal(reference.get('usr/bin/suid')?.mode, 0o4755);
});

for (const [encoding, layout] of Object.entries(layouts)) {
  for (const mode of ['overlay', 'copy'] as const) {
    test(`${encoding} layers, ${mode} bundle: same tree as umoci unpack`, async () => {
      const store = await LayerStore.open(join(work, `store-${encoding}-${mode}`), log, { bundleMode: mode });
      const info = await bundleFromLayout(store, layout, 'latest', join(work, `bundle-${encoding}-${mode}`), log);
      assert.equal(info.mode, mode);
      const ours = snapshot(info.rootfs, { mtimes: true });
      assert.deepEqual(diffSnapshots(ours, reference, ['ours', 'umoci']), []);
      assert.equal(readFileSync(join(info.rootfs, 'etc/passwd'), 'utf8'), 'root:x:0:0::/root:/bin/zsh\n');
      assert.equal(lstatSync(info.rootfs).mode & 0o7777, lstatSync(join(work, 'reference/rootfs')).mode & 0o7777);
      await store.removeBundle(info.bundlePath);
      await store.close();
    });
  }
}

for (const [encoding, at] of [['gzip', -20], ['none', 700]] as const) {
  test(`a ${encoding} layer blob with one byte changed fails on its digest, not on what it breaks first, and stores nothing`, async () => {
    const l = readLayout(layouts[encoding], 'latest').layers[0]!;
    const tampered = join(work, `tampered-${encoding}.blob`);
    const bytes = readFileSync(l.blob);
    const i = at < 0 ? bytes.length + at : at;
    bytes[i] = bytes[i]! ^ 0x10;
    writeFileSync(tampered, bytes);
    const store = await LayerStore.open(join(work, `store-tampered-${encoding}`), log);
    const txn = store.begin();
    await assert.rejects(
      txn.ensureLayer(l.diffId, (dir, signal) => unpackLayer(layerTar({ ...l, blob: tampered }), dir, { limits: TEST_LIMITS, log, signal })),
      (err: Error) => err instanceof DigestMismatch && err.code === Code.DATA_LOSS,
    );
    await txn.rollback();
    assert.equal(store.has(l.diffId), false);
    assert.deepEqual(readdirSync(join(work, `store-tampered-${encoding}`, 'staging')), []);
    await store.close();
  });
}

test.after(() => {
  for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const mp = line.split(' ')[4];
    if (mp?.startsWith(work)) execFileSync('umount', ['-l', mp]);
  }
  rmSync(work, { recursive: true, force: true });
});
