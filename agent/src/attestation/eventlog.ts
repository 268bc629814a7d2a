// Event logs sent with TDX evidence: the firmware CCEL and our own AA event
// log (AAEL), both in TCG2 crypto-agile encoding, so the verifier can replay
// them into RTMR0..3 (Trustee kbs/docs/confidential-containers-eventlog.md).

import { createHash } from 'node:crypto';
import { open, readFile } from 'node:fs/promises';
import { AttesterError } from './errors.ts';
import { InvalidArgument } from '../errors.ts';

/** TCG EV_EVENT_TAG and the tagged-event id "AAEL". */
const EV_EVENT_TAG = 0x6;
const AAEL_TAGGED_EVENT_ID = 0x4141454c;
/** TCG algorithm id of SHA-384. */
const TPM_ALG_SHA384 = 0x000c;
const DIGEST_SIZES: Readonly<Record<number, number>> = { 0x0b: 32, 0x0c: 48, 0x0d: 64, 0x12: 32 };

/**
 * Spec-ID header put ahead of the AAEL when there is no CCEL: one
 * EV_NO_ACTION entry announcing SHA-384 (48) and SM3 (32) digests, as
 * guest-components' attester utils do.
 */
export const EVENTLOG_HEADER: Buffer = (() => {
  const h = Buffer.alloc(69);
  h.writeUInt32LE(3, 4); // EV_NO_ACTION
  h.writeUInt32LE(0x25, 28); // event size
  h.writeUInt32LE(2, 56); // number of algorithms
  h.writeUInt16LE(0x0c, 60);
  h.writeUInt16LE(0x30, 62);
  h.writeUInt16LE(0x12, 64);
  h.writeUInt16LE(0x20, 66);
  return h;
})();

/** Terminator appended after the last entry. */
export const EVENTLOG_END = Buffer.alloc(8, 0xff);

export interface AaelEvent {
  readonly domain: string;
  readonly operation: string;
  readonly content: string;
}

/** "<domain> <operation> <content>": domain and operation are single words, content a single line. */
export function aaelText(ev: AaelEvent): string {
  if (!/^\S+$/.test(ev.domain) || !/^\S+$/.test(ev.operation)) throw new InvalidArgument('event domain and operation must be non-empty words without spaces');
  if (/[\n\r]/.test(ev.content)) throw new InvalidArgument('event content must not contain a newline');
  return `${ev.domain} ${ev.operation} ${ev.content}`;
}

/**
 * One AAEL entry as a TCG2 event: {u32 CC-MR index, u32 EV_EVENT_TAG,
 * u32 digest count = 1, u16 alg, digest, u32 size, tagged event}; the
 * digest is SHA-384 of the tagged event, and is what gets extended.
 */
export function aaelEntry(ev: AaelEvent, ccmr: number): { bytes: Buffer; digest: Buffer } {
  const text = Buffer.from(aaelText(ev), 'utf8');
  const tagged = Buffer.alloc(8 + text.length);
  tagged.writeUInt32LE(AAEL_TAGGED_EVENT_ID, 0);
  tagged.writeUInt32LE(text.length, 4);
  text.copy(tagged, 8);
  const digest = createHash('sha384').update(tagged).digest();
  const head = Buffer.alloc(14);
  head.writeUInt32LE(ccmr, 0);
  head.writeUInt32LE(EV_EVENT_TAG, 4);
  head.writeUInt32LE(1, 8);
  head.writeUInt16LE(TPM_ALG_SHA384, 12);
  const size = Buffer.alloc(4);
  size.writeUInt32LE(tagged.length);
  return { bytes: Buffer.concat([head, digest, size, tagged]), digest };
}

/**
 * Cut a CCEL ACPI table at its terminator (8 bytes of 0xFF or 0x00): the
 * table is a fixed size and the rest is padding. The first entry is the
 * TCG1.2-format spec-ID event; the rest are TCG2 events.
 */
export function trimCcel(ccel: Buffer): Buffer {
  const need = (n: number): void => {
    if (pos + n > ccel.length) throw new AttesterError('CCEL is truncated');
  };
  let pos = 4;
  need(4);
  const firstType = ccel.readUInt32LE(pos);
  pos += 4 + 20;
  if (firstType === 3) {
    need(4);
    pos += 4 + ccel.readUInt32LE(pos);
  }
  for (;;) {
    need(8);
    const word = ccel.subarray(pos, pos + 8);
    if (word.every((x) => x === 0xff) || word.every((x) => x === 0)) return ccel.subarray(0, pos);
    pos += 8;
    need(4);
    const count = ccel.readUInt32LE(pos);
    pos += 4;
    for (let i = 0; i < count; i++) {
      need(2);
      const size = DIGEST_SIZES[ccel.readUInt16LE(pos)];
      if (size === undefined) throw new AttesterError('CCEL uses an unsupported digest algorithm');
      pos += 2 + size;
    }
    need(4);
    pos += 4 + ccel.readUInt32LE(pos);
  }
}

async function readIfExists(path: string): Promise<Buffer | undefined> {
  try {
    return await readFile(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new AttesterError(`cannot read event log ${path}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`);
  }
}

/** CCEL (trimmed) then AAEL, with the spec-ID header when there is no CCEL, then the terminator; undefined when neither exists. */
export async function readEventLog(ccelPath: string, aaelPath: string): Promise<Buffer | undefined> {
  const parts: Buffer[] = [];
  const ccel = await readIfExists(ccelPath);
  if (ccel) parts.push(trimCcel(ccel));
  const aael = await readIfExists(aaelPath);
  if (aael) {
    if (parts.length === 0) parts.push(EVENTLOG_HEADER);
    parts.push(aael);
  }
  if (parts.length === 0) return undefined;
  parts.push(EVENTLOG_END);
  return Buffer.concat(parts);
}

/** Append one entry and flush it to the medium before returning. */
export async function appendEntry(path: string, bytes: Buffer): Promise<void> {
  const fh = await open(path, 'a', 0o600);
  try {
    await fh.write(bytes);
    await fh.datasync();
  } finally {
    await fh.close();
  }
}
