// Structured JSON logs through pino, to stderr so stdout stays free for CLI
// results. Secrets must never be passed to a logger; the redact list is a
// second line of defence for field names that could carry them.

import { pino, type Logger } from 'pino';

export type { Logger };

export const REDACT_PATHS = [
  'key',
  'token',
  'password',
  'authorization',
  'headers.authorization',
  '*.key',
  '*.token',
  '*.password',
  '*.authorization',
];

export function createLogger(level: string, destination: number | NodeJS.WritableStream = 2): Logger {
  const stream = typeof destination === 'number' ? pino.destination({ fd: destination, sync: true }) : destination;
  return pino(
    {
      level,
      base: { pid: process.pid },
      redact: { paths: REDACT_PATHS, censor: '[redacted]' },
      formatters: { level: (label) => ({ level: label }) },
    },
    stream,
  );
}
