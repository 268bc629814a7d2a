// A layer's CPU work off the pull's main thread: decompress → diff_id check
// → tar unpack run in a worker thread (unpack-worker.ts) shared by the
// layers being unpacked, while the main thread only downloads, checks the
// blob digest and decrypts (keys stay on this thread). Chunks go over in
// CHUNK-sized transfers with at most WINDOW bytes unacknowledged per layer,
// and their memory comes back for reuse, so memory stays flat in layer size.
// Errors come back as the same typed AgentErrors (thread-errors.ts); a
// corrupted blob still wins over the archive error it caused
// (SettlingStream). A layer's unpack has finished writing to its directory
// before this returns or throws.

import { Worker } from 'node:worker_threads';
import type { UnpackLog } from './layer-writer.ts';
import { abortError, type Compression, type DecompressLimits, type SettlingStream } from './stages.ts';
import { receiveError, type SentError } from './thread-errors.ts';
import type { UnpackLimits, UnpackStats } from './unpack.ts';

/** What a worker unpacks. */
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
export type ToWorker =
  | { t: 'start'; id: number; job: WorkerJob }
  | { t: 'chunk'; id: number; data: ArrayBuffer; length: number }
  | { t: 'end'; id: number }
  | { t: 'abort'; id: number };

export type ToMain =
  /** `data`: a chunk's memory handed back for reuse. */
  | { t: 'ack'; id: number; bytes: number; data?: ArrayBuffer }
  | { t: 'log'; id: number; level: 'debug' | 'warn'; obj: object; msg: string }
  | { t: 'done'; id: number; stats: UnpackStats }
  | { t: 'error'; id: number; error: SentError };

/** Bytes per transfer: few enough messages, small enough to keep memory flat. */
const CHUNK = 256 * 1024;
/** Unacknowledged bytes per layer before the download waits. */
const WINDOW = 2 * CHUNK;
/** Chunk buffers kept for reuse (the worker hands them back once zlib has read them). */
const SPARE = WINDOW / CHUNK + 1;
/**
 * Worker threads shared by all layers being unpacked. One: on 2 cores a
 * second or third (one per layer) was no faster (the zlib pool and the main
 * thread fill the other core) and each isolate costs its own heap and zlib
 * buffers awaiting its GC, ~30-50 MB of peak RSS per thread on a 3-layer pull.
 */
const MAX_THREADS = 1;

// The guest's single-file bundle (scripts/bundle.ts) defines this as the
// worker's own bundled source; from the TypeScript sources it is undefined.
declare const __TEE_AGENT_UNPACK_WORKER__: string | undefined;

interface JobHandler {
  message(m: ToMain): void;
  fail(err: Error): void;
}

interface Thread {
  readonly worker: Worker;
  readonly jobs: Map<number, JobHandler>;
}

const threads: Thread[] = [];
let nextId = 1;

function startThread(): Thread {
  const worker =
    typeof __TEE_AGENT_UNPACK_WORKER__ === 'string'
      ? new Worker(__TEE_AGENT_UNPACK_WORKER__, { eval: true })
      : new Worker(new URL('./unpack-worker.ts', import.meta.url));
  const t: Thread = { worker, jobs: new Map() };
  const failAll = (err: Error): void => {
    const i = threads.indexOf(t);
    if (i >= 0) threads.splice(i, 1);
    for (const j of t.jobs.values()) j.fail(err);
    t.jobs.clear();
  };
  worker.on('message', (m: ToMain) => t.jobs.get(m.id)?.message(m));
  worker.on('error', failAll);
  worker.on('exit', (code) => failAll(new Error(`unpack worker exited with code ${code}`)));
  threads.push(t);
  return t;
}

/** A thread for one more job: an idle one, a new one while there are fewer than MAX_THREADS, else the least busy. */
function acquire(handler: JobHandler): { thread: Thread; id: number } {
  const thread =
    threads.find((t) => t.jobs.size === 0) ?? (threads.length < MAX_THREADS ? startThread() : threads.reduce((a, b) => (b.jobs.size < a.jobs.size ? b : a)));
  const id = nextId++;
  thread.jobs.set(id, handler);
  return { thread, id };
}

function release(thread: Thread, id: number): void {
  thread.jobs.delete(id);
  if (thread.jobs.size > 0) return;
  // An idle daemon keeps no thread.
  const i = threads.indexOf(thread);
  if (i >= 0) threads.splice(i, 1);
  void thread.worker.terminate();
}

/** Unpack the plaintext blob `blob` (see blobStream) in a worker thread. */
export async function unpackInWorker(blob: SettlingStream, job: WorkerJob, opts: { signal: AbortSignal; log: UnpackLog }): Promise<UnpackStats> {
  const { signal, log } = opts;
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
  const { thread, id } = acquire({
    message(m) {
      if (m.t === 'ack') {
        inflight -= m.bytes;
        if (m.data && spare.length < SPARE) spare.push(m.data);
        wake?.();
      } else if (m.t === 'log') log[m.level](m.obj, m.msg);
      else if (m.t === 'done') settle({ stats: m.stats });
      else if (m.t === 'error') settle({ error: receiveError(m.error) });
    },
    fail: (error) => settle({ error }),
  });
  const post = (m: ToWorker, transfer?: ArrayBuffer[]): void => {
    if (!final) thread.worker.postMessage(m, transfer);
  };
  post({ t: 'start', id, job });
  const onAbort = (): void => post({ t: 'abort', id });
  if (signal.aborted) onAbort();
  else signal.addEventListener('abort', onAbort, { once: true });

  let sendError: unknown;
  try {
    let cur: Buffer | undefined;
    let fill = 0;
    const flush = (): void => {
      const data = cur!.buffer as ArrayBuffer;
      inflight += fill;
      post({ t: 'chunk', id, data, length: fill }, [data]);
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
    if (fill > 0) flush();
    post({ t: 'end', id });
  } catch (err) {
    sendError = err;
    post({ t: 'abort', id });
  }
  await ended;
  signal.removeEventListener('abort', onAbort);
  release(thread, id);
  if (signal.aborted) throw abortError(signal);
  if (sendError !== undefined) throw sendError;
  const f = final!;
  if ('error' in f) throw await blob.settle(f.error);
  return f.stats;
}
