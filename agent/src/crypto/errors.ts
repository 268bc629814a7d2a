// Typed errors of layer encryption. Messages name layers, annotations and
// key references, never key bytes or plaintext.

import { AgentError, Code } from '../errors.ts';

/** An encrypted layer none of the configured keys opens (or no key at all). */
export class NoKeyForLayer extends AgentError {
  constructor(message: string) {
    super(Code.FAILED_PRECONDITION, message);
  }
}

/** Encryption annotations or options that do not parse. */
export class BadEncryptionMetadata extends AgentError {
  constructor(message: string) {
    super(Code.INVALID_ARGUMENT, message);
  }
}

/** A cipher, key wrapping or media type this agent does not implement. */
export class UnsupportedEncryption extends AgentError {
  constructor(message: string) {
    super(Code.FAILED_PRECONDITION, message);
  }
}

/** Ciphertext that fails authentication: bad MAC or tag, truncation, extension. */
export class LayerAuthenticationFailed extends AgentError {
  constructor(message: string) {
    super(Code.DATA_LOSS, message);
  }
}

/** The decrypted layer does not hash to the digest in its private options. */
export class PlainDigestMismatch extends AgentError {
  constructor(message: string) {
    super(Code.DATA_LOSS, message);
  }
}

/** A key file or key reference that cannot be used. */
export class BadKey extends AgentError {
  constructor(message: string) {
    super(Code.FAILED_PRECONDITION, message);
  }
}

/** A wrapped key the named key (KEK or private key) does not open. */
export class KeyUnwrapFailed extends AgentError {
  constructor(message: string) {
    super(Code.FAILED_PRECONDITION, message);
  }
}
