// A layer's CPU work off the pull's main thread: decompress → diff_id check
// → tar unpack run in a worker thread (unpack-worker.ts), one per layer, so
// layers unpack in parallel on several cores while the main thread only
// downloads, checks the blob digest and decrypts (keys stay on this thread).
// Chunks go over in ~1 MiB transfers with at most WINDOW bytes unacknowledged,
// so memory stays flat in layer size. Errors come back as the same typed
// AgentErrors (thread-errors.ts); a corrupted blob still wins over the archive
// error it caused (SettlingStream). The worker has stopped writing to the
// directory before this returns or throws.

import { Worker } from 'node:worker_threads';
import type { UnpackLog } from './layer-writer.ts';
import { abortError, type Compression, type DecompressLimits, type SettlingStream } from './stages.ts';
import { receiveError, type SentError } from './thread-errors.ts';
import type { UnpackLimits, UnpackStats } from './unpack.ts';

/** What a worker unpacks: its workerData. */
export interface WorkerJob {
  readonly compression: Compression;
  readonly diffId: string;
  /** The empty directory to unpack into. */
  readonly dir: string;
  readonly decompressLimits: DecompressLimits;
  readonly unpackLimits: UnpackLimits;
  readonly asRoot?: boolean;
}

/** A chunk is the first `length` bytes of `data`. */
export type ToWorker = { t: 'chunk'; data: ArrayBuffer; length: number } | { t: 'end' } | { t: 'abort' };

export type ToMain =
  /** `data`: a chunk's memory handed back for reuse. */
  | { t: 'ack'; bytes: number; data?: ArrayBuffer }
  | { t: 'log'; level: 'debug' | 'warn'; obj: object; msg: string }
  | { t: 'done'; stats: UnpackStats }
  | { t: 'error'; error: SentError };

/** Bytes per transfer: few enough messages, small enough to keep memory flat. */
const CHUNK = 1024 * 1024;
/** Unacknowledged bytes per layer before the download waits. */
const WINDOW = 4 * CHUNK;
/** Chunk buffers kept for reuse (the worker hands them back once zlib has read them). */
const SPARE = WINDOW / CHUNK + 1;

// The guest's single-file bundle (scripts/bundle.ts) defines this as the
// worker's own bundled source; from the TypeScript sources it is undefined.
declare const __TEE_AGENT_UNPACK_WORKER__: string | undefined;

function startWorker(job: WorkerJob): Worker {
  if (typeof __TEE_AGENT_UNPACK_WORKER__ === 'string') return new Worker(__TEE_AGENT_UNPACK_WORKER__, { eval: true, workerData: job });
  return new Worker(new URL('./unpack-worker.ts', import.meta.url), { workerData: job });
}

/** Unpack the plaintext blob `blob` (see blobStream) in a worker thread. */
export async function unpackInWorker(blob: SettlingStream, job: WorkerJob, opts: { signal: AbortSignal; log: UnpackLog }): Promise<UnpackStats> {
  const { signal, log } = opts;
  const worker = startWorker(job);
  let final: { stats: UnpackStats } | { error: Error } | undefined;
  let finished!: () => void;
  const ended = new Promise<void>((resolve) => (finished = resolve));
  let wake: (() => void) | undefined;
  let inflight = 0;
  const spare: ArrayBuffer[] = [];
  const settle = (f: NonNullable<typeof final>): void => {
    if (final) return;
    final = f;
    finished();
    wake?.();
  };
  const post = (m: ToWorker, transfer?: ArrayBuffer[]): void => worker.postMessage(m, transfer);
  worker.on('message', (m: ToMain) => {
    if (m.t === 'ack') {
      inflight -= m.bytes;
      if (m.data && spare.length < SPARE) spare.push(m.data);
      wake?.();
    } else if (m.t === 'log') log[m.level](m.obj, m.msg);
    else if (m.t === 'done') settle({ stats: m.stats });
    else settle({ error: receiveError(m.error) });
  });
  worker.on('error', (err) => settle({ error: err }));
  worker.on('exit', (code) => settle({ error: new Error(`unpack worker exited with code ${code}`) }));
  const onAbort = (): void => post({ t: 'abort' });
  if (signal.aborted) onAbort();
  else signal.addEventListener('abort', onAbort, { once: true });

  let sendError: unknown;
  try {
    let cur: Buffer | undefined;
    let fill = 0;
    const flush = (): void => {
      const data = cur!.buffer as ArrayBuffer;
      inflight += fill;
      post({ t: 'chunk', data, length: fill }, [data]);
      cur = undefined;
      fill = 0;
    };
    for await (const chunk of blob) {
      if (final) break;
      const c = chunk as Buffer;
      for (let off = 0; off < c.length; ) {
        cur ??= Buffer.from(spare.pop() ?? new ArrayBuffer(CHUNK));
        const n = c.copy(cur, fill, off);
        off += n;
        fill += n;
        if (fill < CHUNK) continue;
        flush();
        while (inflight >= WINDOW && !final) await new Promise<void>((resolve) => (wake = resolve));
        wake = undefined;
        if (final) break;
      }
    }
    if (!final) {
      if (fill > 0) flush();
      post({ t: 'end' });
    }
  } catch (err) {
    sendError = err;
    post({ t: 'abort' });
  }
  await ended;
  signal.removeEventListener('abort', onAbort);
  await worker.terminate();
  if (signal.aborted) throw abortError(signal);
  if (sendError !== undefined) throw sendError;
  const f = final!;
  if ('error' in f) throw await blob.settle(f.error);
  return f.stats;
}
