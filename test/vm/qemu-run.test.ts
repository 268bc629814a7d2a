// scripts/qemu-run as a user runs it: "agent ready" with the forwarded ports
// on stdout, the agent answering there, and SIGTERM giving a clean power-off.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { TtrpcClient } from '../../agent/src/server/ttrpc/client.ts';
import { ensureImage, vmSkipReason, REPO } from './helpers.ts';

const skip = vmSkipReason();

test('scripts/qemu-run prints "agent ready", serves Health and powers off cleanly on SIGTERM', { skip: skip ? `qemu is unusable here: ${skip}` : false, timeout: 10 * 60_000 }, async () => {
  ensureImage();
  const work = mkdtempSync(join(tmpdir(), 'tee-qemu-run-'));
  const child = spawn(join(REPO, 'scripts', 'qemu-run'), ['--work-dir', work, '--append', 'agent.log=warn'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
  const exited = new Promise<number | null>((res) => child.once('exit', (code) => res(code)));
  try {
    const line = await new Promise<string>((res, rej) => {
      createInterface({ input: child.stdout }).once('line', res);
      void exited.then((code) => rej(new Error(`qemu-run exited with ${code} before ready:\n${stderr}`)));
    });
    const m = /^agent ready accel=(tdx|kvm|tcg) grpc=127\.0\.0\.1:(\d+) ttrpc=127\.0\.0\.1:(\d+) console=(\S+) ready_ms=\d+$/.exec(line);
    assert.ok(m, `unexpected ready line: ${line}`);
    assert.equal(m[4], join(work, 'console.log'));
    const c = await TtrpcClient.connect({ host: '127.0.0.1', port: Number(m[3]) });
    try {
      assert.deepEqual(await c.call('grpc.Health', 'Check', { service: '' }), { status: 'SERVING' });
    } finally {
      c.close();
    }
    // --append reached the guest kernel and the agent read it (kata's agent.log):
    // at warn its info lines are not logged; "ready" is, at any level.
    const con = readFileSync(m[4], 'utf8');
    assert.match(con, /tee-init: starting agent/);
    assert.match(con, /"msg":"ready"/);
    assert.doesNotMatch(con, /"msg":"image store open"/);
    child.kill('SIGTERM');
    assert.equal(await exited, 0, stderr);
    assert.match(stderr, /guest powered off cleanly/);
    assert.match(readFileSync(m[4], 'utf8'), /tee-init: power off/);
  } finally {
    child.kill('SIGKILL');
    rmSync(work, { recursive: true, force: true });
  }
});
