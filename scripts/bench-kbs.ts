// scripts/bench-kbs: cold attestation + first resource, and cached resource
// fetches, against the development KBS over loopback; medians over N runs,
// with a bare HTTP round trip to the same KBS as the baseline of the run.

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { scriptOptions } from './lib/args.ts';
import { request } from 'undici';
import { KbsClient } from '../agent/src/attestation/kbs-client.ts';
import { SampleAttester } from '../agent/src/attestation/sample.ts';
import type { TeeKeyAlgorithm } from '../agent/src/attestation/tee-key.ts';
import { createLogger } from '../agent/src/log.ts';
import { parseResourceUri } from '../agent/src/resource.ts';
import { startAgentProcess } from './lib/agent-process.ts';
import { startDevKbs } from './lib/dev-kbs.ts';
import { median, quantile } from './lib/stats.ts';

const usage = `Usage: scripts/bench-kbs [options]

Measures, against the development KBS on loopback (sample TEE):
  baseline   a bare HTTP round trip to the KBS (401, no crypto)
  cold       new client: TEE key, auth, evidence, attest, first resource
  cached     a resource fetch with the cached token (no new attestation)
  daemon     GetResource through tee-agent serve over ttrpc, token cached
Reports medians (and p90) over --runs runs, as ms and as ratios to the
baseline, and counts attestations at the KBS during the cached runs.

Options:
  --runs N          runs per measurement (default 20)
  --tee-key ALG     ECDH-ES+A256KW-P256 (default), ECDH-ES+A256KW-P521, RSA-OAEP-256
  --no-daemon       skip the end-to-end daemon measurement
  --json            print the results as JSON
  -h, --help        show this help`;

const args = scriptOptions('bench-kbs', usage, {
  runs: { type: 'string' },
  'tee-key': { type: 'string' },
  'no-daemon': { type: 'boolean' },
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
});
const runs = Number(args.runs ?? 20);
const alg = (args['tee-key'] ?? 'ECDH-ES+A256KW-P256') as TeeKeyAlgorithm;
if (!Number.isInteger(runs) || runs < 1 || !['ECDH-ES+A256KW-P256', 'ECDH-ES+A256KW-P521', 'RSA-OAEP-256'].includes(alg)) {
  process.stderr.write(`bench-kbs: bad --runs or --tee-key\n\n${usage}\n`);
  process.exit(2);
}

async function time(n: number, fn: () => Promise<unknown>): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    await fn();
    out.push(performance.now() - t0);
  }
  return out;
}

const dir = mkdtempSync(join(tmpdir(), 'bench-kbs-'));
const { mkdirSync, writeFileSync } = await import('node:fs');
mkdirSync(join(dir, 'default/key'), { recursive: true });
writeFileSync(join(dir, 'default/key/1'), Buffer.alloc(32, 7));
const kbs = await startDevKbs({ resources: dir });
const log = createLogger('silent');
const uri = parseResourceUri('kbs:///default/key/1');
const newClient = () => new KbsClient({ url: kbs.url, attester: new SampleAttester(), teeKeyAlgorithm: alg, timeoutMs: 5000, retries: 1, retryDelayMs: 0, resourceAttempts: 1, log });
const results: Record<string, { median: number; p90: number; ratio?: number }> = {};
const record = (name: string, xs: number[], base?: number) => (results[name] = { median: median(xs), p90: quantile(xs, 0.9), ...(base ? { ratio: median(xs) / base } : {}) });

try {
  // Warm up the JIT and the loopback path so the first measured run is not an outlier.
  const warm = newClient();
  for (let i = 0; i < 5; i++) await warm.getResource(uri);
  await warm.close();

  const baseline = record('baseline', await time(runs, async () => (await request(`${kbs.url}/kbs/v0/resource/default/key/1`)).body.dump())).median;

  const cold: number[] = [];
  for (let i = 0; i < runs; i++) {
    const c = newClient();
    const t0 = performance.now();
    await c.getResource(uri);
    cold.push(performance.now() - t0);
    await c.close();
  }
  record('cold', cold, baseline);

  const c = newClient();
  await c.getResource(uri);
  const before = kbs.stats.attest;
  record('cached', await time(runs, () => c.getResource(uri)), baseline);
  const cachedAttestations = kbs.stats.attest - before;
  await c.close();

  let daemonAttestations: number | undefined;
  if (!args['no-daemon']) {
    const adir = mkdtempSync(join(tmpdir(), 'bench-kbs-agent-'));
    const agent = await startAgentProcess({
      dir: adir,
      config: `[log]\nlevel = "info"\n[kbc]\nname = "cc_kbc"\nurl = "${kbs.url}"\ntee_key_algorithm = "${alg}"\n[attestation]\ntee = "sample"\neventlog_path = "${adir}/eventlog"\ninitdata = "${adir}/none"\n`,
    });
    try {
      const tt = await agent.ttrpc();
      const call = () => tt.call('api.GetResourceService', 'GetResource', { ResourcePath: uri.text });
      await call();
      const b = kbs.stats.attest;
      record('daemon', await time(runs, call), baseline);
      daemonAttestations = kbs.stats.attest - b;
    } finally {
      await agent.stop();
    }
  }

  if (args.json) {
    process.stdout.write(JSON.stringify({ runs, teeKey: alg, results, cachedAttestations, daemonAttestations }, null, 2) + '\n');
  } else {
    const lines = [`KBS client over loopback, sample TEE, ${alg}, ${runs} runs each (medians; p90 in brackets)`];
    for (const [name, r] of Object.entries(results)) {
      lines.push(`  ${name.padEnd(9)} ${r.median.toFixed(2).padStart(8)} ms  [${r.p90.toFixed(2)}]${r.ratio ? `  ${r.ratio.toFixed(2)}x baseline` : ''}`);
    }
    lines.push(`  attestations during the cached runs: ${cachedAttestations}${daemonAttestations === undefined ? '' : `, during the daemon runs: ${daemonAttestations}`}`);
    const ok = results.cached!.median < 5 && cachedAttestations === 0 && (daemonAttestations ?? 0) === 0;
    lines.push(`  target (cached < 5 ms, no new attestation): ${ok ? 'met' : 'NOT met'}`);
    process.stdout.write(lines.join('\n') + '\n');
  }
} finally {
  await kbs.stop();
  rmSync(dir, { recursive: true, force: true });
}
