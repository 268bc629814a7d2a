// Typed errors of the image capability. Messages are safe to return and log:
// digests, limits and (quoted, truncated) archive entry names, never bytes of
// content.

import { AgentError, Code } from '../errors.ts';

/** Quote an attacker-chosen name for a message: JSON escapes control bytes; long names are cut. */
export function quoteName(name: string): string {
  return JSON.stringify(name.length > 200 ? name.slice(0, 200) + '…' : name);
}

/**
 * Content does not match its content address (descriptor digest, diff_id).
 * DATA_LOSS, not FAILED_PRECONDITION: the bytes are corrupt or tampered
 * with; nothing about the caller's request or the agent's state is wrong, and
 * a retry (another mirror) may fetch the right bytes.
 */
export class DigestMismatch extends AgentError {
  readonly expected: string;
  readonly actual: string;
  constructor(expected: string, actual: string, message?: string) {
    super(Code.DATA_LOSS, message ?? `digest mismatch: expected ${expected}, got ${actual}`);
    this.expected = expected;
    this.actual = actual;
  }
}

/** The stream is longer or shorter than its descriptor says: a digest mismatch found early. */
export class SizeMismatch extends DigestMismatch {
  constructor(expected: string, size: number, got: string) {
    super(expected, '', `size mismatch for ${expected}: descriptor says ${size} bytes, ${got}`);
  }
}

export class InvalidDigest extends AgentError {
  constructor(digest: string) {
    super(Code.INVALID_ARGUMENT, `invalid digest ${quoteName(digest)}: expected sha256:<64 hex> or sha512:<128 hex>`);
  }
}

/** A configured cap was hit (entries, file size, bytes, decompression ratio). */
export class LimitExceeded extends AgentError {
  readonly limit: string;
  constructor(limit: string, message: string) {
    super(Code.RESOURCE_EXHAUSTED, `${limit} exceeded: ${message}`);
    this.limit = limit;
  }
}

/** A hostile or confusing archive: escapes, header confusion, bad names. */
export class UnsafeArchive extends AgentError {
  constructor(message: string, entry?: string) {
    super(Code.INVALID_ARGUMENT, entry === undefined ? `unsafe layer archive: ${message}` : `unsafe layer archive: entry ${quoteName(entry)}: ${message}`);
  }
}

/** A corrupt or unsupported archive: bad checksums, truncation, sparse files. */
export class MalformedArchive extends AgentError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(Code.INVALID_ARGUMENT, `malformed layer archive: ${message}`, options);
  }
}

export class UnsupportedMediaType extends AgentError {
  constructor(mediaType: string) {
    super(Code.INVALID_ARGUMENT, `unsupported layer media type ${quoteName(mediaType)}`);
  }
}

/** The layer store failed on the filesystem; the errno code is the only detail returned. */
export class StoreError extends AgentError {
  constructor(message: string, options?: { cause?: unknown }) {
    const errno = (options?.cause as NodeJS.ErrnoException | undefined)?.code;
    const full = errno ? `${message}: ${errno}` : message;
    super(errno === 'ENOSPC' || errno === 'EDQUOT' ? Code.RESOURCE_EXHAUSTED : Code.INTERNAL, `image store: ${full}`, options);
  }
}

/** Another live process holds the store's work_dir. */
export class StoreBusy extends AgentError {
  constructor(workDir: string, pid: number) {
    super(Code.FAILED_PRECONDITION, `image store ${workDir} is in use by process ${pid}`);
  }
}

export class BundleExists extends AgentError {
  constructor(bundlePath: string) {
    super(Code.ALREADY_EXISTS, `bundle ${bundlePath} already has a rootfs`);
  }
}

export class BundleNotFound extends AgentError {
  constructor(bundlePath: string) {
    super(Code.NOT_FOUND, `no bundle of this store at ${bundlePath}`);
  }
}

export class LayerNotFound extends AgentError {
  constructor(diffId: string) {
    super(Code.FAILED_PRECONDITION, `layer ${diffId} is not in the store`);
  }
}

/** bundle_mode = "overlay" where overlayfs cannot be used, or a pause bundle that is missing. */
export class BundleUnavailable extends AgentError {
  constructor(message: string) {
    super(Code.FAILED_PRECONDITION, message);
  }
}
