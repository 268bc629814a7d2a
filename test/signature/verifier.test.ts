// The verifier as the pull uses it: policy sources (file, inline, the
// offline KBS store), the config switch, requirement lists, pulls through a
// mirror, and what is logged.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { Code } from '../../agent/src/errors.ts';
import { createLogger } from '../../agent/src/log.ts';
import { OfflineKeyStore } from '../../agent/src/attestation/offline-store.ts';
import { createSignatureVerifier, PolicyInvalid, RejectReason, SignatureVerifier } from '../../agent/src/signature/index.ts';
import { cosignKey, cosignSign, type CosignKey } from '../fixtures/cosign.ts';
import { createGpgHome, type GpgHome } from '../fixtures/gpg.ts';
import { log, rejectedWith, startSignatureEnv, writeRegistriesD, type SignatureEnv } from '../helpers/signature-env.ts';

const ORIGIN = 'registry.example.com/ns/app';

describe('signature verifier', () => {
  let env: SignatureEnv;
  let key: CosignKey;
  let gpg: GpgHome;
  let host: string;
  let digest: string;
  let image: string;
  const cosignPolicy = (scope: string) => ({ default: [{ type: 'reject' }], transports: { docker: { [scope]: [{ type: 'sigstoreSigned', keyData: key.publicPem }] } } });

  before(async () => {
    env = await startSignatureEnv();
    host = env.reg.host;
    key = cosignKey();
    gpg = createGpgHome();
    digest = await env.pushImage('ns/app', 'v1');
    image = `${host}/ns/app:v1`;
    await cosignSign(env.reg.url, 'ns/app', digest, image, key.privateKey);
  });
  after(async () => {
    await gpg?.close();
    await env?.close();
  });

  test('policy sources: a file, inline config, and kbs:/// resources from the offline store', async () => {
    const policyFile = join(env.work, 'policy.json');
    writeFileSync(policyFile, JSON.stringify(cosignPolicy(host)));
    const fromFile = new SignatureVerifier({ policy: { kind: 'file', path: policyFile } });
    await env.verify(fromFile, image);
    await fromFile.close();
    await env.verify(env.verifier(cosignPolicy(host)), image);

    // The policy and the key it names both come from the key store, as kata's agent.image_policy_file=kbs:///… does.
    const store = join(env.work, 'offline-resources.json');
    const policy = { default: [{ type: 'reject' }], transports: { docker: { [host]: [{ type: 'sigstoreSigned', keyPath: 'kbs:///default/cosign-public-key/test' }] } } };
    writeFileSync(store, JSON.stringify({
      'default/security-policy/test': Buffer.from(JSON.stringify(policy)).toString('base64'),
      'default/cosign-public-key/test': Buffer.from(key.publicPem).toString('base64'),
    }));
    const keySource = new OfflineKeyStore([store]);
    const fromKbs = new SignatureVerifier({ policy: { kind: 'kbs', uri: 'kbs:///default/security-policy/test' }, keySource });
    assert.deepEqual(await env.verify(fromKbs, image), { scope: host, passed: ['sigstoreSigned (matchRepoDigestOrExact)'] });
    await fromKbs.close();
    const missing = new SignatureVerifier({ policy: { kind: 'kbs', uri: 'kbs:///default/security-policy/absent' }, keySource });
    await assert.rejects(env.verify(missing, image), (err: unknown) => (err as { code?: number }).code === Code.NOT_FOUND);
    await missing.close();
    const noSource = new SignatureVerifier({ policy: { kind: 'kbs', uri: 'kbs:///default/security-policy/test' } });
    await assert.rejects(env.verify(noSource, image), (err: unknown) => err instanceof PolicyInvalid && /no key source/.test(err.message));
    await noSource.close();
  });

  test('a broken policy file fails the pull with its path, and is read again once fixed', async () => {
    const file = join(env.work, 'broken.json');
    writeFileSync(file, '{"default":[]}');
    const v = new SignatureVerifier({ policy: { kind: 'file', path: file } });
    await assert.rejects(env.verify(v, image), (err: unknown) => err instanceof PolicyInvalid && err.code === Code.FAILED_PRECONDITION && err.message.includes(`policy ${file}: $.default: expected a non-empty array`));
    writeFileSync(file, JSON.stringify(cosignPolicy(host)));
    await env.verify(v, image);
    await v.close();
    const absent = new SignatureVerifier({ policy: { kind: 'file', path: join(env.work, 'absent.json') } });
    await assert.rejects(env.verify(absent, image), /ENOENT/);
    await absent.close();
    const badKey = env.verifier({ default: [{ type: 'sigstoreSigned', keyData: 'bm90IGEga2V5' }] });
    await assert.rejects(env.verify(badKey, image), (err: unknown) => err instanceof PolicyInvalid && /no PEM "PUBLIC KEY" block/.test(err.message));
  });

  test('config: off means no verifier; on without a policy refuses every pull', async () => {
    const cfg = { enable_signature_verification: false, policy: '', policy_inline: '', registries_d: '' };
    assert.equal(createSignatureVerifier(cfg, { log }), undefined);
    assert.equal(createSignatureVerifier({ ...cfg, policy: '/etc/policy.json' }, { log }), undefined);
    const none = createSignatureVerifier({ ...cfg, enable_signature_verification: true }, { log })!;
    await assert.rejects(env.verify(none, image), rejectedWith(RejectReason.NoPolicy, /no policy is configured/));
    await none.close();
    const inline = createSignatureVerifier({ ...cfg, enable_signature_verification: true, policy_inline: JSON.stringify(cosignPolicy(host)) }, { log })!;
    await env.verify(inline, image);
    await inline.close();
    assert.throws(() => createSignatureVerifier({ ...cfg, enable_signature_verification: true, policy: 'policy.json' }, { log }), /absolute path or a kbs/);
    assert.throws(() => createSignatureVerifier({ ...cfg, policy: '/p', policy_inline: '{}' }, { log }), /both set/);
  });

  test('requirements: reject, insecureAcceptAnything, and all of a list must pass', async () => {
    await assert.rejects(env.verify(env.verifier({ default: [{ type: 'reject' }] }), image), rejectedWith(RejectReason.RejectedByPolicy, /scope default\): rejected by policy/));
    assert.deepEqual(await env.verify(env.verifier({ default: [{ type: 'insecureAcceptAnything' }] }), image), { scope: 'default', passed: ['insecureAcceptAnything'] });
    const both = [{ type: 'sigstoreSigned', keyData: key.publicPem }, { type: 'signedBy', keyType: 'GPGKeys', keyData: gpg.publicKey(true).toString() }];
    await assert.rejects(env.verify(env.verifier({ default: both }), image), rejectedWith(RejectReason.NoSignature, /signedBy: no simple signature/));
    await assert.rejects(env.verify(env.verifier({ default: [{ type: 'insecureAcceptAnything' }, { type: 'reject' }] }), image), rejectedWith(RejectReason.RejectedByPolicy));
  });

  describe('through a mirror', () => {
    let mirrorDigest: string;
    const fromMirror = { repo: 'mirror/app' };
    before(async () => {
      // The mirror serves registry.example.com/ns/app (which does not exist here) from the local registry.
      mirrorDigest = await env.pushImage('mirror/app', 'v1');
    });

    test('the policy scope and identity are those of the requested name, not the mirror', async () => {
      await cosignSign(env.reg.url, 'mirror/app', mirrorDigest, `${ORIGIN}:v1`, key.privateKey);
      const verdict = await env.verify(env.verifier(cosignPolicy('registry.example.com/ns')), `${ORIGIN}:v1`, fromMirror);
      assert.equal(verdict.scope, 'registry.example.com/ns');
      // A policy that trusts only the mirror's host does not apply to the requested name.
      const mirrorOnly = { default: [{ type: 'reject' }], transports: { docker: { [host]: [{ type: 'insecureAcceptAnything' }] } } };
      await assert.rejects(env.verify(env.verifier(mirrorOnly), `${ORIGIN}:v1`, fromMirror), rejectedWith(RejectReason.RejectedByPolicy, /scope default/));
    });

    test('a signature naming the mirror does not match, unless remapIdentity says so', async () => {
      await cosignSign(env.reg.url, 'mirror/app', mirrorDigest, `${host}/mirror/app:v1`, key.privateKey);
      await assert.rejects(env.verify(env.verifier(cosignPolicy('registry.example.com')), `${ORIGIN}:v1`, fromMirror), rejectedWith(RejectReason.IdentityMismatch));
      const remap = { default: [{ type: 'sigstoreSigned', keyData: key.publicPem, signedIdentity: { type: 'remapIdentity', prefix: 'registry.example.com/ns', signedPrefix: `${host}/mirror` } }] };
      await env.verify(env.verifier(remap), `${ORIGIN}:v1`, fromMirror);
    });

    test('simple signatures are looked up in the lookaside of the requested name', async () => {
      const lookaside = join(env.work, 'mirror-lookaside');
      const sigDir = join(lookaside, `ns/app@${mirrorDigest.replace(':', '=')}`);
      mkdirSync(sigDir, { recursive: true });
      const manifest = (await env.source('mirror/app').getManifest(mirrorDigest))!.bytes;
      writeFileSync(join(sigDir, 'signature-1'), await gpg.standaloneSign(manifest, `${ORIGIN}:v1`));
      const regd = writeRegistriesD(join(env.work, 'mirror.d'), { 'origin.yaml': `docker:\n  registry.example.com:\n    lookaside: file://${lookaside}\n` });
      const policy = { default: [{ type: 'reject' }], transports: { docker: { 'registry.example.com': [{ type: 'signedBy', keyType: 'GPGKeys', keyData: gpg.publicKey(true).toString() }] } } };
      await env.verify(env.verifier(policy, { registriesD: regd }), `${ORIGIN}:v1`, fromMirror);
    });
  });

  test('rejections are logged with the image and scope and never the key', async () => {
    const lines: string[] = [];
    const sink = new Writable({ write: (chunk: Buffer, _enc, cb) => { lines.push(chunk.toString()); cb(); } });
    const captured = createLogger('info', sink);
    const v = env.verifier({ default: [{ type: 'reject' }], transports: { docker: { [`${host}/ns`]: [{ type: 'sigstoreSigned', keyData: cosignKey().publicPem }] } } });
    await assert.rejects(env.verify(v, image, { log: captured }), rejectedWith(RejectReason.BadSignature));
    await env.verify(env.verifier(cosignPolicy(host)), image, { log: captured });
    const entries = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
    const rejected = entries.find((e) => e.msg === 'image rejected by signature policy')!;
    assert.equal(rejected.level, 'warn');
    assert.equal(rejected.image, image);
    assert.equal(rejected.scope, `${host}/ns`);
    assert.equal(rejected.reason, 'bad signature');
    const accepted = entries.find((e) => e.msg === 'image accepted by signature policy')!;
    assert.deepEqual([accepted.image, accepted.scope], [image, host]);
    const all = lines.join('');
    const keyBody = key.publicPem.split('\n')[1]!;
    assert.ok(!all.includes(keyBody) && !all.includes('PUBLIC KEY'), 'no key material in logs');
  });
});
