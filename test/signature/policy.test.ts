// containers-policy.json: strict parsing (every error names its JSON path)
// and the most-specific scope lookup.

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Code } from '../../agent/src/errors.ts';
import { parseReference } from '../../agent/src/image/reference.ts';
import { PolicyInvalid } from '../../agent/src/signature/errors.ts';
import { parsePolicy, requirementsFor } from '../../agent/src/signature/policy.ts';

const ACCEPT = [{ type: 'insecureAcceptAnything' }];
const policy = (doc: unknown): ReturnType<typeof parsePolicy> => parsePolicy(typeof doc === 'string' ? doc : JSON.stringify(doc), 'test.json');

function rejects(doc: unknown, pattern: RegExp): void {
  assert.throws(
    () => policy(doc),
    (err: unknown) => {
      assert.ok(err instanceof PolicyInvalid, `expected PolicyInvalid, got ${String(err)}`);
      assert.equal(err.code, Code.FAILED_PRECONDITION);
      assert.match(err.message, /^policy test\.json: /);
      assert.match(err.message, pattern);
      return true;
    },
  );
}

describe('policy parsing', () => {
  test('a full policy with every requirement and identity type', () => {
    const p = policy({
      default: [{ type: 'reject' }],
      transports: {
        docker: {
          'quay.io/ns/app': [{ type: 'signedBy', keyType: 'GPGKeys', keyPath: '/etc/pki/a.gpg', signedIdentity: { type: 'matchExact' } }],
          'quay.io/ns': [{ type: 'signedBy', keyType: 'GPGKeys', keyPaths: ['/k1', 'kbs:///default/gpg/k2'], signedIdentity: { type: 'matchRepository' } }],
          'quay.io': [{ type: 'signedBy', keyType: 'GPGKeys', keyData: 'LS0tLQ==', signedIdentity: { type: 'exactReference', dockerReference: 'quay.io/x/y:1' } }],
          '*.example.com': [{ type: 'sigstoreSigned', keyPath: 'kbs://kbs.example/default/cosign/key', signedIdentity: { type: 'exactRepository', dockerRepository: 'example.com/x' } }],
          'docker.io/library/busybox:latest': [{ type: 'sigstoreSigned', keyDatas: ['a', 'b'], signedIdentity: { type: 'remapIdentity', prefix: 'docker.io', signedPrefix: 'quay.io/mirror' } }],
          ['localhost:5000/app@sha256:' + 'a'.repeat(64)]: [{ type: 'sigstoreSigned', keyPaths: ['/k'] }, { type: 'insecureAcceptAnything' }],
          '': ACCEPT,
        },
        'docker-daemon': { '': ACCEPT },
      },
    });
    assert.equal(p.default[0].type, 'reject');
    assert.equal(p.docker.size, 7);
    const q = p.docker.get('quay.io/ns')![0];
    assert.equal(q.type, 'signedBy');
    assert.deepEqual(q.type === 'signedBy' && q.keys, [{ kind: 'path', path: '/k1' }, { kind: 'path', path: 'kbs:///default/gpg/k2' }]);
    const w = p.docker.get('*.example.com')![0];
    assert.deepEqual(w.type === 'sigstoreSigned' && w.keys, [{ kind: 'path', path: 'kbs:///default/cosign/key' }]);
    // The default identity is matchRepoDigestOrExact for sigstoreSigned too (image-rs has none).
    const d = p.docker.get('localhost:5000/app@sha256:' + 'a'.repeat(64))![0];
    assert.deepEqual(d.type === 'sigstoreSigned' && d.signedIdentity, { type: 'matchRepoDigestOrExact' });
  });

  test('the minimal policies of containers-policy.json.5', () => {
    assert.equal(policy({ default: ACCEPT }).docker.size, 0);
    assert.equal(policy({ default: [{ type: 'reject' }], transports: {} }).docker.size, 0);
  });

  test('structure errors name their JSON path', () => {
    rejects('{"default": [', /not valid JSON/);
    rejects([], /\$: expected an object, got an empty array/);
    rejects({}, /\$: missing field "default"/);
    rejects({ default: [] }, /\$\.default: expected a non-empty array/);
    rejects({ default: ACCEPT, extra: 1 }, /\$\.extra: unknown field/);
    rejects({ default: ACCEPT, transports: { docker: { 'quay.io': [] } } }, /\$\.transports\.docker\["quay\.io"\]: expected a non-empty array/);
    rejects({ default: ACCEPT, transports: { dockr: {} } }, /\$\.transports\.dockr: unknown transport/);
    rejects({ default: ACCEPT, transports: { docker: [] } }, /\$\.transports\.docker: expected an object of scopes/);
    rejects({ default: ACCEPT, transports: { 'docker-daemon': { '': [] } } }, /\["docker-daemon"\]\[""\]: expected a non-empty array/);
    rejects('{"default":[{"type":"reject"}],"default":[{"type":"insecureAcceptAnything"}]}', /\$\.default: duplicate key/);
    rejects('{"default":[{"type":"reject","type":"insecureAcceptAnything"}]}', /\$\.default\[0\]\.type: duplicate key/);
  });

  test('requirement errors', () => {
    rejects({ default: [{}] }, /\$\.default\[0\]: missing field "type"|\$\.default\[0\]\.type: expected a string/);
    rejects({ default: [{ type: 'acceptAll' }] }, /\$\.default\[0\]\.type: unknown requirement type "acceptAll"/);
    rejects({ default: [{ type: 'reject', keyPath: '/k' }] }, /\$\.default\[0\]\.keyPath: unknown field/);
    rejects({ default: [{ type: 'insecureAcceptAnything', signedIdentity: { type: 'matchExact' } }] }, /\$\.default\[0\]\.signedIdentity: unknown field/);
    rejects({ default: [{ type: 'signedBy', keyPath: '/k' }] }, /\$\.default\[0\]: missing field "keyType"/);
    rejects({ default: [{ type: 'signedBy', keyType: 'X509Certificates', keyPath: '/k' }] }, /keyType: unsupported keyType "X509Certificates"/);
    rejects({ default: [{ type: 'signedBy', keyType: 'GPGKeys' }] }, /exactly one of keyPath, keyPaths, keyData is required/);
    rejects({ default: [{ type: 'signedBy', keyType: 'GPGKeys', keyPath: '/k', keyData: 'x' }] }, /exactly one of .* got keyPath and keyData/);
    rejects({ default: [{ type: 'signedBy', keyType: 'GPGKeys', keyPaths: [] }] }, /\$\.default\[0\]\.keyPaths: expected a non-empty array/);
    rejects({ default: [{ type: 'signedBy', keyType: 'GPGKeys', keyPath: 'relative/key' }] }, /keyPath: a key path must be absolute or a kbs/);
    rejects({ default: [{ type: 'signedBy', keyType: 'GPGKeys', keyPaths: ['/a', 3] }] }, /\$\.default\[0\]\.keyPaths\[1\]: expected a non-empty string/);
    rejects({ default: [{ type: 'signedBy', keyType: 'GPGKeys', keyDatas: ['x'] }] }, /keyDatas: unknown field/);
    rejects({ default: [{ type: 'sigstoreSigned', keyPath: 'kbs:///only/two' }] }, /keyPath: bad resource URI/);
    rejects({ default: [{ type: 'sigstoreSigned', keyData: '' }] }, /keyData: expected a non-empty string/);
    rejects({ default: [{ type: 'sigstoreSigned', keyDatas: [] }] }, /keyDatas: expected a non-empty array/);
    rejects({ default: [{ type: 'sigstoreSigned', fulcio: {}, rekorPublicKeyPath: '/r' }] }, /fulcio: not supported by this agent/);
    rejects({ default: [{ type: 'sigstoreSigned', keyPath: '/k', rekorPublicKeyData: 'x' }] }, /rekorPublicKeyData: not supported/);
  });

  test('signedIdentity errors', () => {
    const sb = (signedIdentity: unknown) => ({ default: [{ type: 'sigstoreSigned', keyPath: '/k', signedIdentity }] });
    rejects(sb('matchExact'), /signedIdentity: expected an object/);
    rejects(sb({ type: 'matchEverything' }), /signedIdentity\.type: unknown signedIdentity type/);
    rejects(sb({ type: 'matchExact', dockerReference: 'x' }), /signedIdentity\.dockerReference: unknown field/);
    rejects(sb({ type: 'exactReference' }), /signedIdentity: missing field "dockerReference"/);
    rejects(sb({ type: 'exactReference', dockerReference: 'quay.io/x' }), /dockerReference: must include a tag or digest/);
    rejects(sb({ type: 'exactReference', dockerReference: 'Quay.io/UPPER:1' }), /dockerReference: bad image reference/);
    rejects(sb({ type: 'exactRepository', dockerRepository: 'quay.io/x:1' }), /dockerRepository: must be a repository/);
    rejects(sb({ type: 'remapIdentity', prefix: 'quay.io' }), /missing field "signedPrefix"/);
    rejects(sb({ type: 'remapIdentity', prefix: '*.quay.io', signedPrefix: 'x.io' }), /prefix: must be a host or host\/namespace/);
    rejects(sb({ type: 'remapIdentity', prefix: 'quay.io/x:1', signedPrefix: 'x.io' }), /prefix: must be a host/);
    rejects(sb({ type: 'remapIdentity', prefix: 'quay.io', signedPrefix: 'busybox/x' }), /signedPrefix: not a fully qualified, normalised name/);
  });

  test('scopes that could never match are errors', () => {
    const scoped = (scope: string) => ({ default: ACCEPT, transports: { docker: { [scope]: ACCEPT } } });
    rejects(scoped('busybox'), /docker\.busybox: bad scope: not a registry host \(did you mean "docker\.io\/library\/busybox"\?\)/);
    rejects(scoped('library/busybox'), /bad scope: not a fully qualified, normalised name \(did you mean "docker\.io\/library\/busybox"\?\)/);
    rejects(scoped('docker.io/busybox:latest'), /did you mean "docker\.io\/library\/busybox:latest"/);
    rejects(scoped('index.docker.io/library/busybox'), /did you mean "docker\.io\/library\/busybox"/);
    rejects(scoped('Quay.io'), /bad scope: not a valid lowercase registry host/);
    rejects(scoped('*.'), /wildcard scope/);
    rejects(scoped('*.example.com:443'), /wildcard scope/);
    rejects(scoped('quay.io/a:1@sha256:' + 'b'.repeat(64)), /both a tag and a digest/);
    for (const ok of ['quay.io', 'localhost', 'localhost:5000', '127.0.0.1:5000/ns', '[::1]:5000', '*.io', 'docker.io/library/busybox', 'docker.io/library', 'docker.io/someuser', 'quay.io/a/b/c:v1.2']) {
      assert.equal(policy(scoped(ok)).docker.size, 1, ok);
    }
  });
});

describe('scope lookup', () => {
  const reqs = (name: string) => [{ type: 'sigstoreSigned', keyPath: `/keys/${name}` }];
  const p = policy({
    default: [{ type: 'reject' }],
    transports: {
      docker: {
        'registry.example.com:5000/ns/app:v1': reqs('tag'),
        ['registry.example.com:5000/ns/app@sha256:' + 'c'.repeat(64)]: reqs('digest'),
        'registry.example.com:5000/ns/app': reqs('repo'),
        'registry.example.com:5000/ns': reqs('namespace'),
        'registry.example.com:5000': reqs('host'),
        '*.example.com': reqs('wildcard'),
        '*.com': reqs('tld'),
        'docker.io/library': reqs('library'),
      },
    },
  });
  const scopeOf = (ref: string): string => requirementsFor(p, parseReference(ref)).scope;

  test('most specific first: reference, repository, namespaces, host, wildcards, default', () => {
    assert.equal(scopeOf('registry.example.com:5000/ns/app:v1'), 'registry.example.com:5000/ns/app:v1');
    assert.equal(scopeOf('registry.example.com:5000/ns/app@sha256:' + 'c'.repeat(64)), 'registry.example.com:5000/ns/app@sha256:' + 'c'.repeat(64));
    assert.equal(scopeOf('registry.example.com:5000/ns/app:v2'), 'registry.example.com:5000/ns/app');
    assert.equal(scopeOf('registry.example.com:5000/ns/app'), 'registry.example.com:5000/ns/app', 'implicit :latest');
    assert.equal(scopeOf('registry.example.com:5000/ns/other/deep:1'), 'registry.example.com:5000/ns');
    assert.equal(scopeOf('registry.example.com:5000/elsewhere'), 'registry.example.com:5000');
    // The port is stripped before wildcards; another port is another host.
    assert.equal(scopeOf('registry.example.com:6000/ns/app:v1'), '*.example.com');
    assert.equal(scopeOf('a.b.example.com/x'), '*.example.com');
    assert.equal(scopeOf('other.com/x'), '*.com');
    // A prefix that is not a whole path component does not match.
    assert.equal(scopeOf('registry.example.com:5000/nsx/app'), 'registry.example.com:5000');
    assert.equal(scopeOf('busybox'), 'docker.io/library');
    assert.equal(scopeOf('quay.io/x'), 'default');
  });

  test('a digest-pinned reference with a tag is looked up by its digest', () => {
    assert.equal(scopeOf('registry.example.com:5000/ns/app:v1@sha256:' + 'c'.repeat(64)), 'registry.example.com:5000/ns/app@sha256:' + 'c'.repeat(64));
  });

  test('the transport-wide "" scope comes before default', () => {
    const q = policy({ default: [{ type: 'reject' }], transports: { docker: { '': ACCEPT, 'quay.io': [{ type: 'reject' }] } } });
    assert.equal(requirementsFor(q, parseReference('example.com/x')).scope, 'docker ""');
    assert.equal(requirementsFor(q, parseReference('quay.io/x')).scope, 'quay.io');
  });
});
