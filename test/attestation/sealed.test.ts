import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { OfflineKeyStore } from '../../agent/src/attestation/offline-store.ts';
import { unsealSecret, type UnsealDeps } from '../../agent/src/attestation/sealed.ts';
import { Code } from '../../agent/src/errors.ts';
import { envelope, seal, signingKey, vault, type SigningKey } from '../fixtures/sealed.ts';

const dir = mkdtempSync(join(tmpdir(), 'sealed-'));
const keyDir = join(dir, 'sealed-secret');
const KEK = Buffer.alloc(32, 0x4b);
let key: SigningKey;
let other: SigningKey;
let deps: UnsealDeps;

before(async () => {
  key = await signingKey();
  other = await signingKey();
  mkdirSync(keyDir);
  writeFileSync(join(keyDir, 'file-key'), JSON.stringify(key.privateJwk));
  const b64 = (s: string | Buffer) => Buffer.from(s).toString('base64');
  writeFileSync(join(dir, 'keys.json'), JSON.stringify({ 'default/sealed-key/1': b64(JSON.stringify(key.jwk)), 'default/kek/1': b64(KEK), 'default/secret/a': b64('vault plaintext'), 'default/kek/short': b64('x') }));
  deps = { keys: new OfflineKeyStore([join(dir, 'keys.json')]), keyDir };
});

const code = (c: number) => (e: { code: number }) => e.code === c;

test('vault: the named resource, after ES256 verification with the kid from the KBS', async () => {
  const s = await seal(vault('kbs:///default/secret/a'), key, 'kbs:///default/sealed-key/1');
  assert.equal((await unsealSecret(Buffer.from(s), deps)).toString(), 'vault plaintext');
});

test('envelope: DEK unwrapped (AES-KW) with the KEK from the KBS, data decrypted with A256GCM', async () => {
  const s = await seal(envelope(KEK, 'kbs:///default/kek/1', Buffer.from('envelope plaintext')), key, 'kbs:///default/sealed-key/1');
  assert.equal((await unsealSecret(s, deps)).toString(), 'envelope plaintext');
  const wrongKek = await seal(envelope(Buffer.alloc(32, 1), 'kbs:///default/kek/1', Buffer.from('x')), key, 'kbs:///default/sealed-key/1');
  await assert.rejects(unsealSecret(wrongKek, deps), code(Code.PERMISSION_DENIED));
  const payload = envelope(KEK, 'kbs:///default/kek/1', Buffer.from('tampered')) as Record<string, string>;
  const data = Buffer.from(payload.encrypted_data!, 'base64');
  data[0]! ^= 1;
  await assert.rejects(unsealSecret(await seal({ ...payload, encrypted_data: data.toString('base64') }, key, 'kbs:///default/sealed-key/1'), deps), /fails authentication/);
  await assert.rejects(unsealSecret(await seal(envelope(KEK, 'kbs:///default/kek/short', Buffer.from('x')), key, 'kbs:///default/sealed-key/1'), deps), /32 bytes/);
});

test('a kid that is not a URI names a key file in the key directory, never outside it', async () => {
  const s = await seal(vault('kbs:///default/secret/a'), key, 'file-key');
  assert.equal((await unsealSecret(s, deps)).toString(), 'vault plaintext');
  writeFileSync(join(dir, 'outside'), JSON.stringify(key.jwk));
  await assert.rejects(unsealSecret(await seal(vault('kbs:///default/secret/a'), key, '../outside'), deps), /outside the key directory/);
  await assert.rejects(unsealSecret(await seal(vault('kbs:///default/secret/a'), key, 'nope'), deps), code(Code.PERMISSION_DENIED));
});

test('tampered header, payload or signature, and the wrong key, are PERMISSION_DENIED', async () => {
  const s = await seal(vault('kbs:///default/secret/a'), key, 'kbs:///default/sealed-key/1');
  const [prefix, h, p, sig] = s.split('.') as [string, string, string, string];
  const flip = (x: string) => (x[5] === 'A' ? `${x.slice(0, 5)}B${x.slice(6)}` : `${x.slice(0, 5)}A${x.slice(6)}`);
  const forged = Buffer.from(JSON.stringify(vault('kbs:///default/kek/1'))).toString('base64url');
  for (const bad of [`${prefix}.${h}.${forged}.${sig}`, `${prefix}.${h}.${p}.${flip(sig)}`, `${prefix}.${flip(p)}.${p}.${sig}`]) {
    await assert.rejects(unsealSecret(bad, deps), (e: { code: number }) => e.code === Code.PERMISSION_DENIED || e.code === Code.INVALID_ARGUMENT);
  }
  await assert.rejects(unsealSecret(await seal(vault('kbs:///default/secret/a'), other, 'kbs:///default/sealed-key/1'), deps), /signature does not verify/);
  const es384 = Buffer.from(JSON.stringify({ alg: 'ES384', kid: 'kbs:///default/sealed-key/1' })).toString('base64url');
  await assert.rejects(unsealSecret(`sealed.${es384}.${p}.${sig}`, deps), /must be ES256/);
  const none = Buffer.from(JSON.stringify({ alg: 'none', kid: 'kbs:///default/sealed-key/1' })).toString('base64url');
  await assert.rejects(unsealSecret(`sealed.${none}.${p}.`, deps), /must be ES256/);
});

test('malformed secrets and payloads are INVALID_ARGUMENT', async () => {
  await assert.rejects(unsealSecret('notsealed.a.b.c', deps), code(Code.INVALID_ARGUMENT));
  await assert.rejects(unsealSecret('sealed.a.b', deps), code(Code.INVALID_ARGUMENT));
  await assert.rejects(unsealSecret('sealed.!!.b.c', deps), code(Code.INVALID_ARGUMENT));
  const kid = 'kbs:///default/sealed-key/1';
  await assert.rejects(unsealSecret(await seal({ ...vault('kbs:///default/secret/a'), version: '0.2.0' }, key, kid), deps), /version/);
  await assert.rejects(unsealSecret(await seal({ ...vault('kbs:///default/secret/a'), provider: 'aliyun' }, key, kid), deps), /provider "aliyun"/);
  await assert.rejects(unsealSecret(await seal({ ...vault('kbs:///default/secret/a'), type: 'other' }, key, kid), deps), /vault or envelope/);
  await assert.rejects(unsealSecret(await seal(vault('/etc/passwd'), key, kid), deps), /resource URI/);
  await assert.rejects(unsealSecret(await seal({ ...envelope(KEK, 'kbs:///default/kek/1', Buffer.from('x')), wrap_type: 'A128CBC' }, key, kid), deps), /A256GCM/);
});
