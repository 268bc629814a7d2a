// containers-policy.json, parsed strictly: unknown fields, duplicate keys,
// empty requirement lists, malformed scopes and unsupported options are
// errors naming the JSON path, because a policy we misread would silently
// let images through. Only the "docker" transport is evaluated; the other
// containers/image transports are checked and ignored.

import { parseResourceUri } from '../resource.ts';
import type { ImageReference } from '../image/reference.ts';
import { PolicyInvalid } from './errors.ts';
import { DEFAULT_IDENTITY, type SignedIdentity } from './identity.ts';
import { isNameOnly, parseNamed, scopeCandidates, scopeProblem, type Named } from './names.ts';
import { checkKeys, describe, getString, isObject, parseStrictJson, StrictJsonError, type JsonPath } from './strict-json.ts';

/** Where a key comes from: a file, a kbs:/// resource, or the policy text itself. */
export type KeySpec = { readonly kind: 'path'; readonly path: string } | { readonly kind: 'data'; readonly data: string };

export type Requirement =
  | { readonly type: 'insecureAcceptAnything' }
  | { readonly type: 'reject' }
  | { readonly type: 'signedBy'; readonly keys: readonly KeySpec[]; readonly signedIdentity: SignedIdentity }
  | { readonly type: 'sigstoreSigned'; readonly keys: readonly KeySpec[]; readonly signedIdentity: SignedIdentity };

export type Requirements = readonly [Requirement, ...Requirement[]];

export interface Policy {
  readonly default: Requirements;
  /** transports.docker, scope → requirements. */
  readonly docker: ReadonlyMap<string, Requirements>;
}

/** The requirements that apply to an image, and the scope they came from ("default" for the default). */
export interface ScopedRequirements {
  readonly scope: string;
  readonly requirements: Requirements;
}

/** containers/image's transport names; any other is an error, as upstream. */
const TRANSPORTS = ['atomic', 'containers-storage', 'dir', 'docker', 'docker-archive', 'docker-daemon', 'oci', 'oci-archive', 'ostree', 'sif', 'tarball'];
const UNSUPPORTED_SIGSTORE = ['fulcio', 'pki', 'rekorPublicKeyPath', 'rekorPublicKeyPaths', 'rekorPublicKeyData', 'rekorPublicKeyDatas'];

const fail = (path: JsonPath, message: string): never => {
  throw new StrictJsonError(path, message);
};

function keyPath(v: unknown, path: JsonPath): KeySpec {
  if (typeof v !== 'string' || v === '') return fail(path, `expected a non-empty string, got ${describe(v)}`);
  if (v.startsWith('kbs:') || v.startsWith('kbs+')) {
    try {
      return { kind: 'path', path: parseResourceUri(v).text };
    } catch (err) {
      return fail(path, (err as Error).message);
    }
  }
  if (!v.startsWith('/')) return fail(path, 'a key path must be absolute or a kbs:/// resource URI');
  return { kind: 'path', path: v };
}

function keyData(v: unknown, path: JsonPath): KeySpec {
  if (typeof v !== 'string' || v.trim() === '') return fail(path, `expected a non-empty string, got ${describe(v)}`);
  return { kind: 'data', data: v };
}

function list<T>(v: unknown, path: JsonPath, each: (x: unknown, p: JsonPath) => T): T[] {
  if (!Array.isArray(v) || v.length === 0) return fail(path, `expected a non-empty array, got ${describe(v)}`);
  return v.map((x, i) => each(x, [...path, i]));
}

/** Exactly one of the given key fields. */
function keys(obj: Record<string, unknown>, path: JsonPath, fields: Record<string, (v: unknown, p: JsonPath) => KeySpec[]>): KeySpec[] {
  const present = Object.keys(fields).filter((f) => Object.hasOwn(obj, f));
  if (present.length !== 1) return fail(path, `exactly one of ${Object.keys(fields).join(', ')} is required${present.length ? `, got ${present.join(' and ')}` : ''}`);
  const f = present[0]!;
  return fields[f]!(obj[f], [...path, f]);
}

function named(v: unknown, path: JsonPath, want: 'reference' | 'repository'): Named {
  if (typeof v !== 'string') return fail(path, `expected a string, got ${describe(v)}`);
  let n: Named;
  try {
    n = parseNamed(v);
  } catch (err) {
    return fail(path, (err as Error).message);
  }
  if (want === 'reference' && isNameOnly(n)) fail(path, 'must include a tag or digest');
  if (want === 'repository' && !isNameOnly(n)) fail(path, 'must be a repository, without tag or digest');
  return n;
}

function prefix(v: unknown, path: JsonPath): string {
  if (typeof v !== 'string' || v === '') return fail(path, `expected a non-empty string, got ${describe(v)}`);
  if (v.startsWith('*.') || v.includes('@') || (v.includes('/') && v.lastIndexOf(':') > v.lastIndexOf('/'))) fail(path, 'must be a host or host/namespace, without wildcard, tag or digest');
  const problem = scopeProblem(v);
  if (problem) fail(path, problem);
  return v;
}

function signedIdentity(v: unknown, path: JsonPath): SignedIdentity {
  if (!isObject(v)) return fail(path, `expected an object, got ${describe(v)}`);
  const type = getString(v, 'type', path);
  switch (type) {
    case 'matchExact':
    case 'matchRepoDigestOrExact':
    case 'matchRepository':
      checkKeys(v, path, ['type']);
      return { type };
    case 'exactReference':
      checkKeys(v, path, ['type', 'dockerReference'], ['dockerReference']);
      return { type, dockerReference: named(v.dockerReference, [...path, 'dockerReference'], 'reference') };
    case 'exactRepository':
      checkKeys(v, path, ['type', 'dockerRepository'], ['dockerRepository']);
      return { type, dockerRepository: named(v.dockerRepository, [...path, 'dockerRepository'], 'repository') };
    case 'remapIdentity':
      checkKeys(v, path, ['type', 'prefix', 'signedPrefix'], ['prefix', 'signedPrefix']);
      return { type, prefix: prefix(v.prefix, [...path, 'prefix']), signedPrefix: prefix(v.signedPrefix, [...path, 'signedPrefix']) };
    default:
      return fail([...path, 'type'], `unknown signedIdentity type ${JSON.stringify(type)}`);
  }
}

function requirement(v: unknown, path: JsonPath): Requirement {
  if (!isObject(v)) return fail(path, `expected a requirement object, got ${describe(v)}`);
  const type = getString(v, 'type', path);
  const identity = (): SignedIdentity => (Object.hasOwn(v, 'signedIdentity') ? signedIdentity(v.signedIdentity, [...path, 'signedIdentity']) : DEFAULT_IDENTITY);
  switch (type) {
    case 'insecureAcceptAnything':
    case 'reject':
      checkKeys(v, path, ['type']);
      return { type };
    case 'signedBy': {
      checkKeys(v, path, ['type', 'keyType', 'keyPath', 'keyPaths', 'keyData', 'signedIdentity'], ['keyType']);
      if (v.keyType !== 'GPGKeys') fail([...path, 'keyType'], `unsupported keyType ${JSON.stringify(v.keyType)} (only "GPGKeys")`);
      const k = keys(v, path, {
        keyPath: (x, p) => [keyPath(x, p)],
        keyPaths: (x, p) => list(x, p, keyPath),
        keyData: (x, p) => [keyData(x, p)],
      });
      return { type, keys: k, signedIdentity: identity() };
    }
    case 'sigstoreSigned': {
      for (const f of UNSUPPORTED_SIGSTORE) if (Object.hasOwn(v, f)) fail([...path, f], 'not supported by this agent (only public-key verification, no Fulcio, Rekor or PKI)');
      checkKeys(v, path, ['type', 'keyPath', 'keyPaths', 'keyData', 'keyDatas', 'signedIdentity']);
      const k = keys(v, path, {
        keyPath: (x, p) => [keyPath(x, p)],
        keyPaths: (x, p) => list(x, p, keyPath),
        keyData: (x, p) => [keyData(x, p)],
        keyDatas: (x, p) => list(x, p, keyData),
      });
      return { type, keys: k, signedIdentity: identity() };
    }
    default:
      return fail([...path, 'type'], `unknown requirement type ${JSON.stringify(type)}`);
  }
}

function requirements(v: unknown, path: JsonPath): Requirements {
  return list(v, path, requirement) as unknown as Requirements;
}

/** Parse containers-policy.json text; `source` names it in errors (a path or a kbs:/// URI). */
export function parsePolicy(text: string, source: string): Policy {
  try {
    const doc = checkKeys(parseStrictJson(text), [], ['default', 'transports'], ['default']);
    const def = requirements(doc.default, ['default']);
    const docker = new Map<string, Requirements>();
    if (Object.hasOwn(doc, 'transports')) {
      const transports = doc.transports;
      if (!isObject(transports)) fail(['transports'], `expected an object, got ${describe(transports)}`);
      for (const [transport, scopes] of Object.entries(transports as Record<string, unknown>)) {
        const tpath = ['transports', transport];
        if (!TRANSPORTS.includes(transport)) fail(tpath, 'unknown transport');
        if (!isObject(scopes)) fail(tpath, `expected an object of scopes, got ${describe(scopes)}`);
        for (const [scope, reqs] of Object.entries(scopes as Record<string, unknown>)) {
          const spath = [...tpath, scope];
          if (transport === 'docker' && scope !== '') {
            const problem = scopeProblem(scope);
            if (problem) fail(spath, `bad scope: ${problem}`);
          }
          const parsed = requirements(reqs, spath);
          if (transport === 'docker') docker.set(scope, parsed);
        }
      }
    }
    return { default: def, docker };
  } catch (err) {
    if (err instanceof StrictJsonError) throw new PolicyInvalid(`policy ${source}: ${err.message}`);
    throw err;
  }
}

/** The most specific docker scope for a reference (see scopeCandidates), then "", then default. */
export function requirementsFor(policy: Policy, ref: ImageReference): ScopedRequirements {
  for (const scope of [...scopeCandidates(ref), '']) {
    const requirements = policy.docker.get(scope);
    if (requirements) return { scope: scope === '' ? 'docker ""' : scope, requirements };
  }
  return { scope: 'default', requirements: policy.default };
}
