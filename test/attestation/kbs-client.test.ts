// Full RCAR flows of the KBS client against the development KBS, and each
// protocol error the client must turn into a clear, typed failure.

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import type { Attester } from '../../agent/src/attestation/attester.ts';
import { KbsDenied, KbsTimeout, KbsUnavailable, ResourceDecryptFailed } from '../../agent/src/attestation/errors.ts';
import { parseInitData } from '../../agent/src/attestation/initdata.ts';
import { KbsClient, type KbsClientOptions } from '../../agent/src/attestation/kbs-client.ts';
import { SampleAttester } from '../../agent/src/attestation/sample.ts';
import { TdxAttester, tdxPaths } from '../../agent/src/attestation/tdx.ts';
import type { TeeKeyAlgorithm } from '../../agent/src/attestation/tee-key.ts';
import { resolveConfig } from '../../agent/src/config/index.ts';
import { Code } from '../../agent/src/errors.ts';
import { createLogger } from '../../agent/src/log.ts';
import { parseResourceUri, ResourceNotFound } from '../../agent/src/resource.ts';
import { INITDATA } from '../fixtures/initdata.ts';
import { installFakeTdxKernel, makeFakeTdxTree } from '../fixtures/tdx-guest.ts';
import { startKbs, type TestKbs } from '../helpers/kbs.ts';

const KEY = Buffer.from('00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff', 'hex');
const uri = parseResourceUri('kbs:///default/key/1');
const kbss: TestKbs[] = [];
const clients: KbsClient[] = [];
/** Everything the clients logged, to check no secret ever reaches a log line. */
let logged = '';
const log = createLogger('debug', new Writable({ write: (c, _e, cb) => ((logged += String(c)), cb()) }));

after(async () => {
  await Promise.all(clients.map((c) => c.close()));
  await Promise.all(kbss.map((k) => k.stop()));
  assert.ok(!logged.includes(KEY.toString('hex')) && !logged.includes(KEY.toString('base64')), 'no key in the logs');
  assert.ok(!/eyJ[\w-]+\.eyJ[\w-]+\.[\w-]+/.test(logged), 'no JWT in the logs');
});

async function kbs(opts: Parameters<typeof startKbs>[0] = {}): Promise<TestKbs> {
  const k = await startKbs({ resources: { 'default/key/1': KEY, 'default/policy/p': '{"default":[]}' }, ...opts });
  kbss.push(k);
  return k;
}

function client(k: { url: string; caPath?: string | undefined }, opts: Partial<KbsClientOptions> = {}): KbsClient {
  const c = new KbsClient({
    url: k.url,
    ca: k.caPath ? readFileSync(k.caPath) : undefined,
    attester: new SampleAttester(),
    teeKeyAlgorithm: 'ECDH-ES+A256KW-P256',
    timeoutMs: 2000,
    retries: 3,
    retryDelayMs: 20,
    resourceAttempts: 3,
    log,
    ...opts,
  });
  clients.push(c);
  return c;
}

const algorithms: TeeKeyAlgorithm[] = ['ECDH-ES+A256KW-P256', 'ECDH-ES+A256KW-P521', 'RSA-OAEP-256'];
for (const https of [false, true]) {
  for (const alg of algorithms) {
    test(`RCAR over ${https ? 'HTTPS' : 'HTTP'} with ${alg}: one attestation, then the token is reused`, async () => {
      const k = await kbs({ https });
      const c = client(k, { teeKeyAlgorithm: alg });
      assert.deepEqual(await c.getResource(uri), KEY);
      assert.equal((await c.getResource(parseResourceUri('kbs:///default/policy/p'))).toString(), '{"default":[]}');
      assert.deepEqual(await c.getResource(uri), KEY);
      assert.deepEqual([k.stats.auth, k.stats.attest, k.stats.resource, c.attestations], [1, 1, 3, 1]);
      assert.equal(k.stats.refusals.length, 0);
    });
  }
}

test('HTTPS without the KBS CA fails the TLS check: UNAVAILABLE after the bounded retries', async () => {
  const k = await kbs({ https: true });
  const c = client({ url: k.url }, { retries: 2 });
  await assert.rejects(c.getResource(uri), (e: KbsUnavailable) => e instanceof KbsUnavailable && e.code === Code.UNAVAILABLE && /CERT|certificate|SELF_SIGNED|UNABLE/i.test(e.message));
  assert.equal(k.stats.auth, 0);
});

test('concurrent first requests share one attestation', async () => {
  const k = await kbs();
  const c = client(k);
  const all = await Promise.all(Array.from({ length: 8 }, () => c.getResource(uri)));
  assert.ok(all.every((b) => b.equals(KEY)));
  assert.equal(k.stats.attest, 1);
  assert.equal(k.stats.auth, 1);
});

test('an expired token is replaced by a new attestation before use', async () => {
  // exp is whole seconds (now rounded down + 2), so the token lives 1 to 2 s.
  const k = await kbs({ tokenTtlS: 2 });
  const c = client(k);
  const t1 = await c.token();
  await c.getResource(uri);
  assert.equal(k.stats.attest, 1);
  await new Promise((r) => setTimeout(r, 2050));
  assert.deepEqual(await c.getResource(uri), KEY);
  assert.equal(k.stats.attest, 2);
  assert.notEqual(await c.token(), t1);
});

test('an expired session with a valid token still works through the bearer token', async () => {
  const k = await kbs({ sessionTimeoutS: 0.2 });
  const c = client(k);
  await c.getResource(uri);
  await new Promise((r) => setTimeout(r, 300));
  assert.deepEqual(await c.getResource(uri), KEY);
  assert.equal(k.stats.attest, 1);
});

test('a 401 for the token (KBS restarted) re-attests once and succeeds', async () => {
  const k = await kbs();
  const c = client(k);
  await c.getResource(uri);
  await k.restart();
  assert.deepEqual(await c.getResource(uri), KEY);
  assert.equal(k.stats.attest, 2);
  assert.match(k.stats.refusals.join('\n'), /TokenVerifierError/);
});

test('tokens refused every time: bounded re-attestation, then PERMISSION_DENIED', async () => {
  const k = await kbs();
  const c = client(k, { resourceAttempts: 3 });
  k.faults.rejectTokens = true;
  await assert.rejects(c.getResource(uri), (e: KbsDenied) => e instanceof KbsDenied && e.code === Code.PERMISSION_DENIED && /after 3 attestations/.test(e.message));
  assert.equal(k.stats.attest, 3);
});

test('protocol version mismatch is refused at auth, without retries', async () => {
  const k = await kbs();
  k.faults.version = '0.5.0';
  const c = client(k);
  await assert.rejects(c.getResource(uri), (e: KbsDenied) => e.code === Code.PERMISSION_DENIED && /Version Mismatch: expect =0\.5\.0 while the request is 0\.4\.0/.test(e.message));
  assert.equal(k.stats.auth, 0);
  assert.equal(k.stats.refusals.length, 1);
});

test('a nonce that does not match the session is refused at attest', async () => {
  const k = await kbs();
  k.faults.nonce = 'mismatch';
  const c = client(k);
  await assert.rejects(c.getResource(uri), (e: KbsDenied) => e.code === Code.PERMISSION_DENIED && /RCAR handshake Attest failed/.test(e.message));
  assert.equal(k.stats.attest, 0);
  assert.match(k.stats.refusals.at(-1)!, /nonce mismatch/);
});

test('sample evidence must match exactly: a report_data padded to 64 bytes is refused', async () => {
  const k = await kbs();
  const padded: Attester = {
    tee: 'sample',
    measurements: undefined,
    evidence: async (d) => ({ svn: '1', report_data: Buffer.concat([d, Buffer.alloc(64 - d.length)]).toString('base64') }),
    bindInitData: async () => 'unsupported',
  };
  await assert.rejects(client(k, { attester: padded }).getResource(uri), KbsDenied);
  assert.match(k.stats.refusals.at(-1)!, /report_data does not match/);
});

for (const fault of ['tag', 'key', 'ciphertext', 'header', 'other-key'] as const) {
  test(`a resource response ${fault === 'other-key' ? 'sealed to another key' : `with a tampered ${fault}`} is DATA_LOSS, and the next clean one decrypts`, async () => {
    const k = await kbs();
    const c = client(k);
    await c.token();
    k.faults.jwe = fault;
    await assert.rejects(c.getResource(uri), (e: ResourceDecryptFailed) => e instanceof ResourceDecryptFailed && e.code === Code.DATA_LOSS && !e.message.includes(KEY.toString('hex')));
    k.faults.jwe = undefined;
    assert.deepEqual(await c.getResource(uri), KEY);
    assert.equal(k.stats.attest, 1, 'a bad response does not cost a new attestation');
  });
}

test('missing resources and unknown plugins are NOT_FOUND; a policy denial is PERMISSION_DENIED', async () => {
  const k = await kbs({ allow: ({ path }) => path[1] !== 'secret' });
  k.put('default/secret/x', 'no');
  const c = client(k);
  await assert.rejects(c.getResource(parseResourceUri('kbs:///default/key/nope')), (e: ResourceNotFound) => e.code === Code.NOT_FOUND);
  await assert.rejects(c.getResource(parseResourceUri('kbs+nosuch:///a/b/c')), (e: ResourceNotFound) => e.code === Code.NOT_FOUND);
  await assert.rejects(c.getResource(parseResourceUri('kbs:///default/secret/x')), (e: KbsDenied) => e.code === Code.PERMISSION_DENIED && /policy/.test(e.message));
  assert.equal(k.stats.attest, 1, 'none of these needs a new attestation');
});

test('KBS down, then up: the bounded retries find it', async () => {
  const probe = await startKbs();
  const { port, url } = probe;
  await probe.stop();
  const c = client({ url }, { retries: 10, retryDelayMs: 100 });
  const late = new Promise<TestKbs>((resolve) => setTimeout(() => resolve(kbs({ port, resources: { 'default/key/1': KEY } })), 250));
  assert.deepEqual(await c.getResource(uri), KEY);
  assert.equal((await late).stats.attest, 1);
  assert.match(logged, /KBS exchange failed; retrying/);
});

test('KBS down for good: UNAVAILABLE after exactly kbc.retries attempts', async () => {
  const probe = await startKbs();
  await probe.stop();
  const c = client({ url: probe.url }, { retries: 3, retryDelayMs: 50 });
  const t0 = performance.now();
  await assert.rejects(c.getResource(uri), (e: KbsUnavailable) => e.code === Code.UNAVAILABLE && /ECONNREFUSED/.test(e.message));
  const ms = performance.now() - t0;
  assert.ok(ms >= 100 && ms < 2000, `two retry delays, got ${ms} ms`);
});

test('5xx answers are retried, then UNAVAILABLE', async () => {
  const k = await kbs();
  k.faults.status = 503;
  await assert.rejects(client(k, { retries: 2 }).getResource(uri), (e: KbsUnavailable) => e.code === Code.UNAVAILABLE && /503/.test(e.message));
  assert.equal(k.stats.refusals.length, 2);
});

test('a slow KBS times out: DEADLINE_EXCEEDED after the bounded attempts', async () => {
  const k = await kbs();
  k.faults.delayMs = 400;
  const c = client(k, { timeoutMs: 100, retries: 2, retryDelayMs: 10 });
  const t0 = performance.now();
  await assert.rejects(c.getResource(uri), (e: KbsTimeout) => e instanceof KbsTimeout && e.code === Code.DEADLINE_EXCEEDED);
  assert.ok(performance.now() - t0 < 1000);
  k.faults.delayMs = 0;
  assert.deepEqual(await c.getResource(uri), KEY, 'and works again once the KBS is fast');
});

test('a caller that gives up gets CANCELLED', async () => {
  const k = await kbs();
  k.faults.delayMs = 300;
  const ac = new AbortController();
  const p = client(k).getResource(uri, ac.signal);
  setTimeout(() => ac.abort(), 50);
  await assert.rejects(p, (e: { code: number }) => e.code === Code.CANCELLED);
});

test('init-data is sent as {format:"toml", body} and lands in the token claims', async () => {
  const k = await kbs();
  const c = client(k, { initdata: parseInitData(INITDATA) });
  const token = await c.token();
  const claims = JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString()) as { submods: { cpu0: Record<string, { init_data_claims?: { body_sha384: string } }> } };
  const annotated = claims.submods.cpu0['ear.veraison.annotated-evidence']!;
  assert.equal(annotated.init_data_claims?.body_sha384, createHash('sha384').update(INITDATA).digest('hex'));
});

test('TDX: quote evidence from configfs-tsm, REPORTDATA and MRCONFIGID checked by the KBS (test mode)', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'kbs-tdx-'));
  const initdata = parseInitData(INITDATA);
  const tree = makeFakeTdxTree(dir, { mrConfigId: initdata.digest });
  const uninstall = installFakeTdxKernel(tree);
  try {
    const cfg = resolveConfig({ file: { path: 't', text: `[attestation]\nsysfs_root = "${tree.sysfsRoot}"\nconfigfs_root = "${tree.configfsRoot}"\n` } });
    const attester = await TdxAttester.open(tdxPaths(cfg.attestation), join(dir, 'eventlog'));
    const k = await kbs({ tdxTestMode: true });
    assert.deepEqual(await client(k, { attester, initdata }).getResource(uri), KEY);
    assert.equal(k.stats.attest, 1);
    // Another init-data than the one measured into MRCONFIGID is refused.
    await assert.rejects(client(k, { attester, initdata: parseInitData(INITDATA + '# changed\n') }).getResource(uri), KbsDenied);
    assert.match(k.stats.refusals.at(-1)!, /MRCONFIGID does not match/);
    // A KBS without a TDX verifier refuses TDX evidence.
    const strict = await kbs();
    await assert.rejects(client(strict, { attester }).getResource(uri), KbsDenied);
    assert.match(strict.stats.refusals.at(-1)!, /no verifier for tee tdx/);
  } finally {
    uninstall();
  }
});
