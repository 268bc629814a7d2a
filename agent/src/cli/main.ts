// tee-agent: one binary for the daemon and the maintainers' one-shot commands.

import { ConfigError } from '../config/index.ts';
import { AgentError } from '../errors.ts';
import { UsageError, type Command } from './args.ts';
import { attest } from './attest.ts';
import { encrypt } from './encrypt.ts';
import { pull } from './pull.ts';
import { serve } from './serve.ts';

const commands: readonly Command[] = [serve, pull, encrypt, attest];

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
  const command = commands.find((c) => c.name === name);
  if (!command) {
    process.stderr.write(`tee-agent: unknown command ${JSON.stringify(name)}\n\n${help()}\n`);
    return 2;
  }
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
