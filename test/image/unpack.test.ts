import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { LimitExceeded, MalformedArchive, UnsafeArchive } from '../../agent/src/image/errors.ts';
import { unpackLayer, type UnpackLimits } from '../../agent/src/image/unpack.ts';
import { readLayerMeta, sidecarPath } from '../../agent/src/image/layer-meta.ts';
import { createLogger } from '../../agent/src/log.ts';
import { base256, chardev, dir, end, entry, file, gnuLong, hardlink, header, pax, symlink, tar } from '../fixtures/tar-builder.ts';
import { diffSnapshots, snapshot } from '../fixtures/fs-snapshot.ts';

const log = createLogger('silent');
const LIMITS: UnpackLimits = { maxEntries: 1000, maxFileSize: 1 << 20, maxTotalBytes: 4 << 20 };
const top = mkdtempSync(join(tmpdir(), 'unpack-'));
const sentinel = join(top, 'sentinel');
mkdirSync(join(sentinel, 'sub'), { recursive: true });
writeFileSync(join(sentinel, 'keep'), 'sentinel');
const outside = (): ReturnType<typeof snapshot> => snapshot(top, { skip: (p) => p === 'root' });
const before = outside();
let n = 0;

/** A fresh, empty layer directory two levels below `top`, so "../../sentinel" names the sentinel. */
function layerDir(): string {
  const d = join(top, 'root', String(n++), 'layer');
  mkdirSync(d, { recursive: true });
  return d;
}

/** Feed in one chunk, or in small chunks that split headers. */
function source(buf: Buffer, chunk?: number): Readable {
  if (!chunk) return Readable.from([buf]);
  const parts: Buffer[] = [];
  for (let i = 0; i < buf.length; i += chunk) parts.push(buf.subarray(i, i + chunk));
  return Readable.from(parts);
}

async function unpack(buf: Buffer, opts: { chunk?: number; limits?: Partial<UnpackLimits>; asRoot?: boolean } = {}) {
  const d = layerDir();
  const stats = await unpackLayer(source(buf, opts.chunk), d, { limits: { ...LIMITS, ...opts.limits }, log, asRoot: opts.asRoot });
  return { dir: d, stats };
}

function assertOutsideUntouched(): void {
  assert.deepEqual(diffSnapshots(outside(), before), []);
  assert.equal(readFileSync(join(sentinel, 'keep'), 'utf8'), 'sentinel');
}

const abs = `${sentinel}/pwned`;
type Case = [string, Buffer, new (...a: never[]) => Error, Partial<UnpackLimits>?];
const hostile: Case[] = [
  ['"../" name', tar(file('../../sentinel/pwned', 'x')), UnsafeArchive],
  ['".." inside a name', tar(file('a/../../../sentinel/pwned', 'x')), UnsafeArchive],
  ['write through a symlink of an earlier entry', tar(symlink('link', '../../sentinel'), file('link/pwned', 'x')), UnsafeArchive],
  ['write through an absolute symlink', tar(symlink('link', sentinel), file('link/pwned', 'x')), UnsafeArchive],
  ['directory through a symlink', tar(symlink('link', '/'), dir('link/etc/')), UnsafeArchive],
  ['symlink replacing the root', tar(symlink('./', sentinel), file('pwned', 'x')), UnsafeArchive],
  ['file replacing the root', tar(file('/', 'x')), UnsafeArchive],
  ['symlink named "." (umoci CVE-2021-29136)', tar(symlink('.', sentinel), file('pwned', 'x')), UnsafeArchive],
  ['file named "."', tar(file('.', 'x')), UnsafeArchive],
  ['hard link escaping with ..', tar(hardlink('hl', '../../sentinel/keep')), UnsafeArchive],
  ['hard link with an absolute target outside the layer', tar(hardlink('hl', `${sentinel}/keep`)), UnsafeArchive],
  ['hard link through a symlink', tar(symlink('link', '../../sentinel'), hardlink('hl', 'link/keep')), UnsafeArchive],
  ['hard link to a symlink', tar(symlink('s', `${sentinel}/keep`), hardlink('hl', 's')), UnsafeArchive],
  ['hard link to a directory', tar(dir('d/'), hardlink('hl', 'd')), UnsafeArchive],
  ['hard link to a device', tar(chardev('null', 1, 3), hardlink('hl', 'null')), UnsafeArchive],
  ['hard link to a fifo', tar(entry({ name: 'p', type: '6' }), hardlink('hl', 'p')), UnsafeArchive],
  ['hard link to itself', tar(file('f', 'x'), hardlink('f', 'f')), UnsafeArchive],
  ['hard link to the root', tar(hardlink('hl', './')), UnsafeArchive],
  ['bare .wh.', tar(file('d/.wh.')), UnsafeArchive],
  ['whiteout of ..', tar(file('d/.wh...')), UnsafeArchive],
  ['whiteout of .', tar(file('.wh..')), UnsafeArchive],
  ['whiteout name used as a directory', tar(file('.wh.d/x', 'x')), UnsafeArchive],
  ['file under a file', tar(file('f', 'x'), file('f/pwned', 'x')), UnsafeArchive],
  ['file under a device', tar(chardev('c', 1, 3), file('c/pwned', 'x')), UnsafeArchive],
  ['PAX size contradicting the header', tar(pax({ size: '1024' }), entry({ name: 'f', size: 10 }, Buffer.alloc(1024))), UnsafeArchive],
  ['two PAX headers for one entry', tar(pax({ path: 'a' }), pax({ path: '../../sentinel/pwned' }), file('f', 'x')), UnsafeArchive],
  ['PAX header with no entry', tar(file('f', 'x'), pax({ path: 'g' })), UnsafeArchive],
  ['PAX path with a NUL', tar(pax({ path: Buffer.from('ok\0../../sentinel/pwned') }), file('f', 'x')), UnsafeArchive],
  ['PAX empty path', tar(pax({ path: '' }), file('f', 'x')), UnsafeArchive],
  ['PAX duplicate key', tar(entry({ name: 'p', type: 'x' }, '10 path=a\n10 path=b\n'), file('f')), UnsafeArchive],
  ['PAX global header setting a path', tar(pax({ path: '../../sentinel/pwned' }, 'g'), file('f', 'x')), UnsafeArchive],
  ['PAX record overrunning its header', tar(entry({ name: 'p', type: 'x' }, '99 path=x\n'), file('f')), UnsafeArchive],
  ['PAX sparse file', tar(pax({ 'GNU.sparse.size': '10' }), file('f', 'x')), MalformedArchive],
  ['GNU long name twice', tar(gnuLong('L', 'a'), gnuLong('L', 'b'), file('f', 'x')), UnsafeArchive],
  ['GNU long name and PAX path', tar(gnuLong('L', 'a'), pax({ path: 'b' }), file('f', 'x')), UnsafeArchive],
  ['GNU long link and PAX linkpath', tar(gnuLong('K', 'a'), pax({ linkpath: 'b' }), symlink('s', 'c')), UnsafeArchive],
  ['GNU long name with bytes after its NUL', tar(gnuLong('L', Buffer.from('safe\0../../sentinel/pwned')), file('f', 'x')), UnsafeArchive],
  ['GNU long name with no entry', tar(file('f', 'x'), gnuLong('L', 'x')), UnsafeArchive],
  ['negative size', tar(entry({ name: 'f', size: base256(-512n) }), file('g', 'x')), UnsafeArchive],
  ['size beyond 2^53', tar(entry({ name: 'f', size: base256(1n << 60n) })), UnsafeArchive],
  ['base-256 size with stray bits', tar(entry({ name: 'f', size: Buffer.from([0x81, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10]) })), UnsafeArchive],
  ['size that is not octal', tar(entry({ name: 'f', size: Buffer.from('0000001x\0\0\0\0') })), UnsafeArchive],
  ['size with padding between its digits', tar(entry({ name: 'f', size: Buffer.from('0000 001\0\0\0\0') })), UnsafeArchive],
  ['size with an 8 in it', tar(entry({ name: 'f', size: Buffer.from('00000008\0\0\0\0') })), UnsafeArchive],
  ['file over the size cap', tar(file('big', Buffer.alloc(2 << 20))), LimitExceeded],
  ['layer over the byte cap', tar(...Array.from({ length: 5 }, (_, i) => file(`f${i}`, Buffer.alloc(1 << 20)))), LimitExceeded],
  ['too many entries', tar(...Array.from({ length: 20 }, (_, i) => file(`f${i}`))), LimitExceeded, { maxEntries: 10 }],
  ['symlink carrying data (smuggled header)', tar(entry({ name: 's', type: '2', linkname: 't' }, header({ name: '../../sentinel/pwned', size: 0 }))), UnsafeArchive],
  ['file named like a directory, with data', tar(entry({ name: 'd/', type: '0' }, header({ name: '../../sentinel/pwned', size: 0 }))), UnsafeArchive],
  ['entries after the end-of-archive block', Buffer.concat([file('f', 'x'), Buffer.alloc(512), file('../../sentinel/pwned', 'x'), end()]), UnsafeArchive],
  ['name that is not UTF-8', tar(file(Buffer.from([0x66, 0xff, 0xfe]) as unknown as string, 'x')), UnsafeArchive],
  ['component longer than NAME_MAX', tar(pax({ path: 'a'.repeat(300) }), file('f', 'x')), UnsafeArchive],
  ['bad header checksum', tar(entry({ name: 'f', badChecksum: true })), MalformedArchive],
  ['truncated archive', file('f', Buffer.alloc(2000)).subarray(0, 1000), MalformedArchive],
  ['unsupported entry type (GNU sparse)', tar(entry({ name: 'f', type: 'S' })), MalformedArchive],
  ['unknown tar format (v7)', tar(entry({ name: 'f', format: 'v7' })), MalformedArchive],
];

for (const [name, archive, type, limits] of hostile) {
  test(`hostile archive: ${name}`, async () => {
    for (const chunk of [undefined, archive.length < 65536 ? 7 : 4099]) {
      await assert.rejects(unpack(archive, { chunk, limits }), (err: Error) => {
        assert.ok(err instanceof type, `${name}: expected ${type.name}, got ${err.constructor.name}: ${err.message}`);
        return true;
      });
      assertOutsideUntouched();
    }
  });
}

test('octal fields padded with spaces and NULs on either side are read as other tar readers read them', async () => {
  const { dir: d } = await unpack(tar(entry({ name: 'f', size: Buffer.from('    12 \0\0\0\0\0') }, 'ten bytes!'), entry({ name: 'g', size: Buffer.from('\0\0\0\0\0\0\0\0\0\0\0\0') })));
  assert.equal(readFileSync(join(d, 'f'), 'utf8'), 'ten bytes!');
  assert.equal(readFileSync(join(d, 'g'), 'utf8'), '');
});

test('absolute names and absolute hard link targets are relative to the root', async () => {
  const { dir: d } = await unpack(tar(file(abs, 'inside'), file('/etc/passwd', 'root'), hardlink('/etc/hl', '/etc/passwd')));
  assert.equal(readFileSync(join(d, abs), 'utf8'), 'inside');
  assert.equal(lstatSync(join(d, 'etc/hl')).ino, lstatSync(join(d, 'etc/passwd')).ino);
  assertOutsideUntouched();
});

test('whiteouts under a symlink or file of the same layer are no-ops (umoci writes them under files)', async () => {
  const archive = tar(symlink('link', sentinel), file('link/.wh.keep'), file('link/sub/.wh..wh..opq'), file('f', 'x'), file('f/.wh.y'), chardev('c', 1, 3), file('c/.wh.z'));
  const { dir: d, stats } = await unpack(archive);
  assert.equal(stats.skipped, 4);
  assert.equal(readlinkSync(join(d, 'link')), sentinel);
  const meta = readLayerMeta(sidecarPath(d));
  assert.deepEqual([meta.whiteouts, meta.opaque], [[], []]);
  assertOutsideUntouched();
});

test('symlinks are written verbatim and never followed; a later entry replaces them', async () => {
  const { dir: d } = await unpack(tar(symlink('abs', sentinel), symlink('rel', '../../sentinel/keep'), symlink('rel', 'other'), file('abs', 'plain')));
  assert.equal(readlinkSync(join(d, 'rel')), 'other');
  assert.equal(readFileSync(join(d, 'abs'), 'utf8'), 'plain');
  assertOutsideUntouched();
});

test('modes, owners, times, setuid after chown, devices and xattr policy', async () => {
  const capValue = Buffer.from('0100000220000000000000000000000000000000', 'hex'); // binary, not UTF-8
  const archive = tar(
    dir('./', { mode: 0o751 }),
    dir('d/', { mode: 0o700, uid: 1000, gid: 1001, mtime: 1_600_000_000 }),
    file('d/suid', '#!', { mode: 0o4755, uid: 1000, gid: 1000, mtime: 1_500_000_000 }),
    file('ro', 'r', { mode: 0o444 }),
    chardev('null', 1, 3),
    entry({ name: 'fifo', type: '6', mode: 0o600 }),
    pax({ 'SCHILY.xattr.user.note': 'hello', 'SCHILY.xattr.trusted.overlay.opaque': 'y', 'SCHILY.xattr.security.selinux': 'x', 'SCHILY.xattr.security.capability': capValue }),
    file('cap', 'c'),
    pax({ 'SCHILY.xattr.trusted.overlay.opaque': 'y', 'SCHILY.xattr.user.overlay.opaque': 'y' }),
    dir('forged/'),
    file('forged/x', 'x'),
  );
  const { dir: d, stats } = await unpack(archive);
  const st = lstatSync(join(d, 'd/suid'));
  assert.equal(st.mode & 0o7777, 0o4755);
  assert.equal(st.uid, 1000);
  assert.equal(st.mtimeMs, 1_500_000_000_000);
  const sd = lstatSync(join(d, 'd'));
  assert.equal(sd.mode & 0o7777, 0o700);
  assert.deepEqual([sd.uid, sd.gid, sd.mtimeMs], [1000, 1001, 1_600_000_000_000]);
  assert.equal(lstatSync(d).mode & 0o7777, 0o751);
  assert.equal(lstatSync(join(d, 'ro')).mode & 0o7777, 0o444);
  assert.ok(lstatSync(join(d, 'null')).isCharacterDevice());
  assert.equal(lstatSync(join(d, 'null')).rdev, 259);
  assert.ok(lstatSync(join(d, 'fifo')).isFIFO());
  const xattrs = execFileSync('getfattr', ['-d', '-m', '-', '-e', 'hex', join(d, 'cap')], { encoding: 'utf8' });
  assert.match(xattrs, /user\.note=0x68656c6c6f/);
  assert.match(xattrs, new RegExp(`security\\.capability=0x${capValue.toString('hex')}`));
  assert.doesNotMatch(xattrs, /trusted|selinux/);
  assert.equal(execFileSync('getfattr', ['-d', '-m', '-', join(d, 'forged')], { encoding: 'utf8' }), '');
  assert.equal(stats.xattrsDropped, 4);
  assert.equal(stats.devices, 2);
});

test('file modes come out exact, whether open() sets them or fchmod does (umask, setuid, sticky, chown)', async () => {
  // Under the usual 022 umask, 0o644-like modes are set by open() and the others by fchmod after chown.
  const modes = [0o644, 0o755, 0o600, 0o640, 0o000, 0o666, 0o777, 0o664, 0o2755, 0o4711, 0o1777, 0o6755];
  const entries = modes.flatMap((mode) => [
    file(`m${mode.toString(8)}`, 'content', { mode }),
    file(`e${mode.toString(8)}`, '', { mode }),
    file(`u${mode.toString(8)}`, 'owned', { mode, uid: 1000, gid: 1000 }),
  ]);
  const { dir: d } = await unpack(tar(...entries));
  for (const mode of modes) {
    for (const p of ['m', 'e', 'u']) {
      const st = lstatSync(join(d, `${p}${mode.toString(8)}`));
      assert.equal((st.mode & 0o7777).toString(8), mode.toString(8), `${p}${mode.toString(8)}`);
    }
    assert.equal(readFileSync(join(d, `m${mode.toString(8)}`), 'utf8'), 'content');
    assert.equal(lstatSync(join(d, `u${mode.toString(8)}`)).uid, 1000);
  }
});

test('device nodes are skipped and counted when not root', async () => {
  const { dir: d, stats } = await unpack(tar(chardev('null', 1, 3), file('.wh.gone'), file('f', 'x')), { asRoot: false });
  assert.equal(existsSync(join(d, 'null')), false);
  assert.equal(existsSync(join(d, 'gone')), false);
  assert.equal(stats.skipped, 1);
  const meta = readLayerMeta(sidecarPath(d));
  assert.deepEqual(meta.whiteouts, ['gone']);
  assert.equal(meta.overlayReady, false);
});

test('whiteouts per image-spec: stored as overlay whiteouts, never hiding same-layer entries', async () => {
  for (const chunk of [undefined, 100]) {
    const archive = tar(
      file('d/keep', 'k'),
      file('d/.wh..wh..opq'), // opaque after an entry of the same layer: keep stays
      file('d/later', 'l'), // and after it too
      file('.wh.gone'),
      file('same', 'v'),
      file('.wh.same'), // hides the lower "same" only; this layer's stays
      file('.wh.redo'),
      file('redo/new', 'n'), // whited out, then recreated: an opaque directory
      dir('dd/'),
      file('.wh.dd'), // same for a directory that came first
      file('x/.wh..wh.plnk'), // AUFS bookkeeping: skipped
    );
    const { dir: d, stats } = await unpack(archive, { chunk });
    assert.equal(readFileSync(join(d, 'd/keep'), 'utf8'), 'k');
    assert.equal(readFileSync(join(d, 'd/later'), 'utf8'), 'l');
    assert.equal(readFileSync(join(d, 'same'), 'utf8'), 'v');
    const gone = lstatSync(join(d, 'gone'));
    assert.ok(gone.isCharacterDevice() && gone.rdev === 0);
    assert.equal(existsSync(join(d, 'd/.wh..wh..opq')), false);
    const meta = readLayerMeta(sidecarPath(d));
    assert.deepEqual(meta.whiteouts, ['gone']);
    assert.deepEqual(meta.opaque.sort(), ['d', 'dd', 'redo']);
    assert.deepEqual(meta.implicitDirs.sort(), ['d', 'redo']);
    for (const o of ['d', 'dd', 'redo']) assert.match(execFileSync('getfattr', ['-n', 'trusted.overlay.opaque', join(d, o)], { encoding: 'utf8' }), /="y"/);
    assert.equal(stats.skipped, 1);
    assert.equal(stats.opaque, 1);
  }
});

test('later entries replace earlier ones: file by dir, dir by file, hard links keep content', async () => {
  const archive = tar(
    file('a', 'file'),
    dir('a/'),
    file('a/x', 'x'),
    dir('b/'),
    file('b/y', 'y'),
    file('b', 'now a file'),
    file('orig', 'shared'),
    hardlink('link', 'orig'),
    pax({ path: 'long/'.repeat(30) + 'name', linkpath: 'orig' }),
    entry({ name: 'ignored', type: '1' }),
    gnuLong('L', 'gnu/'.repeat(40) + 'file'),
    file('short', 'gnu long'),
  );
  const { dir: d, stats } = await unpack(archive, { chunk: 300 });
  assert.ok(lstatSync(join(d, 'a')).isDirectory());
  assert.equal(readFileSync(join(d, 'a/x'), 'utf8'), 'x');
  assert.equal(readFileSync(join(d, 'b'), 'utf8'), 'now a file');
  assert.equal(lstatSync(join(d, 'link')).nlink, 3);
  assert.equal(readFileSync(join(d, 'long/'.repeat(30) + 'name'), 'utf8'), 'shared');
  assert.equal(readFileSync(join(d, 'gnu/'.repeat(40) + 'file'), 'utf8'), 'gnu long');
  assert.equal(stats.hardlinks, 2);
});

test('trailing zero padding after the end block is accepted; an empty layer is fine', async () => {
  const { stats } = await unpack(Buffer.concat([file('f', 'x'), Buffer.alloc(10240)]));
  assert.equal(stats.files, 1);
  const empty = await unpack(Buffer.alloc(1024));
  assert.equal(empty.stats.entries, 0);
  assert.equal(readLayerMeta(sidecarPath(empty.dir)).entries, 0);
});

test('an aborted signal stops the unpack with CANCELLED', async () => {
  const ac = new AbortController();
  ac.abort();
  const d = layerDir();
  await assert.rejects(unpackLayer(source(tar(file('f', 'x'))), d, { limits: LIMITS, log, signal: ac.signal }), { code: 1 });
});

test.after(() => rmSync(top, { recursive: true, force: true }));
