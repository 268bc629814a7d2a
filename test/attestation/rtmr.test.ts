import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { extendRegister, padToRegister, pcrToCcmr, pcrToRtmr } from '../../agent/src/attestation/rtmr.ts';

test('PCR to CC-MR/RTMR mapping (td-shim, UEFI CC)', () => {
  const table: Array<[number, number]> = [[0, 4], [1, 1], [7, 1], [2, 2], [6, 2], [8, 3], [15, 3], [16, 4], [17, 4], [23, 4]];
  for (const [pcr, ccmr] of table) assert.equal(pcrToCcmr(pcr), ccmr, `PCR ${pcr}`);
  assert.equal(pcrToRtmr(17), 3);
  assert.equal(pcrToRtmr(1), 0);
});

test('RTMR extend sequence: fixed vectors (computed with Python hashlib)', () => {
  // The AAEL digest of "domain operation content" (guest-components eventlog test vector).
  const d1 = Buffer.from('dad5f0e226318ffa9839b75a472c6aa7fdb5834949d0a0a22990cf04d5692440fb00f3aa0609db7e49cd8d793f670d02', 'hex');
  const r1 = extendRegister(Buffer.alloc(48), d1);
  assert.equal(r1.toString('hex'), '82d3f7a4203f58dafe0519eb5e9f645339cda127418c62d4b0270d790ab6ff3c38783523613a7a9f610e7ba004788c26');
  // A 32-byte digest is padded with 16 zero bytes before extending.
  const d2 = createHash('sha256').update('tee-agent').digest();
  const r2 = extendRegister(r1, d2);
  assert.equal(r2.toString('hex'), '6c2c74164e23c7356d09e6c39416aa210480c5a20612c6129a6a9b79cc74571aaaf5ae17864217ebaedc972b39cf3844');
  assert.deepEqual(padToRegister(d2).subarray(32), Buffer.alloc(16));
  assert.throws(() => extendRegister(Buffer.alloc(32), d1), RangeError);
});
