// Layer decryption throughput (scripts/bench-decrypt --help). Everything is
// measured in one process run, interleaved run by run, and reported as
// medians and as ratios against baselines measured in the same run.

import { execFile, spawn } from 'node:child_process';
import { createDecipheriv, createHash, createHmac, generateKeyPairSync, hkdfSync, randomBytes, webcrypto } from 'node:crypto';
import { closeSync, existsSync, mkdtempSync, openSync, readFileSync, readSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable, Writable, type Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { parseArgs, promisify } from 'node:util';
import { gcm } from '@noble/ciphers/aes.js';
import { ctrHmacDecryptStream, ctrHmacEncryptStream } from '../agent/src/crypto/ciphers/ctr-hmac.ts';
import { gcmStreamDecryptStream, gcmStreamEncryptStream, GCM_STREAM_HEADER_BYTES, TAG_BYTES } from '../agent/src/crypto/ciphers/gcm-stream.ts';
import { OciLayout } from '../agent/src/crypto/oci-layout.ts';
import { median } from './lib/stats.ts';
import { AGENT_NODE_ENV, AGENT_NODE_FLAGS, bundleEntry } from './bundle.ts';

const MiB = 1 << 20;
const { values } = parseArgs({
  options: {
    size: { type: 'string', default: '1024' },
    runs: { type: 'string', default: '5' },
    'image-mb': { type: 'string', default: '256' },
    'no-image': { type: 'boolean', default: false },
    'no-sweep': { type: 'boolean', default: false },
  },
});

const size = Number(values.size) * MiB;
const runs = Number(values.runs);
const gbps = (bytes: number, ms: number): number => bytes / ms / 1e6;
const fmt = (x: number): string => x.toFixed(2);
const log = (s: string): void => void process.stdout.write(s + '\n');

function slices(buf: Buffer, piece: number): Buffer[] {
  const out: Buffer[] = [];
  for (let o = 0; o < buf.length; o += piece) out.push(buf.subarray(o, Math.min(buf.length, o + piece)));
  return out;
}

async function through(stream: Transform, input: Buffer, piece: number): Promise<number> {
  let n = 0;
  const sink = new Writable({
    highWaterMark: 4 * MiB,
    write(chunk: Buffer, _e, done) {
      n += chunk.length;
      done();
    },
  });
  await pipeline(Readable.from(slices(input, piece)), stream, sink);
  return n;
}

async function collect(stream: Transform, input: Buffer): Promise<Buffer> {
  const out: Buffer[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _e, done) {
      out.push(chunk);
      done();
    },
  });
  await pipeline(Readable.from(slices(input, MiB)), stream, sink);
  return Buffer.concat(out);
}

/** The gcm-stream chunk key, derived as the spec says, for the WebCrypto variant. */
function chunkKey(symkey: Buffer, blob: Buffer): Buffer {
  const prefix = blob.subarray(0, 48);
  const info = Buffer.concat([Buffer.from('tee-agent AES_256_GCM_STREAM v1\0'), prefix]);
  return Buffer.from(hkdfSync('sha256', symkey, prefix.subarray(9, 41), info, 64)).subarray(0, 32);
}

/** (a2): every chunk decrypted by WebCrypto in the libuv pool, `inflight` at a time, released in order. */
async function gcmParallel(symkey: Buffer, blob: Buffer, chunkSize: number, inflight: number): Promise<number> {
  const key = await webcrypto.subtle.importKey('raw', chunkKey(symkey, blob), 'AES-GCM', false, ['decrypt']);
  const prefix = blob.subarray(41, 48);
  const ct = chunkSize + TAG_BYTES;
  const count = Math.floor((blob.length - GCM_STREAM_HEADER_BYTES) / ct) + 1;
  const pending: Array<Promise<ArrayBuffer>> = [];
  let n = 0;
  for (let i = 0; i < count || pending.length; ) {
    while (i < count && pending.length < inflight) {
      const start = GCM_STREAM_HEADER_BYTES + i * ct;
      const iv = Buffer.alloc(12);
      prefix.copy(iv);
      iv.writeUInt32BE(i, 7);
      iv[11] = i === count - 1 ? 1 : 0;
      pending.push(webcrypto.subtle.decrypt({ name: 'AES-GCM', iv, tagLength: 128 }, key, blob.subarray(start, Math.min(blob.length, start + ct))));
      i++;
    }
    n += (await pending.shift()!).byteLength;
  }
  return n;
}

log(`bench-decrypt: node ${process.version}, OpenSSL ${process.versions.openssl}, ${size / MiB} MiB, ${runs} runs, load ${loadavg().map(fmt).join(' ')}`);
// (f) first, while this process holds none of the in-memory cases' buffers (GBs of them
// made its children's tmpfs writes slower: the ctr-hmac child 0.51 s before them, 0.74 s after).
if (!values['no-image']) await imageBench(Number(values['image-mb']) * 1e6);
const symkey = randomBytes(32);
const plain = randomBytes(size);
const gcmBlob = await collect(gcmStreamEncryptStream(symkey), plain);
const nonce = randomBytes(16);
const ctrEnc = ctrHmacEncryptStream(symkey, nonce);
const ctrBlob = await collect(ctrEnc.stream, plain);
const mac = ctrEnc.mac();
const plainDigest = `sha256:${createHash('sha256').update(plain).digest('hex')}`;
const nobleSlice = gcm(symkey, nonce.subarray(0, 12)).encrypt(plain.subarray(0, 64 * MiB));

function rawGcm(input: Buffer, piece: number): void {
  const d = createDecipheriv('aes-256-gcm', symkey, nonce.subarray(0, 12));
  for (const s of slices(input, piece)) d.update(s);
}

/**
 * (c2): what moving the private-digest hash to a worker thread would buy:
 * decrypt and HMAC here, each plaintext chunk posted (copied) to a hashing
 * worker, at most 4 MiB in flight.
 */
async function ctrWithWorkerDigest(): Promise<void> {
  const { Worker } = await import('node:worker_threads');
  const w = new Worker(
    `const { parentPort } = require('node:worker_threads'); const h = require('node:crypto').createHash('sha256');
     parentPort.on('message', (m) => { if (m === 'end') parentPort.postMessage(h.digest('hex')); else { h.update(m); parentPort.postMessage(m.length); } });`,
    { eval: true },
  );
  let inflight = 0;
  let wake: (() => void) | undefined;
  let result: ((hex: string) => void) | undefined;
  w.on('message', (m: number | string) => {
    if (typeof m === 'string') return result?.(m);
    inflight -= m;
    if (inflight <= 4 * MiB) wake?.();
  });
  const d = createDecipheriv('aes-256-ctr', symkey, nonce);
  const h = createHmac('sha256', symkey);
  for (const s of slices(ctrBlob, MiB)) {
    h.update(s);
    const p = d.update(s);
    inflight += p.length;
    w.postMessage(p);
    if (inflight > 4 * MiB) await new Promise<void>((r) => (wake = r));
  }
  h.digest();
  w.postMessage('end');
  const hex = await new Promise<string>((r) => (result = r));
  if (`sha256:${hex}` !== plainDigest) throw new Error('worker digest mismatch');
  await w.terminate();
}

type Case = { name: string; bytes: number; run: () => Promise<unknown> | unknown };
const cases: Case[] = [
  { name: 'a   gcm-stream, our stream, 1 MiB pieces', bytes: size, run: () => through(gcmStreamDecryptStream({ key: symkey, layer: 'bench' }), gcmBlob, MiB) },
  { name: 'a64 gcm-stream, our stream, 64 KiB pieces', bytes: size, run: () => through(gcmStreamDecryptStream({ key: symkey, layer: 'bench' }), gcmBlob, 64 << 10) },
  { name: 'a2  gcm-stream chunks, WebCrypto, 2 in flight', bytes: size, run: () => gcmParallel(symkey, gcmBlob, MiB, 2) },
  { name: 'b   one aes-256-gcm decipher, 1 MiB slices', bytes: size, run: () => rawGcm(gcmBlob.subarray(0, size), MiB) },
  { name: 'b64 one aes-256-gcm decipher, 64 KiB slices', bytes: size, run: () => rawGcm(gcmBlob.subarray(0, size), 64 << 10) },
  { name: 'c   ctr-hmac, our stream', bytes: size, run: () => through(ctrHmacDecryptStream({ key: symkey, nonce, mac, layer: 'bench' }), ctrBlob, MiB) },
  { name: 'c+  ctr-hmac, our stream + private digest', bytes: size, run: () => through(ctrHmacDecryptStream({ key: symkey, nonce, mac, plainDigest, layer: 'bench' }), ctrBlob, MiB) },
  { name: 'c2  raw ctr-hmac + private digest on a worker', bytes: size, run: ctrWithWorkerDigest },
  {
    name: 'd   raw aes-256-ctr + hmac-sha256, 1 MiB slices',
    bytes: size,
    run: () => {
      const d = createDecipheriv('aes-256-ctr', symkey, nonce);
      const h = createHmac('sha256', symkey);
      for (const s of slices(ctrBlob, MiB)) {
        h.update(s);
        d.update(s);
      }
      h.digest();
    },
  },
  { name: 'e   @noble/ciphers gcm, 64 MiB, scaled', bytes: 64 * MiB, run: () => gcm(symkey, nonce.subarray(0, 12)).decrypt(nobleSlice) },
];

const times = new Map<string, number[]>(cases.map((c) => [c.name, []]));
// One untimed round first (JIT, page faults), then the timed rounds, interleaved.
for (const c of cases) if (!c.name.startsWith('e')) await c.run();
for (let r = 0; r < runs; r++) {
  for (const c of cases) {
    if (c.name.startsWith('e') && r >= Math.min(runs, 3)) continue; // pure JS is slow; 3 runs are plenty
    const t0 = performance.now();
    await c.run();
    times.get(c.name)!.push(gbps(c.bytes, performance.now() - t0));
  }
}
const med = new Map<string, number>();
log('\nthroughput, GB/s (median; min..max)');
for (const c of cases) {
  const xs = times.get(c.name)!;
  med.set(c.name.slice(0, 3).trim(), median(xs));
  log(`  ${c.name.padEnd(48)} ${fmt(median(xs)).padStart(6)}   (${fmt(Math.min(...xs))}..${fmt(Math.max(...xs))})`);
}
const m = (k: string): number => med.get(k)!;
/** Median of the run-by-run ratios: robust to load that drifts during the run. */
const ratio = (x: string, y: string): string => {
  const [xs, ys] = [times.get(cases.find((c) => c.name.startsWith(x + ' '))!.name)!, times.get(cases.find((c) => c.name.startsWith(y + ' '))!.name)!];
  return fmt(median(xs.slice(0, ys.length).map((v, i) => v / ys[i]!)));
};
log(`\nratios (median of per-run ratios): a/b ${ratio('a', 'b')}   a64/b64 ${ratio('a64', 'b64')}   a2/b ${ratio('a2', 'b')}   c/d ${ratio('c', 'd')}   c+/d ${ratio('c+', 'd')}   c2/c+ ${ratio('c2', 'c+')}   a/e ${fmt(m('a') / m('e'))} (of medians)`);

if (!values['no-sweep']) {
  const sweepSize = Math.min(size, 256 * MiB);
  const part = plain.subarray(0, sweepSize);
  const sizes = [64 << 10, 256 << 10, MiB, 4 * MiB];
  log(`\ngcm-stream chunk size sweep on ${sweepSize / MiB} MiB, interleaved with (b); median of ${runs} per-run ratios`);
  const blobs = await Promise.all(sizes.map((cs) => collect(gcmStreamEncryptStream(symkey, cs), part)));
  const ratios = sizes.map((): number[] => []);
  const speeds = sizes.map((): number[] => []);
  for (let r = 0; r < runs; r++) {
    let t0 = performance.now();
    rawGcm(blobs[0]!.subarray(0, sweepSize), MiB);
    const b = gbps(sweepSize, performance.now() - t0);
    for (const [i, blob] of blobs.entries()) {
      t0 = performance.now();
      await through(gcmStreamDecryptStream({ key: symkey, layer: 'bench' }), blob, MiB);
      const a = gbps(sweepSize, performance.now() - t0);
      ratios[i]!.push(a / b);
      speeds[i]!.push(a);
    }
  }
  for (const [i, cs] of sizes.entries()) log(`  chunk ${String(cs >> 10).padStart(5)} KiB: ${fmt(median(speeds[i]!))} GB/s, ratio to b ${fmt(median(ratios[i]!))}`);
}

log(`\nload at end ${loadavg().map(fmt).join(' ')}`);

async function imageBench(bytes: number): Promise<void> {
  const run = promisify(execFile);
  // On tmpfs when there is one: the 256 MB outputs of both sides would otherwise meet disk
  // writeback stalls at random (+0.3-0.6 s of system time on either side, run to run).
  const dir = mkdtempSync(join(existsSync('/dev/shm') ? '/dev/shm' : tmpdir(), 'bench-decrypt-'));
  try {
    log(`\n(f) one ${Math.round(bytes / 1e6)} MB random layer, ctr-hmac, JWE (RSA-2048); building the image…`);
    const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    writeFileSync(join(dir, 'key.pem'), privateKey.export({ format: 'pem', type: 'pkcs8' }), { mode: 0o600 });
    writeFileSync(join(dir, 'pub.pem'), publicKey.export({ format: 'pem', type: 'spki' }));
    writeRandomFile(join(dir, 'data.bin'), bytes);
    await run('tar', ['-cf', join(dir, 'layer.tar'), '-C', dir, 'data.bin']);
    rmSync(join(dir, 'data.bin'));
    const plainDir = join(dir, 'plain');
    await run('umoci', ['init', '--layout', plainDir]);
    await run('umoci', ['new', '--image', `${plainDir}:t`]);
    await run('umoci', ['raw', 'add-layer', '--no-history', '--image', `${plainDir}:t`, join(dir, 'layer.tar')]);
    rmSync(join(dir, 'layer.tar'));
    const enc = join(dir, 'enc');
    const encGcm = join(dir, 'enc-gcm');
    const teeAgent = new URL('../agent/bin/tee-agent.js', import.meta.url).pathname;
    await run(process.execPath, [teeAgent, 'encrypt', '--input', `oci:${plainDir}:t`, '--output', `oci:${enc}:t`, '--recipient', `jwe:${join(dir, 'pub.pem')}`]);
    await run(process.execPath, [teeAgent, 'encrypt', '--input', `oci:${plainDir}:t`, '--output', `oci:${encGcm}:t`, '--recipient', `jwe:${join(dir, 'pub.pem')}`, '--cipher', 'gcm-stream']);
    const layout = new OciLayout(enc);
    const layer = (await layout.readJson<{ layers: Array<{ size: number; digest: string }> }>(await layout.resolve('t'))).layers[0]!;
    const child = await bundleEntry(new URL('./lib/decrypt-layer.ts', import.meta.url).pathname, join(dir, 'decrypt-layer.mjs'));
    const childDecrypt = (args: string[]) => runChild(child, args);
    const skopeoMs: number[] = [];
    const oursMs: number[] = [];
    const gcmMs: number[] = [];
    const floorMs: number[] = [];
    let rss = 0;
    for (let r = 0; r < runs; r++) {
      floorMs.push(floor(layout.blobPath(layer.digest), join(dir, 'floor.out')));
      const out = join(dir, `dec${r}`);
      let t0 = performance.now();
      await run('skopeo', ['--insecure-policy', 'copy', '--quiet', '--decryption-key', join(dir, 'key.pem'), `oci:${enc}:t`, `oci:${out}:t`]);
      skopeoMs.push(performance.now() - t0);
      rmSync(out, { recursive: true, force: true });
      t0 = performance.now();
      const child = await childDecrypt([enc, 't', join(dir, 'key.pem'), join(dir, 'layer.out')]);
      oursMs.push(performance.now() - t0);
      rss = Math.max(rss, child.maxRssMiB);
      rmSync(join(dir, 'layer.out'));
      t0 = performance.now();
      await childDecrypt([encGcm, 't', join(dir, 'key.pem'), join(dir, 'layer.out')]);
      gcmMs.push(performance.now() - t0);
      rmSync(join(dir, 'layer.out'));
    }
    const [s, o] = [median(skopeoMs), median(oursMs)];
    log(`  skopeo copy --decryption-key      ${(s / 1000).toFixed(2)} s  (${fmt(gbps(layer.size, s))} GB/s)`);
    log(`  tee-agent layer decrypt to a file ${(o / 1000).toFixed(2)} s  (${fmt(gbps(layer.size, o))} GB/s), process peak RSS ${rss} MiB, incl. node start-up (the bundle, as the guest runs it)`);
    log(`  ratio f (skopeo time / tee-agent time): ${fmt(s / o)}`);
    const fl = median(floorMs);
    log(`  floor: read + aes-256-ctr + hmac-sha256 + sha256 (private digest) + write, raw node:crypto in one thread: ${(fl / 1000).toFixed(3)} s of CPU;`);
    log(`    split perfectly over 2 cores ${(fl / 2000).toFixed(3)} s, so at most ${fmt((2 * s) / fl)}x skopeo on this machine before process start-up (10x needs ${(s / 10000).toFixed(3)} s)`);
    const g = median(gcmMs);
    log(`  for comparison, tee-agent on the gcm-stream encryption of the same layer: ${(g / 1000).toFixed(2)} s (${fmt(gbps(layer.size, g))} GB/s), ${fmt(s / g)}x skopeo's ctr-hmac time`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function writeRandomFile(path: string, bytes: number): void {
  const fd = openSync(path, 'w');
  for (let o = 0; o < bytes; o += 16 * MiB) writeSync(fd, randomBytes(Math.min(16 * MiB, bytes - o)));
  closeSync(fd);
}

/**
 * The per-byte work any ctr-hmac decrypt to a file must do, raw node:crypto in
 * this one thread, 1 MiB at a time: read, AES-256-CTR, HMAC-SHA256 of the
 * ciphertext, SHA-256 of the plaintext, write. Returns milliseconds.
 */
function floor(blob: string, out: string): number {
  const key = randomBytes(32);
  const buf = Buffer.allocUnsafe(MiB);
  const t0 = performance.now();
  const [src, dst] = [openSync(blob, 'r'), openSync(out, 'w')];
  const d = createDecipheriv('aes-256-ctr', key, randomBytes(16));
  const h = createHmac('sha256', key);
  const p = createHash('sha256');
  for (let n; (n = readSync(src, buf, 0, MiB, null)) > 0; ) {
    const c = buf.subarray(0, n);
    h.update(c);
    const plain = d.update(c);
    p.update(plain);
    writeSync(dst, plain);
  }
  h.digest();
  p.digest();
  closeSync(src);
  closeSync(dst);
  const ms = performance.now() - t0;
  rmSync(out);
  return ms;
}

/** The bundled decrypt-layer child, started as the guest starts the agent (node flags and environment). */
function runChild(bundle: string, args: string[]): Promise<{ maxRssMiB: number }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [...AGENT_NODE_FLAGS, bundle, ...args], { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, ...AGENT_NODE_ENV } });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d));
    child.on('exit', (code) => (code === 0 ? resolve(JSON.parse(out) as { maxRssMiB: number }) : reject(new Error(`decrypt child exited ${code}`))));
  });
}
