import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import zlib from 'node:zlib';
import { Code, type AgentError } from '../../agent/src/errors.ts';
import { DigestMismatch, InvalidDigest, LimitExceeded, SizeMismatch, UnsafeArchive, UnsupportedMediaType } from '../../agent/src/image/errors.ts';
import { compressionOf, decompress, layerStream, RATIO_FLOOR, verifyDigest, type Compression } from '../../agent/src/image/stages.ts';
import { typedError } from '../../agent/src/image/archive-errors.ts';
import { unpackLayer } from '../../agent/src/image/unpack.ts';
import { createLogger } from '../../agent/src/log.ts';
import { file, tar } from '../fixtures/tar-builder.ts';

const log = createLogger('silent');

const sha = (alg: string, b: Buffer): string => `${alg}:${createHash(alg).update(b).digest('hex')}`;

async function collect(chunks: Buffer[], ...stages: NodeJS.ReadWriteStream[]): Promise<Buffer> {
  const out: Buffer[] = [];
  const sink = new Writable({
    write(c: Buffer, _e, cb) {
      out.push(c);
      cb();
    },
  });
  await pipeline(Readable.from(chunks), ...(stages as [NodeJS.ReadWriteStream]), sink);
  return Buffer.concat(out);
}

test('verifyDigest passes matching sha256 and sha512 streams through and exposes the digest', async () => {
  const data = Buffer.from('layer bytes '.repeat(10000));
  for (const alg of ['sha256', 'sha512']) {
    const v = verifyDigest(sha(alg, data), { size: data.length });
    const out = await collect([data.subarray(0, 1000), data.subarray(1000)], v);
    assert.deepEqual(out, data);
    assert.equal(v.digest, sha(alg, data));
    assert.equal(v.bytes, data.length);
  }
});

test('verifyDigest fails on wrong bytes at the end, DATA_LOSS', async () => {
  const data = Buffer.from('abc');
  await assert.rejects(collect([Buffer.from('abd')], verifyDigest(sha('sha256', data))), (err: DigestMismatch) => {
    assert.ok(err instanceof DigestMismatch);
    assert.equal(err.code, Code.DATA_LOSS);
    assert.equal(err.actual, sha('sha256', Buffer.from('abd')));
    return true;
  });
});

test('verifyDigest stops as soon as more than size bytes arrive, and fails a short stream', async () => {
  const data = Buffer.alloc(100);
  const endless = new Readable({
    read() {
      this.push(Buffer.alloc(64));
    },
  });
  let passed = 0;
  const sink = new Writable({
    write(c: Buffer, _e, cb) {
      passed += c.length;
      cb();
    },
  });
  await assert.rejects(pipeline(endless, verifyDigest(sha('sha256', data), { size: 100 }), sink), SizeMismatch);
  assert.ok(passed <= 100, `${passed} bytes passed a 100-byte descriptor`);
  await assert.rejects(collect([data.subarray(0, 50)], verifyDigest(sha('sha256', data), { size: 100 })), SizeMismatch);
});

test('verifyDigest refuses malformed digests up front', () => {
  for (const d of ['sha256:abc', 'md5:' + 'a'.repeat(32), 'sha256:' + 'A'.repeat(64), 'sha512:' + 'a'.repeat(64), '']) {
    assert.throws(() => verifyDigest(d), InvalidDigest);
  }
});

test('compressionOf knows OCI, Docker, nondistributable and encrypted layer types', () => {
  const cases: [string, Compression][] = [
    ['application/vnd.oci.image.layer.v1.tar', 'none'],
    ['application/vnd.oci.image.layer.v1.tar+gzip', 'gzip'],
    ['application/vnd.oci.image.layer.v1.tar+zstd', 'zstd'],
    ['application/vnd.oci.image.layer.nondistributable.v1.tar+gzip', 'gzip'],
    ['application/vnd.oci.image.layer.nondistributable.v1.tar+zstd', 'zstd'],
    ['application/vnd.docker.image.rootfs.diff.tar.gzip', 'gzip'],
    ['application/vnd.docker.image.rootfs.foreign.diff.tar.gzip', 'gzip'],
    ['application/vnd.oci.image.layer.v1.tar+gzip+encrypted', 'gzip'],
    ['application/vnd.oci.image.layer.v1.tar+encrypted', 'none'],
  ];
  for (const [mt, c] of cases) assert.equal(compressionOf(mt), c, mt);
  for (const mt of ['application/vnd.oci.image.manifest.v1+json', 'application/vnd.oci.image.layer.v1.tar+bzip2', 'toString', '']) {
    assert.throws(() => compressionOf(mt), UnsupportedMediaType);
  }
});

test('gzip: multi-member streams and trailing NUL padding decompress; trailing junk is an error', async () => {
  const a = Buffer.from('first member ');
  const b = Buffer.from('second member');
  const multi = Buffer.concat([zlib.gzipSync(a), zlib.gzipSync(b)]);
  assert.deepEqual(await collect([multi.subarray(0, 7), multi.subarray(7)], decompress('gzip')), Buffer.concat([a, b]));
  assert.deepEqual(await collect([zlib.gzipSync(a), Buffer.alloc(4096)], decompress('gzip')), a);
  await assert.rejects(collect([zlib.gzipSync(a), Buffer.from('junk')], decompress('gzip')), (err: Error) => {
    assert.equal((typedError(err) as AgentError).code, Code.INVALID_ARGUMENT);
    return true;
  });
});

test('zstd from the zstd CLI and pass-through for uncompressed layers', async () => {
  const data = Buffer.from('zstd content '.repeat(50000));
  const z = execFileSync('zstd', ['-q', '-c'], { input: data });
  assert.deepEqual(await collect([z], decompress('zstd')), data);
  assert.deepEqual(await collect([data], decompress('none')), data);
  await assert.rejects(collect([Buffer.from('not zstd at all')], decompress('zstd')));
});

test('a gzip bomb stops at the byte cap, and at the ratio cap, without buffering the output', async () => {
  const bomb = zlib.gzipSync(Buffer.alloc(256 << 20), { level: 9 }); // ~250 KiB
  const before = process.memoryUsage().rss;
  await assert.rejects(collect([bomb], decompress('gzip', { maxBytes: 8 << 20 })), (err: LimitExceeded) => {
    assert.ok(err instanceof LimitExceeded);
    assert.equal(err.code, Code.RESOURCE_EXHAUSTED);
    assert.equal(err.limit, 'image.max_layer_bytes');
    return true;
  });
  await assert.rejects(collect([bomb], decompress('gzip', { maxRatio: 100 })), (err: LimitExceeded) => err.limit === 'image.max_decompression_ratio');
  assert.ok(process.memoryUsage().rss - before < 64 << 20, 'RSS grew with the bomb');
  // Below the floor the ratio is not judged: small, very compressible layers are normal.
  const small = zlib.gzipSync(Buffer.alloc(RATIO_FLOOR / 2));
  assert.equal((await collect([small], decompress('gzip', { maxRatio: 2 }))).length, RATIO_FLOOR / 2);
});

test('a zstd bomb stops at the ratio cap', async () => {
  const bomb = execFileSync('zstd', ['-q', '-19', '-c'], { input: Buffer.alloc(64 << 20) });
  assert.ok(bomb.length < 64 << 10);
  await assert.rejects(collect([bomb], decompress('zstd', { maxRatio: 1100 })), (err: LimitExceeded) => err.limit === 'image.max_decompression_ratio');
});

test('layerStream: a corrupted blob is reported as a digest mismatch even when the archive breaks first', async () => {
  const tarBytes = tar(file('a', 'hello'), file('b', 'x'.repeat(3000)));
  const gz = zlib.gzipSync(tarBytes);
  const desc = { digest: sha('sha256', gz), size: gz.length, mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', diffId: sha('sha256', tarBytes) };
  const dir = mkdtempSync(join(tmpdir(), 'layerstream-'));
  let n = 0;
  const run = (blob: Buffer, d = desc) => {
    const target = join(dir, String(n++));
    mkdirSync(target);
    return unpackLayer(layerStream(Readable.from([blob.subarray(0, 100), blob.subarray(100)]), d), target, { limits, log });
  };
  const limits = { maxEntries: 100, maxFileSize: 1 << 20, maxTotalBytes: 1 << 20 };
  assert.equal((await run(gz)).files, 2);
  const bad = Buffer.from(gz);
  bad[bad.length - 12]! ^= 1; // breaks the gzip CRC before the blob digest is known
  await assert.rejects(run(bad), DigestMismatch);
  // A plain tar whose header breaks: the tar reader fails first, the digest says why.
  const plain = { ...desc, digest: sha('sha256', tarBytes), size: tarBytes.length, mediaType: 'application/vnd.oci.image.layer.v1.tar' };
  const badTar = Buffer.from(tarBytes);
  badTar[3] = 0x41;
  await assert.rejects(run(badTar, plain), DigestMismatch);
  // A hostile archive with a correct digest is what it is.
  const hostile = tar(file('../x', 'x'));
  await assert.rejects(run(hostile, { ...plain, digest: sha('sha256', hostile), size: hostile.length, diffId: sha('sha256', hostile) }), UnsafeArchive);
  // More bytes than the descriptor says: stopped at the size.
  await assert.rejects(run(Buffer.concat([tarBytes, Buffer.alloc(512)]), plain), SizeMismatch);
  rmSync(dir, { recursive: true, force: true });
});
