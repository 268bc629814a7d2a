// scripts/bench-boot: kernel-to-agent-ready time and idle guest memory of
// the guest image, against a busybox-only initramfs booted with the same
// kernel in the same run (TCG times mean little alone). Medians of --runs.

import { spawnSync } from 'node:child_process';
import { chmodSync, copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { scriptOptions } from './lib/args.ts';
import { bootVm, buildImage, chooseAccel, DEFAULT_IMAGE_DIR, kvmWorks, NO_AGENT_MARKER, type Accel, type Vm } from './lib/qemu.ts';

const usage = `Usage: scripts/bench-boot [--runs N] [--image DIR] [--accel auto|kvm|tcg] [--memory MIB]

Boots the guest image from its initramfs, the same image from its dm-verity
root disk, and a busybox-only initramfs with the same kernel, in turn, N
times each (default 3; the image is built first when its inputs changed),
and reports medians:
  - boot to ready: QEMU start to the agent answering Health over a forwarded
    port, against QEMU start to the busybox init's ready line (wall clock);
  - guest uptime at ready: kernel start to the agent's ready line (init's
    uptime when it started the agent + the agent's own startup_ms), against
    the busybox init's uptime at its ready line;
  - idle memory 5 s after ready: guest MemTotal - MemAvailable, the agent's
    RSS, and the same for the busybox boot.
Under TCG the ratios are the figures to quote. KVM figures are reported
too wherever a KVM guest really runs (not on nested hosts where it fails).`;

const values = scriptOptions('bench-boot', usage, {
  runs: { type: 'string' },
  image: { type: 'string' },
  accel: { type: 'string' },
  memory: { type: 'string' },
  help: { type: 'boolean', short: 'h' },
});
const runs = Number(values.runs ?? 3);
const imageDir = values.image ?? DEFAULT_IMAGE_DIR;
const memoryMb = Number(values.memory ?? 1024);
if (!Number.isInteger(runs) || runs < 1 || !Number.isInteger(memoryMb)) {
  process.stderr.write(`bench-boot: bad --runs or --memory\n\n${usage}\n`);
  process.exit(2);
}

buildImage(imageDir);
const kernel = join(imageDir, 'vmlinuz');

/** A busybox-only initramfs: mount proc, print the ready marker with uptime, then idle memory after 5 s. */
function baselineInitrd(dir: string): string {
  const root = join(dir, 'root');
  for (const d of ['bin', 'proc', 'dev']) mkdirSync(join(root, d), { recursive: true });
  copyFileSync('/bin/busybox', join(root, 'bin', 'busybox'));
  chmodSync(join(root, 'bin', 'busybox'), 0o755);
  writeFileSync(
    join(root, 'init'),
    [
      '#!/bin/busybox sh',
      '/bin/busybox --install -s /bin',
      'mount -t proc proc /proc',
      'mount -t devtmpfs devtmpfs /dev',
      'exec >/dev/console 2>&1',
      `echo "${NO_AGENT_MARKER} at uptime $(cut -d' ' -f1 /proc/uptime)"`,
      'sleep 5',
      `awk '/^MemTotal/{t=$2} /^MemAvailable/{a=$2} END{print "bench: used_kib=" t-a}' /proc/meminfo`,
      'exec sleep 100000',
      '',
    ].join('\n'),
    { mode: 0o755 },
  );
  const out = join(dir, 'baseline.img');
  const r = spawnSync('sh', ['-c', `cd ${root} && find . | cpio --quiet -o -H newc -R 0:0 | gzip -1 > ${out}`], { stdio: 'inherit' });
  if (r.status !== 0) throw new Error('cannot build the baseline initramfs');
  return out;
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};
const delay = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const uptimeAt = (text: string, re: RegExp): number => {
  const m = re.exec(text);
  if (!m) throw new Error(`no ${re} on the console`);
  return Number(m[1]);
};

interface Sample {
  wallMs: number;
  guestMs: number;
  usedKib: number;
  agentRssKib?: number;
}

async function agentBoot(accel: Accel, verity: boolean): Promise<Sample> {
  const vm: Vm = await bootVm({ imageDir, accel, memoryMb, debugConsole: true, verity });
  try {
    const con = vm.console();
    const started = uptimeAt(con, /tee-init: starting agent at uptime ([\d.]+)/);
    const ready = /"startup_ms":(\d+),"msg":"ready"/.exec(con);
    if (!ready) throw new Error('no agent ready line on the console');
    await delay(5000);
    const used = await vm.run(`awk '/^MemTotal/{t=$2} /^MemAvailable/{a=$2} END{print t-a}' /proc/meminfo`);
    const rss = await vm.run(`awk '/^VmRSS/{print $2}' /proc/$(cat /run/tee-agent.pid)/status`);
    return { wallMs: vm.readyMs, guestMs: started * 1000 + Number(ready[1]), usedKib: Number(used), agentRssKib: Number(rss) };
  } finally {
    await vm.shutdown();
  }
}

async function baselineBoot(accel: Accel, initrd: string): Promise<Sample> {
  const vm = await bootVm({ imageDir, initrd, accel, memoryMb, agent: false });
  try {
    const at = uptimeAt(vm.console(), new RegExp(`${NO_AGENT_MARKER} at uptime ([\\d.]+)`));
    const until = Date.now() + 60_000;
    let m: RegExpExecArray | null;
    while (!(m = /bench: used_kib=(\d+)/.exec(vm.console()))) {
      if (Date.now() > until) throw new Error('baseline printed no memory figure');
      await delay(200);
    }
    return { wallMs: vm.readyMs, guestMs: at * 1000, usedKib: Number(m[1]) };
  } finally {
    await vm.kill();
  }
}

async function bench(accel: Accel, initrd: string): Promise<void> {
  const agent: Sample[] = [];
  const verity: Sample[] = [];
  const base: Sample[] = [];
  for (let i = 0; i < runs; i++) {
    base.push(await baselineBoot(accel, initrd));
    agent.push(await agentBoot(accel, false));
    verity.push(await agentBoot(accel, true));
    process.stderr.write(`bench-boot: ${accel} run ${i + 1}/${runs}: agent ${agent[i]!.wallMs} ms, agent on verity root ${verity[i]!.wallMs} ms, busybox ${base[i]!.wallMs} ms\n`);
  }
  const med = (xs: Sample[], k: keyof Sample): number => median(xs.map((s) => s[k] ?? 0));
  // Ratios pair each boot with the busybox boot of the same round, then take the median.
  const ratio = (xs: Sample[], k: keyof Sample): number => median(xs.map((s, i) => (s[k] ?? 0) / (base[i]![k] ?? 1)));
  const cell = (xs: Sample[], k: keyof Sample, scale: number, paired: boolean): string =>
    `${String(Math.round(med(xs, k) / scale)).padStart(7)}${paired ? ` (${ratio(xs, k).toFixed(2)}x)` : '        '}`;
  const row = (name: string, k: keyof Sample, scale: number, unit: string): string => {
    const paired = k !== 'agentRssKib';
    const b = paired ? String(Math.round(med(base, k) / scale)).padStart(7) : '      -';
    return `${`${name} (${unit})`.padEnd(34)} ${cell(agent, k, scale, paired)} ${cell(verity, k, scale, paired)} ${b}`;
  };
  console.log(`\n${accel.toUpperCase()}: ${runs} runs each, medians, ${memoryMb} MiB guest; (ratio) = median of per-round ratios to the busybox boot`);
  console.log(`${''.padEnd(34)} ${'initramfs'.padStart(16)} ${'verity root'.padStart(16)} ${'busybox'.padStart(7)}`);
  console.log(row('QEMU start -> ready, wall', 'wallMs', 1, 'ms'));
  console.log(row('kernel start -> ready, guest', 'guestMs', 1, 'ms'));
  console.log(row('idle memory used', 'usedKib', 1024, 'MiB'));
  console.log(row('agent RSS at idle', 'agentRssKib', 1024, 'MiB'));
}

const dir = mkdtempSync(join(tmpdir(), 'tee-bench-boot-'));
try {
  const initrd = baselineInitrd(dir);
  const wanted = (values.accel ?? 'auto') as Accel | 'auto';
  const first = chooseAccel(kernel, wanted);
  // auto: the best mode the host has, and TCG as well for the ratio across hosts.
  const accels: Accel[] = wanted === 'auto' && first !== 'tcg' ? [first, 'tcg'] : [first];
  for (const accel of accels) await bench(accel, initrd);
  if (wanted === 'auto' && !kvmWorks(kernel)) console.log('\nKVM: not usable on this host (a KVM guest does not run here), so no KVM figures');
} finally {
  rmSync(dir, { recursive: true, force: true });
}
