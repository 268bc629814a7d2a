import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { gzipSync } from 'node:zlib';
import { AgentError, Cancelled, Code } from '../../agent/src/errors.ts';
import { DigestMismatch, LimitExceeded, MalformedArchive, UnsafeArchive } from '../../agent/src/image/errors.ts';
import { blobStream } from '../../agent/src/image/stages.ts';
import { receiveError, sendError } from '../../agent/src/image/thread-errors.ts';
import { unpackInWorker, type WorkerJob } from '../../agent/src/image/unpack-thread.ts';
import { dir, file, tar } from '../fixtures/tar-builder.ts';

const top = mkdtempSync(join(tmpdir(), 'unpack-thread-'));
let n = 0;
const sha = (b: Buffer): string => 'sha256:' + createHash('sha256').update(b).digest('hex');
const logged: { level: string; msg: string }[] = [];
const log = { debug: (_o: object, msg: string) => void logged.push({ level: 'debug', msg }), warn: (_o: object, msg: string) => void logged.push({ level: 'warn', msg }) };
const LIMITS = { maxEntries: 10_000, maxFileSize: 64 << 20, maxTotalBytes: 256 << 20 };

/** Unpack a gzip blob of `plain` in the worker, fed in `chunk`-byte pieces; `blob` overrides the bytes sent. */
function run(plain: Buffer, opts: { blob?: Buffer; signal?: AbortSignal; chunk?: number; limits?: Partial<typeof LIMITS> } = {}) {
  const gz = gzipSync(plain);
  const sent = opts.blob ?? gz;
  const chunk = opts.chunk ?? 64 * 1024;
  const parts: Buffer[] = [];
  for (let i = 0; i < sent.length; i += chunk) parts.push(sent.subarray(i, i + chunk));
  const d = join(top, String(n++));
  mkdirSync(d);
  const job: WorkerJob = { compression: 'gzip', diffId: sha(plain), dir: d, decompressLimits: {}, unpackLimits: { ...LIMITS, ...opts.limits } };
  const blob = blobStream(Readable.from(parts), { digest: sha(gz), size: gz.length });
  return { dir: d, done: unpackInWorker(blob, job, { signal: opts.signal ?? new AbortController().signal, log }) };
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
  const p = unpackInWorker(blobStream(slow, { digest: sha(gz), size: gz.length }), { compression: 'gzip', diffId: sha(plain), dir: d, decompressLimits: {}, unpackLimits: LIMITS }, { signal: ac.signal, log });
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
