// A layer's failures as typed AgentErrors, for the unpacker (worker thread)
// and for the main thread's inflate and digest stages alike, without either
// loading the other's code.

import { AgentError, Cancelled } from '../errors.ts';
import { MalformedArchive, StoreError, UnsafeArchive } from './errors.ts';

/** A filesystem failure as a typed error: ENAMETOOLONG and friends are the archive's fault, the rest the store's. */
export function fsError(err: unknown, entry?: string): Error {
  const code = (err as NodeJS.ErrnoException).code;
  if (code === 'ENAMETOOLONG' || code === 'ELOOP' || code === 'ENOTDIR') return new UnsafeArchive(`cannot be created (${code})`, entry);
  return new StoreError('write failed', { cause: err });
}

/** Any failure as a typed error: ours pass through, stream and zlib errors become MalformedArchive. */
export function typedError(err: unknown, entry?: string): Error {
  if (err instanceof AgentError) return err;
  const e = err as NodeJS.ErrnoException;
  if (typeof e?.code === 'string' && (e.code.startsWith('Z_') || e.code.startsWith('ERR_ZSTD') || e.code === 'ERR_BUFFER_TOO_LARGE')) {
    return new MalformedArchive(`layer does not decompress (${e.code})`, { cause: err });
  }
  if (typeof e?.errno === 'number' && typeof e.syscall === 'string') return fsError(err, entry);
  if (err instanceof Error && !e.code && /tar|header|end of data/i.test(err.message)) return new MalformedArchive(err.message.slice(0, 200), { cause: err });
  return err instanceof Error ? err : new Error(String(err));
}

/** An AbortSignal's reason as the agent's error. */
export function abortError(signal: AbortSignal): Error {
  return signal.reason instanceof AgentError ? signal.reason : new Cancelled('layer unpack cancelled');
}
