// ocicrypt's names: encrypted layer media types and the encryption
// annotations (containers/ocicrypt spec/spec.go and the keywrappers).

import { decodeStdBase64 } from './fields.ts';
import { BadEncryptionMetadata, UnsupportedEncryption } from './errors.ts';

export const ENC_ANNOTATION_PREFIX = 'org.opencontainers.image.enc.';
export const ANNOTATION_JWE = 'org.opencontainers.image.enc.keys.jwe';
export const ANNOTATION_PUBOPTS = 'org.opencontainers.image.enc.pubopts';
export const ANNOTATION_PROVIDER_PREFIX = 'org.opencontainers.image.enc.keys.provider.';
/** The provider name CoCo's coco_keyprovider writes and CDH unwraps. */
export const COCO_PROVIDER = 'attestation-agent';

const ENCRYPTED_SUFFIX = '+encrypted';
const PLAIN_LAYER_TYPES = new Set([
  'application/vnd.oci.image.layer.v1.tar',
  'application/vnd.oci.image.layer.v1.tar+gzip',
  'application/vnd.oci.image.layer.v1.tar+zstd',
  'application/vnd.oci.image.layer.nondistributable.v1.tar',
  'application/vnd.oci.image.layer.nondistributable.v1.tar+gzip',
  'application/vnd.oci.image.layer.nondistributable.v1.tar+zstd',
]);

export const isEncryptedMediaType = (mediaType: string): boolean => mediaType.endsWith(ENCRYPTED_SUFFIX);

/** The plaintext media type of an encrypted layer: "+encrypted" stripped, and one we can unpack. */
export function plainMediaType(mediaType: string): string {
  const plain = mediaType.slice(0, -ENCRYPTED_SUFFIX.length);
  if (!isEncryptedMediaType(mediaType) || !PLAIN_LAYER_TYPES.has(plain)) {
    throw new UnsupportedEncryption(`media type ${JSON.stringify(mediaType)} is not an encrypted tar layer type`);
  }
  return plain;
}

export function encryptedMediaType(mediaType: string): string {
  if (!PLAIN_LAYER_TYPES.has(mediaType)) throw new UnsupportedEncryption(`cannot encrypt a layer of media type ${JSON.stringify(mediaType)}`);
  return mediaType + ENCRYPTED_SUFFIX;
}

/** Annotations with every org.opencontainers.image.enc.* key removed (ocicrypt FilterOutAnnotations). */
export function stripEncryptionAnnotations(annotations: Readonly<Record<string, string>> | undefined): Record<string, string> {
  return Object.fromEntries(Object.entries(annotations ?? {}).filter(([k]) => !k.startsWith(ENC_ANNOTATION_PREFIX)));
}

/** One keys.* annotation: its decoded entries (one per comma-separated base64 blob). */
export interface WrappedKeys {
  readonly annotation: string;
  readonly scheme: 'jwe' | 'provider' | 'unsupported';
  /** keys.provider.<name>: the name. */
  readonly provider?: string;
  readonly entries: readonly Buffer[];
}

export function wrappedKeys(annotations: Readonly<Record<string, string>> | undefined, layer: string): WrappedKeys[] {
  const out: WrappedKeys[] = [];
  for (const [annotation, value] of Object.entries(annotations ?? {})) {
    if (!annotation.startsWith(`${ENC_ANNOTATION_PREFIX}keys.`)) continue;
    const entries = value
      .split(',')
      .filter((s) => s.trim() !== '')
      .map((s) => decodeStdBase64(s) ?? badEntry(layer, annotation));
    if (annotation === ANNOTATION_JWE) out.push({ annotation, scheme: 'jwe', entries });
    else if (annotation.startsWith(ANNOTATION_PROVIDER_PREFIX)) {
      out.push({ annotation, scheme: 'provider', provider: annotation.slice(ANNOTATION_PROVIDER_PREFIX.length), entries });
    } else out.push({ annotation, scheme: 'unsupported', entries });
  }
  return out;
}

function badEntry(layer: string, annotation: string): never {
  throw new BadEncryptionMetadata(`layer ${layer}: ${annotation} is not a comma-separated list of standard base64`);
}

/** "name (n entries)" for every enc.* annotation, for NoKeyForLayer messages. */
export function describeEncryptionAnnotations(annotations: Readonly<Record<string, string>> | undefined): string {
  const names = Object.entries(annotations ?? {})
    .filter(([k]) => k.startsWith(ENC_ANNOTATION_PREFIX))
    .map(([k, v]) => (k.startsWith(`${ENC_ANNOTATION_PREFIX}keys.`) ? `${k} (${v.split(',').filter((s) => s.trim()).length} entries)` : k));
  return names.length ? names.sort().join(', ') : 'none';
}
