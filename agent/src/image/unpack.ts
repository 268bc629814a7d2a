// unpackLayer: a layer's tar stream into an empty directory. tar-stream
// splits entries; TarGuard reads the same headers strictly and must agree on
// every one; LayerWriter does every filesystem write. The input is read to
// its end, so a digest stage before it has checked the whole layer before
// this resolves. On failure the directory is left for the caller to remove.

import tarStream from 'tar-stream';
import { abortError, typedError } from './archive-errors.ts';
import { LayerWriter, type UnpackLog, type UnpackStats } from './layer-writer.ts';
import type { LayerTar } from './stages.ts';
import { TarGuard } from './tar-guard.ts';

export type { UnpackLog, UnpackStats } from './layer-writer.ts';

export interface UnpackLimits {
  /** Tar entries per layer. */
  maxEntries: number;
  /** Bytes of one regular file. */
  maxFileSize: number;
  /** Bytes of all regular files of the layer together. */
  maxTotalBytes: number;
}

export interface UnpackOptions {
  limits: UnpackLimits;
  log: UnpackLog;
  signal?: AbortSignal;
  /** Create device nodes and chown; default: running as uid 0. */
  asRoot?: boolean;
}

/** A layer's tar bytes: a stream, or the unpack worker's ChunkQueue. */
export type TarSource = AsyncIterable<Buffer> & { destroy(): void };

export async function unpackLayer(tar: TarSource, dir: string, opts: UnpackOptions): Promise<UnpackStats> {
  const { limits, log, signal } = opts;
  const guard = new TarGuard({ maxEntries: limits.maxEntries, maxFileSize: limits.maxFileSize });
  const writer = new LayerWriter(dir, { maxTotalBytes: limits.maxTotalBytes, asRoot: opts.asRoot ?? process.getuid?.() === 0, log });
  const extract = tarStream.extract();
  let failed: Error | undefined;
  let current: string | undefined;
  const fail = (err: unknown): void => {
    if (failed) return;
    failed = typedError(err, current);
    extract.destroy(failed);
    tar.destroy();
  };

  extract.on('entry', (header, stream, next) => {
    stream.on('error', () => {}); // destroyed with the failure, which fail() already holds
    if (failed) return;
    try {
      const e = guard.take(header as unknown as Parameters<TarGuard['take']>[0]);
      current = e.name;
      if (!writer.apply(e)) {
        if (header.size && header.size > 0) {
          stream.on('end', () => next());
          stream.resume();
        } else next();
        return;
      }
      stream.on('data', (chunk: unknown) => {
        if (failed) return;
        try {
          writer.write(chunk as Buffer);
        } catch (err) {
          fail(err);
        }
      });
      stream.on('end', () => {
        if (failed) return;
        try {
          writer.endFile();
          next();
        } catch (err) {
          fail(err);
        }
      });
    } catch (err) {
      fail(err);
    }
  });
  extract.on('error', (err: unknown) => fail(err));

  const onAbort = (): void => fail(abortError(signal!));
  if (signal?.aborted) onAbort();
  signal?.addEventListener('abort', onAbort, { once: true });
  try {
    for await (const chunk of tar) {
      if (failed) break;
      current = undefined;
      guard.feed(chunk);
      if (!extract.write(chunk)) await settled(extract, 'drain');
      if (failed) break;
    }
    if (!failed) {
      guard.end();
      extract.end(undefined);
      await settled(extract, 'finish');
    }
  } catch (err) {
    fail(err);
  } finally {
    signal?.removeEventListener('abort', onAbort);
    writer.abort();
  }
  if (failed) throw isLayerTar(tar) ? await tar.settle(failed) : failed;
  try {
    await writer.finish();
  } catch (err) {
    throw typedError(err);
  }
  log.debug({ dir, ...writer.stats }, 'layer unpacked');
  return writer.stats;
}

const isLayerTar = (s: TarSource): s is LayerTar => typeof (s as Partial<LayerTar>).settle === 'function';

/** Resolves on `event`, or when the stream closes or fails (the caller checks its own failure flag). */
function settled(stream: NodeJS.EventEmitter, event: string): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      stream.off(event, done);
      stream.off('close', done);
      stream.off('error', done);
      resolve();
    };
    stream.on(event, done);
    stream.on('close', done);
    stream.on('error', done);
  });
}
