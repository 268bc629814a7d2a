// storage/: encrypted block volumes inside the guest (CDH SecureMount,
// block-device). Owns dm-crypt/LUKS2 through the cryptsetup binary, the
// strict validation of LUKS2 headers the host could have swapped, ext4
// creation that works on dm-integrity, mounts, the tmpfs run directory with
// headers and state records, crash recovery, and the mapping of kata's
// encrypted block Storage onto SecureMount. Keys come in through KeySource
// (and SecretUnsealer for sealed secrets) and only ever reach cryptsetup on
// its stdin.

export { SecureStorage, type SecretUnsealer, type StorageConfig, type StorageDeps, type VolumeFacts } from './volumes.ts';
export { parseSecureMount, type SecureMountRequest, type VolumeSpec } from './options.ts';
export { isEncryptedBlockStorage, mountEncryptedStorage, secureMountForStorage, storageDevice, type KataStorage } from './kata.ts';
export type { VolumeRecord } from './state.ts';
export * from './errors.ts';
