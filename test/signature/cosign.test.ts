// Cosign (legacy ".sig" tags) against Debian's docker-registry, with
// signatures made by the test signer from the cosign spec.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { RejectReason } from '../../agent/src/signature/errors.ts';
import { cosignTag, fetchCosignSignatures } from '../../agent/src/signature/cosign.ts';
import { cosignKey, cosignPayload, cosignSign, pushCosignSignatures, signPayload, type CosignKey } from '../fixtures/cosign.ts';
import { rejectedWith, startSignatureEnv, type SignatureEnv } from '../helpers/signature-env.ts';

const policyFor = (scope: string, req: Record<string, unknown>) => ({ default: [{ type: 'reject' }], transports: { docker: { [scope]: [req] } } });

describe('cosign signatures', () => {
  let env: SignatureEnv;
  let key: CosignKey;
  let other: CosignKey;
  let host: string;
  const sigstore = (k: CosignKey = key, extra: Record<string, unknown> = {}) => ({ type: 'sigstoreSigned', keyData: k.publicPem, ...extra });

  before(async () => {
    env = await startSignatureEnv();
    host = env.reg.host;
    key = cosignKey('p256');
    other = cosignKey('p256');
  });
  after(async () => {
    await env?.close();
  });

  test('the tag name and the layers read back as the signer wrote them', async () => {
    assert.equal(cosignTag('sha256:' + 'ab'.repeat(32)), 'sha256-' + 'ab'.repeat(32) + '.sig');
    const digest = await env.pushImage('ns/read', 'v1');
    const payload = cosignPayload(`${host}/ns/read:v1`, digest);
    await pushCosignSignatures(env.reg.url, 'ns/read', digest, [{ payload, signature: signPayload(payload, key.privateKey) }, { payload, mediaType: 'text/plain', signature: 'AAAA' }, { payload }]);
    const got = await fetchCosignSignatures(env.source('ns/read'), digest);
    assert.equal(got.length, 3);
    assert.ok('payload' in got[0]! && got[0].payload.equals(payload));
    assert.ok('problem' in got[1]! && /media type "text\/plain"/.test(got[1].problem));
    assert.ok('problem' in got[2]! && /annotation/.test(got[2].problem));
    assert.deepEqual(await fetchCosignSignatures(env.source('ns/read'), 'sha256:' + '0'.repeat(64)), []);
  });

  test('accepted with the matching key: keyData PEM, base64 of PEM, keyPath, several keys', async () => {
    const digest = await env.pushImage('ns/app', 'v1');
    await cosignSign(env.reg.url, 'ns/app', digest, `${host}/ns/app:v1`, key.privateKey);
    const image = `${host}/ns/app:v1`;
    const keyFile = join(env.work, 'cosign.pub');
    writeFileSync(keyFile, key.publicPem);
    for (const req of [
      sigstore(),
      { type: 'sigstoreSigned', keyData: Buffer.from(key.publicPem).toString('base64') },
      { type: 'sigstoreSigned', keyPath: keyFile },
      { type: 'sigstoreSigned', keyDatas: [other.publicPem, key.publicPem] },
      { type: 'sigstoreSigned', keyData: other.publicPem + key.publicPem },
    ]) {
      const verdict = await env.verify(env.verifier(policyFor(`${host}/ns`, req)), image);
      assert.equal(verdict.scope, `${host}/ns`);
      assert.deepEqual(verdict.passed, ['sigstoreSigned (matchRepoDigestOrExact)']);
    }
  });

  test('other key types through node:crypto: P-384, Ed25519, RSA', async () => {
    for (const type of ['p384', 'ed25519', 'rsa'] as const) {
      const k = cosignKey(type);
      const digest = await env.pushImage('ns/keys', type);
      await cosignSign(env.reg.url, 'ns/keys', digest, `${host}/ns/keys:${type}`, k.privateKey);
      await env.verify(env.verifier(policyFor(host, sigstore(k))), `${host}/ns/keys:${type}`);
      await assert.rejects(env.verify(env.verifier(policyFor(host, sigstore(key))), `${host}/ns/keys:${type}`), rejectedWith(RejectReason.BadSignature));
    }
  });

  test('rejected: no signature, the wrong key, a tampered payload or signature', async () => {
    const v = env.verifier(policyFor(host, sigstore()));
    const unsigned = `${host}/ns/unsigned:v1`;
    await env.pushImage('ns/unsigned', 'v1');
    await assert.rejects(env.verify(v, unsigned), rejectedWith(RejectReason.NoSignature, new RegExp(`image ${unsigned} rejected by signature policy \\(scope ${host}\\): no signature`)));

    const digest = await env.pushImage('ns/tamper', 'v1');
    const image = `${host}/ns/tamper:v1`;
    await cosignSign(env.reg.url, 'ns/tamper', digest, image, other.privateKey);
    await assert.rejects(env.verify(v, image), rejectedWith(RejectReason.BadSignature, /does not verify with any trusted key/));

    const payload = cosignPayload(image, digest);
    const signature = signPayload(payload, key.privateKey);
    const tampered = Buffer.from(payload.toString().replace('"optional":null', '"optional":{"x":1}'));
    await pushCosignSignatures(env.reg.url, 'ns/tamper', digest, [{ payload: tampered, signature }]);
    await assert.rejects(env.verify(v, image), rejectedWith(RejectReason.BadSignature));
    const sig = Buffer.from(signature, 'base64');
    sig[sig.length - 3]! ^= 1;
    await pushCosignSignatures(env.reg.url, 'ns/tamper', digest, [{ payload, signature: sig.toString('base64') }]);
    await assert.rejects(env.verify(v, image), rejectedWith(RejectReason.BadSignature));
    await pushCosignSignatures(env.reg.url, 'ns/tamper', digest, [{ payload, signature: 'not base64!' }]);
    await assert.rejects(env.verify(v, image), rejectedWith(RejectReason.BadSignature, /annotation/));
    // A good signature on a layer of the wrong media type does not count.
    await pushCosignSignatures(env.reg.url, 'ns/tamper', digest, [{ payload, signature, mediaType: 'application/octet-stream' }]);
    await assert.rejects(env.verify(v, image), rejectedWith(RejectReason.BadSignature, /media type/));
    // One bad layer next to a good one: the good one is enough.
    await pushCosignSignatures(env.reg.url, 'ns/tamper', digest, [{ payload: tampered, signature }, { payload, signature }]);
    await env.verify(v, image);
  });

  test('a valid signature for another digest or another repository is refused', async () => {
    const v = env.verifier(policyFor(host, sigstore()));
    const digest = await env.pushImage('ns/target', 'v1');
    const otherDigest = await env.pushImage('ns/target', 'v2');
    const image = `${host}/ns/target:v1`;
    await cosignSign(env.reg.url, 'ns/target', digest, image, key.privateKey, {});
    await env.verify(v, image);
    // The v2 image's signature copied to v1's signature tag.
    const payload = cosignPayload(image, otherDigest);
    await pushCosignSignatures(env.reg.url, 'ns/target', digest, [{ payload, signature: signPayload(payload, key.privateKey) }]);
    await assert.rejects(env.verify(v, image), rejectedWith(RejectReason.DigestMismatch, new RegExp(`signature is for ${otherDigest}, not ${digest}`)));
    await cosignSign(env.reg.url, 'ns/target', digest, `${host}/ns/elsewhere:v1`, key.privateKey);
    await assert.rejects(env.verify(v, image), rejectedWith(RejectReason.IdentityMismatch, /names ".*\/ns\/elsewhere:v1"/));
  });

  test('critical.type and unknown critical members are checked after the signature verifies', async () => {
    const v = env.verifier(policyFor(host, sigstore()));
    const digest = await env.pushImage('ns/crit', 'v1');
    const image = `${host}/ns/crit:v1`;
    await cosignSign(env.reg.url, 'ns/crit', digest, image, key.privateKey, { type: 'atomic container signature' });
    await assert.rejects(env.verify(v, image), rejectedWith(RejectReason.BadSignature, /critical\.type/));
    await cosignSign(env.reg.url, 'ns/crit', digest, image, key.privateKey, { extraCritical: { expires: 0 } });
    await assert.rejects(env.verify(v, image), rejectedWith(RejectReason.BadSignature, /critical\.expires: unknown field/));
    await cosignSign(env.reg.url, 'ns/crit', digest, image, key.privateKey, { optional: { creator: 'test', anything: { nested: true } } });
    await env.verify(v, image);
  });

  test('every signedIdentity type', async () => {
    const digest = await env.pushImage('ns/id', 'v1');
    const image = `${host}/ns/id:v1`;
    const byDigest = `${host}/ns/id@${digest}`;
    const check = async (signed: string, identity: Record<string, unknown> | undefined, expect: Record<string, boolean>) => {
      await cosignSign(env.reg.url, 'ns/id', digest, signed, key.privateKey);
      const v = env.verifier(policyFor(host, sigstore(key, identity ? { signedIdentity: identity } : {})));
      for (const [img, ok] of Object.entries(expect)) {
        const p = env.verify(v, img, { repo: 'ns/id' });
        if (ok) await p;
        else await assert.rejects(p, rejectedWith(RejectReason.IdentityMismatch), `${JSON.stringify(identity)} signed ${signed} pulled ${img}`);
      }
    };
    // cosign itself signs the repository without a tag.
    await check(`${host}/ns/id`, undefined, { [image]: false, [byDigest]: false });
    await check(`${host}/ns/id:v1`, undefined, { [image]: true, [byDigest]: true });
    await check(`${host}/ns/id:v2`, undefined, { [image]: false, [byDigest]: true });
    await check(`${host}/ns/id:v1`, { type: 'matchExact' }, { [image]: true, [byDigest]: false });
    await check(`${host}/ns/id`, { type: 'matchRepository' }, { [image]: true, [byDigest]: true });
    await check(`${host}/ns/other`, { type: 'matchRepository' }, { [image]: false });
    await check('example.com/golden:1', { type: 'exactReference', dockerReference: 'example.com/golden:1' }, { [image]: true, [byDigest]: true });
    await check('example.com/golden:2', { type: 'exactReference', dockerReference: 'example.com/golden:1' }, { [image]: false });
    await check('example.com/golden', { type: 'exactRepository', dockerRepository: 'example.com/golden' }, { [image]: true });
    await check('example.com/golden2', { type: 'exactRepository', dockerRepository: 'example.com/golden' }, { [image]: false });
    await check('quay.io/upstream/id:v1', { type: 'remapIdentity', prefix: `${host}/ns`, signedPrefix: 'quay.io/upstream' }, { [image]: true, [byDigest]: true });
    await check('quay.io/upstream/id:v2', { type: 'remapIdentity', prefix: `${host}/ns`, signedPrefix: 'quay.io/upstream' }, { [image]: false, [byDigest]: true });
  });

  test('an index: a signature on the index digest or on the platform manifest digest', async () => {
    const v = env.verifier(policyFor(host, sigstore()));
    const { index, manifest } = await env.pushIndex('ns/multi', 'v1');
    const image = `${host}/ns/multi:v1`;
    await assert.rejects(env.verify(v, image), rejectedWith(RejectReason.NoSignature));
    await cosignSign(env.reg.url, 'ns/multi', index, image, key.privateKey);
    await env.verify(v, image);
    const { index: index2, manifest: manifest2 } = await env.pushIndex('ns/multi', 'v2');
    await cosignSign(env.reg.url, 'ns/multi', manifest2, `${host}/ns/multi:v2`, key.privateKey);
    await env.verify(v, `${host}/ns/multi:v2`);
    // A platform signature of another index's manifest is a digest mismatch.
    const payload = cosignPayload(`${host}/ns/multi:v2`, manifest);
    await pushCosignSignatures(env.reg.url, 'ns/multi', index2, [{ payload, signature: signPayload(payload, key.privateKey) }]);
    await pushCosignSignatures(env.reg.url, 'ns/multi', manifest2, [{ payload, signature: signPayload(payload, key.privateKey) }]);
    await assert.rejects(env.verify(v, `${host}/ns/multi:v2`), rejectedWith(RejectReason.DigestMismatch, /none of 2 signatures/));
  });
});
