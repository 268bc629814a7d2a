// Registry requests through proxies (kata's agent.https_proxy, http_proxy,
// no_proxy): HTTPS through a CONNECT tunnel, plain HTTP forwarded, no_proxy
// going direct, proxy credentials, and the no_proxy matching rules.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { bypassesProxy } from '../../agent/src/image/http-dispatch.ts';
import { RegistryClient } from '../../agent/src/image/registry.ts';
import { DEFAULT_HTTP } from '../../agent/src/image/registry-http.ts';
import { resolveConfig } from '../../agent/src/config/index.ts';
import { httpSettings } from '../../agent/src/image/setup.ts';
import { createLogger } from '../../agent/src/log.ts';
import { buildImage, writeTree, type BuiltImage } from '../fixtures/images.ts';
import { startForwardProxy, type ForwardProxy } from '../helpers/forward-proxy.ts';
import { startRegistry, type TestRegistry } from '../helpers/registry.ts';

const log = createLogger('silent');

test('no_proxy: names, subdomains on label boundaries, IPs, ports, "*"', () => {
  const u = (s: string) => new URL(s);
  assert.equal(bypassesProxy(u('https://registry.example.com/v2/'), 'example.com'), true);
  assert.equal(bypassesProxy(u('https://registry.example.com/v2/'), '.example.com'), true);
  assert.equal(bypassesProxy(u('https://registry.example.com/v2/'), '*.example.com'), true);
  assert.equal(bypassesProxy(u('https://badexample.com/v2/'), 'example.com'), false);
  assert.equal(bypassesProxy(u('https://example.com:5000/v2/'), 'example.com:5000'), true);
  assert.equal(bypassesProxy(u('https://example.com/v2/'), 'example.com:5000'), false);
  assert.equal(bypassesProxy(u('https://example.com/v2/'), 'example.com:443'), true);
  assert.equal(bypassesProxy(u('http://10.0.0.1:80/'), ' 127.0.0.1 , 10.0.0.1'), true);
  assert.equal(bypassesProxy(u('http://[::1]:5000/'), '::1'), true);
  assert.equal(bypassesProxy(u('https://anything/'), '*'), true);
  assert.equal(bypassesProxy(u('https://anything/'), ''), false);
});

test('the kernel cmdline proxies reach the registry settings', () => {
  const config = resolveConfig({ cmdline: 'agent.https_proxy=http://p:3128 agent.http_proxy=http://q:3128 agent.no_proxy=10.0.0.0,.corp' });
  assert.deepEqual(httpSettings(config).proxy, { httpsProxy: 'http://p:3128', httpProxy: 'http://q:3128', noProxy: '10.0.0.0,.corp' });
});

describe('registry requests through proxies', () => {
  let work: string;
  let tls: TestRegistry;
  let plain: TestRegistry;
  let proxy: ForwardProxy;
  let img: BuiltImage;
  const clients: RegistryClient[] = [];

  before(async () => {
    work = mkdtempSync(join(tmpdir(), 'tee-agent-proxy-'));
    [tls, plain, proxy] = await Promise.all([startRegistry({ tls: true }), startRegistry(), startForwardProxy({ credentials: 'proxyuser:s3cret' })]);
    const layout = join(work, 'layout');
    img = buildImage(layout, 't', [{ dir: writeTree(join(work, 'l'), [{ type: 'file', path: 'hello', content: 'via proxy\n' }]), compression: 'gzip' }]);
    await tls.push(`oci:${layout}:t`, 'p/app:v1');
    await plain.push(`oci:${layout}:t`, 'p/app:v1');
  });

  after(async () => {
    for (const c of clients) await c.close();
    await Promise.all([tls?.stop(), plain?.stop(), proxy?.close()]);
    rmSync(work, { recursive: true, force: true });
  });

  const client = (noProxy = '', credentials = 'proxyuser:s3cret'): RegistryClient => {
    const uri = proxy.url.replace('http://', `http://${credentials}@`);
    const c = new RegistryClient({ ...DEFAULT_HTTP, retries: 0, caPem: tls.caPem!, proxy: { httpsProxy: uri, httpProxy: uri, noProxy } }, log);
    clients.push(c);
    return c;
  };

  test('https through a CONNECT tunnel, plain http forwarded, both with proxy credentials', async () => {
    const from = proxy.log.length;
    const c = client();
    assert.equal((await c.repository({ registry: tls.host, repository: 'p/app' }, { insecure: false }).getManifest('v1')).digest, img.manifestDigest);
    assert.equal((await c.repository({ registry: plain.host, repository: 'p/app' }, { insecure: true }).getManifest('v1')).digest, img.manifestDigest);
    const seen = proxy.log.slice(from);
    assert.ok(seen.includes(`CONNECT ${tls.host}`), seen.join('\n'));
    assert.ok(seen.some((l) => l === `GET http://${plain.host}/v2/p/app/manifests/v1`), seen.join('\n'));
  });

  test('no_proxy hosts go direct', async () => {
    const from = proxy.log.length;
    const c = client(`${tls.host},127.0.0.1`);
    await c.repository({ registry: tls.host, repository: 'p/app' }, { insecure: false }).getManifest('v1');
    await c.repository({ registry: plain.host, repository: 'p/app' }, { insecure: true }).getManifest('v1');
    assert.deepEqual(proxy.log.slice(from), []);
  });

  test('wrong proxy credentials fail the request; the proxy is not bypassed', async () => {
    await assert.rejects(client('', 'proxyuser:wrong').repository({ registry: tls.host, repository: 'p/app' }, { insecure: false }).getManifest('v1'));
  });
});
