// tee-agent encrypt: encrypt chosen layers of an image in an OCI layout and
// write the result (new layer blobs, rewritten manifest, same config: its
// diff_ids are plaintext digests) to an OCI layout that skopeo can push.

import { createHash } from 'node:crypto';
import { Transform } from 'node:stream';
import { InvalidArgument } from '../errors.ts';
import { createLayerEncryptor, type LayerRecipients } from './encrypt-layer.ts';
import { isEncryptedMediaType } from './ocicrypt.ts';
import { MT_INDEX, MT_MANIFEST, OciLayout, REF_NAME, type Descriptor, type ImageIndex } from './oci-layout.ts';
import type { CipherName } from './options.ts';

export interface EncryptImageOptions {
  readonly input: { readonly dir: string; readonly tag?: string };
  readonly output: { readonly dir: string; readonly tag?: string };
  readonly recipients: LayerRecipients;
  readonly cipher: CipherName;
  /** Layer indexes to encrypt, 0-based, negative from the end (skopeo --encrypt-layer); all when absent. */
  readonly layers?: readonly number[];
  readonly chunkSize?: number;
  /** Progress lines (the CLI writes them to stderr). */
  readonly progress?: (line: string) => void;
}

export interface EncryptImageResult {
  readonly digest: string;
  readonly encryptedLayers: number;
}

interface Manifest {
  mediaType?: string;
  config: Descriptor;
  layers: Descriptor[];
  [key: string]: unknown;
}

const short = (digest: string) => digest.slice(0, 19);
const mb = (n: number) => `${(n / 1e6).toFixed(1)} MB`;

/** Passes the plaintext through, checking it against the descriptor digest at the end. */
function verifying(desc: Descriptor): Transform {
  const hash = createHash('sha256');
  return new Transform({
    transform(chunk: Buffer, _enc, done) {
      hash.update(chunk);
      done(null, chunk);
    },
    flush(done) {
      const got = `sha256:${hash.digest('hex')}`;
      done(got === desc.digest ? null : new InvalidArgument(`layer blob ${desc.digest} does not match its digest (got ${got})`));
    },
  });
}

function selected(count: number, layers: readonly number[] | undefined): Set<number> {
  if (!layers) return new Set(Array.from({ length: count }, (_, i) => i));
  const out = new Set<number>();
  for (const i of layers) {
    const at = i < 0 ? count + i : i;
    if (!Number.isInteger(i) || at < 0 || at >= count) throw new InvalidArgument(`layer index ${i} is out of range for an image of ${count} layers`);
    out.add(at);
  }
  return out;
}

async function encryptManifest(src: OciLayout, dst: OciLayout, desc: Descriptor, opts: EncryptImageOptions): Promise<{ desc: Descriptor; count: number }> {
  const manifest = await src.readJson<Manifest>(desc);
  if ((manifest.mediaType ?? desc.mediaType) !== MT_MANIFEST || !Array.isArray(manifest.layers)) {
    throw new InvalidArgument(`manifest ${desc.digest} is not an OCI image manifest (${manifest.mediaType ?? desc.mediaType}); convert it with skopeo copy --format oci first`);
  }
  const chosen = selected(manifest.layers.length, opts.layers);
  await dst.copyBlobFrom(src, manifest.config.digest);
  const layers: Descriptor[] = [];
  let count = 0;
  for (const [i, layer] of manifest.layers.entries()) {
    const tag = `layer ${i + 1}/${manifest.layers.length} ${short(layer.digest)}`;
    if (!chosen.has(i) || isEncryptedMediaType(layer.mediaType)) {
      if (chosen.has(i)) opts.progress?.(`${tag}: already encrypted, kept as is`);
      await dst.copyBlobFrom(src, layer.digest);
      layers.push(layer);
      continue;
    }
    const started = performance.now();
    opts.progress?.(`${tag}: encrypting ${mb(layer.size)} (${opts.cipher})`);
    const enc = createLayerEncryptor(layer, opts.recipients, opts.cipher, opts.chunkSize);
    const { digest, size } = await dst.writeStream(src.openBlob(layer.digest), verifying(layer), enc.stream);
    const { mediaType, annotations } = await enc.finish();
    layers.push({ ...layer, mediaType, digest, size, annotations });
    const s = (performance.now() - started) / 1000;
    opts.progress?.(`${tag}: done -> ${short(digest)} in ${s.toFixed(1)} s (${mb(layer.size / Math.max(s, 1e-3))}/s)`);
    count++;
  }
  const written = await dst.writeJson({ ...manifest, layers });
  return { desc: { ...desc, ...written }, count };
}

export async function encryptImage(opts: EncryptImageOptions): Promise<EncryptImageResult> {
  const src = new OciLayout(opts.input.dir);
  const dst = new OciLayout(opts.output.dir);
  const top = await src.resolve(opts.input.tag);
  const { [REF_NAME]: _name, ...rest } = top.annotations ?? {};
  const base: Descriptor = { ...top, annotations: rest };
  let result: { desc: Descriptor; count: number };
  if (top.mediaType === MT_INDEX) {
    // A multi-platform image: encrypt every platform's manifest, rewrite the index.
    const index = await src.readJson<ImageIndex>(top);
    const manifests: Descriptor[] = [];
    let count = 0;
    for (const m of index.manifests) {
      const r = await encryptManifest(src, dst, m, opts);
      manifests.push(r.desc);
      count += r.count;
    }
    result = { desc: { ...base, ...(await dst.writeJson({ ...index, manifests })) }, count };
  } else result = await encryptManifest(src, dst, base, opts);
  await dst.tag(result.desc, opts.output.tag ?? opts.input.tag);
  return { digest: result.desc.digest, encryptedLayers: result.count };
}
