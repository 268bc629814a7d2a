// The registry client against Debian's docker-registry, directly and through
// the fault-injecting proxy and the token server.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLogger } from '../../agent/src/log.ts';
import { AuthFile } from '../../agent/src/image/auth.ts';
import { parseManifest, selectPlatform, MediaType } from '../../agent/src/image/manifest.ts';
import { BlobRestart, RegistryClient } from '../../agent/src/image/registry.ts';
import { DEFAULT_HTTP, type HttpSettings } from '../../agent/src/image/registry-http.ts';
import { Code } from '../../agent/src/errors.ts';
import { startRegistry, type TestRegistry } from '../helpers/registry.ts';
import { blobGet, manifestGet, startFaultProxy, type FaultProxy } from '../helpers/fault-proxy.ts';
import { buildImage, buildIndex, readBlob, sampleLayers, writeTree, pseudoRandom, type BuiltImage } from '../fixtures/images.ts';
import { hasCode } from '../helpers/assert.ts';

const log = createLogger('silent');
const FAST: HttpSettings = { ...DEFAULT_HTTP, retries: 2, backoffMs: 10, maxBackoffMs: 2000, idleTimeoutMs: 2000, lowSpeedBytesPerSec: 20_000, lowSpeedWindowMs: 400 };
const sha = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

async function collect(it: AsyncIterable<Buffer>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of it) parts.push(c);
  return Buffer.concat(parts);
}


describe('registry client, plain HTTP registry', () => {
  let work: string;
  let reg: TestRegistry;
  let proxy: FaultProxy;
  let img: BuiltImage;
  let big: BuiltImage;
  let layout: string;
  let indexDigest: string;
  const clients: RegistryClient[] = [];
  const client = (s: Partial<HttpSettings> = {}): RegistryClient => {
    const c = new RegistryClient({ ...FAST, ...s }, log);
    clients.push(c);
    return c;
  };

  before(async () => {
    work = mkdtempSync(join(tmpdir(), 'registry-test-'));
    reg = await startRegistry();
    layout = join(work, 'layout');
    img = buildImage(layout, 'sample', sampleLayers(join(work, 'src')));
    big = buildImage(layout, 'big', [{ dir: writeTree(join(work, 'big'), [{ type: 'file', path: 'blob.bin', content: pseudoRandom(3_000_000, 'big') }]), compression: 'none' }]);
    const idx = buildIndex(layout, 'multi', [
      { platform: { os: 'linux', architecture: 'arm64', variant: 'v8' }, layers: [{ dir: writeTree(join(work, 'arm'), [{ type: 'file', path: 'arch', content: 'arm64\n' }]), compression: 'gzip' }] },
      { platform: { os: 'linux', architecture: 'amd64' }, layers: [{ dir: writeTree(join(work, 'amd'), [{ type: 'file', path: 'arch', content: 'amd64\n' }]), compression: 'gzip' }] },
    ]);
    indexDigest = idx.indexDigest;
    await reg.push(`oci:${layout}:sample`, 'test/sample:v1');
    await reg.push(`oci:${layout}:big`, 'test/big:v1');
    await reg.push(`oci:${layout}:multi`, 'test/multi:v1', { all: true });
    proxy = await startFaultProxy({ upstream: reg.url });
  });

  after(async () => {
    for (const c of clients) await c.close();
    await proxy?.close();
    await reg?.stop();
    rmSync(work, { recursive: true, force: true });
  });

  const repo = (c: RegistryClient, name: string, via: 'direct' | 'proxy' = 'direct') =>
    c.repository({ registry: via === 'proxy' ? proxy.host : reg.host, repository: name }, { insecure: true });

  test('manifest by tag and by digest, digest computed from the bytes', async () => {
    const r = repo(client(), 'test/sample');
    const byTag = await r.getManifest('v1');
    assert.equal(byTag.digest, img.manifestDigest);
    assert.equal(byTag.contentType, MediaType.OciManifest);
    const byDigest = await r.getManifest(img.manifestDigest);
    assert.deepEqual(byDigest.bytes, img.manifestBytes);
    await assert.rejects(r.getManifest('nope'), hasCode(Code.NOT_FOUND, /MANIFEST_UNKNOWN/));
    await assert.rejects(repo(client(), 'test/absent').getManifest('v1'), hasCode(Code.NOT_FOUND));
  });

  test('an index resolves to the platform manifest; both digests are kept', async () => {
    const r = repo(client(), 'test/multi');
    const top = await r.getManifest('v1');
    assert.equal(top.digest, indexDigest);
    const index = parseManifest(top.bytes, top.contentType, 'multi');
    assert.equal(index.kind, 'index');
    const pick = selectPlatform(index as Extract<typeof index, { kind: 'index' }>, { os: 'linux', architecture: 'amd64' });
    const m = await r.getManifest(pick!.digest);
    assert.equal(m.digest, pick!.digest);
    assert.notEqual(m.digest, top.digest);
  });

  test('blobs: whole, small ones capped and digest-checked', async () => {
    const r = repo(client(), 'test/sample');
    const layer = img.layers[0]!;
    assert.deepEqual(await collect(r.blob(layer)), readBlob(layout, layer.digest));
    const cfg = await r.getBlob({ digest: img.configDigest, size: readBlob(layout, img.configDigest).length }, 4 << 20);
    assert.equal(sha(cfg), img.configDigest);
    await assert.rejects(r.getBlob({ digest: img.configDigest, size: 10 }, 4 << 20), hasCode(Code.DATA_LOSS, /descriptor says 10/));
    await assert.rejects(r.getBlob({ digest: layer.digest, size: layer.size }, 1000), hasCode(Code.INVALID_ARGUMENT, /limit/));
  });

  test('5xx is retried with backoff; persistent 5xx gives UNAVAILABLE', async () => {
    const r = repo(client(), 'test/sample', 'proxy');
    const before = proxy.requests.length;
    const stop = proxy.addRule({ match: manifestGet(), fault: { kind: 'status', status: 503 }, times: 2 });
    assert.equal((await r.getManifest('v1')).digest, img.manifestDigest);
    assert.equal(proxy.requests.length - before, 3);
    stop();
    const stop2 = proxy.addRule({ match: manifestGet(), fault: { kind: 'status', status: 500 } });
    await assert.rejects(repo(client(), 'test/sample', 'proxy').getManifest('v1'), hasCode(Code.UNAVAILABLE, /HTTP 500.*3 attempts/));
    stop2();
  });

  test('429 honours Retry-After; an excessive Retry-After fails at once', async () => {
    const stop = proxy.addRule({ match: manifestGet(), fault: { kind: 'status', status: 429, retryAfter: '1' }, times: 1 });
    const t0 = performance.now();
    await repo(client(), 'test/sample', 'proxy').getManifest('v1');
    assert.ok(performance.now() - t0 >= 950, 'waited for Retry-After');
    stop();
    const stop2 = proxy.addRule({ match: manifestGet(), fault: { kind: 'status', status: 429, retryAfter: '3600' } });
    const t1 = performance.now();
    await assert.rejects(repo(client(), 'test/sample', 'proxy').getManifest('v1'), hasCode(Code.UNAVAILABLE, /Retry-After 3600 s/));
    assert.ok(performance.now() - t1 < 1000);
    stop2();
  });

  test('a reset or truncated blob resumes with Range where the registry answers 206', async () => {
    const layer = big.layers[0]!;
    for (const kind of ['reset', 'truncate'] as const) {
      const stop = proxy.addRule({ match: blobGet(layer.digest), fault: { kind, afterBytes: 1_000_000 }, times: 1 });
      const n = proxy.blobGets(layer.digest).length;
      const retries: number[] = [];
      const bytes = await collect(repo(client(), 'test/big', 'proxy').blob(layer, undefined, { onRetry: (i) => retries.push(i.offset) }));
      assert.equal(sha(bytes), layer.digest, kind);
      const gets = proxy.blobGets(layer.digest).slice(n);
      assert.equal(gets.length, 2, kind);
      assert.equal(gets[1]!.headers.range, `bytes=${retries[0]}-`);
      assert.ok(retries[0]! > 0 && retries[0]! <= 1_000_000, `resumed at ${retries[0]}`);
      assert.equal(gets[1]!.status, 206);
      stop();
    }
  });

  test('a registry that ignores Range forces a restart of the layer', async () => {
    const layer = big.layers[0]!;
    const stop1 = proxy.addRule({ match: blobGet(layer.digest), fault: { kind: 'reset', afterBytes: 500_000 }, times: 1 });
    const stop2 = proxy.addRule({ match: blobGet(layer.digest), fault: { kind: 'ignore-range' } });
    await assert.rejects(collect(repo(client(), 'test/big', 'proxy').blob(layer)), BlobRestart);
    stop1();
    stop2();
  });

  test('a slow trickle times out with DEADLINE_EXCEEDED', async () => {
    const layer = big.layers[0]!;
    const stop = proxy.addRule({ match: blobGet(layer.digest), fault: { kind: 'trickle', bytesPerSec: 2000 } });
    const t0 = performance.now();
    await assert.rejects(collect(repo(client({ retries: 1 }), 'test/big', 'proxy').blob(layer)), hasCode(Code.DEADLINE_EXCEEDED, /too slow/));
    assert.ok(performance.now() - t0 < 5000);
    stop();
  });

  test('a wrong-length blob is refused as DATA_LOSS; a manifest with a bad Docker-Content-Digest too', async () => {
    const layer = img.layers[1]!;
    await assert.rejects(collect(repo(client(), 'test/sample').blob({ digest: layer.digest, size: layer.size - 1 })), hasCode(Code.DATA_LOSS));
    const stop = proxy.addRule({ match: manifestGet(), fault: { kind: 'corrupt', offset: 20 } });
    await assert.rejects(repo(client(), 'test/sample', 'proxy').getManifest('v1'), hasCode(Code.DATA_LOSS, /Docker-Content-Digest/));
    await assert.rejects(repo(client(), 'test/sample', 'proxy').getManifest(img.manifestDigest), hasCode(Code.DATA_LOSS, /not the requested/));
    stop();
  });

  test('Basic auth from auth.json; a redirect to another origin carries no Authorization', async () => {
    const guarded = await startFaultProxy({ upstream: reg.url, basicAuth: { username: 'alice', password: 's3cret:pw' } });
    const storage = await startFaultProxy({ upstream: reg.url });
    try {
      guarded.addRule({ match: blobGet(), fault: { kind: 'redirect', to: storage.url } });
      const auth = AuthFile.parse(JSON.stringify({ auths: { [guarded.host]: { auth: Buffer.from('alice:s3cret:pw').toString('base64') } } }), 'auth.json');
      const c = client();
      const r = c.repository({ registry: guarded.host, repository: 'test/sample' }, { insecure: true, credentials: auth.lookup(guarded.host, 'test/sample')! });
      assert.equal((await r.getManifest('v1')).digest, img.manifestDigest);
      const layer = img.layers[0]!;
      assert.equal(sha(await collect(r.blob(layer))), layer.digest);
      assert.ok(guarded.requests.some((q) => q.headers.authorization?.toString().startsWith('Basic ')));
      assert.equal(storage.requests.length, 1);
      assert.equal(storage.requests[0]!.headers.authorization, undefined, 'no Authorization after a cross-origin redirect');
      // Without credentials: UNAUTHENTICATED, and the message names no secret.
      const anon = client().repository({ registry: guarded.host, repository: 'test/sample' }, { insecure: true });
      await assert.rejects(anon.getManifest('v1'), hasCode(Code.UNAUTHENTICATED, /requires credentials/));
      const wrong = client().repository({ registry: guarded.host, repository: 'test/sample' }, { insecure: true, credentials: { username: 'alice', password: 'nope' } });
      await assert.rejects(wrong.getManifest('v1'), (e: Error) => hasCode(Code.UNAUTHENTICATED)(e) && !e.message.includes('nope'));
    } finally {
      await guarded.close();
      await storage.close();
    }
  });
});

describe('registry client, HTTPS registry with Bearer token auth', () => {
  let work: string;
  let reg: TestRegistry;
  let img: BuiltImage;
  const clients: RegistryClient[] = [];

  before(async () => {
    work = mkdtempSync(join(tmpdir(), 'registry-token-test-'));
    reg = await startRegistry({
      tls: true,
      tokenAuth: {
        users: { bob: 'b0b, "quoted"' },
        grant: (user, repo, actions) => (repo.startsWith('private/') && user !== 'bob' && user !== 'pusher' ? [] : actions.filter((a) => a === 'pull' || user === 'pusher')),
      },
    });
    const layout = join(work, 'layout');
    img = buildImage(layout, 't', [{ dir: writeTree(join(work, 'l'), [{ type: 'file', path: 'hello', content: 'hi\n' }]), compression: 'gzip' }]);
    await reg.push(`oci:${layout}:t`, 'public/app:v1');
    await reg.push(`oci:${layout}:t`, 'private/app:v1');
  });

  after(async () => {
    for (const c of clients) await c.close();
    await reg?.stop();
    rmSync(work, { recursive: true, force: true });
  });

  const client = (ca: boolean): RegistryClient => {
    const c = new RegistryClient({ ...FAST, ...(ca ? { caPem: reg.caPem! } : {}) }, log);
    clients.push(c);
    return c;
  };

  test('HTTPS needs the CA bundle', async () => {
    await assert.rejects(client(false).repository({ registry: reg.host, repository: 'public/app' }, { insecure: false }).getManifest('v1'), hasCode(Code.UNAVAILABLE, /TLS failure/));
  });

  test('anonymous Bearer token, fetched once and cached per scope', async () => {
    const c = client(true);
    const before = reg.token!.requests.length;
    const r = c.repository({ registry: reg.host, repository: 'public/app' }, { insecure: false });
    assert.equal((await r.getManifest('v1')).digest, img.manifestDigest);
    assert.equal(sha(await collect(r.blob(img.layers[0]!))), img.layers[0]!.digest);
    await r.getManifest(img.manifestDigest);
    const fetched = reg.token!.requests.slice(before);
    assert.equal(fetched.length, 1);
    assert.equal(fetched[0]!.scope, 'repository:public/app:pull');
    assert.equal(fetched[0]!.service, reg.token!.service);
  });

  test('private repository: credentials required, wrong ones refused, right ones work', async () => {
    await assert.rejects(client(true).repository({ registry: reg.host, repository: 'private/app' }, { insecure: false }).getManifest('v1'), hasCode(Code.UNAUTHENTICATED));
    await assert.rejects(
      client(true).repository({ registry: reg.host, repository: 'private/app' }, { insecure: false, credentials: { username: 'bob', password: 'wrong' } }).getManifest('v1'),
      hasCode(Code.UNAUTHENTICATED, /token server/),
    );
    const ok = client(true).repository({ registry: reg.host, repository: 'private/app' }, { insecure: false, credentials: { username: 'bob', password: 'b0b, "quoted"' } });
    assert.equal((await ok.getManifest('v1')).digest, img.manifestDigest);
    const last = reg.token!.requests.at(-1)!;
    assert.equal(last.user, 'bob');
  });
});

describe('registry client, unreachable or silent registries', () => {
  test('connection refused: UNAVAILABLE after the retries', async () => {
    const c = new RegistryClient({ ...FAST, retries: 1 }, log);
    try {
      // Port 9 (discard) is closed on loopback here; nothing listens.
      await assert.rejects(c.repository({ registry: '127.0.0.1:9', repository: 'a/b' }, { insecure: true }).getManifest('v1'), hasCode(Code.UNAVAILABLE, /ECONNREFUSED.*2 attempts/));
    } finally {
      await c.close();
    }
  });

  test('a registry that never answers: the idle timeout gives DEADLINE_EXCEEDED', async () => {
    const silent = await startFaultProxy({ upstream: 'http://127.0.0.1:9' });
    silent.addRule({ match: () => true, fault: { kind: 'hang' } });
    const c = new RegistryClient({ ...FAST, retries: 1, idleTimeoutMs: 300 }, log);
    try {
      const t0 = performance.now();
      await assert.rejects(c.repository({ registry: silent.host, repository: 'a/b' }, { insecure: true }).getManifest('v1'), hasCode(Code.DEADLINE_EXCEEDED, /timed out/));
      assert.ok(performance.now() - t0 < 3000);
      assert.equal(silent.requests.length, 2);
    } finally {
      await c.close();
      await silent.close();
    }
  });
});
