import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { OfflineKeyStore } from '../../agent/src/attestation/offline-store.ts';
import { resolveConfig } from '../../agent/src/config/index.ts';
import { authLoader, pullSettings } from '../../agent/src/image/setup.ts';
import { RegistryConfigError } from '../../agent/src/image/registry-errors.ts';
import { createLogger } from '../../agent/src/log.ts';

const dir = mkdtempSync(join(tmpdir(), 'image-setup-'));
test.after(() => rmSync(dir, { recursive: true, force: true }));
const b64 = (s: string): string => Buffer.from(s).toString('base64');

test('auth.json from a file, re-read at each pull; missing file is a clear error', async () => {
  const f = join(dir, 'auth.json');
  writeFileSync(f, JSON.stringify({ auths: { 'r.example': { auth: b64('u:1') } } }));
  const load = authLoader(f, undefined);
  assert.deepEqual((await load()).lookup('r.example', 'x'), { username: 'u', password: '1' });
  writeFileSync(f, JSON.stringify({ auths: { 'r.example': { auth: b64('u:2') } } }));
  assert.deepEqual((await load()).lookup('r.example', 'x'), { username: 'u', password: '2' });
  await assert.rejects(authLoader(join(dir, 'nope.json'), undefined)(), (e: Error) => e instanceof RegistryConfigError && /cannot read \(ENOENT\)/.test(e.message));
  assert.equal((await authLoader('', undefined)()).size, 0);
});

test('auth.json from a kbs:/// resource through a key source, fetched once', async () => {
  const keys = join(dir, 'resources.json');
  writeFileSync(keys, JSON.stringify({ 'default/credential/test': b64(JSON.stringify({ auths: { 'quay.io': { auth: b64('kbsuser:kbspass') } } })) }));
  let gets = 0;
  const store = new OfflineKeyStore([keys]);
  const counting = { get: (...a: Parameters<OfflineKeyStore['get']>) => (gets++, store.get(...a)) };
  const load = authLoader('kbs:///default/credential/test', counting);
  assert.deepEqual((await load()).lookup('quay.io', 'a/b'), { username: 'kbsuser', password: 'kbspass' });
  await load();
  assert.equal(gets, 1);
  await assert.rejects(authLoader('kbs:///default/credential/test', undefined)(), /no key source/);
});

test('settings from config: platform, insecure hosts, registries.conf errors name the file', () => {
  const log = createLogger('silent');
  const conf = join(dir, 'registries.conf');
  writeFileSync(conf, 'unqualified-search-registries = ["quay.io"]\n');
  const config = resolveConfig({ file: { path: 'c.toml', text: `[image]\nplatform = "linux/arm64/v8"\nregistries = ${JSON.stringify(conf)}\n[registry]\ninsecure = ["Reg.Local:5000"]\n` } });
  const s = pullSettings(config, log, ['other:1']);
  assert.deepEqual(s.platform, { os: 'linux', architecture: 'arm64', variant: 'v8' });
  assert.deepEqual([...s.insecureHosts].sort(), ['other:1', 'reg.local:5000']);
  assert.deepEqual(s.registries.unqualifiedSearch, ['quay.io']);
  assert.equal(pullSettings(resolveConfig({}), log).platform.architecture, process.arch === 'x64' ? 'amd64' : process.arch);
  writeFileSync(conf, '[[registry]]\nprefix = 3\n');
  assert.throws(() => pullSettings(config, log), (e: Error) => e instanceof RegistryConfigError && e.message.includes(conf));
  assert.throws(() => pullSettings(resolveConfig({ file: { path: 'c', text: '[image]\nregistries = "/nonexistent/r.conf"' } }), log), /cannot read/);
});
