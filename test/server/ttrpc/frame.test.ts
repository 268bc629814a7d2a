import { test } from 'node:test';
import assert from 'node:assert/strict';
import { encodeFrame, FrameReader, FrameType, HEADER_LENGTH } from '../../../agent/src/server/ttrpc/frame.ts';

test('header layout is u32 BE length, u32 BE stream id, u8 type, u8 flags', () => {
  const f = encodeFrame(0x01020305, FrameType.Response, Buffer.from('abc'), 0x4);
  assert.deepEqual([...f.subarray(0, HEADER_LENGTH)], [0, 0, 0, 3, 1, 2, 3, 5, 2, 4]);
  assert.equal(f.subarray(HEADER_LENGTH).toString(), 'abc');
});

test('frames split across arbitrary chunk boundaries are reassembled', () => {
  const frames = [encodeFrame(1, FrameType.Request, Buffer.alloc(0)), encodeFrame(3, FrameType.Request, Buffer.from('hello')), encodeFrame(5, FrameType.Request, Buffer.alloc(70000, 7))];
  const all = Buffer.concat(frames);
  for (const size of [1, 3, 10, 11, 4096, all.length]) {
    const r = new FrameReader();
    const got = [];
    for (let i = 0; i < all.length; i += size) for (const ev of r.push(all.subarray(i, i + size))) got.push(ev);
    assert.deepEqual(
      got.map((e) => (e.kind === 'frame' ? [e.header.streamId, e.data.length] : ['oversized'])),
      [
        [1, 0],
        [3, 5],
        [5, 70000],
      ],
      `chunk size ${size}`,
    );
    assert.equal(r.pending, 0);
  }
});

test('an oversized frame is reported once and its data skipped without buffering', () => {
  const r = new FrameReader(16);
  const big = encodeFrame(7, FrameType.Request, Buffer.alloc(1000, 1));
  const next = encodeFrame(9, FrameType.Request, Buffer.from('ok'));
  const events = [];
  for (let i = 0; i < big.length; i += 100) {
    for (const ev of r.push(big.subarray(i, i + 100))) events.push(ev);
    assert.ok(r.pending < 120, 'skipped data is not held');
  }
  for (const ev of r.push(next)) events.push(ev);
  assert.equal(events.length, 2);
  assert.equal(events[0]!.kind, 'oversized');
  assert.equal(events[0]!.header.length, 1000);
  assert.equal(events[1]!.kind, 'frame');
  assert.equal(events[1]!.kind === 'frame' && events[1]!.data.toString(), 'ok');
});
