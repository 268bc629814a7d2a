import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createCipheriv, randomBytes } from 'node:crypto';
import { OfflineKeyStore } from '../../agent/src/attestation/offline-store.ts';
import { parseAnnotationPacket, unwrapAnnotationPacket, wrapAnnotationPacket } from '../../agent/src/crypto/coco-packet.ts';
import { BadEncryptionMetadata, KeyUnwrapFailed, UnsupportedEncryption } from '../../agent/src/crypto/errors.ts';
import { AgentError, Code } from '../../agent/src/errors.ts';
import { ResourceNotFound } from '../../agent/src/resource.ts';
import { newKek, offlineKeyFile, tempDir } from '../fixtures/keys.ts';

const kek = newKek();
const store = new OfflineKeyStore([offlineKeyFile(tempDir('packet'), { 'default/key/image': kek, 'default/key/short': randomBytes(16) })]);
const opts = Buffer.from('{"symkey":"…","digest":"sha256:…","cipheroptions":{}}');

test('v1 packets as coco_keyprovider writes them unwrap with the KEK from the offline store', async () => {
  const packet = wrapAnnotationPacket(opts, kek, 'kbs:///default/key/image');
  const doc = JSON.parse(packet.toString()) as Record<string, string>;
  assert.deepEqual(Object.keys(doc).sort(), ['iv', 'kid', 'wrap_type', 'wrapped_data']);
  assert.equal(Buffer.from(doc.iv!, 'base64').length, 12);
  assert.ok((await unwrapAnnotationPacket(parseAnnotationPacket(packet), store)).equals(opts));
});

test('v2 fields, number arrays, A256CTR, and the host in kid is ignored', async () => {
  const iv = randomBytes(16);
  const c = createCipheriv('aes-256-ctr', kek, iv);
  const wrapped = Buffer.concat([c.update(opts), c.final()]);
  const v2 = {
    version: '0.1.0',
    provider: 'kbs',
    provider_settings: {},
    annotations: {},
    kid: 'kbs://some.host:8080/default/key/image',
    wrapped_data: Array.from(wrapped),
    iv: iv.toString('base64'),
    wrap_type: 'A256CTR',
  };
  assert.ok((await unwrapAnnotationPacket(parseAnnotationPacket(Buffer.from(JSON.stringify(v2))), store)).equals(opts));
});

test('wrong, short and missing KEKs, bad packets and other providers are typed errors', async () => {
  const packet = wrapAnnotationPacket(opts, newKek(), 'kbs:///default/key/image');
  await assert.rejects(unwrapAnnotationPacket(parseAnnotationPacket(packet), store), KeyUnwrapFailed);
  const short = wrapAnnotationPacket(opts, kek, 'kbs:///default/key/short');
  await assert.rejects(unwrapAnnotationPacket(parseAnnotationPacket(short), store), /16 bytes, expected 32/);
  const missing = wrapAnnotationPacket(opts, kek, 'kbs:///default/key/nope');
  await assert.rejects(unwrapAnnotationPacket(parseAnnotationPacket(missing), store), ResourceNotFound);
  assert.throws(() => parseAnnotationPacket(Buffer.from('[]')), BadEncryptionMetadata);
  assert.throws(() => parseAnnotationPacket(Buffer.from(JSON.stringify({ kid: 'kbs:///a/b/c', wrapped_data: 'AAAA', iv: 'AAAA' }))), /iv must be 12 bytes/);
  assert.throws(() => parseAnnotationPacket(Buffer.from(JSON.stringify({ kid: 'file:///x', wrapped_data: 'AAAA', iv: 'AAAA' }))), (e: AgentError) => e.code === Code.INVALID_ARGUMENT);
  assert.throws(() => parseAnnotationPacket(Buffer.from(JSON.stringify({ provider: 'aliyun', kid: 'x' }))), UnsupportedEncryption);
  assert.throws(() => parseAnnotationPacket(Buffer.from(JSON.stringify({ kid: 'kbs:///a/b/c', wrapped_data: 'AAAA', iv: 'AAAA', wrap_type: 'A128GCM' }))), UnsupportedEncryption);
});
