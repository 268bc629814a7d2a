// Verification inside the real pull: in-process through the config, the
// puller and the fault proxy's request log (nothing but the manifest and
// signature material is fetched before the verdict), through a mirror, and
// through the daemon's PullImage and `tee-agent pull --policy`.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Code } from '../../agent/src/errors.ts';
import { loadConfig } from '../../agent/src/config/index.ts';
import { createPuller, httpSettings } from '../../agent/src/image/setup.ts';
import { LayerStore } from '../../agent/src/image/store.ts';
import { parseManifest } from '../../agent/src/image/manifest.ts';
import { createSignatureVerifier, RejectReason } from '../../agent/src/signature/index.ts';
import { startAgent } from '../helpers/agent.ts';
import { startKbs, type TestKbs } from '../helpers/kbs.ts';
import { runCli } from '../helpers/cli.ts';
import { startFaultProxy, type FaultProxy } from '../helpers/fault-proxy.ts';
import { startStaticServer, type StaticServer } from '../helpers/static-server.ts';
import { log, rejectedWith, startSignatureEnv, writeRegistriesD, type SignatureEnv } from '../helpers/signature-env.ts';
import { cosignKey, cosignSign, type CosignKey } from '../fixtures/cosign.ts';
import { createGpgHome, type GpgHome } from '../fixtures/gpg.ts';

const ORIGIN = 'registry.example.com/ns/app';

describe('signature verification in the pull', () => {
  let env: SignatureEnv;
  let proxy: FaultProxy;
  let http: StaticServer;
  let key: CosignKey;
  let gpg: GpgHome;
  let regd: string;
  let lookaside: string;
  let signed: { image: string; digest: string };
  let unsigned: { image: string; digest: string };
  let n = 0;

  /** The blobs a pull of this manifest would fetch: its config and layers. */
  const imageBlobs = async (repo: string, digest: string): Promise<string[]> => {
    const m = (await env.source(repo).getManifest(digest))!;
    const parsed = parseManifest(m.bytes, m.contentType, repo);
    assert.equal(parsed.kind, 'manifest');
    return parsed.kind === 'manifest' ? [parsed.config.digest, ...parsed.layers.map((l) => l.digest)] : [];
  };
  const policyFile = (policy: unknown): string => {
    const file = join(env.work, `policy-${++n}.json`);
    writeFileSync(file, JSON.stringify(policy));
    return file;
  };
  const both = () => [
    { type: 'sigstoreSigned', keyData: key.publicPem },
    { type: 'signedBy', keyType: 'GPGKeys', keyData: gpg.publicKey(true).toString() },
  ];

  /** A pull as the daemon does it: config → verifier → puller. */
  async function pull(image: string, toml: string[]): Promise<{ bundle: string; result: Awaited<ReturnType<ReturnType<typeof createPuller>['pull']>> }> {
    const file = join(env.work, `config-${++n}.toml`);
    writeFileSync(file, ['[image]', `work_dir = ${JSON.stringify(join(env.work, `store-${n}`))}`, ...toml, '[registry]', `insecure = [${JSON.stringify(proxy.host)}]`, 'retries = 1', 'backoff_ms = 10'].join('\n'));
    const config = loadConfig({ configPath: file, cmdlinePath: '/dev/null' });
    const store = await LayerStore.open(config.image.work_dir, log, { bundleMode: 'copy' });
    const verifier = createSignatureVerifier(config.image, { log, http: httpSettings(config) });
    const puller = createPuller(config, log, { store, ...(verifier ? { verifier } : {}) });
    const bundle = join(env.work, `bundle-${n}`);
    try {
      return { bundle, result: await puller.pull({ image, bundlePath: bundle }, { signal: AbortSignal.timeout(60_000), log }) };
    } finally {
      await puller.deps.registry.close();
      await verifier?.close();
      await store.close();
    }
  }
  const verifying = (policy: unknown, extra: string[] = []): string[] => ['enable_signature_verification = true', `policy = ${JSON.stringify(policyFile(policy))}`, `registries_d = ${JSON.stringify(regd)}`, ...extra];

  before(async () => {
    env = await startSignatureEnv();
    proxy = await startFaultProxy({ upstream: env.reg.url });
    key = cosignKey();
    gpg = createGpgHome();
    lookaside = join(env.work, 'lookaside');
    mkdirSync(lookaside);
    http = await startStaticServer(lookaside);
    regd = writeRegistriesD(join(env.work, 'registries.d'), {
      'default.yaml': `default-docker:\n  lookaside: ${http.url}\n  lookaside-staging: file://${lookaside}\n`,
    });
    // Pushed through the proxy so that the names signed are the names pulled.
    signed = { image: `${proxy.host}/e2e/app:v1`, digest: await env.pushImage('e2e/app', 'v1', { host: proxy.host, signBy: gpg, registriesD: regd }) };
    await cosignSign(env.reg.url, 'e2e/app', signed.digest, signed.image, key.privateKey);
    unsigned = { image: `${proxy.host}/e2e/unsigned:v1`, digest: await env.pushImage('e2e/unsigned', 'v1', { host: proxy.host }) };
  });
  after(async () => {
    await gpg?.close();
    await http?.close();
    await proxy?.close();
    await env?.close();
  });

  test('a signed image passes cosign and simple signing (http lookaside) and is unpacked', async () => {
    const { bundle, result } = await pull(signed.image, verifying({ default: both() }));
    assert.equal(result.manifestDigest, signed.digest);
    assert.match(readFileSync(join(bundle, 'rootfs', 'id'), 'utf8'), /e2e\/app:v1/);
  });

  test('a rejected image: PERMISSION_DENIED before its config or any layer is fetched, no bundle', async () => {
    const blobs = await imageBlobs('e2e/unsigned', unsigned.digest);
    const from = proxy.requests.length;
    let bundlePath = '';
    await assert.rejects(
      pull(unsigned.image, verifying({ default: both() })).then((r) => (bundlePath = r.bundle)),
      rejectedWith(RejectReason.NoSignature, /sigstoreSigned: no cosign signature found/),
    );
    const fetched = proxy.requests.slice(from).map((r) => r.path);
    assert.ok(fetched.some((p) => p.endsWith(`/manifests/v1`)), 'the manifest was read');
    assert.ok(fetched.some((p) => p.includes('.sig')), 'the signature tag was looked up');
    for (const b of blobs) assert.ok(!fetched.some((p) => p.endsWith(b)), `${b} was not fetched`);
    assert.equal(bundlePath, '');
    assert.ok(!existsSync(join(env.work, `bundle-${n}`)));

    // The wrong key, likewise.
    const from2 = proxy.requests.length;
    await assert.rejects(pull(signed.image, verifying({ default: [{ type: 'sigstoreSigned', keyData: cosignKey().publicPem }] })), rejectedWith(RejectReason.BadSignature));
    const blobs2 = await imageBlobs('e2e/app', signed.digest);
    for (const b of blobs2) assert.ok(!proxy.requests.slice(from2).some((r) => r.path.endsWith(b)), `${b} was not fetched`);
  });

  test('verification off: no policy is consulted', async () => {
    const { result } = await pull(unsigned.image, [`policy = ${JSON.stringify(policyFile({ default: [{ type: 'reject' }] }))}`]);
    assert.equal(result.manifestDigest, unsigned.digest);
  });

  test('through a mirror, the policy applies to the name asked for', async () => {
    const digest = await env.pushImage('mirror/app', 'v1');
    await cosignSign(env.reg.url, 'mirror/app', digest, `${ORIGIN}:v1`, key.privateKey);
    const conf = join(env.work, 'registries.conf');
    writeFileSync(conf, `[[registry]]\nprefix = "registry.example.com/ns"\nlocation = "registry.example.com/ns"\n[[registry.mirror]]\nlocation = "${proxy.host}/mirror"\ninsecure = true\n`);
    const registries = `registries = ${JSON.stringify(conf)}`;
    const cosignOnly = (scope: string) => ({ default: [{ type: 'reject' }], transports: { docker: { [scope]: [{ type: 'sigstoreSigned', keyData: key.publicPem }] } } });
    const { result } = await pull(`${ORIGIN}:v1`, verifying(cosignOnly('registry.example.com'), [registries]));
    assert.equal(result.reference, `${ORIGIN}:v1`);
    assert.equal(result.source, `${proxy.host}/mirror/app:v1`);
    assert.equal(result.manifestDigest, digest);
    // Trusting the mirror's host does not cover the image.
    await assert.rejects(pull(`${ORIGIN}:v1`, verifying(cosignOnly(proxy.host), [registries])), rejectedWith(RejectReason.RejectedByPolicy, /scope default/));
  });

  test('a multi-platform image signed at the index', async () => {
    const { index } = await env.pushIndex('e2e/multi', 'v1');
    await cosignSign(env.reg.url, 'e2e/multi', index, `${proxy.host}/e2e/multi:v1`, key.privateKey);
    const { result } = await pull(`${proxy.host}/e2e/multi:v1`, verifying({ default: [{ type: 'sigstoreSigned', keyData: key.publicPem }] }, ['platform = "linux/amd64"']));
    assert.equal(result.indexDigest, index);
  });

  // The policy and the cosign key are kbs:/// resources: from the offline store, and from the dev KBS after sample attestation.
  for (const backend of ['offline store', 'dev KBS'] as const) {
    test(`the daemon: policy and key as kbs:/// resources from the ${backend}, both transports`, async () => {
      const policy = { default: [{ type: 'reject' }], transports: { docker: { [proxy.host]: [{ type: 'sigstoreSigned', keyPath: 'kbs:///default/cosign-public-key/test' }] } } };
      const resources = { 'default/security-policy/test': JSON.stringify(policy), 'default/cosign-public-key/test': key.publicPem };
      let kbc: string[];
      let kbs: TestKbs | undefined;
      if (backend === 'dev KBS') {
        kbs = await startKbs({ resources });
        kbc = ['[kbc]', 'name = "cc_kbc"', `url = ${JSON.stringify(kbs.url)}`, '[attestation]', 'tee = "sample"', `eventlog_path = ${JSON.stringify(join(env.work, 'eventlog'))}`, `initdata = ${JSON.stringify(join(env.work, 'none.toml'))}`];
      } else {
        const file = join(env.work, 'offline-resources.json');
        writeFileSync(file, JSON.stringify(Object.fromEntries(Object.entries(resources).map(([k, v]) => [k, Buffer.from(v).toString('base64')]))));
        kbc = ['[kbc]', 'name = "offline_fs_kbc"', `offline_keys = ${JSON.stringify(join(env.work, 'no-keys.json'))}`, `offline_resources = ${JSON.stringify(file)}`];
      }
      const tag = backend === 'dev KBS' ? 'kbs' : 'offline';
      const agent = await startAgent({
        config: [...kbc, '[image]', `bundle_base = ${JSON.stringify(join(env.work, `containers-${tag}`))}`, '[registry]', `insecure = [${JSON.stringify(proxy.host)}]`].join('\n'),
        // As kata passes them.
        cmdline: 'agent.enable_signature_verification=true agent.image_policy_file=kbs:///default/security-policy/test',
      });
      try {
        const bundle = join(env.work, `daemon-bundle-${tag}`);
        mkdirSync(bundle);
        const ok = await agent.grpcCall<{ manifest_digest: string }>('api.ImagePullService', 'PullImage', { image_url: signed.image, bundle_path: bundle });
        assert.equal(ok.manifest_digest, signed.digest);
        await assert.rejects(
          agent.grpcCall('api.ImagePullService', 'PullImage', { image_url: unsigned.image, bundle_path: join(env.work, `daemon-bundle-2-${tag}`) }),
          (e: { code?: number; details?: string }) => e.code === Code.PERMISSION_DENIED && /no signature/.test(e.details ?? ''),
        );
        const tt = await agent.ttrpc();
        await assert.rejects(tt.call('grpc.Image', 'PullImage', { image: unsigned.image, container_id: 'unsigned-1', source_creds: '' }, { timeoutMs: 30_000 }), (e: { code?: number }) => e.code === Code.PERMISSION_DENIED);
        assert.ok(!existsSync(join(env.work, `containers-${tag}`, 'unsigned-1', 'rootfs')));
        const res = await tt.call('grpc.Image', 'PullImage', { image: signed.image, container_id: 'signed-1', source_creds: '' }, { timeoutMs: 30_000 });
        assert.deepEqual(res, { image_ref: signed.image });
        const line = agent.logs.find((l) => l.msg === 'image rejected by signature policy');
        assert.equal(line?.scope, proxy.host);
        assert.ok(!agent.stderr().includes(key.publicPem.split('\n')[1]!), 'no key material in the log');
        if (kbs) assert.equal(kbs.stats.attest, 1, 'one attestation for the policy and the key');
      } finally {
        await agent.stop();
        await kbs?.stop();
      }
    });
  }

  test('tee-agent pull --policy FILE --registries-d DIR', async () => {
    const policy = policyFile({ default: [{ type: 'signedBy', keyType: 'GPGKeys', keyData: gpg.publicKey(true).toString() }] });
    const run = (image: string) => {
      const args = ['pull', image, '--bundle', join(env.work, `cli-bundle-${++n}`), '--work-dir', join(env.work, `cli-store-${n}`), '--cmdline', '/dev/null', '--insecure-registry', proxy.host, '--no-progress', '--policy', policy, '--registries-d', regd];
      return runCli(args);
    };
    const ok = await run(signed.image);
    assert.equal(ok.code, 0, ok.stderr);
    assert.equal((JSON.parse(ok.stdout) as { manifest_digest: string }).manifest_digest, signed.digest);
    const denied = await run(unsigned.image);
    assert.equal(denied.code, 1);
    assert.match(denied.stderr, /rejected by signature policy \(scope default\): no signature/);
    assert.equal(denied.stdout, '');
  });
});
