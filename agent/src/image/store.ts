// The content-addressed layer store under work_dir, and bundles built from it.
//
//   work_dir/lock                       pid and start time of the owning process
//   work_dir/layers/<alg>-<hex>/        one unpacked layer (an overlayfs lower dir)
//   work_dir/layers/<alg>-<hex>.layer.json   its sidecar (written first)
//   work_dir/staging/<random>/          layers being produced; removed on open
//   work_dir/probe/                     the overlayfs probe's tiny stack; removed on open
//   work_dir/bundles/<id>.json          one record per bundle: path, mode, layers, state
//   work_dir/bundles/<id>/{upper,work}  overlay upper and work dirs of that bundle
//
// A layer exists when its directory exists: it is produced in staging, synced
// and renamed into place. A bundle record is written "building" before any
// change at the bundle path and "ready" after, so open() can undo whatever a
// crash left half done. Layers are pinned by the transactions that use them
// and referenced by bundle records; gc removes the rest.

import { createHash, randomBytes } from 'node:crypto';
import {
  chmodSync,
  chownSync,
  closeSync,
  fsyncSync,
  lchownSync,
  lstatSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmdirSync,
  statSync,
  unlinkSync,
  utimesSync,
  writeFileSync,
  writeSync,
  type Stats,
} from 'node:fs';
import { rm } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import type { Logger } from '../log.ts';
import { BundleExists, BundleNotFound, BundleUnavailable, LayerNotFound, StoreBusy, StoreError } from './errors.ts';
import { flatten } from './flatten.ts';
import { readLayerMeta, sidecarPath, type LayerMeta } from './layer-meta.ts';
import { abortError } from './archive-errors.ts';
import { parseDigest } from './stages.ts';
import { mountOverlay, probeOverlayMount, syncFs, unmount } from './sys.ts';

export type BundleMode = 'auto' | 'overlay' | 'copy';

export interface StoreOptions {
  /** config image.bundle_mode; default "auto": overlay where the probe at open succeeds. */
  bundleMode?: BundleMode;
  /** syncfs before renames (skipped on tmpfs anyway); default true. */
  durable?: boolean;
  /** Remove layers no bundle references when opening (a crashed pull's layers); default true. */
  gcOnOpen?: boolean;
}

export interface BundleInfo {
  bundlePath: string;
  /** bundlePath/rootfs */
  rootfs: string;
  mode: 'overlay' | 'copy';
  /** diff_ids, lowest first, as given to commitBundle. */
  layers: string[];
}

export interface PullTransaction {
  /**
   * The store path of a layer, producing it first if it is missing. produce
   * runs at most once per diffId at a time across all transactions
   * (concurrent calls wait for the same run); it must fill stagingDir with
   * unpackLayer, whose sidecar the store requires. The layer is synced and
   * renamed into place; on failure the staging dir is removed. `signal`
   * cancels this caller's wait; the run itself is cancelled (its signal
   * aborted) only when every caller waiting for it has gone.
   */
  ensureLayer(diffId: string, produce: (stagingDir: string, signal: AbortSignal) => Promise<unknown>, signal?: AbortSignal): Promise<string>;
  /** Build bundlePath/rootfs from the layers (lowest first); nothing is visible there until it is complete. Ends the transaction. */
  commitBundle(bundlePath: string, diffIds: string[]): Promise<BundleInfo>;
  /** Fail closed: remove layers this transaction created that nothing else uses. Ends the transaction; a no-op after commitBundle. */
  rollback(): Promise<void>;
}

interface BundleRecord {
  bundlePath: string;
  mode: 'overlay' | 'copy';
  layers: string[];
  state: 'building' | 'ready';
  /** Copy mode: the temporary rootfs being built inside bundlePath. */
  tmp?: string;
}

interface Flight {
  promise: Promise<void>;
  waiters: number;
  settled: boolean;
  controller: AbortController;
}

const LOCK_STALE_CHECK = (pid: number, start: string): boolean => {
  try {
    return procStart(pid) === start;
  } catch {
    return false;
  }
};

/** Field 22 of /proc/PID/stat: the start time, which tells a reused pid apart. */
function procStart(pid: number): string {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19] ?? '';
}

const layerName = (diffId: string): string => diffId.replace(':', '-');
const bundleId = (bundlePath: string): string => createHash('sha256').update(bundlePath).digest('hex').slice(0, 32);
const LAYER_NAME_RE = /^(sha256-[a-f0-9]{64}|sha512-[a-f0-9]{128})$/;
/** mount(2) copies one page of options. */
const MOUNT_OPTS_MAX = 4000;

function lstatOrUndefined(path: string): Stats | undefined {
  try {
    return lstatSync(path);
  } catch {
    return undefined;
  }
}

function exists(path: string): boolean {
  try {
    lstatSync(path);
    return true;
  } catch {
    return false;
  }
}

function isMountPoint(path: string): boolean {
  try {
    return statSync(path).dev !== statSync(dirname(path)).dev;
  } catch {
    return false;
  }
}

function fsyncDir(dir: string): void {
  const fd = openSync(dir, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

export class LayerStore {
  readonly workDir: string;
  /** The mode bundles are built in, once probed ("auto" resolved); see bundleMode(). */
  private readonly mode: Promise<'overlay' | 'copy'>;
  private probing = true;
  private readonly log: Logger;
  private readonly durable: boolean;
  private readonly layersDir: string;
  private readonly stagingDir: string;
  private readonly bundlesDir: string;
  private readonly layers = new Set<string>();
  private readonly metas = new Map<string, LayerMeta>();
  private readonly flights = new Map<string, Flight>();
  private readonly pins = new Map<string, number>();
  /** Layers produced in this process that no bundle has referenced yet. */
  private readonly fresh = new Set<string>();
  private readonly records = new Map<string, BundleRecord>();
  private readonly configuredMode: BundleMode;
  private closed = false;

  private constructor(workDir: string, log: Logger, mode: Promise<'overlay' | 'copy'>, opts: StoreOptions) {
    this.workDir = workDir;
    this.log = log;
    this.mode = mode;
    void mode.finally(() => (this.probing = false));
    this.configuredMode = opts.bundleMode ?? 'auto';
    this.durable = opts.durable ?? true;
    this.layersDir = join(workDir, 'layers');
    this.stagingDir = join(workDir, 'staging');
    this.bundlesDir = join(workDir, 'bundles');
  }

  /**
   * Open (creating) the store at workDir, take its lock, clean what a crash
   * left, and probe the bundle mode. With "auto" the overlay probe (one
   * child process, ~20 ms) runs while the first pull downloads; an
   * explicit "overlay" is checked before this returns.
   */
  static async open(workDir: string, log: Logger, opts: StoreOptions = {}): Promise<LayerStore> {
    const dir = resolve(workDir);
    for (const d of ['', 'layers', 'staging', 'bundles']) {
      try {
        mkdirSync(join(dir, d), { recursive: true, mode: 0o700 });
      } catch (err) {
        throw new StoreError(`cannot create ${join(dir, d)}`, { cause: err });
      }
    }
    takeLock(dir);
    const configured = opts.bundleMode ?? 'auto';
    let known: 'overlay' | 'copy' | undefined;
    try {
      if (configured !== 'auto') known = await chooseMode(dir, configured, log);
    } catch (err) {
      releaseLock(dir);
      throw err;
    }
    let probe!: (mode: 'overlay' | 'copy') => void;
    const store = new LayerStore(dir, log, known ? Promise.resolve(known) : new Promise((resolve) => (probe = resolve)), opts);
    try {
      await store.recover();
      if (opts.gcOnOpen ?? true) {
        const { removed } = await store.gc();
        if (removed.length) log.info({ removed: removed.length }, 'image store: removed layers no bundle uses');
      }
    } catch (err) {
      if (!known) probe('copy');
      await store.close();
      throw err;
    }
    // After recover(), which removes what a killed probe left in work_dir/probe.
    if (!known) {
      void chooseMode(dir, 'auto', log).then(
        (mode) => {
          log.debug({ bundleMode: mode }, 'image store bundle mode probed');
          probe(mode);
        },
        () => probe('copy'),
      );
    }
    log.info({ workDir: dir, bundleMode: known ?? configured, layers: store.layers.size, bundles: store.records.size }, 'image store open');
    return store;
  }

  /** The mode bundles are built in: "overlay" or "copy", once the probe at open has finished. */
  bundleMode(): Promise<'overlay' | 'copy'> {
    return this.mode;
  }

  /** Release the store's lock; after an "auto" probe still running at open has cleaned up. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.probing) await this.mode;
    releaseLock(this.workDir);
  }

  begin(): PullTransaction {
    if (this.closed) throw new StoreError('store is closed');
    return new Transaction(this);
  }

  has(diffId: string): boolean {
    return this.layers.has(diffId);
  }

  layerPath(diffId: string): string {
    return join(this.layersDir, layerName(diffId));
  }

  /** Bundles of this store. */
  bundles(): BundleInfo[] {
    return [...this.records.values()].filter((r) => r.state === 'ready').map((r) => this.info(r));
  }

  /** Unmount or delete bundlePath/rootfs and forget the bundle; its layers stay until gc. */
  async removeBundle(bundlePath: string): Promise<void> {
    const path = resolve(bundlePath);
    const id = bundleId(path);
    const rec = this.records.get(id);
    if (!rec || rec.state !== 'ready') throw new BundleNotFound(path);
    rec.state = 'building'; // stops a second removeBundle; the record file says "ready" until gone
    try {
      await this.teardown(id, rec);
    } catch (err) {
      rec.state = 'ready';
      throw err;
    }
    this.log.info({ bundlePath: path }, 'bundle removed');
  }

  /** Remove layers that no bundle references and no live transaction uses. */
  async gc(): Promise<{ removed: string[] }> {
    const used = new Set<string>();
    for (const r of this.records.values()) for (const l of r.layers) used.add(l);
    const removed: string[] = [];
    for (const diffId of [...this.layers]) {
      if (used.has(diffId) || (this.pins.get(diffId) ?? 0) > 0 || this.flights.has(diffId)) continue;
      await this.removeLayer(diffId);
      removed.push(diffId);
    }
    return { removed };
  }

  // ---- transactions ----

  /** @internal */
  pin(diffId: string, delta: number): void {
    const n = (this.pins.get(diffId) ?? 0) + delta;
    if (n > 0) this.pins.set(diffId, n);
    else this.pins.delete(diffId);
  }

  /** @internal A layer a transaction no longer needs: removed when fresh, unpinned and unreferenced. */
  async release(diffIds: Iterable<string>): Promise<void> {
    for (const d of diffIds) {
      if (!this.fresh.has(d) || (this.pins.get(d) ?? 0) > 0 || this.flights.has(d) || this.referenced(d)) continue;
      await this.removeLayer(d);
    }
  }

  /** @internal Wait for the layer to exist, producing it once. */
  async obtain(diffId: string, produce: (stagingDir: string, signal: AbortSignal) => Promise<unknown>, signal?: AbortSignal): Promise<void> {
    if (this.layers.has(diffId)) return;
    let flight = this.flights.get(diffId);
    if (!flight) flight = this.startFlight(diffId, produce);
    flight.waiters++;
    try {
      if (!signal) return await flight.promise;
      if (signal.aborted) throw abortError(signal);
      let onAbort: () => void = () => {};
      const aborted = new Promise<never>((_, reject) => {
        onAbort = () => reject(abortError(signal));
        signal.addEventListener('abort', onAbort, { once: true });
      });
      try {
        return await Promise.race([flight.promise, aborted]);
      } finally {
        signal.removeEventListener('abort', onAbort);
      }
    } finally {
      flight.waiters--;
      if (flight.waiters === 0 && !flight.settled) flight.controller.abort(signal?.reason);
    }
  }

  private startFlight(diffId: string, produce: (stagingDir: string, signal: AbortSignal) => Promise<unknown>): Flight {
    const controller = new AbortController();
    const flight: Flight = { promise: Promise.resolve(), waiters: 0, settled: false, controller };
    flight.promise = (async () => {
      const stage = join(this.stagingDir, randomBytes(8).toString('hex'));
      const dir = join(stage, 'layer');
      try {
        mkdirSync(stage, 0o700);
        mkdirSync(dir, 0o755);
        const t0 = performance.now();
        await produce(dir, controller.signal);
        if (controller.signal.aborted) throw abortError(controller.signal);
        const sidecar = sidecarPath(dir);
        if (!exists(sidecar)) throw new StoreError('the layer producer left no sidecar (use unpackLayer)');
        const meta = readLayerMeta(sidecar);
        if (this.durable) await syncFs(stage);
        const name = layerName(diffId);
        renameSync(sidecar, join(this.layersDir, `${name}.layer.json`));
        renameSync(dir, join(this.layersDir, name));
        if (this.durable) fsyncDir(this.layersDir);
        this.layers.add(diffId);
        this.metas.set(diffId, meta);
        this.fresh.add(diffId);
        this.log.info({ diffId, entries: meta.entries, ms: Math.round(performance.now() - t0) }, 'layer stored');
      } finally {
        await rm(stage, { recursive: true, force: true });
      }
    })();
    flight.promise
      .finally(() => {
        flight.settled = true;
        this.flights.delete(diffId);
        // Every transaction that wanted it has gone: fail closed.
        if (this.layers.has(diffId) && (this.pins.get(diffId) ?? 0) === 0 && !this.referenced(diffId)) return this.removeLayer(diffId);
        return undefined;
      })
      .catch(() => {}); // the waiters see the failure
    this.flights.set(diffId, flight);
    return flight;
  }

  /** @internal */
  async buildBundle(bundlePath: string, diffIds: readonly string[]): Promise<BundleInfo> {
    const path = resolve(bundlePath);
    const id = bundleId(path);
    const rootfs = join(path, 'rootfs');
    if (this.records.has(id) || exists(rootfs)) throw new BundleExists(path);
    for (const d of diffIds) if (!this.layers.has(d)) throw new LayerNotFound(d);
    const stack = this.effectiveStack(diffIds);
    const mode = await this.bundleModeFor(stack);
    const rec: BundleRecord = { bundlePath: path, mode, layers: [...diffIds], state: 'building' };
    if (mode === 'copy') rec.tmp = join(path, `.rootfs-${randomBytes(6).toString('hex')}`);
    this.records.set(id, rec);
    try {
      this.writeRecord(id, rec);
      mkdirSync(path, { recursive: true });
      if (mode === 'overlay') await this.mountBundle(id, rootfs, stack);
      else {
        await flatten(
          stack.map((d) => ({ diffId: d, dir: this.layerPath(d), meta: this.meta(d) })),
          rec.tmp!,
          { asRoot: process.getuid?.() === 0, log: this.log },
        );
        if (this.durable) await syncFs(rec.tmp!);
        if (exists(rootfs)) throw new BundleExists(path);
        renameSync(rec.tmp!, rootfs);
        delete rec.tmp;
      }
      if (this.durable) fsyncDir(path);
      rec.state = 'ready';
      this.writeRecord(id, rec);
    } catch (err) {
      try {
        await this.teardown(id, rec);
      } catch (cleanupErr) {
        this.log.error({ err: cleanupErr, bundlePath: path }, 'cleanup of a failed bundle failed');
      }
      throw err;
    }
    for (const d of diffIds) this.fresh.delete(d);
    this.log.info({ bundlePath: path, mode, layers: diffIds.length, stacked: stack.length }, 'bundle ready');
    return this.info(rec);
  }

  private info(r: BundleRecord): BundleInfo {
    return { bundlePath: r.bundlePath, rootfs: join(r.bundlePath, 'rootfs'), mode: r.mode, layers: [...r.layers] };
  }

  private meta(diffId: string): LayerMeta {
    let m = this.metas.get(diffId);
    if (!m) {
      m = readLayerMeta(join(this.layersDir, `${layerName(diffId)}.layer.json`));
      this.metas.set(diffId, m);
    }
    return m;
  }

  /** The layers that matter, lowest first: empty layers dropped, and everything below the topmost opaque root. */
  private effectiveStack(diffIds: readonly string[]): string[] {
    let stack = diffIds.filter((d) => this.meta(d).entries > 0);
    let lowest = 0;
    stack.forEach((d, i) => {
      if (this.meta(d).opaque.includes('')) lowest = i;
    });
    stack = stack.slice(lowest);
    return stack;
  }

  private async bundleModeFor(stack: readonly string[]): Promise<'overlay' | 'copy'> {
    if ((await this.mode) === 'copy') return 'copy';
    let reason: string | undefined;
    if (stack.some((d) => !this.meta(d).overlayReady)) reason = 'a layer was unpacked without whiteout devices (not as root)';
    else if (new Set(stack).size !== stack.length) reason = 'the same layer appears twice in the stack';
    else if (stack.reduce((n, d) => n + layerName(d).length + 1, 0) + 2 * this.bundlesDir.length + 120 > MOUNT_OPTS_MAX) {
      reason = 'too many layers for one overlay mount';
    }
    if (!reason) return 'overlay';
    if (this.configuredMode === 'overlay') throw new BundleUnavailable(`overlay bundle impossible: ${reason}`);
    this.log.info({ reason }, 'bundle built as a copy');
    return 'copy';
  }

  private async mountBundle(id: string, rootfs: string, stack: readonly string[]): Promise<void> {
    const base = join(this.bundlesDir, id);
    const upper = join(base, 'upper');
    const work = join(base, 'work');
    mkdirSync(base, { recursive: true, mode: 0o700 });
    mkdirSync(upper);
    mkdirSync(work);
    // The merged root takes its attributes from the upper dir: copy the top layer's root.
    const top = stack[stack.length - 1];
    const st = lstatSync(top ? this.layerPath(top) : this.layersDir);
    chownSync(upper, st.uid, st.gid);
    chmodSync(upper, top ? st.mode & 0o7777 : 0o755);
    utimesSync(upper, st.atime, st.mtime);
    mkdirSync(rootfs, 0o755);
    let lower = stack.map(layerName).reverse();
    if (lower.length === 0) {
      mkdirSync(join(base, 'empty'));
      lower = [join(base, 'empty')];
    }
    await mountOverlay(rootfs, this.layersDir, lower, upper, work);
    this.hidePhantomWhiteouts(rootfs, stack);
  }

  /**
   * overlayfs lists a lower layer's whiteouts in a directory that only that
   * layer has (a "pure" directory is read straight through), though lookups
   * of them fail. Copying such a directory up (a chown to its own owner)
   * makes it merged, and merged directories hide whiteouts. The path is
   * walked with lstat and never through a symlink.
   */
  private hidePhantomWhiteouts(rootfs: string, stack: readonly string[]): void {
    const parents = new Set<string>();
    for (const d of stack) for (const w of this.meta(d).whiteouts) parents.add(w.includes('/') ? w.slice(0, w.lastIndexOf('/')) : '');
    parents.delete('');
    for (const p of parents) {
      let dir = rootfs;
      let st;
      for (const c of p.split('/')) {
        dir = join(dir, c);
        st = lstatOrUndefined(dir);
        if (!st?.isDirectory()) break;
      }
      if (!st?.isDirectory()) continue;
      const phantom = readdirSync(dir, { withFileTypes: true }).some((e) => e.isCharacterDevice() && !exists(join(dir, e.name)));
      if (phantom) lchownSync(dir, st.uid, st.gid);
    }
  }

  /** Undo a bundle, whatever state it reached: unmount, remove the rootfs and temp dirs, drop the record. */
  private async teardown(id: string, rec: BundleRecord): Promise<void> {
    const rootfs = join(rec.bundlePath, 'rootfs');
    if (rec.mode === 'overlay') {
      if (isMountPoint(rootfs)) await unmount(rootfs);
      try {
        rmdirSync(rootfs);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw new StoreError(`cannot remove ${rootfs}`, { cause: err });
      }
    } else {
      if (rec.tmp) await rm(rec.tmp, { recursive: true, force: true });
      if (exists(rootfs)) {
        // Make it vanish at once, then delete at leisure.
        const trash = join(rec.bundlePath, `.rootfs-removed-${randomBytes(6).toString('hex')}`);
        renameSync(rootfs, trash);
        await rm(trash, { recursive: true, force: true });
      }
    }
    await rm(join(this.bundlesDir, id), { recursive: true, force: true });
    try {
      unlinkSync(join(this.bundlesDir, `${id}.json`));
    } catch {
      // never written
    }
    this.records.delete(id);
  }

  private writeRecord(id: string, rec: BundleRecord): void {
    const file = join(this.bundlesDir, `${id}.json`);
    const tmp = `${file}.tmp`;
    const fd = openSync(tmp, 'w', 0o600);
    try {
      writeSync(fd, JSON.stringify(rec));
      if (this.durable) fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, file);
    if (this.durable) fsyncDir(this.bundlesDir);
  }

  private referenced(diffId: string): boolean {
    for (const r of this.records.values()) if (r.layers.includes(diffId)) return true;
    return false;
  }

  private async removeLayer(diffId: string): Promise<void> {
    if (!this.layers.delete(diffId)) return;
    this.metas.delete(diffId);
    this.fresh.delete(diffId);
    const name = layerName(diffId);
    // Vanish at once (rename), then delete; a crash in between leaves only staging to clean.
    const trash = join(this.stagingDir, `gc-${randomBytes(6).toString('hex')}`);
    renameSync(join(this.layersDir, name), trash);
    try {
      unlinkSync(join(this.layersDir, `${name}.layer.json`));
    } catch {
      // already gone
    }
    await rm(trash, { recursive: true, force: true });
  }

  /** Clean up after a crash: staging, half-stored layers, bundles that never became ready or are gone. */
  private async recover(): Promise<void> {
    for (const name of readdirSync(this.stagingDir)) await rm(join(this.stagingDir, name), { recursive: true, force: true });
    const probe = probeDir(this.workDir);
    if (exists(probe)) {
      if (isMountPoint(join(probe, 'm'))) await unmount(join(probe, 'm'));
      await rm(probe, { recursive: true, force: true });
    }
    const names = new Set(readdirSync(this.layersDir));
    for (const name of names) {
      const isSidecar = name.endsWith('.layer.json');
      const base = isSidecar ? name.slice(0, -'.layer.json'.length) : name;
      const complete = LAYER_NAME_RE.test(base) && names.has(base) && names.has(`${base}.layer.json`);
      if (complete) {
        if (!isSidecar) this.layers.add(base.replace('-', ':'));
        continue;
      }
      this.log.warn({ name }, 'image store: removing an incomplete layer');
      await rm(join(this.layersDir, name), { recursive: true, force: true });
    }
    for (const name of readdirSync(this.bundlesDir)) {
      if (!name.endsWith('.json')) continue;
      const id = name.slice(0, -'.json'.length);
      let rec: BundleRecord;
      try {
        rec = JSON.parse(readFileSync(join(this.bundlesDir, name), 'utf8')) as BundleRecord;
        if (typeof rec.bundlePath !== 'string' || !Array.isArray(rec.layers) || bundleId(rec.bundlePath) !== id) throw new Error('bad record');
      } catch {
        this.log.warn({ name }, 'image store: removing an unreadable bundle record');
        await rm(join(this.bundlesDir, name), { force: true });
        continue;
      }
      this.records.set(id, rec);
      const rootfs = join(rec.bundlePath, 'rootfs');
      const alive = rec.state === 'ready' && (rec.mode === 'overlay' ? isMountPoint(rootfs) : exists(rootfs));
      const layersThere = rec.layers.every((l) => this.layers.has(l));
      if (alive && layersThere) continue;
      this.log.warn({ bundlePath: rec.bundlePath, state: rec.state }, 'image store: undoing a bundle left by a crash or gone');
      await this.teardown(id, rec);
    }
    // Bundle dirs without a record.
    for (const name of readdirSync(this.bundlesDir)) {
      if (name.endsWith('.json') || this.records.has(name)) continue;
      await rm(join(this.bundlesDir, name), { recursive: true, force: true });
    }
  }
}

class Transaction implements PullTransaction {
  private readonly store: LayerStore;
  private readonly pinned = new Set<string>();
  private done = false;

  constructor(store: LayerStore) {
    this.store = store;
  }

  async ensureLayer(diffId: string, produce: (stagingDir: string, signal: AbortSignal) => Promise<unknown>, signal?: AbortSignal): Promise<string> {
    parseDigest(diffId);
    if (this.done) throw new StoreError('transaction already ended');
    if (!this.pinned.has(diffId)) {
      this.pinned.add(diffId);
      this.store.pin(diffId, 1);
    }
    await this.store.obtain(diffId, produce, signal);
    return this.store.layerPath(diffId);
  }

  async commitBundle(bundlePath: string, diffIds: string[]): Promise<BundleInfo> {
    if (this.done) throw new StoreError('transaction already ended');
    for (const d of diffIds) {
      parseDigest(d);
      if (!this.pinned.has(d)) {
        this.pinned.add(d);
        this.store.pin(d, 1);
      }
    }
    const info = await this.store.buildBundle(bundlePath, diffIds);
    await this.end();
    return info;
  }

  async rollback(): Promise<void> {
    await this.end();
  }

  private async end(): Promise<void> {
    if (this.done) return;
    this.done = true;
    for (const d of this.pinned) this.store.pin(d, -1);
    await this.store.release(this.pinned);
  }
}

function releaseLock(dir: string): void {
  try {
    unlinkSync(join(dir, 'lock'));
  } catch {
    // already gone
  }
}

function takeLock(dir: string): void {
  const lock = join(dir, 'lock');
  const me = `${process.pid} ${procStart(process.pid)}\n`;
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      writeFileSync(lock, me, { flag: 'wx', mode: 0o600 });
      return;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw new StoreError(`cannot lock ${dir}`, { cause: err });
    }
    const [pidText, start] = readFileSync(lock, 'utf8').trim().split(' ');
    const pid = Number(pidText);
    if (Number.isInteger(pid) && pid > 0 && start && LOCK_STALE_CHECK(pid, start)) throw new StoreBusy(dir, pid);
    unlinkSync(lock); // left by a process that is gone
  }
  throw new StoreError(`cannot lock ${dir}`);
}

/** Decide the bundle mode: overlay needs root, mknod, trusted xattrs on work_dir and a working overlay mount. */
async function chooseMode(dir: string, configured: BundleMode, log: Logger): Promise<'overlay' | 'copy'> {
  if (configured === 'copy') return 'copy';
  let reason: string | undefined;
  if (process.getuid?.() !== 0) reason = 'not running as root';
  else if (/[,:\\]/.test(dir)) reason = 'work_dir contains a character overlayfs options cannot carry';
  else reason = await probeOverlay(dir);
  if (!reason) return 'overlay';
  if (configured === 'overlay') throw new BundleUnavailable(`image.bundle_mode is "overlay" but overlayfs is unusable: ${reason}`);
  log.info({ reason }, 'overlayfs unusable, bundles will be copies');
  return 'copy';
}

const probeDir = (workDir: string): string => join(workDir, 'probe');

/** Mount a tiny stack with a whiteout and an opaque dir and check the kernel honours both. */
async function probeOverlay(dir: string): Promise<string | undefined> {
  const probe = probeDir(dir);
  try {
    for (const d of ['', 'l1', 'l1/d', 'l2', 'l2/d', 'u', 'w', 'm']) mkdirSync(join(probe, d));
    writeFileSync(join(probe, 'l1/a'), '');
    writeFileSync(join(probe, 'l1/d/x'), '');
    writeFileSync(join(probe, 'l2/d/y'), '');
    return await probeOverlayMount(probe);
  } catch (err) {
    return (err as Error).message.slice(0, 200);
  } finally {
    if (!isMountPoint(join(probe, 'm'))) await rm(probe, { recursive: true, force: true }).catch(() => {});
  }
}
