// The whole pull in-process against Debian's docker-registry: images built by
// GNU tar/zstd and by umoci, pushed by skopeo; the rootfs compared with
// `umoci unpack` of the same image; mirrors, hooks, hostile manifests and
// registry faults through the fault-injecting proxy.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createCipheriv, createDecipheriv, createHash, randomBytes } from 'node:crypto';
import { existsSync, linkSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLogger } from '../../agent/src/log.ts';
import { Code, AgentError } from '../../agent/src/errors.ts';
import { AuthFile } from '../../agent/src/image/auth.ts';
import type { EncryptedLayer, ImageVerifier, LayerDecryptor, LayerKey, VerifyRequest } from '../../agent/src/image/hooks.ts';
import { parsePlatform } from '../../agent/src/image/manifest.ts';
import { ImagePuller, type PullerDeps, type PullEvent, type PullSettings } from '../../agent/src/image/pull.ts';
import { EMPTY_REGISTRIES_CONF, parseRegistriesConf } from '../../agent/src/image/registries-conf.ts';
import { RegistryClient } from '../../agent/src/image/registry.ts';
import { DEFAULT_HTTP, type HttpSettings } from '../../agent/src/image/registry-http.ts';
import { LayerStore } from '../../agent/src/image/store.ts';
import { startRegistry, type TestRegistry } from '../helpers/registry.ts';
import { blobGet, manifestGet, startFaultProxy, type FaultProxy } from '../helpers/fault-proxy.ts';
import { diffTrees, snapshotTree } from '../helpers/tree.ts';
import { removeTree } from '../helpers/mounts.ts';
import { buildImage, buildIndex, buildWithUmoci, compress, OCI_LAYER, sampleLayers, tagInLayout, tarDirectory, umociReferenceRootfs, writeImageFromBlobs, writeTree, pseudoRandom, type BuiltImage } from '../fixtures/images.ts';
import { hasCode } from '../helpers/assert.ts';

const log = createLogger('silent');
const HTTP: HttpSettings = { ...DEFAULT_HTTP, retries: 2, backoffMs: 10, maxBackoffMs: 2000, idleTimeoutMs: 2000, lowSpeedBytesPerSec: 50_000, lowSpeedWindowMs: 400 };
const sha = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;


describe('pullImage against docker-registry', () => {
  let work: string;
  let reg: TestRegistry;
  let proxy: FaultProxy;
  let layout: string;
  let sample: BuiltImage;
  let umociDigest: string;
  let sampleRef: string;
  let indexDigest: string;
  let armManifest: string;
  let encrypted: { image: BuiltImage; key: Buffer; iv: Buffer };
  let stores: LayerStore[] = [];
  const clients: RegistryClient[] = [];
  let n = 0;

  async function puller(over: Partial<PullSettings> = {}, extra: Partial<PullerDeps> = {}, http: Partial<HttpSettings> = {}) {
    const store = await LayerStore.open(join(work, `store-${n++}`), log);
    stores.push(store);
    const registry = new RegistryClient({ ...HTTP, ...http }, log);
    clients.push(registry);
    const settings: PullSettings = {
      platform: parsePlatform('linux/amd64'),
      maxConcurrentLayers: 3,
      registries: EMPTY_REGISTRIES_CONF,
      insecureHosts: new Set([reg.host, proxy.host]),
      verifySignatures: false,
      layerRestarts: 2,
      decompressLimits: {},
      unpackLimits: { maxEntries: 100_000, maxFileSize: 1 << 30, maxTotalBytes: 4 * 2 ** 30 },
      ...over,
    };
    return { store, puller: new ImagePuller({ registry, store, settings, auth: async () => AuthFile.empty(), ...extra }) };
  }
  const bundle = (): string => join(work, `bundle-${n++}`);
  const pullOpts = (events?: PullEvent[]) => ({ signal: AbortSignal.timeout(60_000), log, ...(events ? { onEvent: (e: PullEvent) => events.push(e) } : {}) });

  before(async () => {
    work = mkdtempSync(join(tmpdir(), 'pull-test-'));
    reg = await startRegistry();
    proxy = await startFaultProxy({ upstream: reg.url });
    layout = join(work, 'layout');
    sample = buildImage(layout, 'sample', sampleLayers(join(work, 'src')));
    await reg.push(`oci:${layout}:sample`, 'test/sample:v1');
    sampleRef = await umociReferenceRootfs(layout, sample.manifestDigest, join(work, 'ref-sample'));

    // An image made by umoci itself: deletions become umoci's whiteouts.
    const umociLayout = join(work, 'umoci-layout');
    await buildWithUmoci(
      umociLayout,
      'u',
      [
        (root) => {
          mkdirSync(join(root, 'etc/app'), { recursive: true });
          writeFileSync(join(root, 'etc/app/keep'), 'keep\n');
          writeFileSync(join(root, 'etc/app/gone'), 'gone\n');
          mkdirSync(join(root, 'srv/data'), { recursive: true });
          writeFileSync(join(root, 'srv/data/a'), 'a\n');
          writeFileSync(join(root, 'bin-tool'), pseudoRandom(50_000, 'u'));
          linkSync(join(root, 'bin-tool'), join(root, 'bin-tool-link'));
          symlinkSync('etc/app/keep', join(root, 'keep-link'));
        },
        (root) => {
          unlinkSync(join(root, 'etc/app/gone'));
          rmSync(join(root, 'srv/data'), { recursive: true });
          mkdirSync(join(root, 'srv/data'));
          writeFileSync(join(root, 'srv/data/b'), 'b\n');
          writeFileSync(join(root, 'etc/app/new'), 'new\n');
        },
      ],
      work,
    );
    await reg.push(`oci:${umociLayout}:u`, 'test/umoci:v1');
    const umociIndex = JSON.parse(readFileSync(join(umociLayout, 'index.json'), 'utf8')) as { manifests: Array<{ digest: string }> };
    umociDigest = umociIndex.manifests[0]!.digest;
    await umociReferenceRootfs(umociLayout, umociDigest, join(work, 'umoci-ref'));

    const idx = buildIndex(layout, 'multi', [
      { platform: { os: 'linux', architecture: 'arm64' }, layers: [{ dir: writeTree(join(work, 'arm'), [{ type: 'file', path: 'arch', content: 'arm64\n' }]), compression: 'gzip' }] },
      { platform: { os: 'linux', architecture: 'amd64' }, layers: [{ dir: writeTree(join(work, 'amd'), [{ type: 'file', path: 'arch', content: 'amd64\n' }]), compression: 'zstd' }] },
    ]);
    indexDigest = idx.indexDigest;
    armManifest = idx.images[0]!.manifestDigest;
    await reg.push(`oci:${layout}:multi`, 'test/multi:v1', { all: true });

    // Docker v2s2 manifests: skopeo converts a gzip-only image.
    buildImage(layout, 'gz', [{ dir: writeTree(join(work, 'gz'), [{ type: 'file', path: 'docker', content: 'v2s2\n' }]), compression: 'gzip' }]);
    await reg.push(`oci:${layout}:gz`, 'test/docker:v1', { format: 'v2s2' });

    // A layer "encrypted" with AES-256-CTR for the decryption hook (not ocicrypt: the hook's plumbing is what is tested here).
    const key = randomBytes(32);
    const iv = randomBytes(16);
    const plainTar = tarDirectory(writeTree(join(work, 'enc'), [{ type: 'file', path: 'secret/data', content: 'plaintext inside\n' }]));
    const gz = compress(plainTar, 'gzip');
    const c = createCipheriv('aes-256-ctr', key, iv);
    const blob = Buffer.concat([c.update(gz), c.final()]);
    const encImage = writeImageFromBlobs(layout, [{ blob, diffId: sha(plainTar), mediaType: `${OCI_LAYER.gzip}+encrypted` }], {
      layerAnnotations: [{ 'org.opencontainers.image.enc.keys.jwe': 'ZmFrZQ==', 'org.opencontainers.image.enc.pubopts': 'e30=' }],
    });
    tagInLayout(layout, 'enc', { mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: encImage.manifestDigest, size: encImage.manifestBytes.length });
    await reg.push(`oci:${layout}:enc`, 'test/enc:v1');
    encrypted = { image: encImage, key, iv };
  });

  after(async () => {
    try {
      for (const c of clients) await c.close();
      for (const s of stores) {
        for (const b of s.bundles()) await s.removeBundle(b.bundlePath);
        await s.close();
      }
    } finally {
      await proxy?.close();
      await reg?.stop();
      removeTree(work);
    }
  });

  test('a three-layer image (gzip, zstd, none; whiteouts, opaque dir, links) equals umoci unpack', async () => {
    const { puller: p } = await puller();
    const b = bundle();
    const events: PullEvent[] = [];
    const r = await p.pull({ image: `${reg.host}/test/sample:v1`, bundlePath: b }, pullOpts(events));
    assert.equal(r.manifestDigest, sample.manifestDigest);
    assert.equal(r.layers, 3);
    assert.equal(r.bytes, sample.layers.reduce((s, l) => s + l.size, 0));
    assert.equal(r.reference, `${reg.host}/test/sample:v1`);
    const expected = snapshotTree(sampleRef);
    assert.deepEqual(diffTrees(snapshotTree(join(b, 'rootfs')), expected), []);
    assert.ok(events.some((e) => e.type === 'resolved'));
    assert.equal(events.filter((e) => e.type === 'layer' && e.state === 'done').length, 3);
  });

  test('an image built by umoci (umoci whiteouts) equals umoci unpack', async () => {
    const { puller: p } = await puller();
    const b = bundle();
    await p.pull({ image: `${reg.host}/test/umoci:v1`, bundlePath: b }, pullOpts());
    const expected = snapshotTree(join(work, 'umoci-ref', 'umoci-ref-bundle', 'rootfs'));
    assert.deepEqual(diffTrees(snapshotTree(join(b, 'rootfs')), expected), []);
    assert.ok(!existsSync(join(b, 'rootfs/etc/app/gone')));
    assert.ok(!existsSync(join(b, 'rootfs/srv/data/a')));
  });

  test('Docker v2s2 manifests, references by digest', async () => {
    const { puller: p } = await puller();
    const r = await p.pull({ image: `${reg.host}/test/docker:v1`, bundlePath: bundle() }, pullOpts());
    assert.equal(r.layers, 1);
    await p.pull({ image: `${reg.host}/test/sample:v1`, bundlePath: bundle() }, pullOpts());
    const b = bundle();
    const byDigest = await p.pull({ image: `${reg.host}/test/sample@${sample.manifestDigest}`, bundlePath: b }, pullOpts());
    assert.equal(byDigest.manifestDigest, sample.manifestDigest);
    assert.equal(byDigest.bytes, 0, 'every layer was already in this store');
  });

  test('an index: the configured platform is picked and both digests are kept', async () => {
    const { puller: p } = await puller();
    const b = bundle();
    const r = await p.pull({ image: `${reg.host}/test/multi:v1`, bundlePath: b }, pullOpts());
    assert.equal(r.indexDigest, indexDigest);
    assert.equal(readFileSync(join(b, 'rootfs/arch'), 'utf8'), 'amd64\n');
    const { puller: arm } = await puller({ platform: parsePlatform('linux/arm64') });
    const b2 = bundle();
    const r2 = await arm.pull({ image: `${reg.host}/test/multi:v1`, bundlePath: b2 }, pullOpts());
    assert.equal(r2.manifestDigest, armManifest);
    assert.equal(readFileSync(join(b2, 'rootfs/arch'), 'utf8'), 'arm64\n');
    const { puller: s390 } = await puller({ platform: parsePlatform('linux/s390x') });
    await assert.rejects(s390.pull({ image: `${reg.host}/test/multi:v1`, bundlePath: bundle() }, pullOpts()), hasCode(Code.NOT_FOUND, /linux\/s390x.*linux\/arm64, linux\/amd64/));
  });

  test('mirrors are tried first, in order; the verifier sees the name the user asked for', async () => {
    const badMirror = await startFaultProxy({ upstream: reg.url });
    badMirror.addRule({ match: () => true, fault: { kind: 'status', status: 404 } });
    try {
      const conf = parseRegistriesConf(
        `[[registry]]\nprefix = "example.test/team"\nlocation = "${reg.host}/test"\ninsecure = true\n[[registry.mirror]]\nlocation = "${badMirror.host}/test"\ninsecure = true\n[[registry.mirror]]\nlocation = "${proxy.host}/test"\ninsecure = true\n`,
        'registries.conf',
      );
      const seen: VerifyRequest[] = [];
      const verifier: ImageVerifier = { verify: async (r) => void seen.push(r) };
      const { puller: p } = await puller({ registries: conf, verifySignatures: true }, { verifier });
      const before = proxy.requests.length;
      const r = await p.pull({ image: 'example.test/team/sample:v1', bundlePath: bundle() }, pullOpts());
      assert.equal(r.reference, 'example.test/team/sample:v1');
      assert.equal(r.source, `${proxy.host}/test/sample:v1`);
      assert.ok(badMirror.requests.length >= 1, 'the first mirror was tried');
      assert.ok(proxy.requests.slice(before).some((q) => blobGet()(q)), 'layers came from the second mirror');
      assert.equal(seen.length, 1);
      assert.equal(`${seen[0]!.reference.registry}/${seen[0]!.reference.repository}`, 'example.test/team/sample');
      assert.equal(seen[0]!.source.reference.registry, proxy.host);
      assert.equal(seen[0]!.manifestDigest, sample.manifestDigest);
      assert.equal(sha(seen[0]!.manifest), sample.manifestDigest);
    } finally {
      await badMirror.close();
    }
  });

  test('signature verification: refused up front without a verifier; a refusing verifier stops the pull before any blob', async () => {
    const { puller: none } = await puller({ verifySignatures: true });
    const before = proxy.requests.length;
    await assert.rejects(none.pull({ image: `${proxy.host}/test/sample:v1`, bundlePath: bundle() }, pullOpts()), hasCode(Code.FAILED_PRECONDITION, /no signature verifier/));
    assert.equal(proxy.requests.length, before, 'not a single registry request');

    class Denied extends AgentError {
      constructor() {
        super(Code.PERMISSION_DENIED, 'policy rejects this image');
      }
    }
    const { puller: p } = await puller({ verifySignatures: true }, { verifier: { verify: async () => Promise.reject(new Denied()) } });
    const b = bundle();
    const from = proxy.requests.length;
    await assert.rejects(p.pull({ image: `${proxy.host}/test/sample:v1`, bundlePath: b }, pullOpts()), hasCode(Code.PERMISSION_DENIED, /policy rejects/));
    assert.equal(proxy.requests.slice(from).filter((q) => q.path.includes('/blobs/')).length, 0, 'no config or layer fetched');
    assert.ok(!existsSync(join(b, 'rootfs')));
  });

  test('an encrypted layer without a decryptor fails before download, naming the layer and its annotations', async () => {
    const { puller: p } = await puller();
    const from = proxy.requests.length;
    await assert.rejects(
      p.pull({ image: `${proxy.host}/test/enc:v1`, bundlePath: bundle() }, pullOpts()),
      hasCode(Code.FAILED_PRECONDITION, new RegExp(`layer 0 \\(${encrypted.image.layers[0]!.digest}.*enc\\.keys\\.jwe, org\\.opencontainers\\.image\\.enc\\.pubopts`)),
    );
    assert.equal(proxy.requests.slice(from).filter((q) => q.path.includes('/blobs/')).length, 0);
  });

  test('the decryption hook sits between the descriptor digest and decompression; each checked key is disposed when the pull ends', async () => {
    const calls: string[] = [];
    const checks: string[] = [];
    let disposed = 0;
    const keyed = (key: Buffer) => (layer: EncryptedLayer): LayerKey => ({
      open: async (l) => {
        calls.push(l.descriptor.digest);
        assert.equal(l.descriptor.digest, layer.descriptor.digest);
        return { stream: createDecipheriv('aes-256-ctr', key, encrypted.iv), mediaType: l.descriptor.mediaType.replace(/\+encrypted$/, '') };
      },
      dispose: () => void disposed++,
    });
    const decryptor: LayerDecryptor = {
      check: async (layer) => {
        checks.push(layer.descriptor.digest);
        return keyed(encrypted.key)(layer);
      },
    };
    const { puller: p } = await puller({}, { decryptor });
    const b = bundle();
    await p.pull({ image: `${reg.host}/test/enc:v1`, bundlePath: b }, pullOpts());
    assert.deepEqual(calls, [encrypted.image.layers[0]!.digest]);
    assert.deepEqual(checks, [encrypted.image.layers[0]!.digest]);
    assert.equal(disposed, 1);
    // Already in the store: nothing is decrypted again, but the key is still checked first, and disposed unused.
    await p.pull({ image: `${reg.host}/test/enc:v1`, bundlePath: bundle() }, pullOpts());
    assert.equal(calls.length, 1);
    assert.equal(checks.length, 2);
    assert.equal(disposed, 2);
    assert.equal(readFileSync(join(b, 'rootfs/secret/data'), 'utf8'), 'plaintext inside\n');
    // A wrong key yields garbage: the pull fails (gzip or diff_id), no bundle appears, and the key is still disposed.
    const wrong: LayerDecryptor = { check: async (layer) => keyed(randomBytes(32))(layer) };
    const { puller: bad } = await puller({}, { decryptor: wrong });
    const b2 = bundle();
    await assert.rejects(bad.pull({ image: `${reg.host}/test/enc:v1`, bundlePath: b2 }, pullOpts()), (e: AgentError) => e.code === Code.INVALID_ARGUMENT || e.code === Code.DATA_LOSS);
    assert.ok(!existsSync(join(b2, 'rootfs')));
    assert.equal(disposed, 3);
  });

  test('wrong bytes in a layer fail with DATA_LOSS and leave no bundle', async () => {
    const layer = sample.layers[2]!;
    const stop = proxy.addRule({ match: blobGet(layer.digest), fault: { kind: 'corrupt', offset: 5000 } });
    try {
      const { puller: p } = await puller();
      const b = bundle();
      await assert.rejects(p.pull({ image: `${proxy.host}/test/sample:v1`, bundlePath: b }, pullOpts()), hasCode(Code.DATA_LOSS, new RegExp(layer.digest.slice(7, 20))));
      assert.ok(!existsSync(join(b, 'rootfs')));
    } finally {
      stop();
    }
  });

  test('a reset mid-blob resumes; a registry ignoring Range restarts the layer; 429 and 5xx are retried', async () => {
    const layer = sample.layers[2]!;
    const stops = [
      proxy.addRule({ match: blobGet(layer.digest), fault: { kind: 'reset', afterBytes: 300_000 }, times: 1 }),
      proxy.addRule({ match: blobGet(sample.layers[0]!.digest), fault: { kind: 'truncate', afterBytes: 100_000 }, times: 1 }),
      proxy.addRule({ match: blobGet(sample.layers[0]!.digest), fault: { kind: 'ignore-range' } }),
      proxy.addRule({ match: blobGet(sample.layers[1]!.digest), fault: { kind: 'status', status: 429, retryAfter: '0' }, times: 1 }),
      proxy.addRule({ match: manifestGet(), fault: { kind: 'status', status: 502 }, times: 1 }),
    ];
    try {
      const { puller: p } = await puller();
      const b = bundle();
      const from = proxy.requests.length;
      const events: PullEvent[] = [];
      await p.pull({ image: `${proxy.host}/test/sample:v1`, bundlePath: b }, pullOpts(events));
      const expected = snapshotTree(sampleRef);
      assert.deepEqual(diffTrees(snapshotTree(join(b, 'rootfs')), expected), []);
      const gets = (d: string) => proxy.requests.slice(from).filter((q) => q.method === 'GET' && q.path.endsWith(d));
      assert.equal(gets(layer.digest).length, 2);
      assert.match(String(gets(layer.digest)[1]!.headers.range), /^bytes=\d+-$/);
      assert.equal(gets(sample.layers[0]!.digest).length, 3, 'cut, refused resume (200), full restart');
      assert.ok(events.some((e) => e.type === 'layer' && e.state === 'retrying'));
    } finally {
      for (const s of stops) s();
    }
  });

  test('a trickling registry times out with DEADLINE_EXCEEDED and leaves no bundle', async () => {
    const stop = proxy.addRule({ match: blobGet(sample.layers[2]!.digest), fault: { kind: 'trickle', bytesPerSec: 5000 } });
    try {
      const { puller: p } = await puller({}, {}, { retries: 1 });
      const b = bundle();
      await assert.rejects(p.pull({ image: `${proxy.host}/test/sample:v1`, bundlePath: b }, pullOpts()), hasCode(Code.DEADLINE_EXCEEDED));
      assert.ok(!existsSync(join(b, 'rootfs')));
    } finally {
      stop();
    }
  });

  test('hostile manifests are refused with clear errors', async () => {
    const good = JSON.parse(sample.manifestBytes.toString()) as Record<string, unknown>;
    const cases: Array<[string, Buffer, Record<string, string>, number, RegExp]> = [
      ['ambiguous', Buffer.from(JSON.stringify({ ...good, manifests: [] })), { 'content-type': 'application/vnd.oci.image.manifest.v1+json' }, Code.INVALID_ARGUMENT, /ambiguous/],
      ['schema 1', Buffer.from(JSON.stringify({ ...good, schemaVersion: 1 })), { 'content-type': 'application/vnd.oci.image.manifest.v1+json' }, Code.INVALID_ARGUMENT, /schemaVersion 1/],
      ['type mismatch', sample.manifestBytes, { 'content-type': 'application/vnd.docker.distribution.manifest.v2+json' }, Code.INVALID_ARGUMENT, /does not match/],
      ['too big', Buffer.alloc(5 << 20, 0x20), { 'content-type': 'application/vnd.oci.image.manifest.v1+json' }, Code.INVALID_ARGUMENT, /limit/],
      ['bad digest header', sample.manifestBytes, { 'content-type': 'application/vnd.oci.image.manifest.v1+json', 'docker-content-digest': `sha256:${'0'.repeat(64)}` }, Code.DATA_LOSS, /Docker-Content-Digest/],
      ['not json', Buffer.from('<html>'), { 'content-type': 'application/vnd.oci.image.manifest.v1+json' }, Code.INVALID_ARGUMENT, /not valid JSON/],
    ];
    for (const [name, body, headers, code, re] of cases) {
      const stop = proxy.addRule({ match: manifestGet(), fault: { kind: 'respond', body, headers } });
      try {
        const { puller: p } = await puller();
        await assert.rejects(p.pull({ image: `${proxy.host}/test/sample:v1`, bundlePath: bundle() }, pullOpts()), hasCode(code, re), name);
      } finally {
        stop();
      }
    }
    // A manifest fetched by digest must hash to it.
    const stop = proxy.addRule({ match: manifestGet(), fault: { kind: 'respond', body: Buffer.from(JSON.stringify({ ...good, annotations: { x: 'y' } })), headers: { 'content-type': 'application/vnd.oci.image.manifest.v1+json' } } });
    try {
      const { puller: p } = await puller();
      await assert.rejects(p.pull({ image: `${proxy.host}/test/sample@${sample.manifestDigest}`, bundlePath: bundle() }, pullOpts()), hasCode(Code.DATA_LOSS, /not the requested/));
    } finally {
      stop();
    }
  });

  test('cancellation rolls back', async () => {
    const stop = proxy.addRule({ match: blobGet(sample.layers[2]!.digest), fault: { kind: 'hang' } });
    try {
      const { puller: p } = await puller();
      const b = bundle();
      const ac = new AbortController();
      setTimeout(() => ac.abort(), 300);
      await assert.rejects(p.pull({ image: `${proxy.host}/test/sample:v1`, bundlePath: b }, { signal: ac.signal, log }), hasCode(Code.CANCELLED));
      assert.ok(!existsSync(join(b, 'rootfs')));
    } finally {
      stop();
    }
  });
});
