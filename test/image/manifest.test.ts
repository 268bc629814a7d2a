import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MediaType, parseConfig, parseManifest, parsePlatform, selectPlatform, isEncrypted, type ImageIndex } from '../../agent/src/image/manifest.ts';
import { ManifestRejected } from '../../agent/src/image/registry-errors.ts';

const d = (c: string): string => 'sha256:' + c.repeat(64);
const layer = { mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: d('1'), size: 10 };
const config = { mediaType: MediaType.OciConfig, digest: d('2'), size: 100 };
const json = (o: unknown): Buffer => Buffer.from(JSON.stringify(o));

test('parses OCI and Docker manifests and indexes', () => {
  const m = parseManifest(json({ schemaVersion: 2, mediaType: MediaType.OciManifest, config, layers: [layer] }), MediaType.OciManifest, 'w');
  assert.equal(m.kind, 'manifest');
  const dm = parseManifest(json({ schemaVersion: 2, mediaType: MediaType.DockerManifest, config: { ...config, mediaType: MediaType.DockerConfig }, layers: [] }), undefined, 'w');
  assert.equal(dm.mediaType, MediaType.DockerManifest);
  // OCI manifests may omit mediaType; Content-Type then decides.
  assert.equal(parseManifest(json({ schemaVersion: 2, config, layers: [] }), `${MediaType.OciManifest}; charset=utf-8`, 'w').kind, 'manifest');
  const idx = parseManifest(json({ schemaVersion: 2, mediaType: MediaType.DockerList, manifests: [{ ...config, mediaType: MediaType.DockerManifest, platform: { os: 'linux', architecture: 'amd64' } }] }), MediaType.DockerList, 'w');
  assert.equal(idx.kind, 'index');
});

test('rejects ambiguous, mismatched, unversioned and foreign manifests', () => {
  const cases: Array<[unknown, string | undefined, RegExp]> = [
    [{ schemaVersion: 2, mediaType: MediaType.OciIndex, manifests: [], layers: [] }, undefined, /ambiguous/],
    [{ schemaVersion: 2, manifests: [], config, layers: [] }, MediaType.OciManifest, /ambiguous/],
    [{ schemaVersion: 1, mediaType: MediaType.OciManifest, config, layers: [] }, undefined, /schemaVersion 1/],
    [{ mediaType: MediaType.OciManifest, config, layers: [] }, undefined, /schemaVersion/],
    [{ schemaVersion: 2, mediaType: MediaType.OciManifest, config, layers: [] }, MediaType.DockerManifest, /does not match/],
    [{ schemaVersion: 2, config, layers: [] }, 'application/json', /no mediaType/],
    [{ schemaVersion: 2, mediaType: 'application/vnd.docker.distribution.manifest.v1+prettyjws', config, layers: [] }, undefined, /unsupported manifest type/],
    [{ schemaVersion: 2, mediaType: MediaType.OciManifest, config: { ...config, mediaType: 'application/vnd.cncf.helm.config.v1+json' }, layers: [] }, undefined, /not an image config/],
    [{ schemaVersion: 2, mediaType: MediaType.OciManifest, config, layers: [{ ...layer, digest: 'sha256:xyz' }] }, undefined, /malformed digest/],
    [{ schemaVersion: 2, mediaType: MediaType.OciManifest, config, layers: [{ ...layer, size: -1 }] }, undefined, /size/],
    [{ schemaVersion: 2, mediaType: MediaType.OciManifest, config: { ...config, size: 5 * 1024 * 1024 }, layers: [] }, undefined, /limit/],
    [{ schemaVersion: 2, mediaType: MediaType.OciIndex }, undefined, /"manifests" array/],
    [{ schemaVersion: 2, mediaType: MediaType.OciManifest, config, layers: [{ ...layer, annotations: { a: 1 } }] }, undefined, /annotations/],
    [[1, 2], undefined, /not a JSON object/],
  ];
  for (const [doc, ct, re] of cases) assert.throws(() => parseManifest(json(doc), ct, 'img'), (e: Error) => e instanceof ManifestRejected && re.test(e.message), JSON.stringify(doc));
  assert.throws(() => parseManifest(Buffer.from('{nope'), undefined, 'img'), /not valid JSON/);
});

test('config: diff_ids must match the layers', () => {
  const c = parseConfig(json({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [d('3')] } }), 1, 'w');
  assert.deepEqual(c.diffIds, [d('3')]);
  assert.throws(() => parseConfig(json({ rootfs: { type: 'layers', diff_ids: [d('3')] } }), 2, 'w'), /1 diff_ids for 2 layers/);
  assert.throws(() => parseConfig(json({ rootfs: { type: 'x', diff_ids: [] } }), 0, 'w'), /rootfs/);
  assert.throws(() => parseConfig(json({ rootfs: { type: 'layers', diff_ids: ['md5:x'] } }), 1, 'w'), /diff_ids\[0\]/);
});

test('platform selection: os/arch, variants, first match wins', () => {
  const entry = (c: string, p: { os: string; architecture: string; variant?: string }) => ({ mediaType: MediaType.OciManifest, digest: d(c), size: 1, platform: p });
  const index: ImageIndex = {
    kind: 'index',
    mediaType: MediaType.OciIndex,
    manifests: [
      entry('a', { os: 'linux', architecture: 'arm', variant: 'v6' }),
      entry('b', { os: 'linux', architecture: 'arm', variant: 'v7' }),
      entry('c', { os: 'linux', architecture: 'arm64', variant: 'v8' }),
      entry('d', { os: 'windows', architecture: 'amd64' }),
      entry('e', { os: 'linux', architecture: 'amd64', variant: 'v3' }),
      entry('f', { os: 'linux', architecture: 'amd64' }),
      entry('9', { os: 'linux', architecture: 'amd64' }),
    ],
  };
  assert.equal(selectPlatform(index, parsePlatform('linux/amd64'))?.digest, d('f'), 'base variant preferred');
  assert.equal(selectPlatform(index, parsePlatform('linux/amd64/v3'))?.digest, d('e'));
  assert.equal(selectPlatform(index, parsePlatform('linux/arm/v7'))?.digest, d('b'));
  assert.equal(selectPlatform(index, parsePlatform('linux/arm'))?.digest, d('a'), 'any variant when none asked');
  assert.equal(selectPlatform(index, parsePlatform('linux/arm64'))?.digest, d('c'), 'arm64 means v8');
  assert.equal(selectPlatform(index, parsePlatform('linux/s390x')), undefined);
  assert.equal(selectPlatform(index, parsePlatform('linux/arm/v5')), undefined);
  assert.throws(() => parsePlatform('linux'), ManifestRejected);
  assert.ok(isEncrypted('application/vnd.oci.image.layer.v1.tar+gzip+encrypted'));
});
