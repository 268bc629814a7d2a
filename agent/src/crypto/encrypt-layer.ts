// Encrypting one layer for image maintainers: a fresh random layer key, the
// chosen cipher, and the private options wrapped for every recipient (one
// JWE for all public keys, one CoCo packet per KBS key id).

import { randomBytes } from 'node:crypto';
import type { Transform } from 'node:stream';
import { ctrHmacEncryptStream, CTR_NONCE_BYTES } from './ciphers/ctr-hmac.ts';
import { DEFAULT_CHUNK_SIZE, gcmStreamEncryptStream } from './ciphers/gcm-stream.ts';
import { wrapAnnotationPacket } from './coco-packet.ts';
import type { PublicRecipientKey } from './keys.ts';
import { wrapJwe } from './keywrap/jwe.ts';
import type { LayerDescriptor } from './layer.ts';
import { ANNOTATION_JWE, ANNOTATION_PROVIDER_PREFIX, ANNOTATION_PUBOPTS, COCO_PROVIDER, encryptedMediaType } from './ocicrypt.ts';
import { CIPHER_CTR_HMAC, CIPHER_GCM_STREAM, serializePrivateOptions, serializePublicOptions, type CipherName } from './options.ts';

export interface KbsRecipient {
  /** kbs:///repo/type/tag of the KEK. */
  readonly kid: string;
  /** The 32-byte KEK itself; the caller zeroes it when done with all layers. */
  readonly kek: Buffer;
}

export interface LayerRecipients {
  readonly jwe: readonly PublicRecipientKey[];
  readonly kbs: readonly KbsRecipient[];
}

export interface LayerEncryptor {
  /** Plaintext blob in, encrypted blob out. */
  readonly stream: Transform;
  /** Once the stream has ended: the encrypted layer's media type and annotations (digest and size are the caller's to measure). */
  finish(): Promise<{ mediaType: string; annotations: Record<string, string> }>;
}

export function createLayerEncryptor(
  plain: LayerDescriptor,
  recipients: LayerRecipients,
  cipher: CipherName = CIPHER_CTR_HMAC,
  chunkSize = DEFAULT_CHUNK_SIZE,
): LayerEncryptor {
  if (recipients.jwe.length + recipients.kbs.length === 0) throw new RangeError('encrypting a layer needs at least one recipient');
  const mediaType = encryptedMediaType(plain.mediaType);
  const symkey = randomBytes(32);
  const nonce = cipher === CIPHER_CTR_HMAC ? randomBytes(CTR_NONCE_BYTES) : undefined;
  const ctr = nonce ? ctrHmacEncryptStream(symkey, nonce) : undefined;
  const stream = ctr ? ctr.stream : gcmStreamEncryptStream(symkey, chunkSize);
  return {
    stream,
    async finish() {
      const opts = serializePrivateOptions({ symkey, digest: plain.digest, nonce });
      try {
        const annotations: Record<string, string> = { ...(plain.annotations ?? {}) };
        if (recipients.jwe.length) annotations[ANNOTATION_JWE] = (await wrapJwe(opts, recipients.jwe)).toString('base64');
        if (recipients.kbs.length) {
          annotations[ANNOTATION_PROVIDER_PREFIX + COCO_PROVIDER] = recipients.kbs.map((r) => wrapAnnotationPacket(opts, r.kek, r.kid).toString('base64')).join(',');
        }
        annotations[ANNOTATION_PUBOPTS] = serializePublicOptions({ cipher: ctr ? CIPHER_CTR_HMAC : CIPHER_GCM_STREAM, hmac: ctr?.mac() });
        return { mediaType, annotations };
      } finally {
        opts.fill(0);
        symkey.fill(0);
      }
    },
  };
}
