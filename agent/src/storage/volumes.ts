// The volume lifecycle: set up (format or validate-and-open, mkfs, mount),
// tear down, and recover after a crash. One instance per agent; it owns the
// run directory and the table of volumes it has opened.

import { randomBytes, randomUUID } from 'node:crypto';
import { open as openFile, readFile, readlink, rm, stat } from 'node:fs/promises';
import type { Logger } from 'pino';
import { Cancelled, InvalidArgument } from '../errors.ts';
import type { KeySource } from '../resource.ts';
import { Cryptsetup, SECTOR_SIZE } from './cryptsetup.ts';
import { dmFacts, expectedCipher, type DmFacts } from './dm.ts';
import { checkUnused, devId, isAllZero, readStart, resolveDevice, type ResolvedDevice } from './device.ts';
import { DeviceNotEmpty, DeviceNotFound, HeaderRejected, StorageUnavailable, VolumeBusy } from './errors.ts';
import { processRunner, type Runner } from './exec.ts';
import { checkHeaderCopy, luksVersionAt } from './header.ts';
import { KeyedLock } from './lock.ts';
import { hasExt4Magic, makeExt4 } from './mkfs.ts';
import { linkDevice, mountedAt, mountExt4, readMountinfo, unlinkDevice, unmount } from './mount.ts';
import type { KeySpec, VolumeSpec } from './options.ts';
import { RunDir, type VolumeRecord } from './state.ts';

/** Unseals `sealed.…` secrets; the attestation capability provides it. */
export interface SecretUnsealer {
  unseal(secret: string, signal?: AbortSignal): Promise<Buffer>;
}

export interface StorageConfig {
  /** dm-integrity when a request does not say (kata agent.secure_storage_integrity). */
  readonly integrity: boolean;
  /** tmpfs directory for headers and state records. */
  readonly run_dir: string;
  readonly sysfs: string;
}

export interface StorageDeps {
  readonly config: StorageConfig;
  readonly keys: KeySource;
  readonly sealed?: SecretUnsealer;
  readonly runner?: Runner;
  readonly log: Logger;
}

/** What a mount did and what the kernel now says about the mapping (cryptsetup status). */
export interface VolumeFacts {
  readonly mapperName: string;
  readonly device: string;
  readonly mountPoint: string;
  readonly ephemeral: boolean;
  /** True when this call formatted the device. */
  readonly formatted: boolean;
  /** True when the volume was already set up by an earlier identical call. */
  readonly reused: boolean;
  readonly status: Readonly<Record<string, string>>;
  /** The device-mapper tables as the kernel runs them. */
  readonly dm: DmFacts | undefined;
}

/** Size of an ephemeral detached header: 2 × 16 KiB metadata + 1 MiB keyslots (see luksFormatArgs). */
const EPHEMERAL_HEADER_SIZE = 2 * 16384 + (1 << 20);
const EPHEMERAL_KEY_BYTES = 64;
const STATUS_FIELDS = ['type', 'cipher', 'keysize', 'key location', 'integrity', 'integrity keysize', 'integrity tag size', 'device', 'sector size', 'offset', 'size', 'mode', 'flags'];

const mapperPath = (name: string): string => `/dev/mapper/${name}`;

export class SecureStorage {
  private readonly config: StorageConfig;
  private readonly keys: KeySource;
  private readonly sealed: SecretUnsealer | undefined;
  private readonly runner: Runner;
  private readonly log: Logger;
  private readonly cs: Cryptsetup;
  private readonly run: RunDir;
  private readonly locks = new KeyedLock();
  /** Volumes set up (or being set up), by mount point. */
  private readonly active = new Map<string, VolumeRecord>();

  constructor(deps: StorageDeps) {
    this.config = deps.config;
    this.keys = deps.keys;
    this.sealed = deps.sealed;
    this.runner = deps.runner ?? processRunner;
    this.log = deps.log.child({ capability: 'storage' });
    this.cs = new Cryptsetup(this.runner);
    this.run = new RunDir(deps.config.run_dir);
  }

  get defaultIntegrity(): boolean {
    return this.config.integrity;
  }

  /** The volumes this agent holds. */
  volumes(): VolumeRecord[] {
    return [...this.active.values()];
  }

  /** Sets up the volume `spec` describes; an identical retry returns the volume already set up. */
  async mount(spec: VolumeSpec, signal?: AbortSignal): Promise<VolumeFacts> {
    const dev = await resolveDevice(spec.device, { sysfs: this.config.sysfs, runner: this.runner });
    return this.locks.run([`dev:${dev.id}`, `mp:${spec.mountPoint}`], async () => {
      const reused = await this.existing(spec, dev);
      if (reused) return { ...(await this.facts(reused, false)), reused: true };
      checkAborted(signal);
      await this.run.ensure();
      await checkUnused(this.config.sysfs, dev, await readMountinfo());
      if (spec.target === 'fileSystem' && mountedAt(await readMountinfo(), spec.mountPoint)) throw new VolumeBusy(`something is already mounted on ${spec.mountPoint}`);

      const name = spec.mapperName ?? randomUUID();
      if ([...this.active.values()].some((r) => r.mapperName === name) || (await exists(mapperPath(name)))) {
        throw new VolumeBusy(`device-mapper name ${name} is in use`);
      }
      const rec: VolumeRecord = {
        version: 1,
        mapperName: name,
        device: dev.path,
        deviceId: dev.id,
        mountPoint: spec.mountPoint,
        target: spec.target,
        header: this.run.headerPath(name),
        ephemeral: spec.key.kind === 'ephemeral',
        integrity: spec.integrity,
        phase: 'setup',
      };
      // The record goes to tmpfs before anything touches the device, so a crash leaves a trail.
      await this.run.write(rec);
      this.active.set(rec.mountPoint, rec);
      try {
        const formatted = rec.ephemeral ? await this.setupEphemeral(spec, rec, signal) : await this.setupPersistent(spec, rec, signal);
        const ready: VolumeRecord = { ...rec, phase: 'ready' };
        await this.run.write(ready);
        this.active.set(rec.mountPoint, ready);
        const facts = await this.facts(ready, formatted);
        this.log.debug({ volume: facts }, 'secure volume ready');
        return facts;
      } catch (err) {
        this.active.delete(rec.mountPoint);
        await this.teardown(rec).catch((cleanupErr: unknown) =>
          this.log.error({ err: cleanupErr, mapperName: name }, 'cleanup after a failed secure mount failed; the next agent start retries it'),
        );
        throw err;
      }
    });
  }

  /** Unmounts and closes the volume on `mountPoint`; false when there was none (an idempotent retry). */
  async unmount(mountPoint: string): Promise<boolean> {
    const rec = this.active.get(mountPoint);
    if (!rec) return false;
    return this.locks.run([`dev:${rec.deviceId}`, `mp:${mountPoint}`], async () => {
      const current = this.active.get(mountPoint);
      if (!current) return false;
      await this.teardown(current);
      this.active.delete(mountPoint);
      this.log.info({ mapperName: current.mapperName, mountPoint, device: current.device }, 'secure volume closed');
      return true;
    });
  }

  /**
   * At agent start: adopt volumes that were fully set up (their mounts are
   * still in use) and undo everything else a crash left behind.
   */
  async recover(): Promise<{ adopted: string[]; cleaned: string[] }> {
    const { records, broken } = await this.run.list();
    const adopted: string[] = [];
    const cleaned: string[] = [];
    for (const name of broken) this.log.warn({ record: name }, 'unreadable secure volume record ignored');
    for (const rec of records) {
      if (rec.phase === 'ready' && (await this.intact(rec))) {
        this.active.set(rec.mountPoint, rec);
        adopted.push(rec.mapperName);
        continue;
      }
      try {
        await this.teardown(rec);
        cleaned.push(rec.mapperName);
      } catch (err) {
        this.log.error({ err, mapperName: rec.mapperName }, 'could not clean up a secure volume left by a crash');
      }
    }
    const known = new Set(records.map((r) => r.header));
    for (const file of await this.run.strayHeaders(known)) await rm(file, { force: true });
    if (adopted.length + cleaned.length > 0) this.log.info({ adopted, cleaned }, 'secure volumes recovered');
    return { adopted, cleaned };
  }

  // ---- set-up paths ----

  /** Random key, detached header in tmpfs, format without wipe, open without journal, mkfs. */
  private async setupEphemeral(spec: VolumeSpec, rec: VolumeRecord, signal?: AbortSignal): Promise<boolean> {
    await rm(rec.header, { force: true });
    const fh = await openFile(rec.header, 'wx', 0o600);
    await fh.truncate(EPHEMERAL_HEADER_SIZE);
    await fh.close();
    const key = randomBytes(EPHEMERAL_KEY_BYTES);
    try {
      await this.cs.format({ device: rec.device, integrity: spec.integrity, kdf: 'ephemeral', header: rec.header, noWipe: true }, key);
      checkAborted(signal);
      await this.cs.open({ device: rec.device, name: rec.mapperName, header: rec.header, noJournal: true }, key);
    } finally {
      key.fill(0);
    }
    await this.verifyMapping(rec);
    checkAborted(signal);
    if (spec.target === 'fileSystem') {
      await makeExt4(this.runner, mapperPath(rec.mapperName), spec.mkfsOptions, spec.integrity);
      await mountExt4(this.runner, mapperPath(rec.mapperName), rec.mountPoint);
    } else await linkDevice(mapperPath(rec.mapperName), rec.mountPoint);
    return true;
  }

  /**
   * Key from the KBS (or a sealed secret or file). Formats only on request or
   * when the whole device is zero; otherwise opens it through a validated
   * private copy of its header.
   */
  private async setupPersistent(spec: VolumeSpec, rec: VolumeRecord, signal?: AbortSignal): Promise<boolean> {
    const start = await readStart(rec.device, 4096);
    const version = luksVersionAt(start);
    let format = spec.source === 'empty';
    if (!format && version === 1) throw new HeaderRejected(rec.device, 'LUKS1 volumes are not supported');
    if (!format && version === undefined) {
      if (!(await isAllZero(rec.device, signal))) {
        throw new DeviceNotEmpty(rec.device, hasExt4Magic(start) ? 'holds a plain ext4 filesystem' : 'holds data that is not a LUKS2 volume');
      }
      format = true;
    }
    checkAborted(signal);
    let key: Buffer | undefined;
    try {
      if (format) {
        key = await this.key(spec.key, signal);
        await this.cs.format({ device: rec.device, integrity: spec.integrity, kdf: 'persistent', noWipe: false }, key);
        this.log.info({ device: rec.device, integrity: spec.integrity }, 'formatted persistent LUKS2 volume');
      }
      // The header on the device is the host's to rewrite: validate a private copy, then open with that copy.
      await this.cs.headerBackup(rec.device, rec.header);
      await checkHeaderCopy(this.cs, rec.device, rec.header, { integrity: spec.integrity });
      checkAborted(signal);
      key ??= await this.key(spec.key, signal);
      await this.cs.open({ device: rec.device, name: rec.mapperName, header: rec.header, noJournal: false }, key);
    } finally {
      key?.fill(0);
    }
    await this.verifyMapping(rec);
    const mapper = mapperPath(rec.mapperName);
    if (spec.target === 'device') {
      await linkDevice(mapper, rec.mountPoint);
      return format;
    }
    if (format || !hasExt4Magic(await readStart(mapper, 4096))) {
      // A volume that opens but holds no ext4 is formatted only when it is all zero (a wiped, never-used volume).
      if (!format && !(await isAllZero(mapper, signal))) throw new DeviceNotEmpty(rec.device, 'opens but holds no ext4 filesystem');
      await makeExt4(this.runner, mapper, spec.mkfsOptions, false);
    }
    await mountExt4(this.runner, mapper, rec.mountPoint);
    return format;
  }

  private async key(spec: KeySpec, signal?: AbortSignal): Promise<Buffer> {
    let key: Buffer;
    switch (spec.kind) {
      case 'resource':
        key = await this.keys.get(spec.uri, signal);
        break;
      case 'sealed':
        if (!this.sealed) throw new StorageUnavailable('sealed secrets cannot be unsealed by this agent');
        key = await this.sealed.unseal(spec.secret, signal);
        break;
      case 'file':
        try {
          key = await readFile(spec.path);
        } catch (err) {
          throw new DeviceNotFound(`key file ${spec.path}: ${(err as NodeJS.ErrnoException).code ?? 'unreadable'}`);
        }
        break;
      case 'ephemeral':
        throw new InvalidArgument('an ephemeral key is made, not fetched');
    }
    if (key.length === 0) throw new InvalidArgument('the volume key is empty');
    return key;
  }

  // ---- helpers ----

  /** An identical earlier request that is still in place, or a conflict. */
  private async existing(spec: VolumeSpec, dev: ResolvedDevice): Promise<VolumeRecord | undefined> {
    const rec = this.active.get(spec.mountPoint);
    if (rec) {
      const same =
        rec.deviceId === dev.id &&
        rec.ephemeral === (spec.key.kind === 'ephemeral') &&
        rec.integrity === spec.integrity &&
        rec.target === spec.target &&
        (spec.mapperName === undefined || spec.mapperName === rec.mapperName);
      if (!same) throw new VolumeBusy(`${spec.mountPoint} already holds secure volume ${rec.mapperName} of ${rec.device}`);
      if (rec.phase !== 'ready' || !(await this.intact(rec))) throw new VolumeBusy(`secure volume ${rec.mapperName} on ${spec.mountPoint} is not intact; unmount it first`);
      return rec;
    }
    const other = [...this.active.values()].find((r) => r.deviceId === dev.id);
    if (other) throw new VolumeBusy(`${dev.path} is already open as ${other.mapperName} on ${other.mountPoint}`);
    return undefined;
  }

  /** The mapping is active and mounted (or linked) where the record says. */
  private async intact(rec: VolumeRecord): Promise<boolean> {
    const id = await stat(mapperPath(rec.mapperName), { bigint: true }).then((s) => devId(s.rdev), () => undefined);
    if (!id) return false;
    if (rec.target === 'device') return (await readlink(rec.mountPoint).catch(() => undefined)) === mapperPath(rec.mapperName);
    return mountedAt(await readMountinfo(), rec.mountPoint) === id;
  }

  /** Undo whatever part of a volume exists: mount or link, mapping, header, record. */
  private async teardown(rec: VolumeRecord): Promise<void> {
    const mapper = mapperPath(rec.mapperName);
    if (rec.target === 'fileSystem') {
      const id = await stat(mapper, { bigint: true }).then((s) => devId(s.rdev), () => undefined);
      // Unmount everything of ours stacked on the mount point, and nothing else.
      while (id !== undefined && mountedAt(await readMountinfo(), rec.mountPoint) === id) await unmount(this.runner, rec.mountPoint);
    } else await unlinkDevice(mapper, rec.mountPoint);
    await this.cs.close(rec.mapperName);
    await rm(rec.header, { force: true });
    await this.run.remove(rec.mapperName);
  }

  /**
   * Belt and braces after the header checks: the kernel must run exactly our
   * cipher at 4096-byte sectors, with the key in the kernel keyring (never as
   * hex in the dm table).
   */
  private async verifyMapping(rec: VolumeRecord): Promise<void> {
    const dm = await dmFacts(this.runner, rec.mapperName);
    const want = expectedCipher(rec.integrity);
    if (!dm || dm.cipher !== want || dm.sectorSize !== SECTOR_SIZE) {
      throw new HeaderRejected(rec.device, `the opened mapping runs ${dm ? `${dm.cipher} at ${dm.sectorSize}-byte sectors` : 'no crypt target'}, expected ${want} at ${SECTOR_SIZE}`);
    }
    if (!dm.keyInKeyring) throw new StorageUnavailable('the kernel keyring is unavailable, so the volume key would sit in the device-mapper table; refusing');
  }

  private async facts(rec: VolumeRecord, formatted: boolean): Promise<VolumeFacts> {
    const status = (await this.cs.status(rec.mapperName)) ?? {};
    const dm = await dmFacts(this.runner, rec.mapperName);
    return {
      dm,
      mapperName: rec.mapperName,
      device: rec.device,
      mountPoint: rec.mountPoint,
      ephemeral: rec.ephemeral,
      formatted,
      reused: false,
      status: Object.fromEntries(STATUS_FIELDS.filter((f) => status[f] !== undefined).map((f) => [f, status[f]!])),
    };
  }
}

const exists = (path: string): Promise<boolean> => stat(path).then(() => true, () => false);


function checkAborted(signal?: AbortSignal): void {
  if (signal?.aborted) throw new Cancelled('secure mount cancelled; the volume was rolled back');
}
