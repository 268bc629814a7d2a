// tee-agent pull as a user runs it: a child process, progress on stderr, one
// JSON line on stdout, exit codes 0 / 1 / 2.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runCli } from '../helpers/cli.ts';
import { startRegistry, type TestRegistry } from '../helpers/registry.ts';
import { startFaultProxy, type FaultProxy } from '../helpers/fault-proxy.ts';
import { removeTree } from '../helpers/mounts.ts';
import { buildImage, sampleLayers, type BuiltImage } from '../fixtures/images.ts';

const run = (args: string[]) => runCli(args);

describe('tee-agent pull', () => {
  let work: string;
  let reg: TestRegistry;
  let guarded: FaultProxy;
  let img: BuiltImage;
  let n = 0;
  const common = (): string[] => ['--work-dir', join(work, `store-${n}`), '--cmdline', '/dev/null'];

  before(async () => {
    work = mkdtempSync(join(tmpdir(), 'cli-pull-'));
    reg = await startRegistry();
    img = buildImage(join(work, 'layout'), 's', sampleLayers(join(work, 'src')));
    await reg.push(`oci:${join(work, 'layout')}:s`, 'cli/sample:v1');
    guarded = await startFaultProxy({ upstream: reg.url, basicAuth: { username: 'carol', password: 'pa:ss' } });
  });

  after(async () => {
    try {
      await guarded?.close();
      await reg?.stop();
    } finally {
      removeTree(work);
    }
  });

  test('pulls into the bundle and prints one JSON line; progress on stderr', async () => {
    const bundle = join(work, `bundle-${n++}`);
    const r = await run(['pull', `${reg.host}/cli/sample:v1`, '--bundle', bundle, '--insecure-registry', reg.host, ...common()]);
    assert.equal(r.code, 0, r.stderr);
    const lines = r.stdout.trim().split('\n');
    assert.equal(lines.length, 1);
    const out = JSON.parse(lines[0]!) as Record<string, unknown>;
    assert.equal(out.manifest_digest, img.manifestDigest);
    assert.equal(out.layers, 3);
    assert.equal(out.bytes, img.layers.reduce((s, l) => s + l.size, 0));
    assert.equal(typeof out.seconds, 'number');
    assert.match(r.stderr, /pulling .*cli\/sample:v1: 3 layers/);
    assert.match(r.stderr, /done/);
    assert.equal(readFileSync(join(bundle, 'rootfs', 'etc', 'hostname'), 'utf8'), 'sample-2\n');
  });

  test('--auth reads auth.json; without it the registry refuses', async () => {
    const auth = join(work, 'auth.json');
    writeFileSync(auth, JSON.stringify({ auths: { [guarded.host]: { auth: Buffer.from('carol:pa:ss').toString('base64') } } }));
    const ok = await run(['pull', `${guarded.host}/cli/sample:v1`, '--bundle', join(work, `bundle-${n++}`), '--insecure-registry', guarded.host, '--auth', auth, '--no-progress', ...common()]);
    assert.equal(ok.code, 0, ok.stderr);
    assert.equal(ok.stderr, '', '--no-progress and the default warn level keep stderr quiet');
    const denied = await run(['pull', `${guarded.host}/cli/sample:v1`, '--bundle', join(work, `bundle-${n++}`), '--insecure-registry', guarded.host, '--no-progress', ...common()]);
    assert.equal(denied.code, 1);
    assert.match(denied.stderr, /tee-agent pull: .*requires credentials/);
    assert.equal(denied.stdout, '');
  });

  test('usage errors exit 2; --help exits 0', async () => {
    const help = await run(['pull', '--help']);
    assert.equal(help.code, 0);
    assert.match(help.stdout, /Usage: tee-agent pull IMAGE --bundle DIR/);
    assert.equal((await run(['pull', '--bundle', '/tmp/x'])).code, 2);
    assert.equal((await run(['pull', 'a/b'])).code, 2);
    const bad = await run(['pull', 'a/b', '--bundle', '/tmp/x', '--insecure-registry', 'http://x']);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /HOST\[:PORT\]/);
  });

  test('a failed pull exits 1 with a clear message and no JSON', async () => {
    const r = await run(['pull', `${reg.host}/cli/absent:v1`, '--bundle', join(work, `bundle-${n++}`), '--insecure-registry', reg.host, ...common()]);
    assert.equal(r.code, 1);
    assert.equal(r.stdout, '');
    assert.match(r.stderr, /tee-agent pull: .*cli\/absent: manifest v1: not found/);
  });
});
