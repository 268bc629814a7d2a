// Where simple signatures live: lookaside storage configured by registries.d
// YAML (containers-registries.d.5), or the registry's own
// X-Registry-Supports-Signatures API extension. Lookaside layout (docs/
// signature-protocols.md): <base>/<repository>@<alg>=<hex>/signature-N,
// N = 1, 2, … until the first one that does not exist.

import { readdir, readFile, open } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { request } from 'undici';
import { collectBody } from '../http-body.ts';
import { Dispatchers, type ProxySettings } from '../image/http-dispatch.ts';
import { checkDigest, type ImageReference } from '../image/reference.ts';
import { RegistriesDInvalid, SignatureStoreUnavailable } from './errors.ts';
import { scopeCandidates, scopeProblem } from './names.ts';
import { MAX_SIGNATURE_BYTES, MAX_SIGNATURES, type SignatureSource } from './source.ts';
import { describe, formatPath, isObject } from './strict-json.ts';

const NAMESPACE_KEYS = ['lookaside', 'lookaside-staging', 'sigstore', 'sigstore-staging', 'use-sigstore-attachments'];

/** The read location of one registries.d namespace; undefined when it only configures writing. */
type Namespace = URL | undefined;

export interface RegistriesD {
  /** Lookaside base URL for an image: the most specific docker scope that names one, else default-docker. */
  lookasideFor(ref: ImageReference): URL | undefined;
}

export const EMPTY_REGISTRIES_D: RegistriesD = { lookasideFor: () => undefined };

function namespace(v: unknown, where: string): Namespace {
  if (v === null) return undefined;
  if (!isObject(v)) throw new RegistriesDInvalid(`${where}: expected a mapping, got ${describe(v)}`);
  for (const k of Object.keys(v)) if (!NAMESPACE_KEYS.includes(k)) throw new RegistriesDInvalid(`${where}.${k}: unknown key`);
  for (const k of NAMESPACE_KEYS.slice(0, 4)) {
    const u = v[k];
    if (u === undefined) continue;
    if (typeof u !== 'string') throw new RegistriesDInvalid(`${where}.${k}: expected a URL string, got ${describe(u)}`);
    let url: URL;
    try {
      url = new URL(u);
    } catch {
      throw new RegistriesDInvalid(`${where}.${k}: not a URL`);
    }
    if (!['file:', 'http:', 'https:'].includes(url.protocol)) throw new RegistriesDInvalid(`${where}.${k}: unsupported scheme ${url.protocol} (file, http, https)`);
  }
  if (v['use-sigstore-attachments'] !== undefined && typeof v['use-sigstore-attachments'] !== 'boolean') {
    throw new RegistriesDInvalid(`${where}.use-sigstore-attachments: expected a boolean`);
  }
  // Reading prefers "lookaside", then its legacy name "sigstore" (containers/image signatureTopLevel).
  const read = (v.lookaside ?? v.sigstore) as string | undefined;
  return read === undefined ? undefined : new URL(read);
}

/** Parse every *.yaml file of a registries.d directory; a scope or default defined twice is an error. */
export async function loadRegistriesD(dir: string): Promise<RegistriesD> {
  let names: string[];
  try {
    names = (await readdir(dir)).filter((n) => n.endsWith('.yaml')).sort();
  } catch (err) {
    throw new RegistriesDInvalid(`registries.d ${dir}: ${(err as NodeJS.ErrnoException).code ?? 'unreadable'}`);
  }
  // yaml is loaded with the first registries.d directory, not at agent start.
  const { parse: parseYaml } = await import('yaml');
  let fallback: { url: Namespace; file: string } | undefined;
  const scopes = new Map<string, { url: Namespace; file: string }>();
  for (const name of names) {
    const file = join(dir, name);
    let doc: unknown;
    try {
      doc = parseYaml(await readFile(file, 'utf8'), { uniqueKeys: true });
    } catch (err) {
      throw new RegistriesDInvalid(`${file}: not valid YAML (${(err as Error).message.split('\n')[0]})`);
    }
    if (doc === null || doc === undefined) continue;
    if (!isObject(doc)) throw new RegistriesDInvalid(`${file}: expected a mapping`);
    for (const k of Object.keys(doc)) if (k !== 'default-docker' && k !== 'docker') throw new RegistriesDInvalid(`${file}: ${k}: unknown key`);
    if (doc['default-docker'] !== undefined) {
      if (fallback) throw new RegistriesDInvalid(`${file}: default-docker is already defined in ${fallback.file}`);
      fallback = { url: namespace(doc['default-docker'], `${file}: default-docker`), file };
    }
    if (doc.docker !== undefined && doc.docker !== null) {
      if (!isObject(doc.docker)) throw new RegistriesDInvalid(`${file}: docker: expected a mapping of scopes`);
      for (const [scope, ns] of Object.entries(doc.docker)) {
        const where = `${file}: docker[${JSON.stringify(scope)}]`;
        const problem = scopeProblem(scope);
        if (problem) throw new RegistriesDInvalid(`${where}: bad scope: ${problem}`);
        const prev = scopes.get(scope);
        if (prev) throw new RegistriesDInvalid(`${where}: already defined in ${prev.file}`);
        scopes.set(scope, { url: namespace(ns, where), file });
      }
    }
  }
  return {
    lookasideFor(ref) {
      for (const scope of scopeCandidates(ref)) {
        const url = scopes.get(scope)?.url;
        if (url) return new URL(url);
      }
      return fallback?.url ? new URL(fallback.url) : undefined;
    },
  };
}

/** Reads one lookaside object; undefined means "does not exist", which ends the list. */
export interface LookasideReader {
  read(url: URL, max: number, signal?: AbortSignal): Promise<Buffer | undefined>;
  close(): Promise<void>;
}

export interface HttpLookasideOptions {
  readonly connectTimeoutMs?: number;
  readonly idleTimeoutMs?: number;
  /** Extra trusted CA certificates (PEM) for https lookaside servers, added to the system roots. */
  readonly caPem?: string;
  /** The same proxies as registry requests. */
  readonly proxy?: ProxySettings;
}

/** file:// from disk, http(s):// with undici; redirects are not followed. */
export class DefaultLookasideReader implements LookasideReader {
  private readonly dispatchers: Dispatchers;

  constructor(opts: HttpLookasideOptions = {}) {
    this.dispatchers = new Dispatchers({
      connectTimeoutMs: opts.connectTimeoutMs ?? 10_000,
      idleTimeoutMs: opts.idleTimeoutMs ?? 30_000,
      ...(opts.caPem ? { caPem: opts.caPem } : {}),
      ...(opts.proxy ? { proxy: opts.proxy } : {}),
    });
  }

  async read(url: URL, max: number, signal?: AbortSignal): Promise<Buffer | undefined> {
    return url.protocol === 'file:' ? readLocal(url, max) : this.readHttp(url, max, signal);
  }

  private async readHttp(url: URL, max: number, signal?: AbortSignal): Promise<Buffer | undefined> {
    let res;
    try {
      res = await request(url, { dispatcher: this.dispatchers.for(url), ...(signal ? { signal } : {}) });
    } catch (err) {
      if (signal?.aborted) throw signal.reason;
      throw new SignatureStoreUnavailable(`lookaside ${url.host}: ${(err as NodeJS.ErrnoException).code ?? 'request failed'}`);
    }
    if (res.statusCode === 404) {
      await res.body.dump().catch(() => {});
      return undefined;
    }
    if (res.statusCode !== 200) {
      await res.body.dump().catch(() => {});
      throw new SignatureStoreUnavailable(`lookaside ${url.host}: HTTP ${res.statusCode} for ${url.pathname}`);
    }
    return collectBody(res.body, max, () => new SignatureStoreUnavailable(`lookaside ${url.host}: ${url.pathname} is larger than ${max} bytes`));
  }

  close(): Promise<void> {
    return this.dispatchers.close();
  }
}

async function readLocal(url: URL, max: number): Promise<Buffer | undefined> {
  const path = fileURLToPath(url);
  let fh;
  try {
    fh = await open(path, 'r');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new SignatureStoreUnavailable(`lookaside ${path}: ${(err as NodeJS.ErrnoException).code ?? 'unreadable'}`);
  }
  try {
    const st = await fh.stat();
    if (!st.isFile()) throw new SignatureStoreUnavailable(`lookaside ${path}: not a regular file`);
    if (st.size > max) throw new SignatureStoreUnavailable(`lookaside ${path}: larger than ${max} bytes`);
    return await fh.readFile();
  } finally {
    await fh.close();
  }
}

/** <base>/<repository>@<alg>=<hex>/signature-<n>, the digest checked before it becomes a path. */
export function lookasideUrl(base: URL, ref: ImageReference, digest: string, n: number): URL {
  checkDigest(digest);
  const url = new URL(base);
  const [alg, hex] = digest.split(':') as [string, string];
  url.pathname = `${url.pathname.replace(/\/+$/, '')}/${ref.repository}@${alg}=${hex}/signature-${n}`;
  return url;
}

export async function lookasideSignatures(reader: LookasideReader, base: URL, ref: ImageReference, digest: string, signal?: AbortSignal): Promise<Buffer[]> {
  const out: Buffer[] = [];
  for (let n = 1; n <= MAX_SIGNATURES; n++) {
    const blob = await reader.read(lookasideUrl(base, ref, digest, n), MAX_SIGNATURE_BYTES, signal);
    if (blob === undefined) break;
    out.push(blob);
  }
  return out;
}

/** Whether the registry advertises the signature extension on /v2/ (X-Registry-Supports-Signatures: 1). */
export async function supportsSignatureExtension(source: SignatureSource, signal?: AbortSignal): Promise<boolean> {
  const res = await source.fetch('/v2/', { max: 64 * 1024, ...(signal ? { signal } : {}) });
  const h = res?.headers['x-registry-supports-signatures'];
  return (Array.isArray(h) ? h[0] : h)?.trim() === '1';
}

/** Atomic signatures from /extensions/v2/<repo>/signatures/<digest>; entries of other versions or types are skipped, as upstream. */
export async function extensionSignatures(source: SignatureSource, digest: string, signal?: AbortSignal): Promise<Buffer[]> {
  checkDigest(digest);
  const where = `${source.reference.registry}/${source.reference.repository}`;
  const res = await source.fetch(`/extensions/v2/${source.reference.repository}/signatures/${digest}`, {
    accept: 'application/json',
    // The whole list, as containers/image caps it (iolimits.MaxSignatureListBodySize).
    max: MAX_SIGNATURE_BYTES,
    ...(signal ? { signal } : {}),
  });
  if (!res) return [];
  let doc: unknown;
  try {
    doc = JSON.parse(res.bytes.toString('utf8'));
  } catch {
    throw new SignatureStoreUnavailable(`${where}: the signature extension sent invalid JSON`);
  }
  const list = isObject(doc) ? doc.signatures : undefined;
  if (!Array.isArray(list)) throw new SignatureStoreUnavailable(`${where}: the signature extension sent no signatures array`);
  const out: Buffer[] = [];
  for (const [i, s] of list.slice(0, MAX_SIGNATURES).entries()) {
    if (!isObject(s) || s.schemaVersion !== 2 || s.type !== 'atomic') continue;
    if (typeof s.content !== 'string') throw new SignatureStoreUnavailable(`${where}: ${formatPath(['signatures', i, 'content'])} is not base64`);
    out.push(Buffer.from(s.content, 'base64'));
  }
  return out;
}
