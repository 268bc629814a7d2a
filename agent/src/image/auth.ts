// Registry credentials and challenges: auth.json (containers-auth.json
// subset that image-rs reads), WWW-Authenticate parsing, and the per-scope
// bearer token cache. Credentials live only in memory and never reach a log
// or an error message.

import { createHash } from 'node:crypto';
import { RegistryConfigError } from './registry-errors.ts';
import { DOCKER_HUB } from './reference.ts';

export interface Credentials {
  readonly username: string;
  readonly password: string;
}

/** "user:pass" (kata's source_creds, auth.json's decoded auth). The password may hold colons. */
export function parseUserPass(text: string, what: string): Credentials {
  const i = text.indexOf(':');
  if (i <= 0) throw new RegistryConfigError(`${what}: expected "user:password"`);
  return { username: text.slice(0, i), password: text.slice(i + 1) };
}

/** A stable, non-reversible identity for cache keys, so tokens never mix across credentials. */
export function credentialsId(c: Credentials | undefined): string {
  if (!c) return 'anonymous';
  return createHash('sha256').update(c.username).update('\0').update(c.password).digest('hex').slice(0, 32);
}

export function basicHeader(c: Credentials): string {
  return `Basic ${Buffer.from(`${c.username}:${c.password}`).toString('base64')}`;
}

/** Keys that mean Docker Hub in auth files written by docker, podman and skopeo. */
const HUB_ALIASES = ['docker.io', 'index.docker.io', 'registry-1.docker.io'];

/** Normalise an auth.json key: strip a scheme, the "/v1/" or "/v2/" suffix docker writes, and trailing slashes. */
function normaliseKey(key: string): string {
  let k = key.replace(/^https?:\/\//, '').replace(/\/+$/, '');
  k = k.replace(/\/v[12]$/, '');
  const [host = '', ...path] = k.split('/');
  const h = HUB_ALIASES.includes(host.toLowerCase()) ? DOCKER_HUB : host.toLowerCase();
  return [h, ...path].join('/');
}

/**
 * Credentials from an auth.json document: `{"auths": {"<key>": {"auth": base64("user:pass")}}}`.
 * Lookup is by longest prefix of "registry/repository" on path boundaries.
 */
export class AuthFile {
  private readonly entries: ReadonlyMap<string, Credentials>;

  private constructor(entries: Map<string, Credentials>) {
    this.entries = entries;
  }

  static empty(): AuthFile {
    return new AuthFile(new Map());
  }

  /** Parse auth.json text; `source` names it in errors (never its content). */
  static parse(text: string, source: string): AuthFile {
    let doc: unknown;
    try {
      doc = JSON.parse(text);
    } catch {
      throw new RegistryConfigError(`${source}: not valid JSON`);
    }
    const auths = (doc as { auths?: unknown } | null)?.auths;
    if (typeof doc !== 'object' || doc === null || (auths !== undefined && (typeof auths !== 'object' || auths === null || Array.isArray(auths)))) {
      throw new RegistryConfigError(`${source}: expected {"auths": {...}}`);
    }
    const entries = new Map<string, Credentials>();
    for (const [key, value] of Object.entries((auths ?? {}) as Record<string, unknown>)) {
      const auth = (value as { auth?: unknown } | null)?.auth;
      if (typeof auth !== 'string' || auth === '') continue; // identitytoken-only or helper entries: nothing we can use
      const decoded = Buffer.from(auth, 'base64').toString('utf8');
      entries.set(normaliseKey(key), parseUserPass(decoded, `${source}: auths[${JSON.stringify(key)}]`));
    }
    return new AuthFile(entries);
  }

  /** Credentials for registry/repository: "host/ns/repo", then "host/ns", then "host". */
  lookup(registry: string, repository: string): Credentials | undefined {
    const parts = [registry, ...repository.split('/')];
    for (let n = parts.length; n >= 1; n--) {
      const hit = this.entries.get(parts.slice(0, n).join('/'));
      if (hit) return hit;
    }
    return undefined;
  }

  get size(): number {
    return this.entries.size;
  }
}

export interface Challenge {
  /** Lowercase scheme: "bearer", "basic". */
  readonly scheme: string;
  readonly params: Readonly<Record<string, string>>;
}

/**
 * Parse WWW-Authenticate (RFC 9110 §11.6.1): one or more challenges, each a
 * scheme and comma-separated auth-params whose values may be quoted strings
 * holding commas and escaped quotes.
 */
export function parseWwwAuthenticate(header: string): Challenge[] {
  const out: Array<{ scheme: string; params: Record<string, string> }> = [];
  let i = 0;
  const n = header.length;
  const skipWs = (): void => {
    while (i < n && (header[i] === ' ' || header[i] === '\t')) i++;
  };
  const token = (): string => {
    const start = i;
    while (i < n && /[!#$%&'*+.^_`|~0-9A-Za-z-]/.test(header[i]!)) i++;
    return header.slice(start, i);
  };
  while (i < n) {
    skipWs();
    if (header[i] === ',') {
      i++;
      continue;
    }
    const word = token();
    if (!word) {
      i++; // junk character: skip it rather than loop forever
      continue;
    }
    skipWs();
    if (header[i] === '=' && out.length > 0) {
      // An auth-param of the current challenge.
      i++;
      skipWs();
      let value = '';
      if (header[i] === '"') {
        i++;
        while (i < n && header[i] !== '"') {
          if (header[i] === '\\' && i + 1 < n) i++;
          value += header[i];
          i++;
        }
        i++; // closing quote
      } else {
        value = token();
      }
      out[out.length - 1]!.params[word.toLowerCase()] = value;
    } else {
      out.push({ scheme: word.toLowerCase(), params: {} });
    }
  }
  return out;
}

interface CachedToken {
  readonly value: string;
  readonly expiresAt: number;
}

/** Bearer tokens keyed by origin, scope and credential identity, dropped shortly before they expire. */
export class TokenCache {
  private readonly tokens = new Map<string, CachedToken>();
  private readonly now: () => number;

  constructor(now: () => number = Date.now) {
    this.now = now;
  }

  get(key: string): string | undefined {
    const t = this.tokens.get(key);
    if (!t) return undefined;
    if (t.expiresAt <= this.now()) {
      this.tokens.delete(key);
      return undefined;
    }
    return t.value;
  }

  /** expires_in defaults to 60 s (distribution token spec); keep a 10 % or 5 s margin. */
  set(key: string, value: string, expiresInSeconds: number | undefined): void {
    const ttl = (expiresInSeconds && expiresInSeconds > 0 ? expiresInSeconds : 60) * 1000;
    this.tokens.set(key, { value, expiresAt: this.now() + ttl - Math.min(5000, ttl / 10) });
  }

  delete(key: string): void {
    this.tokens.delete(key);
  }
}
