// The KBS client: RCAR once, then the token and its TEE key are reused for
// every resource until the token expires or the KBS answers 401. Concurrent
// callers share one handshake. Every exchange is bounded in time and
// retried a bounded number of times when the KBS is down, slow or 5xx.

import type { FlattenedJWE } from 'jose';
import type { Logger } from 'pino';
import { Agent, request, type Dispatcher } from 'undici';
import { Cancelled } from '../errors.ts';
import { collectBody } from '../http-body.ts';
import { ResourceNotFound, type KeySource, type ResourceUri } from '../resource.ts';
import type { Attester } from './attester.ts';
import { KbsDenied, KbsProtocolError, KbsTimeout, KbsUnavailable, ResourceDecryptFailed } from './errors.ts';
import type { InitData } from './initdata.ts';
import * as rcar from './rcar.ts';
import { decryptResponse, generateTeeKey, type TeeKey, type TeeKeyAlgorithm } from './tee-key.ts';

/** Resource bodies are keys, policies and small files; anything larger is refused. */
const MAX_BODY = 16 << 20;

export interface KbsClientOptions {
  /** Base URL, e.g. https://kbs.example:8080 (no /kbs/v0). */
  readonly url: string;
  /** PEM CA bundle trusted for an https URL; the system store when absent. */
  readonly ca?: string | Buffer | undefined;
  readonly attester: Attester;
  readonly teeKeyAlgorithm: TeeKeyAlgorithm;
  readonly timeoutMs: number;
  readonly retries: number;
  readonly retryDelayMs: number;
  readonly resourceAttempts: number;
  readonly initdata?: InitData | undefined;
  readonly log: Logger;
}

interface Session {
  readonly key: TeeKey;
  readonly token: rcar.TokenInfo;
  readonly cookie: { value: string; expires: number | undefined } | undefined;
}

interface HttpResult {
  readonly status: number;
  readonly headers: Record<string, string | string[] | undefined>;
  readonly body: Buffer;
}

export class KbsClient {
  private readonly opts: KbsClientOptions;
  private readonly base: string;
  private readonly dispatcher: Dispatcher;
  private session: Session | undefined;
  private pending: Promise<Session> | undefined;
  /** Completed RCAR handshakes, for tests and the benchmark. */
  attestations = 0;

  constructor(opts: KbsClientOptions) {
    this.opts = opts;
    this.base = opts.url.replace(/\/+$/, '');
    this.dispatcher = new Agent({
      connect: { timeout: opts.timeoutMs, ...(opts.ca ? { ca: opts.ca } : {}) },
      headersTimeout: opts.timeoutMs,
      bodyTimeout: opts.timeoutMs,
      keepAliveTimeout: 30_000,
    });
  }

  /** The current token, attesting first when there is none or it expired. */
  async token(signal?: AbortSignal): Promise<string> {
    return (await this.current(signal)).token.token;
  }

  async getResource(uri: ResourceUri, signal?: AbortSignal): Promise<Buffer> {
    const path = rcar.resourcePath(uri);
    let last = '';
    for (let attempt = 1; attempt <= this.opts.resourceAttempts; attempt++) {
      const session = await this.current(signal);
      const headers: Record<string, string> = { authorization: `Bearer ${session.token.token}` };
      if (session.cookie && (session.cookie.expires === undefined || session.cookie.expires > Date.now())) {
        headers.cookie = `${rcar.SESSION_COOKIE}=${session.cookie.value}`;
      }
      const res = await this.retrying(`GET ${uri.text}`, signal, () => this.send('GET', path, headers, undefined, signal));
      if (res.status === 200) return this.decrypt(session, uri, res.body);
      const err = rcar.parseErrorInfo(res.body);
      if (res.status === 404) throw new ResourceNotFound(uri.text);
      if (res.status !== 401) throw new KbsProtocolError(`KBS answered ${res.status} for ${uri.text}`);
      // Trustee answers 401 for everything; only token trouble is worth a new handshake.
      if (err.variant === 'PolicyDeny') throw new KbsDenied(`KBS policy denies ${uri.text}`);
      if (err.variant === 'PluginInternalError') throw new ResourceNotFound(uri.text);
      last = `${err.variant}: ${err.detail}`;
      this.opts.log.warn({ uri: uri.text, attempt, error: last }, 'KBS refused the token; attesting again');
      if (this.session === session) this.session = undefined;
    }
    throw new KbsDenied(`KBS refused ${uri.text} after ${this.opts.resourceAttempts} attestations (${last})`);
  }

  async close(): Promise<void> {
    this.session = undefined;
    await this.dispatcher.close();
  }

  private async decrypt(session: Session, uri: ResourceUri, body: Buffer): Promise<Buffer> {
    const jwe = rcar.parseJson(body, 'resource response');
    if (typeof jwe !== 'object' || jwe === null || typeof (jwe as FlattenedJWE).ciphertext !== 'string') {
      throw new KbsProtocolError(`KBS response for ${uri.text} is not a JWE`);
    }
    try {
      return await decryptResponse(session.key, jwe as FlattenedJWE);
    } catch {
      throw new ResourceDecryptFailed(uri.text);
    }
  }

  private current(signal?: AbortSignal): Promise<Session> {
    if (this.session && rcar.tokenUsable(this.session.token)) return Promise.resolve(this.session);
    // One handshake for all waiting callers; it is bounded by the timeouts, and
    // a caller that gives up stops waiting without cancelling it for the others.
    this.pending ??= this.retrying('attestation', undefined, () => this.handshake()).finally(() => (this.pending = undefined));
    return abortable(this.pending, signal);
  }

  private async handshake(signal?: AbortSignal): Promise<Session> {
    const t0 = performance.now();
    const { attester, log } = this.opts;
    const key = await generateTeeKey(this.opts.teeKeyAlgorithm);
    const json = { 'content-type': 'application/json' };

    const auth = await this.send('POST', `${rcar.KBS_PREFIX}/auth`, json, JSON.stringify(rcar.authRequest(attester.tee)), signal);
    this.expectOk(auth, 'auth');
    let cookie = rcar.sessionCookie(auth.headers['set-cookie']);
    if (!cookie) throw new KbsProtocolError('KBS auth response sets no kbs-session-id cookie');
    const challenge = rcar.parseChallenge(rcar.parseJson(auth.body, 'challenge'));

    const additionalEvidence = '';
    const data = rcar.runtimeData(key.publicJwk, challenge.nonce, additionalEvidence);
    const evidence = await attester.evidence(rcar.runtimeDataDigest(challenge.hash, data));
    const body = rcar.attestationRequest({ pubkey: key.publicJwk, nonce: challenge.nonce, evidence, additionalEvidence, initdata: this.opts.initdata });

    const attest = await this.send('POST', `${rcar.KBS_PREFIX}/attest`, { ...json, cookie: `${rcar.SESSION_COOKIE}=${cookie.value}` }, JSON.stringify(body), signal);
    this.expectOk(attest, 'attest');
    cookie = rcar.sessionCookie(attest.headers['set-cookie']) ?? cookie;
    const token = rcar.parseToken(rcar.parseJson(attest.body, 'attest response'));
    this.attestations++;
    this.session = { key, token, cookie };
    log.info({ kbs: this.base, tee: attester.tee, hash: challenge.hash, exp: token.exp, ms: Math.round(performance.now() - t0) }, 'attested to the KBS');
    return this.session;
  }

  private expectOk(res: HttpResult, step: string): void {
    if (res.status === 200) return;
    const err = rcar.parseErrorInfo(res.body);
    if (res.status === 401 || res.status === 403) throw new KbsDenied(`KBS rejected ${step} (${err.variant}: ${err.detail})`);
    throw new KbsProtocolError(`KBS answered ${res.status} to ${step} (${err.variant}: ${err.detail})`);
  }

  /** Retry what failed on the way (unreachable, timed out, 5xx); give up after kbc.retries attempts. */
  private async retrying<T>(what: string, signal: AbortSignal | undefined, fn: () => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await fn();
      } catch (err) {
        const transient = err instanceof KbsUnavailable || err instanceof KbsTimeout;
        if (!transient || attempt >= this.opts.retries || signal?.aborted) throw err;
        this.opts.log.warn({ kbs: this.base, what, attempt, error: (err as Error).message }, 'KBS exchange failed; retrying');
        await sleep(this.opts.retryDelayMs, signal);
      }
    }
  }

  private async send(method: 'GET' | 'POST', path: string, headers: Record<string, string>, body: string | undefined, signal?: AbortSignal): Promise<HttpResult> {
    if (signal?.aborted) throw new Cancelled();
    const timeout = AbortSignal.timeout(this.opts.timeoutMs);
    const combined = signal ? AbortSignal.any([signal, timeout]) : timeout;
    const where = `${method} ${this.base}${path.split('?')[0]}`;
    try {
      const res = await request(this.base + path, { method, headers, body, signal: combined, dispatcher: this.dispatcher });
      const bytes = await collectBody(res.body, MAX_BODY, () => new KbsProtocolError(`KBS response to ${where} exceeds ${MAX_BODY} bytes`));
      if (res.statusCode >= 500) throw new KbsUnavailable(`KBS answered ${res.statusCode} to ${where}`);
      return { status: res.statusCode, headers: res.headers, body: bytes };
    } catch (err) {
      if (err instanceof KbsProtocolError || err instanceof KbsUnavailable) throw err;
      if (signal?.aborted) throw new Cancelled();
      const code = (err as { code?: string }).code;
      if (timeout.aborted || code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_BODY_TIMEOUT' || code === 'UND_ERR_CONNECT_TIMEOUT') {
        throw new KbsTimeout(`${where} timed out after ${this.opts.timeoutMs} ms`);
      }
      throw new KbsUnavailable(`${where} failed: ${code ?? (err as Error).message}`, { cause: err });
    }
  }
}

function abortable<T>(p: Promise<T>, signal?: AbortSignal): Promise<T> {
  if (!signal) return p;
  if (signal.aborted) return Promise.reject(new Cancelled());
  return new Promise((resolve, reject) => {
    const onAbort = (): void => reject(new Cancelled());
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
  });
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener(
      'abort',
      () => {
        clearTimeout(timer);
        reject(new Cancelled());
      },
      { once: true },
    );
  });
}

/** Every kbs:/// secret through the KBS client, with its token reused across calls. */
export class KbsKeySource implements KeySource {
  readonly client: KbsClient;
  constructor(client: KbsClient) {
    this.client = client;
  }
  get(uri: ResourceUri, signal?: AbortSignal): Promise<Buffer> {
    return this.client.getResource(uri, signal);
  }
}
