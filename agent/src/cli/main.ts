// tee-agent: one binary for the daemon and the maintainers' one-shot commands.

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
