import { test } from 'node:test';
import assert from 'node:assert/strict';
import { decodeJsonBytes, decodeStdBase64, parseJsonObject } from '../../agent/src/crypto/fields.ts';

test('base64 fields: standard alphabet, padding optional, anything else refused; bytes also as number arrays', () => {
  assert.deepEqual(decodeStdBase64('AQID'), Buffer.from([1, 2, 3]));
  assert.deepEqual(decodeStdBase64('AQIDBA=='), Buffer.from([1, 2, 3, 4]));
  assert.deepEqual(decodeStdBase64('AQIDBA'), Buffer.from([1, 2, 3, 4]));
  for (const bad of ['AQ-D', 'AQ_D', 'A', 'AQID!', 'AQ ID']) assert.equal(decodeStdBase64(bad), undefined, bad);
  assert.deepEqual(decodeJsonBytes([0, 255, 7]), Buffer.from([0, 255, 7]));
  for (const bad of [[256], [-1], [1.5], ['1'], {}, null, 3]) assert.equal(decodeJsonBytes(bad), undefined, JSON.stringify(bad));
  assert.equal(parseJsonObject('[1]'), undefined);
  assert.equal(parseJsonObject('{'), undefined);
  assert.deepEqual(parseJsonObject(Buffer.from('{"a":1}')), { a: 1 });
});
