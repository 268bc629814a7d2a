import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { KbsNotConfigured } from '../../agent/src/attestation/errors.ts';
import { KbsClient } from '../../agent/src/attestation/kbs-client.ts';
import { createKeySource } from '../../agent/src/attestation/key-sources.ts';
import { SampleAttester } from '../../agent/src/attestation/sample.ts';
import { resolveConfig } from '../../agent/src/config/index.ts';
import { createLogger } from '../../agent/src/log.ts';
import { parseResourceUri } from '../../agent/src/resource.ts';
import { startKbs } from '../helpers/kbs.ts';

const deps = { attester: new SampleAttester(), log: createLogger('silent') };
const config = (toml: string, cmdline?: string) => resolveConfig({ file: { path: 't.toml', text: toml }, cmdline });

test('default (offline_fs_kbc): the offline key files, no KBS client', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'ks-'));
  writeFileSync(join(dir, 'k.json'), JSON.stringify({ 'default/key/1': Buffer.from('offline').toString('base64') }));
  const ks = await createKeySource(config(`[kbc]\noffline_keys = "${dir}/k.json"\noffline_resources = "${dir}/none.json"\n`), deps);
  assert.equal(ks.kbs, undefined);
  assert.equal((await ks.get(parseResourceUri('kbs:///default/key/1'))).toString(), 'offline');
  await ks.close();
});

test('cc_kbc from agent.aa_kbc_params: the KBS, attested once for all resources', async () => {
  const kbs = await startKbs({ resources: { 'default/key/1': 'from kbs', 'default/key/2': 'also' } });
  try {
    const ks = await createKeySource(config('', `agent.aa_kbc_params=cc_kbc::${kbs.url}`), deps);
    assert.ok(ks.kbs instanceof KbsClient);
    assert.equal((await ks.get(parseResourceUri('kbs:///default/key/1'))).toString(), 'from kbs');
    assert.equal((await ks.get(parseResourceUri('kbs://ignored:8080/default/key/2'))).toString(), 'also');
    assert.equal(kbs.stats.attest, 1);
    await ks.close();
  } finally {
    await kbs.stop();
  }
});

test('cc_kbc without a URL, or with an unreadable CA file, stops at start', async () => {
  await assert.rejects(createKeySource(config('[kbc]\nname = "cc_kbc"\n'), deps), KbsNotConfigured);
  await assert.rejects(createKeySource(config('[kbc]\nname = "cc_kbc"\nurl = "ftp://x"\n'), deps), /http\(s\) URL/);
  await assert.rejects(createKeySource(config('[kbc]\nname = "cc_kbc"\nurl = "https://127.0.0.1:1"\ncert = "/nonexistent/ca.pem"\n'), deps), /cannot read kbc.cert/);
});
