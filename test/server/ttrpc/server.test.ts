// The ttrpc transport over a real unix socket, with a table of test handlers
// that can be slow, so deadlines, cancellation and shutdown are observable.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Code } from '../../../agent/src/errors.ts';
import { createLogger } from '../../../agent/src/log.ts';
import { loadProtos, serviceMethods } from '../../../agent/src/server/protos.ts';
import { ServiceTable, type CallContext } from '../../../agent/src/server/table.ts';
import { TtrpcClient, TtrpcError } from '../../../agent/src/server/ttrpc/client.ts';
import { TtrpcServer } from '../../../agent/src/server/ttrpc/server.ts';

const protos = loadProtos();

async function serveWith(check: (req: { service: string }, ctx: CallContext) => Promise<object>) {
  const table = new ServiceTable(serviceMethods(protos.definition), { 'grpc.Health': { Check: check } });
  const server = new TtrpcServer({ table, envelope: protos.envelope, log: createLogger('silent') });
  const path = join(mkdtempSync(join(tmpdir(), 'ttrpc-')), 's.sock');
  await server.listen({ kind: 'unix', path, text: `unix://${path}` });
  return { server, path };
}

/** A handler that sleeps for req.service milliseconds, honouring the call's signal. */
const sleepy = async (req: { service: string }, ctx: CallContext) => {
  await sleep(Number(req.service), undefined, { signal: ctx.signal });
  return { status: 'SERVING' };
};

test('timeout_nano ends a slow call with DEADLINE_EXCEEDED and aborts the handler', async () => {
  let aborted = false;
  const { server, path } = await serveWith(async (req, ctx) => {
    ctx.signal.addEventListener('abort', () => (aborted = true));
    return sleepy(req, ctx);
  });
  const c = await TtrpcClient.connect(path);
  const t0 = performance.now();
  await assert.rejects(c.call('grpc.Health', 'Check', { service: '5000' }, { timeoutMs: 100 }), (e: TtrpcError) => e.code === Code.DEADLINE_EXCEEDED);
  assert.ok(performance.now() - t0 < 2000);
  assert.ok(aborted, 'handler saw the abort');
  // The connection is still usable.
  assert.deepEqual(await c.call('grpc.Health', 'Check', { service: '1' }), { status: 'SERVING' });
  c.close();
  await server.close(100);
});

test('many concurrent streams on one connection complete out of order', async () => {
  const { server, path } = await serveWith(sleepy);
  const c = await TtrpcClient.connect(path);
  const delays = Array.from({ length: 200 }, (_, i) => (i * 37) % 50);
  const order: number[] = [];
  const t0 = performance.now();
  await Promise.all(delays.map((d, i) => c.call('grpc.Health', 'Check', { service: String(d) }).then(() => order.push(i))));
  assert.equal(order.length, 200);
  assert.notDeepEqual(order, [...order].sort((a, b) => a - b), 'responses arrive as handlers finish, not in request order');
  assert.ok(performance.now() - t0 < 2000, 'calls ran concurrently');
  c.close();
  await server.close(100);
});

test('close lets in-flight calls finish, refuses new connections and removes the socket', async () => {
  const { server, path } = await serveWith(sleepy);
  const c = await TtrpcClient.connect(path);
  const inflight = c.call('grpc.Health', 'Check', { service: '300' });
  await sleep(50);
  const closing = server.close(5000);
  await assert.rejects(TtrpcClient.connect(path));
  assert.deepEqual(await inflight, { status: 'SERVING' });
  await closing;
  assert.equal(existsSync(path), false);
});

test('close gives up on calls that outlive the grace period and aborts their handlers', async () => {
  let aborted = false;
  const { server, path } = await serveWith(async (req, ctx) => {
    ctx.signal.addEventListener('abort', () => (aborted = true));
    return sleepy(req, ctx);
  });
  const c = await TtrpcClient.connect(path);
  const inflight = c.call('grpc.Health', 'Check', { service: '60000' });
  await sleep(50);
  const t0 = performance.now();
  await server.close(200);
  await assert.rejects(inflight);
  assert.ok(performance.now() - t0 < 2000);
  await sleep(10);
  assert.ok(aborted, 'the handler was told to stop');
});
