// registries.d parsing and lookup, lookaside URLs, and the readers.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Code } from '../../agent/src/errors.ts';
import { parseReference } from '../../agent/src/image/reference.ts';
import { RegistriesDInvalid } from '../../agent/src/signature/errors.ts';
import { DefaultLookasideReader, loadRegistriesD, lookasideSignatures, lookasideUrl } from '../../agent/src/signature/lookaside.ts';
import { startStaticServer, type StaticServer } from '../helpers/static-server.ts';
import { writeRegistriesD } from '../helpers/signature-env.ts';

const D = 'sha256:' + 'd'.repeat(64);

describe('registries.d', () => {
  let work: string;
  let n = 0;
  const dir = (files: Record<string, string>): string => writeRegistriesD(join(work, `d${++n}`), files);
  const lookup = async (files: Record<string, string>, image: string): Promise<string | undefined> => (await loadRegistriesD(dir(files))).lookasideFor(parseReference(image))?.href;
  const invalid = async (files: Record<string, string>, re: RegExp): Promise<void> => {
    await assert.rejects(loadRegistriesD(dir(files)), (err: unknown) => err instanceof RegistriesDInvalid && err.code === Code.FAILED_PRECONDITION && re.test(err.message));
  };

  before(() => {
    work = mkdtempSync(join(tmpdir(), 'registries-d-'));
  });
  after(() => rmSync(work, { recursive: true, force: true }));

  test('the most specific docker scope with a read location wins, then default-docker', async () => {
    const files = {
      'a.yaml': 'default-docker:\n  lookaside: https://sigs.example.com/default\n',
      'b.yaml': [
        'docker:',
        '  quay.io:',
        '    lookaside: https://sigs.example.com/quay',
        '  quay.io/ns:',
        '    sigstore: file:///var/lib/sigs/ns', // the legacy key name
        '  quay.io/ns/app:',
        '    lookaside-staging: file:///staging/only', // write-only: falls through to quay.io/ns
        '  quay.io/ns/app:v2:',
        '    lookaside: https://sigs.example.com/v2',
        '  "*.example.org":',
        '    lookaside: http://wild.example.org/',
        '',
      ].join('\n'),
      'ignored.conf': 'not: yaml: at: all: [',
    };
    assert.equal(await lookup(files, 'quay.io/ns/app:v1'), 'file:///var/lib/sigs/ns');
    assert.equal(await lookup(files, 'quay.io/ns/app:v2'), 'https://sigs.example.com/v2');
    assert.equal(await lookup(files, 'quay.io/other:v1'), 'https://sigs.example.com/quay');
    assert.equal(await lookup(files, 'registry.example.org:5000/x'), 'http://wild.example.org/');
    assert.equal(await lookup(files, 'docker.io/library/busybox'), 'https://sigs.example.com/default');
    assert.equal(await lookup({ 'x.yaml': 'docker:\n  quay.io:\n    lookaside: file:///x\n' }, 'example.com/x'), undefined);
    assert.equal(await lookup({ 'empty.yaml': '' }, 'example.com/x'), undefined);
  });

  test('errors name the file and key', async () => {
    await invalid({ 'a.yaml': 'default-docker:\n  lookaside: file:///a\n', 'b.yaml': 'default-docker:\n  lookaside: file:///b\n' }, /b\.yaml: default-docker is already defined in .*a\.yaml/);
    await invalid({ 'a.yaml': 'docker:\n  quay.io:\n    lookaside: file:///a\n', 'b.yaml': 'docker:\n  quay.io:\n    lookaside: file:///b\n' }, /b\.yaml: docker\["quay\.io"\]: already defined/);
    await invalid({ 'a.yaml': 'docker:\n  quay.io:\n    lookaside: file:///a\n  quay.io:\n    lookaside: file:///b\n' }, /a\.yaml: not valid YAML/);
    await invalid({ 'a.yaml': 'default-docker:\n  lookasid: file:///a\n' }, /default-docker\.lookasid: unknown key/);
    await invalid({ 'a.yaml': 'dokker:\n  quay.io: {}\n' }, /a\.yaml: dokker: unknown key/);
    await invalid({ 'a.yaml': 'default-docker:\n  lookaside: ftp://x/\n' }, /unsupported scheme ftp:/);
    await invalid({ 'a.yaml': 'default-docker:\n  lookaside: /no/scheme\n' }, /lookaside: not a URL/);
    await invalid({ 'a.yaml': 'docker:\n  busybox:\n    lookaside: file:///a\n' }, /docker\["busybox"\]: bad scope/);
    await invalid({ 'a.yaml': 'default-docker:\n  use-sigstore-attachments: "yes"\n' }, /use-sigstore-attachments: expected a boolean/);
    await assert.rejects(loadRegistriesD(join(work, 'absent')), /ENOENT/);
  });
});

describe('lookaside storage', () => {
  let work: string;
  let http: StaticServer;
  const reader = new DefaultLookasideReader({ connectTimeoutMs: 2000, idleTimeoutMs: 2000 });
  const ref = parseReference('quay.io/ns/app:v1');

  before(async () => {
    work = mkdtempSync(join(tmpdir(), 'lookaside-'));
    const sigdir = join(work, `ns/app@sha256=${'d'.repeat(64)}`);
    mkdirSync(sigdir, { recursive: true });
    for (const i of [1, 2, 4]) writeFileSync(join(sigdir, `signature-${i}`), `sig ${i}`);
    http = await startStaticServer(work);
  });
  after(async () => {
    await reader.close();
    await http.close();
    rmSync(work, { recursive: true, force: true });
  });

  test('URLs: <base>/<repository path>@<alg>=<hex>/signature-N; the digest is checked first', () => {
    assert.equal(lookasideUrl(new URL('https://s.example/sigs/'), ref, D, 3).href, `https://s.example/sigs/ns/app@sha256=${'d'.repeat(64)}/signature-3`);
    assert.equal(lookasideUrl(new URL('file:///var/sigs'), ref, D, 1).href, `file:///var/sigs/ns/app@sha256=${'d'.repeat(64)}/signature-1`);
    for (const bad of ['sha256:../../../etc', 'sha256:' + 'D'.repeat(64), 'md5:abc', 'sha256:' + 'd'.repeat(63) + '/']) {
      assert.throws(() => lookasideUrl(new URL('file:///var/sigs'), ref, bad, 1), /digest/, bad);
    }
  });

  test('signature-1…N until the first that is missing, over file:// and http://', async () => {
    for (const base of [pathToFileURL(work), new URL(`${http.url}/`)]) {
      const sigs = await lookasideSignatures(reader, base, ref, D);
      assert.deepEqual(sigs.map((b) => b.toString()), ['sig 1', 'sig 2'], base.href);
      assert.deepEqual(await lookasideSignatures(reader, base, parseReference('quay.io/ns/other:v1'), D), []);
    }
  });

  test('oversized or unreadable objects are errors, not "missing"', async () => {
    const big = join(work, 'big');
    writeFileSync(big, Buffer.alloc(2048));
    await assert.rejects(reader.read(pathToFileURL(big), 1024), /larger than 1024 bytes/);
    await assert.rejects(reader.read(new URL(`${http.url}/big`), 1024), /larger than 1024 bytes/);
    await assert.rejects(reader.read(pathToFileURL(work), 1024), /not a regular file/);
    await assert.rejects(reader.read(new URL('http://127.0.0.1:1/x'), 1024), (err: unknown) => (err as { code?: number }).code === Code.UNAVAILABLE);
  });
});
