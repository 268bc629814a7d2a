import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { InvalidInitData } from '../../agent/src/attestation/errors.ts';
import { loadInitData, parseInitData } from '../../agent/src/attestation/initdata.ts';
import { INITDATA } from '../fixtures/initdata.ts';


test('the digest is over the exact bytes delivered, with the named algorithm', () => {
  const d = parseInitData(INITDATA);
  assert.equal(d.algorithm, 'sha384');
  assert.deepEqual(d.digest, createHash('sha384').update(INITDATA).digest());
  assert.equal(d.data['policy.rego'], 'package agent_policy');
  // Same document, one more blank line: another digest.
  assert.notDeepEqual(parseInitData(INITDATA + '\n').digest, d.digest);
  assert.equal(parseInitData(INITDATA.replace('sha384', 'sha256')).digest.length, 32);
  assert.equal(parseInitData(INITDATA.replace('sha384', 'sha512')).digest.length, 64);
});

test('only lowercase sha256/384/512; bad TOML and bad [data] are refused', () => {
  assert.throws(() => parseInitData(INITDATA.replace('sha384', 'sha-256')), InvalidInitData);
  assert.throws(() => parseInitData(INITDATA.replace('sha384', 'SHA384')), InvalidInitData);
  assert.throws(() => parseInitData('version = '), InvalidInitData);
  assert.throws(() => parseInitData('algorithm = "sha256"\n'), /version/);
  assert.throws(() => parseInitData('version = "0.1.0"\nalgorithm = "sha256"\n[data]\nx = 1\n'), /\[data\]/);
});

test('no file means no initdata', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'initdata-'));
  assert.equal(await loadInitData(join(dir, 'initdata.toml')), undefined);
  assert.equal(await loadInitData(''), undefined);
  writeFileSync(join(dir, 'initdata.toml'), INITDATA);
  assert.equal((await loadInitData(join(dir, 'initdata.toml')))?.toml, INITDATA);
});
