// AES_256_GCM_STREAM (docs/aes-256-gcm-stream.md): STREAM over AES-256-GCM
// with an HKDF-derived per-layer key and a key commitment. Each chunk is
// authenticated before any of its plaintext is pushed downstream.

import { createCipheriv, createDecipheriv, createSecretKey, hkdfSync, randomBytes, timingSafeEqual, type KeyObject } from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';
import { LayerAuthenticationFailed, BadEncryptionMetadata } from '../errors.ts';
import { Chunker, feed, tail } from './chunker.ts';
import { DigestCheck } from './digest-check.ts';

export const GCM_STREAM_MAGIC = Buffer.from('GCMS', 'ascii');
export const GCM_STREAM_VERSION = 1;
const PREFIX_BYTES = 48;
export const GCM_STREAM_HEADER_BYTES = 80;
export const TAG_BYTES = 16;
const NONCE_PREFIX_BYTES = 7;
const SALT_BYTES = 32;
export const MIN_CHUNK_SIZE = 4096;
export const MAX_CHUNK_SIZE = 16 << 20;
/** Chosen from the chunk-size sweep of scripts/bench-decrypt; see the spec. */
export const DEFAULT_CHUNK_SIZE = 1 << 20;
const MAX_CHUNKS = 2 ** 32;
const INFO_LABEL = Buffer.from('tee-agent AES_256_GCM_STREAM v1\0', 'ascii');

interface Derived {
  readonly key: KeyObject;
  readonly commitment: Buffer;
}

function derive(symkey: Buffer, prefix: Buffer): Derived {
  const salt = prefix.subarray(9, 9 + SALT_BYTES);
  const okm = Buffer.from(hkdfSync('sha256', symkey, salt, Buffer.concat([INFO_LABEL, prefix]), 64));
  const key = createSecretKey(okm.subarray(0, 32));
  const commitment = Buffer.from(okm.subarray(32));
  okm.fill(0);
  return { key, commitment };
}

function nonceFor(prefix: Buffer, index: number, last: boolean): Buffer {
  const n = Buffer.alloc(12);
  prefix.copy(n, 0, 9 + SALT_BYTES, PREFIX_BYTES);
  n.writeUInt32BE(index, NONCE_PREFIX_BYTES);
  n[11] = last ? 1 : 0;
  return n;
}

/** A fresh header for one layer: random salt and nonce prefix. */
function newHeader(symkey: Buffer, chunkSize: number): { header: Buffer; derived: Derived; prefix: Buffer } {
  if (!Number.isInteger(chunkSize) || chunkSize < MIN_CHUNK_SIZE || chunkSize > MAX_CHUNK_SIZE) {
    throw new RangeError(`gcm-stream chunk size must be in [${MIN_CHUNK_SIZE}, ${MAX_CHUNK_SIZE}]`);
  }
  const prefix = Buffer.alloc(PREFIX_BYTES);
  GCM_STREAM_MAGIC.copy(prefix, 0);
  prefix[4] = GCM_STREAM_VERSION;
  prefix.writeUInt32BE(chunkSize, 5);
  randomBytes(SALT_BYTES + NONCE_PREFIX_BYTES).copy(prefix, 9);
  const derived = derive(symkey, prefix);
  return { header: Buffer.concat([prefix, derived.commitment]), derived, prefix };
}

function openHeader(header: Buffer, symkey: Buffer, layer: string): { derived: Derived; prefix: Buffer; chunkSize: number } {
  const prefix = Buffer.from(header.subarray(0, PREFIX_BYTES));
  if (!prefix.subarray(0, 4).equals(GCM_STREAM_MAGIC)) throw new BadEncryptionMetadata(`layer ${layer}: not an AES_256_GCM_STREAM blob (bad magic)`);
  if (prefix[4] !== GCM_STREAM_VERSION) throw new BadEncryptionMetadata(`layer ${layer}: AES_256_GCM_STREAM version ${prefix[4]} is not supported`);
  const chunkSize = prefix.readUInt32BE(5);
  if (chunkSize < MIN_CHUNK_SIZE || chunkSize > MAX_CHUNK_SIZE) throw new BadEncryptionMetadata(`layer ${layer}: AES_256_GCM_STREAM chunk size ${chunkSize} is out of bounds`);
  const derived = derive(symkey, prefix);
  if (!timingSafeEqual(derived.commitment, header.subarray(PREFIX_BYTES, GCM_STREAM_HEADER_BYTES))) {
    throw new LayerAuthenticationFailed(`layer ${layer}: the layer key does not match the AES_256_GCM_STREAM header (wrong key, or a blob swapped or tampered with)`);
  }
  return { derived, prefix, chunkSize };
}

export interface GcmStreamDecryptOptions {
  /** The layer key (private options symkey). Not kept: the stream holds only the derived key. */
  readonly key: Buffer;
  readonly layer: string;
  /** Also hash the plaintext and check it against this digest (redundant with the AEAD; off by default). */
  readonly plainDigest?: string;
}

class GcmStreamDecrypter extends Transform {
  private readonly symkey: Buffer | undefined;
  private readonly layer: string;
  private head: Buffer[] = [];
  private headLength = 0;
  private derived: Derived | undefined;
  private prefix: Buffer | undefined;
  private chunker: Chunker | undefined;
  private index = 0;
  private readonly digest: DigestCheck;

  constructor(opts: GcmStreamDecryptOptions) {
    super();
    this.digest = new DigestCheck(opts.plainDigest);
    // Held only until the header arrives; zeroed then.
    this.symkey = Buffer.from(opts.key);
    this.layer = opts.layer;
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    try {
      let rest = chunk;
      if (!this.chunker) {
        const need = GCM_STREAM_HEADER_BYTES - this.headLength;
        this.head.push(rest.subarray(0, need));
        this.headLength += Math.min(need, rest.length);
        rest = rest.subarray(need);
        if (this.headLength < GCM_STREAM_HEADER_BYTES) return done();
        this.start(Buffer.concat(this.head));
      }
      this.chunker!.push(rest, (pieces, length) => this.open(pieces, length, false));
      done();
    } catch (err) {
      done(err as Error);
    }
  }

  override _flush(done: TransformCallback): void {
    try {
      if (!this.chunker) throw new LayerAuthenticationFailed(`layer ${this.layer}: truncated inside the AES_256_GCM_STREAM header`);
      const { pieces, length } = this.chunker.take();
      if (length < TAG_BYTES) throw new LayerAuthenticationFailed(`layer ${this.layer}: truncated: the final AES_256_GCM_STREAM chunk is missing`);
      this.open(pieces, length, true);
      done(this.digest.check(this.layer) ?? null);
    } catch (err) {
      done(err as Error);
    }
  }

  override _destroy(err: Error | null, done: (err: Error | null) => void): void {
    this.symkey?.fill(0);
    done(err);
  }

  private start(header: Buffer): void {
    try {
      const { derived, prefix, chunkSize } = openHeader(header, this.symkey!, this.layer);
      this.derived = derived;
      this.prefix = prefix;
      this.chunker = new Chunker(chunkSize + TAG_BYTES);
    } finally {
      this.symkey!.fill(0);
      this.head = [];
    }
  }

  private open(pieces: Buffer[], length: number, last: boolean): void {
    if (this.index >= MAX_CHUNKS) throw new LayerAuthenticationFailed(`layer ${this.layer}: too many AES_256_GCM_STREAM chunks`);
    const decipher = createDecipheriv('aes-256-gcm', this.derived!.key, nonceFor(this.prefix!, this.index, last), { authTagLength: TAG_BYTES });
    decipher.setAuthTag(tail(pieces, TAG_BYTES));
    const outs: Buffer[] = [];
    feed(pieces, length - TAG_BYTES, (b) => decipher.update(b), outs);
    try {
      decipher.final();
    } catch {
      throw new LayerAuthenticationFailed(
        `layer ${this.layer}: AES_256_GCM_STREAM chunk ${this.index}${last ? ' (final)' : ''} failed authentication (tampered, reordered, truncated or extended)`,
      );
    }
    this.index++;
    for (const out of outs) {
      this.digest.update(out);
      this.push(out);
    }
  }
}

export function gcmStreamDecryptStream(opts: GcmStreamDecryptOptions): Transform {
  return new GcmStreamDecrypter(opts);
}

class GcmStreamEncrypter extends Transform {
  private readonly derived: Derived;
  private readonly prefix: Buffer;
  private readonly header: Buffer;
  private readonly chunker: Chunker;
  private started = false;
  private index = 0;

  constructor(symkey: Buffer, chunkSize: number) {
    super();
    const { header, derived, prefix } = newHeader(symkey, chunkSize);
    this.header = header;
    this.derived = derived;
    this.prefix = prefix;
    this.chunker = new Chunker(chunkSize);
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    try {
      this.begin();
      this.chunker.push(chunk, (pieces, length) => this.seal(pieces, length, false));
      done();
    } catch (err) {
      done(err as Error);
    }
  }

  override _flush(done: TransformCallback): void {
    try {
      this.begin();
      const { pieces, length } = this.chunker.take();
      this.seal(pieces, length, true);
      done();
    } catch (err) {
      done(err as Error);
    }
  }

  private begin(): void {
    if (this.started) return;
    this.started = true;
    this.push(this.header);
  }

  private seal(pieces: Buffer[], length: number, last: boolean): void {
    if (this.index >= MAX_CHUNKS) throw new RangeError('AES_256_GCM_STREAM: too many chunks for one layer');
    const cipher = createCipheriv('aes-256-gcm', this.derived.key, nonceFor(this.prefix, this.index, last), { authTagLength: TAG_BYTES });
    const outs: Buffer[] = [];
    feed(pieces, length, (b) => cipher.update(b), outs);
    cipher.final();
    outs.push(cipher.getAuthTag());
    this.index++;
    for (const out of outs) this.push(out);
  }
}

/** Encrypt a layer. `symkey` is not kept (only the derived key is), so the caller may zero it afterwards. */
export function gcmStreamEncryptStream(symkey: Buffer, chunkSize = DEFAULT_CHUNK_SIZE): Transform {
  return new GcmStreamEncrypter(symkey, chunkSize);
}
