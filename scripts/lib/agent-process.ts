// Start the real daemon as a child process on private sockets and talk to it
// over both transports, as the kata shim and kata-agent would. Used by the
// tests, the demo and the benchmarks.

import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import * as grpc from '@grpc/grpc-js';
import { loadProtos } from '../../agent/src/server/protos.ts';
import { TtrpcClient } from '../../agent/src/server/ttrpc/client.ts';

export const AGENT_BIN = new URL('../../agent/bin/tee-agent.js', import.meta.url).pathname;

export interface AgentProcess {
  readonly dir: string;
  /** Milliseconds from spawn to the ready log line. */
  readonly readyMs: number;
  readonly grpcAddress: string;
  readonly ttrpcAddress: string;
  readonly grpcSocket: string;
  readonly ttrpcSocket: string;
  readonly child: ChildProcess;
  /** Every JSON log line the agent wrote so far. */
  readonly logs: Array<Record<string, unknown>>;
  /** Raw stderr text, for asserting that secrets never appear. */
  stderr(): string;
  ttrpc(): Promise<TtrpcClient>;
  grpc<T extends grpc.Client = grpc.Client>(service: string): T;
  /** One unary gRPC call on a fresh client for `service`. */
  grpcCall<Res = Record<string, unknown>>(service: string, method: string, request: object): Promise<Res>;
  /** SIGTERM and wait for exit; returns the exit code. */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

export interface StartOptions {
  /** Agent entry script: the source CLI (default) or a bundle from scripts/bundle. */
  entry?: string;
  /** Flags for node itself, before the entry script. */
  nodeArgs?: string[];
  /** Directory for sockets and state; a fresh temporary one when absent (and removed at stop). */
  dir?: string;
  /** Path of an existing config file, passed with --config. */
  configPath?: string;
  /** TOML config text; written to a file and passed with --config. */
  config?: string;
  /** Kernel command line text; written to a file and passed with --cmdline. */
  cmdline?: string;
  extraArgs?: string[];
  env?: NodeJS.ProcessEnv;
  /** Milliseconds to wait for the ready line. */
  readyTimeoutMs?: number;
}

export async function startAgentProcess(opts: StartOptions = {}): Promise<AgentProcess> {
  const ownDir = opts.dir === undefined;
  const dir = opts.dir ?? mkdtempSync(join(tmpdir(), 'tee-agent-test-'));
  const grpcSocket = join(dir, 'grpc.sock');
  const ttrpcSocket = join(dir, 'ttrpc.sock');
  const cmdlinePath = join(dir, 'cmdline');
  writeFileSync(cmdlinePath, opts.cmdline ?? '');
  const args = [...(opts.nodeArgs ?? []), opts.entry ?? AGENT_BIN, 'serve', '--grpc', `unix://${grpcSocket}`, '--ttrpc', `unix://${ttrpcSocket}`, '--cmdline', cmdlinePath, '--work-dir', join(dir, 'work')];
  if (opts.config !== undefined) {
    writeFileSync(join(dir, 'config.toml'), opts.config);
    args.push('--config', join(dir, 'config.toml'));
  } else if (opts.configPath !== undefined) args.push('--config', opts.configPath);
  args.push(...(opts.extraArgs ?? []));
  const t0 = performance.now();
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'], env: opts.env ?? process.env });
  const logs: Array<Record<string, unknown>> = [];
  let stderrText = '';
  const clients: Array<{ close(): void }> = [];

  const ready = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`agent not ready after ${opts.readyTimeoutMs ?? 15000} ms:\n${stderrText}`)), opts.readyTimeoutMs ?? 15000);
    createInterface({ input: child.stderr! }).on('line', (line) => {
      stderrText += line + '\n';
      try {
        const rec = JSON.parse(line) as Record<string, unknown>;
        logs.push(rec);
        if (rec.msg === 'ready') {
          clearTimeout(timer);
          resolve();
        }
      } catch {
        // not a log line
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`agent exited with ${code} before ready:\n${stderrText}`));
    });
  });
  await ready;
  const readyMs = Math.round(performance.now() - t0);

  const exited = new Promise<number | null>((resolve) => {
    if (child.exitCode !== null) resolve(child.exitCode);
    else child.once('exit', (code) => resolve(code));
  });

  const agent: AgentProcess = {
    dir,
    readyMs,
    grpcAddress: `unix://${grpcSocket}`,
    ttrpcAddress: `unix://${ttrpcSocket}`,
    grpcSocket,
    ttrpcSocket,
    child,
    logs,
    stderr: () => stderrText,
    async ttrpc() {
      const c = await TtrpcClient.connect(ttrpcSocket);
      clients.push(c);
      return c;
    },
    grpc<T extends grpc.Client>(service: string): T {
      const c = grpcClient<T>(service, `unix:${grpcSocket}`);
      clients.push(c);
      return c;
    },
    grpcCall<Res>(service: string, method: string, request: object) {
      return grpcCall<Res>(agent.grpc(service), method, request);
    },
    async stop(signal: NodeJS.Signals = 'SIGTERM') {
      for (const c of clients) c.close();
      if (child.exitCode === null) child.kill(signal);
      const code = await exited;
      if (ownDir) rmSync(dir, { recursive: true, force: true });
      return code;
    },
  };
  return agent;
}

/** A dynamic gRPC client for one of our services ("package.Service") at a grpc-js target (unix:PATH, HOST:PORT). */
export function grpcClient<T extends grpc.Client = grpc.Client>(service: string, target: string): T {
  const pkg = grpc.loadPackageDefinition(loadProtos().definition) as unknown as Record<string, Record<string, grpc.ServiceClientConstructor>>;
  const i = service.lastIndexOf('.');
  const Ctor = pkg[service.slice(0, i)]?.[service.slice(i + 1)];
  if (!Ctor) throw new Error(`no service ${service}`);
  return new Ctor(target, grpc.credentials.createInsecure()) as unknown as T;
}

/** Promise form of a unary gRPC call on a dynamic client. */
export function grpcCall<Res = Record<string, unknown>>(client: grpc.Client, method: string, request: object, deadlineMs = 10_000): Promise<Res> {
  return new Promise((resolve, reject) => {
    const fn = (client as unknown as Record<string, (req: object, opts: grpc.CallOptions, cb: (err: grpc.ServiceError | null, res: Res) => void) => void>)[method];
    if (!fn) throw new Error(`no method ${method}`);
    fn.call(client, request, { deadline: Date.now() + deadlineMs }, (err, res) => (err ? reject(err) : resolve(res)));
  });
}
