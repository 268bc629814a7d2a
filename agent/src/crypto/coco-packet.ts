// The CoCo annotation packet (keys.provider.attestation-agent): the private
// options sealed under a KEK that lives in the KBS (or the offline store),
// named by `kid`. v1: kid, wrapped_data, iv, wrap_type; v2 adds version,
// provider, provider_settings and annotations (guest-components CDH).

import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { AgentError, Code } from '../errors.ts';
import { parseResourceUri, type KeySource } from '../resource.ts';
import { decodeJsonBytes, parseJsonObject } from './fields.ts';
import { BadEncryptionMetadata, KeyUnwrapFailed, UnsupportedEncryption } from './errors.ts';

export interface AnnotationPacket {
  readonly kid: string;
  readonly wrappedData: Buffer;
  readonly iv: Buffer;
  readonly wrapType: 'A256GCM' | 'A256CTR';
}

const IV_BYTES = { A256GCM: 12, A256CTR: 16 } as const;
const TAG_BYTES = 16;

export function parseAnnotationPacket(bytes: Buffer): AnnotationPacket {
  const doc = parseJsonObject(bytes);
  if (!doc) throw new BadEncryptionMetadata('annotation packet is not a JSON object');
  const provider = doc.provider ?? 'kbs';
  if (provider !== 'kbs') throw new UnsupportedEncryption(`annotation packet provider ${JSON.stringify(provider)} is not supported (only kbs)`);
  if (typeof doc.kid !== 'string') throw new BadEncryptionMetadata('annotation packet has no kid');
  const kid = doc.kid;
  parseResourceUri(kid);
  const wrapType = doc.wrap_type ?? 'A256GCM';
  if (wrapType !== 'A256GCM' && wrapType !== 'A256CTR') throw new UnsupportedEncryption(`annotation packet wrap_type ${JSON.stringify(wrapType)} is not supported`);
  const wrappedData = decodeJsonBytes(doc.wrapped_data);
  const iv = decodeJsonBytes(doc.iv);
  if (!wrappedData) throw new BadEncryptionMetadata('annotation packet wrapped_data is not base64');
  if (!iv || iv.length !== IV_BYTES[wrapType]) throw new BadEncryptionMetadata(`annotation packet iv must be ${IV_BYTES[wrapType]} bytes for ${wrapType}`);
  if (wrapType === 'A256GCM' && wrappedData.length < TAG_BYTES) throw new BadEncryptionMetadata('annotation packet wrapped_data is shorter than a GCM tag');
  return { kid, wrappedData, iv, wrapType };
}

/** Fetch the KEK named by `kid` and open the packet: the private options JSON (the caller zeroes it). */
export async function unwrapAnnotationPacket(packet: AnnotationPacket, keySource: KeySource, signal?: AbortSignal): Promise<Buffer> {
  const kek = await keySource.get(parseResourceUri(packet.kid), signal);
  try {
    if (kek.length !== 32) throw new KeyUnwrapFailed(`KEK ${packet.kid} is ${kek.length} bytes, expected 32`);
    if (packet.wrapType === 'A256CTR') {
      const d = createDecipheriv('aes-256-ctr', kek, packet.iv);
      return Buffer.concat([d.update(packet.wrappedData), d.final()]);
    }
    const body = packet.wrappedData.subarray(0, -TAG_BYTES);
    const d = createDecipheriv('aes-256-gcm', kek, packet.iv, { authTagLength: TAG_BYTES });
    d.setAuthTag(packet.wrappedData.subarray(-TAG_BYTES));
    const out = d.update(body);
    try {
      d.final();
    } catch {
      out.fill(0);
      throw new KeyUnwrapFailed(`KEK ${packet.kid} does not open the annotation packet`);
    }
    return out;
  } finally {
    kek.fill(0);
  }
}

/** Seal private options under a KEK, as coco_keyprovider does (A256GCM, random 12-byte IV, tag appended, no AAD). */
export function wrapAnnotationPacket(optsdata: Buffer, kek: Buffer, kid: string): Buffer {
  parseResourceUri(kid);
  if (kek.length !== 32) throw new AgentError(Code.INVALID_ARGUMENT, `KEK for ${kid} must be 32 bytes, got ${kek.length}`);
  const iv = randomBytes(IV_BYTES.A256GCM);
  const c = createCipheriv('aes-256-gcm', kek, iv, { authTagLength: TAG_BYTES });
  const wrapped = Buffer.concat([c.update(optsdata), c.final(), c.getAuthTag()]);
  return Buffer.from(JSON.stringify({ kid, wrapped_data: wrapped.toString('base64'), iv: iv.toString('base64'), wrap_type: 'A256GCM' }));
}
