// Docker names as containers-policy.json and registries.d see them: the
// scope lookup order (containers/image policyconfiguration), and references
// that keep "no tag" apart from ":latest", since a signature naming only a
// repository must not pass an exact-match check.

import { parseReference, repositoryName, type ImageReference } from '../image/reference.ts';

/** A normalised Docker name: "registry/repository" plus an optional tag or digest. */
export interface Named {
  readonly name: string;
  readonly tag?: string;
  readonly digest?: string;
}

const hasTagOrDigest = (text: string): boolean => text.includes('@') || text.lastIndexOf(':') > text.lastIndexOf('/');

/** Parse and normalise ("busybox" → "docker.io/library/busybox"), without adding a default tag. Throws on bad input. */
export function parseNamed(text: string): Named {
  const ref = parseReference(text);
  const explicit = hasTagOrDigest(text);
  return {
    name: repositoryName(ref),
    ...(explicit && ref.tag !== undefined ? { tag: ref.tag } : {}),
    ...(ref.digest !== undefined ? { digest: ref.digest } : {}),
  };
}

export function formatNamed(n: Named): string {
  return `${n.name}${n.tag !== undefined ? `:${n.tag}` : ''}${n.digest !== undefined ? `@${n.digest}` : ''}`;
}

export const isNameOnly = (n: Named): boolean => n.tag === undefined && n.digest === undefined;

/**
 * The image as the policy sees it. A reference pinned by digest is that
 * digest; a tag next to it is dropped, the way podman pulls "name:tag@digest"
 * (containers/image refuses such references outright).
 */
export function intendedName(ref: ImageReference): Named {
  const name = repositoryName(ref);
  if (ref.digest !== undefined) return { name, digest: ref.digest };
  return { name, tag: ref.tag ?? 'latest' };
}

/**
 * Scopes to try, most specific first: "name:tag" or "name@digest", the
 * repository, each parent namespace, the host, then "*.domain" wildcards of
 * the host without its port.
 */
export function scopeCandidates(ref: ImageReference): string[] {
  const out = [formatNamed(intendedName(ref))];
  let name = repositoryName(ref);
  for (;;) {
    out.push(name);
    const slash = name.lastIndexOf('/');
    if (slash < 0) break;
    name = name.slice(0, slash);
  }
  let host = name.startsWith('[') ? name.slice(0, name.indexOf(']') + 1) : name.replace(/:\d+$/, '');
  for (;;) {
    const dot = host.indexOf('.');
    if (dot < 0 || host.startsWith('[')) break;
    host = host.slice(dot + 1);
    out.push(`*.${host}`);
  }
  return out;
}

const LABEL = '[a-z0-9](?:[a-z0-9-]*[a-z0-9])?';
const DOMAIN = new RegExp(`^${LABEL}(?:\\.${LABEL})*$`);
const HOST = new RegExp(`^(?:${LABEL}(?:\\.${LABEL})*|\\[[a-f0-9:]+\\])(?::[0-9]+)?$`);

/**
 * Why a scope key can never match, or undefined when it is well formed: a
 * host, "*.domain", or a fully qualified, normalised name with at most one
 * of tag and digest. Scopes are compared as text, so "busybox" would
 * silently match nothing; we say so instead.
 */
export function scopeProblem(scope: string): string | undefined {
  if (scope.startsWith('*.')) return DOMAIN.test(scope.slice(2)) ? undefined : 'a wildcard scope must be "*." followed by a lowercase domain without a port';
  if (!scope.includes('/')) {
    if (!HOST.test(scope)) return 'not a valid lowercase registry host';
    // As in references: a registry host has a dot or a port, or is localhost; "busybox" would be docker.io/library/busybox.
    return /[.:[]/.test(scope) || scope === 'localhost' ? undefined : `not a registry host (did you mean ${JSON.stringify(`docker.io/library/${scope}`)}?)`;
  }
  let n: Named;
  try {
    n = parseNamed(scope);
  } catch (err) {
    return (err as Error).message;
  }
  if (n.tag !== undefined && n.digest !== undefined) return 'a scope cannot have both a tag and a digest';
  const canonical = formatNamed(n);
  // "docker.io/foo" is a namespace scope (of docker.io/foo/bar), even though as a repository it would be docker.io/library/foo.
  if (canonical === scope || /^docker\.io\/[^/:@]+$/.test(scope)) return undefined;
  return `not a fully qualified, normalised name (did you mean ${JSON.stringify(canonical)}?)`;
}
