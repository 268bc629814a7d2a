// signedIdentity rules, one table per type, against containers-policy.json.5.

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { parseReference } from '../../agent/src/image/reference.ts';
import { identityMatches, type SignedIdentity } from '../../agent/src/signature/identity.ts';
import { intendedName, parseNamed } from '../../agent/src/signature/names.ts';

const D1 = 'sha256:' + '1'.repeat(64);

function check(rule: SignedIdentity, cases: Array<[image: string, signed: string, expected: boolean]>): void {
  for (const [image, signed, expected] of cases) {
    assert.equal(identityMatches(rule, intendedName(parseReference(image)), signed), expected, `${rule.type}: image ${image}, signed ${signed}`);
  }
}

describe('signedIdentity', () => {
  test('matchExact: the same reference, tag or digest included', () => {
    check({ type: 'matchExact' }, [
      ['example.com/ns/app:v1', 'example.com/ns/app:v1', true],
      ['example.com/ns/app', 'example.com/ns/app:latest', true],
      ['busybox:1', 'docker.io/library/busybox:1', true],
      ['docker.io/library/busybox:1', 'busybox:1', true],
      ['example.com/ns/app:v1', 'example.com/ns/app:v2', false],
      ['example.com/ns/app:v1', 'example.com/ns/app', false],
      [`example.com/ns/app@${D1}`, `example.com/ns/app@${D1}`, true],
      [`example.com/ns/app@${D1}`, 'example.com/ns/app:v1', false],
      ['example.com/ns/app:v1', 'example.com/other:v1', false],
      ['example.com/ns/app:v1', 'not a reference', false],
    ]);
  });

  test('matchRepoDigestOrExact: exact for tags, the repository for digests', () => {
    check({ type: 'matchRepoDigestOrExact' }, [
      ['example.com/ns/app:v1', 'example.com/ns/app:v1', true],
      ['example.com/ns/app:v1', 'example.com/ns/app:v2', false],
      ['example.com/ns/app:v1', 'example.com/ns/app', false],
      [`example.com/ns/app@${D1}`, 'example.com/ns/app:anything', true],
      [`example.com/ns/app@${D1}`, 'example.com/ns/app', false],
      [`example.com/ns/app@${D1}`, 'example.com/other:v1', false],
      [`example.com/ns/app:v1@${D1}`, 'example.com/ns/app:v9', true],
    ]);
  });

  test('matchRepository: the repository only, name-only signatures included', () => {
    check({ type: 'matchRepository' }, [
      ['example.com/ns/app:v1', 'example.com/ns/app', true],
      ['example.com/ns/app:v1', 'example.com/ns/app:v2', true],
      [`example.com/ns/app@${D1}`, 'example.com/ns/app', true],
      ['example.com/ns/app:v1', 'example.com/ns/app2', false],
      ['example.com/ns/app:v1', 'example.org/ns/app', false],
    ]);
  });

  test('exactReference: the signature names the configured reference, whatever was pulled', () => {
    check({ type: 'exactReference', dockerReference: parseNamed('example.com/golden:1') }, [
      ['example.com/ns/app:v1', 'example.com/golden:1', true],
      ['mirror.example.org/any:thing', 'example.com/golden:1', true],
      ['example.com/ns/app:v1', 'example.com/golden:2', false],
      ['example.com/ns/app:v1', 'example.com/golden', false],
      ['example.com/ns/app:v1', 'example.com/ns/app:v1', false],
    ]);
  });

  test('exactRepository: the signature names the configured repository', () => {
    check({ type: 'exactRepository', dockerRepository: parseNamed('example.com/golden') }, [
      ['example.com/ns/app:v1', 'example.com/golden:1', true],
      ['example.com/ns/app:v1', 'example.com/golden', true],
      ['example.com/ns/app:v1', 'example.com/golden2:1', false],
      ['example.com/ns/app:v1', 'example.com/ns/app:v1', false],
    ]);
  });

  test('remapIdentity: the image name is rewritten on whole components, then matchRepoDigestOrExact', () => {
    check({ type: 'remapIdentity', prefix: 'mirror.local:5000/quay', signedPrefix: 'quay.io' }, [
      ['mirror.local:5000/quay/ns/app:v1', 'quay.io/ns/app:v1', true],
      ['mirror.local:5000/quay/ns/app:v1', 'quay.io/ns/app:v2', false],
      [`mirror.local:5000/quay/ns/app@${D1}`, 'quay.io/ns/app:any', true],
      ['mirror.local:5000/quay/ns/app:v1', 'mirror.local:5000/quay/ns/app:v1', false],
      // "quayx" is not below the prefix: no remapping, so the plain rule applies.
      ['mirror.local:5000/quayx/app:v1', 'quay.io/x/app:v1', false],
      ['mirror.local:5000/quayx/app:v1', 'mirror.local:5000/quayx/app:v1', true],
      // Unmatched images keep their own identity.
      ['other.example/app:v1', 'other.example/app:v1', true],
    ]);
    // The prefix may be the whole name.
    check({ type: 'remapIdentity', prefix: 'mirror.local/app', signedPrefix: 'quay.io/ns/app' }, [
      ['mirror.local/app:v1', 'quay.io/ns/app:v1', true],
    ]);
    // A remap whose result is not canonical matches nothing.
    check({ type: 'remapIdentity', prefix: 'mirror.local', signedPrefix: 'docker.io' }, [
      ['mirror.local/busybox:1', 'docker.io/library/busybox:1', false],
      ['mirror.local/library/busybox:1', 'docker.io/library/busybox:1', true],
    ]);
  });
});
