// vsock goes through a socat bridge. This host has AF_VSOCK but no peer to
// dial it from (no vhost-vsock, no loopback transport), so the end-to-end
// path is exercised in the guest; here: the bridge's arguments, that the
// daemon starts it, serves the private socket, and stops it.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { bridgeArgs } from '../../agent/src/server/vsock.ts';
import { TtrpcClient } from '../../agent/src/server/ttrpc/client.ts';
import { startAgent } from '../helpers/agent.ts';

test('bridge arguments: vsock listener forwarding to the private unix socket', () => {
  assert.deepEqual(bridgeArgs(1024, '/run/tee-agent/ttrpc-vsock-1024.sock'), ['-d', 'VSOCK-LISTEN:1024,fork,reuseaddr', 'UNIX-CONNECT:/run/tee-agent/ttrpc-vsock-1024.sock']);
});

const socatChildren = (pid: number): string[] => {
  try {
    return execFileSync('pgrep', ['-a', '-P', String(pid), 'socat'], { encoding: 'utf8' }).trim().split('\n').filter(Boolean);
  } catch {
    return [];
  }
};

test('a vsock address starts a socat bridge to a served private socket, stopped at shutdown', async () => {
  const bridgeDir = mkdtempSync(join(tmpdir(), 'bridge-'));
  const port = 20000 + Math.floor(Math.random() * 20000);
  const agent = await startAgent({ config: `[listen]\nbridge_dir = "${bridgeDir}"\n`, extraArgs: ['--ttrpc', `vsock://-1:${port}`] });
  try {
    const ready = agent.logs.find((l) => l.msg === 'ready')!;
    assert.deepEqual(ready.ttrpc, [`unix://${agent.ttrpcSocket}`, `vsock://-1:${port}`]);
    const children = socatChildren(agent.child.pid!);
    assert.equal(children.length, 1, 'one socat bridge');
    assert.match(children[0]!, new RegExp(`VSOCK-LISTEN:${port},fork,reuseaddr UNIX-CONNECT:${bridgeDir}/ttrpc-vsock-${port}.sock`));
    const c = await TtrpcClient.connect(join(bridgeDir, `ttrpc-vsock-${port}.sock`));
    assert.deepEqual(await c.call('grpc.Health', 'Check', { service: '' }), { status: 'SERVING' });
    c.close();
  } finally {
    const pid = agent.child.pid!;
    assert.equal(await agent.stop(), 0);
    assert.deepEqual(socatChildren(pid), []);
    assert.equal(existsSync(join(bridgeDir, `ttrpc-vsock-${port}.sock`)), false);
  }
});
