// Scope candidates and normalised names.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseReference } from '../../agent/src/image/reference.ts';
import { formatNamed, isNameOnly, parseNamed, scopeCandidates } from '../../agent/src/signature/names.ts';

test('scope candidates, most specific first', () => {
  assert.deepEqual(scopeCandidates(parseReference('registry.example.com:5000/a/b/c:v1')), [
    'registry.example.com:5000/a/b/c:v1',
    'registry.example.com:5000/a/b/c',
    'registry.example.com:5000/a/b',
    'registry.example.com:5000/a',
    'registry.example.com:5000',
    '*.example.com',
    '*.com',
  ]);
  assert.deepEqual(scopeCandidates(parseReference('busybox')), ['docker.io/library/busybox:latest', 'docker.io/library/busybox', 'docker.io/library', 'docker.io', '*.io']);
  assert.deepEqual(scopeCandidates(parseReference('localhost:5000/x@sha256:' + 'e'.repeat(64))), ['localhost:5000/x@sha256:' + 'e'.repeat(64), 'localhost:5000/x', 'localhost:5000']);
  assert.deepEqual(scopeCandidates(parseReference('[::1]:5000/x:1')), ['[::1]:5000/x:1', '[::1]:5000/x', '[::1]:5000']);
});

test('names keep "no tag" apart from ":latest"', () => {
  assert.deepEqual(parseNamed('busybox'), { name: 'docker.io/library/busybox' });
  assert.ok(isNameOnly(parseNamed('example.com:5000/app')));
  assert.deepEqual(parseNamed('example.com:5000/app:latest'), { name: 'example.com:5000/app', tag: 'latest' });
  assert.equal(formatNamed(parseNamed('index.docker.io/foo/bar:1')), 'docker.io/foo/bar:1');
  assert.throws(() => parseNamed('UPPER/case'));
});
