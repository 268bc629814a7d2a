// The pause (sandbox) bundle: kata's guest carries one at /pause_bundle
// (config.json and rootfs/pause, made by `umoci unpack` of the pause image
// when the guest image is built), so sandbox containers need no pull. As
// kata-agent does, config.json and rootfs/pause are copied into the bundle;
// here the rootfs appears whole (built aside, then renamed) and an existing
// complete pause bundle is kept as it is.

import { randomBytes } from 'node:crypto';
import { constants, copyFileSync, lstatSync, mkdirSync, renameSync, rmSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { BundleUnavailable, StoreError } from './errors.ts';

function isFile(path: string): boolean {
  try {
    return statSync(path).isFile();
  } catch {
    return false;
  }
}

export async function createPauseBundle(bundlePath: string, pauseBundleDir: string): Promise<{ bundlePath: string; rootfs: string }> {
  const bundle = resolve(bundlePath);
  const srcConfig = join(pauseBundleDir, 'config.json');
  const srcPause = join(pauseBundleDir, 'rootfs', 'pause');
  if (!isFile(srcConfig) || !isFile(srcPause)) throw new BundleUnavailable(`pause bundle ${pauseBundleDir} lacks config.json or rootfs/pause`);
  const rootfs = join(bundle, 'rootfs');
  const tag = randomBytes(6).toString('hex');
  try {
    mkdirSync(bundle, { recursive: true });
    if (!isFile(join(rootfs, 'pause'))) {
      let existing = false;
      try {
        existing = lstatSync(rootfs) !== undefined;
      } catch {
        // absent, as expected
      }
      if (existing) throw new StoreError(`${rootfs} exists without a pause binary`);
      const tmp = join(bundle, `.rootfs-${tag}`);
      try {
        mkdirSync(tmp, 0o755);
        copyFileSync(srcPause, join(tmp, 'pause'), constants.COPYFILE_EXCL); // keeps the mode
        renameSync(tmp, rootfs);
      } finally {
        rmSync(tmp, { recursive: true, force: true });
      }
    }
    const config = join(bundle, 'config.json');
    if (!isFile(config)) {
      const tmp = join(bundle, `.config.json-${tag}`);
      copyFileSync(srcConfig, tmp, constants.COPYFILE_EXCL);
      renameSync(tmp, config);
    }
  } catch (err) {
    if (err instanceof StoreError) throw err;
    throw new StoreError('cannot create the pause bundle', { cause: err });
  }
  return { bundlePath: bundle, rootfs };
}
