// TDX quote layout (Intel DCAP sgx_quote_4.h / sgx_quote_5.h), little-endian.
// We parse the header and the TD report body only; the signature is checked
// by the verifier, never here.

import { AttesterError } from './errors.ts';

export const QUOTE_HEADER_SIZE = 48;
export const TD10_BODY_SIZE = 584;
export const TD15_BODY_SIZE = 648;
export const TDX_TEE_TYPE = 0x81;

/** Offsets inside the TD report body (add the body offset for the quote offset). */
export const BODY = {
  teeTcbSvn: [0, 16],
  mrSeam: [16, 48],
  mrSignerSeam: [64, 48],
  seamAttributes: [112, 8],
  tdAttributes: [120, 8],
  xfam: [128, 8],
  mrTd: [136, 48],
  mrConfigId: [184, 48],
  mrOwner: [232, 48],
  mrOwnerConfig: [280, 48],
  rtmr0: [328, 48],
  rtmr1: [376, 48],
  rtmr2: [424, 48],
  rtmr3: [472, 48],
  reportData: [520, 64],
} as const;

export interface TdxQuote {
  readonly version: 4 | 5;
  readonly attestationKeyType: number;
  readonly teeType: number;
  readonly vendorId: Buffer;
  /** Quote offset of the TD report body: 48 for v4, 54 for v5. */
  readonly bodyOffset: number;
  readonly body: { readonly [K in keyof typeof BODY]: Buffer } & { readonly rtmrs: readonly Buffer[] };
  /** Bytes covered by the quote signature (header and body). */
  readonly signedLength: number;
}

export function parseTdxQuote(quote: Uint8Array): TdxQuote {
  const b = Buffer.from(quote.buffer, quote.byteOffset, quote.byteLength);
  if (b.length < QUOTE_HEADER_SIZE + TD10_BODY_SIZE) throw new AttesterError(`TDX quote too short (${b.length} bytes)`);
  const version = b.readUInt16LE(0);
  const teeType = b.readUInt32LE(4);
  if (teeType !== TDX_TEE_TYPE) throw new AttesterError(`not a TDX quote (tee_type 0x${teeType.toString(16)})`);
  let bodyOffset = QUOTE_HEADER_SIZE;
  let bodySize = TD10_BODY_SIZE;
  if (version === 5) {
    const bodyType = b.readUInt16LE(48);
    bodySize = b.readUInt32LE(50);
    bodyOffset = 54;
    if (!((bodyType === 2 && bodySize === TD10_BODY_SIZE) || (bodyType === 3 && bodySize === TD15_BODY_SIZE))) {
      throw new AttesterError(`TDX quote v5 body type ${bodyType} with size ${bodySize} is not supported`);
    }
    if (b.length < bodyOffset + bodySize) throw new AttesterError('TDX quote v5 truncated');
  } else if (version !== 4) {
    throw new AttesterError(`TDX quote version ${version} is not supported`);
  }
  const field = ([off, len]: readonly [number, number]): Buffer => Buffer.from(b.subarray(bodyOffset + off, bodyOffset + off + len));
  const body = Object.fromEntries(Object.entries(BODY).map(([k, range]) => [k, field(range)])) as { [K in keyof typeof BODY]: Buffer };
  return {
    version,
    attestationKeyType: b.readUInt16LE(2),
    teeType,
    vendorId: Buffer.from(b.subarray(12, 28)),
    bodyOffset,
    body: { ...body, rtmrs: [body.rtmr0, body.rtmr1, body.rtmr2, body.rtmr3] },
    signedLength: bodyOffset + bodySize,
  };
}
