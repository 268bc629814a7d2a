// Public keys from policies: PEM or base64 of it, files, kbs:/// through a
// KeySource (whose buffers are zeroed), and the key types refused.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Code } from '../../agent/src/errors.ts';
import type { KeySource, ResourceUri } from '../../agent/src/resource.ts';
import { PolicyInvalid } from '../../agent/src/signature/errors.ts';
import { loadGpgKeys, loadSigstoreKeys } from '../../agent/src/signature/keys.ts';
import { createGpgHome, type GpgHome } from '../fixtures/gpg.ts';

const pem = (type: 'ec' | 'rsa' | 'ed25519' | 'dsa', opts: Record<string, unknown>): string =>
  (generateKeyPairSync as (t: string, o: object) => { publicKey: { export(o: object): string | Buffer } })(type, opts).publicKey.export({ type: 'spki', format: 'pem' }).toString();

const invalid = (re: RegExp) => (err: unknown): boolean => err instanceof PolicyInvalid && err.code === Code.FAILED_PRECONDITION && re.test(err.message);

describe('policy keys', () => {
  let work: string;
  let gpg: GpgHome;
  before(() => {
    work = mkdtempSync(join(tmpdir(), 'keys-'));
    gpg = createGpgHome({ subkey: false });
  });
  after(async () => {
    await gpg.close();
    rmSync(work, { recursive: true, force: true });
  });

  test('sigstore keys: PEM, base64 of PEM, several blocks, files', async () => {
    const p256 = pem('ec', { namedCurve: 'prime256v1' });
    const ed = pem('ed25519', {});
    assert.equal((await loadSigstoreKeys([{ kind: 'data', data: p256 }], {})).length, 1);
    assert.equal((await loadSigstoreKeys([{ kind: 'data', data: Buffer.from(p256).toString('base64') }], {}))[0]!.asymmetricKeyType, 'ec');
    assert.equal((await loadSigstoreKeys([{ kind: 'data', data: p256 + ed }], {})).length, 2);
    const file = join(work, 'cosign.pub');
    writeFileSync(file, ed);
    assert.equal((await loadSigstoreKeys([{ kind: 'path', path: file }, { kind: 'data', data: p256 }], {})).length, 2);
  });

  test('sigstore keys refused: weak or unknown types, private keys, certificates, junk, missing files', async () => {
    const sig = (data: string) => loadSigstoreKeys([{ kind: 'data', data }], {});
    await assert.rejects(sig(pem('rsa', { modulusLength: 1024 })), invalid(/unsupported sigstore key \(rsa 1024 bits\)/));
    await assert.rejects(sig(pem('ec', { namedCurve: 'secp256k1' })), invalid(/unsupported sigstore key \(ec secp256k1\)/));
    await assert.rejects(sig(pem('dsa', { modulusLength: 2048, divisorLength: 256 })), invalid(/unsupported sigstore key \(dsa/));
    const priv = generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
    await assert.rejects(sig(priv), invalid(/a PRIVATE KEY block where a PUBLIC KEY was expected/));
    await assert.rejects(sig('-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n'), invalid(/CERTIFICATE block/));
    await assert.rejects(sig('-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n'), invalid(/not a valid PEM public key/));
    await assert.rejects(sig('not base64 !'), invalid(/neither PEM\/armored text nor base64/));
    await assert.rejects(sig(Buffer.from('hello').toString('base64')), invalid(/no PEM "PUBLIC KEY" block/));
    await assert.rejects(loadSigstoreKeys([{ kind: 'path', path: join(work, 'absent.pub') }], {}), invalid(/absent\.pub: ENOENT/));
  });

  test('kbs:/// keys come through the KeySource, whose buffer is zeroed after use', async () => {
    const p256 = pem('ec', { namedCurve: 'prime256v1' });
    const handed: Buffer[] = [];
    const asked: string[] = [];
    const source: KeySource = {
      get: async (uri: ResourceUri) => {
        asked.push(uri.text);
        const b = Buffer.from(uri.type === 'gpg' ? gpg.publicKey() : Buffer.from(p256));
        handed.push(b);
        return b;
      },
    };
    assert.equal((await loadSigstoreKeys([{ kind: 'path', path: 'kbs:///default/cosign/key' }], { keySource: source })).length, 1);
    const keys = await loadGpgKeys([{ kind: 'path', path: 'kbs:///default/gpg/key' }], { keySource: source });
    assert.equal(keys[0]!.getFingerprint(), gpg.fingerprint.toLowerCase());
    assert.deepEqual(asked, ['kbs:///default/cosign/key', 'kbs:///default/gpg/key']);
    for (const b of handed) assert.ok(b.every((x) => x === 0), 'zeroed');
    // The parsed keys still work after the zeroing.
    assert.ok(keys[0]!.getKeys().length >= 1);
    await assert.rejects(loadSigstoreKeys([{ kind: 'path', path: 'kbs:///default/cosign/key' }], {}), invalid(/no key source/));
  });

  test('GPG keyrings: armored, binary, base64 of binary; secret keys and junk refused', async () => {
    const fpr = gpg.fingerprint.toLowerCase();
    for (const data of [gpg.publicKey(true).toString(), gpg.publicKey().toString('base64'), gpg.publicKey(true).toString('base64')]) {
      assert.equal((await loadGpgKeys([{ kind: 'data', data }], {}))[0]!.getFingerprint(), fpr);
    }
    const secret = Buffer.from(await gpgExportSecret(gpg)).toString('base64');
    await assert.rejects(loadGpgKeys([{ kind: 'data', data: secret }], {}), invalid(/contains a private key/));
    await assert.rejects(loadGpgKeys([{ kind: 'data', data: Buffer.from('junk').toString('base64') }], {}), invalid(/not an OpenPGP keyring/));
  });
});

async function gpgExportSecret(g: GpgHome): Promise<Buffer> {
  return execFileSync('gpg', ['--batch', '--pinentry-mode', 'loopback', '--passphrase', '', '--export-secret-keys', g.fingerprint], { env: g.env });
}
