import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { aaelEntry, EVENTLOG_END, EVENTLOG_HEADER, readEventLog, trimCcel } from '../../agent/src/attestation/eventlog.ts';
import { AttesterError } from '../../agent/src/attestation/errors.ts';
import { InvalidArgument } from '../../agent/src/errors.ts';

test('AAEL entry: TCG2 EV_EVENT_TAG with the upstream SHA-384 vector', () => {
  const { bytes, digest } = aaelEntry({ domain: 'domain', operation: 'operation', content: 'content' }, 4);
  assert.equal(digest.toString('hex'), 'dad5f0e226318ffa9839b75a472c6aa7fdb5834949d0a0a22990cf04d5692440fb00f3aa0609db7e49cd8d793f670d02');
  assert.equal(bytes.readUInt32LE(0), 4); // CC-MR index (RTMR3)
  assert.equal(bytes.readUInt32LE(4), 6); // EV_EVENT_TAG
  assert.equal(bytes.readUInt32LE(8), 1); // one digest
  assert.equal(bytes.readUInt16LE(12), 0x0c); // SHA-384
  assert.deepEqual(bytes.subarray(14, 62), digest);
  const text = 'domain operation content';
  assert.equal(bytes.readUInt32LE(62), 8 + text.length);
  assert.equal(bytes.readUInt32LE(66), 0x4141454c); // "AAEL"
  assert.equal(bytes.readUInt32LE(70), text.length);
  assert.equal(bytes.subarray(74).toString(), text);
});

test('AAEL text: content is one line, domain and operation are words', () => {
  assert.throws(() => aaelEntry({ domain: 'd', operation: 'o', content: 'a\nb' }, 4), InvalidArgument);
  assert.throws(() => aaelEntry({ domain: 'two words', operation: 'o', content: 'c' }, 4), InvalidArgument);
  assert.throws(() => aaelEntry({ domain: '', operation: 'o', content: 'c' }, 4), InvalidArgument);
  assert.ok(aaelEntry({ domain: 'd', operation: 'o', content: 'has spaces inside' }, 4));
});

test('the spec-ID header is the fixed 69 bytes guest-components puts ahead of an AAEL', () => {
  assert.equal(
    EVENTLOG_HEADER.toString('hex'),
    '0000000003000000' + '00'.repeat(20) + '25000000' + '00'.repeat(24) + '02000000' + '0c003000' + '12002000' + '00',
  );
  assert.deepEqual(EVENTLOG_END, Buffer.alloc(8, 0xff));
});

/** A CCEL as firmware lays it out: TCG1.2 spec-ID event, TCG2 events, then padding. */
function ccel(padding: number, fill: number): { table: Buffer; used: number } {
  const specId = Buffer.alloc(32 + 16);
  specId.writeUInt32LE(0, 0);
  specId.writeUInt32LE(3, 4); // EV_NO_ACTION
  specId.writeUInt32LE(16, 28); // event data size
  const event = (mr: number, payload: string): Buffer => {
    const data = Buffer.from(payload);
    const e = Buffer.alloc(12 + 2 + 48 + 4 + data.length);
    e.writeUInt32LE(mr, 0);
    e.writeUInt32LE(0x80000001, 4);
    e.writeUInt32LE(1, 8);
    e.writeUInt16LE(0x0c, 12);
    e.fill(mr, 14, 62);
    e.writeUInt32LE(data.length, 62);
    data.copy(e, 66);
    return e;
  };
  const used = Buffer.concat([specId, event(1, 'firmware'), event(2, 'kernel cmdline')]);
  return { table: Buffer.concat([used, Buffer.alloc(padding, fill)]), used: used.length };
}

test('CCEL is cut at its 0xFF or 0x00 terminator', () => {
  for (const fill of [0xff, 0x00]) {
    const { table, used } = ccel(64, fill);
    assert.equal(trimCcel(table).length, used);
  }
  assert.throws(() => trimCcel(ccel(0, 0xff).table), AttesterError); // no terminator
  const bad = ccel(64, 0xff);
  bad.table.writeUInt16LE(0x99, 48 + 12); // unknown digest algorithm in the first TCG2 event
  assert.throws(() => trimCcel(bad.table), /unsupported digest/);
});

test('event log = CCEL (trimmed) or the spec-ID header, then the AAEL, then 8 × 0xFF', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'eventlog-'));
  const ccelPath = join(dir, 'CCEL');
  const aaelPath = join(dir, 'aael');
  assert.equal(await readEventLog(ccelPath, aaelPath), undefined);
  const entry = aaelEntry({ domain: 'd', operation: 'o', content: 'c' }, 4).bytes;
  writeFileSync(aaelPath, entry);
  assert.deepEqual(await readEventLog(ccelPath, aaelPath), Buffer.concat([EVENTLOG_HEADER, entry, EVENTLOG_END]));
  const { table, used } = ccel(100, 0xff);
  writeFileSync(ccelPath, table);
  assert.deepEqual(await readEventLog(ccelPath, aaelPath), Buffer.concat([table.subarray(0, used), entry, EVENTLOG_END]));
});
