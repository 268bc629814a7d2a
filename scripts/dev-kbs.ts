// scripts/dev-kbs: run the development KBS until SIGTERM/SIGINT. Prints its
// URL on stdout when it is listening; one line per request on stderr.

import { readFileSync } from 'node:fs';
import { scriptOptions } from './lib/args.ts';
import { startDevKbs } from './lib/dev-kbs.ts';

const usage = `Usage: scripts/dev-kbs --resources DIR [options]

A development Key Broker Service that speaks Trustee's KBS protocol 0.4.0
(RCAR: /kbs/v0/auth, /kbs/v0/attest, /kbs/v0/resource/<repo>/<type>/<tag>).
Resources are files DIR/<repo>/<type>/<tag>, sent as JWE to the TEE key.
Development only: it accepts sample evidence (exact report_data match) and,
with --tdx-test-mode, TDX quotes WITHOUT verifying their signature.

Options:
  --resources DIR        resource directory (required)
  --host HOST            listen address (default 127.0.0.1)
  --port N               listen port (default 0: a free port)
  --tls-cert FILE        PEM certificate: serve HTTPS (needs --tls-key)
  --tls-key FILE         PEM private key of --tls-cert
  --session-timeout S    RCAR session lifetime in seconds (default 300)
  --token-ttl S          token lifetime in seconds (default 300)
  --tdx-test-mode        check TDX REPORTDATA/MRCONFIGID only; no signature verification
  -h, --help             show this help

Prints the base URL (e.g. http://127.0.0.1:40123) on stdout when ready.`;

const values = scriptOptions('dev-kbs', usage, {
  resources: { type: 'string' },
  host: { type: 'string' },
  port: { type: 'string' },
  'tls-cert': { type: 'string' },
  'tls-key': { type: 'string' },
  'session-timeout': { type: 'string' },
  'token-ttl': { type: 'string' },
  'tdx-test-mode': { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
});
const num = (v: string | undefined, name: string): number | undefined => {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isFinite(n) || n < 0) {
    process.stderr.write(`dev-kbs: ${name} must be a non-negative number\n`);
    process.exit(2);
  }
  return n;
};
if (!values.resources || Boolean(values['tls-cert']) !== Boolean(values['tls-key'])) {
  process.stderr.write(`dev-kbs: --resources is required, and --tls-cert and --tls-key go together\n\n${usage}\n`);
  process.exit(2);
}

const kbs = await startDevKbs({
  resources: values.resources,
  host: values.host,
  port: num(values.port, '--port'),
  tls: values['tls-cert'] ? { cert: readFileSync(values['tls-cert']), key: readFileSync(values['tls-key']!) } : undefined,
  sessionTimeoutS: num(values['session-timeout'], '--session-timeout'),
  tokenTtlS: num(values['token-ttl'], '--token-ttl'),
  tdxTestMode: values['tdx-test-mode'] ?? false,
  log: (line) => process.stderr.write(`dev-kbs: ${line}\n`),
});
if (values['tdx-test-mode']) process.stderr.write('dev-kbs: TDX TEST MODE: quote signatures are NOT verified\n');
process.stdout.write(kbs.url + '\n');
await new Promise<void>((resolve) => {
  process.once('SIGTERM', resolve);
  process.once('SIGINT', resolve);
});
await kbs.stop();
