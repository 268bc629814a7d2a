// image/: turning an image reference into a container bundle. This half owns
// the bytes-to-directories part: streaming stages (digest check, decompress),
// the hardened tar unpacker (the security boundary: every filesystem write is
// ours), the content-addressed layer store under work_dir, overlay or copy
// bundles, and the built-in pause bundle. Registry access and the pull
// orchestration call into these.
// The other half is the registry side and the pull itself: references,
// registries.conf, auth.json and token auth, the registry client (retries,
// resume, timeouts, manifests verified by their bytes), and pullImage, with
// the hooks signature/ and crypto/ fill (hooks.ts: ImageVerifier,
// LayerDecryptor).

export * from './errors.ts';
export {
  verifyDigest,
  DigestVerifier,
  parseDigest,
  compressionOf,
  decompress,
  layerStream,
  RATIO_FLOOR,
  type Compression,
  type DecompressLimits,
  type LayerDescriptor,
  type LayerTar,
} from './stages.ts';
export { unpackLayer, type UnpackLimits, type UnpackOptions, type UnpackStats } from './unpack.ts';
export { LayerStore, type BundleInfo, type BundleMode, type PullTransaction, type StoreOptions } from './store.ts';
export { createPauseBundle } from './pause.ts';
export { ImagePuller, type PullRequest, type PullResult, type PullEvent, type PullSettings, type PullerDeps } from './pull.ts';
export type { ImageVerifier, VerifyRequest, SignatureSource, LayerDecryptor, EncryptedLayer, DecryptedLayer } from './hooks.ts';
export { parseReference, formatReference, type ImageReference } from './reference.ts';
export * from './registry-errors.ts';

export { layerLimits } from './setup.ts';
