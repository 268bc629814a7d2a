// The dm-verity boot (guest-rootfs/build --verity): the small initramfs
// verifies root.img against the root hash on the kernel cmdline, the agent
// runs from the read-only verified root, and a root disk changed by one byte
// never boots.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, copyFileSync, mkdtempSync, openSync, readFileSync, readSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { bootVm, ensureImage, vmSkipReason, DEFAULT_IMAGE_DIR, type Manifest } from './helpers.ts';

const skip = vmSkipReason();

describe('guest VM booted from the dm-verity root disk', { skip: skip ? `qemu is unusable here: ${skip}` : false, timeout: 10 * 60_000 }, () => {
  let manifest: Manifest;
  let dir: string;

  before(() => {
    manifest = ensureImage();
    dir = mkdtempSync(join(tmpdir(), 'tee-vm-verity-'));
  });
  after(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test('the agent serves from the verified read-only root', async () => {
    const verity = manifest.verity;
    assert.ok(verity, 'the build made no dm-verity disk');
    const vm = await bootVm({ verity: true, debugConsole: true, workDir: join(dir, 'ok') });
    try {
      assert.match(vm.console(), new RegExp(`tee-verity: root /dev/vd[a-z] verified against ${verity.root.root_hash}`));
      assert.deepEqual(await vm.grpcCall('grpc.Health', 'Check', { service: '' }), { status: 'SERVING' });
      const root = (await vm.run('cat /proc/mounts')).split('\n').find((l) => l.split(' ')[1] === '/');
      assert.match(root ?? '', /^\/dev\/mapper\/root \/ ext4 ro[ ,]/);
      const status = await vm.run('veritysetup status root');
      assert.match(status, /status:\s+verified/);
      assert.match(status, new RegExp(`root hash:\\s+${verity.root.root_hash}`));
      assert.notEqual((await vm.exec('touch /opt/tee-agent/x')).code, 0, 'the root is writable');
    } finally {
      const r = await vm.shutdown();
      assert.equal(r.clean, true);
    }
  });

  test('a root disk with one byte changed does not boot', async () => {
    const tampered = join(dir, 'root-tampered.img');
    copyFileSync(join(DEFAULT_IMAGE_DIR, 'root.img'), tampered);
    // Flip a byte of the ext4 superblock (offset 1024): the first read of the root fails verification.
    const fd = openSync(tampered, 'r+');
    try {
      const b = Buffer.alloc(1);
      readSync(fd, b, 0, 1, 1100);
      b[0] = b[0]! ^ 0xff;
      writeSync(fd, b, 0, 1, 1100);
    } finally {
      closeSync(fd);
    }
    const workDir = join(dir, 'tampered');
    await assert.rejects(bootVm({ verity: true, rootDisk: tampered, workDir, bootTimeoutMs: 120_000 }), /qemu exited/);
    const log = readFileSync(join(workDir, 'console.log'), 'utf8');
    assert.match(log, /device-mapper: verity: .* is corrupted/);
    assert.match(log, /tee-verity: the verified root does not mount; power off/);
    assert.doesNotMatch(log, /tee-init: starting agent/);
  });
});
