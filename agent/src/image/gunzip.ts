// gunzip for layers, without zlib's CRC-32. A layer's inflated bytes are
// checked against the config's diff_id (SHA-256) before any of it is kept,
// which proves what the CRC would and more, and the CRC was 14 % of inflate
// time (~120 ms of CPU in a 678 MB pull). The RFC 1952 framing is read here;
// each member's deflate data goes to zlib's raw inflater on the thread pool.
// ISIZE is still checked. Concatenated members and trailing NUL padding are
// accepted; other trailing bytes and truncated streams are errors.

import type { Transform, TransformCallback } from 'node:stream';
import zlib from 'node:zlib';
import { MalformedArchive } from './errors.ts';

const FHCRC = 2;
const FEXTRA = 4;
const FNAME = 8;
const FCOMMENT = 16;
const FRESERVED = 0xe0;

/**
 * Runs `next` on the next tick unless the stream is destroyed by then: an
 * output cap that tripped on the member's last output (decompress in
 * stages.ts) destroys it on that tick, and the cap is the error to report,
 * not the short member length it leaves.
 */
function settled(stream: Transform, next: () => void): void {
  process.nextTick(() => {
    if (!stream.destroyed) next();
  });
}

/** Worded as typedError words zlib's own failures. */
const notGzip = (why: string): MalformedArchive => new MalformedArchive(`layer does not decompress (${why})`);

type Phase = 'head' | 'xlen' | 'skip' | 'name' | 'comment' | 'body' | 'trailer' | 'padding';

/** Bytes collected whole before they are read: the fixed header, XLEN, the trailer. */
const COLLECT: Partial<Record<Phase, number>> = { head: 10, xlen: 2, trailer: 8 };

/**
 * zlib's raw inflater, fed only each member's deflate data. When a member's
 * data ends inside a chunk, zlib takes no more of it and ends the readable
 * side: that push(null) is held back, the trailer and any next member's
 * header are read from the rest, and the inflater is reset for that member.
 * Subclassing, rather than a stage in front, keeps zlib's output buffers
 * going straight out (a second stream layer cost more than the CRC saved).
 */
class LayerGunzip extends zlib.InflateRaw {
  private phase: Phase = 'head';
  private readonly scratch = Buffer.alloc(10);
  private have = 0;
  private skip = 0;
  /** Optional header fields still to read. */
  private fields = 0;
  private members = 0;
  /** The member's inflated bytes, for ISIZE. */
  private outBytes = 0;
  /** Set once the input has ended: the readable side may end. */
  private finishing = false;

  override _transform(chunk: Buffer, enc: BufferEncoding, cb: TransformCallback): void {
    this.feed(chunk, enc, cb);
  }

  override _flush(cb: TransformCallback): void {
    const finish = (err?: Error | null): void => {
      if (err) return cb(err);
      this.finishing = true;
      cb(this.ending());
    };
    if (this.phase !== 'body') return finish();
    // Z_FINISH: zlib fails here when the deflate data is incomplete.
    super._transform(Buffer.alloc(0), 'buffer' as BufferEncoding, (err?: Error | null) => {
      if (err) return finish(err);
      // The data was complete but its trailer never came.
      if (this.phase === 'body') this.phase = 'trailer';
      settled(this, finish);
    });
  }

  override push(chunk: unknown, enc?: BufferEncoding): boolean {
    if (chunk === null) {
      // zlib's "the deflate data ended": the member did, maybe not the input.
      if (!this.finishing) return false;
    } else this.outBytes += (chunk as Buffer).length;
    return super.push(chunk, enc);
  }

  /** Framing bytes are read here; a member's deflate data goes to zlib. */
  private feed(buf: Buffer, enc: BufferEncoding, done: TransformCallback): void {
    let off = 0;
    try {
      while (off < buf.length) {
        if (this.phase === 'body') {
          const rest = off === 0 ? buf : buf.subarray(off);
          const before = this.bytesWritten;
          super._transform(rest, enc, (err?: Error | null) => {
            if (err) return done(err);
            const used = this.bytesWritten - before;
            if (used === rest.length) return done();
            // The member's deflate data ended inside `rest`; its trailer and what follows are the rest.
            this.phase = 'trailer';
            this.have = 0;
            settled(this, () => this.feed(rest.subarray(used), enc, done));
          });
          return;
        }
        off = this.frame(buf, off);
      }
    } catch (err) {
      done(err as Error);
      return;
    }
    done();
  }

  private startMember(): void {
    // A fresh inflater state; the first member's is fresh already.
    if (this.members > 0) this.reset();
    this.outBytes = 0;
    this.phase = 'body';
  }

  /** The header's next optional field (in RFC 1952 order), or the member's body. */
  private nextField(): void {
    this.have = 0;
    const flag = this.fields & FEXTRA || this.fields & FNAME || this.fields & FCOMMENT || this.fields & FHCRC;
    this.fields &= ~flag;
    if (flag === FEXTRA) this.phase = 'xlen';
    else if (flag === FNAME) this.phase = 'name';
    else if (flag === FCOMMENT) this.phase = 'comment';
    else if (flag === FHCRC) {
      this.phase = 'skip';
      this.skip = 2;
    } else this.startMember();
  }

  /** Reads framing bytes from buf[off]; returns where it stopped. */
  private frame(buf: Buffer, off: number): number {
    const phase = this.phase;
    if (phase === 'padding') {
      for (let i = off; i < buf.length; i++) if (buf[i] !== 0) throw notGzip('trailing bytes after the gzip data');
      return buf.length;
    }
    if (phase === 'head' && this.have === 0 && this.members > 0 && buf[off] === 0) {
      this.phase = 'padding';
      return off;
    }
    if (phase === 'name' || phase === 'comment') {
      const nul = buf.indexOf(0, off);
      if (nul < 0) return buf.length;
      this.nextField();
      return nul + 1;
    }
    if (phase === 'skip') {
      const n = Math.min(this.skip, buf.length - off);
      this.skip -= n;
      if (this.skip === 0) this.nextField();
      return off + n;
    }
    const need = COLLECT[phase]!;
    const n = Math.min(need - this.have, buf.length - off);
    buf.copy(this.scratch, this.have, off, off + n);
    this.have += n;
    const s = this.scratch;
    if (phase === 'head' && (s[0] !== 0x1f || (this.have > 1 && s[1] !== 0x8b))) {
      throw notGzip(this.members > 0 ? 'trailing bytes after the gzip data' : 'not a gzip stream');
    }
    if (this.have < need) return off + n;
    if (phase === 'head') {
      if (s[2] !== 8) throw notGzip(`gzip compression method ${s[2]} is not deflate`);
      if (s[3]! & FRESERVED) throw notGzip('gzip header has reserved flags set');
      this.fields = s[3]!;
      this.nextField();
    } else if (phase === 'xlen') {
      this.skip = s.readUInt16LE(0);
      this.phase = 'skip';
      if (this.skip === 0) this.nextField();
    } else {
      // The CRC-32 (s[0..3]) is left to the diff_id; ISIZE is the member's length mod 2^32.
      if (s.readUInt32LE(4) !== this.outBytes % 2 ** 32) throw notGzip('gzip member length does not match its trailer');
      this.members++;
      this.phase = 'head';
      this.have = 0;
    }
    return off + n;
  }

  /** At the end of input: complete members only, and at least one. */
  private ending(): Error | null {
    if (this.phase === 'padding' || (this.phase === 'head' && this.have === 0 && this.members > 0)) return null;
    return notGzip(this.members === 0 && this.phase === 'head' && this.have === 0 ? 'empty gzip stream' : 'gzip stream is truncated');
  }
}

/** A gunzip stage whose output chunks are zlib's own buffers, `chunkSize` bytes each. */
export function createLayerGunzip(chunkSize: number): Transform {
  return new LayerGunzip({ chunkSize });
}
