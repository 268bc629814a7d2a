// signature/: image signature verification by policy. It owns the
// containers-policy.json parser and scope lookup, signedIdentity rules,
// simple signing (OpenPGP, lookaside storage from registries.d and the
// X-Registry-Supports-Signatures extension) and cosign's legacy ".sig" tags.
// SignatureVerifier is the pull's ImageVerifier (image/hooks.ts): called with
// the digests the pull computed, after the manifest (and index) and before
// the config or any layer; a rejection is SignatureRejected
// (PERMISSION_DENIED). Keys and policies named kbs:///
// come through the KeySource interface (offline store or KBS).

import type { Logger } from 'pino';
import type { KeySource } from '../resource.ts';
import { PolicyInvalid } from './errors.ts';
import { DefaultLookasideReader, type HttpLookasideOptions } from './lookaside.ts';
import { SignatureVerifier, type PolicySource } from './verifier.ts';

export { PolicyInvalid, RegistriesDInvalid, RejectReason, SignatureRejected, SignatureStoreUnavailable } from './errors.ts';
export { parsePolicy, requirementsFor, type KeySpec, type Policy, type Requirement, type ScopedRequirements } from './policy.ts';
export type { SignedIdentity } from './identity.ts';
export { loadRegistriesD, DefaultLookasideReader, type HttpLookasideOptions, type LookasideReader, type RegistriesD } from './lookaside.ts';
export { SignatureVerifier, type PolicySource, type Verdict, type VerifierOptions } from './verifier.ts';

/** The [image] keys verification reads. */
export interface SignatureConfig {
  readonly enable_signature_verification: boolean;
  /** A path or a kbs:/// URI. */
  readonly policy: string;
  /** containers-policy.json text in the config itself. */
  readonly policy_inline: string;
  readonly registries_d: string;
}

export function policySource(cfg: Pick<SignatureConfig, 'policy' | 'policy_inline'>): PolicySource {
  if (cfg.policy !== '' && cfg.policy_inline !== '') throw new PolicyInvalid('config: [image] policy and policy_inline are both set; use one');
  if (cfg.policy_inline !== '') return { kind: 'inline', text: cfg.policy_inline };
  if (cfg.policy === '') return { kind: 'none' };
  if (/^kbs(\+[a-z0-9_-]+)?:/.test(cfg.policy)) return { kind: 'kbs', uri: cfg.policy };
  if (!cfg.policy.startsWith('/')) throw new PolicyInvalid(`config: [image] policy ${JSON.stringify(cfg.policy)}: expected an absolute path or a kbs:/// URI`);
  return { kind: 'file', path: cfg.policy };
}

/**
 * The verifier the pull uses, or undefined when verification is off (then
 * no policy is consulted at all, as in image-rs and kata). With it on and no
 * policy configured, every pull is refused.
 */
export function createSignatureVerifier(cfg: SignatureConfig, deps: { keySource?: KeySource; log: Logger; http?: HttpLookasideOptions }): SignatureVerifier | undefined {
  const policy = policySource(cfg);
  if (!cfg.enable_signature_verification) {
    if (policy.kind !== 'none') deps.log.warn('an image policy is configured but enable_signature_verification is false: signatures are not checked');
    return undefined;
  }
  if (policy.kind === 'none') deps.log.warn('signature verification is enabled without a policy: every pull will be refused');
  return new SignatureVerifier({
    policy,
    ...(cfg.registries_d ? { registriesD: cfg.registries_d } : {}),
    ...(deps.keySource ? { keySource: deps.keySource } : {}),
    lookaside: new DefaultLookasideReader(deps.http ?? {}),
  });
}
