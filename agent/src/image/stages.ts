// Streaming stages of a layer's bytes: digest verification and
// decompression. Each is a Node Transform with backpressure; hashing and
// inflating run in OpenSSL and zlib, JavaScript only counts and forwards.

import { createHash, type Hash } from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';
import zlib from 'node:zlib';
import { AgentError, Cancelled } from '../errors.ts';
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

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.count += chunk.length;
    if (this.size !== undefined && this.count > this.size) {
      cb(new SizeMismatch(this.expected, this.size, `got more than that`));
      return;
    }
    this.hash.update(chunk);
    cb(null, chunk);
  }

  override _flush(cb: TransformCallback): void {
    this.computed = `${this.algorithm}:${this.hash.digest('hex')}`;
    if (this.size !== undefined && this.count !== this.size) cb(new SizeMismatch(this.expected, this.size, `got ${this.count}`));
    else if (this.computed !== this.expected) cb(new DigestMismatch(this.expected, this.computed));
    else cb();
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
const CHUNK = 256 * 1024;

/**
 * A decompressing stage: gzip (concatenated members too; trailing NUL padding
 * is accepted, other trailing bytes are an error), zstd, or pass-through.
 * Output and ratio caps stop bombs after at most one zlib chunk.
 */
export function decompress(c: Compression, limits: DecompressLimits = {}): Transform {
  let stream: Transform;
  if (c === 'gzip') stream = zlib.createGunzip({ chunkSize: CHUNK });
  // zstd's own default window limit (2^27) is kept: encoders stay at or below it unless run with --long.
  else if (c === 'zstd') stream = zlib.createZstdDecompress({ chunkSize: CHUNK });
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

/** An AbortSignal's reason as the agent's error. */
export function abortError(signal: AbortSignal): Error {
  return signal.reason instanceof AgentError ? signal.reason : new Cancelled('layer unpack cancelled');
}
