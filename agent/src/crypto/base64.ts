// Lenient-but-strict base64 for ocicrypt fields: the standard alphabet with
// optional padding (Go and Rust emit padded; some tools strip it). Anything
// else is an error instead of Node's silent skipping of bad characters.

const STD = /^[A-Za-z0-9+/]*={0,2}$/;

export function decodeStdBase64(text: string): Buffer | undefined {
  const t = text.trim();
  if (!STD.test(t) || t.replace(/=+$/, '').length % 4 === 1) return undefined;
  return Buffer.from(t, 'base64');
}

/** ocicrypt-rs and CDH send bytes as JSON number arrays; Go sends base64 strings. Accept both. */
export function decodeJsonBytes(value: unknown): Buffer | undefined {
  if (typeof value === 'string') return decodeStdBase64(value);
  if (Array.isArray(value) && value.every((b) => Number.isInteger(b) && b >= 0 && b <= 255)) return Buffer.from(value as number[]);
  return undefined;
}
