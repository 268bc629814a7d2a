// The ocicrypt keyprovider JSON protocol (keywrap/keyprovider): what
// keyprovider.KeyProviderService carries in its bytes field. Go peers send
// byte fields as base64 strings, Rust peers as number arrays; both are read.
// Replies use number arrays, as CDH does: ocicrypt-rs reads only those, Go
// reads both.

import { decodeJsonBytes, parseJsonObject } from '../fields.ts';
import { BadEncryptionMetadata } from '../errors.ts';

export interface KeyUnwrapInput {
  readonly op: 'keyunwrap';
  /** The layer annotation entry (for CoCo: the annotation packet JSON). */
  readonly annotation: Buffer;
}

export function parseKeyUnwrapInput(bytes: Buffer): KeyUnwrapInput {
  const doc = parseJsonObject(bytes);
  if (!doc) throw new BadEncryptionMetadata('keyprovider input is not a JSON object');
  if (doc.op !== 'keyunwrap') throw new BadEncryptionMetadata(`keyprovider op ${JSON.stringify(doc.op)} is not supported here (only keyunwrap)`);
  const params = doc.keyunwrapparams;
  const raw = typeof params === 'object' && params !== null ? (params as Record<string, unknown>).annotation : undefined;
  const annotation = decodeJsonBytes(raw);
  if (!annotation || annotation.length === 0) throw new BadEncryptionMetadata('keyprovider input has no keyunwrapparams.annotation (base64 string or byte array)');
  return { op: 'keyunwrap', annotation };
}

/** The keyunwrap reply. The returned buffer holds the private options: the caller zeroes it after sending. */
export function keyUnwrapOutput(optsdata: Buffer): Buffer {
  return Buffer.from(JSON.stringify({ keyunwrapresults: { optsdata: Array.from(optsdata) } }));
}

/** Read optsdata from a keyunwrap reply (either encoding). */
export function parseKeyUnwrapOutput(bytes: Buffer): Buffer {
  const results = parseJsonObject(bytes)?.keyunwrapresults;
  const optsdata = typeof results === 'object' && results !== null ? decodeJsonBytes((results as Record<string, unknown>).optsdata) : undefined;
  if (!optsdata) throw new BadEncryptionMetadata('keyprovider output has no keyunwrapresults.optsdata');
  return optsdata;
}
