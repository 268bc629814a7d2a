// signedIdentity: how the docker-reference inside a signature must relate to
// the image the user asked for (containers-policy.json.5, "signedIdentity").
// A signature reference that does not parse matches nothing.

import { formatNamed, isNameOnly, parseNamed, type Named } from './names.ts';

export type SignedIdentity =
  | { readonly type: 'matchExact' }
  | { readonly type: 'matchRepoDigestOrExact' }
  | { readonly type: 'matchRepository' }
  | { readonly type: 'exactReference'; readonly dockerReference: Named }
  | { readonly type: 'exactRepository'; readonly dockerRepository: Named }
  | { readonly type: 'remapIdentity'; readonly prefix: string; readonly signedPrefix: string };

export const DEFAULT_IDENTITY: SignedIdentity = { type: 'matchRepoDigestOrExact' };

function tryParse(text: string): Named | undefined {
  try {
    return parseNamed(text);
  } catch {
    return undefined;
  }
}

/** A tagged image needs exactly that signed reference; a digest-pinned one needs the repository. */
function repoDigestOrExact(intended: Named, signed: Named): boolean {
  if (isNameOnly(signed)) return false;
  if (intended.digest !== undefined && intended.tag === undefined) return signed.name === intended.name;
  return formatNamed(signed) === formatNamed(intended);
}

/** "prefix" matches whole path components of the name: "example.com/ns" matches "example.com/ns/app", not "example.com/nsx". */
function remap(intended: Named, prefix: string, signedPrefix: string): Named | undefined {
  const name = intended.name;
  if (name !== prefix && !name.startsWith(`${prefix}/`)) return intended;
  const text = signedPrefix + formatNamed(intended).slice(prefix.length);
  const out = tryParse(text);
  // The result must already be canonical: remapping "docker.io" onto "busybox" style names is an error upstream too.
  return out && formatNamed(out) === text ? out : undefined;
}

/** Whether a signature's docker-reference satisfies the identity rule for the intended image. */
export function identityMatches(rule: SignedIdentity, intended: Named, signedText: string): boolean {
  const signed = tryParse(signedText);
  if (!signed) return false;
  switch (rule.type) {
    case 'matchExact':
      return !isNameOnly(signed) && !isNameOnly(intended) && formatNamed(signed) === formatNamed(intended);
    case 'matchRepoDigestOrExact':
      return repoDigestOrExact(intended, signed);
    case 'matchRepository':
      return signed.name === intended.name;
    case 'exactReference':
      return !isNameOnly(signed) && formatNamed(signed) === formatNamed(rule.dockerReference);
    case 'exactRepository':
      return signed.name === rule.dockerRepository.name;
    case 'remapIdentity': {
      const remapped = remap(intended, rule.prefix, rule.signedPrefix);
      return remapped !== undefined && repoDigestOrExact(remapped, signed);
    }
  }
}

export function describeIdentity(rule: SignedIdentity): string {
  switch (rule.type) {
    case 'exactReference':
      return `exactReference ${formatNamed(rule.dockerReference)}`;
    case 'exactRepository':
      return `exactRepository ${rule.dockerRepository.name}`;
    case 'remapIdentity':
      return `remapIdentity ${rule.prefix} -> ${rule.signedPrefix}`;
    default:
      return rule.type;
  }
}
