import { test } from 'node:test';
import assert from 'node:assert/strict';
import { expectedCipher, parseCryptTable, parseIntegrityMode } from '../../agent/src/storage/dm.ts';

// Lines as dmsetup printed them in the guest for an ephemeral volume with integrity.
const CRYPT = 'eph: 0 129248 crypt capi:authenc(hmac(sha256),xts(aes))-plain64 :96:logon:cryptsetup:34d35f4f-f24d-4f79-abe8-2a8058bb06bc-d0 0 254:0 0 4 no_read_workqueue no_write_workqueue integrity:32:aead sector_size:4096'.replace(/^eph: /, '');
const DIF = '0 129248 integrity 253:0 0 32 D 5 block_size:4096 journal_sectors:792 interleave_sectors:32768 buffer_sectors:128 fix_padding';

test('crypt tables: cipher, keyring key, sector size, integrity tag', () => {
  assert.deepEqual(parseCryptTable(CRYPT), { cipher: expectedCipher(true), keyInKeyring: true, sectorSize: 4096, integrity: { tagBytes: 32, mode: '' } });
  const hexKey = 'a'.repeat(128);
  assert.deepEqual(parseCryptTable(`0 8192 crypt aes-xts-plain64 ${hexKey} 0 253:0 0 1 sector_size:4096`), { cipher: 'aes-xts-plain64', keyInKeyring: false, sectorSize: 4096 });
  assert.equal(parseCryptTable('0 32768 crypt cipher_null-ecb - 0 7:0 32768 1 sector_size:4096')?.cipher, 'cipher_null-ecb');
  assert.equal(parseCryptTable('0 8 linear 253:0 0'), undefined);
});

test('integrity tables: journal mode', () => {
  assert.equal(parseIntegrityMode(DIF), 'direct (no journal)');
  assert.equal(parseIntegrityMode(DIF.replace(' D ', ' J ')), 'journal');
  assert.equal(parseIntegrityMode(CRYPT), undefined);
});
