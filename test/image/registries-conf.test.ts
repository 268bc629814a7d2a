import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseRegistriesConf, resolveCandidates, findRegistry } from '../../agent/src/image/registries-conf.ts';
import { formatReference, parseReference } from '../../agent/src/image/reference.ts';
import { RegistryConfigError, RegistryDenied } from '../../agent/src/image/registry-errors.ts';

const CONF = `
unqualified-search-registries = ["quay.io", "docker.io"]
short-name-mode = "enforcing"

[[registry]]
prefix = "docker.io"
[[registry.mirror]]
location = "mirror-a.local:5000"
insecure = true
[[registry.mirror]]
location = "mirror-b.local/hub"
pull-from-mirror = "digest-only"

[[registry]]
prefix = "example.com/team"
location = "internal.example.com:8443/mirror/team"

[[registry]]
prefix = "example.com/team/secret"
blocked = true

[[registry]]
prefix = "*.corp.example"
insecure = true

[[registry]]
location = "quay.io"
blocked = true
`;

const conf = parseRegistriesConf(CONF, 'registries.conf');
const names = (text: string) => resolveCandidates(conf, parseReference(text)).map((c) => ({ ref: formatReference(c.ref), sources: c.sources.map((s) => `${s.kind}:${formatReference(s.ref)}${s.insecure ? ':insecure' : ''}`) }));

test('mirrors come first, in order; digest-only mirrors only for digests', () => {
  assert.deepEqual(names('docker.io/library/busybox:1'), [
    { ref: 'docker.io/library/busybox:1', sources: ['mirror:mirror-a.local:5000/library/busybox:1:insecure', 'primary:docker.io/library/busybox:1'] },
  ]);
  const d = 'sha256:' + 'b'.repeat(64);
  assert.deepEqual(names(`docker.io/library/busybox@${d}`)[0]?.sources, [
    `mirror:mirror-a.local:5000/library/busybox@${d}:insecure`,
    `mirror:mirror-b.local/hub/library/busybox@${d}`,
    `primary:docker.io/library/busybox@${d}`,
  ]);
});

test('remapped location by longest prefix; blocked prefixes refused', () => {
  assert.deepEqual(names('example.com/team/app:v1')[0]?.sources, ['primary:internal.example.com:8443/mirror/team/app:v1']);
  assert.equal(names('example.com/team/app:v1')[0]?.ref, 'example.com/team/app:v1', 'the candidate keeps the name the user asked for');
  assert.throws(() => names('example.com/team/secret/x'), RegistryDenied);
  assert.deepEqual(names('example.com/teamwork/x')[0]?.sources, ['primary:example.com/teamwork/x:latest'], 'prefixes match on path boundaries');
});

test('wildcard prefixes match subdomains only', () => {
  assert.deepEqual(names('a.corp.example/x')[0]?.sources, ['primary:a.corp.example/x:latest:insecure']);
  assert.deepEqual(names('a.b.corp.example:5000/x')[0]?.sources, ['primary:a.b.corp.example:5000/x:latest:insecure']);
  assert.equal(findRegistry(conf, parseReference('corp.example/x')), undefined);
});

test('short names go through unqualified-search-registries, skipping blocked ones', () => {
  const c = names('busybox');
  assert.deepEqual(c.map((x) => x.ref), ['docker.io/library/busybox:latest'], 'quay.io is blocked and skipped');
  const open = parseRegistriesConf('unqualified-search-registries = ["quay.io", "docker.io"]', 'r');
  assert.deepEqual(resolveCandidates(open, parseReference('busybox')).map((x) => formatReference(x.ref)), ['quay.io/busybox:latest', 'docker.io/library/busybox:latest']);
  assert.deepEqual(resolveCandidates(open, parseReference('x.io/busybox')).map((x) => formatReference(x.ref)), ['x.io/busybox:latest'], 'qualified names are not searched');
  const none = parseRegistriesConf('', 'r');
  assert.deepEqual(resolveCandidates(none, parseReference('busybox')).map((x) => formatReference(x.ref)), ['docker.io/library/busybox:latest']);
});

test('--insecure-registry hosts make sources plain HTTP', () => {
  const none = parseRegistriesConf('', 'r');
  const [c] = resolveCandidates(none, parseReference('127.0.0.1:5000/a'), new Set(['127.0.0.1:5000']));
  assert.equal(c?.sources[0]?.insecure, true);
});

test('bad files fail with the file and key named', () => {
  assert.throws(() => parseRegistriesConf('[[registry]]\nprefix = 1', 'R'), /R: registry\[0\]\.prefix: expected a string/);
  assert.throws(() => parseRegistriesConf('[[registry]]\ninsecure = "yes"\nlocation="a.b"', 'R'), /insecure: expected a boolean/);
  assert.throws(() => parseRegistriesConf('[[registry]]\nprefix = "*.x.y"\nlocation = "a.b"', 'R'), /wildcard prefix cannot have a location/);
  assert.throws(() => parseRegistriesConf('x = [', 'R'), RegistryConfigError);
  assert.throws(() => parseRegistriesConf('[[registry]]\nblocked = true', 'R'), /needs a prefix or a location/);
  assert.throws(() => parseRegistriesConf('[[registry]]\nlocation = "a.b"\n[[registry]]\nprefix = "a.b"', 'R'), /defined twice/);
});
