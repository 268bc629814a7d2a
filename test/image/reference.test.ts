import { test } from 'node:test';
import assert from 'node:assert/strict';
import { formatReference, manifestReference, parseReference, apiHost, BadReference } from '../../agent/src/image/reference.ts';

const D = 'sha256:' + 'a'.repeat(64);

test('normalises Docker Hub short names the way docker does', () => {
  assert.equal(formatReference(parseReference('busybox')), 'docker.io/library/busybox:latest');
  assert.equal(formatReference(parseReference('library/busybox:1.36')), 'docker.io/library/busybox:1.36');
  assert.equal(formatReference(parseReference('foo/bar')), 'docker.io/foo/bar:latest');
  assert.equal(formatReference(parseReference('index.docker.io/library/busybox')), 'docker.io/library/busybox:latest');
  assert.equal(formatReference(parseReference('index.docker.io/busybox')), 'docker.io/library/busybox:latest');
  assert.equal(formatReference(parseReference('docker.io/busybox')), 'docker.io/library/busybox:latest');
  const r = parseReference('busybox');
  assert.equal(r.qualified, false);
  assert.equal(r.shortName, 'busybox');
  assert.equal(apiHost(r.registry), 'registry-1.docker.io');
});

test('hosts, ports, localhost, tags and digests', () => {
  const r = parseReference('127.0.0.1:5000/ns/app:v1.2');
  assert.deepEqual(r, { registry: '127.0.0.1:5000', repository: 'ns/app', tag: 'v1.2', qualified: true });
  assert.equal(parseReference('localhost/app').registry, 'localhost');
  assert.equal(parseReference('localhost:5000/app').registry, 'localhost:5000');
  assert.equal(parseReference('Quay.IO/x/y').registry, 'quay.io');
  const d = parseReference(`quay.io/x/y@${D}`);
  assert.equal(d.digest, D);
  assert.equal(d.tag, undefined);
  assert.equal(manifestReference(d), D);
  const both = parseReference(`quay.io/x/y:t@${D}`);
  assert.equal(both.tag, 't');
  assert.equal(manifestReference(both), D, 'a digest wins over the tag');
  assert.equal(formatReference(both), `quay.io/x/y:t@${D}`);
  // A first component without dot/port is a Docker Hub namespace.
  assert.equal(parseReference('myhost/app').registry, 'docker.io');
});

test('rejects malformed references with INVALID_ARGUMENT', () => {
  for (const bad of ['', 'UPPER/case', 'a//b', 'a/b:', 'a/b:-x', 'a@sha256:abc', `a@md5:${'a'.repeat(32)}`, 'a/b/', '-a', `a@sha256:${'A'.repeat(64)}`, 'x'.repeat(600), 'a:b:c']) {
    assert.throws(() => parseReference(bad), BadReference, bad);
  }
  assert.equal(new BadReference('x', 'y').code, 3);
});
