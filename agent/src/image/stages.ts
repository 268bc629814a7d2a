// Streaming stages of a layer's bytes: digest verification and
// decompression. Each is a Node Transform with backpressure; hashing and
// inflating run in OpenSSL and zlib, JavaScript only counts and forwards.

import { createHash, type Hash } from 'node:crypto';
import { PassThrough, pipeline, Transform, type Readable, type TransformCallback, type Writable } from 'node:stream';
import zlib from 'node:zlib';
import { AgentError, Code } from '../errors.ts';
import { createLayerGunzip } from './gunzip.ts';
import { DigestMismatch, InvalidDigest, LimitExceeded, SizeMismatch, UnsupportedMediaType } from './errors.ts';

const DIGEST_RE = /^(sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$/;

/** Throws InvalidDigest unless `digest` is sha256:<64 hex> or sha512:<128 hex>. */
export function parseDigest(digest: string): { algorithm: 'sha256' | 'sha512'; hex: string } {
  if (!DIGEST_RE.test(digest)) throw new InvalidDigest(digest);
  const [algorithm, hex] = digest.split(':') as ['sha256' | 'sha512', string];
  return { algorithm, hex };
}

/** Hashes what flows through; fails on the first byte past `size`, and at the end on a short stream or a wrong digest. */
export class DigestVerifier extends Transform {
  readonly expected: string;
  readonly size: number | undefined;
  private readonly hash: Hash;
  private readonly algorithm: string;
  private count = 0;
  private computed: string | undefined;

  constructor(expected: string, opts: { size?: number } = {}) {
    super();
    this.algorithm = parseDigest(expected).algorithm;
    this.expected = expected;
    this.size = opts.size;
    this.hash = createHash(this.algorithm);
  }

  /** The digest of everything that passed, once the stream has ended. */
  get digest(): string | undefined {
    return this.computed;
  }

  /** Bytes seen so far. */
  get bytes(): number {
    return this.count;
  }

  /** Hash a chunk without passing it on; throws SizeMismatch past `size`. */
  absorb(chunk: Buffer): void {
    this.count += chunk.length;
    if (this.size !== undefined && this.count > this.size) throw new SizeMismatch(this.expected, this.size, `got more than that`);
    this.hash.update(chunk);
  }

  /** Finish the hash: the mismatch, or undefined when the bytes are the expected ones. */
  verdict(): DigestMismatch | undefined {
    this.computed ??= `${this.algorithm}:${this.hash.digest('hex')}`;
    if (this.size !== undefined && this.count !== this.size) return new SizeMismatch(this.expected, this.size, `got ${this.count}`);
    if (this.computed !== this.expected) return new DigestMismatch(this.expected, this.computed);
    return undefined;
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    try {
      this.absorb(chunk);
    } catch (err) {
      cb(err as Error);
      return;
    }
    cb(null, chunk);
  }

  override _flush(cb: TransformCallback): void {
    cb(this.verdict());
  }
}

/** A stage that hashes against `expected` (sha256/sha512 by its prefix) and optionally caps the size. */
export function verifyDigest(expected: string, opts?: { size?: number }): DigestVerifier {
  return new DigestVerifier(expected, opts);
}

export type Compression = 'gzip' | 'zstd' | 'none';

const LAYER_TYPES: Readonly<Record<string, Compression>> = {
  'application/vnd.oci.image.layer.v1.tar': 'none',
  'application/vnd.oci.image.layer.v1.tar+gzip': 'gzip',
  'application/vnd.oci.image.layer.v1.tar+zstd': 'zstd',
  'application/vnd.oci.image.layer.nondistributable.v1.tar': 'none',
  'application/vnd.oci.image.layer.nondistributable.v1.tar+gzip': 'gzip',
  'application/vnd.oci.image.layer.nondistributable.v1.tar+zstd': 'zstd',
  'application/vnd.docker.image.rootfs.diff.tar': 'none',
  'application/vnd.docker.image.rootfs.diff.tar.gzip': 'gzip',
  'application/vnd.docker.image.rootfs.diff.tar.zstd': 'zstd',
  'application/vnd.docker.image.rootfs.foreign.diff.tar': 'none',
  'application/vnd.docker.image.rootfs.foreign.diff.tar.gzip': 'gzip',
};

/** Compression of a layer media type (OCI, Docker, nondistributable; a trailing +encrypted is ignored). */
export function compressionOf(mediaType: string): Compression {
  const base = mediaType.endsWith('+encrypted') ? mediaType.slice(0, -'+encrypted'.length) : mediaType;
  const c = Object.hasOwn(LAYER_TYPES, base) ? LAYER_TYPES[base] : undefined;
  if (c === undefined) throw new UnsupportedMediaType(mediaType);
  return c;
}

export interface DecompressLimits {
  /** Cap on decompressed bytes. */
  maxBytes?: number;
  /** Cap on decompressed/compressed bytes, checked once past RATIO_FLOOR decompressed bytes. */
  maxRatio?: number;
}

/** Small layers compress extremely well (a few KiB of zeros); the ratio cap only matters for big outputs. */
export const RATIO_FLOOR = 16 * 1024 * 1024;
/**
 * zlib output per callback, and the size of the pull's transfers to the
 * unpack worker (unpack-thread.ts), which moves each filled output buffer
 * there without a copy. Against 128 KiB (same run): a 3-layer pull 1.87 s
 * against 1.93 s at ~123 MB peak RSS against ~113 MB, a 2 GiB layer 5.2 s
 * against 6.0 s at the same ~107 MB; 512 KiB was slower and ~170 MB.
 */
export const DECOMPRESS_CHUNK = 256 * 1024;

/**
 * A decompressing stage: gzip (gunzip.ts: concatenated members too; trailing
 * NUL padding is accepted, other trailing bytes are an error; the CRC-32 is
 * left to the diff_id check), zstd, or pass-through.
 * Output and ratio caps stop bombs after at most one zlib chunk.
 */
export function decompress(c: Compression, limits: DecompressLimits = {}): Transform {
  let stream: Transform;
  if (c === 'gzip') stream = createLayerGunzip(DECOMPRESS_CHUNK);
  // zstd's own default window limit (2^27) is kept: encoders stay at or below it unless run with --long.
  else if (c === 'zstd') stream = zlib.createZstdDecompress({ chunkSize: DECOMPRESS_CHUNK });
  else stream = new Transform({ transform: (chunk, _enc, cb) => cb(null, chunk) });
  const maxBytes = limits.maxBytes ?? Infinity;
  const maxRatio = c === 'none' ? Infinity : (limits.maxRatio ?? Infinity);
  let inBytes = 0;
  let outBytes = 0;
  let tripped = false;
  // Count at the instance's own _transform and push: zlib pushes each output
  // chunk as it is made, so a bomb is caught without an extra stream per layer.
  const transform = stream._transform.bind(stream);
  stream._transform = (chunk: Buffer, enc: BufferEncoding, cb: TransformCallback) => {
    inBytes += chunk.length;
    transform(chunk, enc, cb);
  };
  const push = stream.push.bind(stream);
  stream.push = (chunk: unknown, enc?: BufferEncoding): boolean => {
    if (tripped) return false;
    if (chunk instanceof Uint8Array) {
      outBytes += chunk.length;
      let err: LimitExceeded | undefined;
      if (outBytes > maxBytes) err = new LimitExceeded('image.max_layer_bytes', `layer decompresses to more than ${maxBytes} bytes`);
      else if (outBytes > RATIO_FLOOR && outBytes > maxRatio * inBytes) {
        err = new LimitExceeded('image.max_decompression_ratio', `layer decompresses more than ${maxRatio}:1`);
      }
      if (err) {
        tripped = true;
        // Not synchronously: zlib is inside its write callback here.
        const e = err;
        process.nextTick(() => stream.destroy(e));
        return false;
      }
    }
    return push(chunk, enc);
  };
  return stream;
}

export interface LayerDescriptor {
  /** The blob's digest and size from the manifest. */
  digest: string;
  size: number;
  mediaType: string;
  /** The config's rootfs.diff_ids entry for this layer. */
  diffId: string;
}

/** A stream of a layer's bytes that can tell a corrupted blob from a bad archive (see blobStream). */
export interface SettlingStream extends Readable {
  /**
   * Given the error a consumer failed with, the error to report: when the
   * blob's own bytes do not match its digest that is the cause (a corrupted
   * download makes zlib or the tar reader fail first), so the rest of the
   * blob is read (at most `size` bytes) to find out.
   */
  settle(err: Error): Promise<Error>;
}

/** A layer's tar stream that settles its consumer's errors (see layerStream). */
export type LayerTar = SettlingStream;

/**
 * The first half of a layer's pipeline: blob → digest and size check →
 * `decrypt` transforms, as one readable stream of the (compressed) plaintext
 * blob. It ends only after the whole blob matched its digest.
 */
export function blobStream(source: AsyncIterable<Buffer>, desc: Pick<LayerDescriptor, 'digest' | 'size'>, decrypt: readonly Transform[] = []): SettlingStream {
  const blob = new DigestVerifier(desc.digest, { size: desc.size });
  const head = new PassThrough();
  const out = (decrypt.length ? pipeline(head, ...(decrypt as [Transform]), () => {}) : head) as unknown as SettlingStream;
  // The source is pumped by hand, so it can still be hashed to its end after a later stage failed.
  const pumped: Promise<Error | undefined> = (async () => {
    try {
      for await (const chunk of source) {
        blob.absorb(chunk as Buffer);
        if (!head.destroyed && !head.write(chunk)) await drained(head);
      }
      const v = blob.verdict();
      if (v) head.destroy(v);
      else head.end();
      return v;
    } catch (err) {
      head.destroy(err as Error);
      return err as Error;
    }
  })();
  out.settle = async (err: Error): Promise<Error> => {
    if (err instanceof DigestMismatch || (err instanceof AgentError && err.code === Code.CANCELLED)) return err;
    const v = await pumped;
    return v instanceof DigestMismatch ? v : err;
  };
  return out;
}

/** The second half: decompress → diff_id check, the tar stream of a plaintext blob. */
export function tarStream(blob: Readable, compression: Compression, diffId: string, limits?: DecompressLimits): Readable {
  return pipeline(blob, decompress(compression, limits), verifyDigest(diffId), () => {});
}

/**
 * The pipeline of one layer: blobStream then tarStream, as one readable tar
 * stream. unpackLayer settles its errors through it.
 */
export function layerStream(source: AsyncIterable<Buffer>, desc: LayerDescriptor, opts: { limits?: DecompressLimits; decrypt?: Transform[] } = {}): LayerTar {
  const blob = blobStream(source, desc, opts.decrypt);
  const tar = tarStream(blob, compressionOf(desc.mediaType), desc.diffId, opts.limits) as LayerTar;
  tar.settle = blob.settle;
  return tar;
}

function drained(stream: Writable): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      stream.off('drain', done);
      stream.off('close', done);
      resolve();
    };
    stream.on('drain', done);
    stream.on('close', done);
  });
}
