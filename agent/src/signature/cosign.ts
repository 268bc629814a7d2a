// Cosign signatures in the legacy tag format (sigstore/cosign
// specs/SIGNATURE_SPEC.md): an OCI manifest at tag "sha256-<hex>.sig" whose
// layers are simplesigning payloads, each signed in the annotation
// dev.cosignproject.cosign/signature (base64 of an ASN.1 signature over the
// payload bytes). Public keys only: no Rekor, no Fulcio.

import { verify, type KeyObject } from 'node:crypto';
import { parseDescriptor } from '../image/manifest.ts';
import { MAX_SIGNATURE_BYTES, MAX_SIGNATURES, type SignatureSource } from './source.ts';
import { isObject, parseStrictJson } from './strict-json.ts';

export const COSIGN_LAYER_TYPE = 'application/vnd.dev.cosign.simplesigning.v1+json';
export const COSIGN_SIGNATURE_ANNOTATION = 'dev.cosignproject.cosign/signature';

/** A layer that could be a signature, or why it cannot. */
export type CosignCandidate = { readonly payload: Buffer; readonly signature: Buffer } | { readonly problem: string };

/** "sha256:<hex>" → "sha256-<hex>.sig" */
export const cosignTag = (digest: string): string => `${digest.replace(':', '-')}.sig`;

const BASE64 = /^[A-Za-z0-9+/]+={0,2}$/;

/**
 * The signature layers attached to a digest, payloads read by digest (never
 * re-serialised). No signature tag gives an empty list.
 */
export async function fetchCosignSignatures(source: SignatureSource, digest: string, signal?: AbortSignal): Promise<CosignCandidate[]> {
  const manifest = await source.getManifest(cosignTag(digest), signal);
  if (!manifest) return [];
  let layers: unknown[];
  try {
    const doc = parseStrictJson(manifest.bytes.toString('utf8'));
    if (!isObject(doc) || !Array.isArray(doc.layers)) return [{ problem: 'signature manifest has no layers array' }];
    layers = doc.layers;
  } catch {
    return [{ problem: 'signature manifest is not valid JSON' }];
  }
  if (layers.length > MAX_SIGNATURES) return [{ problem: `signature manifest has ${layers.length} layers, more than ${MAX_SIGNATURES}` }];
  const out: CosignCandidate[] = [];
  for (const [i, raw] of layers.entries()) {
    let desc;
    try {
      desc = parseDescriptor(raw, `layers[${i}]`);
    } catch (err) {
      out.push({ problem: (err as Error).message });
      continue;
    }
    if (desc.mediaType !== COSIGN_LAYER_TYPE) {
      out.push({ problem: `layers[${i}] has media type ${JSON.stringify(desc.mediaType.slice(0, 100))}, not ${COSIGN_LAYER_TYPE}` });
      continue;
    }
    const b64 = desc.annotations?.[COSIGN_SIGNATURE_ANNOTATION];
    if (b64 === undefined || !BASE64.test(b64)) {
      out.push({ problem: `layers[${i}] has no base64 ${COSIGN_SIGNATURE_ANNOTATION} annotation` });
      continue;
    }
    if (desc.size > MAX_SIGNATURE_BYTES) {
      out.push({ problem: `layers[${i}] payload is ${desc.size} bytes, more than ${MAX_SIGNATURE_BYTES}` });
      continue;
    }
    const payload = await source.getBlob(desc, MAX_SIGNATURE_BYTES, signal);
    out.push({ payload, signature: Buffer.from(b64, 'base64') });
  }
  return out;
}

/**
 * Whether any key verifies the signature over the exact payload bytes.
 * SHA-256 for ECDSA and RSA (PKCS#1 v1.5), as containers/image and cosign;
 * Ed25519 signs the payload itself.
 */
export function cosignVerifies(payload: Buffer, signature: Buffer, keys: readonly KeyObject[]): boolean {
  for (const key of keys) {
    try {
      if (verify(key.asymmetricKeyType === 'ed25519' ? null : 'sha256', payload, key, signature)) return true;
    } catch {
      // a signature that is not even well-formed for this key type
    }
  }
  return false;
}
