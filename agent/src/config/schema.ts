// The config schema: one declarative table that gives the TOML keys, their
// types, defaults and checks. The resolved config type is inferred from it,
// so adding a key here is the only step needed to add a setting.

import { parseAddress, type ListenAddress } from '../server/address.ts';

export class ConfigError extends Error {
  readonly key: string;
  constructor(key: string, message: string) {
    super(`config: ${key}: ${message}`);
    this.key = key;
    this.name = 'ConfigError';
  }
}

export interface Field<T> {
  readonly default: T;
  /** Parse a TOML value (or a cmdline string when fromString is set); throw a message on bad input. */
  parse(value: unknown, key: string): T;
  /** Parse the string form used on the kernel command line. */
  fromString(value: string, key: string): T;
}

const fail = (key: string, msg: string): never => {
  throw new ConfigError(key, msg);
};

export function str(def = ''): Field<string> {
  return {
    default: def,
    parse: (v, key) => (typeof v === 'string' ? v : fail(key, `expected a string, got ${typeof v}`)),
    fromString: (v) => v,
  };
}

export function bool(def: boolean): Field<boolean> {
  const fromString = (v: string, key: string): boolean => {
    if (v === 'true' || v === '1' || v === '') return true;
    if (v === 'false' || v === '0') return false;
    return fail(key, `expected true or false, got ${JSON.stringify(v)}`);
  };
  return {
    default: def,
    parse: (v, key) => (typeof v === 'boolean' ? v : fail(key, `expected a boolean, got ${typeof v}`)),
    fromString,
  };
}

export function int(def: number, min: number, max: number): Field<number> {
  const check = (n: number, key: string): number =>
    Number.isInteger(n) && n >= min && n <= max ? n : fail(key, `expected an integer in [${min}, ${max}], got ${n}`);
  return {
    default: def,
    parse: (v, key) => {
      if (typeof v === 'bigint') return check(Number(v), key);
      return typeof v === 'number' ? check(v, key) : fail(key, `expected an integer, got ${typeof v}`);
    },
    fromString: (v, key) => (/^-?\d+$/.test(v) ? check(Number(v), key) : fail(key, `expected an integer, got ${JSON.stringify(v)}`)),
  };
}

export function oneOf<const T extends string>(values: readonly T[], def: T): Field<T> {
  const check = (v: unknown, key: string): T =>
    typeof v === 'string' && (values as readonly string[]).includes(v)
      ? (v as T)
      : fail(key, `expected one of ${values.join(', ')}, got ${JSON.stringify(v)}`);
  return { default: def, parse: check, fromString: check };
}

export function addresses(def: string[]): Field<readonly ListenAddress[]> {
  const parseAll = (v: unknown, key: string): readonly ListenAddress[] => {
    if (!Array.isArray(v) || !v.every((s) => typeof s === 'string')) return fail(key, 'expected an array of address strings');
    try {
      return Object.freeze(v.map((s: string) => parseAddress(s)));
    } catch (err) {
      return fail(key, (err as Error).message);
    }
  };
  return {
    default: Object.freeze(def.map((s) => parseAddress(s))),
    parse: parseAll,
    fromString: (v, key) => parseAll(v.split(','), key),
  };
}

export const DEFAULT_GRPC = ['tcp://127.0.0.1:50000'];
export const DEFAULT_TTRPC = [
  'unix:///run/confidential-containers/cdh.sock',
  'unix:///run/confidential-containers/attestation-agent/attestation-agent.sock',
];

/** Every section and key of the TOML file. Unknown keys are errors. */
export const schema = {
  listen: {
    grpc: addresses(DEFAULT_GRPC),
    ttrpc: addresses(DEFAULT_TTRPC),
    /** Private unix sockets that vsock bridges forward to. */
    bridge_dir: str('/run/tee-agent'),
  },
  log: {
    level: oneOf(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'], 'info'),
  },
  kbc: {
    name: oneOf(['offline_fs_kbc', 'cc_kbc'], 'offline_fs_kbc'),
    url: str(''),
    /** PEM file of the CA that signs the KBS's HTTPS certificate. */
    cert: str(''),
    /** offline_fs_kbc key store: JSON map "repo/type/tag" -> base64. */
    offline_keys: str('/etc/aa-offline_fs_kbc-keys.json'),
    offline_resources: str('/etc/aa-offline_fs_kbc-resources.json'),
  },
  attestation: {
    tee: oneOf(['auto', 'tdx', 'sample'], 'auto'),
  },
  image: {
    /** Layer store and scratch; tmpfs in the guest, i.e. encrypted memory. */
    work_dir: str('/run/kata-containers/image'),
    /** containers-policy.json: a path or a kbs:/// URI. */
    policy: str(''),
    enable_signature_verification: bool(false),
    /** auth.json: a path or a kbs:/// URI. */
    auth: str(''),
    /** registries.conf subset: a path. */
    registries: str(''),
    /** registries.d directory for simple-signing lookaside. */
    registries_d: str(''),
    max_concurrent_layers: int(3, 1, 32),
  },
  storage: {
    /** dm-integrity on encrypted volumes (kata agent.secure_storage_integrity). */
    integrity: bool(true),
    /** tmpfs directory for LUKS2 headers and volume state records (never a disk). */
    run_dir: str('/run/tee-agent/storage'),
    /** sysfs mount point: deviceId MAJ:MIN resolves through <sysfs>/dev/block/MAJ:MIN/uevent. */
    sysfs: str('/sys'),
  },
  proxy: {
    https_proxy: str(''),
    no_proxy: str(''),
  },
} as const;

export type Schema = typeof schema;
type FieldValue<F> = F extends Field<infer T> ? T : never;

/** The resolved, immutable configuration passed down to every capability. */
export type AgentConfig = {
  readonly [S in keyof Schema]: { readonly [K in keyof Schema[S]]: FieldValue<Schema[S][K]> };
};
