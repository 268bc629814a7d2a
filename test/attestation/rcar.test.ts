import { test } from 'node:test';
import assert from 'node:assert/strict';
import canonicalize from 'canonicalize';
import { createHash } from 'node:crypto';
import * as rcar from '../../agent/src/attestation/rcar.ts';
import { KbsProtocolError } from '../../agent/src/attestation/errors.ts';
import { parseResourceUri } from '../../agent/src/resource.ts';

const pubkey = { kty: 'EC', crv: 'P-256', alg: 'ECDH-ES+A256KW', x: 'xx', y: 'yy' } as const;

test('JCS + SHA-384 vector from Trustee parse_runtime_data', () => {
  const jcs = canonicalize({ b: 1, a: 'test', c: { d: 'e' } })!;
  assert.equal(jcs, '{"a":"test","b":1,"c":{"d":"e"}}');
  assert.equal(
    rcar.runtimeDataDigest('sha384', { b: 1, a: 'test', c: { d: 'e' } }).toString('hex'),
    'e71ce8e70d814ba6639c3612ebee0ff1f76f650f8dbb5e47157e0f3f525cd22c4597480a186427c813ca941da78870c3',
  );
});

test('runtime data canonical form includes additional-evidence and sorts the JWK members', () => {
  const data = rcar.runtimeData(pubkey, 'N0NCE', '');
  const expected = '{"additional-evidence":"","nonce":"N0NCE","tee-pubkey":{"alg":"ECDH-ES+A256KW","crv":"P-256","kty":"EC","x":"xx","y":"yy"}}';
  assert.equal(canonicalize(data), expected);
  assert.deepEqual(rcar.runtimeDataDigest('sha384', data), createHash('sha384').update(expected).digest());
  assert.equal(rcar.runtimeDataDigest('sha256', data).length, 32);
  assert.equal(rcar.runtimeDataDigest('sha512', data).length, 64);
});

test('auth request and attestation body as Trustee 0.4.0 parses them', () => {
  const req = rcar.authRequest('sample') as Record<string, unknown>;
  assert.equal(req.version, '0.4.0');
  assert.equal(req.tee, 'sample');
  assert.deepEqual((req['extra-params'] as Record<string, string[]>)['supported-hash-algorithms']!.slice(0, 3), ['sha256', 'sha384', 'sha512']);
  const a = rcar.attestationRequest({ pubkey, nonce: 'n', evidence: { svn: '1' }, additionalEvidence: '' }) as Record<string, unknown>;
  assert.equal(JSON.stringify(a), '{"init-data":null,"runtime-data":{"nonce":"n","tee-pubkey":{"kty":"EC","crv":"P-256","alg":"ECDH-ES+A256KW","x":"xx","y":"yy"}},"tee-evidence":{"primary_evidence":{"svn":"1"},"additional_evidence":""}}');
  const withInit = rcar.attestationRequest({ pubkey, nonce: 'n', evidence: {}, additionalEvidence: '', initdata: { toml: 'version = "0.1.0"\n', algorithm: 'sha384', digest: Buffer.alloc(48), data: {} } }) as Record<string, unknown>;
  assert.deepEqual(withInit['init-data'], { format: 'toml', body: 'version = "0.1.0"\n' });
});

test('challenge: extra-params "" means SHA-384; a selected hash is honoured; bad ones are refused', () => {
  assert.deepEqual(rcar.parseChallenge({ nonce: 'abc', 'extra-params': '' }), { nonce: 'abc', hash: 'sha384' });
  assert.equal(rcar.parseChallenge({ nonce: 'abc', 'extra-params': {} }).hash, 'sha384');
  assert.equal(rcar.parseChallenge({ nonce: 'abc', 'extra-params': { 'selected-hash-algorithm': 'SHA512' } }).hash, 'sha512');
  assert.throws(() => rcar.parseChallenge({ nonce: 'abc', 'extra-params': { 'selected-hash-algorithm': 'md5' } }), KbsProtocolError);
  assert.throws(() => rcar.parseChallenge({ nonce: 'abc', 'extra-params': { 'selected-hash-algorithm': 42 } }), KbsProtocolError);
  assert.throws(() => rcar.parseChallenge({ 'extra-params': '' }), KbsProtocolError);
});

test('token: exp and nbf are read from the JWT claims, never verified here', () => {
  const jwt = (claims: object): string => `e30.${Buffer.from(JSON.stringify(claims)).toString('base64url')}.sig`;
  const t = rcar.parseToken({ token: jwt({ exp: 2000, nbf: 1000 }) });
  assert.deepEqual([t.exp, t.nbf], [2000, 1000]);
  assert.equal(rcar.tokenUsable(t, 1500_000), true);
  assert.equal(rcar.tokenUsable(t, 2000_000), false);
  assert.equal(rcar.tokenUsable(t, 990_000), false);
  assert.equal(rcar.tokenUsable(rcar.parseToken({ token: jwt({}) })), true);
  assert.throws(() => rcar.parseToken({ token: 'not-a-jwt' }), KbsProtocolError);
  assert.throws(() => rcar.parseToken({}), KbsProtocolError);
});

test('session cookie, error bodies and resource paths', () => {
  assert.deepEqual(rcar.sessionCookie('kbs-session-id=abc123; Expires=Wed, 21 Oct 2037 07:28:00 GMT'), { value: 'abc123', expires: Date.parse('Wed, 21 Oct 2037 07:28:00 GMT') });
  assert.deepEqual(rcar.sessionCookie(['other=1', 'kbs-session-id=x']), { value: 'x', expires: undefined });
  assert.equal(rcar.sessionCookie(undefined), undefined);
  assert.deepEqual(rcar.parseErrorInfo(Buffer.from('{"type":"https://github.com/confidential-containers/kbs/errors/PolicyDeny","detail":"Access denied by policy"}')), { variant: 'PolicyDeny', detail: 'Access denied by policy' });
  assert.equal(rcar.parseErrorInfo(Buffer.from('oops\n')).variant, 'unknown');
  assert.equal(rcar.resourcePath(parseResourceUri('kbs:///default/key/1')), '/kbs/v0/resource/default/key/1');
  assert.equal(rcar.resourcePath(parseResourceUri('kbs+plugx://h:1/a/b/c?x=1')), '/kbs/v0/plugx/a/b/c?x=1');
});
