// The pull: reference → sources (registries.conf) → manifest (platform from
// an index) → signature hook → config → layers, each streamed
// download → digest → decrypt? → decompress → diff_id → unpack into a store
// transaction, a few at a time → bundle. Any failure rolls the transaction
// back, so a bundle is visible only when every layer passed every check.

import { rm, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { Transform } from 'node:stream';
import type { Logger } from 'pino';
import { AgentError, Cancelled, Code } from '../errors.ts';
import type { AuthFile, Credentials } from './auth.ts';
import type { ImageVerifier, LayerDecryptor, LayerKey, SignatureSource } from './hooks.ts';
import {
  formatPlatform,
  isEncrypted,
  MAX_CONFIG_BYTES,
  MediaType,
  parseConfig,
  parseManifest,
  selectPlatform,
  type Descriptor,
  type ImageManifest,
  type Platform,
} from './manifest.ts';
import { formatReference, manifestReference, parseReference, type ImageReference } from './reference.ts';
import { resolveCandidates, type PullCandidate, type PullSource, type RegistriesConf } from './registries-conf.ts';
import { BlobRestart, RegistryClient, type FetchedManifest, type Repository } from './registry.ts';
import { EncryptedLayerUnsupported, ImageNotFound, ManifestRejected, RegistryDigestMismatch, VerificationUnavailable } from './registry-errors.ts';
import { compressionOf, layerStream, type DecompressLimits } from './stages.ts';
import { unpackInWorker } from './unpack-thread.ts';
import type { UnpackLimits } from './unpack.ts';
import type { LayerStore } from './store.ts';

/** The part of the layer store a pull uses: one transaction per pull. */
export type LayerStoreHandle = Pick<LayerStore, 'begin'>;

export interface PullSettings {
  readonly platform: Platform;
  readonly maxConcurrentLayers: number;
  readonly registries: RegistriesConf;
  /** Hosts reached over plain HTTP (--insecure-registry, registry.insecure). */
  readonly insecureHosts: ReadonlySet<string>;
  readonly verifySignatures: boolean;
  /** How many times a layer starts over when the registry cannot resume it. */
  readonly layerRestarts: number;
  readonly decompressLimits: DecompressLimits;
  readonly unpackLimits: UnpackLimits;
}

export interface PullerDeps {
  readonly registry: RegistryClient;
  readonly store: LayerStoreHandle;
  readonly settings: PullSettings;
  /** auth.json, loaded per pull (a file may change; a kbs:/// one is cached by the loader). */
  readonly auth: () => Promise<AuthFile>;
  readonly verifier?: ImageVerifier;
  readonly decryptor?: LayerDecryptor;
}

export interface PullRequest {
  /** The reference as the caller wrote it. */
  readonly image: string;
  readonly bundlePath: string;
  /** kata's source_creds: used for the image's own registry, not for mirrors elsewhere. */
  readonly credentials?: Credentials;
}

export type PullEvent =
  | { readonly type: 'resolved'; readonly reference: string; readonly source: string; readonly manifestDigest: string; readonly indexDigest?: string; readonly layers: ReadonlyArray<{ digest: string; size: number }> }
  | { readonly type: 'layer'; readonly index: number; readonly digest: string; readonly state: 'downloading' | 'done' | 'stored' | 'retrying'; readonly bytes: number; readonly total: number; readonly bytesPerSec: number };

export interface PullResult {
  /** What the user's reference stands for, fully qualified. */
  readonly reference: string;
  /** Where it came from (a mirror, or the registry itself). */
  readonly source: string;
  readonly manifestDigest: string;
  readonly indexDigest?: string;
  readonly configDigest: string;
  readonly layers: number;
  /** Compressed bytes downloaded by this pull (layers already stored count 0). */
  readonly bytes: number;
  readonly seconds: number;
  readonly bundlePath: string;
}

export interface PullOptions {
  readonly signal: AbortSignal;
  readonly log: Logger;
  readonly onEvent?: (event: PullEvent) => void;
}

interface Resolved {
  readonly candidate: PullCandidate;
  readonly source: PullSource;
  readonly repo: Repository;
  readonly manifest: ImageManifest;
  readonly manifestBytes: FetchedManifest;
  readonly indexDigest?: string;
}

/** What a pull's layers share: the image, for messages, and the layer keys check() proved (by manifest index). */
interface LayerContext {
  readonly image: string;
  readonly keys: ReadonlyMap<number, LayerKey>;
}

const PROGRESS_EVERY_MS = 500;
/** A long layer logs its progress this often (events to a CLI display come every PROGRESS_EVERY_MS). */
const LOG_PROGRESS_EVERY_MS = 5000;

export class ImagePuller {
  readonly deps: PullerDeps;

  constructor(deps: PullerDeps) {
    this.deps = deps;
  }

  async pull(req: PullRequest, opts: PullOptions): Promise<PullResult> {
    const t0 = performance.now();
    const { settings } = this.deps;
    const ref = parseReference(req.image);
    if (settings.verifySignatures && !this.deps.verifier) {
      throw new VerificationUnavailable(
        'image.enable_signature_verification is on but this agent has no signature verifier configured; refusing to pull unverified images',
      );
    }
    const auth = await this.deps.auth();
    const resolved = await this.resolve(ref, req, auth, opts);
    const { candidate, source, repo, manifest, manifestBytes } = resolved;
    const reference = formatReference(candidate.ref);
    const log = opts.log.child({ image: reference, ...(source.kind === 'mirror' ? { mirror: formatReference(source.ref) } : {}) });
    opts.onEvent?.({
      type: 'resolved',
      reference,
      source: formatReference(source.ref),
      manifestDigest: manifestBytes.digest,
      ...(resolved.indexDigest ? { indexDigest: resolved.indexDigest } : {}),
      layers: manifest.layers.map((l) => ({ digest: l.digest, size: l.size })),
    });

    if (settings.verifySignatures) {
      await this.deps.verifier!.verify({
        reference: candidate.ref,
        manifestDigest: manifestBytes.digest,
        manifest: manifestBytes.bytes,
        manifestMediaType: manifest.mediaType,
        ...(resolved.indexDigest ? { indexDigest: resolved.indexDigest } : {}),
        source: signatureSource(repo, source.ref),
        signal: opts.signal,
        log,
      });
    }

    // Everything about the layers that can be refused is refused before the first byte of one is fetched.
    const keys = new Map<number, LayerKey>();
    try {
      for (const [i, layer] of manifest.layers.entries()) {
        compressionOf(layer.mediaType);
        if (!isEncrypted(layer.mediaType)) continue;
        if (!this.deps.decryptor) throw encryptedWithoutDecryptor(layer, i);
        keys.set(i, await this.deps.decryptor.check({ descriptor: layer, index: i, image: reference }, opts.signal));
      }
      return await this.pullLayers(resolved, req, { image: reference, keys }, log, opts, t0);
    } finally {
      for (const k of keys.values()) k.dispose();
    }
  }

  /** Config, then the layers into the store and the bundle; `ctx.keys` holds the keys check() proved. */
  private async pullLayers(resolved: Resolved, req: PullRequest, ctx: LayerContext, log: Logger, opts: PullOptions, t0: number): Promise<PullResult> {
    const { settings } = this.deps;
    const { source, repo, manifest, manifestBytes } = resolved;
    const reference = ctx.image;
    const configBytes = await repo.getBlob(manifest.config, MAX_CONFIG_BYTES, opts.signal);
    const config = parseConfig(configBytes, manifest.layers.length, `${reference}: config ${manifest.config.digest}`);
    if ((config.os && config.os !== settings.platform.os) || (config.architecture && config.architecture !== settings.platform.architecture)) {
      log.warn({ config_platform: `${config.os}/${config.architecture}`, wanted: formatPlatform(settings.platform) }, 'image config platform differs from the wanted platform');
    }

    log.info({ manifest_digest: manifestBytes.digest, index_digest: resolved.indexDigest, layers: manifest.layers.length }, 'pulling image');
    const downloaded = await this.fetchLayers(repo, manifest.layers, config.diffIds, req.bundlePath, ctx, log, opts);
    const seconds = (performance.now() - t0) / 1000;
    log.info({ manifest_digest: manifestBytes.digest, layers: manifest.layers.length, bytes: downloaded, seconds: Math.round(seconds * 1000) / 1000, bundle: req.bundlePath }, 'image pulled');
    return {
      reference,
      source: formatReference(source.ref),
      manifestDigest: manifestBytes.digest,
      ...(resolved.indexDigest ? { indexDigest: resolved.indexDigest } : {}),
      configDigest: manifest.config.digest,
      layers: manifest.layers.length,
      bytes: downloaded,
      seconds,
      bundlePath: req.bundlePath,
    };
  }

  /** Try each candidate name and each of its sources in order; the first that yields a valid manifest wins. */
  private async resolve(ref: ImageReference, req: PullRequest, auth: AuthFile, opts: PullOptions): Promise<Resolved> {
    const { settings, registry } = this.deps;
    const candidates = resolveCandidates(settings.registries, ref, settings.insecureHosts);
    const failures: unknown[] = [];
    for (const candidate of candidates) {
      let last: unknown;
      for (const [n, source] of candidate.sources.entries()) {
        const credentials = req.credentials && source.ref.registry === candidate.ref.registry ? req.credentials : auth.lookup(source.ref.registry, source.ref.repository);
        const repo = registry.repository(source.ref, { insecure: source.insecure, ...(credentials ? { credentials } : {}) });
        try {
          return { candidate, source, repo, ...(await this.resolveManifest(repo, source.ref, opts.signal)) };
        } catch (err) {
          if (opts.signal.aborted) throw cancelled(opts.signal);
          last = err;
          // Worth a warning when another source is tried next; the last failure is the caller's error anyway.
          const level = n < candidate.sources.length - 1 ? 'warn' : 'debug';
          opts.log[level]({ source: formatReference(source.ref), kind: source.kind, code: (err as AgentError).code, error: (err as Error).message }, 'image source failed');
        }
      }
      failures.push(last);
    }
    // The most useful error: the first that is not "not found", else the first.
    const chosen = failures.find((e) => (e as AgentError).code !== Code.NOT_FOUND) ?? failures[0];
    throw chosen;
  }

  private async resolveManifest(repo: Repository, ref: ImageReference, signal: AbortSignal): Promise<Omit<Resolved, 'candidate' | 'source' | 'repo'>> {
    const where = formatReference(ref);
    const top = await repo.getManifest(manifestReference(ref), signal);
    const parsed = parseManifest(top.bytes, top.contentType, where);
    if (parsed.kind === 'manifest') return { manifest: parsed, manifestBytes: top };
    const platform = this.deps.settings.platform;
    const desc = selectPlatform(parsed, platform);
    if (!desc) {
      const available = parsed.manifests.map((m) => (m.platform ? formatPlatform(m.platform) : '?')).join(', ');
      throw new ImageNotFound(`${where}: no manifest for ${formatPlatform(platform)} in the index (it has: ${available.slice(0, 300)})`);
    }
    if (desc.mediaType !== MediaType.OciManifest && desc.mediaType !== MediaType.DockerManifest) {
      throw new ManifestRejected(`${where}: the index entry for ${formatPlatform(platform)} is a ${desc.mediaType}, not an image manifest`);
    }
    const m = await repo.getManifest(desc.digest, signal);
    if (m.bytes.length !== desc.size) throw new RegistryDigestMismatch(`${where}: manifest ${desc.digest} is ${m.bytes.length} bytes, the index says ${desc.size}`);
    const manifest = parseManifest(m.bytes, m.contentType, `${where}@${desc.digest}`);
    if (manifest.kind !== 'manifest') throw new ManifestRejected(`${where}: the index entry ${desc.digest} is not an image manifest`);
    if (manifest.mediaType !== desc.mediaType) throw new ManifestRejected(`${where}: manifest ${desc.digest} is a ${manifest.mediaType}, the index says ${desc.mediaType}`);
    return { manifest, manifestBytes: m, indexDigest: top.digest };
  }

  /** Layers into one store transaction, up to maxConcurrentLayers at once; commits the bundle or rolls back. Returns bytes downloaded. */
  private async fetchLayers(repo: Repository, layers: readonly Descriptor[], diffIds: readonly string[], bundlePath: string, ctx: LayerContext, log: Logger, opts: PullOptions): Promise<number> {
    const abort = new AbortController();
    const signal = AbortSignal.any([opts.signal, abort.signal]);
    const tx = this.deps.store.begin();
    let downloaded = 0;
    let next = 0;
    let failure: unknown;
    const worker = async (): Promise<void> => {
      while (failure === undefined && next < layers.length) {
        const i = next++;
        const layer = layers[i]!;
        let produced = false;
        try {
          // The store runs one producer per layer for all pulls that want it, and aborts it only
          // when every one of them has gone; `signal` ends only this pull's wait.
          await tx.ensureLayer(
            diffIds[i]!,
            async (staging, storeSignal) => {
              produced = true;
              const n = await this.produceLayer(repo, layer, i, diffIds[i]!, staging, storeSignal, ctx, log, opts);
              downloaded += n;
            },
            signal,
          );
          if (!produced) opts.onEvent?.({ type: 'layer', index: i, digest: layer.digest, state: 'stored', bytes: 0, total: layer.size, bytesPerSec: 0 });
        } catch (err) {
          if (failure === undefined) {
            failure = err;
            abort.abort(err);
          }
        }
      }
    };
    try {
      await Promise.all(Array.from({ length: Math.min(this.deps.settings.maxConcurrentLayers, layers.length) }, worker));
      if (failure !== undefined) throw failure;
      if (opts.signal.aborted) throw cancelled(opts.signal);
      await tx.commitBundle(bundlePath, [...diffIds]);
      return downloaded;
    } catch (err) {
      await tx.rollback().catch((e: unknown) => log.error({ err: e }, 'rollback after a failed pull failed'));
      throw opts.signal.aborted && !(err instanceof AgentError) ? cancelled(opts.signal) : err;
    }
  }

  /** One layer into `staging`, starting over (bounded) when the registry cannot resume. Returns compressed bytes fetched. */
  private async produceLayer(repo: Repository, layer: Descriptor, index: number, diffId: string, staging: string, signal: AbortSignal, ctx: LayerContext, log: Logger, opts: PullOptions): Promise<number> {
    let fetched = 0;
    for (let restart = 0; ; restart++) {
      const t0 = performance.now();
      let bytes = 0;
      let lastEvent = 0;
      let lastLog = t0;
      const emit = (state: 'downloading' | 'done' | 'retrying'): void => {
        const secs = (performance.now() - t0) / 1000;
        opts.onEvent?.({ type: 'layer', index, digest: layer.digest, state, bytes, total: layer.size, bytesPerSec: secs > 0 ? bytes / secs : 0 });
      };
      const counted = async function* (chunks: AsyncIterable<Buffer>): AsyncGenerator<Buffer> {
        for await (const c of chunks) {
          bytes += c.length;
          const now = performance.now();
          if (now - lastEvent >= PROGRESS_EVERY_MS) {
            lastEvent = now;
            emit('downloading');
            if (now - lastLog >= LOG_PROGRESS_EVERY_MS) {
              lastLog = now;
              log.info({ layer: index, digest: layer.digest, bytes, total: layer.size, bytes_per_sec: Math.round((bytes * 1000) / (now - t0)) }, 'layer progress');
            }
          }
          yield c;
        }
      };
      try {
        emit('downloading');
        await this.streamLayer(counted(repo.blob(layer, signal, { onRetry: () => emit('retrying') })), layer, index, diffId, staging, signal, ctx, log);
        fetched += bytes;
        emit('done');
        const ms = performance.now() - t0;
        log.info({ layer: index, digest: layer.digest, bytes, ms: Math.round(ms), bytes_per_sec: Math.round((bytes * 1000) / Math.max(ms, 1)) }, 'layer fetched');
        return fetched;
      } catch (err) {
        fetched += bytes;
        if (!(err instanceof BlobRestart) || restart >= this.deps.settings.layerRestarts || signal.aborted) throw err;
        log.warn({ layer: index, digest: layer.digest, restart: restart + 1 }, err.message);
        emit('retrying');
        await emptyDir(staging);
      }
    }
  }

  /**
   * download → digest(descriptor) → decrypt? → decompress → digest(diff_id) here, then unpack
   * into staging in a worker thread (unpack-thread.ts; a corrupted download is
   * reported as a digest mismatch even when zlib or the tar reader trips over it first).
   */
  private async streamLayer(blob: AsyncIterable<Buffer>, layer: Descriptor, index: number, diffId: string, staging: string, signal: AbortSignal, ctx: LayerContext, log: Logger): Promise<void> {
    let mediaType = layer.mediaType;
    const decrypt: Transform[] = [];
    if (isEncrypted(mediaType)) {
      const key = ctx.keys.get(index);
      if (!key) throw encryptedWithoutDecryptor(layer, index);
      const d = await key.open({ descriptor: layer, index, image: ctx.image, diffId }, signal);
      decrypt.push(d.stream);
      mediaType = d.mediaType;
    }
    const tar = layerStream(blob, { digest: layer.digest, size: layer.size, mediaType, diffId }, { limits: this.deps.settings.decompressLimits, decrypt });
    // zlib's output buffers are the stream's own; an uncompressed layer's chunks are the HTTP client's.
    const owned = compressionOf(mediaType) !== 'none';
    await unpackInWorker(tar, { dir: staging, unpackLimits: this.deps.settings.unpackLimits }, { signal, log, owned });
  }
}

function encryptedWithoutDecryptor(layer: Descriptor, index: number): EncryptedLayerUnsupported {
  const keys = Object.keys(layer.annotations ?? {}).filter((k) => k.startsWith('org.opencontainers.image.enc.'));
  return new EncryptedLayerUnsupported(
    `layer ${index} (${layer.digest}, ${layer.mediaType}) is encrypted and no decryption key provider is configured; annotations: ${keys.length ? keys.join(', ') : 'none'}`,
  );
}

function cancelled(signal: AbortSignal): Error {
  return signal.reason instanceof AgentError ? signal.reason : new Cancelled('pull cancelled');
}

async function emptyDir(dir: string): Promise<void> {
  for (const name of await readdir(dir)) await rm(join(dir, name), { recursive: true, force: true });
}

/** The verifier's view of the repository an image is pulled from. */
export function signatureSource(repo: Repository, reference: ImageReference): SignatureSource {
  return {
    reference,
    getManifest: async (tagOrDigest, signal) => {
      try {
        return await repo.getManifest(tagOrDigest, signal);
      } catch (err) {
        if (err instanceof ImageNotFound) return undefined;
        throw err;
      }
    },
    getBlob: (desc, max, signal) => repo.getBlob(desc, max, signal),
    fetch: (path, o) => repo.fetchBytes(path, o),
  };
}
