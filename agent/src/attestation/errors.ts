// Errors raised by attestation, the KBS client and sealed secrets. Messages
// are safe to log and return: they never carry keys, tokens or plaintext.

import { AgentError, Code } from '../errors.ts';

/** The KBS cannot be reached, or keeps failing with 5xx, after the bounded retries. */
export class KbsUnavailable extends AgentError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(Code.UNAVAILABLE, message, options);
  }
}

/** A KBS exchange took longer than kbc.timeout_ms on every attempt. */
export class KbsTimeout extends AgentError {
  constructor(message: string) {
    super(Code.DEADLINE_EXCEEDED, message);
  }
}

/** The KBS answered, but not in the RCAR protocol (bad JSON, missing fields, unexpected status). */
export class KbsProtocolError extends AgentError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(Code.UNAVAILABLE, message, options);
  }
}

/** The KBS refused the handshake or the resource (401 with a Trustee error body). */
export class KbsDenied extends AgentError {
  constructor(message: string) {
    super(Code.PERMISSION_DENIED, message);
  }
}

/** A resource response that does not decrypt with our TEE key: tampered, or sealed to another key. */
export class ResourceDecryptFailed extends AgentError {
  constructor(uri: string) {
    super(Code.DATA_LOSS, `KBS response for ${uri} does not decrypt with this TEE's key (tampered, or for another key)`);
  }
}

/** cc_kbc without a URL, or a KBS CA file that cannot be read. */
export class KbsNotConfigured extends AgentError {
  constructor(message: string) {
    super(Code.FAILED_PRECONDITION, message);
  }
}

/** The TEE interface failed: no TSM report, wrong provider, kernel errors. */
export class AttesterError extends AgentError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(Code.FAILED_PRECONDITION, message, options);
  }
}

/** Another writer used our configfs-tsm report entry between inblob and outblob. */
export class InblobConflict extends AgentError {
  constructor(generation: number) {
    super(Code.ABORTED, `TSM report inblob write conflict (generation ${generation}, expected 1)`);
  }
}

export class InitDataMismatch extends AgentError {
  constructor() {
    super(Code.FAILED_PRECONDITION, 'initdata digest does not match MRCONFIGID');
  }
}

export class InvalidInitData extends AgentError {
  constructor(message: string) {
    super(Code.INVALID_ARGUMENT, `initdata: ${message}`);
  }
}

/** A sealed secret whose signature, key or payload does not check out. */
export class SealedSecretRejected extends AgentError {
  constructor(message: string) {
    super(Code.PERMISSION_DENIED, `sealed secret: ${message}`);
  }
}

export class SealedSecretInvalid extends AgentError {
  constructor(message: string) {
    super(Code.INVALID_ARGUMENT, `sealed secret: ${message}`);
  }
}
