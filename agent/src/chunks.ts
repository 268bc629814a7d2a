// A readable stream's chunks as an async iterable, one chunk at a time.
// Readable's own iterator reads in paused mode, where read() joins every
// buffered chunk into a new buffer: a copy of most of a layer when the
// consumer runs behind (registry bodies), and the end of zero-copy transfers
// for zlib's output (unpack-thread.ts). In flowing mode a stream hands out
// its chunks as they are; this queues a few and pauses the stream beyond.

import { finished, type Readable } from 'node:stream';

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
      const queue: Buffer[] = [];
      let waiting: { resolve: (r: IteratorResult<Buffer, undefined>) => void; reject: (err: Error) => void } | undefined;
      let ended = false;
      let failure: Error | undefined;
      const settle = (): void => {
        const w = waiting;
        if (!w || queue.length > 0) return;
        waiting = undefined;
        if (failure) w.reject(failure);
        else w.resolve({ value: undefined, done: true });
      };
      stream.on('data', (chunk: Buffer) => {
        const w = waiting;
        if (w) {
          waiting = undefined;
          w.resolve({ value: chunk, done: false });
          return;
        }
        queue.push(chunk);
        if (queue.length >= QUEUE) stream.pause();
      });
      finished(stream, (err) => {
        ended = true;
        failure = err ?? undefined;
        settle();
      });
      return {
        next() {
          const chunk = queue.shift();
          if (chunk) {
            if (queue.length === 0 && stream.isPaused() && !ended) stream.resume();
            return Promise.resolve({ value: chunk, done: false });
          }
          if (failure) return Promise.reject(failure);
          if (ended) return Promise.resolve({ value: undefined, done: true });
          return new Promise((resolve, reject) => (waiting = { resolve, reject }));
        },
        return() {
          if (!ended) stream.destroy();
          return Promise.resolve({ value: undefined, done: true });
        },
      };
    },
  };
}
