// A script's command line: one place for the parse-error and --help handling
// the scripts share.

import { parseArgs, type ParseArgsOptionsConfig } from 'node:util';

type Values<T extends ParseArgsOptionsConfig> = ReturnType<typeof parseArgs<{ options: T; strict: true }>>['values'];

/** Parse `options` strictly: an error prints "NAME: error" and `usage`, exit 2; --help prints `usage`, exit 0. */
export function scriptOptions<T extends ParseArgsOptionsConfig>(name: string, usage: string, options: T): Values<T> {
  let values: Values<T>;
  try {
    values = parseArgs({ options, strict: true }).values;
  } catch (err) {
    process.stderr.write(`${name}: ${(err as Error).message}\n\n${usage}\n`);
    process.exit(2);
  }
  if ((values as { help?: boolean }).help) {
    process.stdout.write(usage + '\n');
    process.exit(0);
  }
  return values;
}
