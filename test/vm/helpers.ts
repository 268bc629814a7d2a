// VM test helpers: build the guest image when its inputs changed, boot it
// with disks, run commands in it, reboot it with the same disks, shut it
// down. The QEMU side lives in scripts/lib/qemu.ts (shared with
// scripts/qemu-run and scripts/bench-boot).

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { buildImage, DEFAULT_IMAGE_DIR, qemuAvailable } from '../../scripts/lib/qemu.ts';

export {
  bootVm,
  buildImage,
  freePort,
  initdataDevice,
  initdataMrConfigId,
  NO_AGENT_MARKER,
  REPO,
  shellQuote,
  DEFAULT_IMAGE_DIR,
  DEBUG_SHELL_PORT,
  GUESTFWD_ADDR,
  GUEST_GRPC_PORT,
  GUEST_TTRPC_PORT,
  type BootOptions,
  type Disk,
  type ExecResult,
  type Vm,
} from '../../scripts/lib/qemu.ts';

export interface Manifest {
  kernel: { file: string; version: string; sha384: string; bytes: number };
  initrd: { file: string; compression: string; sha384: string; bytes: number; unpacked_bytes: number };
  cmdline: { file: string; text: string; sha384: string };
  agent: { version: string; bundle_sha384: string; bundle_bytes: number };
  node: { version: string; sha384: string; bytes: number };
  verity?: {
    root: { file: string; root_hash: string; hash_offset: number; sha384: string; bytes: number };
    initrd: { file: string; sha384: string; bytes: number };
    cmdline: { file: string; text: string; sha384: string };
  };
}

/**
 * Why the VM suite cannot run here, or undefined when it can. Only a missing
 * or broken QEMU counts: a failing image build or boot is a test failure.
 */
export function vmSkipReason(): string | undefined {
  const q = qemuAvailable();
  return q.ok ? undefined : q.reason;
}

/** Build the guest image (with its dm-verity disk) unless its inputs are unchanged, and return its manifest. */
export function ensureImage(imageDir = DEFAULT_IMAGE_DIR): Manifest {
  buildImage(imageDir);
  return JSON.parse(readFileSync(join(imageDir, 'manifest.json'), 'utf8')) as Manifest;
}
