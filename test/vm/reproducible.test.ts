// guest-rootfs/build is reproducible: a second build of the same inputs into
// another directory gives the same kernel, initramfs, cmdline, dm-verity disk
// and manifest bytes.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DEFAULT_IMAGE_DIR, REPO, ensureImage } from './helpers.ts';

test('building the guest twice gives the same bytes', { timeout: 10 * 60_000 }, () => {
  ensureImage();
  const out = mkdtempSync(join(tmpdir(), 'tee-guest-rebuild-'));
  try {
    const r = spawnSync(join(REPO, 'guest-rootfs', 'build'), ['--verity', '--out', out], { stdio: ['ignore', 'inherit', 'inherit'] });
    assert.equal(r.status, 0, 'second build failed');
    for (const f of ['vmlinuz', 'initrd.img', 'cmdline', 'manifest.json', 'root.img', 'initrd-verity.img', 'cmdline-verity']) {
      assert.ok(readFileSync(join(out, f)).equals(readFileSync(join(DEFAULT_IMAGE_DIR, f))), `${f} differs between two builds`);
    }
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});
