// tee-agent: one binary for the daemon and the maintainers' one-shot commands.

import { enableCompileCache } from 'node:module';
import { fileURLToPath } from 'node:url';
import { ConfigError } from '../config/index.ts';
import { AgentError } from '../errors.ts';
import { UsageError, type Command } from './args.ts';

interface Entry {
  readonly name: string;
  readonly summary: string;
  /** Loaded on use: a one-shot pull does not evaluate the daemon's gRPC stack or the encryptor (~25 ms of start-up). */
  load(): Promise<Command>;
}

const commands: readonly Entry[] = [
  { name: 'serve', summary: 'run the agent daemon', load: async () => (await import('./serve.ts')).serve },
  { name: 'pull', summary: 'pull an image into a bundle (one-shot)', load: async () => (await import('./pull.ts')).pull },
  { name: 'encrypt', summary: 'encrypt the layers of an image in an OCI layout (ocicrypt-compatible)', load: async () => (await import('./encrypt.ts')).encrypt },
  { name: 'attest', summary: 'print TEE evidence for some runtime data', load: async () => (await import('./attest.ts')).attest },
];

// scripts/bundle.ts defines this in the guest bundle.
declare const __TEE_AGENT_BUNDLED__: boolean | undefined;

/**
 * In the bundle, keep V8's compiled code of a command's modules in
 * compile-cache/ beside it, where that is writable (node checks every entry
 * against its module's source): a later start skips most of their parsing.
 */
function useCompileCache(): void {
  if (typeof __TEE_AGENT_BUNDLED__ === 'undefined') return;
  enableCompileCache(fileURLToPath(new URL('compile-cache', import.meta.url)));
}

function help(): string {
  const width = Math.max(...commands.map((c) => c.name.length));
  return [
    'Usage: tee-agent <command> [options]',
    '',
    'Commands:',
    ...commands.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`),
    '',
    'Run "tee-agent <command> --help" for the options of a command.',
  ].join('\n');
}

export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(help() + '\n');
    return name ? 0 : 2;
  }
  const entry = commands.find((c) => c.name === name);
  if (!entry) {
    process.stderr.write(`tee-agent: unknown command ${JSON.stringify(name)}\n\n${help()}\n`);
    return 2;
  }
  useCompileCache();
  const command = await entry.load();
  try {
    return await command.run(rest);
  } catch (err) {
    if (err instanceof UsageError) {
      process.stderr.write(`tee-agent ${name}: ${err.message}\n\n${command.usage}\n`);
      return 2;
    }
    if (err instanceof ConfigError || err instanceof AgentError) {
      process.stderr.write(`tee-agent ${name}: ${err.message}\n`);
      return 1;
    }
    process.stderr.write(`tee-agent ${name}: ${err instanceof Error ? err.message : String(err)}\n`);
    return 1;
  }
}
