import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseTdxQuote } from '../../agent/src/attestation/tdx-quote.ts';
import { makeFakeTdxTree } from '../fixtures/tdx-guest.ts';
import { AGENT_BIN } from '../helpers/agent.ts';

const PRELOAD = new URL('../fixtures/tdx-kernel-preload.ts', import.meta.url).pathname;
const dir = mkdtempSync(join(tmpdir(), 'cli-attest-'));
writeFileSync(join(dir, 'cmdline'), '');
const run = (args: string[], env: NodeJS.ProcessEnv = process.env) =>
  spawnSync(process.execPath, [AGENT_BIN, 'attest', '--cmdline', join(dir, 'cmdline'), ...args], { encoding: 'utf8', env });

test('tee-agent attest --tee sample prints sample evidence for the runtime data', () => {
  const r = run(['--tee', 'sample', '--runtime-data', '00ff']);
  assert.equal(r.status, 0, r.stderr);
  assert.deepEqual(JSON.parse(r.stdout), { tee: 'sample', evidence: { svn: '1', report_data: 'AP8=' } });
});

test('tee-agent attest --tee tdx quotes through configfs-tsm (fake kernel)', () => {
  const tree = makeFakeTdxTree(join(dir, 'tdx'));
  writeFileSync(join(dir, 'tdx.toml'), `[attestation]\nsysfs_root = "${tree.sysfsRoot}"\nconfigfs_root = "${tree.configfsRoot}"\neventlog_path = "${dir}/none"\n`);
  const rd = 'ab'.repeat(48);
  const r = run(['--tee', 'tdx', '--runtime-data', rd, '--config', join(dir, 'tdx.toml')], { ...process.env, NODE_OPTIONS: `--import=${PRELOAD}`, TEE_AGENT_FAKE_TDX: tree.root });
  assert.equal(r.status, 0, r.stderr);
  const out = JSON.parse(r.stdout) as { tee: string; evidence: { quote: string; cc_eventlog: null } };
  assert.equal(out.tee, 'tdx');
  assert.equal(out.evidence.cc_eventlog, null);
  assert.equal(parseTdxQuote(Buffer.from(out.evidence.quote, 'base64')).body.reportData.toString('hex'), rd + '00'.repeat(16));
});

test('usage errors exit 2; --help exits 0; a missing TEE is a clear error', () => {
  assert.equal(run(['--runtime-data', 'xyz']).status, 2);
  assert.equal(run(['--runtime-data', '00'.repeat(65)]).status, 2);
  assert.equal(run(['--tee', 'snp']).status, 2);
  const help = run(['--help']);
  assert.equal(help.status, 0);
  assert.match(help.stdout, /Usage: tee-agent attest/);
  writeFileSync(join(dir, 'empty.toml'), `[attestation]\nsysfs_root = "${dir}/nosys"\nconfigfs_root = "${dir}/nocfg"\n`);
  const r = run(['--tee', 'tdx', '--config', join(dir, 'empty.toml')]);
  assert.equal(r.status, 1);
  assert.match(r.stderr, /cannot create a TSM report entry/);
});
