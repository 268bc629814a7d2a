// The daemon as a child process, called over both transports.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { connect } from 'node:net';
import { spawnSync } from 'node:child_process';
import * as grpc from '@grpc/grpc-js';
import { Code } from '../agent/src/errors.ts';
import { loadProtos } from '../agent/src/server/protos.ts';
import { encodeFrame, FrameReader, FrameType } from '../agent/src/server/ttrpc/frame.ts';
import { TtrpcError } from '../agent/src/server/ttrpc/client.ts';
import { AGENT_BIN, grpcCall, startAgent, type AgentProcess } from './helpers/agent.ts';

let agent: AgentProcess;
before(async () => {
  agent = await startAgent();
});
after(async () => {
  await agent.stop();
});

const protos = loadProtos();

/** Send raw bytes on a fresh connection; collect response frames until the peer closes or `until` frames arrive. */
function rawExchange(path: string, bytes: Buffer, until: number, timeoutMs = 3000): Promise<{ frames: Array<{ streamId: number; code: number; message: string }>; closed: boolean }> {
  return new Promise((resolve) => {
    const s = connect(path);
    const reader = new FrameReader();
    const frames: Array<{ streamId: number; code: number; message: string }> = [];
    const done = (closed: boolean) => {
      clearTimeout(timer);
      s.destroy();
      resolve({ frames, closed });
    };
    const timer = setTimeout(() => done(false), timeoutMs);
    s.on('connect', () => s.write(bytes));
    s.on('data', (chunk: Buffer) => {
      for (const ev of reader.push(chunk)) {
        if (ev.kind !== 'frame') continue;
        const r = protos.envelope.Response.decode(ev.data) as unknown as { status?: { code: number; message: string } };
        frames.push({ streamId: ev.header.streamId, code: r.status?.code ?? 0, message: r.status?.message ?? '' });
        if (frames.length >= until) done(false);
      }
    });
    s.on('close', () => done(true));
    s.on('error', () => done(true));
  });
}

const request = (service: string, method: string, payload: Uint8Array = Buffer.alloc(0)) =>
  Buffer.from(protos.envelope.Request.encode({ service, method, payload }).finish());

test('Health.Check and Version over ttrpc', async () => {
  const c = await agent.ttrpc();
  assert.deepEqual(await c.call('grpc.Health', 'Check', { service: '' }), { status: 'SERVING' });
  const v = await c.call<{ grpc_version: string; agent_version: string }>('grpc.Health', 'Version', { service: '' });
  assert.equal(v.grpc_version, '0.0.1');
  assert.match(v.agent_version, /^\d+\.\d+\.\d+/);
});

test('Health.Check and Version over gRPC', async () => {
  const c = agent.grpc('grpc.Health');
  assert.deepEqual(await grpcCall(c, 'Check', { service: '' }), { status: 'SERVING' });
  const v = await grpcCall<{ grpc_version: string }>(c, 'Version', { service: '' });
  assert.equal(v.grpc_version, '0.0.1');
});

test('a known method without an implementation is UNIMPLEMENTED on both transports, never a fake success', async () => {
  // WrapKey is unimplemented upstream too (CDH only unwraps).
  const c = await agent.ttrpc();
  await assert.rejects(
    c.call('keyprovider.KeyProviderService', 'WrapKey', { KeyProviderKeyWrapProtocolInput: Buffer.from('{}') }),
    (e: TtrpcError) => e.code === Code.UNIMPLEMENTED && /WrapKey/.test(e.details),
  );
  await assert.rejects(
    grpcCall(agent.grpc('keyprovider.KeyProviderService'), 'WrapKey', { KeyProviderKeyWrapProtocolInput: Buffer.from('{}') }),
    (e: grpc.ServiceError) => e.code === grpc.status.UNIMPLEMENTED && /WrapKey/.test(e.details),
  );
});

test('unknown services and methods are UNIMPLEMENTED over ttrpc', async () => {
  const c = await agent.ttrpc();
  await assert.rejects(c.callRaw('grpc.AgentService', 'CreateContainer', Buffer.alloc(0)), (e: TtrpcError) => e.code === Code.UNIMPLEMENTED);
  await assert.rejects(c.callRaw('grpc.Health', 'Nope', Buffer.alloc(0)), (e: TtrpcError) => e.code === Code.UNIMPLEMENTED);
});

test('unknown gRPC methods are UNIMPLEMENTED', async () => {
  const client = new grpc.Client(`unix:${agent.grpcSocket}`, grpc.credentials.createInsecure());
  const err = await new Promise<grpc.ServiceError>((resolve) =>
    client.makeUnaryRequest('/grpc.AgentService/CreateContainer', (x: Buffer) => x, (x: Buffer) => x, Buffer.alloc(0), (e) => resolve(e!)),
  );
  assert.equal(err.code, grpc.status.UNIMPLEMENTED);
  client.close();
});

test('malformed ttrpc input gets the right status, and garbage closes the connection', async (t) => {
  const p = agent.ttrpcSocket;
  await t.test('even stream id', async () => {
    const r = await rawExchange(p, encodeFrame(2, FrameType.Request, request('grpc.Health', 'Check')), 1);
    assert.deepEqual(r.frames.map((f) => [f.streamId, f.code]), [[2, Code.INVALID_ARGUMENT]]);
  });
  await t.test('stream id reused', async () => {
    const bytes = Buffer.concat([encodeFrame(5, FrameType.Request, request('grpc.Health', 'Check')), encodeFrame(5, FrameType.Request, request('grpc.Health', 'Check'))]);
    const r = await rawExchange(p, bytes, 2);
    assert.deepEqual(r.frames.map((f) => f.code).sort(), [Code.OK, Code.INVALID_ARGUMENT]);
  });
  await t.test('envelope that is not protobuf', async () => {
    const r = await rawExchange(p, encodeFrame(1, FrameType.Request, Buffer.from([0xff, 0xff, 0xff, 0xff, 0x0f])), 1);
    assert.deepEqual(r.frames.map((f) => [f.streamId, f.code]), [[1, Code.INVALID_ARGUMENT]]);
  });
  await t.test('payload that does not decode as the request message', async () => {
    const r = await rawExchange(p, encodeFrame(1, FrameType.Request, request('grpc.Health', 'Check', Buffer.from([0x17, 0x00]))), 1);
    assert.deepEqual(r.frames.map((f) => [f.streamId, f.code]), [[1, Code.INVALID_ARGUMENT]]);
  });
  await t.test('oversized message is RESOURCE_EXHAUSTED and the connection keeps working', async () => {
    const big = encodeFrame(1, FrameType.Request, Buffer.alloc((4 << 20) + 1));
    const r = await rawExchange(p, Buffer.concat([big, encodeFrame(3, FrameType.Request, request('grpc.Health', 'Check'))]), 2);
    assert.deepEqual(r.frames.map((f) => [f.streamId, f.code]), [
      [1, Code.RESOURCE_EXHAUSTED],
      [3, Code.OK],
    ]);
  });
  await t.test('unknown frame type closes the connection', async () => {
    const r = await rawExchange(p, encodeFrame(1, 9 as FrameType, Buffer.alloc(4)), 1);
    assert.equal(r.closed, true);
    assert.equal(r.frames.length, 0);
  });
  await t.test('random garbage closes the connection', async () => {
    const garbage = Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n');
    const r = await rawExchange(p, garbage, 1);
    assert.equal(r.closed, true);
  });
  await t.test('a truncated frame then hang-up leaves the daemon serving', async () => {
    const f = encodeFrame(1, FrameType.Request, request('grpc.Health', 'Check'));
    await rawExchange(p, f.subarray(0, 12), 1, 100);
  });
  // After all that, other clients are served as before.
  const c = await agent.ttrpc();
  assert.deepEqual(await c.call('grpc.Health', 'Check', { service: '' }), { status: 'SERVING' });
});

test('gRPC: garbage bytes close that connection, an oversized message is RESOURCE_EXHAUSTED, the daemon keeps serving', async () => {
  await new Promise<void>((resolve) => {
    const s = connect(agent.grpcSocket);
    s.on('connect', () => s.write(Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n' + 'x'.repeat(64))));
    s.on('close', () => resolve());
    s.on('error', () => resolve());
    s.resume();
  });
  await assert.rejects(
    grpcCall(agent.grpc('api.ImagePullService'), 'PullImage', { image_url: 'x'.repeat(5 << 20), bundle_path: '/b' }),
    (e: grpc.ServiceError) => e.code === grpc.status.RESOURCE_EXHAUSTED,
  );
  assert.deepEqual(await grpcCall(agent.grpc('grpc.Health'), 'Check', { service: '' }), { status: 'SERVING' });
});

test('concurrent calls over both transports', async () => {
  const tt = await Promise.all([agent.ttrpc(), agent.ttrpc(), agent.ttrpc()]);
  const g = agent.grpc('grpc.Health');
  const calls: Array<Promise<unknown>> = [];
  for (let i = 0; i < 300; i++) {
    calls.push(tt[i % 3]!.call('grpc.Health', 'Check', { service: '' }));
    if (i % 3 === 0) calls.push(grpcCall(g, 'Check', { service: '' }));
  }
  const results = await Promise.all(calls);
  assert.equal(results.length, 400);
  assert.ok(results.every((r) => (r as { status: string }).status === 'SERVING'));
});

test('one log line per request with method, duration and status', async () => {
  const c = await agent.ttrpc();
  await assert.rejects(c.call('keyprovider.KeyProviderService', 'WrapKey', { KeyProviderKeyWrapProtocolInput: Buffer.alloc(0) }));
  const line = agent.logs.find((l) => l.msg === 'request' && l.method === '/keyprovider.KeyProviderService/WrapKey');
  assert.ok(line, 'request logged');
  assert.equal(line.status, 'UNIMPLEMENTED');
  assert.equal(typeof line.ms, 'number');
  assert.equal(line.transport, 'ttrpc');
});

test('SIGTERM: stops accepting, removes socket files, exits 0', async () => {
  const a = await startAgent();
  assert.ok(existsSync(a.ttrpcSocket) && existsSync(a.grpcSocket));
  const code = await a.stop('SIGTERM');
  assert.equal(code, 0);
  assert.equal(existsSync(a.ttrpcSocket), false);
  assert.equal(existsSync(a.grpcSocket), false);
  assert.ok(a.logs.some((l) => l.msg === 'stopped'));
});

test('a stale socket file from a crash is taken over; a live one is refused', async () => {
  const a = await startAgent();
  a.child.kill('SIGKILL');
  await new Promise((r) => a.child.once('exit', r));
  assert.ok(existsSync(a.ttrpcSocket), 'socket file left behind by the crash');
  const b = await startAgent({ extraArgs: [] });
  // b used its own dir; now point a third agent at b's live sockets.
  const r = spawnSync(process.execPath, [AGENT_BIN, 'serve', '--grpc', 'none', '--ttrpc', `unix://${b.ttrpcSocket}`, '--cmdline', '/dev/null'], { encoding: 'utf8', timeout: 15000 });
  assert.equal(r.status, 1);
  assert.match(r.stderr, /in use by another server/);
  await b.stop();
  const c = spawnSync(process.execPath, [AGENT_BIN, 'serve', '--grpc', 'none', '--ttrpc', `unix://${a.ttrpcSocket}`, '--cmdline', '/dev/null', '--log-level', 'silent'], { encoding: 'utf8', timeout: 3000, killSignal: 'SIGTERM' });
  // It served (no early exit) until the timeout's SIGTERM, then exited cleanly.
  assert.equal(c.status, 0, c.stderr);
});

test('bad config fails at start naming the key', () => {
  const r = spawnSync(process.execPath, [AGENT_BIN, 'serve', '--cmdline', '/dev/null', '--grpc', 'tcp://nohost'], { encoding: 'utf8' });
  assert.equal(r.status, 1);
  assert.match(r.stderr, /listen\.grpc/);
  const h = spawnSync(process.execPath, [AGENT_BIN, 'serve', '--help'], { encoding: 'utf8' });
  assert.equal(h.status, 0);
  assert.match(h.stdout, /--ttrpc ADDR/);
});
