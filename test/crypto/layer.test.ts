import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { OfflineKeyStore } from '../../agent/src/attestation/offline-store.ts';
import { createLayerDecryptor, decryptionKeys, isEncryptedLayer, type LayerDescriptor } from '../../agent/src/crypto/index.ts';
import { createLayerEncryptor, type LayerRecipients } from '../../agent/src/crypto/encrypt-layer.ts';
import { BadEncryptionMetadata, LayerAuthenticationFailed, NoKeyForLayer, PlainDigestMismatch, UnsupportedEncryption } from '../../agent/src/crypto/errors.ts';
import { CIPHER_CTR_HMAC, CIPHER_GCM_STREAM, type CipherName } from '../../agent/src/crypto/options.ts';
import { AgentError, Code } from '../../agent/src/errors.ts';
import type { KeySource } from '../../agent/src/resource.ts';
import { keyPair, newKek, offlineKeyFile, tempDir } from '../fixtures/keys.ts';
import { run, runOk } from './stream-helpers.ts';

const dir = tempDir('layer');
const rsa = keyPair(dir, 'rsa', 'rsa');
const ec = keyPair(dir, 'ec', 'p256');
const other = keyPair(dir, 'other', 'rsa');
const kek = newKek();
const store = new OfflineKeyStore([offlineKeyFile(dir, { 'default/key/image': kek })]);
const GZ = 'application/vnd.oci.image.layer.v1.tar+gzip';

function plainLayer(bytes: Buffer, mediaType = GZ): LayerDescriptor {
  return { mediaType, digest: `sha256:${createHash('sha256').update(bytes).digest('hex')}`, size: bytes.length, annotations: { 'com.example.kept': 'yes' } };
}

async function encryptLayer(plain: Buffer, recipients: LayerRecipients, cipher: CipherName = CIPHER_CTR_HMAC, desc = plainLayer(plain)) {
  const enc = createLayerEncryptor(desc, recipients, cipher, 4096);
  const blob = await runOk(enc.stream, plain, 10_000);
  const { mediaType, annotations } = await enc.finish();
  const encrypted: LayerDescriptor = { mediaType, digest: `sha256:${createHash('sha256').update(blob).digest('hex')}`, size: blob.length, annotations };
  return { blob, desc: encrypted };
}

const jweTo = (...keys: Array<typeof rsa>): LayerRecipients => ({ jwe: keys.map((k) => ({ key: k.publicKey })), kbs: [] });
const kbsTo = (kid: string, key = kek): LayerRecipients => ({ jwe: [], kbs: [{ kid, kek: key }] });

test('JWE (RSA and EC) and CoCo packets, both ciphers: decrypts, strips enc.* annotations, restores the media type', async () => {
  for (const cipher of [CIPHER_CTR_HMAC, CIPHER_GCM_STREAM] as const) {
    for (const [name, recipients, keys] of [
      ['jwe rsa', jweTo(rsa), decryptionKeys({ flags: [rsa.privatePem] })],
      ['jwe ec', jweTo(ec), decryptionKeys({ config: [ec.privatePem] })],
      ['jwe both, ec key', jweTo(rsa, ec), decryptionKeys({ flags: [other.privatePem, ec.privatePem] })],
      ['packet', kbsTo('kbs:///default/key/image'), decryptionKeys({ keySource: store })],
    ] as const) {
      const plain = randomBytes(10_000 + name.length);
      const { blob, desc } = await encryptLayer(plain, recipients, cipher);
      assert.ok(isEncryptedLayer(desc));
      assert.equal(desc.mediaType, `${GZ}+encrypted`);
      const d = await createLayerDecryptor(desc, keys);
      assert.equal(d.mediaType, GZ);
      assert.equal(d.cipher, cipher);
      assert.deepEqual(d.annotations, { 'com.example.kept': 'yes' });
      assert.equal(d.plainDigest, plainLayer(plain).digest);
      assert.throws(() => d.verify(), /did not complete/, 'verify before the stream ran');
      const out = await runOk(d.stream, blob, 5000);
      assert.ok(out.equals(plain), `${cipher} ${name}`);
      d.verify();
    }
  }
});

test('media types: tar, zstd and nondistributable variants; anything else is refused', async () => {
  for (const mt of ['application/vnd.oci.image.layer.v1.tar', 'application/vnd.oci.image.layer.v1.tar+zstd', 'application/vnd.oci.image.layer.nondistributable.v1.tar+gzip']) {
    const plain = randomBytes(100);
    const { blob, desc } = await encryptLayer(plain, jweTo(rsa), CIPHER_CTR_HMAC, plainLayer(plain, mt));
    const d = await createLayerDecryptor(desc, decryptionKeys({ flags: [rsa.privatePem] }));
    assert.equal(d.mediaType, mt);
    assert.ok((await runOk(d.stream, blob)).equals(plain));
  }
  await assert.rejects(createLayerDecryptor({ mediaType: GZ, digest: 'sha256:x', size: 1 }, decryptionKeys({})), UnsupportedEncryption);
  await assert.rejects(createLayerDecryptor({ mediaType: 'application/vnd.docker.image.rootfs.diff.tar.gzip+encrypted', digest: 'sha256:x', size: 1 }, decryptionKeys({})), UnsupportedEncryption);
});

test('comma-separated entries: each is tried, the one for our key opens', async () => {
  const plain = randomBytes(3000);
  const mine = await encryptLayer(plain, jweTo(ec));
  const theirs = await encryptLayer(plain, jweTo(other));
  const a = mine.desc.annotations!;
  const jwe = 'org.opencontainers.image.enc.keys.jwe';
  // Re-wrap: the other recipient's entry first, ours second (same layer key: take both from "mine").
  const foreign = theirs.desc.annotations![jwe]!;
  const desc = { ...mine.desc, annotations: { ...a, [jwe]: `${foreign},${a[jwe]}` } };
  const d = await createLayerDecryptor(desc, decryptionKeys({ flags: [ec.privatePem] }));
  assert.ok((await runOk(d.stream, mine.blob)).equals(plain));
});

test('no usable key: FAILED_PRECONDITION naming the layer, the annotations present and why', async () => {
  const plain = randomBytes(100);
  const { desc } = await encryptLayer(plain, { jwe: [{ key: rsa.publicKey }], kbs: [{ kid: 'kbs:///default/key/image', kek: newKek() }] });
  const cases: Array<[string, ReturnType<typeof decryptionKeys>, RegExp]> = [
    ['no keys at all', decryptionKeys({}), /no private keys are configured.*no key source is configured/],
    ['wrong private key, wrong KEK', decryptionKeys({ flags: [other.privatePem], keySource: store }), /none of the 1 private key.*does not open the annotation packet/],
  ];
  for (const [name, keys, why] of cases) {
    await assert.rejects(createLayerDecryptor(desc, keys), (e: NoKeyForLayer) => {
      assert.ok(e instanceof NoKeyForLayer, name);
      assert.equal(e.code, Code.FAILED_PRECONDITION);
      assert.match(e.message, new RegExp(desc.digest));
      assert.match(e.message, /org\.opencontainers\.image\.enc\.keys\.jwe \(1 entries\)/);
      assert.match(e.message, /org\.opencontainers\.image\.enc\.keys\.provider\.attestation-agent \(1 entries\)/);
      assert.match(e.message, /org\.opencontainers\.image\.enc\.pubopts/);
      assert.match(e.message, why, name);
      return true;
    });
  }
  const pkcs7Only = { ...desc, annotations: { 'org.opencontainers.image.enc.keys.pkcs7': 'AAAA', 'org.opencontainers.image.enc.pubopts': desc.annotations!['org.opencontainers.image.enc.pubopts']! } };
  await assert.rejects(createLayerDecryptor(pkcs7Only, decryptionKeys({ flags: [rsa.privatePem] })), /keys\.pkcs7: key wrapping not supported/);
  const unreadable = decryptionKeys({ flags: ['/nonexistent/key.pem'] });
  await assert.rejects(createLayerDecryptor(desc, unreadable), (e: AgentError) => e instanceof NoKeyForLayer && /\/nonexistent\/key\.pem: ENOENT/.test(e.message));
  // An unreadable key does not hide a good one.
  const plainAgain = randomBytes(100);
  const both = await encryptLayer(plainAgain, jweTo(rsa));
  const d = await createLayerDecryptor(both.desc, decryptionKeys({ flags: ['/nonexistent/key.pem', rsa.privatePem] }));
  assert.ok((await runOk(d.stream, both.blob)).equals(plainAgain));
});

test('a key source outage is not reported as a missing key', async () => {
  const { desc } = await encryptLayer(randomBytes(10), kbsTo('kbs:///default/key/image'));
  const down: KeySource = {
    get: async () => {
      throw new AgentError(Code.UNAVAILABLE, 'KBS unreachable');
    },
  };
  await assert.rejects(createLayerDecryptor(desc, decryptionKeys({ keySource: down })), (e: AgentError) => e.code === Code.UNAVAILABLE);
  const ac = new AbortController();
  ac.abort();
  const slow: KeySource = { get: async (_u, signal) => (signal?.throwIfAborted(), kek) };
  await assert.rejects(createLayerDecryptor(desc, decryptionKeys({ keySource: slow }), { signal: ac.signal }), (e: Error) => e.name === 'AbortError');
});

test('malformed encryption metadata is INVALID_ARGUMENT; unknown ciphers are refused', async () => {
  const plain = randomBytes(100);
  const { desc } = await encryptLayer(plain, jweTo(rsa));
  const keys = decryptionKeys({ flags: [rsa.privatePem] });
  const pub = 'org.opencontainers.image.enc.pubopts';
  const withPub = (v: string | undefined) => ({ ...desc, annotations: Object.fromEntries(Object.entries({ ...desc.annotations, [pub]: v }).filter(([, x]) => x !== undefined)) as Record<string, string> });
  await assert.rejects(createLayerDecryptor(withPub(undefined), keys), (e: BadEncryptionMetadata) => e instanceof BadEncryptionMetadata && /missing/.test(e.message));
  await assert.rejects(createLayerDecryptor(withPub('!!'), keys), BadEncryptionMetadata);
  await assert.rejects(createLayerDecryptor(withPub(Buffer.from('{"cipher":"AES_128_CBC"}').toString('base64')), keys), UnsupportedEncryption);
  await assert.rejects(createLayerDecryptor(withPub(Buffer.from('{"cipher":"AES_256_CTR_HMAC_SHA256"}').toString('base64')), keys), /no HMAC/);
  const badList = { ...desc, annotations: { ...desc.annotations, 'org.opencontainers.image.enc.keys.jwe': 'not base64!' } };
  await assert.rejects(createLayerDecryptor(badList, keys), BadEncryptionMetadata);
});

test('tampered layers fail the stream, and verify() reports it; a wrong private digest is caught', async () => {
  const plain = randomBytes(20_000);
  for (const cipher of [CIPHER_CTR_HMAC, CIPHER_GCM_STREAM] as const) {
    const { blob, desc } = await encryptLayer(plain, jweTo(rsa), cipher);
    const bad = Buffer.from(blob);
    bad[bad.length - 100]! ^= 1;
    const d = await createLayerDecryptor(desc, decryptionKeys({ flags: [rsa.privatePem] }));
    const r = await run(d.stream, bad, 3000);
    assert.ok(r.error instanceof LayerAuthenticationFailed, cipher);
    assert.throws(() => d.verify(), LayerAuthenticationFailed);
  }
  // Wrap options whose digest is not the plaintext's: ctr-hmac always checks, gcm-stream on request.
  const wrongDigest = { ...plainLayer(plain), digest: `sha256:${'0'.repeat(64)}` };
  for (const [cipher, verifyPlainDigest, fails] of [[CIPHER_CTR_HMAC, false, true], [CIPHER_GCM_STREAM, false, false], [CIPHER_GCM_STREAM, true, true]] as const) {
    const { blob, desc } = await encryptLayer(plain, jweTo(rsa), cipher, wrongDigest);
    const d = await createLayerDecryptor(desc, decryptionKeys({ flags: [rsa.privatePem] }), { verifyPlainDigest });
    const r = await run(d.stream, blob);
    assert.equal(r.error instanceof PlainDigestMismatch, fails, `${cipher} verifyPlainDigest=${verifyPlainDigest}`);
  }
});

test('a private digest equal to the diff_id (skopeo compressed an uncompressed layer before encrypting) leaves that check to the diff_id stage', async () => {
  const plain = randomBytes(20_000);
  const diffId = `sha256:${'1'.repeat(64)}`;
  const recorded = { ...plainLayer(plain), digest: diffId };
  for (const cipher of [CIPHER_CTR_HMAC, CIPHER_GCM_STREAM] as const) {
    const { blob, desc } = await encryptLayer(plain, jweTo(rsa), cipher, recorded);
    const keys = decryptionKeys({ flags: [rsa.privatePem] });
    const ok = await run((await createLayerDecryptor(desc, keys, { verifyPlainDigest: true, diffId })).stream, blob);
    assert.equal(ok.error, undefined, cipher);
    // Any other diff_id: the recorded digest is checked against the blob and fails.
    const other = await run((await createLayerDecryptor(desc, keys, { verifyPlainDigest: true, diffId: `sha256:${'2'.repeat(64)}` })).stream, blob);
    assert.ok(other.error instanceof PlainDigestMismatch, cipher);
  }
});
