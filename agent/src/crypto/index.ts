// crypto/: encrypted layers. Owns ocicrypt-compatible decryption (media
// types, enc.* annotations, JWE and keyprovider/CoCo-packet key unwrapping,
// AES_256_CTR_HMAC_SHA256), our AES_256_GCM_STREAM cipher
// (docs/aes-256-gcm-stream.md), the keyprovider UnWrapKey capability, and
// image encryption for maintainers (tee-agent encrypt). Keys come in through
// DecryptionKeys and the KeySource interface; nothing here fetches or caches
// keys on its own or knows about transports.

export { createLayerDecryptor, decryptorFromOptions, isEncryptedLayer, type LayerDecryptor, type LayerDecryptOptions, type LayerDescriptor } from './layer.ts';
export { decryptionKeys, type DecryptionKeys } from './keys.ts';
export { unwrapForKeyProvider } from './unwrap.ts';
export { pullDecryptor } from './pull-hook.ts';
export { isEncryptedMediaType, plainMediaType, stripEncryptionAnnotations } from './ocicrypt.ts';
export { CIPHER_CTR_HMAC, CIPHER_GCM_STREAM, type CipherName } from './options.ts';
export * from './errors.ts';
