import { test } from 'node:test';
import assert from 'node:assert/strict';
import { decodeJsonBytes, decodeStdBase64, parseJsonObject } from '../../agent/src/crypto/fields.ts';
import { parsePrivateOptions, parsePublicOptions, serializePrivateOptions, serializePublicOptions } from '../../agent/src/crypto/options.ts';
import { wrappedKeys, stripEncryptionAnnotations, describeEncryptionAnnotations } from '../../agent/src/crypto/ocicrypt.ts';
import { BadEncryptionMetadata } from '../../agent/src/crypto/errors.ts';

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

test('options round trip in ocicrypt\'s JSON shape; private options are zeroed after parsing', () => {
  const symkey = Buffer.alloc(32, 9);
  const nonce = Buffer.alloc(16, 3);
  const json = serializePrivateOptions({ symkey, digest: `sha256:${'a'.repeat(64)}`, nonce });
  assert.deepEqual(JSON.parse(json.toString()), { symkey: symkey.toString('base64'), digest: `sha256:${'a'.repeat(64)}`, cipheroptions: { nonce: nonce.toString('base64') } });
  const priv = parsePrivateOptions(json, 'l');
  assert.ok(json.every((b) => b === 0));
  assert.deepEqual([priv.symkey, priv.nonce, priv.digest], [symkey, nonce, `sha256:${'a'.repeat(64)}`]);
  const pub = serializePublicOptions({ cipher: 'AES_256_CTR_HMAC_SHA256', hmac: Buffer.alloc(32, 1) });
  assert.deepEqual(JSON.parse(Buffer.from(pub, 'base64').toString()), { cipher: 'AES_256_CTR_HMAC_SHA256', hmac: Buffer.alloc(32, 1).toString('base64'), cipheroptions: {} });
  assert.deepEqual(parsePublicOptions(pub, 'l').hmac, Buffer.alloc(32, 1));
  const rustStyle = Buffer.from(JSON.stringify({ symkey: Array.from(symkey), digest: '', cipheroptions: { nonce: Array.from(nonce) } }));
  assert.deepEqual(parsePrivateOptions(rustStyle, 'l').nonce, nonce);
  for (const bad of ['{}', '{"symkey":"AAAA"}', JSON.stringify({ symkey: symkey.toString('base64'), digest: 'md5:00' }), 'x']) {
    assert.throws(() => parsePrivateOptions(Buffer.from(bad), 'sha256:l'), (e: BadEncryptionMetadata) => e instanceof BadEncryptionMetadata && /sha256:l/.test(e.message) && !e.message.includes(symkey.toString('base64')));
  }
});

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
