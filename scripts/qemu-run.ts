// scripts/qemu-run: boot the guest image, print "agent ready" once the agent
// answers Health through a forwarded port, stay up until killed or until the
// guest powers off. SIGINT/SIGTERM shut the guest down cleanly.

import { parseArgs } from 'node:util';
import { bootVm, DEFAULT_IMAGE_DIR, GUESTFWD_ADDR, type Accel, type Disk } from './lib/qemu.ts';

const usage = `Usage: scripts/qemu-run [options]

Boot the tee-agent guest (guest-rootfs/build output) and wait until the agent
answers grpc.Health/Check over ttrpc through a forwarded port; then print
"agent ready ..." on stdout and stay up until killed (SIGINT/SIGTERM: clean
ACPI shutdown) or until the guest powers off.

Boot mode: TDX when the host has it (q35, kernel_irqchip=split,
confidential-guest-support=tdx, tdx-guest object, TDVF firmware from
TEE_TDVF or /usr/share/ovmf/OVMF.inteltdx.fd), else KVM when a KVM guest
really runs, else TCG (-accel tcg -cpu max).

Network: QEMU user networking with restrict=on; forwards bind 127.0.0.1 only.
The agent's gRPC (guest 50000) and ttrpc (guest 50001) ports always get free
host ports, printed with "agent ready".

Options:
  --image DIR             guest build directory (default build/guest)
  --kernel FILE           kernel (default DIR/vmlinuz)
  --initrd FILE           initramfs (default DIR/initrd.img)
  --verity                boot DIR/root.img through DIR/initrd-verity.img with the root hash
                          in DIR/cmdline-verity (guest-rootfs/build --verity)
  --disk IMG[,serial=S][,ro]
                          extra raw virtio-blk disk (repeatable; in order, after the verity
                          root and initdata disks; the guest sees the serial in /sys/block/vdX/serial)
  --hostfwd HOSTPORT:GUESTPORT
                          host 127.0.0.1:HOSTPORT -> guest port (repeatable; HOSTPORT 0 = free port)
  --guestfwd GUESTPORT:HOSTPORT
                          guest ${GUESTFWD_ADDR}:GUESTPORT -> host 127.0.0.1:HOSTPORT (repeatable)
  --append ARGS           extra kernel parameters (e.g. agent.log=debug)
  --initdata FILE         initdata TOML: a kata-format block device (serial "initdata"),
                          and MRCONFIGID = its digest under TDX
  --debug-console         a root shell per TCP connection to the printed debug= port
                          (guest port 2222, tee.debug_console=1; tests only)
  --accel auto|tdx|kvm|tcg  (default auto)
  --memory MIB            guest memory (default 1024)
  --cpus N                vCPUs (default 2)
  --timeout SECONDS       boot timeout (default 300 under TCG, 60 otherwise)
  --work-dir DIR          console log and sockets (default: a new directory, kept)
  -h, --help              show this help`;

function fail(msg: string): never {
  process.stderr.write(`qemu-run: ${msg}\n\n${usage}\n`);
  process.exit(2);
}

function pair(s: string, what: string): [number, number] {
  const m = /^(\d+):(\d+)$/.exec(s);
  if (!m) fail(`bad ${what} ${JSON.stringify(s)}`);
  return [Number(m[1]), Number(m[2])];
}

let values;
try {
  ({ values } = parseArgs({
    options: {
      image: { type: 'string' },
      kernel: { type: 'string' },
      initrd: { type: 'string' },
      verity: { type: 'boolean' },
      disk: { type: 'string', multiple: true },
      hostfwd: { type: 'string', multiple: true },
      guestfwd: { type: 'string', multiple: true },
      append: { type: 'string' },
      initdata: { type: 'string' },
      'debug-console': { type: 'boolean' },
      accel: { type: 'string' },
      memory: { type: 'string' },
      cpus: { type: 'string' },
      timeout: { type: 'string' },
      'work-dir': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  }));
} catch (err) {
  fail((err as Error).message);
}
if (values.help) {
  process.stdout.write(usage + '\n');
  process.exit(0);
}
const accel = values.accel ?? 'auto';
if (!['auto', 'tdx', 'kvm', 'tcg'].includes(accel)) fail(`bad --accel ${accel}`);
const disks: Disk[] = (values.disk ?? []).map((spec) => {
  const [path, ...opts] = spec.split(',');
  const d: Disk = { path: path! };
  for (const o of opts) {
    if (o === 'ro') d.readonly = true;
    else if (o.startsWith('serial=')) d.serial = o.slice(7);
    else fail(`bad --disk option ${o}`);
  }
  return d;
});
const num = (v: string | undefined, what: string): number | undefined => {
  if (v === undefined) return undefined;
  if (!/^\d+$/.test(v)) fail(`bad ${what} ${v}`);
  return Number(v);
};
const timeoutS = num(values.timeout, '--timeout');

const workDir = values['work-dir'];
const vm = await bootVm({
  imageDir: values.image ?? DEFAULT_IMAGE_DIR,
  kernel: values.kernel,
  initrd: values.initrd,
  verity: values.verity ?? false,
  disks,
  hostfwd: (values.hostfwd ?? []).map((s) => {
    const [host, guest] = pair(s, '--hostfwd');
    return { host, guest };
  }),
  guestfwd: (values.guestfwd ?? []).map((s) => {
    const [guest, host] = pair(s, '--guestfwd');
    return { guest, host };
  }),
  append: values.append,
  initdata: values.initdata,
  debugConsole: values['debug-console'] ?? false,
  accel: accel as Accel | 'auto',
  memoryMb: num(values.memory, '--memory'),
  cpus: num(values.cpus, '--cpus'),
  bootTimeoutMs: timeoutS === undefined ? undefined : timeoutS * 1000,
  workDir,
  keepWorkDir: true,
  log: (line) => process.stderr.write(line + '\n'),
}).catch((err: Error) => {
  process.stderr.write(`qemu-run: ${err.message}\n`);
  process.exit(1);
});

const extra = vm.hostfwd
  .slice(2)
  .filter((f) => f.host !== vm.ports.debug)
  .map((f) => ` fwd=127.0.0.1:${f.host}->${f.guest}`)
  .join('');
const dbg = vm.ports.debug === undefined ? '' : ` debug=127.0.0.1:${vm.ports.debug}`;
process.stdout.write(`agent ready accel=${vm.accel} grpc=127.0.0.1:${vm.ports.grpc} ttrpc=127.0.0.1:${vm.ports.ttrpc}${extra} console=${vm.consoleLog}${dbg} ready_ms=${vm.readyMs}\n`);

let stopping = false;
const stop = async (signal: string): Promise<void> => {
  if (stopping) return;
  stopping = true;
  process.stderr.write(`qemu-run: ${signal}: shutting the guest down\n`);
  const r = await vm.shutdown();
  process.stderr.write(`qemu-run: guest ${r.clean ? 'powered off cleanly' : 'killed'}\n`);
  process.exit(r.clean ? 0 : 1);
};
process.on('SIGINT', () => void stop('SIGINT'));
process.on('SIGTERM', () => void stop('SIGTERM'));
const code = await vm.exited;
if (!stopping) {
  const clean = vm.console().includes('tee-init: power off');
  process.stderr.write(`qemu-run: guest ${clean ? 'powered off' : `exited (qemu code ${code})`}\n`);
  await vm.shutdown();
  process.exit(clean ? 0 : 1);
}
