// The unpack worker thread: one layer's decompress → diff_id check → tar
// unpack into its staging directory, off the pull's main thread. The blob
// arrives from unpack-thread.ts already digest-checked (and decrypted) as
// transferred chunks; each is acknowledged once the pipeline has taken it,
// which bounds what is in flight. Keys never come here.

import { pipeline } from 'node:stream';
import { parentPort, workerData } from 'node:worker_threads';
import { Cancelled } from '../errors.ts';
import { decompress, verifyDigest } from './stages.ts';
import { sendError } from './thread-errors.ts';
import type { ToMain, ToWorker, WorkerJob } from './unpack-thread.ts';
import { unpackLayer } from './unpack.ts';

const port = parentPort!;
const job = workerData as WorkerJob;
const post = (m: ToMain, transfer?: ArrayBuffer[]): void => port.postMessage(m, transfer);

/** zlib inflates a whole input chunk before it looks at backpressure: small pieces keep its output bursts small. */
const PIECE = 64 * 1024;
const inflate = decompress(job.compression, job.decompressLimits);
const tar = pipeline(inflate, verifyDigest(job.diffId), () => {});
// zlib is done with an input chunk once its write has called back, so the chunk's memory can go back to
// the main thread for the next one; uncompressed chunks flow on into the unpacker and stay here.
const recycle = job.compression !== 'none';
const abort = new AbortController();

port.on('message', (m: ToWorker) => {
  if (m.t === 'chunk') {
    if (inflate.destroyed || inflate.writableEnded) return;
    const buf = Buffer.from(m.data, 0, m.length);
    const done = (err?: Error | null): void => {
      if (err) return;
      if (recycle) post({ t: 'ack', bytes: m.length, data: m.data }, [m.data]);
      else post({ t: 'ack', bytes: m.length });
    };
    for (let off = 0; off < buf.length; off += PIECE) inflate.write(buf.subarray(off, off + PIECE), off + PIECE >= buf.length ? done : undefined);
  } else if (m.t === 'end') inflate.end();
  else abort.abort(new Cancelled('layer unpack cancelled'));
});

const log = {
  debug: (obj: object, msg?: string): void => post({ t: 'log', level: 'debug', obj, msg: msg ?? '' }),
  warn: (obj: object, msg?: string): void => post({ t: 'log', level: 'warn', obj, msg: msg ?? '' }),
};

unpackLayer(tar, job.dir, { limits: job.unpackLimits, log, signal: abort.signal, ...(job.asRoot !== undefined ? { asRoot: job.asRoot } : {}) }).then(
  (stats) => post({ t: 'done', stats }),
  (err: unknown) => post({ t: 'error', error: sendError(err) }),
);
