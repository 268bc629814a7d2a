// VM test helpers: build the guest image when its inputs changed, boot it
// with disks, run commands in it, reboot it with the same disks, shut it
// down. The QEMU side lives in scripts/lib/qemu.ts (shared with
// scripts/qemu-run and scripts/bench-boot).

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { stringify as stringifyToml } from 'smol-toml';
import { buildImage, DEFAULT_IMAGE_DIR, qemuAvailable, type Vm } from '../../scripts/lib/qemu.ts';

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

/**
 * Another agent in the guest, from the image's bundle and node flags, with a
 * test config of its own (/run/<name>.toml). Its layer store and volume
 * records default to /run/<name>/, since those of the agent init started are
 * locked and in use. Resolves once it logs "ready".
 */
export async function startGuestAgent(
  vm: Vm,
  name: string,
  config: Record<string, Record<string, unknown>>,
  args = '',
): Promise<{ log(): Promise<string>; stop(signal?: 'TERM' | 'KILL'): Promise<void> }> {
  const merged = { ...config, image: { work_dir: `/run/${name}/image`, ...config.image }, storage: { run_dir: `/run/${name}/storage`, ...config.storage } };
  await vm.writeFile(`/run/${name}.toml`, stringifyToml(merged));
  await vm.run(`rm -f /run/${name}.log; mkdir -p /run/${name} && (setsid env $(cat /opt/tee-agent/node-env) node $(cat /opt/tee-agent/node-flags) /opt/tee-agent/tee-agent.mjs serve --config /run/${name}.toml ${args} >/run/${name}.log 2>&1 & echo $! >/run/${name}.pid)`);
  await vm.run(`for i in $(seq 1 300); do grep -q '"msg":"ready"' /run/${name}.log && exit 0; sleep 0.5; done; cat /run/${name}.log; exit 1`, { timeoutMs: 180_000 });
  return {
    log: () => vm.run(`cat /run/${name}.log`),
    stop: async (signal = 'TERM') => void (await vm.run(`kill -${signal} $(cat /run/${name}.pid); true`)),
  };
}
