// The image pull services of the real daemon over both transports: CDH
// api.ImagePullService and kata grpc.Image, the pause bundle, bad requests,
// concurrent pulls coalescing, and a kill -9 in the middle of a pull.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startAgent, type AgentProcess } from '../helpers/agent.ts';
import { startRegistry, type TestRegistry } from '../helpers/registry.ts';
import { blobGet, startFaultProxy, type FaultProxy } from '../helpers/fault-proxy.ts';
import { buildImage, sampleLayers, writeTree, pseudoRandom, type BuiltImage } from '../fixtures/images.ts';
import { Code } from '../../agent/src/errors.ts';
import { removeTree } from '../helpers/mounts.ts';
import { hasCode } from '../helpers/assert.ts';


describe('image pull API', () => {
  let work: string;
  let reg: TestRegistry;
  let proxy: FaultProxy;
  let sample: BuiltImage;
  let big: BuiltImage;
  let pauseDir: string;
  const agents: AgentProcess[] = [];

  const config = (extra = ''): string =>
    [
      '[log]',
      'level = "info"',
      '[image]',
      `bundle_base = ${JSON.stringify(join(work, 'containers'))}`,
      `pause_bundle = ${JSON.stringify(pauseDir)}`,
      extra,
      '[registry]',
      `insecure = [${JSON.stringify(reg.host)}, ${JSON.stringify(proxy.host)}]`,
      'retries = 2',
      'backoff_ms = 20',
      'idle_timeout_ms = 3000',
    ].join('\n');

  const start = async (opts: { dir?: string; extra?: string } = {}): Promise<AgentProcess> => {
    const a = await startAgent({ config: config(opts.extra), ...(opts.dir ? { dir: opts.dir } : {}) });
    agents.push(a);
    return a;
  };

  before(async () => {
    work = mkdtempSync(join(tmpdir(), 'api-image-'));
    reg = await startRegistry();
    proxy = await startFaultProxy({ upstream: reg.url });
    const layout = join(work, 'layout');
    sample = buildImage(layout, 'sample', sampleLayers(join(work, 'src')));
    big = buildImage(layout, 'big', [
      { dir: writeTree(join(work, 'b1'), [{ type: 'file', path: 'one.bin', content: pseudoRandom(4_000_000, 'one') }]), compression: 'gzip' },
      { dir: writeTree(join(work, 'b2'), [{ type: 'file', path: 'two.bin', content: pseudoRandom(4_000_000, 'two') }]), compression: 'zstd' },
    ]);
    await reg.push(`oci:${layout}:sample`, 'api/sample:v1');
    await reg.push(`oci:${layout}:big`, 'api/big:v1');
    pauseDir = join(work, 'pause_bundle');
    mkdirSync(join(pauseDir, 'rootfs'), { recursive: true });
    writeFileSync(join(pauseDir, 'config.json'), JSON.stringify({ ociVersion: '1.0.2', process: { args: ['/pause'] } }));
    writeFileSync(join(pauseDir, 'rootfs', 'pause'), '#!/bin/sh\n', { mode: 0o755 });
  });

  after(async () => {
    try {
      for (const a of agents) if (a.child.exitCode === null) await a.stop();
    } finally {
      await proxy?.close();
      await reg?.stop();
      removeTree(work);
    }
  });

  test('kata grpc.Image/PullImage over ttrpc and CDH PullImage over gRPC', async () => {
    const agent = await start();
    const tt = await agent.ttrpc();
    const image = `${reg.host}/api/sample:v1`;
    const res = await tt.call('grpc.Image', 'PullImage', { image, container_id: 'c1', source_creds: '' }, { timeoutMs: 60_000 });
    assert.deepEqual(res, { image_ref: image });
    assert.equal(readFileSync(join(work, 'containers', 'c1', 'rootfs', 'etc', 'hostname'), 'utf8'), 'sample-2\n');

    const bundle = join(work, 'cdh-bundle');
    mkdirSync(bundle);
    const cdh = await agent.grpcCall<{ manifest_digest: string }>('api.ImagePullService', 'PullImage', { image_url: image, bundle_path: bundle });
    assert.equal(cdh.manifest_digest, sample.manifestDigest);
    assert.ok(existsSync(join(bundle, 'rootfs', 'opt', 'app', 'run')));
    const pulled = agent.logs.filter((l) => l.msg === 'image pulled');
    assert.equal(pulled.length, 2);
    assert.equal(pulled[1]!.bytes, 0, 'the second pull reused every stored layer');
    await agent.stop();
  });

  test('pause containers get the built-in pause bundle without touching a registry', async () => {
    const agent = await start();
    const tt = await agent.ttrpc();
    const before = proxy.requests.length;
    const res = await tt.call('grpc.Image', 'PullImage', { image: `${proxy.host}/pause:3.9`, container_id: 'pause-sandbox-1', source_creds: '' });
    assert.deepEqual(res, { image_ref: `${proxy.host}/pause:3.9` });
    assert.ok(existsSync(join(work, 'containers', 'pause-sandbox-1', 'rootfs', 'pause')));
    assert.ok(existsSync(join(work, 'containers', 'pause-sandbox-1', 'config.json')));
    assert.equal(proxy.requests.length, before);
    await agent.stop();
  });

  test('bad requests are INVALID_ARGUMENT; failures keep the daemon serving', async () => {
    const agent = await start();
    const tt = await agent.ttrpc();
    await assert.rejects(tt.call('api.ImagePullService', 'PullImage', { image_url: '', bundle_path: '/x' }), hasCode(Code.INVALID_ARGUMENT, /image_url/));
    await assert.rejects(tt.call('api.ImagePullService', 'PullImage', { image_url: 'a/b', bundle_path: 'relative' }), hasCode(Code.INVALID_ARGUMENT, /absolute/));
    await assert.rejects(tt.call('api.ImagePullService', 'PullImage', { image_url: 'UPPER/x', bundle_path: '/tmp/x' }), hasCode(Code.INVALID_ARGUMENT, /bad image reference/));
    await assert.rejects(tt.call('grpc.Image', 'PullImage', { image: 'a/b', container_id: '../etc', source_creds: '' }), hasCode(Code.INVALID_ARGUMENT, /container id/));
    await assert.rejects(tt.call('grpc.Image', 'PullImage', { image: 'a/b', container_id: 'c2', source_creds: 'no-colon' }), hasCode(Code.INVALID_ARGUMENT, /source_creds/));
    await assert.rejects(
      tt.call('grpc.Image', 'PullImage', { image: `${reg.host}/api/absent:v1`, container_id: 'c3', source_creds: '' }, { timeoutMs: 30_000 }),
      hasCode(Code.NOT_FOUND, /not found/),
    );
    assert.ok(!existsSync(join(work, 'containers', 'c3', 'rootfs')));
    assert.deepEqual(await tt.call('grpc.Health', 'Check', { service: '' }), { status: 'SERVING' });
    assert.ok(!agent.stderr().includes('no-colon'), 'source_creds never reach the log');
    await agent.stop();
  });

  test('signature verification enabled without a policy: PERMISSION_DENIED, no blob fetched', async () => {
    const agent = await start({ extra: 'enable_signature_verification = true' });
    const before = proxy.requests.length;
    await assert.rejects(
      agent.grpcCall('api.ImagePullService', 'PullImage', { image_url: `${proxy.host}/api/sample:v1`, bundle_path: join(work, 'sig-bundle') }),
      (e: { code?: number; details?: string }) => e.code === Code.PERMISSION_DENIED && /no policy is configured/.test(e.details ?? ''),
    );
    // The verifier runs after the manifest and before anything else.
    assert.deepEqual(proxy.requests.slice(before).filter((r) => r.path.includes('/blobs/')), []);
    await agent.stop();
  });

  test('two concurrent pulls of the same image download each layer once', async () => {
    const agent = await start();
    const tt = await agent.ttrpc();
    const image = `${proxy.host}/api/big:v1`;
    // Slow the layers a little so the two pulls overlap.
    const stop = proxy.addRule({ match: blobGet(), fault: { kind: 'trickle', bytesPerSec: 8_000_000 } });
    try {
      await Promise.all([
        tt.call('grpc.Image', 'PullImage', { image, container_id: 'same-1', source_creds: '' }, { timeoutMs: 60_000 }),
        tt.call('grpc.Image', 'PullImage', { image, container_id: 'same-2', source_creds: '' }, { timeoutMs: 60_000 }),
      ]);
    } finally {
      stop();
    }
    for (const l of big.layers) assert.equal(proxy.blobGets(l.digest).length, 1, `one GET of ${l.digest}`);
    for (const c of ['same-1', 'same-2']) assert.equal(readFileSync(join(work, 'containers', c, 'rootfs', 'one.bin')).length, 4_000_000);
    await agent.stop();
  });

  test('kill -9 mid-pull, then restart: a clean store and a successful re-pull', async () => {
    const dir = join(work, 'killed-agent');
    mkdirSync(dir);
    const agent = await start({ dir });
    const tt = await agent.ttrpc();
    const image = `${proxy.host}/api/big:v1`;
    const layer = big.layers[1]!;
    // One layer arrives, the other hangs after its headers: the pull is mid-way when killed.
    const stop = proxy.addRule({ match: blobGet(layer.digest), fault: { kind: 'hang' } });
    const pending = tt.call('grpc.Image', 'PullImage', { image, container_id: 'killed', source_creds: '' }, { timeoutMs: 60_000 }).catch((e: Error) => e);
    const deadline = Date.now() + 20_000;
    while (!agent.logs.some((l) => l.msg === 'layer stored') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    assert.ok(agent.logs.some((l) => l.msg === 'layer stored'), 'one layer was stored before the kill');
    agent.child.kill('SIGKILL');
    await pending;
    stop();

    const again = await start({ dir });
    assert.deepEqual(readdirSync(join(dir, 'work', 'staging')), [], 'staging cleaned at start');
    assert.ok(!existsSync(join(work, 'containers', 'killed', 'rootfs', 'one.bin')), 'no half-built bundle');
    const tt2 = await again.ttrpc();
    await tt2.call('grpc.Image', 'PullImage', { image, container_id: 'killed', source_creds: '' }, { timeoutMs: 60_000 });
    assert.equal(readFileSync(join(work, 'containers', 'killed', 'rootfs', 'two.bin')).length, 4_000_000);
    await again.stop();
  });
});

describe('image pull API: HTTPS registry with token auth', () => {
  let work: string;
  let reg: TestRegistry;
  let img: BuiltImage;

  before(async () => {
    work = mkdtempSync(join(tmpdir(), 'api-image-tls-'));
    reg = await startRegistry({
      tls: true,
      tokenAuth: { users: { dave: 'd4ve:secret' }, grant: (user, _repo, actions) => (user ? actions.filter((a) => a === 'pull' || user === 'pusher') : []) },
    });
    const layout = join(work, 'layout');
    img = buildImage(layout, 't', [{ dir: writeTree(join(work, 'l'), [{ type: 'file', path: 'private', content: 'only with creds\n' }]), compression: 'gzip' }]);
    await reg.push(`oci:${layout}:t`, 'private/app:v1');
  });

  after(async () => {
    try {
      await reg?.stop();
    } finally {
      removeTree(work);
    }
  });

  test('source_creds and auth.json reach the token server; ca_bundle makes the certificate trusted', async () => {
    writeFileSync(join(work, 'auth.json'), JSON.stringify({ auths: { [reg.host]: { auth: Buffer.from('dave:d4ve:secret').toString('base64') } } }));
    const base = ['[image]', `bundle_base = ${JSON.stringify(join(work, 'containers'))}`, '[registry]', `ca_bundle = ${JSON.stringify(reg.caFile!)}`, 'retries = 1'];
    const image = `${reg.host}/private/app:v1`;

    const plain = await startAgent({ config: base.join('\n') });
    try {
      const tt = await plain.ttrpc();
      await assert.rejects(tt.call('grpc.Image', 'PullImage', { image, container_id: 'anon', source_creds: '' }, { timeoutMs: 30_000 }), hasCode(Code.UNAUTHENTICATED));
      await assert.rejects(tt.call('grpc.Image', 'PullImage', { image, container_id: 'wrong', source_creds: 'dave:nope' }, { timeoutMs: 30_000 }), hasCode(Code.UNAUTHENTICATED, /token server/));
      await tt.call('grpc.Image', 'PullImage', { image, container_id: 'creds', source_creds: 'dave:d4ve:secret' }, { timeoutMs: 30_000 });
      assert.equal(readFileSync(join(work, 'containers', 'creds', 'rootfs', 'private'), 'utf8'), 'only with creds\n');
      assert.ok(!plain.stderr().includes('d4ve'), 'credentials never reach the log');
    } finally {
      await plain.stop();
    }

    const withAuth = await startAgent({ config: [base[0], `auth = ${JSON.stringify(join(work, 'auth.json'))}`, ...base.slice(1)].join('\n') });
    try {
      const res = await withAuth.grpcCall<{ manifest_digest: string }>('api.ImagePullService', 'PullImage', { image_url: image, bundle_path: join(work, 'cdh') });
      assert.equal(res.manifest_digest, img.manifestDigest);
      assert.equal(reg.token!.requests.at(-1)!.user, 'dave');
    } finally {
      await withAuth.stop();
    }
  });
});
