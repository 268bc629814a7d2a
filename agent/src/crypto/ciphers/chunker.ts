// Gathers a byte stream into fixed-size chunks without copying: a chunk is
// the list of (sub)buffers that make it up, handed over once it is complete.

export class Chunker {
  private pieces: Buffer[] = [];
  private have = 0;
  private readonly size: number;

  constructor(size: number) {
    this.size = size;
  }

  /** Bytes held towards the next chunk. */
  get pending(): number {
    return this.have;
  }

  /** Add bytes; `onChunk` gets every chunk completed by them, in order. */
  push(buf: Buffer, onChunk: (pieces: Buffer[], length: number) => void): void {
    let rest = buf;
    while (this.have + rest.length >= this.size) {
      const need = this.size - this.have;
      this.pieces.push(need === rest.length ? rest : rest.subarray(0, need));
      rest = rest.subarray(need);
      const pieces = this.pieces;
      this.pieces = [];
      this.have = 0;
      onChunk(pieces, this.size);
    }
    if (rest.length > 0) {
      this.pieces.push(rest);
      this.have += rest.length;
    }
  }

  /** The incomplete tail (possibly empty). */
  take(): { pieces: Buffer[]; length: number } {
    const out = { pieces: this.pieces, length: this.have };
    this.pieces = [];
    this.have = 0;
    return out;
  }
}

/** The last `n` bytes of a chunk, without copying when the last piece holds them. */
export function tail(pieces: readonly Buffer[], n: number): Buffer {
  const last = pieces[pieces.length - 1];
  if (last && last.length >= n) return last.subarray(last.length - n);
  const out = Buffer.alloc(n);
  let want = n;
  for (let i = pieces.length - 1; i >= 0 && want > 0; i--) {
    const p = pieces[i]!;
    const take = Math.min(want, p.length);
    p.copy(out, want - take, p.length - take);
    want -= take;
  }
  return out;
}

/** Feed the first `length` bytes of `pieces` to `update`, collecting its outputs. */
export function feed(pieces: readonly Buffer[], length: number, update: (b: Buffer) => Buffer, outs: Buffer[]): void {
  let left = length;
  for (const p of pieces) {
    if (left <= 0) break;
    const part = p.length <= left ? p : p.subarray(0, left);
    left -= part.length;
    const out = update(part);
    if (out.length > 0) outs.push(out);
  }
}
