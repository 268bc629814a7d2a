// Layer unpack throughput and memory against the GNU tools, in one run.
// See scripts/bench-unpack --help.

import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { closeSync, createReadStream, existsSync, mkdirSync, openSync, readFileSync, renameSync, rmSync, statSync, writeFileSync, writeSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { median } from './lib/stats.ts';

const usage = `Usage: scripts/bench-unpack [--size GIB] [--runs N] [--dir DIR] [--cache DIR] [--small-share F] [--bundled]

Generates one gzip layer (cached) of many small files and some large ones,
then, alternating, N times each:
  gunzip      gunzip -c layer > /dev/null
  node zlib   node:zlib gunzip to nothing (the agent's inflater; the agent
              leaves out gzip's CRC-32, which the diff_id check makes redundant)
  gunzip|tar  gunzip -c layer | tar -x -C DIR
  ours        the agent's pipeline in a child process: sha256 of the blob,
              gunzip (gunzip.ts on node:zlib), sha256 of the tar (diff_id), unpackLayer into
              LayerStore staging, rename into the store
and prints medians, the ratios of ours to each, and the child's RSS before and at peak.

  --size GIB        uncompressed layer size (default 2)
  --runs N          runs of each (default 3)
  --dir DIR         scratch for unpacking (default /dev/shm/bench-unpack: tmpfs, like the guest's work_dir)
  --cache DIR       where the generated layer is kept (default .tmp/bench-unpack)
  --small-share F   share of the bytes in small files, 0..1 (default 0.3)
  --bundled         run the agent's side from an esbuild bundle, as a guest image would
                    (running .ts sources keeps Node's type stripper, ~35 MiB, in memory)`;

const KIB = 1024;
const MIB = 1024 * KIB;

/** A base of text-like bytes (compresses ~3:1 like binaries and text mixed); files are slices of it. */
function baseBuffer(size: number): Buffer {
  const b = Buffer.alloc(size);
  let x = 2463534242;
  const words = Array.from({ length: 4096 }, (_, i) => Buffer.from(`w${(i * 2654435761) >>> 20}${i % 7 ? ' ' : '\n'}`));
  let off = 0;
  while (off < size) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    const r = x >>> 0;
    if (r % 4 === 0) {
      // a run of random bytes, as in binaries
      const n = Math.min(16 + (r % 48), size - off);
      for (let i = 0; i < n; i++) b[off + i] = (r >>> (i % 24)) & 0xff;
      off += n;
    } else {
      const w = words[r % words.length]!;
      off += w.copy(b, off);
    }
  }
  return b;
}

/** Files on a scratch tmpfs, then GNU tar | gzip -6 (the registry default level). */
function generate(path: string, scratch: string, totalBytes: number, smallShare: number): void {
  const base = baseBuffer(64 * MIB);
  let seed = 12345;
  const rnd = (): number => {
    seed = (seed * 1103515245 + 12345) >>> 0;
    return seed / 2 ** 32;
  };
  const slice = (n: number): Buffer => {
    const start = Math.floor(rnd() * (base.length - n));
    return base.subarray(start, start + n);
  };
  const src = join(scratch, 'gen');
  rmSync(src, { recursive: true, force: true });
  let small = 0;
  let files = 0;
  for (let d = 0; small < totalBytes * smallShare; d++) {
    const dir = join(src, `usr/share/pkg${d}`);
    mkdirSync(dir, { recursive: true });
    for (let i = 0; i < 100 && small < totalBytes * smallShare; i++) {
      const size = Math.floor(512 + rnd() * rnd() * 64 * KIB);
      writeFileSync(join(dir, `file${i}.txt`), slice(size));
      small += size;
      files++;
    }
  }
  mkdirSync(join(src, 'opt/big'), { recursive: true });
  for (let i = 0, big = 0; big < totalBytes - small; i++) {
    const size = Math.min(128 * MIB, totalBytes - small - big);
    const fd = openSync(join(src, `opt/big/blob${i}.bin`), 'w');
    for (let off = 0; off < size; off += 4 * MIB) writeSync(fd, slice(Math.min(4 * MIB, size - off)));
    closeSync(fd);
    big += size;
    files++;
  }
  const r = spawnSync('bash', ['-c', `tar -C '${src}' -cf - . | gzip -6 > '${path}.tmp'`], { stdio: 'inherit' });
  rmSync(src, { recursive: true, force: true });
  if (r.status !== 0) throw new Error('layer generation failed');
  renameSync(`${path}.tmp`, path);
  process.stderr.write(`bench-unpack: generated ${files} files, ${(totalBytes / MIB).toFixed(0)} MiB uncompressed\n`);
}

async function digestOf(path: string, gunzip: boolean): Promise<string> {
  const h = createHash('sha256');
  const src = gunzip ? spawn('gunzip', ['-c', path], { stdio: ['ignore', 'pipe', 'inherit'] }).stdout : createReadStream(path);
  for await (const c of src) h.update(c as Buffer);
  return `sha256:${h.digest('hex')}`;
}

function timeShell(cmd: string): number {
  const t0 = performance.now();
  const r = spawnSync('bash', ['-c', cmd], { stdio: ['ignore', 'ignore', 'inherit'] });
  if (r.status !== 0) throw new Error(`${cmd} failed`);
  return (performance.now() - t0) / 1000;
}


/** A child that only inflates with node:zlib: the decompression floor of the same library. */
async function zlibFloor(layer: string): Promise<void> {
  const { createGunzip } = await import('node:zlib');
  const t0 = performance.now();
  const gz = createGunzip({ chunkSize: 256 * KIB });
  createReadStream(layer, { highWaterMark: 256 * KIB }).pipe(gz);
  for await (const _ of gz) {
    // discard
  }
  process.stdout.write(JSON.stringify({ seconds: (performance.now() - t0) / 1000 }) + '\n');
}

/** The child: the agent's layer pipeline into a LayerStore, printing seconds and peak RSS. */
async function child(layer: string, work: string, digest: string, diffId: string): Promise<void> {
  const { LayerStore, layerStream, unpackLayer } = await import('../agent/src/image/index.ts');
  const { createLogger } = await import('../agent/src/log.ts');
  const log = createLogger('warn');
  const store = await LayerStore.open(work, log, { bundleMode: 'copy', gcOnOpen: false });
  const baselineRssKiB = Math.round(process.memoryUsage.rss() / 1024);
  const t0 = performance.now();
  const txn = store.begin();
  const limits = { maxEntries: 10_000_000, maxFileSize: 2 ** 40, maxTotalBytes: 2 ** 42 };
  const stats = { entries: 0 };
  await txn.ensureLayer(diffId, async (dir, signal) => {
    const size = statSync(layer).size;
    const tar = layerStream(createReadStream(layer, { highWaterMark: 256 * KIB }), { digest, size, diffId, mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip' });
    Object.assign(stats, await unpackLayer(tar, dir, { limits, log, signal }));
  });
  const seconds = (performance.now() - t0) / 1000;
  process.stdout.write(JSON.stringify({ seconds, baselineRssKiB, maxRssKiB: process.resourceUsage().maxRSS, entries: stats.entries }) + '\n');
  store.close();
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      size: { type: 'string', default: '2' },
      runs: { type: 'string', default: '3' },
      dir: { type: 'string', default: '/dev/shm/bench-unpack' },
      cache: { type: 'string', default: '.tmp/bench-unpack' },
      'small-share': { type: 'string', default: '0.3' },
      child: { type: 'string', multiple: true },
      'zlib-floor': { type: 'string' },
      bundled: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    process.stdout.write(usage + '\n');
    return;
  }
  if (values['zlib-floor']) {
    await zlibFloor(values['zlib-floor']);
    return;
  }
  if (values.child) {
    const [layer, work, digest, diffId] = values.child;
    await child(layer!, work!, digest!, diffId!);
    return;
  }
  const sizeGiB = Number(values.size);
  const runs = Number(values.runs);
  const share = Number(values['small-share']);
  if (!(sizeGiB > 0) || !(runs >= 1) || !(share >= 0 && share <= 1)) {
    process.stderr.write(usage + '\n');
    process.exitCode = 2;
    return;
  }
  const cache = resolve(values.cache);
  mkdirSync(cache, { recursive: true });
  const layer = join(cache, `layer-${sizeGiB}g-${share}.tar.gz`);
  const sums = `${layer}.digests.json`;
  const scratch = resolve(values.dir);
  if (!existsSync(layer)) generate(layer, scratch, Math.round(sizeGiB * 1024 * MIB), share);
  if (!existsSync(sums)) writeFileSync(sums, JSON.stringify({ digest: await digestOf(layer, false), diffId: await digestOf(layer, true) }));
  const { digest, diffId } = JSON.parse(readFileSync(sums, 'utf8')) as { digest: string; diffId: string };
  // --bundled: run the child from an esbuild bundle, as a guest image would ship it (no type stripping in memory).
  let script = process.argv[1]!;
  if (values.bundled) {
    script = join(cache, 'bench-unpack.bundle.mjs');
    const banner = "import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);";
    const r = spawnSync('esbuild', [process.argv[1]!, '--bundle', '--platform=node', '--format=esm', '--target=node24', '--log-level=warning', `--outfile=${script}`, `--banner:js=${banner}`], { stdio: 'inherit' });
    if (r.status !== 0) throw new Error('esbuild failed');
  }
  const runChild = (args: string[]): Record<string, number> => {
    const r = spawnSync(process.execPath, [script, ...args], { stdio: ['ignore', 'pipe', 'inherit'], encoding: 'utf8' });
    if (r.status !== 0) throw new Error('child failed');
    return JSON.parse(r.stdout) as Record<string, number>;
  };
  const t: { floor: number[]; zlib: number[]; gnu: number[]; ours: number[]; rss: number[]; base: number[] } = { floor: [], zlib: [], gnu: [], ours: [], rss: [], base: [] };
  let entries = 0;
  for (let i = 0; i < runs; i++) {
    rmSync(scratch, { recursive: true, force: true });
    mkdirSync(join(scratch, 'gnu'), { recursive: true });
    t.floor.push(timeShell(`gunzip -c '${layer}' > /dev/null`));
    t.gnu.push(timeShell(`gunzip -c '${layer}' | tar -x -C '${scratch}/gnu'`));
    rmSync(scratch, { recursive: true, force: true });
    t.zlib.push(runChild(['--zlib-floor', layer]).seconds!);
    const res = runChild(['--child', layer, '--child', join(scratch, 'store'), '--child', digest, '--child', diffId]);
    t.ours.push(res.seconds!);
    t.rss.push(res.maxRssKiB! / 1024);
    t.base.push(res.baselineRssKiB! / 1024);
    entries = res.entries!;
    process.stderr.write(
      `run ${i + 1}: gunzip ${t.floor[i]!.toFixed(2)} s, node zlib ${t.zlib[i]!.toFixed(2)} s, gunzip|tar ${t.gnu[i]!.toFixed(2)} s, ours ${res.seconds!.toFixed(2)} s, ` +
        `RSS ${(res.baselineRssKiB! / 1024).toFixed(0)} MiB before, ${(res.maxRssKiB! / 1024).toFixed(0)} MiB peak\n`,
    );
  }
  rmSync(scratch, { recursive: true, force: true });
  const m = { gunzip: median(t.floor), nodeZlib: median(t.zlib), gnuTar: median(t.gnu), ours: median(t.ours) };
  const bytes = sizeGiB * 1024 * MIB;
  process.stdout.write(
    JSON.stringify({
      layer: { uncompressedMiB: Math.round(bytes / MIB), entries, smallShare: share },
      runs,
      medianSeconds: m,
      bundled: values.bundled,
      oursOverGunzip: +(m.ours / m.gunzip).toFixed(2),
      oursOverNodeZlib: +(m.ours / m.nodeZlib).toFixed(2),
      oursOverGnuTar: +(m.ours / m.gnuTar).toFixed(2),
      oursMiBps: Math.round(bytes / MIB / m.ours),
      rssMiB: { beforeMedian: Math.round(median(t.base)), peakMedian: Math.round(median(t.rss)), peakMax: Math.round(Math.max(...t.rss)) },
    }) + '\n',
  );
}

await main();
