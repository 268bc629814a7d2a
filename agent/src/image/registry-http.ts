// HTTP for the registry client, on undici: one connection pool per origin,
// HTTPS with the system roots plus an optional CA bundle, connect and idle
// timeouts, a low-speed watchdog for trickling bodies, bounded retries with
// backoff (Retry-After honoured), and redirects followed by hand so that the
// Authorization header never crosses to another origin.

import { setTimeout as sleep } from 'node:timers/promises';
import type { Dispatcher } from 'undici';
import { Dispatchers, type ProxySettings } from './http-dispatch.ts';
import { AgentError, Cancelled } from '../errors.ts';
import { chunksOf } from '../chunks.ts';
import { collectBody } from '../http-body.ts';
import { RegistryTimeout, RegistryUnavailable } from './registry-errors.ts';

export interface HttpSettings {
  /** TCP + TLS handshake limit. */
  readonly connectTimeoutMs: number;
  /** Longest silence while waiting for headers or between body chunks. */
  readonly idleTimeoutMs: number;
  /** A body slower than this many bytes/s over a whole window is cut off (0: off). */
  readonly lowSpeedBytesPerSec: number;
  readonly lowSpeedWindowMs: number;
  /** Extra attempts after the first for a transient failure. */
  readonly retries: number;
  /** First backoff; doubles each attempt, with jitter. */
  readonly backoffMs: number;
  /** Cap on one wait, Retry-After included; a longer Retry-After fails the request. */
  readonly maxBackoffMs: number;
  /** Extra trusted CA certificates (PEM), added to the system roots. */
  readonly caPem?: string;
  /** Proxies (kata agent.https_proxy, http_proxy, no_proxy); none when absent. */
  readonly proxy?: ProxySettings;
  readonly userAgent: string;
}

export const DEFAULT_HTTP: HttpSettings = {
  connectTimeoutMs: 10_000,
  idleTimeoutMs: 30_000,
  lowSpeedBytesPerSec: 1024,
  lowSpeedWindowMs: 30_000,
  retries: 4,
  backoffMs: 250,
  maxBackoffMs: 30_000,
  userAgent: 'tee-agent',
};

export type Headers = Record<string, string>;

export interface HttpResponse {
  readonly status: number;
  readonly headers: Readonly<Record<string, string | string[] | undefined>>;
  readonly body: Dispatcher.ResponseData['body'];
  /** The URL that answered, after redirects. */
  readonly url: URL;
}

/** A failure worth another attempt: network errors, 5xx, 429, cut bodies. */
export class TransientError extends Error {
  readonly retryAfterMs: number | undefined;
  readonly timeout: boolean;
  constructor(message: string, opts: { retryAfterMs?: number; timeout?: boolean; cause?: unknown } = {}) {
    super(message, { cause: opts.cause });
    this.name = 'TransientError';
    this.retryAfterMs = opts.retryAfterMs;
    this.timeout = opts.timeout ?? false;
  }
}

const TIMEOUT_CODES = new Set(['UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT', 'ETIMEDOUT']);
const NETWORK_CODES = new Set([
  ...TIMEOUT_CODES,
  'ECONNRESET',
  'ECONNREFUSED',
  'ECONNABORTED',
  'EPIPE',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EAI_AGAIN',
  'UND_ERR_SOCKET',
  'UND_ERR_CLOSED',
  'UND_ERR_RES_CONTENT_LENGTH_MISMATCH',
  'ERR_STREAM_PREMATURE_CLOSE',
]);

/** Turn a network-level error into a TransientError, or return it unchanged. */
export function classifyNetworkError(err: unknown): unknown {
  if (err instanceof TransientError) return err;
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code === 'string' && NETWORK_CODES.has(code)) {
    return new TransientError(TIMEOUT_CODES.has(code) ? `timed out (${code})` : `connection failed (${code})`, { timeout: TIMEOUT_CODES.has(code), cause: err });
  }
  if (err instanceof LowSpeedError) return new TransientError(err.message, { timeout: true, cause: err });
  return err;
}

/** Retry-After: delta-seconds or an HTTP date. */
export function parseRetryAfter(value: string | undefined, now = Date.now()): number | undefined {
  if (!value) return undefined;
  if (/^\d+$/.test(value.trim())) return Number(value.trim()) * 1000;
  const t = Date.parse(value);
  return Number.isNaN(t) ? undefined : Math.max(0, t - now);
}

export function header(res: { headers: HttpResponse['headers'] }, name: string): string | undefined {
  const v = res.headers[name];
  return Array.isArray(v) ? v[0] : v;
}

/** Throw the abort reason as an agent error (Cancelled unless the reason already is one). */
export function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw signal.reason instanceof AgentError ? signal.reason : new Cancelled('pull cancelled');
}

/**
 * Run `attempt` until it succeeds, fails with a non-transient error, or the
 * retries run out. `what` names the operation in the final error.
 */
export async function withRetries<T>(settings: HttpSettings, what: string, signal: AbortSignal | undefined, attempt: (n: number) => Promise<T>, onRetry?: (info: { attempt: number; waitMs: number; reason: string }) => void): Promise<T> {
  for (let n = 0; ; n++) {
    throwIfAborted(signal);
    try {
      return await attempt(n);
    } catch (raw) {
      throwIfAborted(signal);
      const err = classifyNetworkError(raw);
      if (!(err instanceof TransientError)) throw err;
      if (n >= settings.retries) {
        const msg = `${what}: ${err.message} (gave up after ${n + 1} attempts)`;
        throw err.timeout ? new RegistryTimeout(msg, { cause: err }) : new RegistryUnavailable(msg, { cause: err });
      }
      const backoff = Math.min(settings.maxBackoffMs, settings.backoffMs * 2 ** n) * (0.75 + Math.random() * 0.5);
      if (err.retryAfterMs !== undefined && err.retryAfterMs > settings.maxBackoffMs) {
        throw new RegistryUnavailable(`${what}: ${err.message}; Retry-After ${Math.ceil(err.retryAfterMs / 1000)} s is longer than the ${settings.maxBackoffMs / 1000} s limit`);
      }
      const waitMs = Math.round(Math.max(backoff, err.retryAfterMs ?? 0));
      onRetry?.({ attempt: n + 1, waitMs, reason: err.message });
      await sleep(waitMs, undefined, { signal }).catch(() => throwIfAborted(signal));
    }
  }
}

export class LowSpeedError extends Error {
  constructor(bytes: number, windowMs: number) {
    super(`transfer too slow: ${bytes} bytes in ${windowMs} ms`);
    this.name = 'LowSpeedError';
  }
}

/**
 * Iterate a response body, cutting it off when fewer than the configured
 * bytes arrive in a window (a trickle defeats the idle timeout).
 */
export async function* watchedBody(body: HttpResponse['body'], settings: HttpSettings): AsyncGenerator<Buffer> {
  const rate = settings.lowSpeedBytesPerSec;
  if (rate <= 0) {
    yield* chunksOf(body);
    return;
  }
  let windowBytes = 0;
  const need = (rate * settings.lowSpeedWindowMs) / 1000;
  const timer = setInterval(() => {
    if (windowBytes < need) body.destroy(new LowSpeedError(windowBytes, settings.lowSpeedWindowMs));
    windowBytes = 0;
  }, settings.lowSpeedWindowMs);
  timer.unref();
  try {
    for await (const chunk of chunksOf(body)) {
      windowBytes += chunk.length;
      yield chunk;
    }
  } finally {
    clearInterval(timer);
  }
}

/** Read a whole body into memory, refusing more than `max` bytes. */
export async function readCapped(res: HttpResponse, max: number, settings: HttpSettings, what: string, onTooLarge: (msg: string) => Error): Promise<Buffer> {
  const declared = Number(header(res, 'content-length') ?? NaN);
  if (declared > max) {
    res.body.destroy();
    throw onTooLarge(`${what} is ${declared} bytes, more than the ${max}-byte limit`);
  }
  try {
    return await collectBody(res.body, max, () => onTooLarge(`${what} is more than the ${max}-byte limit`), watchedBody(res.body, settings));
  } catch (err) {
    throw classifyNetworkError(err);
  }
}

const MAX_REDIRECTS = 5;

export class HttpClient {
  readonly settings: HttpSettings;
  private readonly dispatchers: Dispatchers;

  constructor(settings: HttpSettings) {
    this.settings = settings;
    this.dispatchers = new Dispatchers(settings);
  }

  /**
   * One request, following redirects by hand. `authorization` is sent only
   * to `url`'s own origin; a redirect elsewhere goes without it, and a
   * redirect from HTTPS to HTTP is refused.
   */
  async send(url: URL, opts: { method?: 'GET' | 'HEAD'; headers?: Headers; authorization?: string; signal?: AbortSignal }): Promise<HttpResponse> {
    let current = url;
    for (let hop = 0; ; hop++) {
      const headers: Headers = { 'user-agent': this.settings.userAgent, ...(opts.headers ?? {}) };
      if (opts.authorization && current.origin === url.origin) headers.authorization = opts.authorization;
      let res: Dispatcher.ResponseData;
      try {
        res = await this.dispatchers.for(current).request({
          origin: current.origin,
          path: `${current.pathname}${current.search}`,
          method: opts.method ?? 'GET',
          headers,
          signal: opts.signal ?? null,
        });
      } catch (err) {
        throwIfAborted(opts.signal);
        const classified = classifyNetworkError(err);
        if (classified instanceof TransientError) throw classified;
        // TLS verification, DNS and other definitive failures: name the code, nothing else.
        const code = (err as { code?: unknown } | null)?.code;
        if (typeof code === 'string') throw new RegistryUnavailable(`${current.host}: ${/CERT|SSL|TLS|SIGNATURE|ERR_OSSL/.test(code) ? 'TLS failure' : 'connection failed'} (${code})`, { cause: err });
        throw err;
      }
      const location = res.headers.location;
      if (res.statusCode >= 300 && res.statusCode < 400 && res.statusCode !== 304 && location) {
        await res.body.dump().catch(() => {});
        if (hop >= MAX_REDIRECTS) throw new RegistryUnavailable(`${url.host}: more than ${MAX_REDIRECTS} redirects`);
        const next = new URL(Array.isArray(location) ? location[0]! : location, current);
        if (next.protocol !== 'https:' && next.protocol !== 'http:') throw new RegistryUnavailable(`${url.host}: redirect to unsupported scheme ${next.protocol}`);
        if (current.protocol === 'https:' && next.protocol === 'http:') throw new RegistryUnavailable(`${url.host}: refusing a redirect from HTTPS to plain HTTP (${next.host})`);
        current = next;
        continue;
      }
      return { status: res.statusCode, headers: res.headers, body: res.body, url: current };
    }
  }

  async close(): Promise<void> {
    await this.dispatchers.close();
  }
}
