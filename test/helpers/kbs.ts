// The development KBS for tests: started in-process on a random loopback
// port with a fresh resource directory, over HTTP or HTTPS.
//
//   const kbs = await startKbs({ resources: { 'default/key/1': key }, https: true });
//   config: [kbc] name = "cc_kbc", url = kbs.url, cert = kbs.caPath
//   ... kbs.stats.attest counts attestations; kbs.faults injects errors
//   await kbs.stop();

import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { startDevKbs, type DevKbs, type DevKbsOptions } from '../../scripts/lib/dev-kbs.ts';
import { tlsFixture } from '../fixtures/tls.ts';

export type { DevKbs, DevKbsFaults, DevKbsStats } from '../../scripts/lib/dev-kbs.ts';

export interface TestKbs extends DevKbs {
  /** The resource directory (removed at stop). */
  readonly dir: string;
  /** PEM CA for kbc.cert when started with https. */
  readonly caPath: string | undefined;
  /** Add or replace the resource "repo/type/tag". */
  put(path: string, data: string | Buffer): void;
}

export interface StartKbsOptions extends Omit<Partial<DevKbsOptions>, 'resources' | 'tls'> {
  /** Initial resources keyed "repo/type/tag". */
  resources?: Record<string, string | Buffer>;
  https?: boolean;
}

export async function startKbs(opts: StartKbsOptions = {}): Promise<TestKbs> {
  const dir = mkdtempSync(join(tmpdir(), 'tee-agent-kbs-'));
  const put = (path: string, data: string | Buffer): void => {
    const file = join(dir, ...path.split('/'));
    mkdirSync(dirname(file), { recursive: true });
    writeFileSync(file, data);
  };
  for (const [path, data] of Object.entries(opts.resources ?? {})) put(path, data);
  const tls = opts.https ? tlsFixture() : undefined;
  const { resources: _r, https: _h, ...rest } = opts;
  const kbs = await startDevKbs({ ...rest, resources: dir, tls: tls ? { cert: tls.cert, key: tls.key } : undefined });
  return {
    url: kbs.url,
    port: kbs.port,
    stats: kbs.stats,
    faults: kbs.faults,
    dir,
    caPath: tls?.caPath,
    put,
    restart: () => kbs.restart(),
    async stop() {
      await kbs.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
