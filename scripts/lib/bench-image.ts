// Generated images for benchmarks: layers written straight into an OCI
// layout as gzip'd tar streams (tar-stream pack → sha256 → gzip → sha256 →
// file), never as a tree on disk, so a 2 GiB layer costs no extra space.
// Content mixes many small text-like files (compress ~3-4x) with a few large
// files, half random (like binaries and compressed assets), half text.

import { createHash, randomBytes } from 'node:crypto';
import { createWriteStream, existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { once } from 'node:events';
import { join } from 'node:path';
import { Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGzip } from 'node:zlib';
import tar from 'tar-stream';

export interface LayerSpec {
  readonly smallFiles: number;
  readonly smallMin: number;
  readonly smallMax: number;
  readonly large: ReadonlyArray<{ size: number; kind: 'random' | 'text' }>;
  readonly seed: number;
}

export interface GeneratedLayer {
  readonly digest: string;
  readonly diffId: string;
  readonly size: number;
  readonly uncompressed: number;
}

/** A small deterministic PRNG (mulberry32) for sizes and offsets; content bytes come from OpenSSL. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** 4 MiB of word salad from a 2000-word vocabulary: gzip gets about 3x on it, like source code and configs. */
function textCorpus(): Buffer {
  const rnd = prng(42);
  const words = Array.from({ length: 2000 }, () => randomBytes(3 + Math.floor(rnd() * 8)).toString('base64url').toLowerCase());
  const parts: string[] = [];
  let len = 0;
  while (len < 4 << 20) {
    const w = words[Math.floor(rnd() * rnd() * words.length)]!;
    const sep = rnd() < 0.1 ? '\n' : ' ';
    parts.push(w, sep);
    len += w.length + 1;
  }
  return Buffer.from(parts.join('')).subarray(0, 4 << 20);
}

class Tap extends Transform {
  readonly hash = createHash('sha256');
  bytes = 0;
  override _transform(chunk: Buffer, _e: BufferEncoding, cb: TransformCallback): void {
    this.hash.update(chunk);
    this.bytes += chunk.length;
    cb(null, chunk);
  }
}

async function writeEntry(pack: tar.Pack, name: string, size: number, chunks: Iterable<Buffer>): Promise<void> {
  const entry = pack.entry({ name, size, mode: 0o644, mtime: new Date('2026-01-01T00:00:00Z'), uid: 0, gid: 0 });
  for (const c of chunks) if (!entry.write(c)) await once(entry, 'drain');
  await new Promise<void>((resolve) => entry.end(() => resolve()));
}

/** Write one gzip layer blob into `layout` and return its digests. */
export async function generateLayer(layout: string, spec: LayerSpec, gzipLevel = 6): Promise<GeneratedLayer> {
  const corpus = textCorpus();
  const rnd = prng(spec.seed);
  const pack = tar.pack();
  const tarTap = new Tap();
  const gzTap = new Tap();
  const tmp = join(layout, 'blobs', 'sha256', `.tmp-${process.pid}-${spec.seed}`);
  mkdirSync(join(layout, 'blobs', 'sha256'), { recursive: true });
  const done = pipeline(pack, tarTap, createGzip({ level: gzipLevel }), gzTap, createWriteStream(tmp));
  const text = function* (size: number): Generator<Buffer> {
    for (let left = size; left > 0; ) {
      const n = Math.min(left, 1 << 20);
      const off = Math.floor(rnd() * (corpus.length - n));
      yield corpus.subarray(off, off + n);
      left -= n;
    }
  };
  const random = function* (size: number): Generator<Buffer> {
    for (let left = size; left > 0; left -= 1 << 20) yield randomBytes(Math.min(left, 1 << 20));
  };
  pack.entry({ name: 'data', type: 'directory', mode: 0o755 });
  for (let i = 0; i < spec.smallFiles; i++) {
    if (i % 500 === 0) pack.entry({ name: `data/d${i / 500}`, type: 'directory', mode: 0o755 });
    const size = spec.smallMin + Math.floor(rnd() * (spec.smallMax - spec.smallMin));
    await writeEntry(pack, `data/d${Math.floor(i / 500)}/f${i}.txt`, size, text(size));
  }
  for (const [i, l] of spec.large.entries()) await writeEntry(pack, `data/large-${i}.${l.kind === 'random' ? 'bin' : 'txt'}`, l.size, l.kind === 'random' ? random(l.size) : text(l.size));
  pack.finalize();
  await done;
  const digest = `sha256:${gzTap.hash.digest('hex')}`;
  renameSync(tmp, join(layout, 'blobs', 'sha256', digest.slice(7)));
  return { digest, diffId: `sha256:${tarTap.hash.digest('hex')}`, size: gzTap.bytes, uncompressed: tarTap.bytes };
}

function writeJsonBlob(layout: string, doc: unknown): { digest: string; size: number } {
  const bytes = Buffer.from(JSON.stringify(doc));
  const digest = `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
  writeFileSync(join(layout, 'blobs', 'sha256', digest.slice(7)), bytes);
  return { digest, size: bytes.length };
}

/** Build (or reuse, when `layout/bench.json` says it was built from the same specs) a tagged OCI image. */
export async function benchImage(layout: string, tag: string, specs: readonly LayerSpec[], log: (s: string) => void): Promise<GeneratedLayer[]> {
  const stamp = join(layout, `bench-${tag}.json`);
  const key = JSON.stringify(specs);
  if (existsSync(stamp)) {
    const saved = JSON.parse(readFileSync(stamp, 'utf8')) as { key: string; layers: GeneratedLayer[] };
    if (saved.key === key && saved.layers.every((l) => existsSync(join(layout, 'blobs', 'sha256', l.digest.slice(7))))) return saved.layers;
  }
  rmSync(stamp, { force: true });
  mkdirSync(join(layout, 'blobs', 'sha256'), { recursive: true });
  writeFileSync(join(layout, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
  log(`generating ${specs.length} layer(s) for ${tag} (cached afterwards)...`);
  const layers = await Promise.all(specs.map((s) => generateLayer(layout, s)));
  const config = writeJsonBlob(layout, {
    architecture: 'amd64',
    os: 'linux',
    config: { Cmd: ['/bin/sh'] },
    rootfs: { type: 'layers', diff_ids: layers.map((l) => l.diffId) },
  });
  const manifest = writeJsonBlob(layout, {
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...config },
    layers: layers.map((l) => ({ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: l.digest, size: l.size })),
  });
  const indexPath = join(layout, 'index.json');
  const index = existsSync(indexPath) ? (JSON.parse(readFileSync(indexPath, 'utf8')) as { manifests: Array<{ annotations?: Record<string, string> }> }) : { manifests: [] };
  index.manifests = index.manifests.filter((m) => m.annotations?.['org.opencontainers.image.ref.name'] !== tag);
  index.manifests.push({ mediaType: 'application/vnd.oci.image.manifest.v1+json', ...manifest, annotations: { 'org.opencontainers.image.ref.name': tag } } as never);
  writeFileSync(indexPath, JSON.stringify({ schemaVersion: 2, ...index }));
  writeFileSync(stamp, JSON.stringify({ key, layers }));
  return layers;
}
