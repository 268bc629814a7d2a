// Every filesystem write of one layer's unpack, into an empty directory
// that only this writer touches. It keeps its own tree of the directories it
// created, and never lets the kernel resolve a path through anything else:
// a parent that is not in the tree is created with mkdir (EEXIST there means
// a file or symlink of this layer sits in the way, which is refused). Files
// are created O_CREAT|O_EXCL|O_NOFOLLOW; an existing non-directory is
// unlinked first, a directory replaced by a non-directory is removed whole.
// Writes are synchronous: small syscalls on the event loop cost less than a
// thread-pool round trip per call, and the data path is one write per chunk.
//
// Whiteouts follow the image-spec: `.wh.NAME` hides NAME of lower layers and
// `.wh..wh..opq` hides a directory's lower content; neither touches entries of
// this layer. In the directory they become what overlayfs reads (0/0
// character devices, trusted.overlay.opaque=y); the sidecar records them too.

import {
  closeSync,
  constants,
  fchmodSync,
  fchownSync,
  futimesSync,
  linkSync,
  lstatSync,
  lchownSync,
  chmodSync,
  lutimesSync,
  mkdirSync,
  openSync,
  readFileSync,
  rmSync,
  symlinkSync,
  unlinkSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { fsError } from './archive-errors.ts';
import { LimitExceeded, StoreError, UnsafeArchive } from './errors.ts';
import { sidecarPath, type EntryMeta, type LayerMeta } from './layer-meta.ts';
import { classifyWhiteout, cleanName } from './names.ts';
import { mknodBatch, setxattrBatch, type NodeSpec, type XattrSpec } from './sys.ts';
import type { TarEntry } from './tar-guard.ts';
import { keepXattr, OPAQUE_XATTR } from './xattr.ts';

export interface UnpackStats {
  /** Tar entries read (extended headers not counted). */
  entries: number;
  /** Bytes of regular file content written. */
  bytes: number;
  files: number;
  dirs: number;
  symlinks: number;
  hardlinks: number;
  devices: number;
  /** Whiteout entries (.wh.NAME and 0/0 character devices) and opaque markers read. */
  whiteouts: number;
  opaque: number;
  /** Entries not written: device nodes when not root, AUFS metadata. */
  skipped: number;
  xattrsDropped: number;
}

type Leaf = { kind: 'whiteout' } | { kind: 'node'; spec: NodeSpec; meta: EntryMeta } | { kind: 'xattrs'; xattrs: Map<string, Buffer> };

class DirNode {
  readonly children = new Map<string, DirNode>();
  /** Non-directories that still need work at the end: pending nodes, whiteouts, file xattrs. */
  leaves: Map<string, Leaf> | undefined;
  implicit: boolean;
  opaque = false;
  meta: EntryMeta | undefined;
  xattrs: Map<string, Buffer> | undefined;
  constructor(implicit: boolean) {
    this.implicit = implicit;
  }
  setLeaf(name: string, leaf: Leaf): void {
    (this.leaves ??= new Map()).set(name, leaf);
  }
}

interface OpenFile {
  fd: number;
  entry: TarEntry;
  parent: DirNode;
  name: string;
  xattrs: Map<string, Buffer> | undefined;
  /** open() gave the file its mode already. */
  modeSet: boolean;
}

const CREATE = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW;
/**
 * The process umask, from /proc (process.umask() without a mask writes it
 * twice, racing other threads); when unknown, every mode is set by fchmod.
 */
const UMASK = ((): number => {
  try {
    const m = /^Umask:\s*([0-7]+)$/m.exec(readFileSync('/proc/self/status', 'latin1'));
    return m ? parseInt(m[1]!, 8) : 0o777;
  } catch {
    return 0o777;
  }
})();

const errno = (err: unknown): string | undefined => (err as NodeJS.ErrnoException).code;

const metaOf = (e: TarEntry): EntryMeta => ({ mode: e.mode, uid: e.uid, gid: e.gid, mtime: e.mtime });

/** The two log levels the unpacker uses; a pino Logger is one, and so is the unpack worker's forwarder. */
export interface UnpackLog {
  debug(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
}

export interface WriterOptions {
  maxTotalBytes: number;
  /** Create device nodes and whiteout devices, and chown (mknod needs CAP_MKNOD). */
  asRoot: boolean;
  log: UnpackLog;
}

export class LayerWriter {
  readonly root: string;
  readonly stats: UnpackStats = {
    entries: 0,
    bytes: 0,
    files: 0,
    dirs: 0,
    symlinks: 0,
    hardlinks: 0,
    devices: 0,
    whiteouts: 0,
    opaque: 0,
    skipped: 0,
    xattrsDropped: 0,
  };
  private readonly opts: WriterOptions;
  private readonly tree = new DirNode(true);
  private cacheKey: string | undefined;
  private cacheNode: DirNode = this.tree;
  private file: OpenFile | undefined;

  constructor(root: string, opts: WriterOptions) {
    this.root = root;
    this.opts = opts;
  }

  private abs(rel: string): string {
    return rel === '' ? this.root : `${this.root}/${rel}`;
  }

  /** Apply one entry. Returns true when the entry's data must be passed to write() and then endFile(). */
  apply(e: TarEntry): boolean {
    this.stats.entries++;
    const parts = cleanName(e.name);
    if (parts.length === 0) {
      if (e.type !== 'directory') throw new UnsafeArchive(`a ${e.type} cannot replace the root`, e.name);
      this.tree.implicit = false;
      this.tree.meta = metaOf(e);
      this.tree.xattrs = this.filterXattrs(e);
      return false;
    }
    const wh = classifyWhiteout(parts, e.name);
    if (wh.kind === 'meta') {
      this.stats.skipped++;
      return false;
    }
    if (wh.kind !== 'none') {
      // Under a file or symlink of this layer a whiteout is moot: that entry already hides everything below it.
      const parent = this.parentOf(parts, e.name, true);
      if (!parent) {
        this.stats.skipped++;
        return false;
      }
      if (wh.kind === 'opaque') {
        parent.opaque = true;
        this.stats.opaque++;
      } else this.whiteout(parent, wh.target, parts.slice(0, -1).concat(wh.target).join('/'));
      return false;
    }
    const parent = this.parentOf(parts, e.name)!;
    const name = parts[parts.length - 1]!;
    const rel = parts.join('/');
    const abs = this.abs(rel);
    if (e.type === 'directory') {
      this.directory(parent, name, abs, e);
      return false;
    }
    // A non-directory replaces whatever this layer had at the name.
    if (parent.children.delete(name)) {
      rmSync(abs, { recursive: true, force: true });
      this.cacheKey = undefined;
    }
    this.takeLeaf(parent, name); // a pending whiteout is superseded: the new entry hides the lower one itself
    switch (e.type) {
      case 'file':
        return this.openFile(parent, name, abs, e);
      case 'symlink':
        if (e.linkname === '') throw new UnsafeArchive('symlink with an empty target', e.name);
        this.replace(abs, () => symlinkSync(e.linkname, abs));
        this.setOwner(abs, e);
        lutimesSync(abs, e.mtime, e.mtime);
        this.stats.symlinks++;
        return false;
      case 'link':
        this.hardlink(rel, abs, e);
        return false;
      default:
        this.device(parent, name, rel, abs, e);
        return false;
    }
  }

  write(chunk: Buffer): void {
    const f = this.file!;
    let off = 0;
    while (off < chunk.length) off += writeSync(f.fd, chunk, off, chunk.length - off);
  }

  endFile(): void {
    const f = this.file!;
    this.file = undefined;
    try {
      const e = f.entry;
      if (this.opts.asRoot && (e.uid !== 0 || e.gid !== 0)) fchownSync(f.fd, e.uid, e.gid);
      if (!f.modeSet) fchmodSync(f.fd, e.mode); // after chown, which clears setuid bits
      futimesSync(f.fd, e.mtime, e.mtime);
    } finally {
      closeSync(f.fd);
    }
    if (f.xattrs) f.parent.setLeaf(f.name, { kind: 'xattrs', xattrs: f.xattrs });
    this.stats.files++;
  }

  /** Release an open file after a failure; the caller removes the directory. */
  abort(): void {
    if (this.file) {
      closeSync(this.file.fd);
      this.file = undefined;
    }
  }

  /** Create pending nodes, set xattrs and directory metadata, write the sidecar. */
  async finish(): Promise<LayerMeta> {
    const meta: LayerMeta = { version: 1, whiteouts: [], opaque: [], implicitDirs: [], xattrs: [], overlayReady: this.opts.asRoot, entries: this.stats.entries };
    const nodes: { spec: NodeSpec; meta: EntryMeta | undefined }[] = [];
    const dirs: [string, DirNode][] = [];
    const addXattrs = (path: string, xs: Map<string, Buffer> | undefined): void => {
      for (const [name, value] of xs ?? []) meta.xattrs.push({ path, name, value: value.toString('base64') });
    };
    const stack: [string, DirNode][] = [['', this.tree]];
    while (stack.length) {
      const [rel, node] = stack.pop()!;
      dirs.push([rel, node]);
      if (node.opaque) meta.opaque.push(rel);
      if (node.implicit && rel !== '') meta.implicitDirs.push(rel);
      addXattrs(rel, node.xattrs);
      const prefix = rel === '' ? '' : rel + '/';
      for (const [name, leaf] of node.leaves ?? []) {
        const path = prefix + name;
        if (leaf.kind === 'whiteout') {
          meta.whiteouts.push(path);
          if (this.opts.asRoot) nodes.push({ spec: { path, type: 'c', major: 0, minor: 0 }, meta: undefined });
        } else if (leaf.kind === 'node') nodes.push({ spec: leaf.spec, meta: leaf.meta });
        else addXattrs(path, leaf.xattrs);
      }
      for (const [name, child] of node.children) stack.push([prefix + name, child]);
    }
    await mknodBatch(this.root, nodes.map((n) => n.spec));
    for (const n of nodes) {
      if (!n.meta) continue;
      const abs = this.abs(n.spec.path);
      if (n.meta.uid !== 0 || n.meta.gid !== 0) lchownSync(abs, n.meta.uid, n.meta.gid);
      chmodSync(abs, n.meta.mode);
      lutimesSync(abs, n.meta.mtime, n.meta.mtime);
    }
    if (meta.opaque.length && this.opts.asRoot) {
      const r = await setxattrBatch(this.root, meta.opaque.map((path): XattrSpec => ({ path, name: OPAQUE_XATTR, value: Buffer.from('y') })));
      // Fail closed: a lost opaque marker would let lower content show through.
      if (r.code !== 0) throw new StoreError(`cannot mark opaque directories (${r.stderr.slice(0, 200)})`);
    }
    if (meta.xattrs.length) {
      const r = await setxattrBatch(this.root, meta.xattrs.map((x) => ({ path: x.path, name: x.name, value: Buffer.from(x.value, 'base64') })));
      if (r.code !== 0) this.opts.log.warn({ err: r.stderr.slice(0, 300) }, 'some layer xattrs could not be set');
    }
    // Directory metadata last: creating entries inside a directory changes its mtime.
    for (let i = dirs.length - 1; i >= 0; i--) {
      const [rel, node] = dirs[i]!;
      const abs = this.abs(rel);
      const m = node.meta;
      if (!m) {
        chmodSync(abs, 0o755);
        continue;
      }
      if (this.opts.asRoot && (m.uid !== 0 || m.gid !== 0)) lchownSync(abs, m.uid, m.gid);
      chmodSync(abs, m.mode);
      lutimesSync(abs, m.mtime, m.mtime);
    }
    if (this.tree.meta) meta.root = this.tree.meta;
    writeFileSync(sidecarPath(this.root), JSON.stringify(meta));
    return meta;
  }

  private filterXattrs(e: TarEntry): Map<string, Buffer> | undefined {
    if (e.xattrs.size === 0) return undefined;
    let kept: Map<string, Buffer> | undefined;
    for (const [name, value] of e.xattrs) {
      if ((e.type === 'file' || e.type === 'directory') && keepXattr(name, value)) (kept ??= new Map()).set(name, value);
      else this.stats.xattrsDropped++;
    }
    return kept;
  }

  /**
   * The directory that holds parts' last component, creating missing parents as implicit directories.
   * A parent that is not a directory is refused, or with `lenient` reported as undefined.
   */
  private parentOf(parts: readonly string[], raw: string, lenient = false): DirNode | undefined {
    const key = parts.length > 1 ? parts.slice(0, -1).join('/') : '';
    if (key === this.cacheKey) return this.cacheNode;
    let node = this.tree;
    let rel = '';
    for (let i = 0; i < parts.length - 1; i++) {
      const c = parts[i]!;
      rel = rel === '' ? c : `${rel}/${c}`;
      const next = node.children.get(c) ?? this.implicitDir(node, c, rel, raw, lenient);
      if (!next) return undefined;
      node = next;
    }
    this.cacheKey = key;
    this.cacheNode = node;
    return node;
  }

  private implicitDir(parent: DirNode, name: string, rel: string, raw: string, lenient: boolean): DirNode | undefined {
    const leaf = parent.leaves?.get(name);
    if (leaf?.kind === 'node') {
      if (lenient) return undefined;
      throw new UnsafeArchive(`parent ${JSON.stringify(rel)} is a device node`, raw);
    }
    const abs = this.abs(rel);
    try {
      mkdirSync(abs, 0o755);
    } catch (err) {
      if (errno(err) !== 'EEXIST') throw fsError(err, raw);
      if (lenient) return undefined;
      const what = lstatSync(abs).isSymbolicLink() ? 'a symlink' : 'not a directory';
      throw new UnsafeArchive(`parent ${JSON.stringify(rel)} is ${what}`, raw);
    }
    const node = new DirNode(true);
    // A directory where this layer whited out the name: the lower one stays hidden.
    if (this.takeLeaf(parent, name)?.kind === 'whiteout') node.opaque = true;
    parent.children.set(name, node);
    return node;
  }

  private takeLeaf(parent: DirNode, name: string): Leaf | undefined {
    const leaf = parent.leaves?.get(name);
    if (leaf) parent.leaves!.delete(name);
    return leaf;
  }

  /** Run create(); if something of this layer is in the way (never a directory), unlink it and retry once. */
  private replace(abs: string, create: () => void): void {
    try {
      create();
    } catch (err) {
      if (errno(err) !== 'EEXIST') throw fsError(err);
      unlinkSync(abs);
      create();
    }
  }

  private whiteout(parent: DirNode, name: string, rel: string): void {
    this.stats.whiteouts++;
    const dir = parent.children.get(name);
    if (dir) {
      // This layer's own directory stays; only the lower one goes.
      dir.opaque = true;
      return;
    }
    if (parent.leaves?.has(name)) return;
    try {
      lstatSync(this.abs(rel));
      return; // a non-directory of this layer already hides the lower entry
    } catch (err) {
      if (errno(err) !== 'ENOENT') throw fsError(err);
    }
    parent.setLeaf(name, { kind: 'whiteout' });
  }

  private directory(parent: DirNode, name: string, abs: string, e: TarEntry): void {
    let node = parent.children.get(name);
    if (node) {
      node.implicit = false;
    } else {
      node = new DirNode(false);
      if (this.takeLeaf(parent, name)?.kind === 'whiteout') node.opaque = true;
      this.replace(abs, () => mkdirSync(abs, 0o700));
      parent.children.set(name, node);
      this.stats.dirs++;
    }
    node.meta = metaOf(e);
    node.xattrs = this.filterXattrs(e);
  }

  private openFile(parent: DirNode, name: string, abs: string, e: TarEntry): boolean {
    if (this.stats.bytes + e.size > this.opts.maxTotalBytes) {
      throw new LimitExceeded('image.max_layer_bytes', `layer files add up to more than ${this.opts.maxTotalBytes} bytes`);
    }
    this.stats.bytes += e.size;
    const xattrs = this.filterXattrs(e);
    let fd = -1;
    // Most modes come out of open() as they are; the others are set at the end (endFile).
    const modeSet = (e.mode & (0o7000 | UMASK)) === 0;
    this.replace(abs, () => (fd = openSync(abs, CREATE, modeSet ? e.mode : 0o600)));
    this.file = { fd, entry: e, parent, name, xattrs, modeSet };
    if (e.size > 0) return true;
    this.endFile();
    return false;
  }

  private hardlink(rel: string, abs: string, e: TarEntry): void {
    const tparts = cleanName(e.linkname, 'hard link target');
    const trel = tparts.join('/');
    if (trel === '') throw new UnsafeArchive('hard link to the root', e.name);
    if (trel === rel) throw new UnsafeArchive('hard link to itself', e.name);
    // Resolve the target through this layer's own tree only.
    let node: DirNode | undefined = this.tree;
    for (let i = 0; i < tparts.length - 1 && node; i++) node = node.children.get(tparts[i]!);
    const tname = tparts[tparts.length - 1]!;
    if (!node) throw new UnsafeArchive(`hard link target ${JSON.stringify(trel)} is not a file of this layer`, e.name);
    if (node.children.has(tname)) throw new UnsafeArchive('hard link to a directory', e.name);
    const leaf = node.leaves?.get(tname);
    if (leaf && leaf.kind !== 'xattrs') throw new UnsafeArchive('hard link to a device node or whiteout', e.name);
    const target = this.abs(trel);
    let st;
    try {
      st = lstatSync(target);
    } catch {
      throw new UnsafeArchive(`hard link target ${JSON.stringify(trel)} is not a file of this layer`, e.name);
    }
    if (!st.isFile()) throw new UnsafeArchive(st.isSymbolicLink() ? 'hard link to a symlink' : 'hard link to a non-regular file', e.name);
    this.replace(abs, () => linkSync(target, abs));
    this.stats.hardlinks++;
  }

  private device(parent: DirNode, name: string, rel: string, abs: string, e: TarEntry): void {
    try {
      unlinkSync(abs);
    } catch (err) {
      if (errno(err) !== 'ENOENT') throw fsError(err, e.name);
    }
    if (e.type === 'character-device' && e.devmajor === 0 && e.devminor === 0) {
      // What overlayfs reads as a whiteout is one, in both bundle modes.
      parent.setLeaf(name, { kind: 'whiteout' });
      this.stats.whiteouts++;
      return;
    }
    if (!this.opts.asRoot) {
      this.stats.skipped++;
      if (this.stats.skipped <= 5) this.opts.log.warn({ entry: e.name.slice(0, 200), type: e.type }, 'device node skipped: not running as root');
      return;
    }
    const type = e.type === 'character-device' ? 'c' : e.type === 'block-device' ? 'b' : 'p';
    parent.setLeaf(name, { kind: 'node', spec: { path: rel, type, major: e.devmajor, minor: e.devminor }, meta: metaOf(e) });
    this.stats.devices++;
  }

  private setOwner(abs: string, e: TarEntry): void {
    if (this.opts.asRoot && (e.uid !== 0 || e.gid !== 0)) lchownSync(abs, e.uid, e.gid);
  }
}
