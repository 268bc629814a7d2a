// Build the puller from the resolved config, once: the registry client
// (timeouts, retries, CA bundle), registries.conf, the auth.json loader and
// the platform. The daemon (api/index.ts) and `tee-agent pull` share this.

import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import type { Logger } from 'pino';
import type { AgentConfig } from '../config/index.ts';
import { parseResourceUri, type KeySource } from '../resource.ts';
import { AuthFile } from './auth.ts';
import type { ImageVerifier, LayerDecryptor } from './hooks.ts';
import { hostPlatform, parsePlatform } from './manifest.ts';
import { ImagePuller, type LayerStoreHandle, type PullSettings } from './pull.ts';
import { EMPTY_REGISTRIES_CONF, parseRegistriesConf } from './registries-conf.ts';
import { RegistryClient } from './registry.ts';
import { RegistryConfigError } from './registry-errors.ts';
import type { HttpSettings } from './registry-http.ts';
import type { DecompressLimits } from './stages.ts';
import type { UnpackLimits } from './unpack.ts';
import { AGENT_VERSION } from '../version.ts';

export interface PullerParts {
  readonly store: LayerStoreHandle;
  readonly verifier?: ImageVerifier;
  readonly decryptor?: LayerDecryptor;
  /** For an auth.json given as a kbs:/// URI. */
  readonly keySource?: KeySource;
  /** Extra plain-HTTP hosts (the CLI's --insecure-registry). */
  readonly insecureHosts?: readonly string[];
}

function readConfigFile(path: string, what: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    throw new RegistryConfigError(`${what} ${path}: cannot read (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
  }
}

export function httpSettings(config: AgentConfig): HttpSettings {
  const r = config.registry;
  return {
    connectTimeoutMs: r.connect_timeout_ms,
    idleTimeoutMs: r.idle_timeout_ms,
    lowSpeedBytesPerSec: r.low_speed_bytes,
    lowSpeedWindowMs: r.low_speed_window_ms,
    retries: r.retries,
    backoffMs: r.backoff_ms,
    maxBackoffMs: r.max_backoff_ms,
    ...(r.ca_bundle ? { caPem: readConfigFile(r.ca_bundle, 'registry.ca_bundle') } : {}),
    proxy: { httpsProxy: config.proxy.https_proxy, httpProxy: config.proxy.http_proxy, noProxy: config.proxy.no_proxy },
    userAgent: `tee-agent/${AGENT_VERSION}`,
  };
}

/**
 * auth.json from image.auth: a path (read at each pull, so it can change), a
 * kbs:/// resource (fetched on first use and kept), or nothing.
 */
export function authLoader(spec: string, keySource: KeySource | undefined): () => Promise<AuthFile> {
  if (spec === '') return async () => AuthFile.empty();
  if (spec.startsWith('kbs:') || spec.startsWith('kbs+')) {
    const uri = parseResourceUri(spec);
    let cached: AuthFile | undefined;
    return async () => {
      if (cached) return cached;
      if (!keySource) throw new RegistryConfigError(`image.auth is ${uri.text} but no key source is configured`);
      const bytes = await keySource.get(uri);
      try {
        cached = AuthFile.parse(bytes.toString('utf8'), uri.text);
      } finally {
        bytes.fill(0);
      }
      return cached;
    };
  }
  return async () => {
    let text: string;
    try {
      text = await readFile(spec, 'utf8');
    } catch (err) {
      throw new RegistryConfigError(`image.auth ${spec}: cannot read (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
    }
    return AuthFile.parse(text, spec);
  };
}

export function pullSettings(config: AgentConfig, log: Logger, extraInsecure: readonly string[] = []): PullSettings {
  const registries = config.image.registries ? parseRegistriesConf(readConfigFile(config.image.registries, 'image.registries'), config.image.registries, log) : EMPTY_REGISTRIES_CONF;
  const limits = layerLimits(config.image);
  return {
    platform: config.image.platform ? parsePlatform(config.image.platform) : hostPlatform(),
    maxConcurrentLayers: config.image.max_concurrent_layers,
    registries,
    insecureHosts: new Set([...config.registry.insecure, ...extraInsecure].map((h) => h.toLowerCase())),
    verifySignatures: config.image.enable_signature_verification,
    layerRestarts: config.registry.retries,
    decompressLimits: limits.decompress,
    unpackLimits: limits.unpack,
  };
}

/** The puller and its registry client (close the client when done). */
export function createPuller(config: AgentConfig, log: Logger, parts: PullerParts): ImagePuller {
  return new ImagePuller({
    registry: new RegistryClient(httpSettings(config), log),
    store: parts.store,
    settings: pullSettings(config, log, parts.insecureHosts),
    auth: authLoader(config.image.auth, parts.keySource),
    ...(parts.verifier ? { verifier: parts.verifier } : {}),
    ...(parts.decryptor ? { decryptor: parts.decryptor } : {}),
  });
}

/** The layer caps of the [image] config section, for decompress() and unpackLayer(). */
export function layerLimits(image: AgentConfig['image']): { decompress: DecompressLimits; unpack: UnpackLimits } {
  return {
    decompress: { maxBytes: image.max_layer_bytes, maxRatio: image.max_decompression_ratio },
    unpack: { maxEntries: image.max_layer_entries, maxFileSize: image.max_file_size, maxTotalBytes: image.max_layer_bytes },
  };
}
