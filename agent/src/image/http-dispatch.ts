// Connection pools for registry and lookaside requests, direct or through
// the configured proxies (kata's agent.https_proxy / http_proxy / no_proxy):
// one place that decides, per URL, how a request leaves the guest.

import { rootCertificates } from 'node:tls';
import { Agent, ProxyAgent, type Dispatcher } from 'undici';

export interface ProxySettings {
  /** Proxy for https:// requests (CONNECT tunnel), e.g. "http://proxy:3128"; empty: none. */
  readonly httpsProxy: string;
  /** Proxy for plain http:// requests (absolute-form forwarding); empty: none. */
  readonly httpProxy: string;
  /** Comma-separated hosts, domains (".example.com" or "example.com" covers subdomains), IPs, optional ":port", or "*". */
  readonly noProxy: string;
}

export interface DispatchSettings {
  readonly connectTimeoutMs: number;
  readonly idleTimeoutMs: number;
  /** Extra trusted CA certificates (PEM), added to the system roots. */
  readonly caPem?: string;
  readonly proxy?: ProxySettings;
}

/** Whether no_proxy exempts `url` from the proxy (curl's rules: suffix match on name boundaries, optional port). */
export function bypassesProxy(url: URL, noProxy: string): boolean {
  const host = url.hostname.replace(/^\[|\]$/g, '').toLowerCase();
  const port = url.port || (url.protocol === 'https:' ? '443' : '80');
  for (const raw of noProxy.split(',')) {
    const entry = raw.trim().toLowerCase();
    if (entry === '') continue;
    if (entry === '*') return true;
    // A bare IPv6 address has no port; "[v6]:port" and "name:port" may.
    const m = (entry.match(/:/g) ?? []).length > 1 && !entry.startsWith('[') ? [entry, entry, undefined] : /^(\[[^\]]+\]|[^:]+)(?::(\d+))?$/.exec(entry);
    if (!m) continue;
    const name = m[1]!.replace(/^\[|\]$/g, '').replace(/^\*?\./, '');
    if (m[2] && m[2] !== port) continue;
    if (host === name || host.endsWith(`.${name}`)) return true;
  }
  return false;
}

export class Dispatchers {
  private readonly direct: Agent;
  private readonly https: ProxyAgent | undefined;
  private readonly http: ProxyAgent | undefined;
  private readonly noProxy: string;

  constructor(s: DispatchSettings) {
    const ca = s.caPem ? [...rootCertificates, s.caPem] : undefined;
    const tls = { timeout: s.connectTimeoutMs, ...(ca ? { ca } : {}) };
    const pool = { headersTimeout: s.idleTimeoutMs, bodyTimeout: s.idleTimeoutMs, keepAliveTimeout: 10_000, connections: 8 };
    this.direct = new Agent({ connect: tls, ...pool });
    const viaProxy = (uri: string): ProxyAgent => new ProxyAgent({ uri, requestTls: tls, proxyTls: tls, connect: tls, ...pool });
    this.https = s.proxy?.httpsProxy ? viaProxy(s.proxy.httpsProxy) : undefined;
    this.http = s.proxy?.httpProxy ? viaProxy(s.proxy.httpProxy) : undefined;
    this.noProxy = s.proxy?.noProxy ?? '';
  }

  /** The pool a request to `url` goes through. */
  for(url: URL): Dispatcher {
    const proxy = url.protocol === 'https:' ? this.https : this.http;
    return proxy && !bypassesProxy(url, this.noProxy) ? proxy : this.direct;
  }

  async close(): Promise<void> {
    await Promise.all([this.direct.close(), this.https?.close(), this.http?.close()]);
  }
}
