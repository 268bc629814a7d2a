import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { processRunner } from '../../agent/src/storage/exec.ts';
import { hasExt4Magic, makeExt4, mkfsArgs, parseDryRun, withExtended, zeroRanges } from '../../agent/src/storage/mkfs.ts';

const dir = mkdtempSync(join(tmpdir(), 'tee-agent-mkfs-'));
test.after(() => rmSync(dir, { recursive: true, force: true }));

function image(name: string, size: number): string {
  const p = join(dir, name);
  writeFileSync(p, '');
  truncateSync(p, size);
  return p;
}

test('parses the layout from a real mkfs.ext4 dry run (4k and 1k blocks)', () => {
  const four = execFileSync('mkfs.ext4', ['-F', '-n', '-b', '4096', '-O', '^has_journal', image('a.img', 1 << 30)], { stdio: ['ignore', 'pipe', 'ignore'] }).toString();
  const a = parseDryRun(four);
  assert.equal(a.blockSize, 4096);
  assert.deepEqual(a.superblocks, [0, 32768, 98304, 163840, 229376]);
  const one = execFileSync('mkfs.ext4', ['-F', '-n', '-b', '1024', image('b.img', 64 << 20)], { stdio: ['ignore', 'pipe', 'ignore'] }).toString();
  const b = parseDryRun(one);
  assert.equal(b.blockSize, 1024);
  assert.deepEqual(b.superblocks, [0, 8193, 24577, 40961, 57345]);
});

test('zeroed ranges are whole 4096-byte sectors covering every superblock', () => {
  assert.deepEqual(zeroRanges({ blockSize: 4096, superblocks: [0, 32768] }), [
    { offset: 0, length: 4096 },
    { offset: 32768 * 4096, length: 4096 },
  ]);
  // 1k blocks: block 8193 starts at byte 8389632, inside the sector at 8388608.
  assert.deepEqual(zeroRanges({ blockSize: 1024, superblocks: [0, 8193] }), [
    { offset: 0, length: 4096 },
    { offset: 8388608, length: 4096 },
  ]);
});

test('-E options are merged, since mke2fs honours only the last -E', () => {
  assert.deepEqual(withExtended(['-m', '0', '-E', 'lazy_journal_init'], 'lazy_itable_init=0'), ['-m', '0', '-E', 'lazy_journal_init,lazy_itable_init=0']);
  assert.deepEqual(mkfsArgs('/dev/mapper/v', ['-O', '^has_journal'], true), ['-F', '-O', '^has_journal', '-E', 'lazy_itable_init=0', '/dev/mapper/v']);
  assert.deepEqual(mkfsArgs('/dev/mapper/v', ['-O', '^has_journal'], false), ['-F', '-O', '^has_journal', '/dev/mapper/v']);
});

test('makeExt4 on the integrity path: superblock sectors zeroed first, then a valid ext4 with the caller\'s options', async () => {
  const img = image('c.img', 256 << 20);
  // Garbage where the backups will go; mkfs must still produce a clean filesystem.
  const fill = Buffer.alloc(4096, 0xa5);
  writeFileSync(img, fill, { flag: 'r+' });
  await makeExt4(processRunner, img, ['-b', '4096', '-O', '^has_journal', '-m', '0', '-i', '163840', '-I', '128', '-E', 'lazy_journal_init'], true);
  execFileSync('e2fsck', ['-fn', img], { stdio: 'ignore' });
  const dump = execFileSync('dumpe2fs', ['-h', img], { stdio: ['ignore', 'pipe', 'ignore'] }).toString();
  assert.doesNotMatch(dump, /has_journal/);
  assert.match(dump, /Inode size:\s+128/);
  assert.match(dump, /Reserved block count:\s+0/);
  assert.ok(hasExt4Magic(readFileSync(img).subarray(0, 4096)));
  assert.ok(!hasExt4Magic(Buffer.alloc(4096)));
});
