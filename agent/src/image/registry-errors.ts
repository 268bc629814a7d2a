// Typed errors of the registry side of a pull: resolving, talking to the
// registry, reading manifests, and the hooks (signatures, decryption). Every
// message is safe to return and log: no credentials, tokens or layer bytes.

import { AgentError, Code } from '../errors.ts';

/** The registry could not be reached or kept failing (network, 5xx, 429) after the retries. */
export class RegistryUnavailable extends AgentError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(Code.UNAVAILABLE, message, options);
  }
}

/** Connect or idle timeout, after the retries. */
export class RegistryTimeout extends AgentError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(Code.DEADLINE_EXCEEDED, message, options);
  }
}

/** The registry refused our credentials (401 after auth) or has none for us. */
export class RegistryUnauthorized extends AgentError {
  constructor(message: string) {
    super(Code.UNAUTHENTICATED, message);
  }
}

/** 403 from the registry, or a registry blocked by registries.conf. */
export class RegistryDenied extends AgentError {
  constructor(message: string) {
    super(Code.PERMISSION_DENIED, message);
  }
}

/** The image, tag or blob does not exist (404), or no platform in the index matches. */
export class ImageNotFound extends AgentError {
  constructor(message: string) {
    super(Code.NOT_FOUND, message);
  }
}

/** The registry answered with something that is not a valid image: bad JSON, ambiguous or unsupported manifest, wrong types or sizes. */
export class ManifestRejected extends AgentError {
  constructor(message: string) {
    super(Code.INVALID_ARGUMENT, message);
  }
}

/** Bytes from the registry do not hash to the digest that names them. */
export class RegistryDigestMismatch extends AgentError {
  constructor(message: string) {
    super(Code.DATA_LOSS, message);
  }
}

/** A bad registries.conf or auth.json: named file, safe reason. */
export class RegistryConfigError extends AgentError {
  constructor(message: string) {
    super(Code.FAILED_PRECONDITION, message);
  }
}

/** A layer is encrypted and no decryptor is configured. */
export class EncryptedLayerUnsupported extends AgentError {
  constructor(message: string) {
    super(Code.FAILED_PRECONDITION, message);
  }
}

/** The layer's media type is not one this agent can unpack. */
export class UnsupportedLayer extends AgentError {
  constructor(message: string) {
    super(Code.FAILED_PRECONDITION, message);
  }
}

/** Signature verification is enabled but cannot be performed (no verifier wired). */
export class VerificationUnavailable extends AgentError {
  constructor(message: string) {
    super(Code.FAILED_PRECONDITION, message);
  }
}
