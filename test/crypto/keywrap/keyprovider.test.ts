import { test } from 'node:test';
import assert from 'node:assert/strict';
import { keyUnwrapOutput, parseKeyUnwrapInput, parseKeyUnwrapOutput } from '../../../agent/src/crypto/keywrap/keyprovider.ts';
import { BadEncryptionMetadata } from '../../../agent/src/crypto/errors.ts';

const packet = Buffer.from('{"kid":"kbs:///a/b/c"}');

test('keyunwrap input: annotation as a base64 string (Go) or a number array (Rust), dc parameters ignored', () => {
  for (const annotation of [packet.toString('base64'), Array.from(packet)]) {
    const input = Buffer.from(JSON.stringify({ op: 'keyunwrap', keywrapparams: {}, keyunwrapparams: { dc: { Parameters: { 'attestation-agent': ['AA=='] } }, annotation } }));
    assert.deepEqual(parseKeyUnwrapInput(input).annotation, packet);
  }
  for (const bad of ['', '[]', '{"op":"keywrap"}', '{"op":"keyunwrap"}', '{"op":"keyunwrap","keyunwrapparams":{"annotation":"!!"}}', '{"op":"keyunwrap","keyunwrapparams":{"annotation":""}}']) {
    assert.throws(() => parseKeyUnwrapInput(Buffer.from(bad)), BadEncryptionMetadata, bad);
  }
});

test('keyunwrap output: optsdata as a number array, read back in either encoding', () => {
  const opts = Buffer.from('{"symkey":"…"}');
  const out = keyUnwrapOutput(opts);
  assert.deepEqual(JSON.parse(out.toString()), { keyunwrapresults: { optsdata: Array.from(opts) } });
  assert.deepEqual(parseKeyUnwrapOutput(out), opts);
  assert.deepEqual(parseKeyUnwrapOutput(Buffer.from(JSON.stringify({ keyunwrapresults: { optsdata: opts.toString('base64') } }))), opts);
  assert.throws(() => parseKeyUnwrapOutput(Buffer.from('{}')), BadEncryptionMetadata);
});
