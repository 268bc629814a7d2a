// Demo: the main job end to end on this machine. An image maintainer
// encrypts a sample image (tee-agent encrypt: CoCo key packet, our
// AES_256_GCM_STREAM cipher, KEK held by the KBS) and pushes it to a local
// docker-registry; the agent, started with the development profile, proves
// itself to the development KBS (sample attester, RCAR 0.4.0), gets the KEK
// and pulls, decrypts and unpacks the image into a bundle, called over ttrpc
// as kata calls it.

import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse as parseToml, stringify as stringifyToml } from 'smol-toml';
import { startAgentProcess, AGENT_BIN } from './lib/agent-process.ts';
import { startDevKbs } from './lib/dev-kbs.ts';
import { startRegistry } from './lib/registry.ts';
import { removeTree } from '../test/helpers/mounts.ts';
import { buildImage, sampleLayers } from '../test/fixtures/images.ts';

const dir = mkdtempSync(join(tmpdir(), 'tee-agent-demo-'));
const step = (s: string): void => void process.stdout.write(`\n== ${s}\n`);
const cleanups: Array<() => Promise<unknown> | unknown> = [() => removeTree(dir)];

try {
  step('local docker-registry on 127.0.0.1 (Debian docker-registry)');
  const registry = await startRegistry();
  cleanups.unshift(() => registry.stop());
  console.log(`registry at ${registry.url}`);

  step('development KBS (Trustee protocol 0.4.0) holding the image KEK');
  const kek = randomBytes(32);
  const kid = 'kbs:///default/image-kek/demo';
  mkdirSync(join(dir, 'kbs/default/image-kek'), { recursive: true });
  writeFileSync(join(dir, 'kbs/default/image-kek/demo'), kek);
  const kbs = await startDevKbs({ resources: join(dir, 'kbs') });
  cleanups.unshift(() => kbs.stop());
  console.log(`KBS at ${kbs.url}; resource ${kid}`);

  step('image maintainer: build a 3-layer image, encrypt it with tee-agent encrypt, push it with skopeo');
  const layout = join(dir, 'layout');
  const plain = buildImage(layout, 'plain', sampleLayers(join(dir, 'src')));
  const kekFile = join(dir, 'kek.bin');
  writeFileSync(kekFile, kek, { mode: 0o600 });
  const digest = execFileSync(process.execPath, [AGENT_BIN, 'encrypt', '--input', `oci:${layout}:plain`, '--output', `oci:${layout}:encrypted`, '--recipient', `kbs:${kid.slice(4)}`, '--kek', kekFile, '--cipher', 'gcm-stream'], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
  }).trim();
  const image = `${registry.host}/demo/encrypted:v1`;
  await registry.push(`oci:${layout}:encrypted`, 'demo/encrypted:v1');
  console.log(`${image}: ${plain.layers.length} encrypted layers (AES_256_GCM_STREAM, key wrapped for ${kid}), manifest ${digest}`);

  step('starting tee-agent serve (development profile: sample attester, KBS client)');
  const profile = parseToml(readFileSync(new URL('./dev-profile.toml', import.meta.url), 'utf8')) as Record<string, Record<string, unknown>>;
  const config = stringifyToml({
    ...profile,
    attestation: { ...profile.attestation, eventlog_path: join(dir, 'eventlog'), initdata: join(dir, 'initdata.toml') },
    kbc: { name: 'cc_kbc', url: kbs.url },
    image: { bundle_base: join(dir, 'containers') },
    registry: { insecure: [registry.host] },
  });
  mkdirSync(join(dir, 'agent'));
  const agent = await startAgentProcess({ dir: join(dir, 'agent'), config });
  cleanups.unshift(() => agent.stop());
  console.log(`ready in ${agent.readyMs} ms; gRPC ${agent.grpcAddress}, ttrpc ${agent.ttrpcAddress}`);

  const tt = await agent.ttrpc();
  step('grpc.Health over ttrpc (as the kata shim calls it) and over gRPC');
  console.log('ttrpc Check   ->', JSON.stringify(await tt.call('grpc.Health', 'Check', { service: '' })));
  console.log('ttrpc Version ->', JSON.stringify(await tt.call('grpc.Health', 'Version', { service: '' })));
  console.log('gRPC  Check   ->', JSON.stringify(await agent.grpcCall('grpc.Health', 'Check', { service: '' })));
  console.log('AA GetTeeType ->', JSON.stringify(await tt.call('attestation_agent.AttestationAgentService', 'GetTeeType', {})));

  step('grpc.Image/PullImage over ttrpc: attest to the KBS, get the KEK, pull, decrypt, unpack');
  const t0 = performance.now();
  const res = await tt.call('grpc.Image', 'PullImage', { image, container_id: 'demo-container', source_creds: '' }, { timeoutMs: 120_000 });
  const ms = performance.now() - t0;
  const pulled = agent.logs.findLast((l) => l.msg === 'image pulled') ?? {};
  const bundle = join(dir, 'containers', 'demo-container');
  console.log('PullImage ->', JSON.stringify(res));
  console.log(`bundle:   ${bundle}`);
  console.log(`layers:   ${String(pulled.layers)} (${String(pulled.bytes)} bytes fetched, decrypted and unpacked)`);
  console.log(`time:     ${ms.toFixed(0)} ms over ttrpc, attestation included (${String(pulled.seconds)} s in the agent)`);
  console.log(`rootfs:   ${readdirSync(join(bundle, 'rootfs')).sort().join(' ')}`);
  console.log(`KBS:      ${kbs.stats.attest} attestation(s), ${kbs.stats.resource} resource request(s)`);

  step('api.ImagePullService/PullImage (as CDH is called): same image, layers already stored, key checked again');
  const t1 = performance.now();
  const cdh = await tt.call('api.ImagePullService', 'PullImage', { image_url: image, bundle_path: join(dir, 'cdh-bundle') }, { timeoutMs: 120_000 });
  console.log('PullImage ->', JSON.stringify(cdh), `in ${(performance.now() - t1).toFixed(0)} ms; KBS attestations still ${kbs.stats.attest} (token reused)`);
} finally {
  step('stopping');
  for (const c of cleanups) await c();
}
