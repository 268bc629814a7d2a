// Copy-mode bundles: the layer directories applied in order onto one
// directory, with overlayfs semantics (the layer directories are the same
// ones overlay mode mounts). Whiteouts and opaque markers come from each
// layer's sidecar, not from special files. The walk is top-down and checks
// each target path with lstat before touching it, so no path is resolved
// through a symlink; a layer that writes under a name that a lower layer made
// a symlink, without that directory being an entry of its own, is refused.

import { copyFile } from 'node:fs/promises';
import {
  chmodSync,
  constants,
  copyFileSync,
  lchownSync,
  linkSync,
  lstatSync,
  lutimesSync,
  mkdirSync,
  readdirSync,
  readlinkSync,
  rmSync,
  symlinkSync,
  type Stats,
} from 'node:fs';
import type { Logger } from '../log.ts';
import { StoreError, UnsafeArchive } from './errors.ts';
import type { LayerMeta } from './layer-meta.ts';
import { mknodBatch, setxattrBatch, type NodeSpec } from './sys.ts';

export interface FlattenLayer {
  diffId: string;
  dir: string;
  meta: LayerMeta;
}

const BIG_FILE = 1024 * 1024;

function lstatOrUndefined(path: string): Stats | undefined {
  try {
    return lstatSync(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

/** Linux dev_t split (glibc's gnu_dev_major/minor). */
function devParts(rdev: number): { major: number; minor: number } {
  const hi = Math.floor(rdev / 2 ** 32);
  const lo = rdev >>> 0;
  return { major: ((lo >>> 8) & 0xfff) | ((hi & 0xfffff000) >>> 0), minor: (lo & 0xff) | ((lo >>> 12) & 0xfff00) };
}

interface Ctx {
  target: string;
  asRoot: boolean;
  /** Final metadata of every directory, from the topmost layer that has it. */
  dirs: Map<string, Stats>;
}

export async function flatten(layers: readonly FlattenLayer[], target: string, opts: { asRoot: boolean; log: Logger }): Promise<void> {
  mkdirSync(target, 0o700);
  const ctx: Ctx = { target, asRoot: opts.asRoot, dirs: new Map() };
  for (const layer of layers) await applyLayer(ctx, layer, opts.log);
  // Directory metadata last: every layer's changes moved mtimes.
  for (const [rel, st] of ctx.dirs) {
    const abs = rel === '' ? target : `${target}/${rel}`;
    if (!lstatOrUndefined(abs)?.isDirectory()) continue; // removed or replaced by a later layer
    setMeta(ctx, abs, st, false);
  }
}

function setMeta(ctx: Ctx, abs: string, st: Stats, symlink: boolean): void {
  if (ctx.asRoot && (st.uid !== 0 || st.gid !== 0)) lchownSync(abs, st.uid, st.gid);
  if (!symlink) chmodSync(abs, st.mode & 0o7777);
  lutimesSync(abs, st.mtime, st.mtime);
}

async function applyLayer(ctx: Ctx, layer: FlattenLayer, log: Logger): Promise<void> {
  const whiteouts = new Set(layer.meta.whiteouts);
  // Whiteouts by parent directory: applied when the walk stands in that (checked) directory.
  const whiteoutsIn = new Map<string, string[]>();
  for (const w of layer.meta.whiteouts) {
    const i = w.lastIndexOf('/');
    const parent = i < 0 ? '' : w.slice(0, i);
    const list = whiteoutsIn.get(parent);
    if (list) list.push(w);
    else whiteoutsIn.set(parent, [w]);
  }
  const opaque = new Set(layer.meta.opaque);
  const implicit = new Set(layer.meta.implicitDirs);
  const nodes: { spec: NodeSpec; st: Stats }[] = [];
  const big: Promise<void>[] = [];
  // Hard links inside the layer stay hard links: inode → first target path.
  const inodes = new Map<number, string>();
  ctx.dirs.set('', lstatSync(layer.dir));
  if (opaque.has('')) for (const name of readdirSync(ctx.target)) rmSync(`${ctx.target}/${name}`, { recursive: true, force: true });

  const walk = (rel: string): void => {
    const srcDir = rel === '' ? layer.dir : `${layer.dir}/${rel}`;
    for (const w of whiteoutsIn.get(rel) ?? []) rmSync(`${ctx.target}/${w}`, { recursive: true, force: true });
    for (const name of readdirSync(srcDir)) {
      const p = rel === '' ? name : `${rel}/${name}`;
      const dst = `${ctx.target}/${p}`;
      if (whiteouts.has(p)) continue; // the 0/0 device overlayfs reads; applied above
      const src = `${srcDir}/${name}`;
      const st = lstatSync(src);
      const tst = lstatOrUndefined(dst);
      if (st.isDirectory()) {
        if (tst?.isDirectory()) {
          if (opaque.has(p)) for (const child of readdirSync(dst)) rmSync(`${dst}/${child}`, { recursive: true, force: true });
        } else {
          if (tst?.isSymbolicLink() && implicit.has(p)) {
            throw new UnsafeArchive(`layer ${layer.diffId} writes through a symlink of a lower layer`, p);
          }
          if (tst) rmSync(dst, { recursive: true, force: true });
          mkdirSync(dst, 0o700);
        }
        ctx.dirs.set(p, st);
        walk(p);
        continue;
      }
      if (tst) rmSync(dst, { recursive: true, force: true });
      if (st.isFile()) {
        const first = st.nlink > 1 ? inodes.get(st.ino) : undefined;
        if (first !== undefined) {
          linkSync(`${ctx.target}/${first}`, dst);
          continue;
        }
        if (st.nlink > 1) inodes.set(st.ino, p);
        if (st.size >= BIG_FILE) {
          // Large copies go to the thread pool so the event loop keeps serving.
          big.push(copyFile(src, dst, constants.COPYFILE_EXCL).then(() => setMeta(ctx, dst, st, false)));
        } else {
          copyFileSync(src, dst, constants.COPYFILE_EXCL);
          setMeta(ctx, dst, st, false);
        }
      } else if (st.isSymbolicLink()) {
        symlinkSync(readlinkSync(src), dst);
        setMeta(ctx, dst, st, true);
      } else if (st.isCharacterDevice() || st.isBlockDevice() || st.isFIFO()) {
        const { major, minor } = devParts(st.rdev);
        nodes.push({ spec: { path: p, type: st.isFIFO() ? 'p' : st.isCharacterDevice() ? 'c' : 'b', major, minor }, st });
      } else {
        log.warn({ layer: layer.diffId, path: p.slice(0, 200) }, 'skipping a socket in a layer');
      }
    }
  };
  walk('');
  await Promise.all(big);
  // Per layer, so the next layer sees (and may replace) these nodes and attributes.
  await mknodBatch(ctx.target, nodes.map((n) => n.spec));
  for (const n of nodes) setMeta(ctx, `${ctx.target}/${n.spec.path}`, n.st, false);
  if (layer.meta.xattrs.length) {
    const r = await setxattrBatch(
      ctx.target,
      layer.meta.xattrs.map((x) => ({ path: x.path, name: x.name, value: Buffer.from(x.value, 'base64') })),
    );
    if (r.code !== 0) log.warn({ layer: layer.diffId, err: r.stderr.slice(0, 300) }, 'some xattrs could not be copied');
  }
}

export function assertDir(path: string): void {
  if (!lstatOrUndefined(path)?.isDirectory()) throw new StoreError(`${path} is not a directory`);
}
