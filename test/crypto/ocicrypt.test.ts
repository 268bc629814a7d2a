import { test } from 'node:test';
import assert from 'node:assert/strict';
import { describeEncryptionAnnotations, stripEncryptionAnnotations, wrappedKeys } from '../../agent/src/crypto/ocicrypt.ts';

test('enc.* annotations: comma-separated entries, provider names, stripping and description', () => {
  const a = {
    'org.opencontainers.image.enc.keys.jwe': `${Buffer.from('x').toString('base64')},${Buffer.from('y').toString('base64')}`,
    'org.opencontainers.image.enc.keys.provider.attestation-agent': Buffer.from('p').toString('base64'),
    'org.opencontainers.image.enc.keys.pgp': 'AAAA',
    'org.opencontainers.image.enc.pubopts': 'e30=',
    'org.example.keep': 'v',
  };
  const wk = wrappedKeys(a, 'l');
  assert.deepEqual(wk.map((w) => [w.scheme, w.provider, w.entries.map(String)]), [
    ['jwe', undefined, ['x', 'y']],
    ['provider', 'attestation-agent', ['p']],
    ['unsupported', undefined, ['\u0000\u0000\u0000']],
  ]);
  assert.deepEqual(stripEncryptionAnnotations(a), { 'org.example.keep': 'v' });
  assert.equal(
    describeEncryptionAnnotations(a),
    'org.opencontainers.image.enc.keys.jwe (2 entries), org.opencontainers.image.enc.keys.pgp (1 entries), org.opencontainers.image.enc.keys.provider.attestation-agent (1 entries), org.opencontainers.image.enc.pubopts',
  );
  assert.equal(describeEncryptionAnnotations({}), 'none');
});
