// The unpack worker thread: layers' tar unpack into their staging
// directories, off the pull's main thread, several layers at once on one
// event loop. Tar bytes arrive from unpack-thread.ts already digest-checked,
// decrypted, decompressed and diff_id-checked as they flow, as transferred
// chunks; each is acknowledged once the unpacker has taken it, which bounds
// what is in flight. Keys never come here.

import { parentPort } from 'node:worker_threads';
import { ChunkQueue } from '../chunks.ts';
import { Cancelled } from '../errors.ts';
import { exposedGc } from '../gc.ts';
import { sendError } from './thread-errors.ts';
import type { ToMain, ToWorker, WorkerJob } from './unpack-thread.ts';
import { unpackLayer } from './unpack.ts';

const port = parentPort!;
const post = (m: ToMain): void => port.postMessage(m);

interface Running {
  readonly tar: ChunkQueue;
  readonly abort: AbortController;
}

const jobs = new Map<number, Running>();

/**
 * A minor GC every GC_STEP bytes received. While it writes big files this
 * thread allocates almost nothing on its heap, so V8 scavenges rarely and
 * lets tens of MB of finished chunks wait for it (2 GiB layer peak RSS
 * 133-134 MB without, 115-118 MB with; a scavenge costs ~0.05 ms).
 */
const GC_STEP = 8 * 1024 * 1024;
const gc = exposedGc();
let received = 0;

function start(id: number, job: WorkerJob): void {
  // The layer's chunks, acknowledged as the unpacker takes each: a queue,
  // not a Node stream, which would join queued chunks with a copy and cost a
  // layer of stream calls per chunk. A chunk's memory stays here: the tar
  // reader may keep slices of it for later entries.
  const tar = new ChunkQueue((chunk) => post({ t: 'ack', id, bytes: chunk.length }));
  const abort = new AbortController();
  jobs.set(id, { tar, abort });
  const log = {
    debug: (obj: object, msg: string): void => post({ t: 'log', id, level: 'debug', obj, msg }),
    warn: (obj: object, msg: string): void => post({ t: 'log', id, level: 'warn', obj, msg }),
  };
  unpackLayer(tar, job.dir, { limits: job.unpackLimits, log, signal: abort.signal, ...(job.asRoot !== undefined ? { asRoot: job.asRoot } : {}) })
    .then(
      (stats): ToMain => ({ t: 'done', id, stats }),
      (err: unknown): ToMain => ({ t: 'error', id, error: sendError(err) }),
    )
    .then((m) => {
      jobs.delete(id);
      post(m);
    });
}

port.on('message', (m: ToWorker) => {
  if (m.t === 'start') return start(m.id, m.job);
  const r = jobs.get(m.id);
  if (!r) return;
  if (m.t === 'chunk') {
    received += m.length;
    if (received >= GC_STEP) {
      received = 0;
      gc?.({ type: 'minor' });
    }
    r.tar.push(Buffer.from(m.data, 0, m.length));
  } else if (m.t === 'end') r.tar.end();
  else r.abort.abort(new Cancelled('layer unpack cancelled'));
});
