// Typed errors of signature verification. A rejection is PERMISSION_DENIED
// with one of a few reasons; a broken policy or registries.d is a
// configuration error (FAILED_PRECONDITION); an unreachable signature store
// is UNAVAILABLE. Messages name the image, the policy scope and the reason,
// never key material.

import { AgentError, Code } from '../errors.ts';

export const RejectReason = {
  NoPolicy: 'no policy',
  RejectedByPolicy: 'rejected by policy',
  NoSignature: 'no signature',
  BadSignature: 'bad signature',
  IdentityMismatch: 'identity mismatch',
  DigestMismatch: 'digest mismatch',
} as const;
export type RejectReason = (typeof RejectReason)[keyof typeof RejectReason];

/** The policy refused the image. */
export class SignatureRejected extends AgentError {
  readonly reason: RejectReason;
  readonly image: string;
  readonly scope: string;
  constructor(reason: RejectReason, image: string, scope: string, detail: string) {
    super(Code.PERMISSION_DENIED, `image ${image} rejected by signature policy (scope ${scope}): ${reason}: ${detail}`);
    this.reason = reason;
    this.image = image;
    this.scope = scope;
  }
}

/** containers-policy.json (or a key it names) is malformed or unusable. */
export class PolicyInvalid extends AgentError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(Code.FAILED_PRECONDITION, message, options);
  }
}

/** A registries.d file is malformed. */
export class RegistriesDInvalid extends AgentError {
  constructor(message: string) {
    super(Code.FAILED_PRECONDITION, message);
  }
}

/** A lookaside server or file could not be read (not "not found", which means no more signatures). */
export class SignatureStoreUnavailable extends AgentError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(Code.UNAVAILABLE, message, options);
  }
}
