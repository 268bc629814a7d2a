// Run bytes through a Transform in pieces and collect what comes out, also
// when it fails: tests look at what was released before an error.

import { randomInt } from 'node:crypto';
import { Readable, Writable, type Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';

export interface RunResult {
  readonly out: Buffer;
  readonly error?: unknown;
  /** Whether 'end' was emitted (it must not be after an authentication failure). */
  readonly ended: boolean;
}

/** Split `input` into pieces of random sizes in [1, maxPiece] (all of it when maxPiece is 0). */
export function pieces(input: Buffer, maxPiece: number): Buffer[] {
  if (maxPiece <= 0) return [input];
  const out: Buffer[] = [];
  for (let o = 0; o < input.length; ) {
    const n = Math.min(input.length - o, randomInt(1, maxPiece + 1));
    out.push(input.subarray(o, o + n));
    o += n;
  }
  return out;
}

export async function run(stream: Transform, input: Buffer, maxPiece = 0): Promise<RunResult> {
  const got: Buffer[] = [];
  let ended = false;
  stream.on('end', () => (ended = true));
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      got.push(chunk);
      done();
    },
  });
  try {
    await pipeline(Readable.from(pieces(input, maxPiece)), stream, sink);
    return { out: Buffer.concat(got), ended };
  } catch (error) {
    return { out: Buffer.concat(got), error, ended };
  }
}

export async function runOk(stream: Transform, input: Buffer, maxPiece = 0): Promise<Buffer> {
  const r = await run(stream, input, maxPiece);
  if (r.error) throw r.error;
  return r.out;
}
