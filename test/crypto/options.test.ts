import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parsePrivateOptions, parsePublicOptions, serializePrivateOptions, serializePublicOptions } from '../../agent/src/crypto/options.ts';
import { BadEncryptionMetadata } from '../../agent/src/crypto/errors.ts';

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
