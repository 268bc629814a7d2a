// Debian's docker-registry (distribution 2.8) for tests, on 127.0.0.1 with a
// random port and temporary storage. Optionally HTTPS with a generated CA,
// and optionally Bearer token auth through test/helpers/token-server.ts.
// Images go in with skopeo (push()), which is the real client other tools use.

import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { mkdtempSync, mkdirSync, rmSync, writeFileSync, copyFileSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Agent, request } from 'undici';
import { issueCert, makeCa, type CertFiles } from './pki.ts';
import { startTokenServer, type TokenServer, type TokenServerOptions } from './token-server.ts';

const execFileP = promisify(execFile);

export interface RegistryOptions {
  /** Serve HTTPS with a certificate from a generated CA (caFile/caPem). */
  tls?: boolean;
  /** Require Bearer tokens from a test token server started alongside. */
  tokenAuth?: TokenServerOptions;
}

export interface TestRegistry {
  /** "127.0.0.1:PORT" — the registry part of image references. */
  readonly host: string;
  /** "http(s)://127.0.0.1:PORT" */
  readonly url: string;
  readonly dir: string;
  /** PEM of the CA that signed the registry's certificate (tls only). */
  readonly caPem?: string;
  readonly caFile?: string;
  /** A directory with ca.crt, for skopeo --dest-cert-dir/--src-cert-dir (tls only). */
  readonly certDir?: string;
  readonly token?: TokenServer;
  /** user:pass that may push (token auth only). */
  readonly pushCreds?: string;
  /** Push with skopeo: `source` is a skopeo transport reference such as "oci:/dir:tag". Digests are preserved unless `format` converts. */
  push(source: string, name: string, opts?: { all?: boolean; format?: 'oci' | 'v2s2' }): Promise<void>;
  /** skopeo options to reach this registry as a source (TLS and credentials). */
  skopeoSrcArgs(): string[];
  stop(): Promise<void>;
}

async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  const port = (srv.address() as AddressInfo).port;
  await new Promise<void>((resolve) => srv.close(() => resolve()));
  return port;
}

function registryConfig(port: number, dir: string, tls: CertFiles | undefined, token: TokenServer | undefined): string {
  const lines = [
    'version: 0.1',
    'log:',
    '  level: error',
    '  accesslog:',
    '    disabled: true',
    'storage:',
    '  filesystem:',
    `    rootdirectory: ${join(dir, 'storage')}`,
    '  delete:',
    '    enabled: true',
    '  maintenance:',
    '    uploadpurging:',
    '      enabled: false',
    'http:',
    `  addr: 127.0.0.1:${port}`,
    '  secret: tee-agent-test-secret',
    '  headers:',
    '    X-Content-Type-Options: [nosniff]',
  ];
  if (tls) lines.push('  tls:', `    certificate: ${tls.certFile}`, `    key: ${tls.keyFile}`);
  if (token) {
    lines.push('auth:', '  token:', `    realm: ${token.realm}`, `    service: ${token.service}`, `    issuer: ${token.issuer}`, `    rootcertbundle: ${token.rootCertFile}`);
  }
  return lines.join('\n') + '\n';
}

async function waitReady(url: string, child: ChildProcess, ca: string | undefined, output: () => string): Promise<void> {
  const dispatcher = new Agent(ca ? { connect: { ca } } : {});
  try {
    for (let i = 0; i < 200; i++) {
      if (child.exitCode !== null) throw new Error(`docker-registry exited with ${child.exitCode}: ${output()}`);
      try {
        const res = await request(`${url}/v2/`, { dispatcher });
        await res.body.dump();
        if (res.statusCode === 200 || res.statusCode === 401) return;
      } catch {
        // not listening yet
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`docker-registry not ready at ${url}: ${output()}`);
  } finally {
    await dispatcher.close();
  }
}

export async function startRegistry(opts: RegistryOptions = {}): Promise<TestRegistry> {
  const dir = mkdtempSync(join(tmpdir(), 'tee-agent-registry-'));
  let tls: CertFiles | undefined;
  let ca: CertFiles | undefined;
  let certDir: string | undefined;
  if (opts.tls) {
    ca = makeCa(dir, 'registry-ca');
    tls = issueCert(dir, ca, 'registry', { sans: ['IP:127.0.0.1', 'DNS:localhost'] });
    certDir = join(dir, 'certs.d');
    mkdirSync(certDir);
    copyFileSync(ca.certFile, join(certDir, 'ca.crt'));
  }
  const pushUser = 'pusher';
  const pushPass = 'push-secret-' + Math.random().toString(36).slice(2);
  const token = opts.tokenAuth
    ? await startTokenServer(dir, { ...opts.tokenAuth, users: { ...(opts.tokenAuth.users ?? {}), [pushUser]: pushPass }, ...(tls ? { tls } : {}) })
    : undefined;

  let child: ChildProcess | undefined;
  let port = 0;
  let output = '';
  for (let attempt = 0; ; attempt++) {
    port = await freePort();
    const configFile = join(dir, 'config.yml');
    writeFileSync(configFile, registryConfig(port, dir, tls, token));
    output = '';
    const c = spawn('docker-registry', ['serve', configFile], { stdio: ['ignore', 'pipe', 'pipe'] });
    c.stdout!.on('data', (d: Buffer) => (output = (output + d.toString()).slice(-4000)));
    c.stderr!.on('data', (d: Buffer) => (output = (output + d.toString()).slice(-4000)));
    try {
      await waitReady(`${tls ? 'https' : 'http'}://127.0.0.1:${port}`, c, ca?.certPem, () => output);
      child = c;
      break;
    } catch (err) {
      c.kill('SIGKILL');
      if (attempt >= 3) {
        await token?.close();
        rmSync(dir, { recursive: true, force: true });
        throw err;
      }
    }
  }
  const host = `127.0.0.1:${port}`;
  const url = `${tls ? 'https' : 'http'}://${host}`;
  const tlsArgs = (side: 'src' | 'dest'): string[] => (certDir ? [`--${side}-cert-dir`, certDir] : [`--${side}-tls-verify=false`]);
  const exited = new Promise<void>((resolve) => child!.once('exit', () => resolve()));
  // Never outlive the test process, even when it dies without running its cleanup.
  const killOnExit = (): void => void child!.kill('SIGKILL');
  process.once('exit', killOnExit);

  return {
    host,
    url,
    dir,
    ...(ca ? { caPem: ca.certPem, caFile: ca.certFile } : {}),
    ...(certDir ? { certDir } : {}),
    ...(token ? { token, pushCreds: `${pushUser}:${pushPass}` } : {}),
    async push(source, name, pushOpts = {}) {
      const args = ['copy', '--quiet', ...tlsArgs('dest')];
      if (token) args.push('--dest-creds', `${pushUser}:${pushPass}`);
      if (pushOpts.all) args.push('--all');
      // Without a format change, push the image byte for byte (skopeo would otherwise gzip uncompressed layers).
      if (pushOpts.format) args.push('--format', pushOpts.format);
      else args.push('--preserve-digests');
      args.push(source, `docker://${host}/${name}`);
      await execFileP('skopeo', args, { maxBuffer: 16 * 1024 * 1024 });
    },
    skopeoSrcArgs() {
      return [...tlsArgs('src'), ...(token ? ['--src-creds', `${pushUser}:${pushPass}`] : [])];
    },
    async stop() {
      process.off('exit', killOnExit);
      if (child!.exitCode === null) child!.kill('SIGTERM');
      await Promise.race([exited, new Promise((r) => setTimeout(r, 3000))]);
      if (child!.exitCode === null) child!.kill('SIGKILL');
      await token?.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
