// tee-agent encrypt as a child process, on OCI layouts made by umoci.

import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { OfflineKeyStore } from '../../agent/src/attestation/offline-store.ts';
import { createLayerDecryptor, decryptionKeys } from '../../agent/src/crypto/index.ts';
import { OciLayout } from '../../agent/src/crypto/oci-layout.ts';
import { AGENT_BIN } from '../helpers/agent.ts';
import { keyPair, newKek, offlineKeyFile, tempDir } from '../fixtures/keys.ts';
import { plainImage, skopeo } from '../fixtures/oci-image.ts';
import { assertDecryptsToPlain, manifestOf } from '../crypto/image-helpers.ts';
import { run } from '../crypto/stream-helpers.ts';

const execFileP = promisify(execFile);
const dir = tempDir('encrypt-cli');
const plain = join(dir, 'plain');
const TAG = 'latest';
const rsa = keyPair(dir, 'rsa', 'rsa');
const kek = newKek();
const kekFile = join(dir, 'kek.bin');
writeFileSync(kekFile, kek, { mode: 0o600 });
const store = new OfflineKeyStore([offlineKeyFile(dir, { 'default/key/image': kek })]);

async function teeAgent(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await execFileP(process.execPath, [AGENT_BIN, 'encrypt', ...args]);
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

before(async () => {
  await plainImage(plain, TAG, [
    [{ path: 'a', content: randomBytes(200_000) }],
    [{ path: 'b', content: randomBytes(3_000_000) }],
    [{ path: 'c', content: Buffer.from('c') }],
  ]);
});

test('--help, and usage errors exit 2', async () => {
  const help = await teeAgent('--help');
  assert.equal(help.code, 0);
  assert.match(help.stdout, /--recipient R/);
  const cases = [
    [],
    ['--input', `oci:${plain}`, '--output', `oci:${dir}/x`],
    ['--input', `oci:${plain}`, '--output', `oci:${dir}/x`, '--recipient', 'pgp:me'],
    ['--input', `oci:${plain}`, '--output', `oci:${dir}/x`, '--recipient', `jwe:${rsa.publicPem}`, '--cipher', 'aes-cbc'],
    ['--input', `oci:${plain}`, '--output', `oci:${dir}/x`, '--recipient', 'kbs:///default/key/image'],
    ['--input', `oci:${plain}`, '--output', `oci:${dir}/x`, '--recipient', `jwe:${rsa.publicPem}`, '--layers', 'one'],
    ['--input', plain, '--output', `oci:${dir}/x`, '--recipient', `jwe:${rsa.publicPem}`],
  ];
  const results = await Promise.all(cases.map((args) => teeAgent(...args)));
  for (const [i, r] of results.entries()) {
    assert.equal(r.code, 2, `${cases[i]!.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, /Usage: tee-agent encrypt/);
  }
});

test('JWE and CoCo packet recipients, ctr-hmac: progress on stderr, digest on stdout, decrypts with skopeo and through the offline key store', async () => {
  const out = join(dir, 'ctr');
  const r = await teeAgent('--input', `oci:${plain}:${TAG}`, '--output', `oci:${out}:enc`, '--recipient', `jwe:${rsa.publicPem}`, '--recipient', 'kbs:///default/key/image', '--kek', kekFile);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /layer 1\/3 sha256:[0-9a-f]{12}: encrypting/);
  assert.match(r.stderr, /layer 3\/3 .*done/);
  assert.ok(!r.stderr.includes(kek.toString('base64')) && !r.stdout.includes(kek.toString('base64')));
  const layout = new OciLayout(out);
  assert.equal(r.stdout.trim(), (await layout.resolve('enc')).digest);
  const m = await manifestOf(out, 'enc');
  for (const l of m.layers) {
    assert.ok(l.annotations?.['org.opencontainers.image.enc.keys.jwe']);
    assert.ok(l.annotations?.['org.opencontainers.image.enc.keys.provider.attestation-agent']);
  }
  // Each key path on its own.
  const plainM = await manifestOf(plain, TAG);
  const [encRef, plainRef] = [{ dir: out, tag: 'enc' }, { dir: plain, tag: TAG }];
  assert.equal(await assertDecryptsToPlain(encRef, plainRef, decryptionKeys({ keySource: store })), 3, 'through the offline key store');
  assert.equal(await assertDecryptsToPlain(encRef, plainRef, decryptionKeys({ flags: [rsa.privatePem] })), 3, 'through JWE');
  const dec = join(dir, 'ctr-skopeo-dec');
  await skopeo('copy', '--decryption-key', rsa.privatePem, `oci:${out}:enc`, `oci:${dec}:${TAG}`);
  assert.deepEqual((await manifestOf(dec, TAG)).layers.map((l) => l.digest), plainM.layers.map((l) => l.digest));
  const inspect = JSON.parse((await skopeo('inspect', '--raw', `oci:${out}:enc`)).stdout) as { layers: unknown[] };
  assert.equal(inspect.layers.length, 3);
});

test('gcm-stream on chosen layers, into the input layout under a new tag; swapped layer blobs are refused', async () => {
  const b64Kek = join(dir, 'kek.b64');
  writeFileSync(b64Kek, kek.toString('base64') + '\n');
  const r = await teeAgent('--input', `oci:${plain}:${TAG}`, '--output', `oci:${plain}:gcm`, '--recipient', 'kbs:default/key/image', '--kek', b64Kek, '--cipher', 'gcm-stream', '--layers', '0,-1', '--chunk-size', '65536');
  assert.equal(r.code, 0, r.stderr);
  const m = await manifestOf(plain, 'gcm');
  assert.deepEqual(m.layers.map((l) => l.mediaType.endsWith('+encrypted')), [true, false, true]);
  const keys = decryptionKeys({ keySource: store });
  const layout = new OciLayout(plain);
  const [l0, , l2] = m.layers;
  for (const l of [l0!, l2!]) {
    const d = await createLayerDecryptor(l, keys, { verifyPlainDigest: true });
    assert.equal(d.cipher, 'AES_256_GCM_STREAM');
    assert.ok((await run(d.stream, readFileSync(layout.blobPath(l.digest)))).error === undefined);
  }
  // Layer 0's key and header with layer 2's blob: its key commitment does not match.
  const d = await createLayerDecryptor(l0!, keys);
  const swapped = await run(d.stream, readFileSync(layout.blobPath(l2!.digest)));
  assert.match(String(swapped.error), /does not match the AES_256_GCM_STREAM header/);
  assert.equal(swapped.out.length, 0);
  // The original tag still names the plain image.
  assert.equal((await manifestOf(plain, TAG)).layers.every((l) => !l.mediaType.endsWith('+encrypted')), true);
});

test('a corrupt input blob stops the command with an error, and no tag is written', async () => {
  const src = join(dir, 'corrupt');
  await skopeo('copy', `oci:${plain}:${TAG}`, `oci:${src}:${TAG}`);
  const m = await manifestOf(src, TAG);
  const blob = new OciLayout(src).blobPath(m.layers[1]!.digest);
  const bytes = readFileSync(blob);
  bytes[100]! ^= 1;
  writeFileSync(blob, bytes);
  const out = join(dir, 'corrupt-out');
  const r = await teeAgent('--input', `oci:${src}:${TAG}`, '--output', `oci:${out}:${TAG}`, '--recipient', `jwe:${rsa.publicPem}`);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /does not match its digest/);
  assert.equal(existsSync(join(out, 'index.json')), false);
  const bad = await teeAgent('--input', `oci:${plain}:${TAG}`, '--output', `oci:${out}:${TAG}`, '--recipient', `jwe:${rsa.publicPem}`, '--layers', '5');
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /layer index 5 is out of range for an image of 3 layers/);
});
