// Resource URIs and the one interface every secret comes through.
// kbs[+plugin]://<host:port>/<repo>/<type>/<tag>[?query]; the host is ignored,
// the KBS URL comes from config (guest-components RESOURCE_URI.md).

import { AgentError, Code, InvalidArgument } from './errors.ts';

export interface ResourceUri {
  /** "resource" unless the scheme names another plugin (kbs+plugin://). */
  readonly plugin: string;
  readonly repository: string;
  readonly type: string;
  readonly tag: string;
  readonly query: string;
  /** Canonical text: kbs:///repo/type/tag[?query] (or kbs+plugin:///…). */
  readonly text: string;
}

export function parseResourceUri(text: string): ResourceUri {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new InvalidArgument(`bad resource URI ${JSON.stringify(text)}`);
  }
  const m = /^kbs(?:\+([a-z0-9_-]+))?:$/.exec(url.protocol);
  if (!m) throw new InvalidArgument(`bad resource URI ${JSON.stringify(text)}: scheme must be kbs:// or kbs+<plugin>://`);
  const segments = url.pathname.split('/').slice(1).map(decodeURIComponent);
  const plugin = m[1] ?? 'resource';
  if (segments.length !== 3 || segments.some((s) => s === '' || s === '.' || s === '..' || s.includes('/'))) {
    throw new InvalidArgument(`bad resource URI ${JSON.stringify(text)}: expected /<repository>/<type>/<tag>`);
  }
  const [repository, type, tag] = segments as [string, string, string];
  const query = url.search.replace(/^\?/, '');
  const scheme = plugin === 'resource' ? 'kbs' : `kbs+${plugin}`;
  return { plugin, repository, type, tag, query, text: `${scheme}:///${repository}/${type}/${tag}${query ? `?${query}` : ''}` };
}

export class ResourceNotFound extends AgentError {
  constructor(uri: string) {
    super(Code.NOT_FOUND, `resource ${uri} not found`);
  }
}

/**
 * Where keys, policies and other secrets come from: the offline store, the
 * KBS, or files. Implementations never log or embed the returned bytes in
 * errors. The caller owns the returned buffer and zeroes it after use.
 */
export interface KeySource {
  get(uri: ResourceUri, signal?: AbortSignal): Promise<Buffer>;
}
