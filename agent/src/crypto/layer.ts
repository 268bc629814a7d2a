// The decryption stage of a pull: one encrypted layer descriptor in, a
// Transform that turns its ciphertext into the plaintext (compressed) blob
// out, plus the plaintext media type and annotations.

import type { Transform } from 'node:stream';
import { Code, AgentError } from '../errors.ts';
import { ctrHmacDecryptStream, CTR_NONCE_BYTES } from './ciphers/ctr-hmac.ts';
import { gcmStreamDecryptStream } from './ciphers/gcm-stream.ts';
import { BadEncryptionMetadata, UnsupportedEncryption } from './errors.ts';
import type { DecryptionKeys } from './keys.ts';
import { ANNOTATION_PUBOPTS, isEncryptedMediaType, plainMediaType, stripEncryptionAnnotations } from './ocicrypt.ts';
import { CIPHER_CTR_HMAC, CIPHER_GCM_STREAM, parsePrivateOptions, parsePublicOptions, type CipherName } from './options.ts';
import { unwrapLayerKey } from './unwrap.ts';

export interface LayerDescriptor {
  readonly mediaType: string;
  readonly digest: string;
  readonly size: number;
  readonly annotations?: Readonly<Record<string, string>>;
}

export interface LayerDecryptor {
  /** Ciphertext in, plaintext out. Errors (typed AgentError) before 'end' on any authentication or digest failure. */
  readonly stream: Transform;
  /** The plaintext media type: "+encrypted" stripped. */
  readonly mediaType: string;
  /** The descriptor's annotations without org.opencontainers.image.enc.*. */
  readonly annotations: Readonly<Record<string, string>>;
  readonly cipher: CipherName;
  /** The plaintext blob digest from the private options (ocicrypt's DecryptLayer result), when recorded. */
  readonly plainDigest: string | undefined;
  /** Throws unless the stream has finished with every check passed. Call once the pipeline has completed. */
  verify(): void;
}

export interface LayerDecryptOptions {
  readonly signal?: AbortSignal;
  /**
   * Also hash AES_256_GCM_STREAM plaintext against the private digest
   * (redundant with its AEAD; default false). AES_256_CTR_HMAC_SHA256 always checks it.
   */
  readonly verifyPlainDigest?: boolean;
  /**
   * The layer's diff_id from the image config. containers/image (skopeo)
   * compresses an uncompressed layer before encrypting it but records the
   * uncompressed digest, which is the diff_id, as the private digest. When
   * the two are equal the blob digest cannot match, and the pull's diff_id
   * check after decompression is the check of that digest.
   */
  readonly diffId?: string;
}

export const isEncryptedLayer = (desc: Pick<LayerDescriptor, 'mediaType'>): boolean => isEncryptedMediaType(desc.mediaType);

/** Unwrap the layer key with `keys` and set up the decrypting stream for the layer's cipher. */
export async function createLayerDecryptor(desc: LayerDescriptor, keys: DecryptionKeys, options: LayerDecryptOptions = {}): Promise<LayerDecryptor> {
  return decryptorFromOptions(desc, await unwrapLayerOptions(desc, keys, options.signal), options);
}

/** The layer's private options, unwrapped with `keys` once its encryption metadata passed (before any key is fetched). The caller zeroes them. */
export async function unwrapLayerOptions(desc: LayerDescriptor, keys: DecryptionKeys, signal?: AbortSignal): Promise<Buffer> {
  checkLayer(desc);
  return unwrapLayerKey(desc.digest, desc.annotations, keys, signal);
}

function checkLayer(desc: LayerDescriptor): { mediaType: string; cipher: CipherName; hmac?: Buffer } {
  const mediaType = plainMediaType(desc.mediaType);
  const pub = parsePublicOptions(desc.annotations?.[ANNOTATION_PUBOPTS], desc.digest);
  if (pub.cipher !== CIPHER_CTR_HMAC && pub.cipher !== CIPHER_GCM_STREAM) {
    throw new UnsupportedEncryption(`layer ${desc.digest}: cipher ${JSON.stringify(pub.cipher)} is not supported`);
  }
  return { mediaType, cipher: pub.cipher, hmac: pub.hmac };
}

/**
 * The same, for private options already unwrapped elsewhere (an ocicrypt
 * keyprovider's keyunwrap reply). `optsdata` is zeroed.
 */
export function decryptorFromOptions(desc: LayerDescriptor, optsdata: Buffer, options: LayerDecryptOptions = {}): LayerDecryptor {
  const layer = desc.digest;
  let checked: ReturnType<typeof checkLayer>;
  try {
    checked = checkLayer(desc);
  } catch (err) {
    optsdata.fill(0);
    throw err;
  }
  const { mediaType, cipher, hmac } = checked;
  const priv = parsePrivateOptions(optsdata, layer);
  const blobDigest = priv.digest !== undefined && priv.digest === options.diffId ? undefined : priv.digest;
  let stream: Transform;
  try {
    if (cipher === CIPHER_CTR_HMAC) {
      if (!hmac) throw new BadEncryptionMetadata(`layer ${layer}: the public options carry no HMAC`);
      if (priv.nonce?.length !== CTR_NONCE_BYTES) throw new BadEncryptionMetadata(`layer ${layer}: the private options carry no 16-byte nonce`);
      stream = ctrHmacDecryptStream({ key: priv.symkey, nonce: priv.nonce, mac: hmac, plainDigest: blobDigest, layer });
    } else {
      stream = gcmStreamDecryptStream({ key: priv.symkey, layer, plainDigest: options.verifyPlainDigest ? blobDigest : undefined });
    }
  } finally {
    priv.symkey.fill(0);
  }
  // 'finish' follows a successful flush only, and flush is where MAC, final-chunk and digest checks run.
  let finished = false;
  let failure: unknown;
  stream.once('finish', () => (finished = true));
  stream.once('error', (err) => (failure = err));
  return {
    stream,
    mediaType,
    annotations: Object.freeze(stripEncryptionAnnotations(desc.annotations)),
    cipher,
    plainDigest: priv.digest,
    verify() {
      if (failure instanceof AgentError) throw failure;
      if (failure !== undefined || !finished) throw new AgentError(Code.DATA_LOSS, `layer ${layer}: decryption did not complete`);
    },
  };
}
