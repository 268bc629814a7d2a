// The run directory, in tmpfs: LUKS2 headers (the ephemeral ones and the
// validated copies of persistent ones) and one state record per volume, so
// an agent that crashed can find and finish what it left. Records never hold
// a key; tmpfs is guest memory, which TDX encrypts, and vanishes at reboot.

import { randomUUID } from 'node:crypto';
import { mkdir, readdir, readFile, rename, rm, statfs, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { StorageUnavailable } from './errors.ts';

const TMPFS_MAGIC = 0x01021994;
const RAMFS_MAGIC = 0x858458f6;

export interface VolumeRecord {
  readonly version: 1;
  readonly mapperName: string;
  readonly device: string;
  /** "MAJ:MIN" of the backing device. */
  readonly deviceId: string;
  readonly mountPoint: string;
  readonly target: 'fileSystem' | 'device';
  readonly header: string;
  readonly ephemeral: boolean;
  readonly integrity: boolean;
  /** "setup" until the volume is mounted; a crash in "setup" is undone at the next start. */
  readonly phase: 'setup' | 'ready';
}

export class RunDir {
  readonly root: string;
  readonly headers: string;
  readonly volumes: string;

  constructor(root: string) {
    this.root = root;
    this.headers = join(root, 'headers');
    this.volumes = join(root, 'volumes');
  }

  /** Creates the directories (0700) and refuses anything but tmpfs/ramfs: headers must never reach a disk. */
  async ensure(): Promise<void> {
    await mkdir(this.headers, { recursive: true, mode: 0o700 });
    await mkdir(this.volumes, { recursive: true, mode: 0o700 });
    const fs = await statfs(this.root);
    if (Number(fs.type) !== TMPFS_MAGIC && Number(fs.type) !== RAMFS_MAGIC) {
      throw new StorageUnavailable(`storage run directory ${this.root} is not on tmpfs; LUKS2 headers must stay in guest memory`);
    }
  }

  headerPath(mapperName: string): string {
    return join(this.headers, `${mapperName}.header`);
  }

  async write(rec: VolumeRecord): Promise<void> {
    const file = join(this.volumes, `${rec.mapperName}.json`);
    const tmp = `${file}.${randomUUID()}.tmp`;
    await writeFile(tmp, JSON.stringify(rec), { mode: 0o600 });
    await rename(tmp, file);
  }

  async remove(mapperName: string): Promise<void> {
    await rm(join(this.volumes, `${mapperName}.json`), { force: true });
  }

  /** Every record; unreadable ones are reported by name so recovery can log them. */
  async list(): Promise<{ records: VolumeRecord[]; broken: string[] }> {
    let names: string[];
    try {
      names = await readdir(this.volumes);
    } catch {
      return { records: [], broken: [] };
    }
    const records: VolumeRecord[] = [];
    const broken: string[] = [];
    for (const name of names) {
      const file = join(this.volumes, name);
      if (name.endsWith('.tmp')) {
        await rm(file, { force: true });
        continue;
      }
      try {
        const rec = JSON.parse(await readFile(file, 'utf8')) as VolumeRecord;
        if (rec.version !== 1 || `${rec.mapperName}.json` !== name) throw new Error('bad record');
        records.push(rec);
      } catch {
        broken.push(name);
      }
    }
    return { records, broken };
  }

  /** Header files no record refers to. */
  async strayHeaders(known: ReadonlySet<string>): Promise<string[]> {
    const names = await readdir(this.headers).catch(() => [] as string[]);
    return names.map((n) => join(this.headers, n)).filter((p) => !known.has(p));
  }
}
