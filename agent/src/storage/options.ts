// SecureMount requests → a VolumeSpec. Two schemas are accepted, never mixed:
// the current CDH block-device options (volume_type "block-device") and the
// v0.13 ones (volume_type "BlockDevice"), still sent by older kata agents.
// Unknown keys and bad values are INVALID_ARGUMENT, so a typo never turns
// into a silently different volume.

import { posix } from 'node:path';
import { InvalidArgument } from '../errors.ts';
import { parseResourceUri, type ResourceUri } from '../resource.ts';

export type DeviceSpec =
  | { readonly kind: 'id'; readonly major: number; readonly minor: number }
  | { readonly kind: 'path'; readonly path: string }
  | { readonly kind: 'lvm'; readonly vg: string; readonly lv: string };

export type KeySpec =
  /** A random key made for this volume, kept in agent memory only. */
  | { readonly kind: 'ephemeral' }
  | { readonly kind: 'resource'; readonly uri: ResourceUri }
  | { readonly kind: 'sealed'; readonly secret: string }
  | { readonly kind: 'file'; readonly path: string };

export interface VolumeSpec {
  readonly device: DeviceSpec;
  /** "empty": format (destroys contents). "encrypted": open, or format an all-zero device. */
  readonly source: 'empty' | 'encrypted';
  readonly key: KeySpec;
  readonly integrity: boolean;
  readonly target: 'fileSystem' | 'device';
  readonly filesystem: 'ext4';
  readonly mkfsOptions: readonly string[];
  /** Undefined: a fresh UUID, as upstream CDH does. */
  readonly mapperName: string | undefined;
  readonly mountPoint: string;
}

export interface SecureMountRequest {
  volume_type: string;
  options: Record<string, string>;
  flags: string[];
  mount_point: string;
}

export const VOLUME_TYPE = 'block-device';
export const LEGACY_VOLUME_TYPE = 'BlockDevice';

const CURRENT_KEYS = new Set([
  'deviceId',
  'devicePath',
  'lvmVolume',
  'sourceType',
  'encryptionType',
  'key',
  'dataIntegrity',
  'targetType',
  'filesystemType',
  'mkfsOpts',
  'mapperName',
]);
const LEGACY_KEYS = new Set(['deviceId', 'encryptType', 'encryptKey', 'dataIntegrity']);

const bad = (key: string, value: string, expected: string): never => {
  throw new InvalidArgument(`secure mount option ${key}=${JSON.stringify(value)}: expected ${expected}`);
};

function oneOf<const T extends string>(key: string, value: string, values: readonly T[]): T {
  return (values as readonly string[]).includes(value) ? (value as T) : bad(key, value, values.map((v) => JSON.stringify(v)).join(' or '));
}

export function parseDeviceId(value: string): DeviceSpec {
  const m = /^(\d{1,10}):(\d{1,10})$/.exec(value);
  const major = Number(m?.[1]);
  const minor = Number(m?.[2]);
  if (!m || major > 0xfff || minor > 0xfffff) return bad('deviceId', value, 'MAJOR:MINOR');
  return { kind: 'id', major, minor };
}

/** An absolute, already normal path: no "..", no "//", no trailing slash. */
export function checkAbsolutePath(key: string, value: string): string {
  if (!value.startsWith('/') || value.length > 4096 || value.includes('\0') || posix.normalize(value) !== value || (value !== '/' && value.endsWith('/'))) {
    return bad(key, value, 'a normalised absolute path');
  }
  return value;
}

const LVM_NAME = /^[A-Za-z0-9+_.][A-Za-z0-9+_.-]{0,126}$/;

function parseLvm(value: string): DeviceSpec {
  const [vg = '', lv = '', ...rest] = value.split('/');
  if (rest.length > 0 || !LVM_NAME.test(vg) || !LVM_NAME.test(lv) || vg === '.' || vg === '..' || lv === '.' || lv === '..') {
    return bad('lvmVolume', value, 'VG/LV');
  }
  return { kind: 'lvm', vg, lv };
}

export function parseKey(key: string, value: string): KeySpec {
  if (value.startsWith('sealed.')) return { kind: 'sealed', secret: value };
  if (value.startsWith('file://')) {
    const path = value.slice('file://'.length);
    return { kind: 'file', path: checkAbsolutePath(key, path) };
  }
  if (/^kbs(\+[a-z0-9_-]+)?:\/\//.test(value)) {
    try {
      return { kind: 'resource', uri: parseResourceUri(value) };
    } catch {
      return bad(key, value, 'kbs:///<repository>/<type>/<tag>');
    }
  }
  return bad(key, value, 'a kbs:///…, sealed.… or file://… key reference');
}

function parseBool(key: string, value: string): boolean {
  return oneOf(key, value, ['true', 'false']) === 'true';
}

/** Device-mapper names: what lvm2 and cryptsetup accept, minus anything path-like. */
export function checkMapperName(value: string): string {
  if (!/^[A-Za-z0-9_+-][A-Za-z0-9_.+-]{0,99}$/.test(value) || value === 'control') return bad('mapperName', value, 'letters, digits and _.+- (at most 100)');
  return value;
}

// mkfs.ext4 options a caller may pass. Anything that reads guest files (-d, -l,
// -c, -D) or changes what we format stays out.
const MKFS_WITH_VALUE = new Set(['-O', '-m', '-i', '-I', '-E', '-b', '-L', '-U', '-N', '-T', '-J', '-G', '-g', '-e', '-C']);
const MKFS_FLAGS = new Set(['-j', '-q', '-F', '-v']);
const MKFS_VALUE = /^[A-Za-z0-9_,=^.:+-]{1,200}$/;

export function parseMkfsOptions(value: string): string[] {
  const words = value.split(/\s+/).filter(Boolean);
  const out: string[] = [];
  for (let i = 0; i < words.length; i++) {
    const w = words[i]!;
    if (MKFS_FLAGS.has(w)) {
      if (w !== '-F') out.push(w); // -F is always added
      continue;
    }
    const v = words[i + 1];
    if (!MKFS_WITH_VALUE.has(w) || v === undefined || v.startsWith('-') || !MKFS_VALUE.test(v)) {
      return bad('mkfsOpts', value, `mkfs.ext4 options among ${[...MKFS_WITH_VALUE, ...MKFS_FLAGS].join(' ')}, each value plain`);
    }
    out.push(w, v);
    i++;
  }
  return out;
}

function checkKeys(options: Record<string, string>, allowed: Set<string>, volumeType: string): void {
  for (const [k, v] of Object.entries(options)) {
    if (!allowed.has(k)) throw new InvalidArgument(`secure mount option ${JSON.stringify(k)} is not known for volume_type ${JSON.stringify(volumeType)}`);
    if (typeof v !== 'string') throw new InvalidArgument(`secure mount option ${k}: expected a string`);
  }
}

/** Parse a SecureMount request; `defaultIntegrity` applies when dataIntegrity is absent. */
export function parseSecureMount(req: SecureMountRequest, defaultIntegrity: boolean): VolumeSpec {
  const options = req.options ?? {};
  const mountPoint = req.mount_point ? checkAbsolutePath('mount_point', req.mount_point) : bad('mount_point', '', 'an absolute path');
  if (mountPoint === '/') bad('mount_point', mountPoint, 'a path below /');

  if (req.volume_type === LEGACY_VOLUME_TYPE) return parseLegacy(options, mountPoint, defaultIntegrity);
  if (req.volume_type !== VOLUME_TYPE) {
    throw new InvalidArgument(`volume_type ${JSON.stringify(req.volume_type)} is not supported (expected "${VOLUME_TYPE}")`);
  }
  checkKeys(options, CURRENT_KEYS, VOLUME_TYPE);

  // As upstream: deviceId wins over devicePath.
  let device: DeviceSpec;
  if (options.deviceId !== undefined) device = parseDeviceId(options.deviceId);
  else if (options.devicePath !== undefined) device = { kind: 'path', path: checkAbsolutePath('devicePath', options.devicePath) };
  else if (options.lvmVolume !== undefined) device = parseLvm(options.lvmVolume);
  else throw new InvalidArgument('secure mount needs deviceId, devicePath or lvmVolume');

  const encryption = options.encryptionType;
  if (encryption === undefined) throw new InvalidArgument('secure mount option encryptionType is required');
  if (oneOf('encryptionType', encryption, ['luks2', 'zfs']) === 'zfs') throw new InvalidArgument('secure mount encryptionType "zfs" is not supported by this agent');

  const key: KeySpec = options.key === undefined ? { kind: 'ephemeral' } : parseKey('key', options.key);
  const source = options.sourceType === undefined ? (key.kind === 'ephemeral' ? 'empty' : 'encrypted') : oneOf('sourceType', options.sourceType, ['empty', 'encrypted']);
  if (source === 'encrypted' && key.kind === 'ephemeral') throw new InvalidArgument('sourceType "encrypted" needs a key to open the volume with');

  return {
    device,
    source,
    key,
    integrity: options.dataIntegrity === undefined ? defaultIntegrity : parseBool('dataIntegrity', options.dataIntegrity),
    target: options.targetType === undefined ? 'fileSystem' : oneOf('targetType', options.targetType, ['fileSystem', 'device']),
    filesystem: options.filesystemType === undefined ? 'ext4' : oneOf('filesystemType', options.filesystemType, ['ext4']),
    mkfsOptions: options.mkfsOpts === undefined ? [] : parseMkfsOptions(options.mkfsOpts),
    mapperName: options.mapperName === undefined ? undefined : checkMapperName(options.mapperName),
    mountPoint,
  };
}

/** v0.13: format a fresh volume when encryptKey is absent, open an existing one when present; ext4 always. */
function parseLegacy(options: Record<string, string>, mountPoint: string, defaultIntegrity: boolean): VolumeSpec {
  checkKeys(options, LEGACY_KEYS, LEGACY_VOLUME_TYPE);
  if (options.deviceId === undefined) throw new InvalidArgument('secure mount option deviceId is required');
  if (options.encryptType === undefined) throw new InvalidArgument('secure mount option encryptType is required');
  oneOf('encryptType', options.encryptType, ['LUKS']);
  const key: KeySpec = options.encryptKey === undefined ? { kind: 'ephemeral' } : parseKey('encryptKey', options.encryptKey);
  return {
    device: parseDeviceId(options.deviceId),
    source: key.kind === 'ephemeral' ? 'empty' : 'encrypted',
    key,
    integrity: options.dataIntegrity === undefined ? defaultIntegrity : parseBool('dataIntegrity', options.dataIntegrity),
    target: 'fileSystem',
    filesystem: 'ext4',
    mkfsOptions: [],
    mapperName: undefined,
    mountPoint,
  };
}
