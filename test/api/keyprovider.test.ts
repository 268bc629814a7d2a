// keyprovider.KeyProviderService/UnWrapKey on the real daemon, over ttrpc and
// gRPC, with the offline key store as the KEK source.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { join } from 'node:path';
import type * as grpc from '@grpc/grpc-js';
import { createLayerEncryptor } from '../../agent/src/crypto/encrypt-layer.ts';
import { decryptorFromOptions } from '../../agent/src/crypto/index.ts';
import { parseKeyUnwrapOutput } from '../../agent/src/crypto/keywrap/keyprovider.ts';
import { Code } from '../../agent/src/errors.ts';
import type { TtrpcError } from '../../agent/src/server/ttrpc/client.ts';
import { startAgent, type AgentProcess } from '../helpers/agent.ts';
import { newKek, offlineKeyFile, tempDir } from '../fixtures/keys.ts';
import { runOk } from '../crypto/stream-helpers.ts';

const SERVICE = 'keyprovider.KeyProviderService';
const PACKET = 'org.opencontainers.image.enc.keys.provider.attestation-agent';
const dir = tempDir('keyprovider');
const kek = newKek();
const keysFile = offlineKeyFile(dir, { 'default/key/image': kek });
let agent: AgentProcess;

before(async () => {
  agent = await startAgent({ config: `[kbc]\nname = "offline_fs_kbc"\noffline_keys = "${keysFile}"\noffline_resources = "${join(dir, 'none.json')}"\n` });
});
after(async () => {
  await agent.stop();
});

/** An encrypted layer (CoCo packet for kbs:///default/key/image) and its plaintext. */
async function packetLayer(cipher: 'AES_256_CTR_HMAC_SHA256' | 'AES_256_GCM_STREAM') {
  const plain = randomBytes(50_000);
  const desc = { mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: `sha256:${createHash('sha256').update(plain).digest('hex')}`, size: plain.length };
  const enc = createLayerEncryptor(desc, { jwe: [], kbs: [{ kid: 'kbs:///default/key/image', kek }] }, cipher);
  const blob = await runOk(enc.stream, plain);
  const { mediaType, annotations } = await enc.finish();
  return { plain, blob, encrypted: { mediaType, digest: 'sha256:enc', size: blob.length, annotations } };
}

type Call = (input: Buffer) => Promise<Buffer>;
async function transports(): Promise<Array<[string, Call]>> {
  const tt = await agent.ttrpc();
  return [
    ['ttrpc', async (input) => (await tt.call<{ KeyProviderKeyWrapProtocolOutput: Buffer }>(SERVICE, 'UnWrapKey', { KeyProviderKeyWrapProtocolInput: input })).KeyProviderKeyWrapProtocolOutput],
    ['grpc', async (input) => (await agent.grpcCall<{ KeyProviderKeyWrapProtocolOutput: Buffer }>(SERVICE, 'UnWrapKey', { KeyProviderKeyWrapProtocolInput: input })).KeyProviderKeyWrapProtocolOutput],
  ];
}

const codeOf = (e: unknown): number => (e as TtrpcError).code ?? (e as grpc.ServiceError).code;

test('a CoCo packet layer decrypts through UnWrapKey on both transports (Go and Rust request encodings)', async () => {
  for (const cipher of ['AES_256_CTR_HMAC_SHA256', 'AES_256_GCM_STREAM'] as const) {
    const { plain, blob, encrypted } = await packetLayer(cipher);
    const packet = Buffer.from(encrypted.annotations[PACKET]!, 'base64');
    for (const [name, call] of await transports()) {
      for (const annotation of [packet.toString('base64'), Array.from(packet)]) {
        const input = Buffer.from(JSON.stringify({ op: 'keyunwrap', keyunwrapparams: { dc: { Parameters: { 'attestation-agent': [] } }, annotation } }));
        const output = await call(input);
        const doc = JSON.parse(output.toString()) as { keyunwrapresults: { optsdata: unknown } };
        assert.ok(Array.isArray(doc.keyunwrapresults.optsdata), 'optsdata as a number array, as CDH replies');
        const d = decryptorFromOptions(encrypted, parseKeyUnwrapOutput(output));
        assert.ok((await runOk(d.stream, blob, 8192)).equals(plain), `${cipher} over ${name}`);
        d.verify();
      }
    }
  }
});

test('bad requests, unknown kids and wrong KEKs get typed statuses; the daemon keeps serving; no secrets in its logs', async () => {
  const { encrypted } = await packetLayer('AES_256_CTR_HMAC_SHA256');
  const packet = JSON.parse(Buffer.from(encrypted.annotations[PACKET]!, 'base64').toString()) as Record<string, string>;
  const req = (p: object | string, op = 'keyunwrap') =>
    Buffer.from(JSON.stringify({ op, keyunwrapparams: { annotation: Buffer.from(typeof p === 'string' ? p : JSON.stringify(p)).toString('base64') } }));
  const cases: Array<[string, Buffer, number]> = [
    ['not JSON', Buffer.from('{'), Code.INVALID_ARGUMENT],
    ['keywrap op', req(packet, 'keywrap'), Code.INVALID_ARGUMENT],
    ['no annotation', Buffer.from('{"op":"keyunwrap","keyunwrapparams":{}}'), Code.INVALID_ARGUMENT],
    ['packet not JSON', req('nope'), Code.INVALID_ARGUMENT],
    ['unknown kid', req({ ...packet, kid: 'kbs:///default/key/other' }), Code.NOT_FOUND],
    ['wrong KEK', req({ ...packet, wrapped_data: randomBytes(80).toString('base64') }), Code.FAILED_PRECONDITION],
  ];
  for (const [name, call] of await transports()) {
    for (const [what, input, code] of cases) {
      await assert.rejects(call(input), (e) => codeOf(e) === code, `${what} over ${name}`);
    }
  }
  assert.deepEqual(await agent.grpcCall('grpc.Health', 'Check', { service: '' }), { status: 'SERVING' });
  const logs = agent.stderr();
  assert.ok(!logs.includes(kek.toString('base64')) && !logs.includes(kek.toString('hex')), 'the KEK never reaches the logs');
  assert.match(logs, /UnWrapKey/);
});
