// Bundle the agent into one ESM file for the guest image: no node_modules
// tree, protos/ copied beside it (the agent loads them at start).

import { cpSync, mkdirSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { build } from 'esbuild';

const root = resolve(import.meta.dirname, '..');

/**
 * Node flags the agent runs with in the guest. A 1 MiB young generation
 * makes V8 free finished stream buffers at frequent scavenges instead of
 * letting up to ~64 MB of them wait (pull peak RSS 132-144 MB instead of
 * 183-217 MB), and keeps the idle daemon small.
 */
export const AGENT_NODE_FLAGS: readonly string[] = ['--max-semi-space-size=1'];

/**
 * Environment the agent runs with in the guest. One glibc malloc arena
 * instead of one per thread (main, unpack worker, zlib pool): a 3-layer pull's
 * peak RSS ~132 MB against ~139 MB with two arenas and 150-152 MB with one
 * per thread, and the 2 GiB layer's 133-135 MB against 136-144 MB, at the
 * same speed (the pull's big buffers are zlib's, made and freed by one thread).
 */
export const AGENT_NODE_ENV: Readonly<Record<string, string>> = { MALLOC_ARENA_MAX: '1' };

/** AGENT_NODE_ENV as `env` takes it: NAME=value pairs, space-separated. */
export const agentNodeEnvText = (): string => Object.entries(AGENT_NODE_ENV).map(([k, v]) => `${k}=${v}`).join(' ');

// Identifiers are not mangled: the bundle starts ~15 ms sooner that way (\`pull --help\` 98 ms
// against 112-123 ms), although it is 2.8 MB instead of 2.1 MB.
const common = {
  bundle: true,
  platform: 'node',
  target: 'node24',
  minifyWhitespace: true,
  minifySyntax: true,
  keepNames: true,
  legalComments: 'none',
  logLevel: 'warning',
} as const;
// Some dependencies are CommonJS and call require() for node builtins.
const requireBanner = { js: "import { createRequire as __createRequire } from 'node:module'; const require = __createRequire(import.meta.url);" };

/** Another entry point (a benchmark's child process) bundled as the agent is, so it measures the code the guest runs. */
export async function bundleEntry(entry: string, outfile: string): Promise<string> {
  await build({ entryPoints: [entry], outfile, ...common, format: 'esm', banner: requireBanner });
  return outfile;
}

/**
 * The agent as ES modules in outDir: tee-agent.mjs, the entry, loads a
 * command's chunk only when that command runs, so \`pull\` parses ~1.5 MB of
 * the 2.8 MB (\`pull --help\` ~82 ms instead of ~98 ms). Returns the entry.
 */
export async function bundleAgent(outDir: string): Promise<string> {
  rmSync(outDir, { recursive: true, force: true });
  mkdirSync(outDir, { recursive: true });
  // The layer unpack worker (agent/src/image/unpack-thread.ts) runs from its
  // own source text, inlined here so it needs no file of its own.
  const worker = await build({ ...common, entryPoints: [join(root, 'agent/src/image/unpack-worker.ts')], format: 'cjs', write: false });
  await build({
    entryPoints: [{ in: join(root, 'agent/bin/tee-agent.js'), out: 'tee-agent' }],
    outdir: outDir,
    outExtension: { '.js': '.mjs' },
    // Beside the entry: protos.ts finds protos/ next to the module that loads it.
    chunkNames: '[name]-[hash]',
    splitting: true,
    // Error classes name themselves after their class (errors.ts); keep those names (common.keepNames).
    ...common,
    format: 'esm',
    define: { __TEE_AGENT_UNPACK_WORKER__: JSON.stringify(worker.outputFiles[0]!.text), __TEE_AGENT_BUNDLED__: 'true' },
    banner: requireBanner,
  });
  cpSync(join(root, 'protos'), join(outDir, 'protos'), { recursive: true });
  // For the guest's init, which starts the agent with these.
  writeFileSync(join(outDir, 'node-flags'), AGENT_NODE_FLAGS.join(' ') + '\n');
  writeFileSync(join(outDir, 'node-env'), agentNodeEnvText() + '\n');
  return join(outDir, 'tee-agent.mjs');
}

if (import.meta.main) {
  const { values } = parseArgs({ options: { out: { type: 'string', default: join(root, 'build/agent') }, help: { type: 'boolean', short: 'h' } } });
  if (values.help) {
    console.log('Usage: scripts/bundle [--out DIR]\n\nWrites DIR/tee-agent.mjs (the entry) and the chunks it loads (the agent and its dependencies),\nDIR/protos/ and DIR/node-flags and DIR/node-env. Default DIR: build/agent. Run it with:\n  env $(cat DIR/node-env) node $(cat DIR/node-flags) DIR/tee-agent.mjs serve ...');
    process.exit(0);
  }
  const out = resolve(values.out);
  const file = await bundleAgent(out);
  const modules = readdirSync(out).filter((f) => f.endsWith('.mjs'));
  const bytes = modules.reduce((n, f) => n + statSync(join(out, f)).size, 0);
  console.log(`${file} (${modules.length} modules, ${(bytes / 1e6).toFixed(2)} MB)`);
}
