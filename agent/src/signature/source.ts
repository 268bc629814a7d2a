// Limits on signature material. What is read comes through the pull's
// SignatureSource (image/hooks.ts): the repository the manifest came from,
// with the pull's credentials and retries.

export type { SignatureSource } from '../image/hooks.ts';

/** Signatures, manifests of signatures and lookaside files above this size are refused (containers/image iolimits). */
export const MAX_SIGNATURE_BYTES = 4 * 1024 * 1024;
/** More signatures than this for one digest are not read: a hostile store cannot keep us busy. */
export const MAX_SIGNATURES = 64;
