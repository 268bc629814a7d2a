import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { PassThrough, Readable } from 'node:stream';
import { ChunkQueue, chunksOf } from '../agent/src/chunks.ts';

test('chunksOf hands out the very chunks pushed, in order, where the stream iterator joins them', async () => {
  const pushed = Array.from({ length: 50 }, (_, i) => Buffer.alloc(1000 + i, i));
  const mk = (): PassThrough => {
    const s = new PassThrough();
    for (const c of pushed) s.write(c);
    s.end();
    return s;
  };
  const got: Buffer[] = [];
  for await (const c of chunksOf(mk())) got.push(c);
  assert.equal(got.length, pushed.length);
  got.forEach((c, i) => assert.equal(c.buffer, pushed[i]!.buffer, `chunk ${i} was copied`));
  // Node's own iterator, reading behind the writer, joins what is buffered: the copies this avoids.
  let joined = 0;
  for await (const c of mk()) {
    assert.ok(c.length >= 1000);
    joined++;
  }
  assert.ok(joined < pushed.length);
});

test('chunksOf throws the stream error after the chunks before it, and a premature close', async () => {
  const s = new PassThrough();
  s.write(Buffer.from('a'));
  s.write(Buffer.from('b'));
  setImmediate(() => s.destroy(new Error('reset')));
  const got: string[] = [];
  await assert.rejects(
    (async () => {
      for await (const c of chunksOf(s)) got.push(c.toString());
    })(),
    /reset/,
  );
  assert.deepEqual(got, ['a', 'b']);
  const cut = new PassThrough();
  setImmediate(() => cut.destroy());
  await assert.rejects(
    (async () => {
      for await (const c of chunksOf(cut)) assert.fail(`unexpected chunk ${c.length}`);
    })(),
    { code: 'ERR_STREAM_PREMATURE_CLOSE' },
  );
});

test('chunksOf pauses a fast stream behind a slow consumer, and leaving early destroys it', async () => {
  let produced = 0;
  const fast = new Readable({
    read() {
      produced++;
      this.push(Buffer.alloc(16 * 1024));
    },
  });
  let consumed = 0;
  for await (const c of chunksOf(fast)) {
    assert.equal(c.length, 16 * 1024);
    consumed++;
    await sleep(2);
    if (consumed === 20) break;
  }
  // A few queued chunks plus the stream's own high-water mark, not everything read() could make.
  assert.ok(produced - consumed < 16, `${produced} produced for ${consumed} consumed`);
  assert.equal(fast.destroyed, true);
});

test('ChunkQueue: order, taken as each chunk is taken, queued chunks before the end or the error, destroy drops', async () => {
  const taken: [string, number][] = [];
  const q = new ChunkQueue((c, queued) => taken.push([c.toString(), queued]));
  const it = q[Symbol.asyncIterator]();
  const first = it.next(); // waiting: the next push goes straight to it
  q.push(Buffer.from('a'));
  assert.equal((await first).value!.toString(), 'a');
  q.push(Buffer.from('b'));
  q.push(Buffer.from('c'));
  assert.equal(q.length, 2);
  q.end(new Error('cut'));
  q.push(Buffer.from('late')); // ignored after the end
  assert.equal((await it.next()).value!.toString(), 'b');
  assert.equal((await it.next()).value!.toString(), 'c');
  await assert.rejects(it.next(), /cut/);
  assert.deepEqual(taken, [['a', 0], ['b', 1], ['c', 0]]);

  const d = new ChunkQueue();
  d.push(Buffer.from('x'));
  d.destroy();
  const got: Buffer[] = [];
  for await (const c of d) got.push(c);
  assert.equal(got.length, 0);
});
