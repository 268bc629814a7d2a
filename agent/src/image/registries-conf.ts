// The registries.conf subset image-rs honours (containers-registries.conf.5,
// v2 format): unqualified-search-registries, [[registry]] prefix / location /
// insecure / blocked with "*." wildcard prefixes, and [[registry.mirror]]
// tried in order before the registry itself. Keys outside the subset are
// ignored with a warning, as containers/image ignores what it does not know.

import { parse as parseToml } from 'smol-toml';
import type { Logger } from 'pino';
import { RegistryConfigError, RegistryDenied } from './registry-errors.ts';
import { DOCKER_HUB, parseReference, repositoryName, withLocation, type ImageReference } from './reference.ts';

export interface MirrorEntry {
  readonly location: string;
  readonly insecure: boolean;
  /** Use this mirror only for references pinned by digest. */
  readonly digestOnly: boolean;
}

export interface RegistryEntry {
  /** "host[/path]" or "*.domain". */
  readonly prefix: string;
  /** Where the prefix is served from; the prefix itself when not remapped (wildcards cannot be remapped). */
  readonly location: string;
  readonly insecure: boolean;
  readonly blocked: boolean;
  readonly mirrors: readonly MirrorEntry[];
}

export interface RegistriesConf {
  readonly unqualifiedSearch: readonly string[];
  readonly registries: readonly RegistryEntry[];
}

export const EMPTY_REGISTRIES_CONF: RegistriesConf = { unqualifiedSearch: [], registries: [] };

/** One place to try: a source reference and how to reach it. */
export interface PullSource {
  /** The reference to fetch, rewritten to the mirror or remapped location. */
  readonly ref: ImageReference;
  /** Plain HTTP instead of HTTPS. */
  readonly insecure: boolean;
  readonly kind: 'mirror' | 'primary';
}

/** One candidate name (a search registry, or the reference itself) and its sources in order. */
export interface PullCandidate {
  /** The fully qualified name the user's reference stands for; what policy and identities are checked against. */
  readonly ref: ImageReference;
  readonly sources: readonly PullSource[];
}

const TOP_KEYS = new Set(['unqualified-search-registries', 'registry']);
const REGISTRY_KEYS = new Set(['prefix', 'location', 'insecure', 'blocked', 'mirror', 'mirror-by-digest-only']);
const MIRROR_KEYS = new Set(['location', 'insecure', 'pull-from-mirror']);

function isTable(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Normalise a prefix or location the way references are: lowercase host, docker.io aliases. */
function normaliseName(text: string, where: string): string {
  const t = text.replace(/^(?:https?|docker):\/\//, '').replace(/\/+$/, '');
  if (t === '' || /[\s@]/.test(t)) throw new RegistryConfigError(`${where}: invalid name ${JSON.stringify(text)}`);
  const [host = '', ...path] = t.split('/');
  const h = host.toLowerCase();
  return [h === 'index.docker.io' ? DOCKER_HUB : h, ...path].join('/');
}

export function parseRegistriesConf(text: string, source: string, log?: Logger): RegistriesConf {
  let doc: Record<string, unknown>;
  try {
    doc = parseToml(text) as Record<string, unknown>;
  } catch (err) {
    throw new RegistryConfigError(`${source}: not valid TOML: ${(err as Error).message.split('\n')[0]}`);
  }
  const ignored: string[] = [];
  for (const k of Object.keys(doc)) if (!TOP_KEYS.has(k)) ignored.push(k);

  const search = doc['unqualified-search-registries'] ?? [];
  if (!Array.isArray(search) || !search.every((s) => typeof s === 'string')) {
    throw new RegistryConfigError(`${source}: unqualified-search-registries must be an array of strings`);
  }
  const unqualifiedSearch = (search as string[]).map((s) => {
    const n = normaliseName(s, `${source}: unqualified-search-registries`);
    if (n.includes('/')) throw new RegistryConfigError(`${source}: unqualified-search-registries: ${JSON.stringify(s)} is not a host`);
    return n;
  });

  const list = doc.registry ?? [];
  if (!Array.isArray(list) || !list.every(isTable)) throw new RegistryConfigError(`${source}: [[registry]] must be an array of tables`);
  const registries: RegistryEntry[] = [];
  const seen = new Set<string>();
  (list as Array<Record<string, unknown>>).forEach((r, i) => {
    const where = `${source}: registry[${i}]`;
    for (const k of Object.keys(r)) if (!REGISTRY_KEYS.has(k)) ignored.push(`registry.${k}`);
    const str = (k: string): string | undefined => {
      const v = r[k];
      if (v === undefined) return undefined;
      if (typeof v !== 'string') throw new RegistryConfigError(`${where}.${k}: expected a string`);
      return v;
    };
    const flag = (obj: Record<string, unknown>, k: string, w: string): boolean => {
      const v = obj[k];
      if (v === undefined) return false;
      if (typeof v !== 'boolean') throw new RegistryConfigError(`${w}.${k}: expected a boolean`);
      return v;
    };
    const rawPrefix = str('prefix');
    const rawLocation = str('location');
    if (rawPrefix === undefined && rawLocation === undefined) throw new RegistryConfigError(`${where}: needs a prefix or a location`);
    const wildcard = rawPrefix?.startsWith('*.') ?? false;
    let prefix: string;
    if (wildcard) {
      const domain = rawPrefix!.slice(2).toLowerCase();
      if (!/^[a-z0-9-]+(?:\.[a-z0-9-]+)*$/.test(domain)) throw new RegistryConfigError(`${where}.prefix: invalid wildcard ${JSON.stringify(rawPrefix)}`);
      if (rawLocation !== undefined && rawLocation !== '') throw new RegistryConfigError(`${where}: a wildcard prefix cannot have a location`);
      prefix = `*.${domain}`;
    } else {
      prefix = normaliseName(rawPrefix ?? rawLocation!, `${where}.prefix`);
    }
    const location = wildcard ? '' : rawLocation ? normaliseName(rawLocation, `${where}.location`) : prefix;
    if (seen.has(prefix)) throw new RegistryConfigError(`${where}: prefix ${JSON.stringify(prefix)} defined twice`);
    seen.add(prefix);
    const mirrorsRaw = r.mirror ?? [];
    if (!Array.isArray(mirrorsRaw) || !mirrorsRaw.every(isTable)) throw new RegistryConfigError(`${where}.mirror must be an array of tables`);
    const regDigestOnly = flag(r, 'mirror-by-digest-only', where);
    const mirrors = (mirrorsRaw as Array<Record<string, unknown>>).map((m, j): MirrorEntry => {
      const mw = `${where}.mirror[${j}]`;
      for (const k of Object.keys(m)) if (!MIRROR_KEYS.has(k)) ignored.push(`registry.mirror.${k}`);
      if (typeof m.location !== 'string') throw new RegistryConfigError(`${mw}.location: expected a string`);
      const pfm = m['pull-from-mirror'];
      if (pfm !== undefined && pfm !== 'all' && pfm !== 'digest-only' && pfm !== 'tag-only') {
        throw new RegistryConfigError(`${mw}.pull-from-mirror: expected "all", "digest-only" or "tag-only"`);
      }
      if (pfm === 'tag-only') ignored.push('registry.mirror.pull-from-mirror="tag-only"');
      return { location: normaliseName(m.location, `${mw}.location`), insecure: flag(m, 'insecure', mw), digestOnly: regDigestOnly || pfm === 'digest-only' };
    });
    registries.push({ prefix, location, insecure: flag(r, 'insecure', where), blocked: flag(r, 'blocked', where), mirrors });
  });
  if (ignored.length > 0) log?.warn({ source, keys: [...new Set(ignored)] }, 'registries.conf: ignoring settings outside the supported subset');
  return { unqualifiedSearch, registries };
}

/** Does prefix match "registry/repository" on a path boundary? Returns the matched length, or -1. */
function matchLength(entry: RegistryEntry, ref: ImageReference): number {
  const name = repositoryName(ref);
  if (entry.prefix.startsWith('*.')) {
    const host = ref.registry.replace(/:\d+$/, '');
    return host.endsWith(entry.prefix.slice(1)) ? entry.prefix.length : -1;
  }
  return name === entry.prefix || name.startsWith(`${entry.prefix}/`) ? entry.prefix.length : -1;
}

/** The [[registry]] entry for a reference: longest matching prefix. */
export function findRegistry(conf: RegistriesConf, ref: ImageReference): RegistryEntry | undefined {
  let best: RegistryEntry | undefined;
  let bestLen = -1;
  for (const e of conf.registries) {
    const len = matchLength(e, ref);
    if (len > bestLen) {
      best = e;
      bestLen = len;
    }
  }
  return best;
}

/** Replace the matched prefix of ref's name by location. */
function relocate(ref: ImageReference, entry: RegistryEntry, location: string): ImageReference {
  if (entry.prefix.startsWith('*.')) return ref;
  const rest = repositoryName(ref).slice(entry.prefix.length);
  const target = `${location}${rest}`;
  const slash = target.indexOf('/');
  if (slash < 0) throw new RegistryConfigError(`registries.conf: ${JSON.stringify(location)} leaves no repository for ${repositoryName(ref)}`);
  const rewritten = parseReference(`${target}${ref.tag !== undefined ? `:${ref.tag}` : ''}${ref.digest !== undefined ? `@${ref.digest}` : ''}`);
  return withLocation(ref, rewritten.registry, rewritten.repository);
}

/** Sources for one fully qualified name: its mirrors in order, then its (possibly remapped) location. */
export function sourcesFor(conf: RegistriesConf, ref: ImageReference, insecureHosts: ReadonlySet<string> = new Set()): PullSource[] {
  const entry = findRegistry(conf, ref);
  const insecureHost = (r: ImageReference): boolean => insecureHosts.has(r.registry);
  if (!entry) return [{ ref, insecure: insecureHost(ref), kind: 'primary' }];
  if (entry.blocked) throw new RegistryDenied(`registry ${repositoryName(ref)} is blocked by registries.conf`);
  const out: PullSource[] = [];
  for (const m of entry.mirrors) {
    if (m.digestOnly && ref.digest === undefined) continue;
    const mref = relocate(ref, entry, m.location);
    out.push({ ref: mref, insecure: m.insecure || insecureHost(mref), kind: 'mirror' });
  }
  const primary = entry.location === entry.prefix ? ref : relocate(ref, entry, entry.location);
  out.push({ ref: primary, insecure: entry.insecure || insecureHost(primary), kind: 'primary' });
  return out;
}

/**
 * Every name a reference may stand for, in the order to try them. A short
 * name expands through unqualified-search-registries (docker.io when none
 * are configured, as image-rs does); a qualified one stands for itself.
 */
export function resolveCandidates(conf: RegistriesConf, ref: ImageReference, insecureHosts?: ReadonlySet<string>): PullCandidate[] {
  const names: ImageReference[] = [];
  if (ref.qualified || ref.shortName === undefined || conf.unqualifiedSearch.length === 0) names.push(ref);
  else {
    const suffix = `${ref.tag !== undefined ? `:${ref.tag}` : ''}${ref.digest !== undefined ? `@${ref.digest}` : ''}`;
    for (const host of conf.unqualifiedSearch) {
      const path = host === DOCKER_HUB ? ref.repository : ref.shortName;
      names.push(parseReference(`${host}/${path}${suffix}`));
    }
  }
  if (names.length === 1) return [{ ref: names[0]!, sources: sourcesFor(conf, names[0]!, insecureHosts) }];
  // A blocked search registry is skipped; the short name is refused only when every one is blocked.
  const out: PullCandidate[] = [];
  let denied: unknown;
  for (const name of names) {
    try {
      out.push({ ref: name, sources: sourcesFor(conf, name, insecureHosts) });
    } catch (err) {
      if (!(err instanceof RegistryDenied)) throw err;
      denied = err;
    }
  }
  if (out.length === 0) throw denied;
  return out;
}
