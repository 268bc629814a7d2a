import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { decryptionKeys, loadPrivateKeys } from '../../agent/src/crypto/keys.ts';
import { BadKey } from '../../agent/src/crypto/errors.ts';
import { resolveConfig } from '../../agent/src/config/index.ts';
import { OfflineKeyStore } from '../../agent/src/attestation/offline-store.ts';
import { keyPair, offlineKeyFile, tempDir } from '../fixtures/keys.ts';

const dir = tempDir('keys');
const rsa = keyPair(dir, 'rsa', 'rsa');
const ec = keyPair(dir, 'ec', 'p256');

test('image.decryption_keys from TOML; the CLI --decryption-key files add to them', () => {
  const config = resolveConfig({ file: { path: 'c.toml', text: `[image]\ndecryption_keys = ["${rsa.privatePem}", "kbs:///default/key/jwk"]\n` } });
  assert.deepEqual(config.image.decryption_keys, [rsa.privatePem, 'kbs:///default/key/jwk']);
  assert.deepEqual(resolveConfig({}).image.decryption_keys, []);
  assert.throws(() => resolveConfig({ file: { path: 'c.toml', text: '[image]\ndecryption_keys = "one"\n' } }), /image\.decryption_keys: expected an array of strings/);
  const keys = decryptionKeys({ config: config.image.decryption_keys, flags: [ec.privatePem, rsa.privatePem] });
  assert.deepEqual(keys.privateKeys, [rsa.privatePem, 'kbs:///default/key/jwk', ec.privatePem]);
});

test('private keys load from files and from kbs:/// URIs through the key source', async () => {
  const jwk = Buffer.from(JSON.stringify(ec.privateKey.export({ format: 'jwk' })));
  const store = new OfflineKeyStore([offlineKeyFile(dir, { 'default/key/jwk': jwk, 'default/key/pem': readFileSync(rsa.privatePem) })]);
  const loaded = await loadPrivateKeys(decryptionKeys({ flags: [rsa.privatePem, 'kbs:///default/key/jwk', 'kbs:///default/key/pem'], keySource: store }));
  assert.deepEqual(loaded.map((k) => [k.name, k.key.asymmetricKeyType]), [
    [rsa.privatePem, 'rsa'],
    ['kbs:///default/key/jwk', 'ec'],
    ['kbs:///default/key/pem', 'rsa'],
  ]);
  await assert.rejects(loadPrivateKeys(decryptionKeys({ flags: ['kbs:///default/key/jwk'] })), (e: BadKey) => e instanceof BadKey && /no key source/.test(e.message));
});
