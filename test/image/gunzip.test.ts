// The layer gunzip (agent/src/image/gunzip.ts) against zlib's own gunzip and
// the gzip CLI: the same bytes out for every member layout and split, the
// RFC 1952 header fields, and typed errors for what is not gzip.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import zlib from 'node:zlib';
import { Code, type AgentError } from '../../agent/src/errors.ts';
import { DigestMismatch, MalformedArchive } from '../../agent/src/image/errors.ts';
import { createLayerGunzip } from '../../agent/src/image/gunzip.ts';
import { typedError } from '../../agent/src/image/archive-errors.ts';
import { layerStream } from '../../agent/src/image/stages.ts';

const CHUNK = 128 * 1024;
const sha = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

async function gunzip(input: Buffer, split: number): Promise<{ out: Buffer; chunks: Buffer[] }> {
  const parts: Buffer[] = [];
  for (let o = 0; o < input.length; o += split) parts.push(input.subarray(o, o + split));
  const chunks: Buffer[] = [];
  await pipeline(
    Readable.from(parts),
    createLayerGunzip(CHUNK),
    new Writable({
      write(c: Buffer, _e, cb) {
        chunks.push(c);
        cb();
      },
    }),
  );
  return { out: Buffer.concat(chunks), chunks };
}

/** A member with every optional header field (FEXTRA, FNAME, FCOMMENT, FHCRC) around zlib's raw deflate of `data`. */
function fullHeaderMember(data: Buffer): Buffer {
  const extra = Buffer.concat([Buffer.from([0x41, 0x42, 3, 0]), Buffer.from('xyz')]);
  const head = Buffer.concat([
    Buffer.from([0x1f, 0x8b, 8, 2 | 4 | 8 | 16, 0, 0, 0, 0, 0, 3]),
    Buffer.from([extra.length & 0xff, extra.length >> 8]),
    extra,
    Buffer.from('name.tar\0comment here\0'),
  ]);
  const hcrc = Buffer.alloc(2);
  hcrc.writeUInt16LE(zlib.crc32(head) & 0xffff);
  const trailer = Buffer.alloc(8);
  trailer.writeUInt32LE(zlib.crc32(data), 0);
  trailer.writeUInt32LE(data.length % 2 ** 32, 4);
  return Buffer.concat([head, hcrc, zlib.deflateRawSync(data), trailer]);
}

const sample = (n: number, seed: number): Buffer => Buffer.concat([randomBytes(n % 50_000), Buffer.alloc(n, String.fromCharCode(97 + (seed % 26)))]);

test('gunzip equals zlib.gunzipSync for single and concatenated members, NUL padding, any split', async () => {
  for (let trial = 0; trial < 60; trial++) {
    const members = Array.from({ length: 1 + (trial % 4) }, (_, i) => sample((trial * 7919 + i * 104_729) % 400_000, trial + i));
    const gz = Buffer.concat([...members.map((m, i) => zlib.gzipSync(m, { level: i % 2 ? 9 : 1 })), Buffer.alloc(trial % 3 === 0 ? trial : 0)]);
    const split = 1 + ((trial * 6151) % 90_000);
    const { out } = await gunzip(gz, split);
    assert.ok(out.equals(zlib.gunzipSync(gz)), `trial ${trial}: ${members.length} members, split ${split}`);
  }
  // Splits that cut the header, the trailer and the next member's magic byte by byte.
  const two = Buffer.concat([zlib.gzipSync(sample(3000, 1)), zlib.gzipSync(sample(5000, 2))]);
  assert.ok((await gunzip(two, 1)).out.equals(zlib.gunzipSync(two)));
  // Empty members, alone and between others.
  const empty = zlib.gzipSync(Buffer.alloc(0));
  for (const input of [empty, Buffer.concat([empty, empty, Buffer.alloc(3)]), Buffer.concat([zlib.gzipSync('a'), empty, zlib.gzipSync('b')])]) {
    for (const split of [1, 5, 1000]) assert.equal((await gunzip(input, split)).out.toString(), zlib.gunzipSync(input).toString());
  }
});

test('gunzip reads every header field, and the gzip CLI output with a file name', async () => {
  const data = sample(200_000, 5);
  const full = fullHeaderMember(data);
  for (const split of [1, 7, 64, full.length]) assert.ok((await gunzip(full, split)).out.equals(data), `split ${split}`);
  assert.ok((await gunzip(Buffer.concat([full, zlib.gzipSync(data)]), 4096)).out.equals(Buffer.concat([data, data])));
  const dir = mkdtempSync(join(tmpdir(), 'gunzip-'));
  try {
    writeFileSync(join(dir, 'layer.tar'), data);
    const cli = execFileSync('gzip', ['-c', join(dir, 'layer.tar')]); // gzip names the file (FNAME)
    assert.equal(cli[3]! & 8, 8);
    assert.ok((await gunzip(cli, 65_536)).out.equals(data));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("gunzip hands out zlib's own output buffers, whole, for the unpack worker's zero-copy transfers", async () => {
  const data = sample(3 * CHUNK + 1234, 9);
  const { chunks } = await gunzip(Buffer.concat([zlib.gzipSync(data), zlib.gzipSync(data)]), 50_000);
  for (const c of chunks) assert.equal(c.buffer.byteLength, CHUNK);
  // Slices of one buffer follow each other without gaps.
  for (let i = 1; i < chunks.length; i++) {
    if (chunks[i]!.buffer === chunks[i - 1]!.buffer) assert.equal(chunks[i]!.byteOffset, chunks[i - 1]!.byteOffset + chunks[i - 1]!.length);
  }
});

test('the CRC-32 is left to the diff_id; ISIZE is checked', async () => {
  const data = sample(120_000, 3); // 20 000 random bytes (stored blocks), then text
  const gz = zlib.gzipSync(data);
  const badCrc = Buffer.from(gz);
  badCrc[gz.length - 8]! ^= 0xff;
  assert.throws(() => zlib.gunzipSync(badCrc));
  assert.ok((await gunzip(badCrc, 8192)).out.equals(data));
  // Bytes changed inside a stored block inflate without complaint; the diff_id is what catches them.
  const stored = Buffer.from(gz);
  stored[1000]! ^= 0xff;
  assert.throws(() => zlib.gunzipSync(stored));
  const { out } = await gunzip(stored, 8192);
  assert.equal(out.length, data.length);
  assert.ok(!out.equals(data));
  const desc = { digest: sha(stored), size: stored.length, mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', diffId: sha(data) };
  await assert.rejects(pipeline(layerStream(Readable.from([stored]), desc), new Writable({ write: (_c, _e, cb) => cb() })), (err: DigestMismatch) => {
    assert.ok(err instanceof DigestMismatch);
    assert.equal(err.code, Code.DATA_LOSS);
    assert.equal(err.expected, sha(data));
    return true;
  });
  const badSize = Buffer.from(gz);
  badSize[gz.length - 1]! ^= 1;
  await assert.rejects(gunzip(badSize, 8192), /length does not match its trailer/);
});

test('what is not gzip fails typed (INVALID_ARGUMENT), as zlib failures do', async () => {
  const gz = zlib.gzipSync(sample(20_000, 4));
  const reserved = Buffer.from(gz);
  reserved[3] = 0x20;
  const method = Buffer.from(gz);
  method[2] = 7;
  // Text deflates to Huffman codes, which 0xff bytes break (random data is stored, see the CRC test).
  const corrupt = zlib.gzipSync(Buffer.from('layer text '.repeat(5000)));
  for (let i = 20; i < 40; i++) corrupt[i] = 0xff;
  const cases: [string, Buffer, RegExp][] = [
    ['empty', Buffer.alloc(0), /empty gzip stream/],
    ['not gzip', Buffer.from('plain tar bytes'), /not a gzip stream/],
    ['reserved flags', reserved, /reserved flags/],
    ['not deflate', method, /not deflate/],
    ['cut in the header', gz.subarray(0, 6), /truncated/],
    ['cut in the data', gz.subarray(0, gz.length - 100), /unexpected end of file|truncated/],
    ['cut in the trailer', gz.subarray(0, gz.length - 3), /truncated/],
    ['no trailer at all', gz.subarray(0, gz.length - 8), /truncated/],
    ['junk after a member', Buffer.concat([gz, Buffer.from('junk')]), /trailing bytes/],
    ['junk after the padding', Buffer.concat([gz, Buffer.alloc(10), Buffer.from('x')]), /trailing bytes/],
    ['half a second member', Buffer.concat([gz, gz.subarray(0, 30)]), /unexpected end of file|truncated/],
    ['corrupt deflate data', corrupt, /invalid|incorrect|too many|distance/],
  ];
  for (const [what, input, message] of cases) {
    for (const split of [1, 4096]) {
      if (split === 1 && input.length > 1000) continue;
      await assert.rejects(gunzip(input, split), (err: Error) => {
        const typed = typedError(err) as AgentError;
        assert.ok(typed instanceof MalformedArchive, `${what}: ${err.message}`);
        assert.equal(typed.code, Code.INVALID_ARGUMENT);
        assert.match(err.message, message, what);
        return true;
      });
    }
  }
});
