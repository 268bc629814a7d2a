// Finding the layer key: try every entry of every keys.* annotation with the
// keys we have (JWE private keys, KEKs through the key source) until one
// opens; otherwise say which annotations were there and why none opened.

import { AgentError, Code } from '../errors.ts';
import type { KeySource } from '../resource.ts';
import { parseAnnotationPacket, unwrapAnnotationPacket } from './coco-packet.ts';
import { NoKeyForLayer } from './errors.ts';
import { loadPrivateKeys, type DecryptionKeys, type NamedKey } from './keys.ts';
import { unwrapJwe } from './keywrap/jwe.ts';
import { keyUnwrapOutput, parseKeyUnwrapInput } from './keywrap/keyprovider.ts';
import { describeEncryptionAnnotations, wrappedKeys, type WrappedKeys } from './ocicrypt.ts';

/** Errors that mean "this entry is not for us": keep trying the others. Anything else (KBS down, cancelled) is rethrown. */
const isMiss = (err: unknown): boolean =>
  err instanceof AgentError && (err.code === Code.NOT_FOUND || err.code === Code.FAILED_PRECONDITION || err.code === Code.INVALID_ARGUMENT);

async function tryProvider(wk: WrappedKeys, keySource: KeySource | undefined, signal: AbortSignal | undefined, reasons: string[]): Promise<Buffer | undefined> {
  if (!keySource) {
    reasons.push(`${wk.annotation}: no key source is configured`);
    return undefined;
  }
  for (const [i, entry] of wk.entries.entries()) {
    try {
      return await unwrapAnnotationPacket(parseAnnotationPacket(entry), keySource, signal);
    } catch (err) {
      if (!isMiss(err)) throw err;
      reasons.push(`${wk.annotation}[${i}]: ${(err as AgentError).message}`);
    }
  }
  return undefined;
}

async function tryJwe(wk: WrappedKeys, keys: readonly NamedKey[], reasons: string[]): Promise<Buffer | undefined> {
  for (const [i, entry] of wk.entries.entries()) {
    const r = await unwrapJwe(entry, keys);
    if (r.payload) return r.payload;
    reasons.push(`${wk.annotation}[${i}]: ${r.reason}`);
  }
  return undefined;
}

/**
 * The unwrapped private options JSON of a layer (the caller zeroes it).
 * Throws NoKeyForLayer naming the layer and its annotations when no key opens it.
 */
export async function unwrapLayerKey(
  layer: string,
  annotations: Readonly<Record<string, string>> | undefined,
  keys: DecryptionKeys,
  signal?: AbortSignal,
): Promise<Buffer> {
  const reasons: string[] = [];
  const all = wrappedKeys(annotations, layer);
  let privateKeys: NamedKey[] | undefined;
  // Local private keys first (no network), then key providers.
  for (const wk of all.filter((w) => w.scheme === 'jwe')) {
    privateKeys ??= await loadPrivateKeys(keys, signal, (err) => {
      if (!isMiss(err)) return false;
      reasons.push((err as AgentError).message);
      return true;
    });
    const found = await tryJwe(wk, privateKeys, reasons);
    if (found) return found;
  }
  for (const wk of all.filter((w) => w.scheme === 'provider')) {
    const found = await tryProvider(wk, keys.keySource, signal, reasons);
    if (found) return found;
  }
  for (const wk of all.filter((w) => w.scheme === 'unsupported')) reasons.push(`${wk.annotation}: key wrapping not supported by this agent`);
  signal?.throwIfAborted();
  throw new NoKeyForLayer(
    `no usable key for encrypted layer ${layer}; annotations present: ${describeEncryptionAnnotations(annotations)}` +
      (reasons.length ? `; ${reasons.join('; ')}` : '; no keys.* annotation to unwrap'),
  );
}

/**
 * keyprovider.KeyProviderService/UnWrapKey: the keyunwrap request carries
 * one annotation packet; open it with the KEK from the key source and reply
 * with the private options. The reply holds the layer key: zero it after use.
 */
export async function unwrapForKeyProvider(input: Buffer, keySource: KeySource, signal?: AbortSignal): Promise<Buffer> {
  const { annotation } = parseKeyUnwrapInput(input);
  const optsdata = await unwrapAnnotationPacket(parseAnnotationPacket(annotation), keySource, signal);
  try {
    return keyUnwrapOutput(optsdata);
  } finally {
    optsdata.fill(0);
  }
}
