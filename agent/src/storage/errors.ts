// Typed errors of the storage capability. Messages name devices, mapper names
// and mount points, never keys; they are safe to return and to log.

import { AgentError, Code } from '../errors.ts';

/** A LUKS2 header that is not exactly what this agent would have written. */
export class HeaderRejected extends AgentError {
  constructor(device: string, reason: string) {
    super(Code.FAILED_PRECONDITION, `LUKS2 header of ${device} rejected: ${reason}`);
  }
}

/** The key does not open any keyslot of the volume. */
export class WrongKey extends AgentError {
  constructor(device: string) {
    super(Code.PERMISSION_DENIED, `the key does not open the LUKS2 volume on ${device}`);
  }
}

/** The device holds data we do not recognise, so it is neither opened nor formatted. */
export class DeviceNotEmpty extends AgentError {
  constructor(device: string, what: string) {
    super(Code.FAILED_PRECONDITION, `${device} ${what}; refusing to format it (ask for sourceType "empty" to destroy its contents)`);
  }
}

export class DeviceNotFound extends AgentError {
  constructor(what: string) {
    super(Code.NOT_FOUND, what);
  }
}

/** The device or mount point is held by another volume. */
export class VolumeBusy extends AgentError {
  constructor(message: string) {
    super(Code.FAILED_PRECONDITION, message);
  }
}

/** A helper program (cryptsetup, mkfs.ext4, mount, lvm) failed; the message carries its last stderr line. */
export class StorageCommandFailed extends AgentError {
  readonly exitCode: number | null;
  constructor(what: string, exitCode: number | null, detail: string) {
    super(Code.INTERNAL, `${what} failed (exit ${exitCode ?? 'signal'})${detail ? `: ${detail}` : ''}`);
    this.exitCode = exitCode;
  }
}

/** Storage cannot work here: no tmpfs for headers, missing tools. */
export class StorageUnavailable extends AgentError {
  constructor(message: string) {
    super(Code.FAILED_PRECONDITION, message);
  }
}
