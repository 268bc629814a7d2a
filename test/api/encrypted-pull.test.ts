// Encrypted images end to end: encrypted by skopeo (JWE) or by tee-agent
// encrypt (CoCo packets, ctr-hmac and gcm-stream), pushed to Debian's
// docker-registry, pulled and decrypted by the real daemon, with the KEK from
// the development KBS after sample attestation or from the offline store.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Code } from '../../agent/src/errors.ts';
import { startAgent, type AgentProcess } from '../helpers/agent.ts';
import { runCli } from '../helpers/cli.ts';
import { startKbs, type TestKbs } from '../helpers/kbs.ts';
import { removeTree } from '../helpers/mounts.ts';
import { startRegistry, type TestRegistry } from '../helpers/registry.ts';
import { diffTrees, snapshotTree } from '../helpers/tree.ts';
import { buildImage, readBlob, sampleLayers, tagInLayout, writeBlob } from '../fixtures/images.ts';
import { keyPair, offlineKeyFile, type KeyPairFiles } from '../fixtures/keys.ts';
import { skopeo } from '../fixtures/oci-image.ts';
import { hasCode } from '../helpers/assert.ts';


describe('encrypted image pull', () => {
  let work: string;
  let reg: TestRegistry;
  let kbs: TestKbs;
  let rsa: KeyPairFiles;
  let ec: KeyPairFiles;
  let kek: Buffer;
  let kekFile: string;
  let plainRootfs: string;
  const agents: AgentProcess[] = [];
  const kid = 'kbs:///default/image-kek/demo';

  const config = (kbc: string, extra = ''): string =>
    [
      '[attestation]',
      'tee = "sample"',
      `eventlog_path = ${JSON.stringify(join(work, 'eventlog'))}`,
      `initdata = ${JSON.stringify(join(work, 'no-initdata.toml'))}`,
      kbc,
      '[image]',
      `bundle_base = ${JSON.stringify(join(work, 'containers'))}`,
      extra,
      '[registry]',
      `insecure = [${JSON.stringify(reg.host)}]`,
    ].join('\n');
  const viaKbs = (): string => `[kbc]\nname = "cc_kbc"\nurl = ${JSON.stringify(kbs.url)}`;

  const start = async (cfg: string, dir?: string): Promise<AgentProcess> => {
    const a = await startAgent({ config: cfg, ...(dir ? { dir } : {}) });
    agents.push(a);
    return a;
  };
  const freshBundle = (name: string): string => {
    const b = join(work, 'bundles', name);
    mkdirSync(b, { recursive: true });
    return b;
  };
  const pull = (a: AgentProcess, image: string, bundle: string) =>
    a.ttrpc().then((c) => c.call<{ manifest_digest: string }>('api.ImagePullService', 'PullImage', { image_url: `${reg.host}/${image}`, bundle_path: bundle }, { timeoutMs: 120_000 }));
  const assertSameTree = (rootfs: string): void => assert.deepEqual(diffTrees(snapshotTree(rootfs), snapshotTree(plainRootfs)), []);

  before(async () => {
    work = mkdtempSync(join(tmpdir(), 'tee-agent-encpull-'));
    reg = await startRegistry();
    const layout = join(work, 'layout');
    buildImage(layout, 'plain', sampleLayers(join(work, 'src')));
    await reg.push(`oci:${layout}:plain`, 'enc/plain:v1');
    rsa = keyPair(work, 'rsa', 'rsa');
    ec = keyPair(work, 'ec', 'p256');
    await skopeo('copy', '--encryption-key', `jwe:${rsa.publicPem}`, `oci:${layout}:plain`, `oci:${layout}:rsa`);
    await skopeo('copy', '--encryption-key', `jwe:${ec.publicPem}`, `oci:${layout}:plain`, `oci:${layout}:ec`);
    kek = Buffer.alloc(32, 0x5a);
    kekFile = join(work, 'kek');
    writeFileSync(kekFile, kek, { mode: 0o600 });
    for (const cipher of ['ctr-hmac', 'gcm-stream']) {
      const r = await runCli(['encrypt', '--input', `oci:${layout}:plain`, '--output', `oci:${layout}:coco-${cipher}`, '--recipient', `kbs:${kid.slice(4)}`, '--kek', kekFile, '--cipher', cipher]);
      assert.equal(r.code, 0, r.stderr);
    }
    for (const tag of ['rsa', 'ec', 'coco-ctr-hmac', 'coco-gcm-stream']) await reg.push(`oci:${layout}:${tag}`, `enc/${tag}:v1`);
    kbs = await startKbs({ resources: { [kid.slice('kbs:///'.length)]: kek } });

    // The plain image's rootfs, pulled by the same code, is what every decrypted pull must equal.
    const a = await start(config('[kbc]\nname = "offline_fs_kbc"'));
    plainRootfs = join(freshBundle('plain'), 'rootfs');
    await pull(a, 'enc/plain:v1', join(work, 'bundles', 'plain'));
  });

  after(async () => {
    try {
      for (const a of agents) if (a.child.exitCode === null) await a.stop();
    } finally {
      await kbs?.stop();
      await reg?.stop();
      removeTree(work);
    }
  });

  test('skopeo JWE images (RSA-OAEP and ECDH-ES) pull and decrypt; the rootfs equals the plain image', async () => {
    const a = await start(config('[kbc]\nname = "offline_fs_kbc"', `decryption_keys = [${JSON.stringify(rsa.privatePem)}, ${JSON.stringify(ec.privatePem)}]`));
    for (const tag of ['rsa', 'ec']) {
      const b = freshBundle(`jwe-${tag}`);
      const res = await pull(a, `enc/${tag}:v1`, b);
      assert.match(res.manifest_digest, /^sha256:[0-9a-f]{64}$/);
      assertSameTree(join(b, 'rootfs'));
    }
  });

  test('CoCo packet images (ctr-hmac, gcm-stream) decrypt with the KEK from the dev KBS after sample attestation', async () => {
    const before = { attest: kbs.stats.attest, resource: kbs.stats.resource };
    const a = await start(config(viaKbs()));
    for (const cipher of ['ctr-hmac', 'gcm-stream']) {
      const b = freshBundle(`kbs-${cipher}`);
      await pull(a, `enc/coco-${cipher}:v1`, b);
      assertSameTree(join(b, 'rootfs'));
    }
    assert.equal(kbs.stats.attest - before.attest, 1, 'one attestation, its token reused');
    // The KEK came from the KBS once per encrypted layer: the key the pull's check() unwrapped is the one that decrypts.
    assert.equal(kbs.stats.resource - before.resource, 2 * 3, 'one KBS resource request per encrypted layer and pull');
    assert.ok(!a.stderr().includes(kek.toString('base64')), 'the KEK never reaches the log');
  });

  test('the same packet image through the offline key store', async () => {
    const keys = offlineKeyFile(work, { [kid.slice('kbs:///'.length)]: kek });
    const a = await start(config(`[kbc]\nname = "offline_fs_kbc"\noffline_keys = ${JSON.stringify(keys)}`));
    const b = freshBundle('offline');
    await pull(a, 'enc/coco-gcm-stream:v1', b);
    assertSameTree(join(b, 'rootfs'));
  });

  test('no usable key: FAILED_PRECONDITION naming the layer and its annotations; a stored layer is not handed out without the key', async () => {
    const dir = join(work, 'shared-agent');
    mkdirSync(dir);
    const withKey = await start(config('[kbc]\nname = "offline_fs_kbc"', `decryption_keys = [${JSON.stringify(rsa.privatePem)}]`), dir);
    await pull(withKey, 'enc/rsa:v1', freshBundle('with-key'));
    await withKey.stop();
    // Same layer store, no key: the layers are stored, decrypted, but the pull must still prove it holds the key.
    const without = await start(config('[kbc]\nname = "offline_fs_kbc"'), dir);
    const b = freshBundle('without-key');
    await assert.rejects(pull(without, 'enc/rsa:v1', b), hasCode(Code.FAILED_PRECONDITION, /layer .*sha256:[0-9a-f]{64}.*org\.opencontainers\.image\.enc\.keys\.jwe/));
    assert.equal(existsSync(join(b, 'rootfs')), false);
    const c = await without.ttrpc();
    assert.deepEqual(await c.call('grpc.Health', 'Check', { service: '' }), { status: 'SERVING' });
  });

  test('a tampered ctr-hmac layer whose manifest was re-pointed at it fails at the MAC and leaves nothing in the bundle', async () => {
    // The attacker controls the registry and the (unsigned) manifest: the descriptor digest matches the altered
    // ciphertext, so only the HMAC over the ciphertext can catch it, at EOF, after plaintext was unpacked to staging.
    const layout = join(work, 'layout');
    const index = JSON.parse(readFileSync(join(layout, 'index.json'), 'utf8')) as { manifests: Array<{ digest: string; annotations?: Record<string, string> }> };
    const desc = index.manifests.find((m) => m.annotations?.['org.opencontainers.image.ref.name'] === 'coco-ctr-hmac')!;
    const manifest = JSON.parse(readBlob(layout, desc.digest).toString()) as { layers: Array<{ digest: string; size: number }> };
    const layer = manifest.layers.at(-1)!;
    const blob = Buffer.from(readBlob(layout, layer.digest));
    blob[Math.floor(blob.length / 2)]! ^= 0x01;
    layer.digest = writeBlob(layout, blob);
    const bytes = Buffer.from(JSON.stringify(manifest));
    tagInLayout(layout, 'tampered', { mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: writeBlob(layout, bytes), size: bytes.length });
    await reg.push(`oci:${layout}:tampered`, 'enc/tampered:v1');

    const a = await start(config(viaKbs()));
    const b = freshBundle('tampered');
    await assert.rejects(pull(a, 'enc/tampered:v1', b), hasCode(Code.DATA_LOSS, /authentication|MAC|HMAC/i));
    assert.equal(existsSync(join(b, 'rootfs')), false, 'no bundle');
    const layers = a.logs.filter((l) => l.msg === 'layer fetched').length;
    assert.ok(layers < manifest.layers.length, 'the tampered layer never completed');
  });

  test('tee-agent pull --decryption-key decrypts a skopeo EC image', async () => {
    const b = join(work, 'bundles', 'cli');
    const r = await runCli(['pull', `${reg.host}/enc/ec:v1`, '--bundle', b, '--insecure-registry', reg.host, '--decryption-key', ec.privatePem, '--work-dir', join(work, 'cli-store'), '--cmdline', '/dev/null', '--no-progress', '--config', writeCfg()]);
    assert.equal(r.code, 0, r.stderr);
    const line = JSON.parse(r.stdout) as { layers: number; manifest_digest: string };
    assert.equal(line.layers, 3);
    assertSameTree(join(b, 'rootfs'));
    removeTree(b);
  });

  const writeCfg = (): string => {
    const f = join(work, 'cli.toml');
    writeFileSync(f, `[attestation]\ntee = "sample"\neventlog_path = ${JSON.stringify(join(work, 'eventlog'))}\ninitdata = ${JSON.stringify(join(work, 'none.toml'))}\n`);
    return f;
  };
});
