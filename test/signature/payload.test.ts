// The signed payload: exact critical members, the right type, well-formed
// digest and reference; optional is free-form.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { COSIGN_TYPE, parsePayload, PayloadInvalid, SIMPLE_SIGNING_TYPE } from '../../agent/src/signature/payload.ts';

const DIGEST = 'sha256:' + 'a'.repeat(64);
const payload = (critical: Record<string, unknown>, optional: unknown = null, extra: Record<string, unknown> = {}): Buffer =>
  Buffer.from(JSON.stringify({ critical, optional, ...extra }));
const critical = (over: Record<string, unknown> = {}): Record<string, unknown> => ({
  identity: { 'docker-reference': 'example.com/app:v1' },
  image: { 'docker-manifest-digest': DIGEST },
  type: COSIGN_TYPE,
  ...over,
});

const bad = (bytes: Buffer, re: RegExp, type: typeof COSIGN_TYPE | typeof SIMPLE_SIGNING_TYPE = COSIGN_TYPE): void => {
  assert.throws(() => parsePayload(bytes, type), (err: unknown) => err instanceof PayloadInvalid && re.test(err.message), re.source);
};

test('well-formed payloads of both formats', () => {
  assert.deepEqual(parsePayload(payload(critical()), COSIGN_TYPE), { dockerReference: 'example.com/app:v1', manifestDigest: DIGEST });
  const simple = payload(critical({ type: SIMPLE_SIGNING_TYPE }), { creator: 'atomic 5.23.1', timestamp: 1795748360, anything: [1] });
  assert.deepEqual(parsePayload(simple, SIMPLE_SIGNING_TYPE), { dockerReference: 'example.com/app:v1', manifestDigest: DIGEST, creator: 'atomic 5.23.1', timestamp: 1795748360 });
});

test('rejections', () => {
  bad(payload(critical({ type: SIMPLE_SIGNING_TYPE })), /critical\.type: expected "cosign container image signature"/);
  bad(payload(critical()), /critical\.type: expected "atomic container signature"/, SIMPLE_SIGNING_TYPE);
  bad(payload(critical({ extra: true })), /critical\.extra: unknown field/);
  bad(payload(critical({ image: { 'docker-manifest-digest': DIGEST, more: 1 } })), /critical\.image\.more: unknown field/);
  bad(payload(critical({ identity: { 'docker-reference': 'x', 'other': 'y' } })), /critical\.identity\.other: unknown field/);
  bad(payload(critical({ image: { 'docker-manifest-digest': 'md5:abc' } })), /\["docker-manifest-digest"\]: not a sha256 or sha512 digest/);
  bad(payload(critical({ identity: { 'docker-reference': '' } })), /\["docker-reference"\]: expected a non-empty string/);
  bad(Buffer.from(JSON.stringify({ critical: critical() })), /missing field "optional"/);
  bad(payload(critical(), null, { unsigned: 1 }), /\$\.unsigned: unknown field/);
  bad(payload(critical(), 'text'), /\$\.optional: expected an object/);
  bad(payload(critical(), { timestamp: 1.5 }), /optional\.timestamp: expected an integer/);
  bad(Buffer.from(`{"critical":${JSON.stringify(critical())},"critical":${JSON.stringify(critical())},"optional":null}`), /\$\.critical: duplicate key/);
  bad(Buffer.from([0xff, 0xfe]), /not UTF-8/);
});
