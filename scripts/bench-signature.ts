// Benchmark: the latency signature verification adds to a pull, against the
// same pull with an insecureAcceptAnything policy, in one run. See
// `scripts/bench-signature --help`.

import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs, promisify } from 'node:util';
import { loadConfig } from '../agent/src/config/index.ts';
import { createLogger } from '../agent/src/log.ts';
import { createPuller, httpSettings } from '../agent/src/image/setup.ts';
import { LayerStore } from '../agent/src/image/store.ts';
import { createSignatureVerifier } from '../agent/src/signature/index.ts';
import { startRegistry } from './lib/registry.ts';
import { buildImage, pseudoRandom, writeTree } from '../test/fixtures/images.ts';
import { cosignKey, cosignSign } from '../test/fixtures/cosign.ts';
import { createGpgHome } from '../test/fixtures/gpg.ts';
import { startStaticServer } from '../test/helpers/static-server.ts';
import { median } from './lib/stats.ts';

const execFileP = promisify(execFile);

const USAGE = `Usage: scripts/bench-signature [--runs N] [--cold]

Pushes a small 3-layer image (~1.5 MB) to a local docker-registry on
127.0.0.1, signs it with cosign (the test signer: ECDSA P-256, ".sig" tag)
and with GPG simple signing (skopeo copy --sign-by into a lookaside
directory served over http from 127.0.0.1), then pulls it in-process through
the daemon's code path (config → SignatureVerifier → ImagePuller), N rounds,
the policies in rotating order each round:

  base     insecureAcceptAnything (verification on, nothing to check)
  cosign   sigstoreSigned with the public key
  gpg      signedBy GPGKeys, lookaside over http
  both     sigstoreSigned and signedBy

One verifier per policy lives for the whole run, as in the daemon; its first
pull (policy and key loading, new connections) is reported apart. Reported:
median ms per pull, and the added latency per policy: median of the paired
per-round differences to base (and the ratio of medians). Target: < 20 ms.

  --runs N   measured rounds (default 20)
  --cold     a fresh layer store for every pull (default: a warm store per
             policy, so the pull is manifest + bundle and verification stands out)
  -h, --help show this help`;

const { values } = parseArgs({ options: { runs: { type: 'string', default: '20' }, cold: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } } });
if (values.help) {
  console.log(USAGE);
  process.exit(0);
}
const runs = Number(values.runs);
if (!Number.isInteger(runs) || runs < 1) {
  console.error(`bench-signature: --runs must be a positive integer\n\n${USAGE}`);
  process.exit(2);
}
const say = (s: string): void => void process.stderr.write(`bench-signature: ${s}\n`);

const work = mkdtempSync(join(tmpdir(), 'bench-signature-'));
const log = createLogger('warn');
const registry = await startRegistry();
const gpg = createGpgHome();
const lookaside = join(work, 'lookaside');
mkdirSync(lookaside);
const http = await startStaticServer(lookaside);
try {
  const layout = join(work, 'layout');
  const layers = [1, 2, 3].map((i) => ({ dir: writeTree(join(work, `l${i}`), [{ type: 'file', path: `data-${i}.bin`, content: pseudoRandom(500_000, `bench-${i}`) }, { type: 'file', path: `etc/file-${i}`, content: `layer ${i}\n` }]), compression: 'gzip' as const }));
  const img = buildImage(layout, 'v1', layers);
  const regd = join(work, 'registries.d');
  mkdirSync(regd);
  writeFileSync(join(regd, 'bench.yaml'), `default-docker:\n  lookaside: ${http.url}\n  lookaside-staging: file://${lookaside}\n`);
  const image = `${registry.host}/bench/signed:v1`;
  say(`registry ${registry.url}; pushing and signing ${image}`);
  await execFileP('skopeo', ['--registries.d', regd, 'copy', '--quiet', '--dest-tls-verify=false', '--sign-by', gpg.fingerprint, `oci:${layout}:v1`, `docker://${image}`], { env: gpg.env });
  const key = cosignKey('p256');
  await cosignSign(registry.url, 'bench/signed', img.manifestDigest, image, key.privateKey);

  const cosignReq = { type: 'sigstoreSigned', keyData: key.publicPem };
  const gpgReq = { type: 'signedBy', keyType: 'GPGKeys', keyData: gpg.publicKey(true).toString() };
  const policies: Record<string, unknown[]> = { base: [{ type: 'insecureAcceptAnything' }], cosign: [cosignReq], gpg: [gpgReq], both: [cosignReq, gpgReq] };

  let n = 0;
  const setups = await Promise.all(
    Object.entries(policies).map(async ([name, reqs]) => {
      const policyFile = join(work, `policy-${name}.json`);
      writeFileSync(policyFile, JSON.stringify({ default: [{ type: 'reject' }], transports: { docker: { [registry.host]: reqs } } }));
      const configFile = join(work, `config-${name}.toml`);
      const storeDir = join(work, `store-${name}`);
      writeFileSync(configFile, ['[image]', `work_dir = ${JSON.stringify(storeDir)}`, 'bundle_mode = "copy"', 'enable_signature_verification = true', `policy = ${JSON.stringify(policyFile)}`, `registries_d = ${JSON.stringify(regd)}`, '[registry]', `insecure = [${JSON.stringify(registry.host)}]`].join('\n'));
      const config = loadConfig({ configPath: configFile, cmdlinePath: '/dev/null' });
      const verifier = createSignatureVerifier(config.image, { log, http: httpSettings(config) })!;
      let store = await LayerStore.open(storeDir, log, { bundleMode: 'copy' });
      let puller = createPuller(config, log, { store, verifier });
      const pull = async (): Promise<number> => {
        if (values.cold) {
          await puller.deps.registry.close();
          store.close();
          rmSync(storeDir, { recursive: true, force: true });
          store = await LayerStore.open(storeDir, log, { bundleMode: 'copy' });
          puller = createPuller(config, log, { store, verifier });
        }
        const bundle = join(work, `bundle-${++n}`);
        const t0 = performance.now();
        await puller.pull({ image, bundlePath: bundle }, { signal: AbortSignal.timeout(60_000), log });
        const ms = performance.now() - t0;
        rmSync(bundle, { recursive: true, force: true });
        return ms;
      };
      const close = async (): Promise<void> => {
        await puller.deps.registry.close();
        await verifier.close();
        store.close();
      };
      return { name, pull, close };
    }),
  );

  const first: Record<string, number> = {};
  for (const s of setups) first[s.name] = await s.pull();
  say(`first pulls (ms): ${setups.map((s) => `${s.name}=${first[s.name]!.toFixed(1)}`).join(' ')}`);
  // Warm-up round, not counted.
  for (const s of setups) await s.pull();

  const samples: Record<string, number[]> = Object.fromEntries(setups.map((s) => [s.name, []]));
  for (let r = 0; r < runs; r++) {
    for (let i = 0; i < setups.length; i++) {
      const s = setups[(r + i) % setups.length]!;
      samples[s.name]!.push(await s.pull());
    }
  }
  for (const s of setups) await s.close();

  const base = samples.base!;
  const report = {
    image: { reference: image, layers: img.layers.length, bytes: img.layers.reduce((a, l) => a + l.size, 0) },
    runs,
    store: values.cold ? 'fresh per pull' : 'warm per policy',
    median_ms: Object.fromEntries(Object.entries(samples).map(([k, v]) => [k, +median(v).toFixed(2)])),
    added_ms: Object.fromEntries(
      Object.entries(samples)
        .filter(([k]) => k !== 'base')
        .map(([k, v]) => [k, +median(v.map((x, i) => x - base[i]!)).toFixed(2)]),
    ),
    ratio_to_base: Object.fromEntries(Object.entries(samples).filter(([k]) => k !== 'base').map(([k, v]) => [k, +(median(v) / median(base)).toFixed(3)])),
    first_pull_ms: Object.fromEntries(Object.entries(first).map(([k, v]) => [k, +v.toFixed(1)])),
    target_added_ms: 20,
  };
  console.log(JSON.stringify(report, null, 2));
} finally {
  await http.close();
  await gpg.close();
  await registry.stop();
  rmSync(work, { recursive: true, force: true });
}
