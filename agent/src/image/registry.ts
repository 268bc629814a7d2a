// The registry client (distribution-spec pull side): manifests verified by
// their own bytes, small blobs read whole under a cap, layer blobs streamed
// with Range resume, and the auth dance (anonymous, Basic, Bearer tokens
// cached per scope). One RegistryClient serves every pull of the daemon, so
// connections, challenges and tokens are reused.

import { createHash } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from 'pino';
import { basicHeader, credentialsId, parseWwwAuthenticate, TokenCache, type Credentials } from './auth.ts';
import { MANIFEST_ACCEPT, MAX_MANIFEST_BYTES, type Descriptor } from './manifest.ts';
import { apiHost, type ImageReference } from './reference.ts';
import {
  ImageNotFound,
  ManifestRejected,
  RegistryDenied,
  RegistryDigestMismatch,
  RegistryTimeout,
  RegistryUnauthorized,
  RegistryUnavailable,
} from './registry-errors.ts';
import { classifyNetworkError, header, HttpClient, parseRetryAfter, readCapped, TransientError, watchedBody, withRetries, type Headers, type HttpResponse, type HttpSettings } from './registry-http.ts';

/** Bearer token responses larger than this are refused (containers/image iolimits). */
const MAX_TOKEN_BYTES = 1024 * 1024;

export interface FetchedManifest {
  readonly bytes: Buffer;
  /** Content-Type as the registry sent it. */
  readonly contentType: string | undefined;
  /** Digest of the bytes, verified against the reference and Docker-Content-Digest. */
  readonly digest: string;
}

/** A resumed blob download got 200 instead of 206: the consumer must start the layer over. */
export class BlobRestart extends Error {
  constructor(digest: string, offset: number) {
    super(`${digest}: the registry ignored Range at byte ${offset}; restarting the layer`);
    this.name = 'BlobRestart';
  }
}

export interface BlobProgress {
  /** A transient failure is being retried; offset is where the download resumes. */
  onRetry?(info: { attempt: number; waitMs: number; reason: string; offset: number }): void;
}

type Auth = { kind: 'basic' } | { kind: 'bearer'; realm: URL; service: string | undefined };

export function digestOf(bytes: Buffer, algorithm: 'sha256' | 'sha512' = 'sha256'): string {
  return `${algorithm}:${createHash(algorithm).update(bytes).digest('hex')}`;
}

const algorithmOf = (digest: string): 'sha256' | 'sha512' => (digest.startsWith('sha512:') ? 'sha512' : 'sha256');

/** Short, safe summary of a registry error body: the distribution error codes only. */
async function errorCodes(res: HttpResponse): Promise<string> {
  try {
    const text = (await res.body.text()).slice(0, 64 * 1024);
    const doc = JSON.parse(text) as { errors?: Array<{ code?: unknown }> };
    const codes = (doc.errors ?? []).map((e) => e.code).filter((c): c is string => typeof c === 'string' && /^[A-Z_]{1,64}$/.test(c));
    return codes.length > 0 ? ` (${codes.slice(0, 4).join(', ')})` : '';
  } catch {
    return '';
  }
}

export class RegistryClient {
  readonly http: HttpClient;
  readonly log: Logger;
  /** What each origin asked for on its first 401, so later requests authenticate up front. */
  readonly challenges = new Map<string, Auth>();
  readonly tokens = new TokenCache();

  constructor(settings: HttpSettings, log: Logger) {
    this.http = new HttpClient(settings);
    this.log = log;
  }

  get settings(): HttpSettings {
    return this.http.settings;
  }

  /** A handle on one repository of one registry, with the credentials to use there. */
  repository(ref: Pick<ImageReference, 'registry' | 'repository'>, opts: { insecure: boolean; credentials?: Credentials }): Repository {
    return new Repository(this, new URL(`${opts.insecure ? 'http' : 'https'}://${apiHost(ref.registry)}`), ref.registry, ref.repository, opts.credentials);
  }

  close(): Promise<void> {
    return this.http.close();
  }
}

export class Repository {
  readonly client: RegistryClient;
  readonly origin: URL;
  /** Registry name as in references, for messages. */
  readonly registry: string;
  readonly name: string;
  private readonly credentials: Credentials | undefined;

  constructor(client: RegistryClient, origin: URL, registry: string, name: string, credentials: Credentials | undefined) {
    this.client = client;
    this.origin = origin;
    this.registry = registry;
    this.name = name;
    this.credentials = credentials;
  }

  private get where(): string {
    return `${this.registry}/${this.name}`;
  }

  private tokenKey(): string {
    return `${this.origin.origin}|repository:${this.name}:pull|${credentialsId(this.credentials)}`;
  }

  private async authorization(signal: AbortSignal | undefined): Promise<string | undefined> {
    const auth = this.client.challenges.get(this.origin.origin);
    if (!auth) return undefined;
    if (auth.kind === 'basic') return this.credentials ? basicHeader(this.credentials) : undefined;
    const key = this.tokenKey();
    const cached = this.client.tokens.get(key);
    if (cached) return `Bearer ${cached}`;
    const token = await this.fetchToken(auth, signal);
    return `Bearer ${token}`;
  }

  /** GET realm?service=…&scope=… with Basic credentials when we have them (distribution token spec). */
  private async fetchToken(auth: Extract<Auth, { kind: 'bearer' }>, signal: AbortSignal | undefined): Promise<string> {
    const url = new URL(auth.realm);
    if (auth.service !== undefined) url.searchParams.set('service', auth.service);
    url.searchParams.set('scope', `repository:${this.name}:pull`);
    const res = await this.client.http.send(url, {
      headers: { accept: 'application/json' },
      ...(this.credentials ? { authorization: basicHeader(this.credentials) } : {}),
      ...(signal ? { signal } : {}),
    });
    if (res.status === 401 || res.status === 403) {
      await res.body.dump().catch(() => {});
      throw new RegistryUnauthorized(`${this.where}: the token server at ${url.host} refused ${this.credentials ? 'the credentials' : 'anonymous access'} (HTTP ${res.status})`);
    }
    if (res.status === 429 || res.status >= 500) {
      await res.body.dump().catch(() => {});
      throw new TransientError(`token server ${url.host} answered ${res.status}`);
    }
    if (res.status !== 200) {
      await res.body.dump().catch(() => {});
      throw new RegistryUnavailable(`${this.where}: the token server at ${url.host} answered HTTP ${res.status}`);
    }
    const body = await readCapped(res, MAX_TOKEN_BYTES, this.client.settings, 'token response', (m) => new RegistryUnavailable(`${this.where}: ${m}`));
    let doc: { token?: unknown; access_token?: unknown; expires_in?: unknown };
    try {
      doc = JSON.parse(body.toString('utf8')) as typeof doc;
    } catch {
      throw new RegistryUnavailable(`${this.where}: the token server at ${url.host} sent invalid JSON`);
    }
    const token = typeof doc.token === 'string' && doc.token ? doc.token : typeof doc.access_token === 'string' ? doc.access_token : '';
    if (!token || /[\r\n\s]/.test(token)) throw new RegistryUnavailable(`${this.where}: the token server at ${url.host} sent no usable token`);
    this.client.tokens.set(this.tokenKey(), token, typeof doc.expires_in === 'number' ? doc.expires_in : undefined);
    return token;
  }

  /** Remember how this origin wants to be authenticated, from a 401's challenges. */
  private learnChallenge(res: HttpResponse): void {
    const raw = res.headers['www-authenticate'];
    const challenges = parseWwwAuthenticate(Array.isArray(raw) ? raw.join(', ') : (raw ?? ''));
    const bearer = challenges.find((c) => c.scheme === 'bearer');
    if (bearer) {
      let realm: URL;
      try {
        realm = new URL(bearer.params.realm ?? '');
      } catch {
        throw new RegistryUnavailable(`${this.where}: the registry sent a Bearer challenge without a valid realm`);
      }
      if (realm.protocol !== 'https:' && realm.protocol !== 'http:') throw new RegistryUnavailable(`${this.where}: unsupported token realm scheme ${realm.protocol}`);
      // Credentials and tokens must not travel in clear text unless the registry itself is plain HTTP by configuration.
      if (realm.protocol === 'http:' && this.origin.protocol === 'https:') throw new RegistryUnavailable(`${this.where}: refusing a plain-HTTP token realm (${realm.host}) for an HTTPS registry`);
      this.client.challenges.set(this.origin.origin, { kind: 'bearer', realm, service: bearer.params.service });
      this.client.tokens.delete(this.tokenKey());
      return;
    }
    if (challenges.some((c) => c.scheme === 'basic')) {
      this.client.challenges.set(this.origin.origin, { kind: 'basic' });
      return;
    }
    throw new RegistryUnauthorized(`${this.where}: the registry requires authentication with an unsupported scheme`);
  }

  /**
   * One authenticated GET of a /v2/ path: a 401 teaches us the challenge and
   * is retried once with credentials. Transient statuses become
   * TransientError; the caller wraps this in withRetries.
   */
  private async open(path: string, headers: Headers, signal: AbortSignal | undefined, what: string): Promise<HttpResponse> {
    for (let authTry = 0; ; authTry++) {
      const authorization = await this.authorization(signal);
      const res = await this.client.http.send(new URL(path, this.origin), {
        headers,
        ...(authorization ? { authorization } : {}),
        ...(signal ? { signal } : {}),
      });
      if (res.status === 401) {
        const known = this.client.challenges.get(this.origin.origin);
        await res.body.dump().catch(() => {});
        if (authTry > 0 || (known?.kind === 'basic' && authorization)) {
          throw new RegistryUnauthorized(`${this.where}: ${what}: the registry refused ${this.credentials ? 'the credentials' : 'anonymous access'} (HTTP 401)`);
        }
        this.learnChallenge(res);
        if (this.client.challenges.get(this.origin.origin)?.kind === 'basic' && !this.credentials) {
          throw new RegistryUnauthorized(`${this.where}: ${what}: the registry requires credentials and none are configured`);
        }
        continue;
      }
      if (res.status === 429 || (res.status >= 500 && res.status !== 501 && res.status !== 505)) {
        const retryAfterMs = parseRetryAfter(header(res, 'retry-after'));
        await res.body.dump().catch(() => {});
        throw new TransientError(`${what}: HTTP ${res.status}`, retryAfterMs !== undefined ? { retryAfterMs } : {});
      }
      if (res.status === 200 || res.status === 206) return res;
      const codes = await errorCodes(res);
      if (res.status === 404) throw new ImageNotFound(`${this.where}: ${what}: not found${codes}`);
      if (res.status === 403) throw new RegistryDenied(`${this.where}: ${what}: access denied by the registry (HTTP 403)${codes}`);
      throw new RegistryUnavailable(`${this.where}: ${what}: unexpected HTTP ${res.status}${codes}`);
    }
  }

  private retrying<T>(what: string, signal: AbortSignal | undefined, fn: () => Promise<T>): Promise<T> {
    return withRetries(this.client.settings, `${this.where}: ${what}`, signal, fn, (info) =>
      this.client.log.warn({ registry: this.registry, repository: this.name, what, ...info }, 'registry request failed; retrying'),
    );
  }

  /**
   * GET a manifest by tag or digest. Its digest is computed from the bytes
   * and must equal the requested digest and Docker-Content-Digest when either
   * is present.
   */
  async getManifest(reference: string, signal?: AbortSignal): Promise<FetchedManifest> {
    const what = `manifest ${reference}`;
    return this.retrying(what, signal, async () => {
      const res = await this.open(`/v2/${this.name}/manifests/${reference}`, { accept: MANIFEST_ACCEPT.join(', ') }, signal, what);
      const bytes = await readCapped(res, MAX_MANIFEST_BYTES, this.client.settings, `${this.where}: ${what}`, (m) => new ManifestRejected(m));
      const pinned = reference.includes(':') ? reference : undefined;
      const digest = digestOf(bytes, pinned ? algorithmOf(pinned) : 'sha256');
      if (pinned && digest !== pinned) throw new RegistryDigestMismatch(`${this.where}: manifest bytes hash to ${digest}, not the requested ${pinned}`);
      const claimed = header(res, 'docker-content-digest');
      if (claimed !== undefined && claimed !== '') {
        if (!/^sha(256:[a-f0-9]{64}|512:[a-f0-9]{128})$/.test(claimed)) throw new ManifestRejected(`${this.where}: malformed Docker-Content-Digest header`);
        const check = algorithmOf(claimed) === algorithmOf(digest) ? digest : digestOf(bytes, algorithmOf(claimed));
        if (check !== claimed) throw new RegistryDigestMismatch(`${this.where}: manifest bytes hash to ${check}, not the Docker-Content-Digest ${claimed}`);
      }
      return { bytes, contentType: header(res, 'content-type'), digest };
    });
  }

  /** A small blob (config, signature payload) read whole, size- and digest-checked. */
  async getBlob(desc: Pick<Descriptor, 'digest' | 'size'>, max: number, signal?: AbortSignal): Promise<Buffer> {
    if (desc.size > max) throw new ManifestRejected(`${this.where}: blob ${desc.digest} is ${desc.size} bytes, more than the ${max}-byte limit`);
    const what = `blob ${desc.digest}`;
    return this.retrying(what, signal, async () => {
      const res = await this.open(`/v2/${this.name}/blobs/${desc.digest}`, {}, signal, what);
      const bytes = await readCapped(res, max, this.client.settings, `${this.where}: ${what}`, (m) => new ManifestRejected(m));
      if (bytes.length !== desc.size) throw new RegistryDigestMismatch(`${this.where}: ${what} is ${bytes.length} bytes, its descriptor says ${desc.size}`);
      const got = digestOf(bytes, algorithmOf(desc.digest));
      if (got !== desc.digest) throw new RegistryDigestMismatch(`${this.where}: ${what}: the bytes hash to ${got}`);
      return bytes;
    });
  }

  /**
   * Any other GET under this registry (signature extensions, /v2/ probes),
   * authenticated and retried. Resolves undefined on 404.
   */
  async fetchBytes(path: string, opts: { accept?: string; max: number; signal?: AbortSignal }): Promise<{ bytes: Buffer; headers: HttpResponse['headers'] } | undefined> {
    const what = `GET ${path}`;
    try {
      return await this.retrying(what, opts.signal, async () => {
        const res = await this.open(path, opts.accept ? { accept: opts.accept } : {}, opts.signal, what);
        return { bytes: await readCapped(res, opts.max, this.client.settings, `${this.where}: ${what}`, (m) => new ManifestRejected(m)), headers: res.headers };
      });
    } catch (err) {
      if (err instanceof ImageNotFound) return undefined;
      throw err;
    }
  }

  /**
   * Stream a layer blob. A cut connection resumes with Range from the last
   * byte received when the registry answers 206; when it answers 200 the
   * stream throws BlobRestart and the consumer starts the layer over.
   * The bytes are not hashed here: the pipeline's first stage does that.
   */
  async *blob(desc: Pick<Descriptor, 'digest' | 'size'>, signal?: AbortSignal, progress?: BlobProgress): AsyncGenerator<Buffer> {
    const settings = this.client.settings;
    const what = `blob ${desc.digest}`;
    let offset = 0;
    for (let failures = 0; ; ) {
      const res = await this.retrying(what, signal, () => this.open(`/v2/${this.name}/blobs/${desc.digest}`, offset > 0 ? { range: `bytes=${offset}-` } : {}, signal, what));
      checkBlobResponse(res, desc, offset, `${this.where}: ${what}`);
      const it = watchedBody(res.body, settings);
      let failure: TransientError | undefined;
      for (;;) {
        let step: IteratorResult<Buffer>;
        try {
          step = await it.next();
        } catch (raw) {
          const err = classifyNetworkError(raw);
          if (!(err instanceof TransientError)) throw err;
          failure = err;
          break;
        }
        if (step.done) break;
        offset += step.value.length;
        if (offset > desc.size) {
          res.body.destroy();
          throw new RegistryDigestMismatch(`${this.where}: ${what} is longer than the ${desc.size} bytes its descriptor says`);
        }
        yield step.value;
      }
      if (!failure && offset === desc.size) return;
      failure ??= new TransientError(`body ended at byte ${offset} of ${desc.size}`);
      res.body.destroy();
      if (signal?.aborted) throw signal.reason;
      if (++failures > settings.retries) {
        const msg = `${this.where}: ${what}: ${failure.message} (gave up after ${failures} attempts)`;
        throw failure.timeout ? new RegistryTimeout(msg) : new RegistryUnavailable(msg);
      }
      const waitMs = Math.round(Math.min(settings.maxBackoffMs, settings.backoffMs * 2 ** (failures - 1)));
      progress?.onRetry?.({ attempt: failures, waitMs, reason: failure.message, offset });
      this.client.log.warn({ registry: this.registry, repository: this.name, digest: desc.digest, offset, attempt: failures, reason: failure.message }, 'blob download interrupted; resuming');
      await sleep(waitMs, undefined, signal ? { signal } : {});
    }
  }
}

/** A blob response must be the whole blob (200) or exactly the rest from offset (206). */
function checkBlobResponse(res: HttpResponse, desc: Pick<Descriptor, 'digest' | 'size'>, offset: number, where: string): void {
  if (offset === 0 || res.status === 200) {
    if (offset > 0) {
      res.body.destroy();
      throw new BlobRestart(desc.digest, offset);
    }
    if (res.status === 206) {
      res.body.destroy();
      throw new RegistryUnavailable(`${where}: partial content without a Range request`);
    }
    const len = header(res, 'content-length');
    if (len !== undefined && Number(len) !== desc.size) {
      res.body.destroy();
      throw new RegistryDigestMismatch(`${where}: the registry sends ${len} bytes, the descriptor says ${desc.size}`);
    }
    return;
  }
  const m = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(header(res, 'content-range') ?? '');
  if (!m || Number(m[1]) !== offset || Number(m[2]) !== desc.size - 1 || (m[3] !== '*' && Number(m[3]) !== desc.size)) {
    res.body.destroy();
    throw new BlobRestart(desc.digest, offset);
  }
}
