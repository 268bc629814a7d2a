// Benchmark: tee-agent pull against the Go peers and the decompression floor,
// in one run on the same generated image from the same local registry.
// See `scripts/bench-pull --help`.

import { execFile, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { benchImage, type GeneratedLayer, type LayerSpec } from './lib/bench-image.ts';
import { scriptOptions } from './lib/args.ts';
import { startRegistry } from './lib/registry.ts';
import { AGENT_NODE_ENV, AGENT_NODE_FLAGS, agentNodeEnvText, bundleAgent } from './bundle.ts';
import { median } from './lib/stats.ts';

const execFileP = promisify(execFile);

const USAGE = `Usage: scripts/bench-pull [--runs N] [--cache DIR] [--no-big] [--work DIR] [--no-bundle]

Generates (once, cached) a 3-layer gzip image of >= 600 MB uncompressed (many
small text-like files plus large random and text files per layer) and a
single-layer image of 2 GiB uncompressed, pushes them with skopeo to a local
docker-registry on 127.0.0.1, then in one run, alternating, N times:

  (a)  node agent/bin/tee-agent.js pull IMAGE --bundle DIR (fresh layer store each time)
  (a*) tee-agent pull as the guest's /usr/bin/tee-agent runs it: the esbuild
       bundle (with its compile cache, made by the warm-up round), started with
       MALLOC_ARENA_MAX=1 node --max-semi-space-size=1 (see the README's memory note)
  (b)  skopeo copy docker://IMAGE oci:DIR + umoci raw unpack (the Go peers)
  (c)  gunzip -c of the same layer blobs, one process per layer in parallel, to /dev/null

and reports medians, the ratios a/b and a/c, and the peak RSS of the agent
(GNU time %M), also for the 2 GiB single-layer image (a, a* and c once each).
Targets, for the guest's form (a*): a/b <= 0.6, a/c <= 1.5, peak RSS < 150 MB
and flat in layer size. The last lines on stderr say which are met.

Stores, bundles and layouts go to a tmpfs by default, as in the guest where
work_dir is /run/kata-containers/image on tmpfs: one mounted for the run with
the guest's huge=within_size (falling back to /dev/shm without root); --work
puts them on another filesystem (on a disk, the store's syncfs before each
layer rename and the disk itself dominate every variant).

  --runs N     rounds of (a), (a*), (b), (c) (default 3)
  --cache DIR  where generated images are kept (default .tmp/bench-pull)
  --work DIR   scratch for stores, bundles and layouts (default a new dir in /dev/shm)
  --no-big     skip the 2 GiB single-layer image
  --no-bundle  skip (a*)
  -h, --help   show this help`;

const values = scriptOptions('bench-pull', USAGE, {
  runs: { type: 'string', default: '3' },
  cache: { type: 'string' },
  work: { type: 'string' },
  'no-big': { type: 'boolean' },
  'no-bundle': { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
});
const runs = Number(values.runs);
if (!Number.isInteger(runs) || runs < 1) {
  console.error(`bench-pull: --runs must be a positive integer\n\n${USAGE}`);
  process.exit(2);
}

const root = resolve(new URL('..', import.meta.url).pathname);
const cache = resolve(values.cache ?? join(root, '.tmp', 'bench-pull'));
const work = values.work ? resolve(values.work) : mkdtempSync(join(existsSync('/dev/shm') ? '/dev/shm' : tmpdir(), 'bench-pull-'));
mkdirSync(cache, { recursive: true });
mkdirSync(work, { recursive: true });
const say = (s: string): void => void process.stderr.write(`bench-pull: ${s}\n`);
// The guest's /run (guest-rootfs/init), where its image store lives.
const workMounted = !values.work && (await execFileP('mount', ['-t', 'tmpfs', '-o', 'mode=0700,huge=within_size', 'bench-pull', work]).then(() => true, () => false));
if (!values.work) say(workMounted ? `work: a tmpfs with huge=within_size at ${work}, as the guest mounts /run` : `work: ${work} (could not mount a tmpfs with huge=within_size there)`);
const MiB = 1 << 20;

// 3 layers of ~210 MiB each: ~12k small files (0.5-16 KiB) plus 50 MiB random and 60 MiB text.
const MAIN: LayerSpec[] = [1, 2, 3].map((seed) => ({
  smallFiles: 12_000,
  smallMin: 512,
  smallMax: 16 * 1024,
  large: [
    { size: 50 * MiB, kind: 'random' as const },
    { size: 30 * MiB, kind: 'text' as const },
    { size: 30 * MiB, kind: 'text' as const },
  ],
  seed,
}));
// One layer of 2 GiB: 10k small files and eight 252 MiB files, alternating random and text.
const BIG: LayerSpec[] = [
  {
    smallFiles: 10_000,
    smallMin: 512,
    smallMax: 16 * 1024,
    large: Array.from({ length: 8 }, (_, i) => ({ size: 252 * MiB, kind: i % 2 === 0 ? ('random' as const) : ('text' as const) })),
    seed: 7,
  },
];


const time = async (fn: () => Promise<void>): Promise<number> => {
  const t0 = performance.now();
  await fn();
  return (performance.now() - t0) / 1000;
};

const SOURCE_CLI: { node: string[]; script: string; env?: Readonly<Record<string, string>> } = { node: [], script: join(root, 'agent/bin/tee-agent.js') };

/** tee-agent pull under GNU time: wall seconds, peak RSS (KiB) and the agent's JSON line. */
async function agentPull(image: string, host: string, tag: string, cli = SOURCE_CLI): Promise<{ seconds: number; rssKiB: number; result: Record<string, unknown> }> {
  const dir = join(work, `agent-${tag}`);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  const timeFile = join(dir, 'time.txt');
  const args = ['-f', '%e %M', '-o', timeFile, process.execPath, ...cli.node, cli.script, 'pull', image, '--bundle', join(dir, 'bundle'), '--work-dir', join(dir, 'store'), '--insecure-registry', host, '--no-progress', '--log-level', 'warn', '--cmdline', '/dev/null'];
  const t0 = performance.now();
  const { stdout } = await execFileP('/usr/bin/time', args, { maxBuffer: 16 * MiB, env: { ...process.env, ...cli.env } });
  const seconds = (performance.now() - t0) / 1000;
  const [, rss] = readFileSync(timeFile, 'utf8').trim().split(/\s+/).slice(-2);
  const result = JSON.parse(stdout.trim().split('\n').pop()!) as Record<string, unknown>;
  await cleanupBundle(dir);
  return { seconds, rssKiB: Number(rss), result };
}

/** Bundles may be overlay mounts; unmount before removing. */
async function cleanupBundle(dir: string): Promise<void> {
  await execFileP('umount', ['-R', join(dir, 'bundle', 'rootfs')]).catch(() => {});
  rmSync(dir, { recursive: true, force: true });
}

async function goPeers(image: string, tag: string): Promise<number> {
  const dir = join(work, `go-${tag}`);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  const seconds = await time(async () => {
    await execFileP('skopeo', ['copy', '--quiet', '--src-tls-verify=false', `docker://${image}`, `oci:${join(dir, 'layout')}:v1`]);
    await execFileP('umoci', ['raw', 'unpack', '--image', `${join(dir, 'layout')}:v1`, join(dir, 'rootfs')]);
  });
  rmSync(dir, { recursive: true, force: true });
  return seconds;
}

function gunzipFloor(layout: string, layers: readonly GeneratedLayer[]): Promise<number> {
  return time(() =>
    Promise.all(
      layers.map(
        (l) =>
          new Promise<void>((ok, fail) => {
            const p = spawn('gunzip', ['-c', join(layout, 'blobs', 'sha256', l.digest.slice(7))], { stdio: ['ignore', 'ignore', 'inherit'] });
            p.on('exit', (code) => (code === 0 ? ok() : fail(new Error(`gunzip exited ${code}`))));
          }),
      ),
    ).then(() => {}),
  );
}

const layout = join(cache, 'layout');
const mainLayers = await benchImage(layout, 'main', MAIN, say);
const bigLayers = values['no-big'] ? [] : await benchImage(layout, 'big', BIG, say);
const total = (ls: readonly GeneratedLayer[]) => ({ c: ls.reduce((s, l) => s + l.size, 0), u: ls.reduce((s, l) => s + l.uncompressed, 0) });
say(`main image: ${mainLayers.length} layers, ${(total(mainLayers).u / 1e6).toFixed(0)} MB uncompressed, ${(total(mainLayers).c / 1e6).toFixed(0)} MB gzip`);

const registry = await startRegistry();
// The CLI as the guest image ships it: one esbuild bundle, run with the guest's node flags.
const guestCli = values['no-bundle'] ? undefined : { node: [...AGENT_NODE_FLAGS], env: AGENT_NODE_ENV, script: await bundleAgent(join(work, 'bundle')) };
try {
  say(`registry at ${registry.url}; pushing with skopeo`);
  await registry.push(`oci:${layout}:main`, 'bench/main:v1');
  if (bigLayers.length) await registry.push(`oci:${layout}:big`, 'bench/big:v1');
  const mainRef = `${registry.host}/bench/main:v1`;

  // Warm-up: one of each, not counted (page cache, registry startup).
  say('warm-up round');
  await agentPull(mainRef, registry.host, 'warm');
  if (guestCli) await agentPull(mainRef, registry.host, 'warm-guest', guestCli);
  await goPeers(mainRef, 'warm');
  await gunzipFloor(layout, mainLayers);

  const a: number[] = [];
  const b: number[] = [];
  const c: number[] = [];
  const rss: number[] = [];
  const g: number[] = [];
  const grss: number[] = [];
  for (let r = 1; r <= runs; r++) {
    const pa = await agentPull(mainRef, registry.host, `r${r}`);
    a.push(pa.seconds);
    rss.push(pa.rssKiB);
    if (guestCli) {
      const pg = await agentPull(mainRef, registry.host, `g${r}`, guestCli);
      g.push(pg.seconds);
      grss.push(pg.rssKiB);
    }
    b.push(await goPeers(mainRef, `r${r}`));
    c.push(await gunzipFloor(layout, mainLayers));
    const star = guestCli ? `, a*=${g.at(-1)!.toFixed(2)} s (rss ${(grss.at(-1)! / 1024).toFixed(0)} MiB)` : '';
    say(`round ${r}: a=${pa.seconds.toFixed(2)} s (rss ${(pa.rssKiB / 1024).toFixed(0)} MiB, layers ${pa.result.layers})${star}, b=${b.at(-1)!.toFixed(2)} s, c=${c.at(-1)!.toFixed(2)} s`);
  }

  let big: { a: number; c: number; rssKiB: number; g?: { seconds: number; rssKiB: number } } | undefined;
  if (bigLayers.length) {
    say('2 GiB single layer: (a), (a*) and (c) once each');
    const pa = await agentPull(`${registry.host}/bench/big:v1`, registry.host, 'big');
    const pg = guestCli ? await agentPull(`${registry.host}/bench/big:v1`, registry.host, 'big-guest', guestCli) : undefined;
    big = { a: pa.seconds, c: await gunzipFloor(layout, bigLayers), rssKiB: pa.rssKiB, ...(pg ? { g: { seconds: pg.seconds, rssKiB: pg.rssKiB } } : {}) };
  }

  const ma = median(a);
  const mb = median(b);
  const mc = median(c);
  const report = {
    image: { layers: mainLayers.length, uncompressed_mb: Math.round(total(mainLayers).u / 1e6), gzip_mb: Math.round(total(mainLayers).c / 1e6) },
    runs,
    median_seconds: { a_tee_agent: +ma.toFixed(3), b_skopeo_umoci: +mb.toFixed(3), c_gunzip_floor: +mc.toFixed(3) },
    samples: { a: a.map((x) => +x.toFixed(3)), b: b.map((x) => +x.toFixed(3)), c: c.map((x) => +x.toFixed(3)) },
    ratio_a_b: +(ma / mb).toFixed(3),
    ratio_a_c: +(ma / mc).toFixed(3),
    peak_rss_mb: +(median(rss) / 1024).toFixed(1),
    ...(guestCli
      ? {
          guest_cli: {
            how: `esbuild bundle, ${agentNodeEnvText()} node ${AGENT_NODE_FLAGS.join(' ')}`,
            median_seconds: +median(g).toFixed(3),
            samples: g.map((x) => +x.toFixed(3)),
            ratio_b: +(median(g) / mb).toFixed(3),
            ratio_c: +(median(g) / mc).toFixed(3),
            peak_rss_mb: +(median(grss) / 1024).toFixed(1),
          },
        }
      : {}),
    ...(big
      ? {
          big_layer: {
            uncompressed_mb: Math.round(total(bigLayers).u / 1e6),
            a_seconds: +big.a.toFixed(3),
            c_seconds: +big.c.toFixed(3),
            ratio_a_c: +(big.a / big.c).toFixed(3),
            peak_rss_mb: +(big.rssKiB / 1024).toFixed(1),
            ...(big.g ? { guest_cli_seconds: +big.g.seconds.toFixed(3), guest_cli_peak_rss_mb: +(big.g.rssKiB / 1024).toFixed(1) } : {}),
          },
        }
      : {}),
    targets: { ratio_a_b: '<= 0.6', ratio_a_c: '<= 1.5', peak_rss_mb: '< 150, flat in layer size' },
  };
  // The targets are the guest's: its tee-agent runs the bundle (a*). The TypeScript-source CLI (a)
  // is the development form, with type stripping at start and none of the guest's memory settings.
  if (guestCli) {
    const gm = median(g);
    const grssMb = median(grss) / 1024;
    const bigMb = big?.g ? big.g.rssKiB / 1024 : undefined;
    const mark = (ok: boolean): string => (ok ? 'met' : 'MISSED');
    say(
      `targets, the guest's form (a*): a*/b ${(gm / mb).toFixed(3)} <= 0.6 ${mark(gm / mb <= 0.6)}; a*/c ${(gm / mc).toFixed(3)} <= 1.5 ${mark(gm / mc <= 1.5)}; ` +
        `peak RSS ${grssMb.toFixed(0)} MB < 150 ${mark(grssMb < 150)}` +
        (bigMb !== undefined ? `, 2 GiB layer ${bigMb.toFixed(0)} MB ${mark(bigMb < 150)}` : ''),
    );
    say(`the source form (a), for comparison: a/b ${(ma / mb).toFixed(3)}, a/c ${(ma / mc).toFixed(3)}, peak RSS ${(median(rss) / 1024).toFixed(0)} MB`);
  }
  console.log(JSON.stringify({ work_fs: workMounted ? `${work} (tmpfs, huge=within_size)` : work, ...report }, null, 2));
} finally {
  await registry.stop();
  if (workMounted) await execFileP('umount', [work]);
  if (!values.work) rmSync(work, { recursive: true, force: true });
}
