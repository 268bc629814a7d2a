// A strict second reader of the tar framing. tar-stream splits the archive
// into entries; this guard reads the same headers independently, strictly
// (as GNU tar and Go's archive/tar would agree on them), and the unpacker
// cross-checks every entry tar-stream emits against it. Any header two
// readers could disagree on is refused: extended headers bind only to the
// next real entry, at most one of each kind, never GNU and PAX names
// together; sizes are exact; nothing follows the end-of-archive block.
// It only looks at header blocks; entry data is skipped by offset.

import { isUtf8 } from 'node:buffer';
import { LimitExceeded, MalformedArchive, UnsafeArchive } from './errors.ts';

export type EntryType = 'file' | 'link' | 'symlink' | 'character-device' | 'block-device' | 'directory' | 'fifo';

/** One real entry as the guard read it; names are raw (not yet cleaned). */
export interface TarEntry {
  /** Offset of the entry's data (just past its header block) in the tar stream. */
  readonly offset: number;
  readonly type: EntryType;
  readonly name: string;
  readonly linkname: string;
  readonly size: number;
  readonly mode: number;
  readonly uid: number;
  readonly gid: number;
  /** Seconds since the epoch, possibly fractional (PAX). */
  readonly mtime: number;
  readonly devmajor: number;
  readonly devminor: number;
  /** SCHILY.xattr.* records, values as raw bytes. */
  readonly xattrs: ReadonlyMap<string, Buffer>;
}

export interface GuardLimits {
  maxEntries: number;
  maxFileSize: number;
}

const BLOCK = 512;
const ZERO_BLOCK = Buffer.alloc(BLOCK);
const ZEROS = Buffer.alloc(64 * 1024);
const MAX_PAX = 1024 * 1024;
const MAX_LONGNAME = 8192;
const MAX_ID = 0xffffffff;
const NO_XATTRS: ReadonlyMap<string, Buffer> = new Map();

const TYPES: Readonly<Record<string, EntryType>> = {
  '0': 'file',
  '\0': 'file',
  '7': 'file', // contiguous file: a regular file everywhere that matters
  '1': 'link',
  '2': 'symlink',
  '3': 'character-device',
  '4': 'block-device',
  '5': 'directory',
  '6': 'fifo',
};

type Meta = 'x' | 'g' | 'L' | 'K';

interface Pending {
  pax?: Map<string, Buffer>;
  longName?: string;
  longLink?: string;
}

function isZero(buf: Buffer): boolean {
  for (let i = 0; i < buf.length; i += ZEROS.length) {
    const n = Math.min(ZEROS.length, buf.length - i);
    if (!buf.subarray(i, i + n).equals(n === ZEROS.length ? ZEROS : ZEROS.subarray(0, n))) return false;
  }
  return true;
}

/** NUL-terminated string of a header field; the bytes must be UTF-8. */
function field(block: Buffer, off: number, len: number, what: string): string {
  let end = block.indexOf(0, off);
  if (end < 0 || end > off + len) end = off + len;
  const bytes = block.subarray(off, end);
  if (!isUtf8(bytes)) throw new UnsafeArchive(`${what} is not valid UTF-8`);
  return bytes.toString('utf8');
}

/** A numeric header field: octal (space/NUL padded) or positive base-256. */
function numeric(block: Buffer, off: number, len: number, what: string): number {
  const f = block.subarray(off, off + len);
  if (f[0]! & 0x80) {
    if (f[0] !== 0x80) throw new UnsafeArchive(`${what} is negative or not a valid base-256 number`);
    let v = 0;
    for (let i = 1; i < len; i++) {
      v = v * 256 + f[i]!;
      if (v > Number.MAX_SAFE_INTEGER) throw new UnsafeArchive(`${what} is too large`);
    }
    return v;
  }
  // Octal digits between space/NUL padding, read byte by byte: this runs for six fields of every entry.
  let i = 0;
  while (i < len && (f[i] === 0x20 || f[i] === 0)) i++;
  let v = 0;
  for (; i < len && f[i]! >= 0x30 && f[i]! <= 0x37; i++) v = v * 8 + (f[i]! - 0x30);
  while (i < len && (f[i] === 0x20 || f[i] === 0)) i++;
  if (i !== len) throw new UnsafeArchive(`${what} is not an octal number`);
  return v;
}

function decimal(v: Buffer, what: string, max: number): number {
  const s = v.toString('latin1');
  if (!/^\d{1,16}$/.test(s)) throw new UnsafeArchive(`PAX ${what} ${JSON.stringify(s.slice(0, 40))} is not a decimal number`);
  const n = Number(s);
  if (n > max) throw new UnsafeArchive(`PAX ${what} is too large`);
  return n;
}

function paxString(v: Buffer, what: string): string {
  if (v.length === 0) throw new UnsafeArchive(`PAX ${what} is empty`);
  if (v.includes(0)) throw new UnsafeArchive(`PAX ${what} contains a NUL byte`);
  if (!isUtf8(v)) throw new UnsafeArchive(`PAX ${what} is not valid UTF-8`);
  return v.toString('utf8');
}

/** PAX records "<len> <key>=<value>\n", parsed strictly; duplicate keys are refused. */
export function parsePax(buf: Buffer): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  let pos = 0;
  while (pos < buf.length) {
    const sp = buf.indexOf(0x20, pos);
    const lenText = sp < 0 ? '' : buf.toString('latin1', pos, sp);
    if (!/^[1-9]\d{0,7}$/.test(lenText)) {
      // Trailing NUL padding after the last record is tolerated by every reader.
      if (isZero(buf.subarray(pos))) break;
      throw new UnsafeArchive('PAX record has a bad length');
    }
    const len = Number(lenText);
    const end = pos + len;
    if (end > buf.length || buf[end - 1] !== 0x0a) throw new UnsafeArchive('PAX record overruns its header');
    const kv = buf.subarray(sp + 1, end - 1);
    const eq = kv.indexOf(0x3d);
    if (eq <= 0) throw new UnsafeArchive('PAX record has no key');
    const keyBytes = kv.subarray(0, eq);
    if (!isUtf8(keyBytes) || keyBytes.includes(0)) throw new UnsafeArchive('PAX key is not valid UTF-8');
    const key = keyBytes.toString('utf8');
    if (out.has(key)) throw new UnsafeArchive(`PAX key ${JSON.stringify(key.slice(0, 80))} appears twice`);
    out.set(key, Buffer.from(kv.subarray(eq + 1)));
    pos = end;
  }
  return out;
}

export class TarGuard {
  private readonly limits: GuardLimits;
  /** Offset of the next byte to be fed. */
  private pos = 0;
  /** Bytes of the current entry's data (and padding) still to skip. */
  private skip = 0;
  /** Collected content of the extended header being read, if any. */
  private collecting: { kind: Meta; chunks: Buffer[]; size: number } | undefined;
  private header: Buffer[] = [];
  private headerBytes = 0;
  private pending: Pending = {};
  private ended = false;
  private count = 0;
  private readonly queue: TarEntry[] = [];
  private head = 0;

  constructor(limits: GuardLimits) {
    this.limits = limits;
  }

  get entries(): number {
    return this.count;
  }

  feed(chunk: Buffer): void {
    let i = 0;
    while (i < chunk.length) {
      if (this.ended) {
        if (!isZero(chunk.subarray(i))) throw new UnsafeArchive('data after the end-of-archive block');
        this.pos += chunk.length - i;
        return;
      }
      if (this.skip > 0) {
        const n = Math.min(this.skip, chunk.length - i);
        if (this.collecting) this.collecting.chunks.push(chunk.subarray(i, i + n));
        this.skip -= n;
        this.pos += n;
        i += n;
        if (this.skip === 0 && this.collecting) this.finishMeta();
        continue;
      }
      let block: Buffer;
      if (this.headerBytes === 0 && chunk.length - i >= BLOCK) {
        block = chunk.subarray(i, i + BLOCK);
        i += BLOCK;
      } else {
        const n = Math.min(BLOCK - this.headerBytes, chunk.length - i);
        this.header.push(chunk.subarray(i, i + n));
        this.headerBytes += n;
        i += n;
        if (this.headerBytes < BLOCK) return;
        block = Buffer.concat(this.header);
        this.header = [];
        this.headerBytes = 0;
      }
      this.pos += BLOCK;
      this.onHeader(block);
    }
  }

  /** The input ended: it must end at a header boundary with no extended header left dangling. */
  end(): void {
    if (this.skip > 0 || this.headerBytes > 0) throw new MalformedArchive('unexpected end of archive');
    if (this.pending.pax || this.pending.longName !== undefined || this.pending.longLink !== undefined) {
      throw new UnsafeArchive('extended header not followed by an entry');
    }
  }

  /** The guard's reading of the entry tar-stream just emitted; any disagreement is refused. */
  take(h: { name: string; linkname: string | null; size: number | null; type: string | null; byteOffset: number }): TarEntry {
    const e = this.queue[this.head];
    if (e === undefined) throw new UnsafeArchive(`tar readers disagree: unexpected entry at offset ${h.byteOffset}`, h.name);
    this.queue[this.head++] = undefined as unknown as TarEntry;
    if (this.head > 1024 && this.head * 2 > this.queue.length) {
      this.queue.splice(0, this.head);
      this.head = 0;
    }
    const tsType = h.type === 'contiguous-file' ? 'file' : h.type;
    if (h.byteOffset !== e.offset || h.size !== e.size || h.name !== e.name || (h.linkname ?? '') !== e.linkname || tsType !== e.type) {
      throw new UnsafeArchive(`tar readers disagree at offset ${e.offset}`, e.name);
    }
    return e;
  }

  private onHeader(block: Buffer): void {
    if (block.equals(ZERO_BLOCK)) {
      if (this.pending.pax || this.pending.longName !== undefined || this.pending.longLink !== undefined) {
        throw new UnsafeArchive('extended header not followed by an entry');
      }
      this.ended = true;
      return;
    }
    // The checksum field itself counts as eight spaces.
    let sum = 8 * 0x20;
    for (let j = 0; j < 148; j++) sum += block[j]!;
    for (let j = 156; j < BLOCK; j++) sum += block[j]!;
    if (sum !== numeric(block, 148, 8, 'checksum')) throw new MalformedArchive(`bad header checksum at offset ${this.pos - BLOCK}`);
    const magic = block.toString('latin1', 257, 265);
    const ustar = magic === 'ustar\x0000';
    if (!ustar && magic !== 'ustar  \0') throw new MalformedArchive(`unknown tar format at offset ${this.pos - BLOCK}`);
    const flag = String.fromCharCode(block[156]!);
    const size = numeric(block, 124, 12, 'size');
    if (flag === 'x' || flag === 'g' || flag === 'L' || flag === 'K') {
      this.startMeta(flag, size);
      return;
    }
    const type = TYPES[flag];
    if (type === undefined) throw new MalformedArchive(`unsupported entry type ${JSON.stringify(flag)} at offset ${this.pos - BLOCK}`);
    this.onEntry(block, ustar, type, size);
  }

  private startMeta(kind: Meta, size: number): void {
    const p = this.pending;
    if (kind === 'g') {
      if (p.pax || p.longName !== undefined || p.longLink !== undefined) throw new UnsafeArchive('global header between an extended header and its entry');
    } else if ((kind === 'x' && p.pax) || (kind === 'L' && p.longName !== undefined) || (kind === 'K' && p.longLink !== undefined)) {
      throw new UnsafeArchive(`two extended headers of type ${kind} for one entry`);
    }
    const max = kind === 'L' || kind === 'K' ? MAX_LONGNAME : MAX_PAX;
    if (size > max) throw new UnsafeArchive(`extended header of ${size} bytes (max ${max})`);
    this.collecting = { kind, chunks: [], size };
    this.skip = Math.ceil(size / BLOCK) * BLOCK;
    if (this.skip === 0) this.finishMeta();
  }

  private finishMeta(): void {
    const c = this.collecting!;
    this.collecting = undefined;
    const buf = Buffer.concat(c.chunks).subarray(0, c.size);
    if (c.kind === 'L' || c.kind === 'K') {
      const nul = buf.indexOf(0);
      const text = nul < 0 ? buf : buf.subarray(0, nul);
      if (nul >= 0 && !isZero(buf.subarray(nul))) throw new UnsafeArchive('GNU long name has bytes after its NUL');
      if (text.length === 0) throw new UnsafeArchive('empty GNU long name');
      if (!isUtf8(text)) throw new UnsafeArchive('GNU long name is not valid UTF-8');
      if (c.kind === 'L') this.pending.longName = text.toString('utf8');
      else this.pending.longLink = text.toString('utf8');
      return;
    }
    const records = parsePax(buf);
    if (c.kind === 'g') {
      // tar-stream merges globals only into later local headers, other readers into every entry: allow none that matter.
      for (const k of records.keys()) if (k !== 'comment') throw new UnsafeArchive(`PAX global header sets ${JSON.stringify(k.slice(0, 80))}`);
      return;
    }
    this.pending.pax = records;
  }

  private onEntry(block: Buffer, ustar: boolean, type: EntryType, headerSize: number): void {
    const offset = this.pos;
    let name = field(block, 0, 100, 'name');
    if (ustar && block[345] !== 0) name = field(block, 345, 155, 'name prefix') + '/' + name;
    let linkname = field(block, 157, 100, 'link name');
    let size = headerSize;
    let uid = numeric(block, 108, 8, 'uid');
    let gid = numeric(block, 116, 8, 'gid');
    let mtime = numeric(block, 136, 12, 'mtime');
    let xattrs = NO_XATTRS as Map<string, Buffer>;
    const { pax, longName, longLink } = this.pending;
    this.pending = {};
    if (longName !== undefined) name = longName;
    if (longLink !== undefined) linkname = longLink;
    if (pax) {
      for (const [key, v] of pax) {
        if (key === 'path') {
          if (longName !== undefined) throw new UnsafeArchive('both a GNU long name and a PAX path', longName);
          name = paxString(v, 'path');
        } else if (key === 'linkpath') {
          if (longLink !== undefined) throw new UnsafeArchive('both a GNU long link and a PAX linkpath', name);
          linkname = paxString(v, 'linkpath');
        } else if (key === 'size') {
          size = decimal(v, 'size', Number.MAX_SAFE_INTEGER);
          if (headerSize !== 0 && headerSize !== size) throw new UnsafeArchive(`PAX size ${size} contradicts the header size ${headerSize}`, name);
        } else if (key === 'uid') uid = decimal(v, 'uid', MAX_ID);
        else if (key === 'gid') gid = decimal(v, 'gid', MAX_ID);
        else if (key === 'mtime') {
          const s = v.toString('latin1');
          if (!/^-?\d{1,16}(\.\d{1,9})?$/.test(s)) throw new UnsafeArchive('PAX mtime is not a number', name);
          mtime = Number(s);
        } else if (key.startsWith('SCHILY.xattr.')) {
          if (xattrs === NO_XATTRS) xattrs = new Map();
          xattrs.set(key.slice('SCHILY.xattr.'.length), v);
        }
        else if (key.startsWith('GNU.sparse.')) throw new MalformedArchive('sparse files are not supported');
        // Other keys (atime, ctime, uname, gname, comment, charset, vendor keys) change nothing we write.
      }
    }
    if (name === '') throw new UnsafeArchive('entry with an empty name');
    if (type !== 'directory' && name.endsWith('/')) throw new UnsafeArchive('non-directory entry whose name ends in "/"', name);
    if (type !== 'file' && size !== 0) throw new UnsafeArchive(`${type} entry with ${size} bytes of data`, name);
    if (uid > MAX_ID || gid > MAX_ID) throw new UnsafeArchive('uid or gid out of range', name);
    if (++this.count > this.limits.maxEntries) throw new LimitExceeded('image.max_layer_entries', `layer has more than ${this.limits.maxEntries} entries`);
    if (size > this.limits.maxFileSize) throw new LimitExceeded('image.max_file_size', `entry ${JSON.stringify(name.slice(0, 200))} has ${size} bytes (max ${this.limits.maxFileSize})`);
    this.queue.push({
      offset,
      type,
      name,
      linkname,
      size,
      mode: numeric(block, 100, 8, 'mode') & 0o7777,
      uid,
      gid,
      mtime,
      devmajor: type === 'character-device' || type === 'block-device' ? numeric(block, 329, 8, 'devmajor') : 0,
      devminor: type === 'character-device' || type === 'block-device' ? numeric(block, 337, 8, 'devminor') : 0,
      xattrs,
    });
    this.skip = Math.ceil(size / BLOCK) * BLOCK;
  }
}
