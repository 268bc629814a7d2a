// The few system calls Node does not offer (mknod, setxattr, mount, syncfs),
// made through standard tools, batched per layer, never through a shell
// except the overlay probe's fixed script. Only file names, fixed options
// and xattr values pass: names on argv (they are not secret) or
// NUL-separated on stdin, values on stdin. Paths are relative to `cwd`, a
// directory the caller owns, and the caller has checked that every parent is
// a real directory it created; the tools never see an unchecked path.

import { spawn } from 'node:child_process';
import { statfsSync } from 'node:fs';
import { StoreError } from './errors.ts';
import { OPAQUE_XATTR } from './xattr.ts';

export interface RunResult {
  code: number;
  stderr: string;
}

/** Run a tool without a shell; stdin is written and closed, stderr is kept (capped) for logs. */
export function run(cmd: string, args: readonly string[], opts: { cwd?: string; stdin?: Buffer | string } = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd: opts.cwd, stdio: ['pipe', 'ignore', 'pipe'], env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', LC_ALL: 'C' } });
    let stderr = '';
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (d: string) => {
      if (stderr.length < 4096) stderr += d;
    });
    child.on('error', (err) => reject(new StoreError(`cannot run ${cmd}`, { cause: err })));
    child.on('close', (code, signal) => resolve({ code: code ?? (signal ? 128 : 1), stderr: stderr.trim() }));
    child.stdin.on('error', () => {}); // EPIPE when the tool exits early; its exit code says what happened
    child.stdin.end(opts.stdin ?? '');
  });
}

export interface NodeSpec {
  /** Path relative to the batch's cwd. */
  path: string;
  type: 'c' | 'b' | 'p';
  major: number;
  minor: number;
}

/** mknod(2) for many nodes in one process tree: `xargs -0 mknod`, arguments NUL-separated on stdin. */
export async function mknodBatch(cwd: string, nodes: readonly NodeSpec[]): Promise<void> {
  // "./" keeps a name from being read as an option.
  const devs = nodes.filter((n) => n.type !== 'p').map((n) => ['./' + n.path, n.type, String(n.major), String(n.minor)]);
  const fifos = nodes.filter((n) => n.type === 'p').map((n) => ['./' + n.path, 'p']);
  for (const [per, items] of [[4, devs], [2, fifos]] as const) {
    if (items.length === 0) continue;
    const r = await run('xargs', ['-0', '-n', String(per), 'mknod'], { cwd, stdin: items.flat().join('\0') + '\0' });
    if (r.code !== 0) throw new StoreError(`mknod failed (${r.stderr.split('\n')[0]?.slice(0, 200) ?? ''})`);
  }
}

export interface XattrSpec {
  path: string;
  name: string;
  value: Buffer;
}

/** Escape a path for setfattr --restore: every byte outside printable ASCII, and backslash, as \ooo. */
function restorePath(path: string): string {
  let out = '';
  for (const b of Buffer.from(path)) {
    out += b > 0x20 && b < 0x7f && b !== 0x5c ? String.fromCharCode(b) : '\\' + b.toString(8).padStart(3, '0');
  }
  return out;
}

/** lsetxattr(2) for many files: `setfattr -h --restore=-`, names and values on stdin. */
export async function setxattrBatch(cwd: string, items: readonly XattrSpec[]): Promise<RunResult> {
  const byPath = new Map<string, XattrSpec[]>();
  for (const it of items) {
    const list = byPath.get(it.path);
    if (list) list.push(it);
    else byPath.set(it.path, [it]);
  }
  let text = '';
  for (const [path, list] of byPath) {
    text += `# file: ${restorePath('./' + path)}\n`;
    for (const x of list) text += `${restorePath(x.name)}=0s${x.value.toString('base64')}\n`;
    text += '\n';
  }
  return run('setfattr', ['-h', '--restore=-'], { cwd, stdin: text });
}

/** Make everything written under `dir` durable: syncfs(2) via `sync -f`. A no-op on tmpfs and ramfs. */
export async function syncFs(dir: string): Promise<void> {
  const type = statfsSync(dir).type;
  if (type === 0x01021994 || type === 0x858458f6) return;
  const r = await run('sync', ['-f', dir]);
  if (r.code !== 0) throw new StoreError(`sync -f failed (${r.stderr.slice(0, 200)})`);
}

/** Layers are untrusted: never follow redirects or metacopy xattrs (the unpacker drops trusted.* from archives anyway). */
const overlayOptions = (lower: readonly string[], upper: string, work: string): string =>
  `lowerdir=${lower.join(':')},upperdir=${upper},workdir=${work},redirect_dir=nofollow,metacopy=off,index=off`;

export async function mountOverlay(target: string, cwd: string, lower: readonly string[], upper: string, work: string): Promise<void> {
  const r = await run('mount', ['-t', 'overlay', 'overlay', '-o', overlayOptions(lower, upper, work), target], { cwd });
  if (r.code !== 0) throw new StoreError(`overlay mount failed (${r.stderr.slice(0, 300)})`);
}

export async function unmount(target: string): Promise<void> {
  const r = await run('umount', [target]);
  if (r.code !== 0) throw new StoreError(`umount failed (${r.stderr.slice(0, 300)})`);
}

/** Why each step of the probe script can fail, by its exit code. */
const PROBE_STEPS: Readonly<Record<number, string>> = {
  10: 'mknod failed',
  11: 'cannot set trusted xattrs',
  12: 'overlay mount failed',
  13: 'umount failed',
};

/**
 * The overlayfs probe as one process: in `cwd`, which holds l1/a, l1/d/x,
 * l2/d/y and empty u, w and m, make l2/a a whiteout and l2/d opaque, mount
 * l2 over l1 at m as bundles are mounted, and check that a, d/x are hidden and
 * d/y is not. One fixed script with no parameters: each fork of this large,
 * multi-threaded process stalls it for milliseconds, and this was five.
 * Returns why overlayfs is unusable, or undefined.
 */
export async function probeOverlayMount(cwd: string): Promise<string | undefined> {
  const script = [
    'mknod l2/a c 0 0 || exit 10',
    `setfattr -h -n ${OPAQUE_XATTR} -v y l2/d || exit 11`,
    `mount -t overlay overlay -o ${overlayOptions(['l2', 'l1'], 'u', 'w')} m || exit 12`,
    'ok=0; [ ! -e m/a ] && [ ! -e m/d/x ] && [ -e m/d/y ] && ok=1',
    'umount m || exit 13',
    '[ $ok = 1 ] || exit 14',
  ].join('\n');
  const r = await run('sh', ['-c', script], { cwd });
  if (r.code === 0) return undefined;
  if (r.code === 14) return 'overlayfs ignored a whiteout or an opaque directory';
  return `${PROBE_STEPS[r.code] ?? `probe exited with ${r.code}`} (${r.stderr.slice(0, 160)})`;
}
