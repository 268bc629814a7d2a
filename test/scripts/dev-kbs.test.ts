// The development KBS on the wire, driven with raw HTTP: Trustee 0.4.0
// status codes, error bodies, cookies, nonces, sessions and JWE layout.

import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import canonicalize from 'canonicalize';
import { generateKeyPair, exportJWK, flattenedDecrypt } from 'jose';
import { createHash } from 'node:crypto';
import { createInterface } from 'node:readline';
import { startKbs, type TestKbs } from '../helpers/kbs.ts';

const ERR = 'https://github.com/confidential-containers/kbs/errors/';
let kbs: TestKbs;
before(async () => {
  kbs = await startKbs({ resources: { 'default/key/1': 'secret-bytes' }, sessionTimeoutS: 1 });
});
after(() => kbs.stop());

async function post(path: string, body: unknown, cookie?: string): Promise<Response> {
  return fetch(kbs.url + path, { method: 'POST', headers: { 'content-type': 'application/json', ...(cookie ? { cookie } : {}) }, body: typeof body === 'string' ? body : JSON.stringify(body) });
}

const auth = (version = '0.4.0', tee = 'sample') => post('/kbs/v0/auth', { version, tee, 'extra-params': '' });

async function sampleAttest(alg: 'EC' | 'RSA' = 'EC') {
  const res = await auth();
  const cookie = res.headers.get('set-cookie')!.split(';')[0]!;
  const { nonce } = (await res.json()) as { nonce: string };
  const pair = alg === 'EC' ? await generateKeyPair('ECDH-ES+A256KW', { crv: 'P-256' }) : await generateKeyPair('RSA-OAEP-256', { modulusLength: 2048 });
  const jwk = await exportJWK(pair.publicKey);
  const pubkey = alg === 'EC' ? { kty: 'EC', crv: jwk.crv, alg: 'ECDH-ES+A256KW', x: jwk.x, y: jwk.y } : { kty: 'RSA', alg: 'RSA-OAEP-256', n: jwk.n, e: jwk.e };
  const digest = createHash('sha384').update(canonicalize({ 'tee-pubkey': pubkey, nonce, 'additional-evidence': '' })!).digest();
  const body = { 'init-data': null, 'runtime-data': { nonce, 'tee-pubkey': pubkey }, 'tee-evidence': { primary_evidence: { svn: '1', report_data: digest.toString('base64') }, additional_evidence: '' } };
  return { cookie, nonce, pubkey, body, privateKey: pair.privateKey };
}

test('auth: 200, a kbs-session-id cookie with Expires, a 32-byte base64 nonce and extra-params ""', async () => {
  const res = await auth();
  assert.equal(res.status, 200);
  assert.match(res.headers.get('set-cookie')!, /^kbs-session-id=[0-9a-f]{32}; Expires=\w{3}, \d\d \w{3} \d{4} /);
  const challenge = (await res.json()) as { nonce: string; 'extra-params': unknown };
  assert.equal(challenge.nonce.length, 44);
  assert.equal(Buffer.from(challenge.nonce, 'base64').length, 32);
  assert.equal(challenge['extra-params'], '');
});

test('version mismatch: 401 AttestationError with Trustee\'s detail', async () => {
  const res = await auth('0.3.0');
  assert.equal(res.status, 401);
  assert.deepEqual(await res.json(), {
    type: `${ERR}AttestationError`,
    detail: 'Attestation error: RCAR handshake Auth failed: KBS Client Protocol Version Mismatch: expect =0.4.0 while the request is 0.3.0',
  });
  assert.equal((await post('/kbs/v0/auth', 'not json')).status, 401);
});

test('attest: a token for the right nonce; the same token again on an attested session', async () => {
  const a = await sampleAttest();
  const res = await post('/kbs/v0/attest', a.body, a.cookie);
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('content-type'), 'application/json');
  const { token } = (await res.json()) as { token: string };
  assert.equal(token.split('.').length, 3);
  const again = await post('/kbs/v0/attest', a.body, a.cookie);
  assert.equal(((await again.json()) as { token: string }).token, token);
});

test('attest refusals: wrong nonce, no cookie, extra JWK members, expired session', async () => {
  const wrong = await sampleAttest();
  wrong.body['runtime-data'].nonce = Buffer.alloc(32).toString('base64');
  const r1 = await post('/kbs/v0/attest', wrong.body, wrong.cookie);
  assert.equal(r1.status, 401);
  assert.deepEqual(await r1.json(), { type: `${ERR}AttestationError`, detail: 'Attestation error: RCAR handshake Attest failed' });
  assert.match(kbs.stats.refusals.at(-1)!, /nonce mismatch/);

  const a = await sampleAttest();
  assert.equal((await post('/kbs/v0/attest', a.body)).status, 401);

  // The KBS re-serialises tee-pubkey through TeePubKey; a client that hashed extra members no longer matches.
  const extra = await sampleAttest();
  const withKid = { ...extra.pubkey, kid: 'k1' };
  const digest = createHash('sha384').update(canonicalize({ 'tee-pubkey': withKid, nonce: extra.nonce, 'additional-evidence': '' })!).digest();
  extra.body['runtime-data']['tee-pubkey'] = withKid;
  extra.body['tee-evidence'].primary_evidence.report_data = digest.toString('base64');
  assert.equal((await post('/kbs/v0/attest', extra.body, extra.cookie)).status, 401);
  assert.match(kbs.stats.refusals.at(-1)!, /report_data does not match/);

  const late = await sampleAttest();
  await new Promise((r) => setTimeout(r, 1100));
  assert.equal((await post('/kbs/v0/attest', late.body, late.cookie)).status, 401);
  assert.match(kbs.stats.refusals.at(-1)!, /session not found or expired/);
});

test('resource: JWE to the TEE key (EC and RSA), by cookie or bearer token', async () => {
  for (const alg of ['EC', 'RSA'] as const) {
    const a = await sampleAttest(alg);
    const { token } = (await (await post('/kbs/v0/attest', a.body, a.cookie)).json()) as { token: string };
    for (const headers of [{ cookie: a.cookie }, { authorization: `Bearer ${token}` }]) {
      const res = await fetch(`${kbs.url}/kbs/v0/resource/default/key/1`, { headers });
      assert.equal(res.status, 200);
      const jwe = (await res.json()) as { protected: string; encrypted_key: string; iv: string; ciphertext: string; tag: string };
      const header = JSON.parse(Buffer.from(jwe.protected, 'base64url').toString()) as Record<string, unknown>;
      assert.equal(header.enc, 'A256GCM');
      assert.equal(header.alg, alg === 'EC' ? 'ECDH-ES+A256KW' : 'RSA-OAEP-256');
      if (alg === 'EC') {
        assert.deepEqual(Object.keys(header.epk as object).sort(), ['crv', 'kty', 'x', 'y']);
        assert.equal(Buffer.from(jwe.encrypted_key, 'base64url').length, 40);
      }
      assert.equal(Buffer.from(jwe.iv, 'base64url').length, 12);
      assert.equal(Buffer.from(jwe.tag, 'base64url').length, 16);
      assert.equal(Buffer.from((await flattenedDecrypt(jwe, a.privateKey)).plaintext).toString(), 'secret-bytes');
    }
  }
});

test('resource errors: 401 TokenNotFound / TokenVerifierError / PluginInternalError, 404 PluginNotFound / InvalidRequestPath', async () => {
  const expect = async (path: string, headers: Record<string, string>, status: number, variant: string) => {
    const res = await fetch(kbs.url + path, { headers });
    assert.equal(res.status, status, path);
    assert.equal(((await res.json()) as { type: string }).type, ERR + variant);
  };
  await expect('/kbs/v0/resource/default/key/1', {}, 401, 'TokenNotFound');
  await expect('/kbs/v0/resource/default/key/1', { authorization: 'Bearer a.b.c' }, 401, 'TokenVerifierError');
  const a = await sampleAttest();
  await post('/kbs/v0/attest', a.body, a.cookie);
  await expect('/kbs/v0/resource/default/key/missing', { cookie: a.cookie }, 401, 'PluginInternalError');
  await expect('/kbs/v0/resource/default/key', { cookie: a.cookie }, 401, 'PluginInternalError');
  await expect('/kbs/v0/nosuch/a/b/c', {}, 404, 'PluginNotFound');
  await expect('/kbs/v0/', {}, 404, 'InvalidRequestPath');
});

test('scripts/dev-kbs: --help, and a served URL on stdout', async () => {
  const bin = new URL('../../scripts/dev-kbs', import.meta.url).pathname;
  const help = spawn(bin, ['--help']);
  let text = '';
  help.stdout.on('data', (c: Buffer) => (text += c));
  assert.equal(await new Promise((r) => help.on('exit', r)), 0);
  assert.match(text, /Usage: scripts\/dev-kbs --resources DIR/);
  assert.match(text, /WITHOUT verifying/);
  const bad = spawn(bin, ['--port', '1']);
  assert.equal(await new Promise((r) => bad.on('exit', r)), 2);

  const child = spawn(bin, ['--resources', kbs.dir, '--tdx-test-mode']);
  let stderr = '';
  child.stderr.on('data', (c: Buffer) => (stderr += c));
  const url = await new Promise<string>((resolve) => createInterface({ input: child.stdout }).once('line', resolve));
  assert.match(url, /^http:\/\/127\.0\.0\.1:\d+$/);
  assert.equal((await fetch(`${url}/kbs/v0/auth`, { method: 'POST', body: JSON.stringify({ version: '0.4.0', tee: 'tdx', 'extra-params': '' }) })).status, 200);
  child.kill('SIGTERM');
  assert.equal(await new Promise((r) => child.on('exit', r)), 0);
  assert.match(stderr, /TDX TEST MODE/);
  assert.match(stderr, /POST \/kbs\/v0\/auth 200/);
});
