// bench-rpc: grpc.Health/Check over ttrpc and over gRPC, both on unix sockets,
// against one daemon in one run, interleaved so machine noise hits both alike.
// Also: time from spawn to "ready" (median of 5 starts) and RSS at idle.

import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AGENT_NODE_ENV, AGENT_NODE_FLAGS, bundleAgent } from './bundle.ts';
import { startAgentProcess, grpcCall, type AgentProcess } from './lib/agent-process.ts';
import { median, quantile } from './lib/stats.ts';

const { values: args } = parseArgs({
  options: {
    rounds: { type: 'string', default: '5' },
    calls: { type: 'string', default: '3000' },
    concurrency: { type: 'string', default: '32' },
    seconds: { type: 'string', default: '2' },
    help: { type: 'boolean', short: 'h' },
  },
});
if (args.help) {
  console.log(`Usage: scripts/bench-rpc [--rounds N] [--calls N] [--concurrency N] [--seconds S]

Measures, against one tee-agent daemon (the esbuild bundle, with the node flags the guest uses) and in one run:
  - latency of sequential Health.Check calls (p50/p99) over ttrpc and gRPC (--calls per round)
  - throughput with --concurrency calls in flight for --seconds per round
  - time from spawn to the "ready" log line, median of 5 starts (bundle, and the TypeScript sources)
  - RSS of the daemon at idle, after start and after the load
Rounds alternate transports; figures are medians over --rounds rounds.
Targets: ttrpc not slower than gRPC; ready within 300 ms; idle RSS under 80 MB.`);
  process.exit(0);
}
const rounds = Number(args.rounds);
const calls = Number(args.calls);
const concurrency = Number(args.concurrency);
const seconds = Number(args.seconds);

const rssMb = (pid: number): number => {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
};

type Call = () => Promise<unknown>;

async function latency(call: Call): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < calls; i++) {
    const t = performance.now();
    await call();
    out.push(performance.now() - t);
  }
  return out;
}

async function throughput(call: Call): Promise<number> {
  const end = performance.now() + seconds * 1000;
  let done = 0;
  const worker = async (): Promise<void> => {
    while (performance.now() < end) {
      await call();
      done++;
    }
  };
  const t = performance.now();
  await Promise.all(Array.from({ length: concurrency }, worker));
  return done / ((performance.now() - t) / 1000);
}

const bundle = await bundleAgent(mkdtempSync(join(tmpdir(), 'tee-agent-bundle-')));

// Start-up: 5 fresh daemons each, spawn to ready.
const starts: number[] = [];
const sourceStarts: number[] = [];
let sourceRss = 0;
for (let i = 0; i < 5; i++) {
  const a = await startAgentProcess({ entry: bundle, nodeArgs: [...AGENT_NODE_FLAGS], env: { ...process.env, ...AGENT_NODE_ENV }, extraArgs: ['--log-level', 'warn'] });
  starts.push(a.readyMs);
  await a.stop();
  const s = await startAgentProcess({ extraArgs: ['--log-level', 'warn'] });
  sourceStarts.push(s.readyMs);
  if (i === 0) {
    await new Promise((r) => setTimeout(r, 500));
    sourceRss = rssMb(s.child.pid!);
  }
  await s.stop();
}

const agent: AgentProcess = await startAgentProcess({ entry: bundle, nodeArgs: [...AGENT_NODE_FLAGS], env: { ...process.env, ...AGENT_NODE_ENV }, extraArgs: ['--log-level', 'warn'] });
await new Promise((r) => setTimeout(r, 500));
const rssStart = rssMb(agent.child.pid!);
const tt = await agent.ttrpc();
const g = agent.grpc('grpc.Health');
const viaTtrpc: Call = () => tt.call('grpc.Health', 'Check', { service: '' });
const viaGrpc: Call = () => grpcCall(g, 'Check', { service: '' });

// Warm-up both paths (JIT, HTTP/2 session).
for (let i = 0; i < 500; i++) {
  await viaTtrpc();
  await viaGrpc();
}

const res = { ttrpc: { p50: [] as number[], p99: [] as number[], rps: [] as number[] }, grpc: { p50: [] as number[], p99: [] as number[], rps: [] as number[] } };
for (let r = 0; r < rounds; r++) {
  const order: Array<['ttrpc' | 'grpc', Call]> = r % 2 === 0 ? [['ttrpc', viaTtrpc], ['grpc', viaGrpc]] : [['grpc', viaGrpc], ['ttrpc', viaTtrpc]];
  for (const [name, call] of order) {
    const lat = await latency(call);
    res[name].p50.push(quantile(lat, 0.5));
    res[name].p99.push(quantile(lat, 0.99));
    res[name].rps.push(await throughput(call));
  }
}
await new Promise((r) => setTimeout(r, 2000));
const rssAfter = rssMb(agent.child.pid!);
await agent.stop();

const f = (n: number, d = 3): string => n.toFixed(d);
const row = (name: 'ttrpc' | 'grpc'): string =>
  `${name.padEnd(6)} p50 ${f(median(res[name].p50))} ms   p99 ${f(median(res[name].p99))} ms   ${Math.round(median(res[name].rps))} calls/s (concurrency ${concurrency})`;
console.log(`bench-rpc: Health.Check over unix sockets, medians of ${rounds} interleaved rounds`);
console.log(row('ttrpc'));
console.log(row('grpc'));
const ratio = median(res.ttrpc.rps) / median(res.grpc.rps);
console.log(`ttrpc/gRPC throughput ratio ${f(ratio, 2)}; p50 latency ratio ttrpc/gRPC ${f(median(res.ttrpc.p50) / median(res.grpc.p50), 2)}  (target: ttrpc not slower)`);
console.log(`ready after spawn: median ${median(starts)} ms of 5 starts [${starts.join(', ')}] (bundle); ${median(sourceStarts)} ms from the TypeScript sources  (target < 300 ms)`);
console.log(`RSS at idle: ${f(rssStart, 1)} MB after start (bundle; ${f(sourceRss, 1)} MB from sources, type stripping included)  (target < 80 MB)`);
console.log(`RSS after the load, idle again: ${f(rssAfter, 1)} MB (V8 keeps the heap it grew under load; live heap stays ~10 MB)`);
const ok = ratio >= 1 && median(starts) < 300 && rssStart < 80;
console.log(ok ? 'all targets met' : 'TARGET MISSED');
