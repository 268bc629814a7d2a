import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ConfigError, parseCmdline, resolveConfig } from '../../agent/src/config/index.ts';

test('defaults match the upstream CDH and AA endpoints', () => {
  const c = resolveConfig({});
  assert.deepEqual(
    c.listen.grpc.map((a) => a.text),
    ['tcp://127.0.0.1:50000'],
  );
  assert.deepEqual(
    c.listen.ttrpc.map((a) => a.text),
    ['unix:///run/confidential-containers/cdh.sock', 'unix:///run/confidential-containers/attestation-agent/attestation-agent.sock'],
  );
  assert.equal(c.image.work_dir, '/run/kata-containers/image');
  assert.equal(c.kbc.name, 'offline_fs_kbc');
  assert.equal(c.storage.integrity, true);
  assert.ok(Object.isFrozen(c) && Object.isFrozen(c.image));
});

test('precedence is flags > config file > cmdline > defaults', () => {
  const cmdline = 'console=ttyS0 agent.log=debug agent.aa_kbc_params=cc_kbc::http://10.0.0.1:8080 agent.image_policy_file=kbs:///default/policy/1 agent.enable_signature_verification=true';
  const file = { path: 'c.toml', text: '[log]\nlevel = "warn"\n[image]\nwork_dir = "/from/file"\n' };
  const c = resolveConfig({ cmdline, file, flags: new Map([['image.work_dir', '/from/flag']]) });
  assert.equal(c.log.level, 'warn');
  assert.equal(c.image.work_dir, '/from/flag');
  assert.equal(c.kbc.name, 'cc_kbc');
  assert.equal(c.kbc.url, 'http://10.0.0.1:8080');
  assert.equal(c.image.policy, 'kbs:///default/policy/1');
  assert.equal(c.image.enable_signature_verification, true);
});

test('every documented cmdline key maps onto the config', () => {
  const c = resolveConfig({
    cmdline:
      'agent.image_registry_auth=file:///etc/auth.json agent.secure_storage_integrity=false agent.https_proxy=http://p:3128 agent.no_proxy=127.0.0.1 agent.server_addr=vsock://-1:1024',
  });
  assert.equal(c.image.auth, 'file:///etc/auth.json');
  assert.equal(c.storage.integrity, false);
  assert.equal(c.proxy.https_proxy, 'http://p:3128');
  assert.equal(c.proxy.no_proxy, '127.0.0.1');
});

test('unknown keys and bad values fail naming the key', () => {
  const bad: Array<[string, string]> = [
    ['[image]\nwork_dri = "/x"\n', 'image.work_dri'],
    ['[nosuch]\na = 1\n', 'nosuch'],
    ['[image]\nmax_concurrent_layers = 0\n', 'image.max_concurrent_layers'],
    ['[image]\nmax_concurrent_layers = "3"\n', 'image.max_concurrent_layers'],
    ['[kbc]\nname = "sample_kbc"\n', 'kbc.name'],
    ['[listen]\ngrpc = ["http://x:1"]\n', 'listen.grpc'],
    ['[log]\nlevel = "loud"\n', 'log.level'],
    ['image = 3\n', 'image'],
  ];
  for (const [text, key] of bad) {
    assert.throws(
      () => resolveConfig({ file: { path: 'c.toml', text } }),
      (err: unknown) => err instanceof ConfigError && err.key === key && err.message.includes(key),
      text,
    );
  }
  assert.throws(() => resolveConfig({ cmdline: 'agent.secure_storage_integrity=maybe' }), /storage\.integrity/);
  assert.throws(() => resolveConfig({ cmdline: 'agent.aa_kbc_params=cc_kbc' }), /agent\.aa_kbc_params/);
  assert.throws(() => resolveConfig({ file: { path: 'c.toml', text: '[log' } }), /c\.toml: not valid TOML/);
});

test('kernel cmdline quoting groups words', () => {
  const m = parseCmdline('a=1 b="x y" quiet c=');
  assert.deepEqual([...m], [
    ['a', '1'],
    ['b', 'x y'],
    ['quiet', ''],
    ['c', ''],
  ]);
});
