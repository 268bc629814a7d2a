// Image pull handlers: CDH api.ImagePullService (image_url, bundle_path →
// manifest_digest) and kata grpc.Image (image, container_id, source_creds →
// image_ref, bundle in <bundle_base>/<container_id>). Both call the same
// puller; kata's "pause…" containers get the built-in pause bundle.

import { isAbsolute, join, normalize } from 'node:path';
import { InvalidArgument } from '../errors.ts';
import type { Handler } from '../server/table.ts';
import { parseUserPass } from '../image/auth.ts';
import type { ImagePuller } from '../image/pull.ts';

export interface ImagePullRequest {
  image_url: string;
  bundle_path: string;
}

export interface KataPullImageRequest {
  image: string;
  container_id: string;
  source_creds: string;
}

export interface ImageHandlerDeps {
  readonly puller: ImagePuller;
  /** kata bundles live in <bundleBase>/<container_id>. */
  readonly bundleBase: string;
  /** Write the built-in pause bundle (store.ts createPauseBundle). */
  readonly createPauseBundle: (bundlePath: string) => Promise<unknown>;
}

/** kata's container ids: a leading alphanumeric, then alphanumerics, "_", "." and "-" (kata-sys-util verify_id). */
const CONTAINER_ID = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;

function bundlePathOf(raw: string): string {
  if (raw === '') throw new InvalidArgument('bundle_path is required');
  if (!isAbsolute(raw) || raw.includes('\0') || raw.split('/').includes('..')) throw new InvalidArgument('bundle_path must be an absolute path without ".."');
  return normalize(raw);
}

/** kata derives an id from the image name when none is given (last path component, ":" → "_", plus a counter). */
function containerIdFor(req: KataPullImageRequest, counter: () => number): string {
  const cid = req.container_id !== '' ? req.container_id : `${(req.image.split('/').pop() ?? '').replace(/[:@]/g, '_')}_${counter()}`;
  if (!CONTAINER_ID.test(cid)) throw new InvalidArgument(`container_id ${JSON.stringify(cid.slice(0, 140))} is not a valid container id`);
  return cid;
}

export function imageHandlers(deps: ImageHandlerDeps) {
  let derived = 0;
  const cdhPull: Handler<ImagePullRequest, { manifest_digest: string }> = async (req, ctx) => {
    if (req.image_url === '') throw new InvalidArgument('image_url is required');
    const result = await deps.puller.pull({ image: req.image_url, bundlePath: bundlePathOf(req.bundle_path) }, { signal: ctx.signal, log: ctx.log });
    return { manifest_digest: result.manifestDigest };
  };

  const kataPull: Handler<KataPullImageRequest, { image_ref: string }> = async (req, ctx) => {
    const cid = containerIdFor(req, () => derived++);
    const bundlePath = join(deps.bundleBase, cid);
    // kata-agent: sandbox ("pause…") containers run the pause binary baked into the guest, never pulled.
    if (cid.startsWith('pause')) {
      await deps.createPauseBundle(bundlePath);
      ctx.log.info({ container_id: cid, bundle: bundlePath }, 'pause bundle created');
      return { image_ref: req.image };
    }
    if (req.image === '') throw new InvalidArgument('image is required');
    let credentials;
    if (req.source_creds !== '') {
      try {
        credentials = parseUserPass(req.source_creds, 'source_creds');
      } catch {
        throw new InvalidArgument('source_creds: expected "user:password"');
      }
    }
    await deps.puller.pull({ image: req.image, bundlePath, ...(credentials ? { credentials } : {}) }, { signal: ctx.signal, log: ctx.log });
    return { image_ref: req.image };
  };

  return {
    'api.ImagePullService': { PullImage: cdhPull },
    'grpc.Image': { PullImage: kataPull },
  };
}
