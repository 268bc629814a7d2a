// Image references: parse and normalise the way docker and containers/image
// do (distribution/reference grammar), so that policy scopes, auth.json keys
// and registries.conf prefixes all see the same canonical names.

import { InvalidArgument } from '../errors.ts';

export const DOCKER_HUB = 'docker.io';
/** The host that serves docker.io's registry API. */
export const DOCKER_HUB_API = 'registry-1.docker.io';

const COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const DOMAIN = /^(?:(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])(?:\.(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]))*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?$/;
const TAG = /^[\w][\w.-]{0,127}$/;
const DIGEST = /^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/;
const SHA256 = /^sha256:[a-f0-9]{64}$/;
const SHA512 = /^sha512:[a-f0-9]{128}$/;

export interface ImageReference {
  /** Registry host as written in references, with port: "docker.io", "127.0.0.1:5000". */
  readonly registry: string;
  /** Repository path: "library/busybox". */
  readonly repository: string;
  /** Tag; "latest" when the text had neither tag nor digest. */
  readonly tag?: string;
  /** "sha256:<hex>" when pinned by digest. */
  readonly digest?: string;
  /** False for short names ("busybox", "foo/bar"), which registries.conf may qualify. */
  readonly qualified: boolean;
  /** For short names, the path as written ("busybox"), before docker.io's "library/". */
  readonly shortName?: string;
}

export class BadReference extends InvalidArgument {
  constructor(text: string, why: string) {
    super(`bad image reference ${JSON.stringify(text.slice(0, 300))}: ${why}`);
  }
}

/** Only sha256 and sha512 digests in their canonical lowercase form are accepted. */
export function checkDigest(digest: string): string {
  if (!SHA256.test(digest) && !SHA512.test(digest)) {
    if (DIGEST.test(digest) && !/^sha(256|512):/.test(digest)) throw new InvalidArgument(`unsupported digest ${JSON.stringify(digest.slice(0, 150))}: only sha256 and sha512 in lowercase hex`);
    throw new InvalidArgument(`malformed digest ${JSON.stringify(digest.slice(0, 150))}`);
  }
  return digest;
}

export function parseReference(text: string): ImageReference {
  if (text.length === 0) throw new BadReference(text, 'empty');
  if (text.length > 512) throw new BadReference(text, 'too long');
  let rest = text;
  let digest: string | undefined;
  const at = rest.indexOf('@');
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    try {
      checkDigest(digest);
    } catch (err) {
      throw new BadReference(text, (err as Error).message);
    }
  }
  let tag: string | undefined;
  const colon = rest.lastIndexOf(':');
  if (colon > rest.lastIndexOf('/')) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!TAG.test(tag)) throw new BadReference(text, 'invalid tag');
  }
  const slash = rest.indexOf('/');
  const first = slash < 0 ? '' : rest.slice(0, slash);
  // distribution/reference: the first component is a host when it has a dot
  // or a port, or is "localhost"; otherwise the name is on Docker Hub.
  const isHost = slash >= 0 && (first.includes('.') || first.includes(':') || first === 'localhost' || first.startsWith('['));
  let registry = isHost ? first : DOCKER_HUB;
  let repository = isHost ? rest.slice(slash + 1) : rest;
  if (isHost && !DOMAIN.test(registry)) throw new BadReference(text, 'invalid registry host');
  registry = registry.toLowerCase();
  if (registry === 'index.docker.io' || registry === DOCKER_HUB_API) registry = DOCKER_HUB;
  if (registry === DOCKER_HUB && !repository.includes('/')) repository = `library/${repository}`;
  if (repository.length === 0 || !repository.split('/').every((c) => COMPONENT.test(c))) {
    throw new BadReference(text, repository.toLowerCase() === repository ? 'invalid repository name' : 'repository names must be lowercase');
  }
  if (registry.length + 1 + repository.length > 255) throw new BadReference(text, 'name longer than 255 characters');
  if (tag === undefined && digest === undefined) tag = 'latest';
  return {
    registry,
    repository,
    ...(tag !== undefined ? { tag } : {}),
    ...(digest !== undefined ? { digest } : {}),
    qualified: isHost,
    ...(isHost ? {} : { shortName: rest }),
  };
}

/** "registry/repository" — the name policy scopes and auth keys match against. */
export function repositoryName(ref: ImageReference): string {
  return `${ref.registry}/${ref.repository}`;
}

/** Canonical text: registry/repository[:tag][@digest]. */
export function formatReference(ref: ImageReference): string {
  return `${repositoryName(ref)}${ref.tag !== undefined ? `:${ref.tag}` : ''}${ref.digest !== undefined ? `@${ref.digest}` : ''}`;
}

/** What to ask the registry for: the digest when pinned, else the tag. */
export function manifestReference(ref: ImageReference): string {
  return ref.digest ?? ref.tag ?? 'latest';
}

/** The host to open connections to for a registry name. */
export function apiHost(registry: string): string {
  return registry === DOCKER_HUB ? DOCKER_HUB_API : registry;
}

/** Same image at another registry/repository (mirrors, remaps), keeping tag and digest. */
export function withLocation(ref: ImageReference, registry: string, repository: string): ImageReference {
  const { shortName: _unused, ...rest } = ref;
  return { ...rest, registry, repository, qualified: true };
}
