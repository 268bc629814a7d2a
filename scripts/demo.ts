// Demo: start the agent with the development profile, then call it the way
// the kata shim (ttrpc) and the CDH gRPC clients do: health, then an image
// pull from a local docker-registry into a bundle.

import { mkdirSync, mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startAgentProcess } from './lib/agent-process.ts';
import { removeTree } from '../test/helpers/mounts.ts';
import { startRegistry } from './lib/registry.ts';
import { buildImage, sampleLayers } from '../test/fixtures/images.ts';

const dir = mkdtempSync(join(tmpdir(), 'tee-agent-demo-'));
const step = (s: string): void => void process.stdout.write(`\n== ${s}\n`);

step('local docker-registry on 127.0.0.1 (Debian docker-registry)');
const registry = await startRegistry();
console.log(`registry at ${registry.url}`);

step('generating a sample image (gzip, zstd and uncompressed layers) and pushing it with skopeo');
const img = buildImage(join(dir, 'layout'), 'sample', sampleLayers(join(dir, 'src')));
const image = `${registry.host}/demo/sample:v1`;
await registry.push(`oci:${join(dir, 'layout')}:sample`, 'demo/sample:v1');
console.log(`${image}: ${img.layers.length} layers, manifest ${img.manifestDigest}`);

step('starting tee-agent serve (development profile)');
const profile = readFileSync(new URL('./dev-profile.toml', import.meta.url), 'utf8');
const config = `${profile}\n[image]\nbundle_base = ${JSON.stringify(join(dir, 'containers'))}\n\n[registry]\ninsecure = [${JSON.stringify(registry.host)}]\n`;
mkdirSync(join(dir, 'agent'));
const agent = await startAgentProcess({ dir: join(dir, 'agent'), config });
console.log(`ready in ${agent.readyMs} ms; gRPC ${agent.grpcAddress}, ttrpc ${agent.ttrpcAddress}`);
try {
  step('grpc.Health over ttrpc (as the kata shim calls it)');
  const tt = await agent.ttrpc();
  console.log('Check   ->', JSON.stringify(await tt.call('grpc.Health', 'Check', { service: '' })));
  console.log('Version ->', JSON.stringify(await tt.call('grpc.Health', 'Version', { service: '' })));

  step('grpc.Health over gRPC');
  console.log('Check   ->', JSON.stringify(await agent.grpcCall('grpc.Health', 'Check', { service: '' })));

  step('grpc.Image/PullImage over ttrpc (as kata-agent is called)');
  const t0 = performance.now();
  const res = await tt.call('grpc.Image', 'PullImage', { image, container_id: 'demo-container', source_creds: '' }, { timeoutMs: 120_000 });
  const ms = performance.now() - t0;
  const pulled = agent.logs.findLast((l) => l.msg === 'image pulled') ?? {};
  const bundle = join(dir, 'containers', 'demo-container');
  console.log('PullImage ->', JSON.stringify(res));
  console.log(`bundle:  ${bundle}`);
  console.log(`layers:  ${String(pulled.layers)} (${String(pulled.bytes)} bytes fetched)`);
  console.log(`time:    ${ms.toFixed(0)} ms over ttrpc (${String(pulled.seconds)} s in the agent)`);
  console.log(`rootfs:  ${readdirSync(join(bundle, 'rootfs')).sort().join(' ')}`);

  step('api.ImagePullService/PullImage over ttrpc (as CDH is called): same image, layers already stored');
  const t1 = performance.now();
  const cdh = await tt.call('api.ImagePullService', 'PullImage', { image_url: image, bundle_path: join(dir, 'cdh-bundle') }, { timeoutMs: 120_000 });
  console.log('PullImage ->', JSON.stringify(cdh), `in ${(performance.now() - t1).toFixed(0)} ms`);
} finally {
  step('stopping');
  const code = await agent.stop();
  console.log(`agent exited with ${code}`);
  await registry.stop();
  removeTree(dir);
}
