// Chunks handed over one at a time, as an async iterable, without Node's
// stream buffering. Readable's own iterator reads in paused mode, where
// read() joins every buffered chunk into a new buffer: a copy of most of a
// layer when the consumer runs behind (registry bodies), and the end of
// zero-copy transfers for zlib's output (unpack-thread.ts). ChunkQueue is
// the queue; chunksOf fills one from a stream in flowing mode, where a
// stream hands out its chunks as they are, and the unpack worker fills one
// from the main thread's messages.

import { finished, type Readable } from 'node:stream';

type Waiting = { resolve: (r: IteratorResult<Buffer, undefined>) => void; reject: (err: Error) => void };

/**
 * Chunks in arrival order for one for-await consumer: a chunk pushed while
 * the consumer waits goes straight to it. After end(), the queued chunks
 * come out first, then the end or end(err)'s error. `taken` runs as the
 * consumer takes each chunk, with the number still queued.
 */
export class ChunkQueue implements AsyncIterable<Buffer> {
  private readonly chunks: Buffer[] = [];
  private readonly taken: (chunk: Buffer, queued: number) => void;
  private waiting: Waiting | undefined;
  private ended = false;
  private failure: Error | undefined;

  constructor(taken: (chunk: Buffer, queued: number) => void = () => {}) {
    this.taken = taken;
  }

  /** Chunks queued, not yet taken. */
  get length(): number {
    return this.chunks.length;
  }

  push(chunk: Buffer): void {
    if (this.ended) return;
    const waiting = this.waiting;
    if (!waiting) {
      this.chunks.push(chunk);
      return;
    }
    this.waiting = undefined;
    this.taken(chunk, 0);
    waiting.resolve({ value: chunk, done: false });
  }

  end(err?: Error): void {
    if (this.ended) return;
    this.ended = true;
    this.failure = err;
    const waiting = this.waiting;
    if (!waiting || this.chunks.length > 0) return;
    this.waiting = undefined;
    if (err) waiting.reject(err);
    else waiting.resolve({ value: undefined, done: true });
  }

  /** Drop what is queued and end. */
  destroy(): void {
    this.chunks.length = 0;
    this.end();
  }

  next(): Promise<IteratorResult<Buffer, undefined>> {
    const chunk = this.chunks.shift();
    if (chunk) {
      this.taken(chunk, this.chunks.length);
      return Promise.resolve({ value: chunk, done: false });
    }
    if (this.failure) return Promise.reject(this.failure);
    if (this.ended) return Promise.resolve({ value: undefined, done: true });
    return new Promise((resolve, reject) => (this.waiting = { resolve, reject }));
  }

  [Symbol.asyncIterator](): AsyncIterator<Buffer, undefined> {
    return { next: () => this.next() };
  }
}

/** Chunks queued before the stream is paused. */
const QUEUE = 4;

/**
 * Each chunk `stream` emits, in order; the stream's error (or a premature
 * close) is thrown after the chunks before it. Leaving the loop early
 * destroys the stream.
 */
export function chunksOf(stream: Readable): AsyncIterable<Buffer> {
  return {
    [Symbol.asyncIterator](): AsyncIterator<Buffer, undefined> {
      let ended = false;
      const queue = new ChunkQueue((_chunk, queued) => {
        if (queued === 0 && stream.isPaused() && !ended) stream.resume();
      });
      stream.on('data', (chunk: Buffer) => {
        queue.push(chunk);
        if (queue.length >= QUEUE) stream.pause();
      });
      finished(stream, (err) => {
        ended = true;
        queue.end(err ?? undefined);
      });
      return {
        next: () => queue.next(),
        return() {
          if (!ended) stream.destroy();
          return Promise.resolve({ value: undefined, done: true });
        },
      };
    },
  };
}
