import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Code } from '../../agent/src/errors.ts';
import { Cryptsetup, luksFormatArgs, luksOpenArgs, parseStatus } from '../../agent/src/storage/cryptsetup.ts';
import { StorageCommandFailed, StorageUnavailable, WrongKey } from '../../agent/src/storage/errors.ts';
import { CHILD_ENV, processRunner, runChecked, type Runner, type RunResult } from '../../agent/src/storage/exec.ts';

/** Records every call; answers with `answer`. The edge is the kernel's device-mapper, which this host lacks. */
function recorder(answer: (args: readonly string[]) => RunResult = () => ({ code: 0, stdout: '', stderr: '' })) {
  const calls: Array<{ cmd: string; args: readonly string[]; stdin: Buffer | undefined }> = [];
  const runner: Runner = {
    async run(cmd, args, opts) {
      calls.push({ cmd, args, stdin: opts?.stdin ? Buffer.from(opts.stdin) : undefined });
      return answer(args);
    },
  };
  return { calls, runner };
}

/** Every textual form a key could take on a command line. */
function assertKeyAbsent(argv: readonly string[], key: Buffer): void {
  const joined = argv.join(' ');
  for (const form of [key.toString('hex'), key.toString('hex').toUpperCase(), key.toString('base64'), key.toString('base64url'), key.toString('latin1'), key.subarray(0, 8).toString('hex')]) {
    assert.ok(!joined.includes(form), `key material (${form.slice(0, 12)}…) found on argv`);
  }
}

test('luksFormat argv: ephemeral with integrity, detached header, minimum PBKDF2, key on stdin', () => {
  assert.deepEqual(luksFormatArgs({ device: '/dev/vdb', integrity: true, kdf: 'ephemeral', header: '/run/h', noWipe: true }), [
    'luksFormat', '--batch-mode', '--type', 'luks2', '--cipher', 'aes-xts-plain64', '--key-size', '512', '--sector-size', '4096',
    '--integrity', 'hmac-sha256', '--integrity-no-wipe',
    '--pbkdf', 'pbkdf2', '--pbkdf-force-iterations', '1000',
    '--header', '/run/h', '--luks2-keyslots-size', '1m',
    '--key-file=-', '/dev/vdb',
  ]);
});

test('luksFormat argv: persistent keeps the header on the device, wipes, and uses Argon2id', () => {
  const args = luksFormatArgs({ device: '/dev/vg/lv', integrity: true, kdf: 'persistent', noWipe: false });
  assert.ok(!args.includes('--header'));
  assert.ok(!args.includes('--integrity-no-wipe'));
  assert.deepEqual(args.slice(args.indexOf('--pbkdf'), args.indexOf('--pbkdf') + 2), ['--pbkdf', 'argon2id']);
  assert.deepEqual(args.slice(-2), ['--key-file=-', '/dev/vg/lv']);
  assert.ok(!luksFormatArgs({ device: '/dev/vdb', integrity: false, kdf: 'ephemeral', noWipe: true }).includes('--integrity'));
});

test('open argv: always --type luks2 with an explicit header; no journal only when asked', () => {
  assert.deepEqual(luksOpenArgs({ device: '/dev/vdb', name: 'v1', header: '/run/h', noJournal: true }), [
    'open', '--type', 'luks2', '--header', '/run/h', '--key-file=-', '--integrity-no-journal', '--perf-no_read_workqueue', '--perf-no_write_workqueue', '/dev/vdb', 'v1',
  ]);
  assert.ok(!luksOpenArgs({ device: '/dev/vdb', name: 'v1', header: '/run/h', noJournal: false }).includes('--integrity-no-journal'));
});

test('format and open hand the key to cryptsetup on stdin only, never on argv', async () => {
  const { calls, runner } = recorder();
  const cs = new Cryptsetup(runner);
  const key = randomBytes(64);
  await cs.format({ device: '/dev/vdb', integrity: true, kdf: 'ephemeral', header: '/run/h', noWipe: true }, key);
  await cs.open({ device: '/dev/vdb', name: 'v1', header: '/run/h', noJournal: true }, key);
  assert.equal(calls.length, 2);
  for (const c of calls) {
    assert.equal(c.cmd, 'cryptsetup');
    assert.ok(c.stdin?.equals(key), 'key on stdin');
    assertKeyAbsent(c.args, key);
  }
});

test('exit code 2 from open is WrongKey (PERMISSION_DENIED); other failures carry cryptsetup\'s last line', async () => {
  const cs = new Cryptsetup(recorder(() => ({ code: 2, stdout: '', stderr: 'No key available with this passphrase.\n' })).runner);
  await assert.rejects(cs.open({ device: '/dev/vdb', name: 'v', header: '/h', noJournal: false }, Buffer.from('k')), (err: unknown) => err instanceof WrongKey && err.code === Code.PERMISSION_DENIED);
  const cs2 = new Cryptsetup(recorder(() => ({ code: 1, stdout: '', stderr: 'x\nDevice /dev/vdb is too small.\n' })).runner);
  await assert.rejects(cs2.format({ device: '/dev/vdb', integrity: false, kdf: 'ephemeral', noWipe: true }, Buffer.from('k')), /luksFormat \/dev\/vdb failed \(exit 1\): Device \/dev\/vdb is too small\./);
});

test('close retries while busy and reports an inactive mapping as false; status parses', async () => {
  let n = 0;
  const cs = new Cryptsetup(recorder(() => ({ code: n++ < 2 ? 5 : 0, stdout: '', stderr: '' })).runner);
  assert.equal(await cs.close('v'), true);
  assert.equal(n, 3);
  assert.equal(await new Cryptsetup(recorder(() => ({ code: 4, stdout: '', stderr: '' })).runner).close('v'), false);
  const status = parseStatus(
    '/dev/mapper/v is active.\n  type:    n/a\n  cipher:  aes-xts-plain64\n  keysize: 768 bits\n  key location: keyring\n  integrity: hmac(sha256)\n  integrity keysize: 256 bits\n  device:  /dev/vdb\n  sector size:  4096\n  offset:  0 sectors\n  mode:    read/write\n',
  );
  assert.equal(status['key location'], 'keyring');
  assert.equal(status.keysize, '768 bits');
  assert.equal(status['sector size'], '4096');
  assert.equal(status.integrity, 'hmac(sha256)');
});

test('the real cryptsetup reads a binary key from stdin to EOF: newlines and NULs included', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'tee-agent-cs-'));
  try {
    const device = join(dir, 'd.img');
    writeFileSync(device, '');
    truncateSync(device, 32 << 20);
    // A key that plain piped stdin would cut at its first newline.
    const key = Buffer.concat([Buffer.from('ab\n\0'), randomBytes(60)]);
    await runChecked(processRunner, 'format', 'cryptsetup', luksFormatArgs({ device, integrity: false, kdf: 'ephemeral', noWipe: false }), { stdin: key });
    const test = (k: Buffer) => processRunner.run('cryptsetup', ['open', '--test-passphrase', '--type', 'luks2', '--key-file=-', device], { stdin: k });
    assert.equal((await test(key)).code, 0);
    assert.equal((await test(key.subarray(0, 3))).code, 2, 'a truncated key must not open the volume');
    assert.equal((await test(key.subarray(0, 63))).code, 2);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('children get a fixed environment, none of the agent\'s', async () => {
  process.env.TEE_AGENT_TEST_SECRET = 'must-not-leak';
  try {
    const res = await processRunner.run('env', []);
    const env = Object.fromEntries(res.stdout.trim().split('\n').map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]));
    assert.deepEqual(env, CHILD_ENV);
  } finally {
    delete process.env.TEE_AGENT_TEST_SECRET;
  }
  await assert.rejects(runChecked(processRunner, 'x', 'no-such-tool-here', []), StorageUnavailable);
  await assert.rejects(runChecked(processRunner, 'false', 'false', []), StorageCommandFailed);
});
