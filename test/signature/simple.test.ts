// GPG simple signing with skopeo and gpg as the signing peers: lookaside
// storage over file:// and http://, the registry signature extension, keys
// with signing subkeys, expiry, and crafted payloads.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Code } from '../../agent/src/errors.ts';
import { RejectReason, SignatureStoreUnavailable } from '../../agent/src/signature/errors.ts';
import { createGpgHome, type GpgHome } from '../fixtures/gpg.ts';
import { startStaticServer, type StaticServer } from '../helpers/static-server.ts';
import { startSignatureExtensionProxy, type SignatureExtensionProxy } from '../helpers/signature-extension.ts';
import { rejectedWith, startSignatureEnv, writeRegistriesD, type SignatureEnv } from '../helpers/signature-env.ts';

const DAY = 24 * 3600 * 1000;

describe('GPG simple signing', () => {
  let env: SignatureEnv;
  let gpg: GpgHome;
  let primaryOnly: GpgHome;
  let stranger: GpgHome;
  let lookaside: string;
  let fileRegD: string;
  let httpRegD: string;
  let http: StaticServer;
  let ext: SignatureExtensionProxy;
  let host: string;
  const homes: GpgHome[] = [];
  const home = (opts: Parameters<typeof createGpgHome>[0] = {}): GpgHome => {
    const h = createGpgHome(opts);
    homes.push(h);
    return h;
  };
  const signedBy = (g: GpgHome, extra: Record<string, unknown> = {}) => ({ type: 'signedBy', keyType: 'GPGKeys', keyData: g.publicKey(true).toString(), ...extra });
  const policy = (req: Record<string, unknown>, scope = host) => ({ default: [{ type: 'reject' }], transports: { docker: { [scope]: [req] } } });
  /** Put a signature blob at lookaside position n for repo@digest. */
  const place = (repo: string, digest: string, n: number, blob: Buffer): void => {
    const dir = join(lookaside, `${repo}@${digest.replace(':', '=')}`);
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, `signature-${n}`), blob);
  };
  const manifestOf = async (repo: string, digest: string): Promise<Buffer> => (await env.source(repo).getManifest(digest))!.bytes;

  before(async () => {
    env = await startSignatureEnv();
    host = env.reg.host;
    gpg = home();
    primaryOnly = home({ subkey: false });
    stranger = home();
    lookaside = join(env.work, 'lookaside');
    mkdirSync(lookaside);
    http = await startStaticServer(lookaside);
    fileRegD = writeRegistriesD(join(env.work, 'file.d'), { 'local.yaml': `docker:\n  ${host}:\n    lookaside: file://${lookaside}\n    lookaside-staging: file://${lookaside}\n` });
    httpRegD = writeRegistriesD(join(env.work, 'http.d'), { 'default.yaml': `default-docker:\n  lookaside: ${http.url}/\n` });
    ext = await startSignatureExtensionProxy(env.reg.url);
  });
  after(async () => {
    for (const h of homes) await h.close();
    await ext?.close();
    await http?.close();
    await env?.close();
  });

  test('skopeo copy --sign-by with a signing subkey: accepted from file:// and http:// lookaside', async () => {
    assert.notEqual(gpg.signingFingerprint, gpg.fingerprint, 'the key signs with a subkey');
    const digest = await env.pushImage('ns/app', 'v1', { signBy: gpg, registriesD: fileRegD });
    assert.ok(readFileSync(join(lookaside, `ns/app@${digest.replace(':', '=')}`, 'signature-1')).length > 0, 'skopeo wrote the signature');
    const image = `${host}/ns/app:v1`;
    const verdict = await env.verify(env.verifier(policy(signedBy(gpg)), { registriesD: fileRegD }), image);
    assert.deepEqual(verdict, { scope: host, passed: ['signedBy (matchRepoDigestOrExact)'] });
    const before = http.requests.length;
    await env.verify(env.verifier(policy(signedBy(gpg)), { registriesD: httpRegD }), image);
    const hex = digest.slice(7);
    assert.deepEqual(http.requests.slice(before), [`/ns/app@sha256=${hex}/signature-1`, `/ns/app@sha256=${hex}/signature-2`]);
    // By digest too, and with the key given every other way.
    await env.verify(env.verifier(policy(signedBy(gpg)), { registriesD: fileRegD }), `${host}/ns/app@${digest}`);
    const keyFile = join(env.work, 'signer.gpg');
    writeFileSync(keyFile, gpg.publicKey());
    for (const req of [
      { type: 'signedBy', keyType: 'GPGKeys', keyPath: keyFile },
      { type: 'signedBy', keyType: 'GPGKeys', keyPaths: [keyFile] },
      { type: 'signedBy', keyType: 'GPGKeys', keyData: gpg.publicKey().toString('base64') },
      { type: 'signedBy', keyType: 'GPGKeys', keyData: Buffer.concat([stranger.publicKey(), gpg.publicKey()]).toString('base64') },
    ]) {
      await env.verify(env.verifier(policy(req), { registriesD: fileRegD }), image);
    }
  });

  test('a primary key that signs itself', async () => {
    await env.pushImage('ns/primary', 'v1', { signBy: primaryOnly, registriesD: fileRegD });
    await env.verify(env.verifier(policy(signedBy(primaryOnly)), { registriesD: fileRegD }), `${host}/ns/primary:v1`);
  });

  test('rejected: no signature, an untrusted key, a tampered signature', async () => {
    const v = env.verifier(policy(signedBy(gpg)), { registriesD: fileRegD });
    await env.pushImage('ns/none', 'v1');
    await assert.rejects(env.verify(v, `${host}/ns/none:v1`), rejectedWith(RejectReason.NoSignature, /no simple signature found/));
    // Without any registries.d there is nowhere to look either.
    await assert.rejects(env.verify(env.verifier(policy(signedBy(gpg))), `${host}/ns/none:v1`), rejectedWith(RejectReason.NoSignature));

    await env.pushImage('ns/stranger', 'v1', { signBy: stranger, registriesD: fileRegD });
    await assert.rejects(env.verify(v, `${host}/ns/stranger:v1`), rejectedWith(RejectReason.BadSignature, /unknown key|Could not find signing key/));

    const digest = await env.pushImage('ns/tampered', 'v1', { signBy: gpg, registriesD: fileRegD });
    const file = join(lookaside, `ns/tampered@${digest.replace(':', '=')}`, 'signature-1');
    const blob = readFileSync(file);
    const flipped = Buffer.from(blob);
    flipped[Math.floor(blob.length / 2)]! ^= 0x20;
    writeFileSync(file, flipped);
    await assert.rejects(env.verify(v, `${host}/ns/tampered:v1`), rejectedWith(RejectReason.BadSignature));
    writeFileSync(file, Buffer.from('not a signature'));
    await assert.rejects(env.verify(v, `${host}/ns/tampered:v1`), rejectedWith(RejectReason.BadSignature, /not an OpenPGP message/));
  });

  test('a valid signature for another digest or repository (skopeo standalone-sign) is refused', async () => {
    const v = env.verifier(policy(signedBy(gpg)), { registriesD: fileRegD });
    const digest = await env.pushImage('ns/victim', 'v1');
    const otherDigest = await env.pushImage('ns/victim', 'v2');
    const image = `${host}/ns/victim:v1`;
    place('ns/victim', digest, 1, await gpg.standaloneSign(await manifestOf('ns/victim', otherDigest), image));
    await assert.rejects(env.verify(v, image), rejectedWith(RejectReason.DigestMismatch, new RegExp(otherDigest)));
    place('ns/victim', digest, 1, await gpg.standaloneSign(await manifestOf('ns/victim', digest), `${host}/ns/other:v1`));
    await assert.rejects(env.verify(v, image), rejectedWith(RejectReason.IdentityMismatch, /ns\/other:v1/));
    // A second, good signature after a bad one is found and accepted; a gap ends the list.
    place('ns/victim', digest, 2, await gpg.standaloneSign(await manifestOf('ns/victim', digest), image));
    await env.verify(v, image);
    const digest3 = await env.pushImage('ns/victim', 'v3');
    place('ns/victim', digest3, 2, await gpg.standaloneSign(await manifestOf('ns/victim', digest3), `${host}/ns/victim:v3`));
    await assert.rejects(env.verify(v, `${host}/ns/victim:v3`), rejectedWith(RejectReason.NoSignature));
  });

  test('the payload is parsed only after verification, strictly: type and unknown critical members', async () => {
    const v = env.verifier(policy(signedBy(gpg)), { registriesD: fileRegD });
    const digest = await env.pushImage('ns/crafted', 'v1');
    const image = `${host}/ns/crafted:v1`;
    const payload = (critical: Record<string, unknown>) =>
      Buffer.from(JSON.stringify({ critical: { identity: { 'docker-reference': image }, image: { 'docker-manifest-digest': digest }, type: 'atomic container signature', ...critical }, optional: {} }));
    place('ns/crafted', digest, 1, gpg.sign(payload({})));
    await env.verify(v, image);
    place('ns/crafted', digest, 1, gpg.sign(payload({ type: 'cosign container image signature' })));
    await assert.rejects(env.verify(v, image), rejectedWith(RejectReason.BadSignature, /critical\.type: expected "atomic container signature"/));
    place('ns/crafted', digest, 1, gpg.sign(payload({ 'not-before': 0 })));
    await assert.rejects(env.verify(v, image), rejectedWith(RejectReason.BadSignature, /critical\["not-before"\]: unknown field/));
    // The signed bytes edited in place (uncompressed message, still valid JSON): the signature no longer verifies.
    const signed = gpg.sign(payload({}), { compress: false });
    const at = signed.indexOf(Buffer.from('"optional":{}'));
    assert.ok(at > 0);
    const edited = Buffer.from(signed);
    edited.write('"optional":[]', at);
    place('ns/crafted', digest, 1, edited);
    await assert.rejects(env.verify(v, image), rejectedWith(RejectReason.BadSignature, /Signed digest did not match|verification failed/i));
    place('ns/crafted', digest, 1, signed);
    await env.verify(v, image);
    // Unsigned JSON is not a signature at all.
    place('ns/crafted', digest, 1, payload({}));
    await assert.rejects(env.verify(v, image), rejectedWith(RejectReason.BadSignature));
  });

  test('expiry: an expired signing key, and an expired signature', async () => {
    const shortKey = home({ expire: '1d' });
    const shortSig = home({ gpgConf: ['default-sig-expire 1d'] });
    const later = () => new Date(Date.now() + 2 * DAY);
    for (const [g, why] of [[shortKey, /not valid now|expired/i], [shortSig, /Signature is expired/]] as const) {
      const repo = g === shortKey ? 'ns/shortkey' : 'ns/shortsig';
      await env.pushImage(repo, 'v1', { signBy: g, registriesD: fileRegD });
      await env.verify(env.verifier(policy(signedBy(g)), { registriesD: fileRegD }), `${host}/${repo}:v1`);
      await assert.rejects(env.verify(env.verifier(policy(signedBy(g)), { registriesD: fileRegD, now: later }), `${host}/${repo}:v1`), rejectedWith(RejectReason.BadSignature, why));
    }
  });

  test('the X-Registry-Supports-Signatures extension, as skopeo writes to it', async () => {
    const proxied = ext.host;
    await env.pushImage('ns/ext', 'v1', { signBy: gpg, host: proxied });
    assert.equal([...ext.store.keys()].filter((k) => k.startsWith('ns/ext@')).length, 1);
    await env.verify(env.verifier(policy(signedBy(gpg), proxied)), `${proxied}/ns/ext:v1`);
    // A registry with the extension is asked, not lookaside (containers/image does the same).
    await assert.rejects(env.verify(env.verifier(policy(signedBy(stranger), proxied), { registriesD: httpRegD }), `${proxied}/ns/ext:v1`), rejectedWith(RejectReason.BadSignature));
    await env.pushImage('ns/ext', 'v2', { host: proxied });
    await assert.rejects(env.verify(env.verifier(policy(signedBy(gpg), proxied)), `${proxied}/ns/ext:v2`), rejectedWith(RejectReason.NoSignature));
  });

  test('a failing lookaside server is UNAVAILABLE, not a rejection', async () => {
    const digest = await env.pushImage('ns/down', 'v1', { signBy: gpg, registriesD: fileRegD });
    assert.ok(digest);
    http.failWith = 500;
    try {
      await assert.rejects(env.verify(env.verifier(policy(signedBy(gpg)), { registriesD: httpRegD }), `${host}/ns/down:v1`), (err: unknown) => {
        assert.ok(err instanceof SignatureStoreUnavailable);
        assert.equal(err.code, Code.UNAVAILABLE);
        assert.match(err.message, /HTTP 500/);
        return true;
      });
    } finally {
      http.failWith = undefined;
    }
    copyFileSync(join(lookaside, `ns/down@${digest.replace(':', '=')}`, 'signature-1'), join(env.work, 'kept'));
  });
});
