// Strict validation of a private copy of a LUKS2 header, before it is used to
// open a volume whose disk the host controls. The host can rewrite the whole
// header; cryptsetup (before 2.8.1) then happily opens a volume whose segment
// cipher is cipher_null and writes plaintext (Trail of Bits 2025,
// CVE-2025-59054, CVE-2025-58356). So the copy must describe exactly the
// volume this agent formats: one keyslot, one segment with our cipher,
// integrity and sector size, one digest, no tokens, nothing unknown.
//
// The binary layout (LUKS2 on-disk format): two 4096-byte binary headers, each
// followed by its JSON area; magic "LUKS\xba\xbe" / "SKUL\xba\xbe", version 2,
// SHA-256 over header and JSON with the checksum field zeroed.

import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { isDeepStrictEqual } from 'node:util';
import { CIPHER, CIPHER_KEY_BITS, INTEGRITY_KEY_BITS, INTEGRITY_METADATA, SECTOR_SIZE, type Cryptsetup } from './cryptsetup.ts';
import { HeaderRejected, StorageCommandFailed } from './errors.ts';

export const MAGIC_PRIMARY = Buffer.from('LUKS\xba\xbe', 'latin1');
export const MAGIC_SECONDARY = Buffer.from('SKUL\xba\xbe', 'latin1');
const BINARY_HEADER = 4096;
const HDR_SIZES = new Set([16384, 32768, 65536, 131072, 262144, 524288, 1048576, 2097152, 4194304]);
const OFF = { version: 6, hdrSize: 8, seqid: 16, csumAlg: 72, hdrOffset: 256, csum: 448 } as const;

export interface BinaryHeader {
  readonly hdrSize: number;
  readonly seqid: bigint;
  readonly json: string;
}

/** Parses and checks one binary header plus its JSON area at `offset` of `buf`; returns a reason on failure. */
export function parseBinaryHeader(buf: Buffer, offset: number, magic: Buffer): BinaryHeader | string {
  const which = offset === 0 ? 'primary' : 'secondary';
  if (buf.length < offset + BINARY_HEADER) return `${which} header missing`;
  if (!buf.subarray(offset, offset + 6).equals(magic)) return `${which} header has no LUKS magic`;
  const version = buf.readUInt16BE(offset + OFF.version);
  if (version !== 2) return `${which} header is LUKS version ${version}, not 2`;
  const hdrSize = Number(buf.readBigUInt64BE(offset + OFF.hdrSize));
  if (!HDR_SIZES.has(hdrSize)) return `${which} header size ${hdrSize} is not a LUKS2 size`;
  if (Number(buf.readBigUInt64BE(offset + OFF.hdrOffset)) !== offset) return `${which} header records the wrong offset`;
  const alg = buf.subarray(offset + OFF.csumAlg, offset + OFF.csumAlg + 32).toString('latin1').replace(/\0+$/, '');
  if (alg !== 'sha256') return `${which} header checksum algorithm ${JSON.stringify(alg)} is not sha256`;
  if (buf.length < offset + hdrSize) return `${which} header is truncated`;
  const area = Buffer.from(buf.subarray(offset, offset + hdrSize));
  const stored = Buffer.from(area.subarray(OFF.csum, OFF.csum + 32));
  area.fill(0, OFF.csum, OFF.csum + 64);
  if (!createHash('sha256').update(area).digest().equals(stored)) return `${which} header checksum does not match`;
  const jsonArea = area.subarray(BINARY_HEADER);
  const end = jsonArea.indexOf(0);
  return { hdrSize, seqid: buf.readBigUInt64BE(offset + OFF.seqid), json: jsonArea.subarray(0, end < 0 ? jsonArea.length : end).toString('utf8') };
}

/** What the volume must look like: our cipher and sector size, with or without our integrity. */
export interface ExpectedVolume {
  readonly integrity: boolean;
}

export interface HeaderFacts {
  readonly hdrSize: number;
  /** Data offset on the device, bytes. */
  readonly dataOffset: number;
  readonly keyBits: number;
  readonly kdf: string;
}

type Obj = Record<string, unknown>;

/** Thrown inside the decoder; turned into HeaderRejected naming the device. */
class Reject extends Error {}

const fail = (reason: string): never => {
  throw new Reject(reason);
};

function obj(v: unknown, where: string, required: readonly string[], optional: readonly string[] = []): Obj {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return fail(`${where} is not an object`);
  const o = v as Obj;
  for (const k of Object.keys(o)) if (!required.includes(k) && !optional.includes(k)) fail(`${where} has unexpected field ${JSON.stringify(k)}`);
  for (const k of required) if (!(k in o)) fail(`${where} lacks ${JSON.stringify(k)}`);
  return o;
}

function eq(v: unknown, want: unknown, where: string): void {
  if (!isDeepStrictEqual(v, want)) fail(`${where} is ${JSON.stringify(v)}, expected ${JSON.stringify(want)}`);
}

/** LUKS2 JSON encodes 64-bit numbers as decimal strings. */
function u64(v: unknown, where: string): number {
  if (typeof v !== 'string' || !/^(0|[1-9]\d{0,15})$/.test(v)) return fail(`${where} is not a decimal string`);
  return Number(v);
}

function int(v: unknown, where: string, min: number, max: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) return fail(`${where} is ${JSON.stringify(v)}, expected an integer in [${min}, ${max}]`);
  return v;
}

function b64(v: unknown, where: string, bytes: number): void {
  if (typeof v !== 'string' || !/^[A-Za-z0-9+/]+={0,2}$/.test(v) || Buffer.from(v, 'base64').length !== bytes) fail(`${where} is not ${bytes} bytes of base64`);
}

function single(v: unknown, where: string): Obj {
  const n = Object.keys(obj(v, where, [], Object.keys(v ?? {}))).length;
  if (n !== 1) fail(`${where} has ${n} entries, expected exactly one (id "0")`);
  return obj(v, where, ['0']);
}

function checkCipher(v: unknown, where: string): void {
  if (typeof v === 'string' && v.startsWith('cipher_null')) {
    fail(`${where} is ${v}: data would be stored in plaintext (the LUKS2 header-swap attack, CVE-2025-59054)`);
  }
  eq(v, CIPHER, where);
}

function checkKdf(v: unknown): string {
  const type = (v as Obj | null)?.type;
  if (type === 'pbkdf2') {
    const k = obj(v, 'keyslot 0 kdf', ['type', 'hash', 'iterations', 'salt']);
    if (k.hash !== 'sha256' && k.hash !== 'sha512') fail(`keyslot 0 kdf hash ${JSON.stringify(k.hash)} is not sha256 or sha512`);
    int(k.iterations, 'keyslot 0 kdf iterations', 1000, 100_000_000);
    b64(k.salt, 'keyslot 0 kdf salt', 32);
    return `pbkdf2-${k.hash as string}`;
  }
  if (type === 'argon2id' || type === 'argon2i') {
    const k = obj(v, 'keyslot 0 kdf', ['type', 'time', 'memory', 'cpus', 'salt']);
    int(k.time, 'keyslot 0 kdf time', 4, 1_000_000);
    // Bounded so a hostile header cannot make the guest allocate more than 1 GiB.
    int(k.memory, 'keyslot 0 kdf memory', 32, 1_048_576);
    int(k.cpus, 'keyslot 0 kdf cpus', 1, 4);
    b64(k.salt, 'keyslot 0 kdf salt', 32);
    return type;
  }
  return fail(`keyslot 0 kdf type ${JSON.stringify(type)} is not pbkdf2, argon2i or argon2id`);
}

/**
 * Decodes the LUKS2 JSON metadata strictly against what this agent formats.
 * Returns facts about the volume or throws a reason string (via Reject).
 */
function decode(json: unknown, hdrSize: number, expected: ExpectedVolume): HeaderFacts {
  const top = obj(json, 'metadata', ['keyslots', 'tokens', 'segments', 'digests', 'config']);

  const config = obj(top.config, 'config', ['json_size', 'keyslots_size']);
  eq(u64(config.json_size, 'config json_size'), hdrSize - BINARY_HEADER, 'config json_size');
  const keyslotsSize = u64(config.keyslots_size, 'config keyslots_size');
  const metadataEnd = 2 * hdrSize + keyslotsSize;

  const tokens = Object.keys(obj(top.tokens, 'tokens', [], Object.keys(top.tokens ?? {})));
  if (tokens.length > 0) fail(`${tokens.length} token(s) present; this agent never writes any`);

  const seg = obj(single(top.segments, 'segments')['0'], 'segment 0', ['type', 'offset', 'size', 'iv_tweak', 'encryption', 'sector_size'], ['integrity']);
  eq(seg.type, 'crypt', 'segment 0 type');
  checkCipher(seg.encryption, 'segment 0 encryption');
  eq(seg.sector_size, SECTOR_SIZE, 'segment 0 sector_size');
  eq(seg.iv_tweak, '0', 'segment 0 iv_tweak');
  eq(seg.size, 'dynamic', 'segment 0 size');
  const dataOffset = u64(seg.offset, 'segment 0 offset');
  // The data must start after the header on the device, never inside it.
  if (dataOffset < metadataEnd || dataOffset % SECTOR_SIZE !== 0) fail(`segment 0 offset ${dataOffset} overlaps the header`);
  if (expected.integrity) {
    if (seg.integrity === undefined) fail(`segment 0 has no integrity, expected ${INTEGRITY_METADATA}`);
    const integ = obj(seg.integrity, 'segment 0 integrity', ['type', 'journal_encryption', 'journal_integrity']);
    eq(integ.type, INTEGRITY_METADATA, 'segment 0 integrity type');
    eq(integ.journal_encryption, 'none', 'segment 0 integrity journal_encryption');
    eq(integ.journal_integrity, 'none', 'segment 0 integrity journal_integrity');
  } else if (seg.integrity !== undefined) {
    fail('segment 0 has integrity, expected none');
  }

  const keyBytes = (CIPHER_KEY_BITS + (expected.integrity ? INTEGRITY_KEY_BITS : 0)) / 8;
  const ks = obj(single(top.keyslots, 'keyslots')['0'], 'keyslot 0', ['type', 'key_size', 'af', 'area', 'kdf']);
  eq(ks.type, 'luks2', 'keyslot 0 type');
  eq(ks.key_size, keyBytes, 'keyslot 0 key_size');
  const af = obj(ks.af, 'keyslot 0 af', ['type', 'stripes', 'hash']);
  eq(af.type, 'luks1', 'keyslot 0 af type');
  eq(af.stripes, 4000, 'keyslot 0 af stripes');
  eq(af.hash, 'sha256', 'keyslot 0 af hash');
  const area = obj(ks.area, 'keyslot 0 area', ['type', 'offset', 'size', 'encryption', 'key_size']);
  eq(area.type, 'raw', 'keyslot 0 area type');
  checkCipher(area.encryption, 'keyslot 0 area encryption');
  eq(area.key_size, CIPHER_KEY_BITS / 8, 'keyslot 0 area key_size');
  const areaOffset = u64(area.offset, 'keyslot 0 area offset');
  const areaSize = u64(area.size, 'keyslot 0 area size');
  if (areaOffset < 2 * hdrSize || areaOffset + areaSize > metadataEnd || areaSize < keyBytes * 4000) fail('keyslot 0 area lies outside the keyslots area');
  const kdf = checkKdf(ks.kdf);

  const dg = obj(single(top.digests, 'digests')['0'], 'digest 0', ['type', 'keyslots', 'segments', 'hash', 'iterations', 'salt', 'digest']);
  eq(dg.type, 'pbkdf2', 'digest 0 type');
  eq(dg.keyslots, ['0'], 'digest 0 keyslots');
  eq(dg.segments, ['0'], 'digest 0 segments');
  eq(dg.hash, 'sha256', 'digest 0 hash');
  int(dg.iterations, 'digest 0 iterations', 1000, 100_000_000);
  b64(dg.salt, 'digest 0 salt', 32);
  b64(dg.digest, 'digest 0 digest', 32);

  return { hdrSize, dataOffset, keyBits: keyBytes * 8, kdf };
}

/**
 * Validates a header copy: both binary headers intact and identical in what
 * they say, our own JSON parse equal to cryptsetup's (`luksDump
 * --dump-json-metadata` output), and that JSON strictly what we expect.
 */
export function validateHeaderCopy(device: string, copy: Buffer, dumpedJson: string, expected: ExpectedVolume): HeaderFacts {
  const primary = parseBinaryHeader(copy, 0, MAGIC_PRIMARY);
  if (typeof primary === 'string') throw new HeaderRejected(device, primary);
  const secondary = parseBinaryHeader(copy, primary.hdrSize, MAGIC_SECONDARY);
  if (typeof secondary === 'string') throw new HeaderRejected(device, secondary);
  if (secondary.hdrSize !== primary.hdrSize || secondary.seqid !== primary.seqid || secondary.json !== primary.json) {
    throw new HeaderRejected(device, 'primary and secondary headers differ');
  }
  let ours: unknown;
  let theirs: unknown;
  try {
    ours = JSON.parse(primary.json);
    theirs = JSON.parse(dumpedJson);
  } catch {
    throw new HeaderRejected(device, 'metadata is not valid JSON');
  }
  if (!isDeepStrictEqual(ours, theirs)) throw new HeaderRejected(device, 'cryptsetup reads different metadata than the header holds');
  try {
    return decode(ours, primary.hdrSize, expected);
  } catch (err) {
    if (err instanceof Reject) throw new HeaderRejected(device, err.message);
    throw err;
  }
}

/**
 * Validates the header copy file `copy` (from luksHeaderBackup) of `device`.
 * The copy must not change while cryptsetup reads it: a repair of one header
 * from the other would mean the two disagreed.
 */
export async function checkHeaderCopy(cs: Cryptsetup, device: string, copy: string, expected: ExpectedVolume): Promise<HeaderFacts> {
  const before = await readFile(copy);
  const primary = parseBinaryHeader(before, 0, MAGIC_PRIMARY);
  if (typeof primary === 'string') throw new HeaderRejected(device, primary);
  let dumped: string;
  try {
    dumped = await cs.dumpJson(copy);
  } catch (err) {
    if (err instanceof StorageCommandFailed) throw new HeaderRejected(device, `cryptsetup cannot read it (${err.message})`);
    throw err;
  }
  const after = await readFile(copy);
  if (!before.equals(after)) throw new HeaderRejected(device, 'cryptsetup rewrote the header copy while reading it');
  return validateHeaderCopy(device, before, dumped, expected);
}

/** Kind of content at the start of a device: a LUKS2 header, a LUKS1 one, or something else. */
export function luksVersionAt(start: Buffer): 1 | 2 | undefined {
  if (start.length < 8 || !start.subarray(0, 6).equals(MAGIC_PRIMARY)) return undefined;
  const v = start.readUInt16BE(6);
  return v === 1 || v === 2 ? v : undefined;
}
