import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { OfflineKeyStore, OfflineStoreError } from '../../agent/src/attestation/offline-store.ts';
import { ResourceNotFound, parseResourceUri } from '../../agent/src/resource.ts';

const dir = mkdtempSync(join(tmpdir(), 'offline-'));
const keys = join(dir, 'keys.json');
const resources = join(dir, 'resources.json');
writeFileSync(keys, JSON.stringify({ 'default/key/1': Buffer.alloc(32, 7).toString('base64') }));
writeFileSync(resources, JSON.stringify({ 'default/policy/a': Buffer.from('{"default":[]}').toString('base64'), 'default/bad/x': 'not base64!' }));

test('looks up repo/type/tag across the keys and resources files', async () => {
  const s = new OfflineKeyStore([keys, resources, join(dir, 'missing.json')]);
  assert.deepEqual(await s.get(parseResourceUri('kbs:///default/key/1')), Buffer.alloc(32, 7));
  assert.equal((await s.get(parseResourceUri('kbs://ignored:1/default/policy/a'))).toString(), '{"default":[]}');
});

test('missing entries are NOT_FOUND; corrupt entries are a clear error', async () => {
  const s = new OfflineKeyStore([keys, resources]);
  await assert.rejects(s.get(parseResourceUri('kbs:///default/key/2')), ResourceNotFound);
  await assert.rejects(s.get(parseResourceUri('kbs:///default/bad/x')), OfflineStoreError);
  writeFileSync(join(dir, 'broken.json'), '{');
  await assert.rejects(new OfflineKeyStore([join(dir, 'broken.json')]).get(parseResourceUri('kbs:///a/b/c')), /not valid JSON/);
});
