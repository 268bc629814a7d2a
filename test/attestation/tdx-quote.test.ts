import { test } from 'node:test';
import assert from 'node:assert/strict';
import { AttesterError } from '../../agent/src/attestation/errors.ts';
import { parseTdxQuote } from '../../agent/src/attestation/tdx-quote.ts';
import { buildTdxQuote, INTEL_VENDOR_ID } from '../fixtures/tdx-quote.ts';

const filled = (byte: number, n = 48): Buffer => Buffer.alloc(n, byte);

test('v4 quote: header and the body fields at the documented quote offsets', () => {
  const reportData = Buffer.concat([filled(0xaa, 48), Buffer.alloc(16)]);
  const q = buildTdxQuote({ reportData, mrTd: filled(0x01), mrConfigId: filled(0x02), rtmrs: [filled(0x10), filled(0x11), filled(0x12), filled(0x13)] });
  // Offsets straight from the reference table, on the raw bytes.
  assert.deepEqual(q.subarray(184, 232), filled(0x01));
  assert.deepEqual(q.subarray(232, 280), filled(0x02));
  assert.deepEqual(q.subarray(376, 424), filled(0x10));
  assert.deepEqual(q.subarray(520, 568), filled(0x13));
  assert.deepEqual(q.subarray(568, 632), reportData);
  const p = parseTdxQuote(q);
  assert.equal(p.version, 4);
  assert.equal(p.attestationKeyType, 2);
  assert.equal(p.teeType, 0x81);
  assert.deepEqual(p.vendorId, INTEL_VENDOR_ID);
  assert.equal(p.bodyOffset, 48);
  assert.equal(p.signedLength, 632);
  assert.deepEqual(p.body.mrTd, filled(0x01));
  assert.deepEqual(p.body.mrConfigId, filled(0x02));
  assert.deepEqual(p.body.rtmrs, [filled(0x10), filled(0x11), filled(0x12), filled(0x13)]);
  assert.deepEqual(p.body.reportData, reportData);
  // Fields left to the pattern fill: byte at quote offset o is (o - 48) % 251.
  assert.equal(p.body.teeTcbSvn[0], 0);
  assert.equal(p.body.mrSeam[0], 16);
  assert.equal(p.body.mrSignerSeam[0], 64);
  assert.equal(p.body.seamAttributes[0], 112);
  assert.equal(p.body.tdAttributes[0], 120);
  assert.equal(p.body.xfam[0], 128);
  assert.equal(p.body.mrOwner[0], 232);
  assert.equal(p.body.mrOwnerConfig[0], 280 % 251);
});

test('v5 quote with a TDX 1.0 body starts the body at 54', () => {
  const p = parseTdxQuote(buildTdxQuote({ version: 5, reportData: filled(0x5a, 64), mrConfigId: filled(0x07) }));
  assert.equal(p.version, 5);
  assert.equal(p.bodyOffset, 54);
  assert.deepEqual(p.body.reportData, filled(0x5a, 64));
  assert.deepEqual(p.body.mrConfigId, filled(0x07));
});

test('short, non-TDX and unknown-version quotes are refused', () => {
  assert.throws(() => parseTdxQuote(Buffer.alloc(100)), AttesterError);
  const sgx = buildTdxQuote();
  sgx.writeUInt32LE(0, 4);
  assert.throws(() => parseTdxQuote(sgx), /not a TDX quote/);
  const v3 = buildTdxQuote();
  v3.writeUInt16LE(3, 0);
  assert.throws(() => parseTdxQuote(v3), /version 3/);
  const v5bad = buildTdxQuote({ version: 5 });
  v5bad.writeUInt16LE(9, 48);
  assert.throws(() => parseTdxQuote(v5bad), AttesterError);
});
