// Boot the guest image (guest-rootfs/build) under QEMU and drive it from the
// host: the agent's gRPC and ttrpc ports through user-network hostfwd, host
// services through guestfwd, and, in test boots, a root shell per TCP
// connection to a forwarded debug port. Used by scripts/qemu-run,
// scripts/bench-boot and test/vm/.

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect, createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createHash } from 'node:crypto';
import { gzipSync } from 'node:zlib';
import type * as grpc from '@grpc/grpc-js';
import { parse as parseToml } from 'smol-toml';
import { TtrpcClient } from '../../agent/src/server/ttrpc/client.ts';
import { grpcCall, grpcClient } from './agent-process.ts';

export const REPO = resolve(new URL('../..', import.meta.url).pathname);
export const DEFAULT_IMAGE_DIR = join(REPO, 'build', 'guest');
/** The guest address that guestfwd rules answer on: GUESTFWD_ADDR:GUESTPORT reaches 127.0.0.1:HOSTPORT. */
export const GUESTFWD_ADDR = '10.0.2.100';
/** The agent's listeners in the baked guest config (guest-rootfs/config.toml). */
export const GUEST_GRPC_PORT = 50000;
export const GUEST_TTRPC_PORT = 50001;
/** What init prints on the console when it is up and was told not to start the agent (tee.agent=0). */
export const NO_AGENT_MARKER = 'tee-init: ready without agent';
/** The debug shell's guest port (guest-rootfs/init, only with tee.debug_console=1). */
export const DEBUG_SHELL_PORT = 2222;
const QEMU = 'qemu-system-x86_64';

export type Accel = 'tdx' | 'kvm' | 'tcg';

export interface Disk {
  path: string;
  /** virtio-blk serial, visible as /sys/block/vdX/serial in the guest. */
  serial?: string;
  readonly?: boolean;
}

export interface BootOptions {
  /** Directory of a guest-rootfs/build output (vmlinuz, initrd.img, cmdline). */
  imageDir?: string;
  kernel?: string;
  initrd?: string;
  /** Base kernel cmdline; default: the image's cmdline file (cmdline-verity with verity). */
  cmdline?: string;
  /** Boot the dm-verity root disk (guest-rootfs/build --verity): initrd-verity.img checks root.img against the root hash in cmdline-verity. */
  verity?: boolean;
  /** With verity: the root disk to attach instead of the image's root.img (e.g. a tampered copy). */
  rootDisk?: string;
  /** Extra kernel parameters appended after the base and tee.ip. */
  append?: string;
  /** Extra virtio-blk disks, in order after the verity root and initdata disks; find them in the guest by serial. */
  disks?: Array<string | Disk>;
  /** Extra TCP forwards host 127.0.0.1:host -> guest :guest (host 0 = a free port). */
  hostfwd?: Array<{ host: number; guest: number }>;
  /** Guest GUESTFWD_ADDR:guest -> host 127.0.0.1:host, one socat per connection. */
  guestfwd?: Array<{ guest: number; host: number }>;
  /** Initdata TOML file: attached as a kata-format block device (serial "initdata"); its digest is MRCONFIGID under TDX. */
  initdata?: string;
  /** A root shell per TCP connection to the guest's DEBUG_SHELL_PORT, forwarded to ports.debug (tee.debug_console=1). Tests only. */
  debugConsole?: boolean;
  /** Start the agent (default true). With false, ready is NO_AGENT_MARKER on the console. */
  agent?: boolean;
  accel?: Accel | 'auto';
  memoryMb?: number;
  cpus?: number;
  /** Milliseconds to wait for the agent to answer Health (default 300 s under TCG, 60 s otherwise). */
  bootTimeoutMs?: number;
  /** Where the console log and sockets go; a fresh temporary directory by default. */
  workDir?: string;
  /** Keep workDir (console log) after shutdown. */
  keepWorkDir?: boolean;
  /** Progress lines (boot mode, ports); default silent. */
  log?: (line: string) => void;
}

export interface ExecResult {
  code: number;
  stdout: string;
  stderr: string;
  /** stdout as bytes, for binary output. */
  stdoutBytes: Buffer;
}

export interface Vm {
  readonly accel: Accel;
  readonly workDir: string;
  readonly consoleLog: string;
  /** Host ports forwarded to the agent's gRPC and ttrpc listeners, and to the debug shell. */
  readonly ports: { readonly grpc: number; readonly ttrpc: number; readonly debug: number | undefined };
  /** Every hostfwd rule, with the host ports actually chosen. */
  readonly hostfwd: ReadonlyArray<{ host: number; guest: number }>;
  /** Milliseconds from QEMU spawn to the agent answering Health (or to NO_AGENT_MARKER with agent: false). */
  readonly readyMs: number;
  readonly options: Readonly<BootOptions>;
  /** The full QEMU argument vector, for logs. */
  readonly args: readonly string[];
  /** Console text so far. */
  console(): string;
  ttrpc(): Promise<TtrpcClient>;
  grpcCall<Res = Record<string, unknown>>(service: string, method: string, request: object, deadlineMs?: number): Promise<Res>;
  /** Run a shell command in the guest (needs debugConsole). Stdin is /dev/null unless given. */
  exec(command: string, opts?: { timeoutMs?: number; stdin?: Buffer | string }): Promise<ExecResult>;
  /** exec that throws unless the exit code is 0; returns stdout. */
  run(command: string, opts?: { timeoutMs?: number; stdin?: Buffer | string }): Promise<string>;
  readFile(path: string): Promise<Buffer>;
  writeFile(path: string, data: Buffer | string, mode?: number): Promise<void>;
  /** Clean shutdown: ACPI power button -> agent SIGTERM -> init powers off. Kills QEMU after timeoutMs. */
  shutdown(timeoutMs?: number): Promise<{ clean: boolean; code: number | null }>;
  /** Kill QEMU at once (and everything it started). */
  kill(): Promise<void>;
  /** Shut down cleanly, then boot a new VM with the same options and disks. */
  reboot(): Promise<Vm>;
  /** Resolves when QEMU exits. */
  readonly exited: Promise<number | null>;
}

/** guest-rootfs/build --if-changed --verity into imageDir: a no-op when nothing that decides the bytes changed. */
export function buildImage(imageDir = DEFAULT_IMAGE_DIR): void {
  const r = spawnSync(join(REPO, 'guest-rootfs', 'build'), ['--if-changed', '--verity', '--out', imageDir], { stdio: ['ignore', 'inherit', 'inherit'] });
  if (r.status !== 0) throw new Error(`guest-rootfs/build failed with ${r.status ?? r.signal}`);
}

// ---- host capabilities ----

export function qemuAvailable(): { ok: true } | { ok: false; reason: string } {
  const r = spawnSync(QEMU, ['-accel', 'help'], { encoding: 'utf8' });
  if (r.error) return { ok: false, reason: `${QEMU} not runnable: ${r.error.message}` };
  if (!/\btcg\b/.test(r.stdout)) return { ok: false, reason: `${QEMU} has no TCG accelerator` };
  return { ok: true };
}

let kvmProbe: boolean | undefined;

/** KVM works only if a guest really runs: /dev/kvm exists on nested hosts where creating a vCPU still fails. */
export function kvmWorks(kernel: string): boolean {
  if (kvmProbe !== undefined) return kvmProbe;
  kvmProbe = false;
  if (!existsSync('/dev/kvm')) return kvmProbe;
  // No initrd: the kernel boots, panics on the missing root and exits QEMU (panic=-1, -no-reboot).
  const r = spawnSync(
    QEMU,
    ['-accel', 'kvm', '-cpu', 'host', '-machine', 'q35', '-m', '256', '-display', 'none', '-nodefaults', '-no-reboot', '-serial', 'stdio', '-kernel', kernel, '-append', 'console=ttyS0 panic=-1'],
    { encoding: 'utf8', timeout: 20_000 },
  );
  kvmProbe = r.status === 0 && /Linux version/.test(r.stdout);
  return kvmProbe;
}

export function tdxAvailable(): boolean {
  try {
    if (!/^[Y1]/.test(readFileSync('/sys/module/kvm_intel/parameters/tdx', 'utf8'))) return false;
  } catch {
    return false;
  }
  const r = spawnSync(QEMU, ['-object', 'help'], { encoding: 'utf8' });
  return /tdx-guest/.test(r.stdout) && tdvfPath() !== undefined;
}

/** TDVF/OVMF firmware for TDX: TEE_TDVF, else the usual package locations. */
export function tdvfPath(): string | undefined {
  const candidates = [process.env.TEE_TDVF, '/usr/share/ovmf/OVMF.inteltdx.fd', '/usr/share/qemu/OVMF.inteltdx.fd', '/usr/share/ovmf/OVMF.tdx.fd'];
  return candidates.find((p): p is string => !!p && existsSync(p));
}

export function chooseAccel(kernel: string, wanted: Accel | 'auto' = 'auto'): Accel {
  if (wanted !== 'auto') return wanted;
  if (tdxAvailable()) return 'tdx';
  if (kvmWorks(kernel)) return 'kvm';
  return 'tcg';
}

// ---- initdata ----

/** The kata initdata block device: "initdata", u64 LE length, gzip(TOML); padded to whole sectors. */
export function initdataDevice(toml: Buffer): Buffer {
  const gz = gzipSync(toml);
  const header = Buffer.alloc(16);
  header.write('initdata', 0, 'ascii');
  header.writeBigUInt64LE(BigInt(gz.length), 8);
  const body = Buffer.concat([header, gz]);
  return Buffer.concat([body, Buffer.alloc((512 - (body.length % 512)) % 512)]);
}

/** MRCONFIGID for TDX: the initdata digest (its `algorithm`, over the exact TOML bytes), zero-padded to 48 bytes. */
export function initdataMrConfigId(toml: Buffer): Buffer {
  const doc = parseToml(toml.toString('utf8')) as { algorithm?: unknown };
  const alg = doc.algorithm;
  if (alg !== 'sha256' && alg !== 'sha384' && alg !== 'sha512') throw new Error(`initdata: algorithm must be sha256, sha384 or sha512, got ${JSON.stringify(alg)}`);
  const digest = createHash(alg).update(toml).digest();
  const out = Buffer.alloc(48);
  digest.copy(out, 0, 0, Math.min(48, digest.length));
  return out;
}

// ---- QEMU command line ----

export interface QemuPlan {
  accel: Accel;
  kernel: string;
  initrd: string;
  append: string;
  memoryMb: number;
  cpus: number;
  consoleLog: string;
  qmpSocket: string;
  hostfwd: ReadonlyArray<{ host: number; guest: number }>;
  guestfwd: ReadonlyArray<{ guest: number; host: number }>;
  disks: readonly Disk[];
  /** TDX firmware (TDVF); required for accel tdx. */
  tdvf?: string | undefined;
  /** TDX MRCONFIGID (48 bytes), from initdata. */
  mrConfigId?: Buffer | undefined;
}

/** The QEMU argument vector for a plan: machine and accelerator, direct kernel boot, console, QMP, user net, disks. */
export function qemuArgs(p: QemuPlan): string[] {
  const args: string[] = [];
  if (p.accel === 'tdx') {
    if (!p.tdvf) throw new Error('TDX needs TDVF firmware (set TEE_TDVF)');
    const tdx = ['tdx-guest', 'id=tdx0'];
    if (p.mrConfigId) tdx.push(`mrconfigid=${p.mrConfigId.toString('base64')}`);
    args.push('-accel', 'kvm', '-cpu', 'host', '-machine', 'q35,kernel_irqchip=split,confidential-guest-support=tdx0,hpet=off', '-object', tdx.join(','), '-bios', p.tdvf);
  } else if (p.accel === 'kvm') {
    args.push('-accel', 'kvm', '-cpu', 'host', '-machine', 'q35');
  } else {
    args.push('-accel', 'tcg', '-cpu', 'max', '-machine', 'q35');
  }
  args.push('-m', String(p.memoryMb), '-smp', String(p.cpus), '-display', 'none', '-nodefaults', '-no-reboot', '-no-user-config');
  args.push('-kernel', p.kernel, '-initrd', p.initrd, '-append', p.append);
  args.push('-chardev', `file,id=con,path=${p.consoleLog}`, '-serial', 'chardev:con');
  args.push('-qmp', `unix:${p.qmpSocket},server=on,wait=off`);
  // restrict=on: the guest reaches nothing but the forwards, and they bind loopback only.
  const netdev = ['user', 'id=n0', 'restrict=on', 'net=10.0.2.0/24', 'host=10.0.2.2'];
  for (const f of p.hostfwd) netdev.push(`hostfwd=tcp:127.0.0.1:${f.host}-:${f.guest}`);
  for (const f of p.guestfwd) netdev.push(`guestfwd=tcp:${GUESTFWD_ADDR}:${f.guest}-cmd:socat - TCP:127.0.0.1:${f.host}`);
  args.push('-netdev', netdev.join(','), '-device', 'virtio-net-pci,netdev=n0');
  args.push('-device', 'virtio-rng-pci');
  p.disks.forEach((d, i) => {
    const drive = [`file=${d.path}`, 'if=none', `id=d${i}`, 'format=raw', 'cache=none', 'aio=threads'];
    if (d.readonly) drive.push('readonly=on');
    args.push('-drive', drive.join(','), '-device', `virtio-blk-pci,drive=d${i}${d.serial ? `,serial=${d.serial}` : ''}`);
  });
  return args;
}

// ---- boot ----

export async function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const srv = createServer();
    srv.once('error', rej);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as { port: number }).port;
      srv.close(() => res(port));
    });
  });
}

const delay = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function readText(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return '';
  }
}

export async function bootVm(options: BootOptions = {}): Promise<Vm> {
  const imageDir = options.imageDir ?? DEFAULT_IMAGE_DIR;
  const kernel = options.kernel ?? join(imageDir, 'vmlinuz');
  const initrd = options.initrd ?? join(imageDir, options.verity ? 'initrd-verity.img' : 'initrd.img');
  const cmdlineFile = join(imageDir, options.verity ? 'cmdline-verity' : 'cmdline');
  const rootDisk = options.verity ? (options.rootDisk ?? join(imageDir, 'root.img')) : undefined;
  for (const f of [kernel, initrd, ...(rootDisk ? [rootDisk, cmdlineFile] : [])]) {
    if (!existsSync(f)) throw new Error(`${f} not found: build the guest with guest-rootfs/build${options.verity ? ' --verity' : ''}`);
  }
  const baseCmdline = options.cmdline ?? (existsSync(cmdlineFile) ? readFileSync(cmdlineFile, 'utf8').trim() : 'console=ttyS0 quiet panic=-1');
  const log = options.log ?? (() => {});
  const accel = chooseAccel(kernel, options.accel);
  const ownWorkDir = options.workDir === undefined;
  const workDir = options.workDir ?? mkdtempSync(join(tmpdir(), 'tee-vm-'));
  mkdirSync(workDir, { recursive: true });
  const consoleLog = join(workDir, 'console.log');
  const qmpSock = join(workDir, 'qmp.sock');
  writeFileSync(consoleLog, '');
  rmSync(qmpSock, { force: true });

  const fwd = [{ host: 0, guest: GUEST_GRPC_PORT }, { host: 0, guest: GUEST_TTRPC_PORT }, ...(options.hostfwd ?? [])];
  if (options.debugConsole) fwd.push({ host: 0, guest: DEBUG_SHELL_PORT });
  const hostfwd: Array<{ host: number; guest: number }> = [];
  for (const f of fwd) hostfwd.push({ host: f.host === 0 ? await freePort() : f.host, guest: f.guest });
  const ports = { grpc: hostfwd[0]!.host, ttrpc: hostfwd[1]!.host, debug: options.debugConsole ? hostfwd[hostfwd.length - 1]!.host : undefined };

  const append = [baseCmdline, 'tee.ip=10.0.2.15/24:10.0.2.2'];
  if (options.debugConsole) append.push('tee.debug_console=1');
  if (options.agent === false) append.push('tee.agent=0');
  if (options.append) append.push(options.append);

  const initdataToml = options.initdata ? readFileSync(options.initdata) : undefined;
  const disks: Disk[] = (options.disks ?? []).map((d) => (typeof d === 'string' ? { path: d } : d));
  if (rootDisk) disks.unshift({ path: rootDisk, serial: 'tee-root', readonly: true });
  if (initdataToml) {
    const path = join(workDir, 'initdata.img');
    writeFileSync(path, initdataDevice(initdataToml));
    disks.unshift({ path, serial: 'initdata', readonly: true });
  }
  const mem = options.memoryMb ?? 1024;
  const cpus = options.cpus ?? 2;
  const args = qemuArgs({
    accel,
    kernel,
    initrd,
    append: append.join(' '),
    memoryMb: mem,
    cpus,
    consoleLog,
    qmpSocket: qmpSock,
    hostfwd,
    guestfwd: options.guestfwd ?? [],
    disks,
    tdvf: accel === 'tdx' ? tdvfPath() : undefined,
    mrConfigId: accel === 'tdx' && initdataToml ? initdataMrConfigId(initdataToml) : undefined,
  });
  // Only where the host has vhost-vsock: the guest then serves ttrpc on vsock 1024 too.
  if (existsSync('/dev/vhost-vsock') && accel !== 'tcg') args.push('-device', 'vhost-vsock-pci,guest-cid=3');

  log(`qemu: ${accel}${accel === 'tcg' ? ' (no usable KVM)' : ''}, ${mem} MiB, ${cpus} vCPUs, gRPC 127.0.0.1:${ports.grpc}, ttrpc 127.0.0.1:${ports.ttrpc}, console ${consoleLog}`);
  const t0 = performance.now();
  // Own process group, so teardown also ends the socat helpers of guestfwd;
  // setpriv's parent-death signal ends QEMU even if this process is killed.
  const child: ChildProcess = spawn('setpriv', ['--pdeathsig', 'KILL', '--', QEMU, ...args], { stdio: ['ignore', 'ignore', 'pipe'], detached: true });
  let qemuStderr = '';
  child.stderr!.on('data', (b: Buffer) => (qemuStderr = (qemuStderr + b.toString()).slice(-4000)));
  const exited = new Promise<number | null>((res) => child.once('exit', (code) => res(code)));
  let running = true;
  void exited.then(() => (running = false));
  const killGroup = (): void => {
    if (!running || child.pid === undefined) return;
    try {
      process.kill(-child.pid, 'SIGKILL');
    } catch {
      // already gone
    }
  };
  process.once('exit', killGroup);

  const clients: Array<{ close(): void }> = [];
  const grpcFor = (service: string): grpc.Client => {
    const c = grpcClient(service, `127.0.0.1:${ports.grpc}`);
    clients.push(c);
    return c;
  };
  const consoleText = (): string => readText(consoleLog);
  const fail = async (why: string): Promise<never> => {
    killGroup();
    await exited;
    process.removeListener('exit', killGroup);
    const tail = consoleText().split('\n').slice(-30).join('\n');
    if (ownWorkDir && !options.keepWorkDir) rmSync(workDir, { recursive: true, force: true });
    else rmSync(qmpSock, { force: true });
    throw new Error(`${why}\nqemu: ${QEMU} ${args.join(' ')}\nqemu stderr: ${qemuStderr.trim()}\nconsole tail:\n${tail}`);
  };

  // Ready: the agent answers grpc.Health/Check over the forwarded ttrpc port
  // (or, without the agent, init prints its baseline marker).
  const timeoutMs = options.bootTimeoutMs ?? (accel === 'tcg' ? 300_000 : 60_000);
  const deadline = t0 + timeoutMs;
  for (;;) {
    if (options.agent === false && consoleText().includes(NO_AGENT_MARKER)) break;
    if (!running) await fail(`qemu exited (code ${child.exitCode}) before the agent was ready`);
    if (performance.now() > deadline) await fail(`agent not ready after ${timeoutMs} ms`);
    if (options.agent === false) {
      await delay(100);
      continue;
    }
    // Probe only once init has started the agent: earlier probes would just queue in slirp.
    if (!consoleText().includes('tee-init: starting agent')) {
      await delay(200);
      continue;
    }
    try {
      const c = await TtrpcClient.connect({ host: '127.0.0.1', port: ports.ttrpc });
      try {
        const res = await Promise.race([c.call('grpc.Health', 'Check', { service: '' }, { timeoutMs: 2000 }), delay(3000).then(() => undefined)]);
        if (res && (res as { status?: unknown }).status === 'SERVING') break;
      } finally {
        c.close();
      }
    } catch {
      // not listening yet
    }
    await delay(300);
  }
  const readyMs = Math.round(performance.now() - t0);

  const exec = (command: string, opts?: { timeoutMs?: number; stdin?: Buffer | string }): Promise<ExecResult> => {
    if (ports.debug === undefined) throw new Error('this VM was booted without debugConsole');
    return debugExec(ports.debug, command, opts);
  };

  let stopped: Promise<{ clean: boolean; code: number | null }> | undefined;
  /** Power button, then up to timeoutMs for the guest to power off; timeoutMs 0 kills at once. */
  const teardown = async (timeoutMs: number): Promise<{ clean: boolean; code: number | null }> => {
    for (const c of clients) c.close();
    let inTime = false;
    if (timeoutMs === 0) killGroup();
    else if (running) {
      await qmp(qmpSock, 'system_powerdown').catch(() => undefined);
      inTime = await Promise.race([exited.then(() => true), delay(timeoutMs).then(() => false)]);
      if (!inTime) killGroup();
    }
    const code = await exited;
    // Clean: the guest powered itself off after init saw the agent stop.
    const clean = inTime && consoleText().includes('tee-init: power off');
    process.removeListener('exit', killGroup);
    if (ownWorkDir && !options.keepWorkDir) rmSync(workDir, { recursive: true, force: true });
    else rmSync(qmpSock, { force: true });
    return { clean, code };
  };

  const vm: Vm = {
    accel,
    workDir,
    consoleLog,
    ports,
    hostfwd,
    readyMs,
    options,
    args,
    exited,
    console: consoleText,
    async ttrpc() {
      const c = await TtrpcClient.connect({ host: '127.0.0.1', port: ports.ttrpc });
      clients.push(c);
      return c;
    },
    grpcCall<Res>(service: string, method: string, request: object, deadlineMs = 60_000) {
      return grpcCall<Res>(grpcFor(service), method, request, deadlineMs);
    },
    exec,
    async run(command, opts) {
      const r = await exec(command, opts);
      if (r.code !== 0) throw new Error(`guest command failed (exit ${r.code}): ${command}\n${r.stderr}${r.stdout}`);
      return r.stdout;
    },
    async readFile(path) {
      const r = await exec(`cat ${shellQuote(path)}`);
      if (r.code !== 0) throw new Error(`cannot read ${path} in the guest: ${r.stderr.trim()}`);
      return r.stdoutBytes;
    },
    async writeFile(path, data, mode = 0o644) {
      const r = await exec(`cat > ${shellQuote(path)} && chmod ${mode.toString(8)} ${shellQuote(path)}`, { stdin: data });
      if (r.code !== 0) throw new Error(`cannot write ${path} in the guest: ${r.stderr.trim()}`);
    },
    shutdown(timeoutMs = accel === 'tcg' ? 60_000 : 20_000) {
      stopped ??= teardown(timeoutMs);
      return stopped;
    },
    async kill() {
      stopped ??= teardown(0);
      await stopped;
    },
    async reboot() {
      await vm.shutdown();
      return bootVm({ ...options, workDir: ownWorkDir ? undefined : workDir });
    },
  };
  return vm;
}

export function shellQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

/** One QMP command on a fresh connection. */
async function qmp(path: string, command: string): Promise<void> {
  const sock = connect(path);
  await new Promise<void>((res, rej) => {
    sock.once('connect', res);
    sock.once('error', rej);
  });
  try {
    let buf = '';
    const lines: string[] = [];
    let wake: (() => void) | undefined;
    sock.on('data', (b: Buffer) => {
      buf += b.toString();
      let i: number;
      while ((i = buf.indexOf('\n')) >= 0) {
        lines.push(buf.slice(0, i));
        buf = buf.slice(i + 1);
      }
      wake?.();
    });
    const next = async (): Promise<Record<string, unknown>> => {
      const t = Date.now() + 5000;
      for (;;) {
        const line = lines.shift();
        if (line !== undefined) {
          const msg = JSON.parse(line) as Record<string, unknown>;
          if (!('event' in msg)) return msg;
          continue;
        }
        if (Date.now() > t) throw new Error('qmp: no answer');
        await new Promise<void>((r) => {
          wake = r;
          setTimeout(r, 200);
        });
      }
    };
    await next(); // greeting
    sock.write(JSON.stringify({ execute: 'qmp_capabilities' }) + '\n');
    await next();
    sock.write(JSON.stringify({ execute: command }) + '\n');
    const res = await next();
    if ('error' in res) throw new Error(`qmp ${command}: ${JSON.stringify(res.error)}`);
  } finally {
    sock.destroy();
  }
}

/**
 * The guest's debug shell (init runs it only with tee.debug_console=1): each
 * TCP connection to guest port DEBUG_SHELL_PORT gets a fresh busybox sh.
 * A command is sent base64-encoded, runs with its stdout and stderr in files
 * under /run, and both come back base64-encoded between markers with the
 * exit code. Connections are independent, so commands may run concurrently.
 */
async function debugExec(port: number, command: string, opts: { timeoutMs?: number; stdin?: Buffer | string } = {}): Promise<ExecResult> {
  const timeoutMs = opts.timeoutMs ?? 120_000;
  const lines = ['d=/run/tee-dbg/$$', 'mkdir -p $d', `echo ${Buffer.from(command).toString('base64')} | base64 -d > $d/cmd`];
  if (opts.stdin !== undefined) lines.push(`echo ${Buffer.from(opts.stdin).toString('base64')} | base64 -d > $d/in`);
  else lines.push('ln -s /dev/null $d/in');
  // The guest's own timeout ends a hung command.
  lines.push(
    `timeout ${Math.ceil(timeoutMs / 1000)} sh $d/cmd < $d/in > $d/out 2> $d/err; echo "__TEE_RC=$?"; base64 $d/out; echo __TEE_SEP; base64 $d/err; echo __TEE_END; rm -rf $d; exit`,
  );
  const sock = connect(port, '127.0.0.1');
  let text = '';
  sock.on('data', (b: Buffer) => (text += b.toString('latin1')));
  await new Promise<void>((res, rej) => {
    const timer = setTimeout(() => {
      sock.destroy();
      rej(new Error(`guest command timed out: ${command}`));
    }, timeoutMs + 30_000);
    sock.once('connect', () => sock.write(lines.join('\n') + '\n'));
    sock.once('error', (err) => {
      clearTimeout(timer);
      rej(new Error(`debug shell: ${err.message}`));
    });
    sock.once('close', () => {
      clearTimeout(timer);
      res();
    });
  });
  const m = /__TEE_RC=(\d+)\n([\s\S]*?)__TEE_SEP\n([\s\S]*?)__TEE_END\n/.exec(text);
  if (!m) throw new Error(`debug shell: no result for ${JSON.stringify(command)}: ${JSON.stringify(text.slice(-500))}`);
  const stdoutBytes = Buffer.from(m[2]!.replace(/\s+/g, ''), 'base64');
  return { code: Number(m[1]), stdout: stdoutBytes.toString('utf8'), stdoutBytes, stderr: Buffer.from(m[3]!.replace(/\s+/g, ''), 'base64').toString('utf8') };
}
