// The TDX attester's real code against a fake sysfs/configfs tree whose
// kernel side (report entries, quotes, RTMR extension) is emulated.

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AttestationAgent } from '../../agent/src/attestation/aa.ts';
import { createAttester, detectTee } from '../../agent/src/attestation/attester.ts';
import { AttesterError, InblobConflict, InitDataMismatch } from '../../agent/src/attestation/errors.ts';
import { EVENTLOG_END, EVENTLOG_HEADER } from '../../agent/src/attestation/eventlog.ts';
import { createAttestation } from '../../agent/src/attestation/index.ts';
import { extendRegister } from '../../agent/src/attestation/rtmr.ts';
import { parseTdxQuote } from '../../agent/src/attestation/tdx-quote.ts';
import { TdxAttester, tdxPaths } from '../../agent/src/attestation/tdx.ts';
import { resolveConfig, type AgentConfig } from '../../agent/src/config/index.ts';
import { Code } from '../../agent/src/errors.ts';
import { createLogger } from '../../agent/src/log.ts';
import { INITDATA } from '../fixtures/initdata.ts';
import { fakeQuoteCount, fakeRtmr, installFakeTdxKernel, makeFakeTdxTree, setInblobRace, type FakeTdxOptions, type FakeTdxTree } from '../fixtures/tdx-guest.ts';

const log = createLogger('silent');
const base = mkdtempSync(join(tmpdir(), 'tdx-test-'));
let n = 0;
const uninstallers: Array<() => void> = [];
after(() => uninstallers.forEach((u) => u()));

function guest(opts: FakeTdxOptions = {}, extra = ''): { tree: FakeTdxTree; config: AgentConfig; dir: string } {
  const dir = join(base, String(n++));
  const tree = makeFakeTdxTree(dir, opts);
  uninstallers.push(installFakeTdxKernel(tree));
  const text = `[attestation]\ntee = "auto"\nsysfs_root = "${tree.sysfsRoot}"\nconfigfs_root = "${tree.configfsRoot}"\neventlog_path = "${dir}/run/eventlog"\ninitdata = "${dir}/initdata.toml"\n${extra}`;
  return { tree, dir, config: resolveConfig({ file: { path: 'test.toml', text } }) };
}

test('detection: the fake tree is TDX, an empty root or another provider is not', async () => {
  const g = guest();
  assert.equal(await detectTee(g.config.attestation), 'tdx');
  assert.deepEqual(readdirSync(g.tree.reportDir), [], 'the probe entry is removed');
  const empty = mkdtempSync(join(base, 'empty-'));
  assert.equal(await detectTee({ ...g.config.attestation, sysfs_root: empty, configfs_root: empty }), 'sample');
  const sev = guest({ provider: 'sev_guest\n' });
  assert.equal(await TdxAttester.probe(tdxPaths(sev.config.attestation)), false);
  assert.equal(await TdxAttester.probe(tdxPaths(g.config.attestation)), true);
});

test('evidence: configfs-tsm quote with REPORTDATA = digest padded to 64, entry removed after', async () => {
  const g = guest();
  const attester = await createAttester(g.config, log);
  assert.equal(attester.tee, 'tdx');
  const digest = createHash('sha384').update('runtime data').digest();
  const ev = await attester.evidence(digest);
  assert.equal(ev.cc_eventlog, null);
  const quote = parseTdxQuote(Buffer.from(ev.quote as string, 'base64'));
  assert.deepEqual(quote.body.reportData, Buffer.concat([digest, Buffer.alloc(16)]));
  assert.deepEqual(readdirSync(g.tree.reportDir), []);
  assert.equal(fakeQuoteCount(g.dir), 1);
  await assert.rejects(attester.evidence(Buffer.alloc(65)), AttesterError);
});

test('a concurrent inblob writer (generation > 1) is an ABORTED error, and the entry is still removed', async () => {
  const g = guest();
  const attester = await createAttester(g.config, log);
  setInblobRace(g.dir, true);
  await assert.rejects(attester.evidence(Buffer.alloc(48)), (e: InblobConflict) => e instanceof InblobConflict && e.code === Code.ABORTED);
  assert.deepEqual(readdirSync(g.tree.reportDir), []);
  setInblobRace(g.dir, false);
  assert.ok(await attester.evidence(Buffer.alloc(48)));
});

test('a report entry from another provider is refused', async () => {
  const g = guest({ provider: 'sev_guest\n' });
  const attester = await createAttester(g.config, log, 'tdx');
  await assert.rejects(attester.evidence(Buffer.alloc(48)), /provider is "sev_guest"/);
  assert.deepEqual(readdirSync(g.tree.reportDir), []);
});

test('ExtendRuntimeMeasurement: AAEL entry written, RTMR3 extended, and the log replays to the register', async () => {
  const g = guest();
  const attester = await createAttester(g.config, log);
  const a = g.config.attestation;
  const aa = new AttestationAgent({ attester, kbs: undefined, eventlog: { enabled: true, path: a.eventlog_path, pcr: a.eventlog_pcr }, log });
  const events = [
    { domain: 'github.com/confidential-containers', operation: 'PullImage', content: 'docker.io/library/busybox@sha256:abc' },
    { domain: 'github.com/confidential-containers', operation: 'CreateContainer', content: 'pod-1 ctr-1' },
  ];
  assert.deepEqual(await Promise.all(events.map((e) => aa.extendRuntimeMeasurement(e))), ['OK', 'OK']);
  // Replay the log: each entry's digest extends the register its CC-MR index names.
  const logBytes = readFileSync(a.eventlog_path);
  let rtmr3: Buffer = Buffer.alloc(48);
  for (let pos = 0; pos < logBytes.length; ) {
    assert.equal(logBytes.readUInt32LE(pos), 4, 'CC-MR 4 = RTMR3');
    const digest = logBytes.subarray(pos + 14, pos + 62);
    rtmr3 = extendRegister(rtmr3, digest);
    pos += 66 + logBytes.readUInt32LE(pos + 62);
  }
  assert.deepEqual(fakeRtmr(g.dir, 3), rtmr3);
  assert.deepEqual(await attester.measurements!.read(17), rtmr3);
  assert.deepEqual(fakeRtmr(g.dir, 2), Buffer.alloc(48));
  // PCR 8 maps to RTMR2.
  assert.equal(await aa.extendRuntimeMeasurement({ domain: 'd', operation: 'o', content: 'c' }, 8), 'OK');
  assert.notDeepEqual(fakeRtmr(g.dir, 2), Buffer.alloc(48));
  // The evidence now carries header + AAEL + terminator, and the quote shows the new RTMR3.
  const ev = await attester.evidence(Buffer.alloc(48));
  const el = Buffer.from(ev.cc_eventlog as string, 'base64');
  assert.deepEqual(el, Buffer.concat([EVENTLOG_HEADER, readFileSync(a.eventlog_path), EVENTLOG_END]));
  assert.deepEqual(parseTdxQuote(Buffer.from(ev.quote as string, 'base64')).body.rtmr3, rtmr3);
  const disabled = new AttestationAgent({ attester, kbs: undefined, eventlog: { enabled: false, path: a.eventlog_path, pcr: 17 }, log });
  assert.equal(await disabled.extendRuntimeMeasurement(events[0]!), 'NOT_ENABLED');
});

test('without sysfs measurements: no extension (NOT_SUPPORTED), MRCONFIGID read from a quote', async () => {
  const digest = createHash('sha256').update(INITDATA).digest();
  const g = guest({ measurements: false, mrConfigId: Buffer.concat([digest, Buffer.alloc(16)]) });
  const attester = await createAttester(g.config, log, 'tdx');
  assert.equal(attester.measurements, undefined);
  const aa = new AttestationAgent({ attester, kbs: undefined, eventlog: { enabled: true, path: g.config.attestation.eventlog_path, pcr: 17 }, log });
  assert.equal(await aa.extendRuntimeMeasurement({ domain: 'd', operation: 'o', content: 'c' }), 'NOT_SUPPORTED');
  assert.equal(await attester.bindInitData(digest), 'ok');
  await assert.rejects(attester.bindInitData(createHash('sha256').update('other').digest()), InitDataMismatch);
});

test('initdata is bound at start: a matching MRCONFIGID starts, a mismatch refuses to', async () => {
  const digest = createHash('sha384').update(INITDATA).digest();
  const good = guest({ mrConfigId: digest });
  writeFileSync(join(good.dir, 'initdata.toml'), INITDATA);
  const att = await createAttestation(good.config, log);
  assert.deepEqual(att.initdata?.digest, digest);
  await att.agent.bindInitData(digest);
  await assert.rejects(att.agent.bindInitData(Buffer.alloc(48, 1)), (e: InitDataMismatch) => e.code === Code.FAILED_PRECONDITION);
  await att.close();

  const bad = guest({ mrConfigId: Buffer.alloc(48, 9) });
  writeFileSync(join(bad.dir, 'initdata.toml'), INITDATA);
  await assert.rejects(createAttestation(bad.config, log), InitDataMismatch);
});
