import { test } from 'node:test';
import assert from 'node:assert/strict';
import { InvalidArgument } from '../agent/src/errors.ts';
import { parseResourceUri } from '../agent/src/resource.ts';

test('resource URIs: host ignored, three segments, plugin from the scheme', () => {
  assert.deepEqual(parseResourceUri('kbs:///default/key/1'), { plugin: 'resource', repository: 'default', type: 'key', tag: '1', query: '', text: 'kbs:///default/key/1' });
  assert.equal(parseResourceUri('kbs://kbs.example:8080/a/b/c').text, 'kbs:///a/b/c');
  assert.equal(parseResourceUri('kbs+plugin2:///a/b/c?x=1').plugin, 'plugin2');
  assert.equal(parseResourceUri('kbs+plugin2:///a/b/c?x=1').text, 'kbs+plugin2:///a/b/c?x=1');
});

test('malformed resource URIs are INVALID_ARGUMENT', () => {
  for (const bad of ['kbs:///a/b', 'kbs:///a/b/c/d', 'kbs:///a//c', 'http:///a/b/c', 'kbs:///a/../c', 'kbs:///a/%2F/c', 'nonsense']) {
    assert.throws(() => parseResourceUri(bad), InvalidArgument, bad);
  }
});
