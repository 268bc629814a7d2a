// A layer's unpack off the pull's main thread: the tar unpack (per-file
// syscalls and the tar reader, the bulk of a pull's JavaScript) runs in a
// worker thread (unpack-worker.ts) shared by the layers being unpacked,
// while the main thread downloads, checks the blob digest, decrypts (keys
// stay on this thread), inflates (on the zlib thread pool) and checks the
// diff_id. Tar bytes go over in transfers with at most WINDOW bytes
// unacknowledged per layer, so memory stays flat in layer size; zlib's
// filled output buffers move there without a copy. Errors come back as the
// same typed AgentErrors (thread-errors.ts); a corrupted blob still wins
// over the archive error it caused (SettlingStream). A layer's unpack has
// finished writing to its directory before this returns or throws.

import { Worker } from 'node:worker_threads';
import { chunksOf } from '../chunks.ts';
import type { UnpackLog } from './layer-writer.ts';
import { DECOMPRESS_CHUNK, type LayerTar } from './stages.ts';
import { receiveError, type SentError } from './thread-errors.ts';
import { abortError, typedError } from './archive-errors.ts';
import type { UnpackLimits, UnpackStats } from './unpack.ts';

/** What a worker unpacks. */
export interface WorkerJob {
  /** The empty directory to unpack into. */
  readonly dir: string;
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
  | { t: 'ack'; id: number; bytes: number }
  | { t: 'log'; id: number; level: 'debug' | 'warn'; obj: object; msg: string }
  | { t: 'done'; id: number; stats: UnpackStats }
  | { t: 'error'; id: number; error: SentError };

/** Bytes per copied transfer: few enough messages, small enough to keep memory flat. */
const CHUNK = DECOMPRESS_CHUNK;
/**
 * Unacknowledged bytes per layer before the download waits: 2 MiB lets the
 * main thread inflate ahead while the worker's code is still cold, and
 * through its bursts (with 256 KiB chunks, 1 MiB was no less memory and
 * ~2 % slower, same run).
 */
const WINDOW = 8 * CHUNK;
/**
 * Worker threads shared by all layers being unpacked. One: on 2 cores a
 * second or third (one per layer) was slower (3-layer pull 2.25 s with one,
 * 2.36 s with two, 2.58 s with three, same run: the zlib pool and the main
 * thread fill the other core) and each isolate costs its own heap and the
 * buffers awaiting its GC, ~30 MB of peak RSS per thread.
 */
const MAX_THREADS = 1;

// The guest bundle (scripts/bundle.ts) defines this as the worker's own
// bundled source; from the TypeScript sources it is undefined.
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

/**
 * Unpack the tar stream `tar` (see layerStream) in a worker thread. With
 * `owned`, its chunks are slices of buffers that nothing else holds or
 * writes once their last byte has been read (zlib's output): such a buffer,
 * read whole from its start, moves to the worker without a copy. Other
 * bytes are copied into CHUNK-sized transfers.
 */
export async function unpackInWorker(tar: LayerTar, job: WorkerJob, opts: { signal: AbortSignal; log: UnpackLog; owned?: boolean }): Promise<UnpackStats> {
  const { signal, log } = opts;
  let final: { stats: UnpackStats } | { error: Error } | undefined;
  let finished!: () => void;
  const ended = new Promise<void>((resolve) => (finished = resolve));
  let wake: (() => void) | undefined;
  let inflight = 0;
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

  const send = (data: ArrayBuffer, length: number): void => {
    inflight += length;
    post({ t: 'chunk', id, data, length }, [data]);
  };
  const window = async (): Promise<void> => {
    while (inflight >= WINDOW && !final) await new Promise<void>((resolve) => (wake = resolve));
    wake = undefined;
  };
  // Copied bytes not yet sent.
  let cur: Buffer | undefined;
  let fill = 0;
  const sendCopied = (): void => {
    if (fill > 0) send(cur!.buffer as ArrayBuffer, fill);
    cur = undefined;
    fill = 0;
  };
  const copy = async (c: Buffer): Promise<void> => {
    for (let off = 0; off < c.length && !final; ) {
      cur ??= Buffer.from(new ArrayBuffer(CHUNK));
      const n = c.copy(cur, fill, off);
      off += n;
      fill += n;
      if (fill < CHUNK) continue;
      sendCopied();
      await window();
    }
  };
  // Owned chunks read so far of one buffer, contiguous from its start.
  let run: Buffer[] = [];
  let runEnd = 0;
  const copyRun = async (): Promise<void> => {
    const parts = run;
    run = [];
    runEnd = 0;
    for (const part of parts) await copy(part);
  };

  let sendError: unknown;
  try {
    for await (const c of chunksOf(tar)) {
      if (final) break;
      if (!opts.owned) {
        await copy(c);
        continue;
      }
      if (run.length > 0 && (c.buffer !== run[0]!.buffer || c.byteOffset !== runEnd)) await copyRun();
      if (run.length === 0 && c.byteOffset !== 0) {
        await copy(c);
        continue;
      }
      run.push(c);
      runEnd += c.length;
      if (runEnd < c.buffer.byteLength) continue;
      // Every byte of the buffer has been read: it is the stream's no more.
      sendCopied();
      send(c.buffer as ArrayBuffer, runEnd);
      run = [];
      runEnd = 0;
      await window();
    }
    if (!final) {
      await copyRun();
      sendCopied();
      post({ t: 'end', id });
    }
  } catch (err) {
    sendError = typedError(err);
    post({ t: 'abort', id });
  }
  await ended;
  signal.removeEventListener('abort', onAbort);
  release(thread, id);
  if (signal.aborted) throw abortError(signal);
  if (sendError !== undefined) throw await tar.settle(sendError as Error);
  const f = final!;
  if ('error' in f) throw await tar.settle(f.error);
  return f.stats;
}
