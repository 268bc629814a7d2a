// Policy evaluation for one pull. The policy is chosen by the reference the
// user asked for (never the mirror the bytes come from); every requirement
// of the most specific scope must pass; a signature requirement passes when
// one signature verifies with a trusted key, names a digest this pull
// computed itself and an identity the rule accepts. Signatures are fetched
// only for the kinds of requirement present.

import { createHash, type KeyObject } from 'node:crypto';
import { open } from 'node:fs/promises';
import type { PublicKey } from 'openpgp';
import { formatReference } from '../image/reference.ts';
import { parseResourceUri, type KeySource } from '../resource.ts';
import { cosignVerifies, fetchCosignSignatures, type CosignCandidate } from './cosign.ts';
import { PolicyInvalid, RejectReason, SignatureRejected } from './errors.ts';
import { describeIdentity, identityMatches, type SignedIdentity } from './identity.ts';
import { loadGpgKeys, loadSigstoreKeys, type KeyContext } from './keys.ts';
import { DefaultLookasideReader, EMPTY_REGISTRIES_D, extensionSignatures, loadRegistriesD, lookasideSignatures, supportsSignatureExtension, type LookasideReader, type RegistriesD } from './lookaside.ts';
import { intendedName, type Named } from './names.ts';
import { COSIGN_TYPE, parsePayload, PayloadInvalid, SIMPLE_SIGNING_TYPE, type SignedClaims } from './payload.ts';
import { parsePolicy, requirementsFor, type Policy, type Requirement } from './policy.ts';
import { SimpleSignatureInvalid, verifySimpleSignature } from './simple.ts';
import type { ImageVerifier, VerifyRequest } from '../image/hooks.ts';

const MAX_POLICY_BYTES = 4 * 1024 * 1024;

/** Where the policy comes from. "none" with verification on refuses every pull. */
export type PolicySource =
  | { readonly kind: 'none' }
  | { readonly kind: 'file'; readonly path: string }
  | { readonly kind: 'kbs'; readonly uri: string }
  | { readonly kind: 'inline'; readonly text: string };

export interface VerifierOptions {
  readonly policy: PolicySource;
  /** registries.d directory for simple-signing lookaside. */
  readonly registriesD?: string;
  /** For kbs:/// policies and keys: the offline store or the KBS client. */
  readonly keySource?: KeySource;
  /** How lookaside URLs are read; default: files and undici. */
  readonly lookaside?: LookasideReader;
  /** The clock for signature and key expiry. */
  readonly now?: () => Date;
}

export interface Verdict {
  /** The policy scope that applied ("default" when none matched). */
  readonly scope: string;
  /** One line per requirement that passed, e.g. "sigstoreSigned (matchRepository)". */
  readonly passed: readonly string[];
}

type SignatureKind = 'simple' | 'cosign';

/** What one candidate signature came to; the best of these is the rejection reason. */
interface Outcome {
  readonly reason: RejectReason;
  readonly detail: string;
}
const RANK: Record<string, number> = { [RejectReason.NoSignature]: 0, [RejectReason.BadSignature]: 1, [RejectReason.DigestMismatch]: 2, [RejectReason.IdentityMismatch]: 3 };

/** Signatures fetched once per pull and shared by every requirement that reads them. */
class PullSignatures {
  private readonly cache = new Map<string, Promise<unknown[]>>();
  private readonly verifier: SignatureVerifier;
  private readonly req: VerifyRequest;

  constructor(verifier: SignatureVerifier, req: VerifyRequest) {
    this.verifier = verifier;
    this.req = req;
  }

  get(kind: 'cosign', digest: string): Promise<CosignCandidate[]>;
  get(kind: 'simple', digest: string): Promise<Buffer[]>;
  get(kind: SignatureKind, digest: string): Promise<unknown[]> {
    return cached(this.cache, `${kind} ${digest}`, () =>
      kind === 'cosign' ? fetchCosignSignatures(this.req.source, digest, this.req.signal) : this.verifier.simpleSignatures(this.req, digest),
    );
  }
}

export class SignatureVerifier implements ImageVerifier {
  private readonly opts: VerifierOptions;
  private readonly lookaside: LookasideReader;
  /** The policy and registries.d, loaded on first use. */
  private readonly memo = new Map<string, Promise<unknown>>();
  private readonly gpgKeys = new WeakMap<Requirement, Promise<PublicKey[]>>();
  private readonly sigstoreKeys = new WeakMap<Requirement, Promise<KeyObject[]>>();
  /** Registries seen to (not) support the signature extension. */
  private readonly extension = new Map<string, boolean>();

  constructor(opts: VerifierOptions) {
    this.opts = opts;
    this.lookaside = opts.lookaside ?? new DefaultLookasideReader();
  }

  /**
   * Load (once; a failure is retried on the next pull) and return the
   * policy, undefined when none is configured. Shared loads take no pull's
   * abort signal: one cancelled pull must not fail the others waiting on it.
   */
  policy(): Promise<Policy | undefined> {
    return cached(this.memo, 'policy', () => this.loadPolicy()) as Promise<Policy | undefined>;
  }

  private async loadPolicy(): Promise<Policy | undefined> {
    const src = this.opts.policy;
    switch (src.kind) {
      case 'none':
        return undefined;
      case 'inline':
        return parsePolicy(src.text, 'from inline config');
      case 'file': {
        const fh = await open(src.path, 'r').catch((err: NodeJS.ErrnoException) => {
          throw new PolicyInvalid(`policy ${src.path}: ${err.code ?? 'unreadable'}`);
        });
        try {
          if ((await fh.stat()).size > MAX_POLICY_BYTES) throw new PolicyInvalid(`policy ${src.path}: larger than ${MAX_POLICY_BYTES} bytes`);
          return parsePolicy(await fh.readFile('utf8'), src.path);
        } finally {
          await fh.close();
        }
      }
      case 'kbs': {
        if (!this.opts.keySource) throw new PolicyInvalid(`policy ${src.uri}: no key source (KBS or offline store) is configured`);
        const bytes = await this.opts.keySource.get(parseResourceUri(src.uri));
        try {
          return parsePolicy(bytes.toString('utf8'), src.uri);
        } finally {
          bytes.fill(0);
        }
      }
    }
  }

  private registriesD(): Promise<RegistriesD> {
    const dir = this.opts.registriesD;
    if (!dir) return Promise.resolve(EMPTY_REGISTRIES_D);
    return cached(this.memo, 'registries.d', () => loadRegistriesD(dir)) as Promise<RegistriesD>;
  }

  /** Simple signatures for a digest: the registry's extension when it has one, else lookaside storage. */
  async simpleSignatures(req: VerifyRequest, digest: string): Promise<Buffer[]> {
    const key = req.source.reference.registry;
    let ext = this.extension.get(key);
    if (ext === undefined) {
      ext = await supportsSignatureExtension(req.source, req.signal);
      if (this.extension.size > 256) this.extension.clear();
      this.extension.set(key, ext);
    }
    if (ext) return extensionSignatures(req.source, digest, req.signal);
    const base = (await this.registriesD()).lookasideFor(req.reference);
    return base ? lookasideSignatures(this.lookaside, base, req.reference, digest, req.signal) : [];
  }

  /** For the shared key loads: no pull's abort signal (see policy()). */
  private keyContext(): KeyContext {
    return this.opts.keySource ? { keySource: this.opts.keySource } : {};
  }

  /** ImageVerifier: the pull's hook, after the manifest and before the config or any layer. */
  async verify(req: VerifyRequest): Promise<void> {
    await this.evaluate(req);
  }

  /**
   * Evaluate the policy for one pull. Resolves with the scope and what
   * passed; rejects with SignatureRejected (PERMISSION_DENIED) or a
   * configuration or registry error.
   */
  async evaluate(req: VerifyRequest): Promise<Verdict> {
    const log = req.log;
    const image = formatReference(req.reference);
    const source = formatReference(req.source.reference);
    const reject = (reason: RejectReason, scope: string, detail: string): never => {
      log.warn({ image, scope, reason, detail, source }, 'image rejected by signature policy');
      throw new SignatureRejected(reason, image, scope, detail);
    };
    const policy = await this.policy();
    if (!policy) return reject(RejectReason.NoPolicy, 'none', 'signature verification is enabled but no policy is configured');
    const { scope, requirements } = requirementsFor(policy, req.reference);
    const sigs = new PullSignatures(this, req);
    const passed: string[] = [];
    for (const r of requirements) {
      if (r.type === 'insecureAcceptAnything') {
        passed.push(r.type);
        continue;
      }
      if (r.type === 'reject') return reject(RejectReason.RejectedByPolicy, scope, 'the policy rejects every image in this scope');
      const ctx = this.keyContext();
      const outcome = r.type === 'signedBy'
        ? await this.checkSimple(sigs, await cached(this.gpgKeys, r, () => loadGpgKeys(r.keys, ctx)), r.signedIdentity, req)
        : await this.checkCosign(sigs, await cached(this.sigstoreKeys, r, () => loadSigstoreKeys(r.keys, ctx)), r.signedIdentity, req);
      if (outcome) return reject(outcome.reason, scope, `${r.type}: ${outcome.detail}`);
      passed.push(`${r.type} (${describeIdentity(r.signedIdentity)})`);
    }
    log.info({ image, scope, passed, source }, 'image accepted by signature policy');
    return { scope, passed };
  }

  /**
   * Try each signature attached to the pull's digests until one is accepted
   * (undefined); otherwise the most telling failure. `open` verifies one
   * candidate and returns its claims, or why it failed.
   */
  private async firstAccepted<T>(
    candidates: (digest: string) => Promise<T[]>,
    open: (candidate: T) => Promise<SignedClaims | Outcome>,
    none: string,
    rule: SignedIdentity,
    req: VerifyRequest,
  ): Promise<Outcome | undefined> {
    const intended = intendedName(req.reference);
    let best: Outcome = { reason: RejectReason.NoSignature, detail: none };
    let seen = 0;
    for (const digest of [...(req.indexDigest ? [req.indexDigest] : []), req.manifestDigest]) {
      for (const candidate of await candidates(digest)) {
        seen++;
        const claims = await open(candidate);
        const miss = 'reason' in claims ? claims : this.claimsProblem(claims, rule, intended, req);
        if (!miss) return undefined;
        best = worse(best, miss);
      }
    }
    return seen > 1 ? { ...best, detail: `${best.detail} (none of ${seen} signatures accepted)` } : best;
  }

  private checkSimple(sigs: PullSignatures, keys: PublicKey[], rule: SignedIdentity, req: VerifyRequest): Promise<Outcome | undefined> {
    const now = this.opts.now?.() ?? new Date();
    const open = async (blob: Buffer): Promise<SignedClaims | Outcome> => {
      try {
        const { payload } = await verifySimpleSignature(blob, keys, now);
        return parsePayload(payload, SIMPLE_SIGNING_TYPE);
      } catch (err) {
        if (!(err instanceof SimpleSignatureInvalid || err instanceof PayloadInvalid)) throw err;
        return { reason: RejectReason.BadSignature, detail: err.message };
      }
    };
    return this.firstAccepted((d) => sigs.get('simple', d), open, 'no simple signature found (lookaside or registry extension)', rule, req);
  }

  private checkCosign(sigs: PullSignatures, keys: KeyObject[], rule: SignedIdentity, req: VerifyRequest): Promise<Outcome | undefined> {
    const open = async (c: CosignCandidate): Promise<SignedClaims | Outcome> => {
      if ('problem' in c) return { reason: RejectReason.BadSignature, detail: c.problem };
      if (!cosignVerifies(c.payload, c.signature, keys)) return { reason: RejectReason.BadSignature, detail: 'the signature does not verify with any trusted key' };
      try {
        return parsePayload(c.payload, COSIGN_TYPE);
      } catch (err) {
        if (!(err instanceof PayloadInvalid)) throw err;
        return { reason: RejectReason.BadSignature, detail: err.message };
      }
    };
    return this.firstAccepted((d) => sigs.get('cosign', d), open, 'no cosign signature found', rule, req);
  }

  /** A verified payload must name a digest we computed and an identity the rule accepts. */
  private claimsProblem(claims: SignedClaims, rule: SignedIdentity, intended: Named, req: VerifyRequest): Outcome | undefined {
    const ours = [req.manifestDigest, ...(req.indexDigest ? [req.indexDigest] : [])];
    if (!ours.includes(claims.manifestDigest) && !sameManifest(req.manifest, req.manifestDigest, claims.manifestDigest)) {
      return { reason: RejectReason.DigestMismatch, detail: `the signature is for ${claims.manifestDigest}, not ${ours.join(' or ')}` };
    }
    if (!identityMatches(rule, intended, claims.dockerReference)) {
      return { reason: RejectReason.IdentityMismatch, detail: `the signature names ${JSON.stringify(claims.dockerReference.slice(0, 300))}, which ${describeIdentity(rule)} does not accept` };
    }
    return undefined;
  }

  close(): Promise<void> {
    return this.lookaside.close();
  }
}

/** One load per key; a failed load is forgotten so the next pull tries again. */
function cached<K, T>(map: { get(k: K): Promise<T> | undefined; set(k: K, v: Promise<T>): unknown; delete(k: K): unknown }, key: K, load: () => Promise<T>): Promise<T> {
  let p = map.get(key);
  if (!p) {
    p = load().catch((err: unknown) => {
      map.delete(key);
      throw err;
    });
    map.set(key, p);
  }
  return p;
}

function worse(a: Outcome, b: Outcome): Outcome {
  return (RANK[b.reason] ?? 0) > (RANK[a.reason] ?? 0) ? b : a;
}

/** A signature may name the manifest by another algorithm (sha512 for a sha256 pull): hash the bytes we have. */
function sameManifest(bytes: Buffer, digest: string, claimed: string): boolean {
  const alg = claimed.slice(0, claimed.indexOf(':'));
  if (digest.startsWith(`${alg}:`) || (alg !== 'sha256' && alg !== 'sha512')) return false;
  return `${alg}:${createHash(alg).update(bytes).digest('hex')}` === claimed;
}
