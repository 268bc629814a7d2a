import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Code } from '../../agent/src/errors.ts';
import { Cryptsetup } from '../../agent/src/storage/cryptsetup.ts';
import { HeaderRejected } from '../../agent/src/storage/errors.ts';
import { processRunner } from '../../agent/src/storage/exec.ts';
import { checkHeaderCopy, luksVersionAt, parseBinaryHeader, MAGIC_PRIMARY } from '../../agent/src/storage/header.ts';
import { addKeyslot, importToken, makeVolume, rewriteMetadata } from '../fixtures/luks2.ts';

const dir = mkdtempSync(join(tmpdir(), 'tee-agent-luks-'));
test.after(() => rmSync(dir, { recursive: true, force: true }));
const cs = new Cryptsetup(processRunner);
const plain = { integrity: false };
const withIntegrity = { integrity: true };

// One real volume; mutations work on copies of its header backup.
const good = makeVolume(dir, 'good');

function variant(name: string, mutate: (meta: Record<string, any>) => void): string {
  const file = join(dir, `${name}.header`);
  writeFileSync(file, rewriteMetadata(readFileSync(good.copy), mutate));
  return file;
}

/** The JSON a real LUKS2 header with hmac-sha256 integrity carries, made from the plain one. */
function addIntegrity(meta: Record<string, any>): void {
  meta.keyslots['0'].key_size = 96;
  meta.keyslots['0'].area.size = String(385024);
  meta.segments['0'].integrity = { type: 'hmac(sha256)', journal_encryption: 'none', journal_integrity: 'none' };
}

async function rejected(file: string, expected: { integrity: boolean }, reason: RegExp): Promise<void> {
  await assert.rejects(checkHeaderCopy(cs, '/dev/vdt', file, expected), (err: unknown) => {
    assert.ok(err instanceof HeaderRejected, String(err));
    assert.equal(err.code, Code.FAILED_PRECONDITION);
    assert.match(err.message, /^LUKS2 header of \/dev\/vdt rejected: /);
    assert.match(err.message, reason);
    return true;
  });
}

test('a header made by cryptsetup as the agent formats it is accepted', async () => {
  const facts = await checkHeaderCopy(cs, good.device, good.copy, plain);
  assert.equal(facts.hdrSize, 16384);
  assert.equal(facts.dataOffset, 16 << 20);
  assert.equal(facts.keyBits, 512);
  assert.equal(facts.kdf, 'pbkdf2-sha256');
});

test('the same header with integrity metadata is accepted when integrity is expected, and refused otherwise', async () => {
  const file = variant('integrity', addIntegrity);
  const facts = await checkHeaderCopy(cs, '/dev/vdt', file, withIntegrity);
  assert.equal(facts.keyBits, 768);
  await rejected(file, plain, /segment 0 has integrity, expected none|keyslot 0 key_size/);
});

test('missing integrity is refused when integrity is expected', async () => {
  await rejected(good.copy, withIntegrity, /segment 0 has no integrity, expected hmac\(sha256\)/);
  // Integrity in the segment but a keyslot without the HMAC key: inconsistent, refused.
  await rejected(variant('integrity-64', (m) => (m.segments['0'].integrity = { type: 'hmac(sha256)', journal_encryption: 'none', journal_integrity: 'none' })), withIntegrity, /keyslot 0 key_size is 64, expected 96/);
  await rejected(variant('integrity-aead', (m) => {
        addIntegrity(m);
        m.segments['0'].integrity.type = 'aead';
      }), withIntegrity, /segment 0 integrity type is "aead", expected "hmac\(sha256\)"/);
});

test('the cipher_null header swap is refused with a clear error (CVE-2025-59054)', async () => {
  const seg = variant('null-segment', (m) => (m.segments['0'].encryption = 'cipher_null-ecb'));
  await rejected(seg, plain, /segment 0 encryption is cipher_null-ecb: data would be stored in plaintext/);
  const both = variant('null-both', (m) => {
    m.segments['0'].encryption = 'cipher_null-ecb';
    m.keyslots['0'].area.encryption = 'cipher_null-ecb';
  });
  await rejected(both, plain, /cipher_null/);
});

test('a second keyslot is refused', async () => {
  const two = makeVolume(dir, 'two', { extra: addKeyslot });
  await rejected(two.copy, plain, /keyslots has 2 entries, expected exactly one/);
});

test('a token is refused', async () => {
  const tok = makeVolume(dir, 'token', { extra: importToken });
  await rejected(tok.copy, plain, /1 token\(s\) present/);
});

test('a wrong sector size is refused', async () => {
  const small = makeVolume(dir, 'sector512', { sectorSize: 512 });
  await rejected(small.copy, plain, /segment 0 sector_size is 512, expected 4096/);
});

test('unknown fields anywhere are refused', async () => {
  await rejected(variant('unknown-top', (m) => (m.extra = {})), plain, /metadata has unexpected field "extra"/);
  await rejected(variant('unknown-seg', (m) => (m.segments['0'].flags = ['x'])), plain, /segment 0 has unexpected field "flags"/);
  await rejected(variant('unknown-config', (m) => (m.config.flags = ['allow-discards'])), plain, /config has unexpected field "flags"/);
  // cryptsetup itself refuses some edits; those are refused too, with its reason.
  await rejected(variant('requirements', (m) => (m.config.requirements = { mandatory: ['online-reencrypt'] })), plain, /cryptsetup cannot read it|unexpected field "requirements"/);
});

test('other tampering is refused: cipher, data offset, digest links, second segment', async () => {
  await rejected(variant('cbc', (m) => (m.segments['0'].encryption = 'aes-cbc-essiv:sha256')), plain, /segment 0 encryption is "aes-cbc-essiv:sha256"/);
  await rejected(variant('offset0', (m) => (m.segments['0'].offset = '0')), plain, /segment 0 offset 0 overlaps the header/);
  await rejected(variant('digest', (m) => (m.digests['0'].hash = 'sha512')), plain, /digest 0 hash is "sha512"/);
  await rejected(
    variant('twoseg', (m) => (m.segments['1'] = { ...m.segments['0'], offset: String(20 << 20) })),
    plain,
    /segments has 2 entries|cryptsetup cannot read it/,
  );
  await rejected(variant('weakkdf', (m) => (m.keyslots['0'].kdf.iterations = 1)), plain, /kdf iterations is 1/);
});

test('binary header damage is refused before cryptsetup parses anything', async () => {
  const bytes = readFileSync(good.copy);
  const flip = Buffer.from(bytes);
  flip[4096 + 10] = flip[4096 + 10]! ^ 1; // JSON byte: checksum no longer matches
  writeFileSync(join(dir, 'flip.header'), flip);
  await rejected(join(dir, 'flip.header'), plain, /primary header checksum does not match/);

  const v1 = Buffer.from(bytes);
  v1.writeUInt16BE(1, 6);
  writeFileSync(join(dir, 'v1.header'), v1);
  await rejected(join(dir, 'v1.header'), plain, /LUKS version 1, not 2/);

  // Secondary header with other metadata than the primary: the two must agree.
  const mixed = Buffer.from(bytes);
  const other = rewriteMetadata(bytes, (m) => (m.segments['0'].encryption = 'cipher_null-ecb'));
  other.copy(mixed, 16384, 16384, 32768);
  writeFileSync(join(dir, 'mixed.header'), mixed);
  await rejected(join(dir, 'mixed.header'), plain, /primary and secondary headers differ/);

  writeFileSync(join(dir, 'zero.header'), Buffer.alloc(65536));
  await rejected(join(dir, 'zero.header'), plain, /primary header has no LUKS magic/);
});

test('binary parsing and the LUKS magic probe', () => {
  const bytes = readFileSync(good.copy);
  const h = parseBinaryHeader(bytes, 0, MAGIC_PRIMARY);
  assert.ok(typeof h !== 'string');
  assert.equal(h.hdrSize, 16384);
  assert.equal(JSON.parse(h.json).segments['0'].encryption, 'aes-xts-plain64');
  assert.equal(luksVersionAt(bytes.subarray(0, 4096)), 2);
  assert.equal(luksVersionAt(Buffer.alloc(4096)), undefined);
});
