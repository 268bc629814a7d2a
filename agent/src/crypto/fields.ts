// Decoding the JSON and base64 fields of ocicrypt metadata. Base64 is the
// standard alphabet with optional padding (Go and Rust emit padded; some tools
// strip it); anything else is refused instead of Node's silent skipping of
// bad characters.

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

/** A JSON object from bytes or text, or undefined for anything else (bad JSON, arrays, scalars). */
export function parseJsonObject(input: Buffer | string): Record<string, unknown> | undefined {
  try {
    const doc = JSON.parse(typeof input === 'string' ? input : input.toString('utf8')) as unknown;
    return typeof doc === 'object' && doc !== null && !Array.isArray(doc) ? (doc as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}
