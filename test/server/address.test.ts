import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseAddress } from '../../agent/src/server/address.ts';

test('listen addresses parse into their parts', () => {
  assert.deepEqual(parseAddress('unix:///run/x.sock'), { kind: 'unix', path: '/run/x.sock', text: 'unix:///run/x.sock' });
  assert.deepEqual(parseAddress('tcp://127.0.0.1:50000'), { kind: 'tcp', host: '127.0.0.1', port: 50000, text: 'tcp://127.0.0.1:50000' });
  assert.deepEqual(parseAddress('tcp://[::1]:9'), { kind: 'tcp', host: '::1', port: 9, text: 'tcp://[::1]:9' });
  assert.deepEqual(parseAddress('vsock://-1:1024'), { kind: 'vsock', cid: 0xffffffff, port: 1024, text: 'vsock://-1:1024' });
  assert.deepEqual(parseAddress('vsock://3:1024'), { kind: 'vsock', cid: 3, port: 1024, text: 'vsock://3:1024' });
});

test('bad addresses are refused with the address in the message', () => {
  for (const bad of ['unix://relative', 'tcp://nohost', 'tcp://h:99999', 'vsock://x:1', 'http://a:1', '/run/x.sock']) {
    assert.throws(() => parseAddress(bad), (err: Error) => err.message.includes(JSON.stringify(bad)), bad);
  }
});
