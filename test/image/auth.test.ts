import { test } from 'node:test';
import assert from 'node:assert/strict';
import { AuthFile, parseWwwAuthenticate, parseUserPass, TokenCache, credentialsId } from '../../agent/src/image/auth.ts';
import { RegistryConfigError } from '../../agent/src/image/registry-errors.ts';

const b64 = (s: string): string => Buffer.from(s).toString('base64');

test('auth.json: longest prefix on path boundaries wins', () => {
  const f = AuthFile.parse(
    JSON.stringify({
      auths: {
        'reg.example.com': { auth: b64('host:h') },
        'reg.example.com/team': { auth: b64('team:t') },
        'reg.example.com/team/app': { auth: b64('app:a:with:colons') },
        'other.example.com:5000': { auth: b64('port:p') },
        'helper.example.com': { identitytoken: 'x' },
      },
    }),
    'auth.json',
  );
  assert.deepEqual(f.lookup('reg.example.com', 'team/app'), { username: 'app', password: 'a:with:colons' });
  assert.deepEqual(f.lookup('reg.example.com', 'team/other'), { username: 'team', password: 't' });
  assert.deepEqual(f.lookup('reg.example.com', 'teamx/app'), { username: 'host', password: 'h' }, 'prefix matches only on "/" boundaries');
  assert.deepEqual(f.lookup('other.example.com:5000', 'a'), { username: 'port', password: 'p' });
  assert.equal(f.lookup('other.example.com', 'a'), undefined);
  assert.equal(f.lookup('helper.example.com', 'a'), undefined);
});

test('auth.json: Docker Hub aliases, including https://index.docker.io/v1/', () => {
  for (const key of ['https://index.docker.io/v1/', 'index.docker.io', 'registry-1.docker.io', 'docker.io']) {
    const f = AuthFile.parse(JSON.stringify({ auths: { [key]: { auth: b64('u:p') } } }), 'a');
    assert.deepEqual(f.lookup('docker.io', 'library/busybox'), { username: 'u', password: 'p' }, key);
  }
});

test('auth.json: errors name the file, never the secret', () => {
  assert.throws(() => AuthFile.parse('{', 'A'), (e: Error) => e instanceof RegistryConfigError && /A: not valid JSON/.test(e.message));
  assert.throws(() => AuthFile.parse('{"auths":[]}', 'A'), RegistryConfigError);
  assert.throws(
    () => AuthFile.parse(JSON.stringify({ auths: { x: { auth: b64('no-colon-secret') } } }), 'A'),
    (e: Error) => e instanceof RegistryConfigError && !e.message.includes('no-colon-secret'),
  );
  assert.throws(() => parseUserPass(':pw', 'source_creds'), RegistryConfigError);
});

test('WWW-Authenticate: quoted commas, escapes, several challenges', () => {
  const [c] = parseWwwAuthenticate('Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:a/b:pull,push"');
  assert.equal(c?.scheme, 'bearer');
  assert.deepEqual(c?.params, { realm: 'https://auth.example.com/token', service: 'registry.example.com', scope: 'repository:a/b:pull,push' });
  const two = parseWwwAuthenticate('Basic realm="a, \\"b\\"", Bearer realm="https://t/x", error=invalid_token');
  assert.equal(two.length, 2);
  assert.deepEqual(two[0], { scheme: 'basic', params: { realm: 'a, "b"' } });
  assert.deepEqual(two[1], { scheme: 'bearer', params: { realm: 'https://t/x', error: 'invalid_token' } });
  assert.deepEqual(parseWwwAuthenticate(''), []);
  assert.deepEqual(parseWwwAuthenticate('  ,, Basic'), [{ scheme: 'basic', params: {} }]);
});

test('token cache: per key, expires with a margin, default 60 s', () => {
  let now = 1_000_000;
  const c = new TokenCache(() => now);
  c.set('k', 't', 300);
  assert.equal(c.get('k'), 't');
  now += 294_000;
  assert.equal(c.get('k'), 't');
  now += 2_000;
  assert.equal(c.get('k'), undefined, 'dropped 5 s before expiry');
  c.set('d', 'x', undefined);
  now += 53_000;
  assert.equal(c.get('d'), 'x');
  now += 2_000;
  assert.equal(c.get('d'), undefined);
  assert.notEqual(credentialsId({ username: 'a', password: 'b' }), credentialsId({ username: 'a', password: 'c' }));
});
