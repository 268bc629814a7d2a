// Which extended attributes from a layer archive are kept.
//
// - trusted.*: dropped. overlayfs keeps its own state there (opaque dirs,
//   redirects, metacopy); an archive must never forge it.
// - security.capability: kept, so file capabilities (ping, …) work.
//   Other security.* (selinux, ima, evm, smack labels) are dropped: labels
//   chosen by the image author mean nothing to the guest's policy, or worse.
// - user.*: kept, except user.overlay.* (overlayfs state under "userxattr").
// - system.* (POSIX ACLs) and anything else: dropped.
// Only regular files and directories get xattrs; values are capped at the
// kernel's 64 KiB.

const XATTR_SIZE_MAX = 65536;

export function keepXattr(name: string, value: Buffer): boolean {
  if (value.length > XATTR_SIZE_MAX || name.length > 255 || name.includes('\0')) return false;
  if (name === 'security.capability') return true;
  return name.startsWith('user.') && !name.startsWith('user.overlay.');
}

export const OPAQUE_XATTR = 'trusted.overlay.opaque';
