// Running the helper programs. Secrets only ever travel on stdin: argv and
// the environment of a process are readable by anyone in /proc. Children get
// a fixed environment, so nothing of ours leaks to them and their messages
// are in the C locale we parse.

import { spawn } from 'node:child_process';
import { StorageCommandFailed, StorageUnavailable } from './errors.ts';

export interface RunResult {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

export interface RunOptions {
  /** Bytes written to stdin, then stdin is closed. The caller zeroes them afterwards. */
  readonly stdin?: Buffer;
}

/** Runs one program to completion. Implementations never log stdin. */
export interface Runner {
  run(cmd: string, args: readonly string[], opts?: RunOptions): Promise<RunResult>;
}

export const CHILD_ENV: Readonly<Record<string, string>> = Object.freeze({
  PATH: '/usr/sbin:/usr/bin:/sbin:/bin',
  LC_ALL: 'C',
});

const MAX_OUTPUT = 4 << 20;

export const processRunner: Runner = {
  run(cmd, args, opts = {}) {
    return new Promise((resolve, reject) => {
      const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'], env: CHILD_ENV });
      const out: Buffer[] = [];
      const err: Buffer[] = [];
      let outLen = 0;
      let errLen = 0;
      child.stdout.on('data', (b: Buffer) => {
        if (outLen < MAX_OUTPUT) out.push(b);
        outLen += b.length;
      });
      child.stderr.on('data', (b: Buffer) => {
        if (errLen < MAX_OUTPUT) err.push(b);
        errLen += b.length;
      });
      // A child that exits without reading stdin makes the write fail with EPIPE; its exit code tells the story.
      child.stdin.on('error', () => {});
      child.once('error', reject);
      child.once('close', (code) =>
        resolve({ code, stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8') }),
      );
      if (opts.stdin) child.stdin.end(opts.stdin);
      else child.stdin.end();
    });
  },
};

/** The last non-empty line of a program's stderr, trimmed, for error messages. */
export function lastLine(text: string): string {
  const lines = text.split('\n').map((l) => l.trim()).filter(Boolean);
  return (lines.at(-1) ?? '').slice(0, 300);
}

/**
 * Runs a program and returns its result when the exit code is one of okCodes;
 * anything else becomes a StorageCommandFailed naming `what`. A missing
 * program is StorageUnavailable.
 */
export async function runChecked(
  runner: Runner,
  what: string,
  cmd: string,
  args: readonly string[],
  opts: RunOptions & { okCodes?: readonly number[] } = {},
): Promise<RunResult> {
  let res: RunResult;
  try {
    res = await runner.run(cmd, args, opts);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new StorageUnavailable(`${cmd} is not installed in this guest`);
    throw err;
  }
  if (!(opts.okCodes ?? [0]).includes(res.code ?? -1)) throw new StorageCommandFailed(what, res.code, lastLine(res.stderr) || lastLine(res.stdout));
  return res;
}
