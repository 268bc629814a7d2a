import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { BundleExists, BundleNotFound, BundleUnavailable, LayerNotFound, StoreBusy, StoreError, UnsafeArchive } from '../../agent/src/image/errors.ts';
import { LayerStore } from '../../agent/src/image/store.ts';
import { mountOverlay, probeOverlayMount } from '../../agent/src/image/sys.ts';
import { unpackLayer } from '../../agent/src/image/unpack.ts';
import { createLogger } from '../../agent/src/log.ts';
import { diffSnapshots, snapshot } from '../fixtures/fs-snapshot.ts';
import { TEST_LIMITS } from '../fixtures/oci-layout.ts';
import { dir, file, symlink, tar } from '../fixtures/tar-builder.ts';

const log = createLogger('silent');
const top = mkdtempSync(join(tmpdir(), 'store-'));
let n = 0;
const fresh = (name: string): string => join(top, `${name}-${n++}`);

interface Layer {
  diffId: string;
  bytes: Buffer;
}
const layer = (...entries: Buffer[]): Layer => {
  const bytes = tar(...entries);
  return { diffId: `sha256:${createHash('sha256').update(bytes).digest('hex')}`, bytes };
};
const produce = (l: Layer, calls?: { n: number }) => (d: string, signal: AbortSignal) => {
  if (calls) calls.n++;
  return unpackLayer(Readable.from([l.bytes]), d, { limits: TEST_LIMITS, log, signal });
};

async function bundle(store: LayerStore, layers: Layer[], path: string) {
  const txn = store.begin();
  for (const l of layers) await txn.ensureLayer(l.diffId, produce(l));
  return txn.commitBundle(path, layers.map((l) => l.diffId));
}

const stagingEmpty = (work: string): void => assert.deepEqual(readdirSync(join(work, 'staging')), []);
const mounted = (p: string): boolean => statSync(p).dev !== statSync(join(p, '..')).dev;

const base = layer(dir('etc/'), file('etc/a', 'a'), file('etc/b', 'b'), dir('d/'), file('d/old', 'old'), symlink('link', 'etc/a'), file('gone', 'x'));
const upper = layer(file('.wh.gone'), file('etc/.wh.b'), file('d/new', 'new'), file('d/.wh..wh..opq'), file('etc/c', 'c'));

for (const mode of ['overlay', 'copy'] as const) {
  test(`${mode} bundles apply whiteouts and opaque dirs and appear whole`, async () => {
    const work = fresh('work');
    const store = await LayerStore.open(work, log, { bundleMode: mode });
    assert.equal(await store.bundleMode(), mode);
    const path = fresh('bundle');
    const info = await bundle(store, [base, upper], path);
    assert.equal(info.mode, mode);
    assert.equal(info.rootfs, join(path, 'rootfs'));
    const r = info.rootfs;
    assert.equal(mounted(r), mode === 'overlay');
    assert.deepEqual(readdirSync(r).sort(), ['d', 'etc', 'link']);
    assert.deepEqual(readdirSync(join(r, 'etc')).sort(), ['a', 'c']);
    assert.deepEqual(readdirSync(join(r, 'd')), ['new']);
    assert.deepEqual(readdirSync(path), ['rootfs']); // no temporary names left
    // A container's writes go to its own upper (or copy), never into the shared layer.
    writeFileSync(join(r, 'etc/a'), 'changed');
    assert.equal(readFileSync(join(store.layerPath(base.diffId), 'etc/a'), 'utf8'), 'a');
    await store.removeBundle(path);
    assert.equal(existsSync(r), false);
    await assert.rejects(store.removeBundle(path), BundleNotFound);
    assert.deepEqual((await store.gc()).removed.sort(), [base.diffId, upper.diffId].sort());
    assert.deepEqual(readdirSync(join(work, 'layers')), []);
    await store.close();
  });
}

test('overlay and copy bundles of the same layers are identical', async () => {
  const l3 = layer(file('.wh.d'), dir('d/'), file('d/again', 'again'), file('etc/a', 'a2', { mode: 0o600, uid: 7 }));
  const snaps = [];
  for (const mode of ['overlay', 'copy'] as const) {
    const store = await LayerStore.open(fresh('work'), log, { bundleMode: mode });
    const info = await bundle(store, [base, upper, l3], fresh('bundle'));
    snaps.push(snapshot(info.rootfs, { mtimes: true }));
    await store.removeBundle(info.bundlePath);
    await store.close();
  }
  assert.deepEqual(diffSnapshots(snaps[0]!, snaps[1]!, ['overlay', 'copy']), []);
  assert.deepEqual([...snaps[0]!.keys()].filter((p) => p.startsWith('d')), ['d', 'd/again']);
});

test('a symlink from a lower layer never redirects a later layer: copy refuses, overlay shadows it', async () => {
  const sentinel = fresh('sentinel');
  mkdirSync(sentinel);
  writeFileSync(join(sentinel, 'keep'), 'keep');
  const evil1 = layer(symlink('link', sentinel), symlink('rel', '../../../../../../../../..' + sentinel));
  const evil2 = layer(file('link/pwned', 'x'), file('link/.wh.keep'), file('rel/pwned', 'x'));
  const copy = await LayerStore.open(fresh('work'), log, { bundleMode: 'copy' });
  const path = fresh('bundle');
  await assert.rejects(bundle(copy, [evil1, evil2], path), UnsafeArchive);
  assert.deepEqual(readdirSync(sentinel), ['keep']);
  assert.equal(existsSync(join(path, 'rootfs')), false);
  assert.deepEqual(existsSync(path) ? readdirSync(path) : [], []);
  await copy.close();
  const overlay = await LayerStore.open(fresh('work'), log, { bundleMode: 'overlay' });
  const info = await bundle(overlay, [evil1, evil2], fresh('bundle'));
  assert.ok(lstatSync(join(info.rootfs, 'link')).isDirectory());
  // The whiteout of link/keep names nothing below; overlayfs would list it in this one-layer directory.
  assert.deepEqual(readdirSync(join(info.rootfs, 'link')), ['pwned']);
  assert.deepEqual(readdirSync(sentinel), ['keep']);
  await overlay.removeBundle(info.bundlePath);
  await overlay.close();
});

test('an explicit directory entry replaces a lower symlink in both modes', async () => {
  const l1 = layer(symlink('lib', 'usr/lib'), dir('usr/lib/'), file('usr/lib/x', 'x'));
  const l2 = layer(dir('lib/'), file('lib/y', 'y'));
  for (const mode of ['overlay', 'copy'] as const) {
    const store = await LayerStore.open(fresh('work'), log, { bundleMode: mode });
    const info = await bundle(store, [l1, l2], fresh('bundle'));
    assert.deepEqual(readdirSync(join(info.rootfs, 'lib')), ['y']);
    await store.removeBundle(info.bundlePath);
    await store.close();
  }
});

test('a layer shared by two images is produced once; concurrent ensureLayer calls coalesce', async () => {
  const work = fresh('work');
  const store = await LayerStore.open(work, log);
  const calls = { n: 0 };
  const slow = (l: Layer) => async (d: string, signal: AbortSignal) => {
    calls.n++;
    await new Promise((r) => setTimeout(r, 50));
    return unpackLayer(Readable.from([l.bytes]), d, { limits: TEST_LIMITS, log, signal });
  };
  const t1 = store.begin();
  const t2 = store.begin();
  const [p1, p2] = await Promise.all([t1.ensureLayer(base.diffId, slow(base)), t2.ensureLayer(base.diffId, slow(base))]);
  assert.equal(calls.n, 1);
  assert.equal(p1, p2);
  await t1.ensureLayer(upper.diffId, slow(upper));
  const b1 = await t1.commitBundle(fresh('bundle'), [base.diffId, upper.diffId]);
  const b2 = await t2.commitBundle(fresh('bundle'), [base.diffId]);
  const t3 = store.begin();
  await t3.ensureLayer(base.diffId, slow(base)); // already stored: not produced again
  await t3.rollback();
  assert.equal(calls.n, 2);
  // Removing one image keeps the shared layer for the other.
  await store.removeBundle(b1.bundlePath);
  assert.deepEqual((await store.gc()).removed, [upper.diffId]);
  assert.ok(store.has(base.diffId));
  assert.equal(readFileSync(join(b2.rootfs, 'etc/a'), 'utf8'), 'a');
  await store.removeBundle(b2.bundlePath);
  await store.close();
});

test('a waiter that gives up does not cancel the run others wait for; when all give up it is cancelled', async () => {
  const work = fresh('work');
  const store = await LayerStore.open(work, log);
  let release: () => void = () => {};
  const gate = new Promise<void>((r) => (release = r));
  let producerSignal: AbortSignal | undefined;
  const gated = (l: Layer) => async (d: string, signal: AbortSignal) => {
    producerSignal = signal;
    await gate;
    return unpackLayer(Readable.from([l.bytes]), d, { limits: TEST_LIMITS, log, signal });
  };
  const a = new AbortController();
  const ta = store.begin();
  const tb = store.begin();
  const pa = ta.ensureLayer(base.diffId, gated(base), a.signal);
  const pb = tb.ensureLayer(base.diffId, gated(base));
  a.abort();
  await assert.rejects(pa, { code: 1 });
  assert.equal(producerSignal?.aborted, false);
  release();
  assert.equal(await pb, store.layerPath(base.diffId));
  await ta.rollback();
  await tb.rollback();
  assert.equal(store.has(base.diffId), false); // fresh, and nobody kept it
  // Now everybody leaves: the run's signal aborts and its staging goes.
  let release2: () => void = () => {};
  const gate2 = new Promise<void>((r) => (release2 = r));
  const c = new AbortController();
  const tc = store.begin();
  const pc = tc.ensureLayer(upper.diffId, async (d, signal) => {
    producerSignal = signal;
    writeFileSync(join(d, 'partial'), 'x');
    await gate2;
    if (signal.aborted) throw new Error('stopped');
    return unpackLayer(Readable.from([upper.bytes]), d, { limits: TEST_LIMITS, log, signal });
  }, c.signal);
  await new Promise((r) => setTimeout(r, 10));
  c.abort();
  await assert.rejects(pc, { code: 1 });
  assert.equal(producerSignal?.aborted, true);
  release2();
  await new Promise((r) => setTimeout(r, 50));
  await tc.rollback();
  stagingEmpty(work);
  assert.equal(store.has(upper.diffId), false);
  await store.close();
});

test('a failing producer leaves nothing; every waiter sees the error; a retry runs again', async () => {
  const work = fresh('work');
  const store = await LayerStore.open(work, log);
  const bad = { diffId: base.diffId, bytes: tar(file('../escape', 'x')) };
  const t = store.begin();
  const t2 = store.begin();
  await assert.rejects(Promise.all([t.ensureLayer(base.diffId, produce(bad)), t2.ensureLayer(base.diffId, produce(bad))]), UnsafeArchive);
  await t2.rollback();
  stagingEmpty(work);
  assert.equal(store.has(base.diffId), false);
  await assert.rejects(t.ensureLayer(upper.diffId, async (d) => writeFileSync(join(d, 'x'), 'no sidecar')), StoreError);
  stagingEmpty(work);
  await t.ensureLayer(base.diffId, produce(base));
  assert.ok(store.has(base.diffId));
  await t.rollback();
  assert.equal(store.has(base.diffId), false);
  await store.close();
});

test('rollback removes only what the transaction created and nothing else uses', async () => {
  const work = fresh('work');
  const store = await LayerStore.open(work, log);
  const kept = await bundle(store, [base], fresh('bundle'));
  const other = store.begin();
  const l3 = layer(file('three', '3'));
  await other.ensureLayer(l3.diffId, produce(l3));
  const t = store.begin();
  await t.ensureLayer(base.diffId, produce(base)); // in a bundle: stays
  await t.ensureLayer(upper.diffId, produce(upper)); // created here: goes
  await t.ensureLayer(l3.diffId, produce(l3)); // another live transaction uses it: stays
  await t.rollback();
  assert.deepEqual([store.has(base.diffId), store.has(upper.diffId), store.has(l3.diffId)], [true, false, true]);
  await other.rollback();
  assert.equal(store.has(l3.diffId), false);
  await assert.rejects(t.ensureLayer(base.diffId, produce(base)), StoreError); // ended
  await assert.rejects(store.begin().commitBundle(fresh('bundle'), [upper.diffId]), LayerNotFound);
  await assert.rejects(bundle(store, [base], kept.bundlePath), BundleExists);
  assert.equal(readFileSync(join(kept.rootfs, 'etc/a'), 'utf8'), 'a');
  await store.removeBundle(kept.bundlePath);
  await store.close();
});

test('"auto" probes overlayfs in the background; close() waits for the probe, which leaves nothing behind', async () => {
  const work = fresh('work');
  const store = await LayerStore.open(work, log, { bundleMode: 'auto' });
  await store.close();
  assert.deepEqual(readdirSync(work).sort(), ['bundles', 'layers', 'staging']);
  assert.equal(readFileSync('/proc/self/mountinfo', 'utf8').includes(work), false);
  // A probe killed with its overlay mounted: the next open unmounts and removes it.
  if (process.getuid?.() === 0) {
    for (const d of ['l', 'u', 'w', 'm']) mkdirSync(join(work, 'probe', d), { recursive: true });
    await mountOverlay(join(work, 'probe/m'), join(work, 'probe'), ['l'], join(work, 'probe/u'), join(work, 'probe/w'));
    assert.ok(mounted(join(work, 'probe/m')));
  }
  const again = await LayerStore.open(work, log);
  assert.equal(await again.bundleMode(), process.getuid?.() === 0 ? 'overlay' : 'copy');
  await again.close();
  assert.deepEqual(readdirSync(work).sort(), ['bundles', 'layers', 'staging']);
  assert.equal(readFileSync('/proc/self/mountinfo', 'utf8').includes(work), false);
});

test('the overlay probe says which step failed', { skip: process.getuid?.() !== 0 && 'needs root' }, async () => {
  const stack = (): string => {
    const p = fresh('probe');
    for (const d of ['l1/d', 'l2/d', 'u', 'w', 'm']) mkdirSync(join(p, d), { recursive: true });
    for (const f of ['l1/a', 'l1/d/x', 'l2/d/y']) writeFileSync(join(p, f), '');
    return p;
  };
  assert.equal(await probeOverlayMount(stack()), undefined);
  const taken = stack();
  writeFileSync(join(taken, 'l2/a'), '');
  assert.match((await probeOverlayMount(taken))!, /^mknod failed \(.*exists/);
  const noDir = stack();
  rmSync(join(noDir, 'l2/d'), { recursive: true });
  assert.match((await probeOverlayMount(noDir))!, /^cannot set trusted xattrs \(/);
  const noWork = stack();
  rmSync(join(noWork, 'w'), { recursive: true });
  assert.match((await probeOverlayMount(noWork))!, /^overlay mount failed \(/);
  assert.equal(readFileSync('/proc/self/mountinfo', 'utf8').includes(noWork), false);
});

test('the work_dir lock: a second open fails while the first holds it', async () => {
  const work = fresh('work');
  const a = await LayerStore.open(work, log);
  await assert.rejects(LayerStore.open(work, log), StoreBusy);
  await a.close();
  const b = await LayerStore.open(work, log);
  await b.close();
});

test('open cleans what a kill -9 left: staging, half-stored layers, bundles never finished', async () => {
  const work = fresh('work');
  const store = await LayerStore.open(work, log);
  const keep = await bundle(store, [base], fresh('bundle'));
  const keepCopy = await LayerStore.open(fresh('work'), log, { bundleMode: 'copy' });
  await keepCopy.close();
  await store.close();
  // A child process takes the store and dies mid-layer.
  const child = spawn(
    process.execPath,
    [
      '--input-type=module',
      '-e',
      `import { LayerStore } from ${JSON.stringify(new URL('../../agent/src/image/store.ts', import.meta.url).href)};
       import { createLogger } from ${JSON.stringify(new URL('../../agent/src/log.ts', import.meta.url).href)};
       import { writeFileSync } from 'node:fs';
       const s = await LayerStore.open(${JSON.stringify(work)}, createLogger('silent'), { gcOnOpen: false });
       s.begin().ensureLayer(${JSON.stringify(upper.diffId)}, async (d) => { writeFileSync(d + '/half', 'x'); console.log('producing'); await new Promise(() => {}); });`,
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  await new Promise<void>((resolve) => child.stdout.on('data', (d: Buffer) => d.toString().includes('producing') && resolve()));
  await assert.rejects(LayerStore.open(work, log), StoreBusy);
  child.kill('SIGKILL');
  await new Promise((r) => child.on('exit', r));
  assert.equal(readdirSync(join(work, 'staging')).length, 1);
  // What other crash points leave: a layer dir without its sidecar, a sidecar without its dir,
  // a copy bundle caught mid-build, an overlay bundle mounted but not yet "ready".
  const name = upper.diffId.replace(':', '-');
  mkdirSync(join(work, 'layers', name));
  const l3 = layer(file('x'));
  writeFileSync(join(work, 'layers', `${l3.diffId.replace(':', '-')}.layer.json`), '{}');
  const half = fresh('bundle');
  mkdirSync(join(half, '.rootfs-abc'), { recursive: true });
  const halfId = createHash('sha256').update(half).digest('hex').slice(0, 32);
  writeFileSync(join(work, 'bundles', `${halfId}.json`), JSON.stringify({ bundlePath: half, mode: 'copy', layers: [base.diffId], state: 'building', tmp: join(half, '.rootfs-abc') }));
  const mountedHalf = fresh('bundle');
  const mhId = createHash('sha256').update(mountedHalf).digest('hex').slice(0, 32);
  for (const d of ['upper', 'work']) mkdirSync(join(work, 'bundles', mhId, d), { recursive: true });
  mkdirSync(join(mountedHalf, 'rootfs'), { recursive: true });
  execFileSync('mount', ['-t', 'overlay', 'overlay', '-o', `lowerdir=${store.layerPath(base.diffId)},upperdir=${join(work, 'bundles', mhId, 'upper')},workdir=${join(work, 'bundles', mhId, 'work')}`, join(mountedHalf, 'rootfs')]);
  writeFileSync(join(work, 'bundles', `${mhId}.json`), JSON.stringify({ bundlePath: mountedHalf, mode: 'overlay', layers: [base.diffId], state: 'building' }));
  const again = await LayerStore.open(work, log);
  stagingEmpty(work);
  assert.deepEqual(readdirSync(join(work, 'layers')).sort(), [base.diffId.replace(':', '-'), `${base.diffId.replace(':', '-')}.layer.json`]);
  assert.deepEqual(readdirSync(half), []);
  assert.equal(existsSync(join(mountedHalf, 'rootfs')), false);
  assert.deepEqual(readdirSync(join(work, 'bundles')).sort(), [createHash('sha256').update(keep.bundlePath).digest('hex').slice(0, 32), `${createHash('sha256').update(keep.bundlePath).digest('hex').slice(0, 32)}.json`].sort());
  assert.deepEqual(again.bundles().map((b) => b.bundlePath), [keep.bundlePath]);
  assert.equal(readFileSync(join(keep.rootfs, 'etc/a'), 'utf8'), 'a'); // the finished bundle survived
  // And the crashed layer can be pulled again.
  const t = again.begin();
  await t.ensureLayer(upper.diffId, produce(upper));
  await t.commitBundle(fresh('bundle'), [base.diffId, upper.diffId]);
  for (const b of again.bundles()) await again.removeBundle(b.bundlePath);
  await again.close();
});

test('overlay mode is refused where overlayfs cannot carry the work_dir; auto falls back to copy', async () => {
  const odd = fresh('work:colon');
  await assert.rejects(LayerStore.open(odd, log, { bundleMode: 'overlay' }), BundleUnavailable);
  const auto = await LayerStore.open(odd, log, { bundleMode: 'auto' });
  assert.equal(await auto.bundleMode(), 'copy');
  await auto.close();
});

test('whiteouts in a directory only one layer has are not listed in either mode', async () => {
  const bottom = layer(file('.wh.nothing'), file('new/.wh.ghost'), file('new/real', 'r'));
  const l2 = layer(file('fresh/deeper/.wh.ghost2'), file('fresh/deeper/x', 'x'));
  const snaps = [];
  for (const mode of ['overlay', 'copy'] as const) {
    const store = await LayerStore.open(fresh('work'), log, { bundleMode: mode });
    const info = await bundle(store, [bottom, l2], fresh('bundle'));
    snaps.push(snapshot(info.rootfs, { mtimes: true }));
    await store.removeBundle(info.bundlePath);
    await store.close();
  }
  assert.deepEqual([...snaps[0]!.keys()], ['fresh', 'fresh/deeper', 'fresh/deeper/x', 'new', 'new/real']);
  assert.deepEqual(diffSnapshots(snaps[0]!, snaps[1]!, ['overlay', 'copy']), []);
});

test('empty layers and everything below an opaque root are left out of the stack', async () => {
  const empty = layer();
  const reset = layer(file('.wh..wh..opq'), file('only', 'o'));
  const store = await LayerStore.open(fresh('work'), log, { bundleMode: 'overlay' });
  const info = await bundle(store, [base, empty, reset, empty], fresh('bundle'));
  assert.deepEqual(readdirSync(info.rootfs), ['only']);
  assert.ok(readFileSync('/proc/self/mountinfo', 'utf8').includes(info.rootfs));
  await store.removeBundle(info.bundlePath);
  await store.close();
});

test.after(() => {
  // Unmount anything a failed test left before removing the tree.
  for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const mp = line.split(' ')[4];
    if (mp?.startsWith(top)) execFileSync('umount', ['-l', mp]);
  }
  rmSync(top, { recursive: true, force: true });
});
