import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { gzipSync } from 'node:zlib';
import { AgentError, Cancelled, Code } from '../../agent/src/errors.ts';
import { DigestMismatch, LimitExceeded, MalformedArchive, UnsafeArchive } from '../../agent/src/image/errors.ts';
import { layerStream } from '../../agent/src/image/stages.ts';
import { receiveError, sendError } from '../../agent/src/image/thread-errors.ts';
import { unpackInWorker, type WorkerJob } from '../../agent/src/image/unpack-thread.ts';
import { dir, file, tar } from '../fixtures/tar-builder.ts';

const top = mkdtempSync(join(tmpdir(), 'unpack-thread-'));
let n = 0;
const sha = (b: Buffer): string => 'sha256:' + createHash('sha256').update(b).digest('hex');
const logged: { level: string; msg: string }[] = [];
const log = { debug: (_o: object, msg: string) => void logged.push({ level: 'debug', msg }), warn: (_o: object, msg: string) => void logged.push({ level: 'warn', msg }) };
const LIMITS = { maxEntries: 10_000, maxFileSize: 64 << 20, maxTotalBytes: 256 << 20 };

const GZIP = 'application/vnd.oci.image.layer.v1.tar+gzip';
const TAR = 'application/vnd.oci.image.layer.v1.tar';

interface RunOptions {
  /** The bytes sent instead of the gzip of `plain`; the descriptor keeps the digest of the gzip unless `digestOfSent`. */
  blob?: Buffer;
  digestOfSent?: boolean;
  diffId?: string;
  /** Send `plain` as an uncompressed layer (its chunks are copied, not moved). */
  uncompressed?: boolean;
  signal?: AbortSignal;
  chunk?: number;
  limits?: Partial<typeof LIMITS>;
  maxBytes?: number;
}

/** Unpack a gzip blob of `plain` in the worker, fed in `chunk`-byte pieces, through the pull's main-thread stages. */
function run(plain: Buffer, opts: RunOptions = {}) {
  const gz = opts.uncompressed ? plain : gzipSync(plain);
  const sent = opts.blob ?? gz;
  const chunk = opts.chunk ?? 64 * 1024;
  const parts: Buffer[] = [];
  for (let i = 0; i < sent.length; i += chunk) parts.push(sent.subarray(i, i + chunk));
  const d = join(top, String(n++));
  mkdirSync(d);
  const job: WorkerJob = { dir: d, unpackLimits: { ...LIMITS, ...opts.limits } };
  const desc = { digest: sha(opts.digestOfSent ? sent : gz), size: (opts.digestOfSent ? sent : gz).length, mediaType: opts.uncompressed ? TAR : GZIP, diffId: opts.diffId ?? sha(plain) };
  const layer = layerStream(Readable.from(parts), desc, { limits: opts.maxBytes ? { maxBytes: opts.maxBytes } : {} });
  return { dir: d, done: unpackInWorker(layer, job, { signal: opts.signal ?? new AbortController().signal, log, owned: !opts.uncompressed }) };
}

test('a layer unpacks in the worker: files, sizes and contents, fed in many small chunks', async () => {
  const big = Buffer.alloc(5 << 20, 'abcdefgh');
  const { dir: d, done } = run(tar(dir('etc/'), file('etc/hosts', 'localhost\n'), file('big', big)), { chunk: 4096 });
  const stats = await done;
  assert.equal(stats.files, 2);
  assert.equal(readFileSync(join(d, 'etc/hosts'), 'utf8'), 'localhost\n');
  assert.ok(readFileSync(join(d, 'big')).equals(big));
  assert.ok(logged.some((l) => l.level === 'debug' && l.msg === 'layer unpacked'), 'worker logs reach the caller');
});

test('moved and copied transfers keep every byte in order: zlib buffers read whole or in pieces, uncompressed chunks', async () => {
  // Random bytes inflate in step with the input, so zlib's 256 KiB buffers arrive in
  // pieces; text fills them from little input. Odd feed sizes shift every boundary.
  const rnd = randomBytes(3 << 20);
  const text = Buffer.from(Array.from({ length: 120_000 }, (_, i) => `line ${i} of some text\n`).join(''));
  const small = Array.from({ length: 300 }, (_, i) => randomBytes(i * 37));
  const plain = tar(dir('s/'), ...small.map((b, i) => file(`s/${i}`, b)), file('rnd', rnd), file('text', text), file('tail', 'end\n'));
  for (const opts of [{ chunk: 1000 }, { chunk: 333_333 }, { chunk: 5000, uncompressed: true }, { chunk: 1 << 20, uncompressed: true }]) {
    const { dir: d, done } = run(plain, opts);
    const stats = await done;
    assert.equal(stats.files, 303, JSON.stringify(opts));
    assert.ok(readFileSync(join(d, 'rnd')).equals(rnd), `rnd ${JSON.stringify(opts)}`);
    assert.ok(readFileSync(join(d, 'text')).equals(text), `text ${JSON.stringify(opts)}`);
    assert.ok(readFileSync(join(d, 's/299')).equals(small[299]!), `s/299 ${JSON.stringify(opts)}`);
    assert.equal(readFileSync(join(d, 'tail'), 'utf8'), 'end\n');
  }
});

test('the main-thread stages fail typed: wrong diff_id, a blob that does not inflate, a decompression cap', async () => {
  const plain = tar(file('a', 'x'.repeat(100_000)));
  const wrong = run(plain, { diffId: sha(Buffer.from('other')) });
  await assert.rejects(wrong.done, (e: unknown) => e instanceof DigestMismatch && e.code === Code.DATA_LOSS && e.expected === sha(Buffer.from('other')));
  const gz = gzipSync(plain);
  const garbled = Buffer.from(gz);
  for (let i = 20; i < 60; i++) garbled[i] = 0xff;
  const broken = run(plain, { blob: garbled, digestOfSent: true });
  await assert.rejects(broken.done, (e: unknown) => e instanceof MalformedArchive && e.code === Code.INVALID_ARGUMENT && /decompress/.test(e.message));
  const capped = run(plain, { maxBytes: 50_000 });
  await assert.rejects(capped.done, (e: unknown) => e instanceof LimitExceeded && e.limit === 'image.max_layer_bytes');
});

test('errors from the worker keep their class and gRPC code', async () => {
  const escape = run(tar(file('../../pwned', 'x')));
  await assert.rejects(escape.done, (e: unknown) => e instanceof UnsafeArchive && e.code === Code.INVALID_ARGUMENT && /unsafe layer archive/.test(e.message));
  assert.equal(existsSync(join(top, 'pwned')), false);
  const many = run(tar(file('a', 'x'), file('b', 'y')), { limits: { maxEntries: 1 } });
  await assert.rejects(many.done, (e: unknown) => e instanceof LimitExceeded && e.code === Code.RESOURCE_EXHAUSTED && e.limit === 'image.max_layer_entries');
});

test('a corrupted blob is a digest mismatch even when the archive breaks first in the worker', async () => {
  const plain = tar(...Array.from({ length: 50 }, (_, i) => file(`f${i}`, 'x'.repeat(3000))));
  const gz = gzipSync(plain);
  const bad = Buffer.from(gz);
  bad[40] = bad[40]! ^ 0xff;
  const r = run(plain, { blob: bad });
  await assert.rejects(r.done, (e: unknown) => e instanceof DigestMismatch && e.code === Code.DATA_LOSS);
});

test('cancellation stops the worker with CANCELLED; a later layer still unpacks', async () => {
  const ac = new AbortController();
  const slow = new Readable({ read() {} });
  const plain = tar(file('a', 'x'));
  const gz = gzipSync(plain);
  slow.push(gz.subarray(0, 10));
  const d = join(top, String(n++));
  mkdirSync(d);
  const layer = layerStream(slow, { digest: sha(gz), size: gz.length, mediaType: GZIP, diffId: sha(plain) });
  const p = unpackInWorker(layer, { dir: d, unpackLimits: LIMITS }, { signal: ac.signal, log, owned: true });
  setTimeout(() => {
    ac.abort();
    slow.destroy();
  }, 50);
  await assert.rejects(p, (e: unknown) => e instanceof Cancelled && e.code === Code.CANCELLED);
  const again = run(tar(file('ok', 'fine')));
  await again.done;
  assert.deepEqual(readdirSync(again.dir).filter((f) => !f.startsWith('.')), ['ok']);
});

test('sendError/receiveError re-create the AgentError class and fields; other errors stay plain', () => {
  const e = receiveError(sendError(new DigestMismatch('sha256:aa', 'sha256:bb')));
  assert.ok(e instanceof DigestMismatch && e instanceof AgentError);
  assert.equal((e as DigestMismatch).expected, 'sha256:aa');
  assert.equal((e as DigestMismatch).code, Code.DATA_LOSS);
  assert.ok(receiveError(sendError(new MalformedArchive('bad'))) instanceof MalformedArchive);
  const plain = receiveError(sendError(new TypeError('boom')));
  assert.ok(!(plain instanceof AgentError));
  assert.equal(plain.message, 'boom');
});
