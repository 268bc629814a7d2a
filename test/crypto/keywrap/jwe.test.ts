import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { CompactEncrypt, FlattenedEncrypt, GeneralEncrypt } from 'jose';
import { unwrapJwe, wrapJwe, JWE_CONTENT_ALGORITHMS } from '../../../agent/src/crypto/keywrap/jwe.ts';
import { parsePrivateKey, parsePublicKey, type NamedKey } from '../../../agent/src/crypto/keys.ts';
import { BadKey } from '../../../agent/src/crypto/errors.ts';
import { keyPair, tempDir } from '../../fixtures/keys.ts';

const dir = tempDir('jwe');
const rsa = keyPair(dir, 'rsa', 'rsa');
const p256 = keyPair(dir, 'p256', 'p256');
const p384 = keyPair(dir, 'p384', 'p384');
const p521 = keyPair(dir, 'p521', 'p521');
const named = (k: typeof rsa, name: string): NamedKey => ({ name, key: parsePrivateKey(readFileSync(k.privatePem), name) });
const payload = Buffer.from(JSON.stringify({ symkey: randomBytes(32).toString('base64'), digest: '', cipheroptions: {} }));

test('every key algorithm ocicrypt accepts, with every content algorithm, flattened', async () => {
  const cases: Array<[typeof rsa, string]> = [
    [rsa, 'RSA-OAEP'],
    [rsa, 'RSA-OAEP-256'],
    [p256, 'ECDH-ES+A128KW'],
    [p384, 'ECDH-ES+A192KW'],
    [p521, 'ECDH-ES+A256KW'],
  ];
  for (const [pair, alg] of cases) {
    for (const enc of JWE_CONTENT_ALGORITHMS) {
      const jwe = await new FlattenedEncrypt(payload).setProtectedHeader({ alg, enc }).encrypt(pair.publicKey);
      const r = await unwrapJwe(Buffer.from(JSON.stringify(jwe)), [named(p256, 'other'), named(pair, 'mine')]);
      assert.ok(r.payload?.equals(payload), `${alg} ${enc}`);
    }
  }
});

test('general serialisation with several recipients opens with any one of their keys', async () => {
  const jwe = await new GeneralEncrypt(payload)
    .setProtectedHeader({ enc: 'A256GCM' })
    .addRecipient(rsa.publicKey)
    .setUnprotectedHeader({ alg: 'RSA-OAEP' })
    .addRecipient(p256.publicKey)
    .setUnprotectedHeader({ alg: 'ECDH-ES+A256KW' })
    .encrypt();
  const entry = Buffer.from(JSON.stringify(jwe));
  assert.ok((await unwrapJwe(entry, [named(p256, 'p256')])).payload?.equals(payload));
  assert.ok((await unwrapJwe(entry, [named(rsa, 'rsa')])).payload?.equals(payload));
  assert.match((await unwrapJwe(entry, [named(p384, 'p384')])).reason ?? '', /none of the 1 private key/);
});

test('our wrapper writes flattened for one recipient, general for several, and both unwrap', async () => {
  const one = JSON.parse((await wrapJwe(payload, [{ key: rsa.publicKey }])).toString()) as Record<string, unknown>;
  assert.ok('encrypted_key' in one && !('recipients' in one));
  const many = await wrapJwe(payload, [{ key: rsa.publicKey }, { key: p256.publicKey }, { key: p384.publicKey, alg: 'ECDH-ES+A192KW' }]);
  const doc = JSON.parse(many.toString()) as { recipients: Array<{ header: { alg: string } }> };
  assert.deepEqual(doc.recipients.map((r) => r.header.alg), ['RSA-OAEP', 'ECDH-ES+A256KW', 'ECDH-ES+A192KW']);
  for (const k of [rsa, p256, p384]) assert.ok((await unwrapJwe(many, [named(k, 'k')])).payload?.equals(payload));
});

test('disallowed algorithms and garbage are not opened', async () => {
  const direct = await new FlattenedEncrypt(payload).setProtectedHeader({ alg: 'ECDH-ES', enc: 'A256GCM' }).encrypt(p256.publicKey);
  assert.equal((await unwrapJwe(Buffer.from(JSON.stringify(direct)), [named(p256, 'p256')])).payload, undefined, 'ECDH-ES direct is not in ocicrypt\'s list');
  assert.match((await unwrapJwe(Buffer.from('not json'), [named(rsa, 'rsa')])).reason ?? '', /not a JWE/);
  const compact = await new CompactEncrypt(payload).setProtectedHeader({ alg: 'RSA-OAEP', enc: 'A256GCM' }).encrypt(rsa.publicKey);
  assert.equal((await unwrapJwe(Buffer.from(compact), [named(rsa, 'rsa')])).payload, undefined, 'ocicrypt writes JSON serialisation only');
});

test('private keys load from PEM (PKCS#8, PKCS#1, SEC1), DER and JWK; bad ones are typed errors', async () => {
  const forms: Buffer[] = [
    Buffer.from(rsa.privateKey.export({ format: 'pem', type: 'pkcs1' })),
    Buffer.from(p256.privateKey.export({ format: 'pem', type: 'sec1' })),
    rsa.privateKey.export({ format: 'der', type: 'pkcs8' }),
    rsa.privateKey.export({ format: 'der', type: 'pkcs1' }),
    p256.privateKey.export({ format: 'der', type: 'sec1' }),
    Buffer.from(JSON.stringify(p256.privateKey.export({ format: 'jwk' }))),
  ];
  for (const f of forms) assert.ok(['rsa', 'ec'].includes(parsePrivateKey(Buffer.from(f), 'k').asymmetricKeyType!));
  const bytes = Buffer.from(readFileSync(rsa.privatePem));
  parsePrivateKey(bytes, 'k');
  assert.ok(bytes.every((b) => b === 0), 'the key file bytes are zeroed after parsing');
  const encrypted = Buffer.from(rsa.privateKey.export({ format: 'pem', type: 'pkcs8', cipher: 'aes-256-cbc', passphrase: 'pw' }));
  assert.throws(() => parsePrivateKey(encrypted, 'enc.pem'), (e: BadKey) => e instanceof BadKey && /passphrase/.test(e.message));
  assert.throws(() => parsePrivateKey(Buffer.from('garbage'), 'g.pem'), (e: BadKey) => e instanceof BadKey && /g\.pem/.test(e.message) && !/garbage/.test(e.message));
  assert.throws(() => parsePrivateKey(readFileSync(rsa.publicPem), 'pub.pem'), BadKey);
  const { generateKeyPairSync } = await import('node:crypto');
  const ed = generateKeyPairSync('ed25519').privateKey.export({ format: 'pem', type: 'pkcs8' });
  assert.throws(() => parsePrivateKey(Buffer.from(ed), 'ed.pem'), /ed25519 keys are not supported/);
  assert.throws(() => parsePublicKey(readFileSync(rsa.privatePem), 'priv.pem'), /got a private key/);
  assert.equal(parsePublicKey(Buffer.from(JSON.stringify({ ...p384.publicKey.export({ format: 'jwk' }), alg: 'ECDH-ES+A192KW' })), 'j').alg, 'ECDH-ES+A192KW');
});
