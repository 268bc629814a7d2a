// GetResource, UnsealSecret and the AA service through the real daemon,
// over ttrpc and gRPC, against the development KBS; and no secret ever
// reaches the daemon's logs or files.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ServiceError } from '@grpc/grpc-js';
import { parseTdxQuote } from '../../agent/src/attestation/tdx-quote.ts';
import { Code } from '../../agent/src/errors.ts';
import type { TtrpcError } from '../../agent/src/server/ttrpc/client.ts';
import { INITDATA } from '../fixtures/initdata.ts';
import { envelope, seal, signingKey, vault } from '../fixtures/sealed.ts';
import { fakeRtmr, makeFakeTdxTree } from '../fixtures/tdx-guest.ts';
import { startAgent, type AgentProcess } from '../helpers/agent.ts';
import { startKbs, type TestKbs } from '../helpers/kbs.ts';

const KEY = Buffer.from('6b6579206d6174657269616c2073686f756c64206e65766572206c65616b2121', 'hex');
const KEK = Buffer.from('a1'.repeat(32), 'hex');
const SECRET = 'vault-plaintext-7c1f';
const ENVELOPE_SECRET = 'envelope-plaintext-93ad';
const AA = 'attestation_agent.AttestationAgentService';
const PRELOAD = new URL('../fixtures/tdx-kernel-preload.ts', import.meta.url).pathname;

let kbs: TestKbs;
let httpsKbs: TestKbs;
let agent: AgentProcess;
let sealedVault: string;
let sealedEnvelope: string;
const agents: AgentProcess[] = [];
const tokens: string[] = [];
const work = mkdtempSync(join(tmpdir(), 'api-attestation-'));

function config(k: { url: string; caPath?: string | undefined }, dir: string, extra = ''): string {
  return `[log]\nlevel = "debug"\n[kbc]\nname = "cc_kbc"\nurl = "${k.url}"\n${k.caPath ? `cert = "${k.caPath}"\n` : ''}retry_delay_ms = 20\n[attestation]\ntee = "sample"\neventlog_path = "${dir}/eventlog"\ninitdata = "${dir}/initdata.toml"\nsealed_secret_keys = "${dir}/keys"\n${extra}`;
}

async function agentFor(k: { url: string; caPath?: string | undefined }, extra = '', env?: NodeJS.ProcessEnv): Promise<AgentProcess> {
  const dir = mkdtempSync(join(work, 'agent-'));
  const a = await startAgent({ dir, config: config(k, dir, extra), env });
  agents.push(a);
  return a;
}

before(async () => {
  const key = await signingKey();
  const resources = { 'default/key/1': KEY, 'default/kek/1': KEK, 'default/secret/a': SECRET, 'default/sealed-key/1': JSON.stringify(key.jwk) };
  kbs = await startKbs({ resources, tdxTestMode: true });
  httpsKbs = await startKbs({ resources, https: true });
  sealedVault = await seal(vault('kbs:///default/secret/a'), key, 'kbs:///default/sealed-key/1');
  sealedEnvelope = await seal(envelope(KEK, 'kbs:///default/kek/1', Buffer.from(ENVELOPE_SECRET)), key, 'kbs:///default/sealed-key/1');
  agent = await agentFor(kbs);
});

after(async () => {
  const stderr = agents.map((a) => a.stderr()).join('\n');
  const files = agents.map((a) => a.dir);
  for (const a of agents) await a.stop();
  await kbs.stop();
  await httpsKbs.stop();
  // Secrets never leave in clear: not in any daemon log line, not in any file the daemons left.
  const forbidden = [KEY.toString('hex'), KEY.toString('base64'), KEY.toString('latin1'), KEK.toString('hex'), KEK.toString('base64'), SECRET, ENVELOPE_SECRET, ...tokens];
  assert.ok(stderr.length > 1000, 'the daemons did log');
  for (const s of forbidden) assert.ok(!stderr.includes(s), `a secret appeared in the daemon logs`);
  assert.ok(!/eyJ[\w-]+\.eyJ[\w-]+\.[\w-]+/.test(stderr), 'no JWT in the daemon logs');
  const walk = (d: string): string[] => {
    try {
      return readdirSync(d).flatMap((f) => (statSync(join(d, f)).isDirectory() ? walk(join(d, f)) : [join(d, f)]));
    } catch {
      return [];
    }
  };
  for (const f of walk(work)) {
    const text = readFileSync(f, 'latin1');
    for (const s of forbidden) assert.ok(!text.includes(s), `a secret appeared in ${f}`);
  }
});

test('GetResource over ttrpc and gRPC: one attestation serves every call', async () => {
  const tt = await agent.ttrpc();
  for (let i = 0; i < 3; i++) {
    const r = await tt.call<{ Resource: Buffer }>('api.GetResourceService', 'GetResource', { ResourcePath: 'kbs:///default/key/1' });
    assert.deepEqual(r.Resource, KEY);
    const g = await agent.grpcCall<{ Resource: Buffer }>('api.GetResourceService', 'GetResource', { ResourcePath: 'kbs:///default/key/1' });
    assert.deepEqual(g.Resource, KEY);
  }
  assert.equal(kbs.stats.attest, 1);
});

test('UnsealSecret over both transports: vault and envelope payloads', async () => {
  const tt = await agent.ttrpc();
  for (const [sealed, plain] of [[sealedVault, SECRET], [sealedEnvelope, ENVELOPE_SECRET]] as const) {
    const r = await tt.call<{ plaintext: Buffer }>('api.SealedSecretService', 'UnsealSecret', { secret: Buffer.from(sealed) });
    assert.equal(r.plaintext.toString(), plain);
    const g = await agent.grpcCall<{ plaintext: Buffer }>('api.SealedSecretService', 'UnsealSecret', { secret: Buffer.from(sealed) });
    assert.equal(g.plaintext.toString(), plain);
  }
  const forged = sealedVault.slice(0, -4) + (sealedVault.endsWith('AAAA') ? 'BBBB' : 'AAAA');
  await assert.rejects(tt.call('api.SealedSecretService', 'UnsealSecret', { secret: Buffer.from(forged) }), (e: TtrpcError) => e.code === Code.PERMISSION_DENIED);
  await assert.rejects(agent.grpcCall('api.SealedSecretService', 'UnsealSecret', { secret: Buffer.from('plain') }), (e: ServiceError) => e.code === Code.INVALID_ARGUMENT);
});

test('AA service on the sample TEE: tee type, evidence, token, measurements, initdata', async () => {
  const tt = await agent.ttrpc();
  assert.deepEqual(await tt.call(AA, 'GetTeeType', {}), { tee: 'sample' });
  assert.deepEqual(await agent.grpcCall(AA, 'GetTeeType', {}), { tee: 'sample' });
  const ev = await tt.call<{ Evidence: Buffer }>(AA, 'GetEvidence', { RuntimeData: Buffer.from('0102', 'hex') });
  assert.deepEqual(JSON.parse(ev.Evidence.toString()), { svn: '1', report_data: 'AQI=' });
  await assert.rejects(tt.call(AA, 'GetEvidence', { RuntimeData: Buffer.alloc(65) }), (e: TtrpcError) => e.code === Code.INVALID_ARGUMENT);
  for (const tok of [await tt.call<{ Token: Buffer }>(AA, 'GetToken', { TokenType: 'kbs' }), await agent.grpcCall<{ Token: Buffer }>(AA, 'GetToken', { TokenType: 'kbs' })]) {
    const { token, ...rest } = JSON.parse(tok.Token.toString()) as { token: string };
    assert.equal(token.split('.').length, 3);
    assert.deepEqual(rest, {}, 'the TEE private key is never handed out');
    tokens.push(token);
  }
  assert.equal(tokens[0], tokens[1], 'the cached token');
  await assert.rejects(tt.call(AA, 'GetToken', { TokenType: 'coco_as' }), (e: TtrpcError) => e.code === Code.INVALID_ARGUMENT);
  assert.deepEqual(await tt.call(AA, 'ExtendRuntimeMeasurement', { Domain: 'd', Operation: 'o', Content: 'c' }), { Result: 'NOT_SUPPORTED' });
  assert.deepEqual(await tt.call(AA, 'BindInitData', { Digest: Buffer.alloc(48, 1) }), {});
  assert.deepEqual(await agent.grpcCall(AA, 'GetAdditionalEvidence', { RuntimeData: Buffer.alloc(0) }), { Evidence: Buffer.alloc(0) });
});

test('errors keep their codes on both transports and the daemon keeps serving', async () => {
  const tt = await agent.ttrpc();
  const both = async (path: string, code: number) => {
    await assert.rejects(tt.call('api.GetResourceService', 'GetResource', { ResourcePath: path }), (e: TtrpcError) => e.code === code);
    await assert.rejects(agent.grpcCall('api.GetResourceService', 'GetResource', { ResourcePath: path }), (e: ServiceError) => e.code === code);
  };
  await both('kbs:///default/key/missing', Code.NOT_FOUND);
  await both('kbs:///only/two', Code.INVALID_ARGUMENT);
  await both('https://example/a/b/c', Code.INVALID_ARGUMENT);
  kbs.faults.jwe = 'tag';
  await both('kbs:///default/key/1', Code.DATA_LOSS);
  kbs.faults.jwe = undefined;
  const r = await tt.call<{ Resource: Buffer }>('api.GetResourceService', 'GetResource', { ResourcePath: 'kbs:///default/key/1' });
  assert.deepEqual(r.Resource, KEY);
});

test('HTTPS KBS with the configured CA', async () => {
  const a = await agentFor(httpsKbs);
  const tt = await a.ttrpc();
  const r = await tt.call<{ Resource: Buffer }>('api.GetResourceService', 'GetResource', { ResourcePath: 'kbs:///default/key/1' });
  assert.deepEqual(r.Resource, KEY);
  assert.equal(httpsKbs.stats.attest, 1);
  const g = await a.grpcCall<{ plaintext: Buffer }>('api.SealedSecretService', 'UnsealSecret', { secret: Buffer.from(sealedEnvelope) });
  assert.equal(g.plaintext.toString(), ENVELOPE_SECRET);
  assert.equal(httpsKbs.stats.attest, 1);
});

test('TDX (fake kernel): evidence, RTMR3 extension with event log, initdata binding, KBS resources', async () => {
  const root = mkdtempSync(join(work, 'tdx-'));
  const digest = createHash('sha384').update(INITDATA).digest();
  const tree = makeFakeTdxTree(root, { mrConfigId: digest });
  writeFileSync(join(root, 'initdata.toml'), INITDATA);
  const extra = `sysfs_root = "${tree.sysfsRoot}"\nconfigfs_root = "${tree.configfsRoot}"\n`;
  const env = { ...process.env, NODE_OPTIONS: `--import=${PRELOAD}`, TEE_AGENT_FAKE_TDX: root };
  // tee = "auto" detects the fake TDX guest; its initdata is bound at start.
  const dir = mkdtempSync(join(work, 'agent-'));
  const cfg = config(kbs, dir, extra).replace('tee = "sample"', 'tee = "auto"').replace(`initdata = "${dir}/initdata.toml"`, `initdata = "${root}/initdata.toml"`);
  const tdx = await startAgent({ dir, config: cfg, env });
  agents.push(tdx);
  const tt = await tdx.ttrpc();
  assert.deepEqual(await tt.call(AA, 'GetTeeType', {}), { tee: 'tdx' });
  const rd = Buffer.alloc(48, 0xab);
  const ev = JSON.parse((await tt.call<{ Evidence: Buffer }>(AA, 'GetEvidence', { RuntimeData: rd })).Evidence.toString()) as { quote: string; cc_eventlog: string | null };
  assert.deepEqual(parseTdxQuote(Buffer.from(ev.quote, 'base64')).body.reportData, Buffer.concat([rd, Buffer.alloc(16)]));
  assert.deepEqual(await tt.call(AA, 'ExtendRuntimeMeasurement', { Domain: 'github.com/confidential-containers', Operation: 'PullImage', Content: 'busybox' }), { Result: 'OK' });
  assert.notDeepEqual(fakeRtmr(root, 3), Buffer.alloc(48));
  assert.deepEqual(fakeRtmr(root, 2), Buffer.alloc(48));
  assert.deepEqual(await tdx.grpcCall(AA, 'ExtendRuntimeMeasurement', { Domain: 'd', Operation: 'o', Content: 'c', RegisterIndex: 9 }), { Result: 'OK' });
  assert.notDeepEqual(fakeRtmr(root, 2), Buffer.alloc(48), 'PCR 9 maps to RTMR2');
  assert.ok(readFileSync(join(dir, 'eventlog')).includes('PullImage busybox'));
  assert.deepEqual(await tt.call(AA, 'BindInitData', { Digest: digest }), {});
  await assert.rejects(tt.call(AA, 'BindInitData', { Digest: Buffer.alloc(48, 2) }), (e: TtrpcError) => e.code === Code.FAILED_PRECONDITION);
  const before = kbs.stats.attest;
  const r = await tt.call<{ Resource: Buffer }>('api.GetResourceService', 'GetResource', { ResourcePath: 'kbs:///default/key/1' });
  assert.deepEqual(r.Resource, KEY);
  assert.equal(kbs.stats.attest, before + 1, 'attested with a TDX quote (REPORTDATA and MRCONFIGID checked in test mode)');
});

test('an initdata digest that does not match MRCONFIGID stops the daemon at start', async () => {
  const root = mkdtempSync(join(work, 'tdx-bad-'));
  const tree = makeFakeTdxTree(root, { mrConfigId: Buffer.alloc(48, 7) });
  writeFileSync(join(root, 'initdata.toml'), INITDATA);
  const dir = mkdtempSync(join(work, 'agent-'));
  const cfg = config(kbs, dir, `sysfs_root = "${tree.sysfsRoot}"\nconfigfs_root = "${tree.configfsRoot}"\n`)
    .replace('tee = "sample"', 'tee = "tdx"')
    .replace(`initdata = "${dir}/initdata.toml"`, `initdata = "${root}/initdata.toml"`);
  await assert.rejects(
    startAgent({ dir, config: cfg, env: { ...process.env, NODE_OPTIONS: `--import=${PRELOAD}`, TEE_AGENT_FAKE_TDX: root } }),
    /exited with 1 before ready[\s\S]*initdata digest does not match MRCONFIGID/,
  );
});
