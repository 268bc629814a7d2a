import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes, randomInt } from 'node:crypto';
import { AgentError, Code } from '../../../agent/src/errors.ts';
import { LayerAuthenticationFailed } from '../../../agent/src/crypto/errors.ts';
import { gcmStreamDecryptStream, gcmStreamEncryptStream, GCM_STREAM_HEADER_BYTES, MIN_CHUNK_SIZE, TAG_BYTES } from '../../../agent/src/crypto/ciphers/gcm-stream.ts';
import { run, runOk } from '../stream-helpers.ts';
import { referenceDecrypt, referenceEncrypt } from './gcm-stream-reference.ts';

const CS = MIN_CHUNK_SIZE;
const CT = CS + TAG_BYTES;
const H = GCM_STREAM_HEADER_BYTES;
const decrypt = (key: Buffer, blob: Buffer, maxPiece = 0) => run(gcmStreamDecryptStream({ key, layer: 'sha256:test' }), blob, maxPiece);
const encrypt = (key: Buffer, plain: Buffer, cs = CS, maxPiece = 0) => runOk(gcmStreamEncryptStream(key, cs), plain, maxPiece);

/** Chunk i's byte range in a blob with chunk size CS. */
const chunkAt = (blob: Buffer, i: number) => blob.subarray(H + i * CT, Math.min(blob.length, H + (i + 1) * CT));

function assertAuthFailure(r: { error?: unknown; ended: boolean }, what: string): void {
  assert.ok(r.error instanceof AgentError, `${what}: expected a typed error, got ${String(r.error)}`);
  assert.ok(r.error.code === Code.DATA_LOSS || r.error.code === Code.INVALID_ARGUMENT, `${what}: code ${r.error.code}`);
  assert.equal(r.ended, false, `${what}: 'end' must not be signalled`);
}

test('round trips at every chunk-boundary size, fed in random pieces', async () => {
  const key = randomBytes(32);
  for (const size of [0, 1, CS - 1, CS, CS + 1, 2 * CS, 3 * CS - 1, 3 * CS, 3 * CS + 17]) {
    const plain = randomBytes(size);
    for (const maxPiece of [0, 1 + randomInt(CS * 2), 7]) {
      const blob = await encrypt(key, plain, CS, maxPiece);
      assert.equal(blob.length, H + size + (Math.floor(size / CS) + 1) * TAG_BYTES, `blob size for ${size}`);
      const r = await decrypt(key, blob, maxPiece === 0 ? 0 : 1 + randomInt(CT * 2));
      assert.ifError(r.error);
      assert.ok(r.out.equals(plain), `size ${size}, pieces ≤ ${maxPiece}`);
    }
  }
});

test('differential: ours decrypts the @noble/ciphers reference and the reference decrypts ours', async () => {
  for (let i = 0; i < 12; i++) {
    const key = randomBytes(32);
    const cs = [CS, 8192, 65536][i % 3]!;
    const plain = randomBytes(i < 3 ? i * cs : randomInt(5 * cs));
    const theirs = referenceEncrypt(key, plain, cs);
    const r = await decrypt(key, theirs, 1 + randomInt(3 * cs));
    assert.ifError(r.error);
    assert.ok(r.out.equals(plain), `ours(reference) size ${plain.length} cs ${cs}`);
    const ours = await encrypt(key, plain, cs, 1 + randomInt(3 * cs));
    assert.ok(referenceDecrypt(key, ours).equals(plain), `reference(ours) size ${plain.length} cs ${cs}`);
  }
});

test('a flipped byte anywhere (header, every chunk, every tag) fails, releasing only the chunks before it', async () => {
  const key = randomBytes(32);
  const plain = randomBytes(3 * CS + 100);
  const blob = await encrypt(key, plain);
  const offsets = [0, 4, 5, 8, 9, 40, 47, 48, 79];
  for (let i = 0; i < 4; i++) offsets.push(H + i * CT, H + i * CT + randomInt(Math.min(CS, plain.length - i * CS)), Math.min(blob.length, H + (i + 1) * CT) - 1);
  for (const at of offsets) {
    const bad = Buffer.from(blob);
    bad[at]! ^= 1 << randomInt(8);
    const r = await decrypt(key, bad, 1000);
    assertAuthFailure(r, `flip at ${at}`);
    const chunk = at < H ? 0 : Math.floor((at - H) / CT);
    assert.ok(r.out.equals(plain.subarray(0, chunk * CS)), `flip at ${at}: released ${r.out.length} bytes, authentic chunks before it are ${chunk * CS}`);
  }
});

test('dropped, duplicated and reordered chunks fail', async () => {
  const key = randomBytes(32);
  const blob = await encrypt(key, randomBytes(3 * CS + 100));
  const [h, c0, c1, c2, c3] = [blob.subarray(0, H), chunkAt(blob, 0), chunkAt(blob, 1), chunkAt(blob, 2), chunkAt(blob, 3)];
  const cases: Record<string, Buffer[]> = {
    'drop chunk 0': [h, c1, c2, c3],
    'drop chunk 1': [h, c0, c2, c3],
    'drop final chunk': [h, c0, c1, c2],
    'duplicate chunk 1': [h, c0, c1, c1, c2, c3],
    'duplicate final chunk': [h, c0, c1, c2, c3, c3],
    'swap chunks 1 and 2': [h, c0, c2, c1, c3],
    'final chunk first': [h, c3, c0, c1, c2],
  };
  for (const [name, parts] of Object.entries(cases)) assertAuthFailure(await decrypt(key, Buffer.concat(parts), 3000), name);
});

test('truncation at and between chunk boundaries fails', async () => {
  const key = randomBytes(32);
  for (const size of [3 * CS, 3 * CS + 100]) {
    const blob = await encrypt(key, randomBytes(size));
    const cuts = [0, 1, H - 1, H, H + 1, blob.length - 1, blob.length - TAG_BYTES, blob.length - TAG_BYTES - 1];
    for (let i = 1; i <= 3; i++) cuts.push(H + i * CT, H + i * CT - 1, H + i * CT + 1, H + i * CT - TAG_BYTES, H + (i - 1) * CT + randomInt(CT));
    for (const cut of cuts.filter((c) => c < blob.length)) {
      const r = await decrypt(key, blob.subarray(0, cut));
      assertAuthFailure(r, `size ${size} cut at ${cut} of ${blob.length}`);
      assert.ok(r.error instanceof AgentError && r.error.code === Code.DATA_LOSS, `cut at ${cut}: DATA_LOSS`);
    }
  }
});

test('appended data fails: an extra chunk, random bytes, another layer\'s chunk', async () => {
  const key = randomBytes(32);
  const blob = await encrypt(key, randomBytes(2 * CS + 5));
  const other = await encrypt(key, randomBytes(2 * CS + 5));
  const even = await encrypt(key, randomBytes(2 * CS));
  for (const [name, extra] of [
    ['one byte', randomBytes(1)],
    ['a tag-sized tail', randomBytes(TAG_BYTES)],
    ['a full chunk of random bytes', randomBytes(CT)],
    ['a chunk of another layer', chunkAt(other, 0)],
  ] as const) {
    assertAuthFailure(await decrypt(key, Buffer.concat([blob, extra])), `append ${name}`);
  }
  // A multiple of the chunk size ends in an empty final chunk; appending after it fails too.
  assert.equal(chunkAt(even, 2).length, TAG_BYTES);
  assertAuthFailure(await decrypt(key, Buffer.concat([even, chunkAt(even, 2)])), 'append a second empty final chunk');
});

test('swapped layers and spliced chunks fail, even when both layers share a key', async () => {
  const key = randomBytes(32);
  const a = await encrypt(key, randomBytes(2 * CS + 5));
  const b = await encrypt(key, randomBytes(2 * CS + 5));
  const spliced = Buffer.concat([a.subarray(0, H), chunkAt(a, 0), chunkAt(b, 1), chunkAt(a, 2)]);
  assertAuthFailure(await decrypt(key, spliced), 'chunk 1 of another layer with the same key');
  const headerSwap = Buffer.concat([b.subarray(0, H), a.subarray(H)]);
  assertAuthFailure(await decrypt(key, headerSwap), "another layer's header");
  const keyB = randomBytes(32);
  const c = await encrypt(keyB, randomBytes(100));
  const r = await decrypt(key, c);
  assert.ok(r.error instanceof LayerAuthenticationFailed && /wrong key/.test(r.error.message), 'swapped layer: its key does not open the other');
});

test('the wrong key fails at the header, before any plaintext', async () => {
  const blob = await encrypt(randomBytes(32), randomBytes(2 * CS));
  const r = await decrypt(randomBytes(32), blob, 100);
  assert.ok(r.error instanceof LayerAuthenticationFailed);
  assert.equal(r.out.length, 0);
});

test('a hostile header is rejected before buffering: bad magic, version, chunk size', async () => {
  const key = randomBytes(32);
  const blob = await encrypt(key, randomBytes(10));
  const bigChunk = Buffer.from(blob);
  bigChunk.writeUInt32BE(0xffffffff, 5);
  const r = await decrypt(key, bigChunk);
  assert.ok(r.error instanceof AgentError && /out of bounds/.test(r.error.message));
  const v2 = Buffer.from(blob);
  v2[4] = 2;
  assert.match(String((await decrypt(key, v2)).error), /version 2/);
});
