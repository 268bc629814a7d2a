// TDX runtime measurement registers: the PCR → RTMR mapping of the td-shim
// and UEFI CC specs, and the extend operation the TDX module performs.

import { createHash } from 'node:crypto';

/** SHA-384 digest size, the width of every TDX measurement register. */
export const RTMR_SIZE = 48;

/**
 * CC measurement register index (1-based, MRTD is 0) for a TPM PCR index:
 * PCR 1,7 → 1; 2–6 → 2; 8–15 → 3; anything else (incl. default 17) → 4.
 * RTMR index = CC-MR index − 1.
 */
export function pcrToCcmr(pcr: number): number {
  if (pcr === 1 || pcr === 7) return 1;
  if (pcr >= 2 && pcr <= 6) return 2;
  if (pcr >= 8 && pcr <= 15) return 3;
  return 4;
}

export const pcrToRtmr = (pcr: number): number => pcrToCcmr(pcr) - 1;

/** Right-pad with zeros (or truncate) to the register width. */
export function padToRegister(data: Uint8Array): Buffer {
  const out = Buffer.alloc(RTMR_SIZE);
  out.set(data.subarray(0, RTMR_SIZE));
  return out;
}

/** new = SHA384(old ‖ data48), as the TDX module extends an RTMR. */
export function extendRegister(current: Uint8Array, data: Uint8Array): Buffer {
  if (current.length !== RTMR_SIZE) throw new RangeError(`register must be ${RTMR_SIZE} bytes`);
  return createHash('sha384').update(current).update(padToRegister(data)).digest();
}
