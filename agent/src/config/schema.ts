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

/** A list of strings: a TOML array, or comma-separated on the kernel command line. */
export function strings(def: readonly string[] = []): Field<readonly string[]> {
  const check = (v: unknown, key: string): readonly string[] =>
    Array.isArray(v) && v.every((s) => typeof s === 'string') ? Object.freeze([...v]) : fail(key, 'expected an array of strings');
  return { default: Object.freeze([...def]), parse: check, fromString: (v, key) => check(v.split(',').filter((s) => s !== ''), key) };
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
    /** Ephemeral TEE key the KBS wraps resources to (guest-components tee_key_algorithm). */
    tee_key_algorithm: oneOf(['ECDH-ES+A256KW-P256', 'ECDH-ES+A256KW-P521', 'RSA-OAEP-256'], 'ECDH-ES+A256KW-P256'),
    /** Bound on each HTTP exchange with the KBS (connect, headers and body). */
    timeout_ms: int(10_000, 50, 600_000),
    /** Attempts per KBS operation when the KBS is unreachable, slow or answers 5xx. */
    retries: int(5, 1, 20),
    retry_delay_ms: int(1000, 0, 60_000),
    /** Attempts per resource when the KBS answers 401 (each one re-attests). */
    resource_attempts: int(3, 1, 10),
  },
  attestation: {
    tee: oneOf(['auto', 'tdx', 'sample'], 'auto'),
    /** Roots of the kernel interfaces; tests point them at a fake tree. */
    sysfs_root: str('/sys'),
    configfs_root: str('/sys/kernel/config'),
    /** AA event log (AAEL, TCG2 encoding); ExtendRuntimeMeasurement answers NOT_ENABLED when off. */
    eventlog: bool(true),
    eventlog_path: str('/run/attestation-agent/eventlog'),
    /** PCR used when ExtendRuntimeMeasurement names none (17 maps to RTMR3). */
    eventlog_pcr: int(17, 0, 63),
    /** Initdata TOML written by kata-agent; bound to MRCONFIGID at start and sent to the KBS. */
    initdata: str('/run/confidential-containers/initdata/initdata.toml'),
    /** Sealed-secret verification keys named by a kid that is not a resource URI. */
    sealed_secret_keys: str('/run/confidential-containers/cdh/sealed-secret'),
  },
  image: {
    /** Layer store and scratch; tmpfs in the guest, i.e. encrypted memory. */
    work_dir: str('/run/kata-containers/image'),
    /** containers-policy.json: a path or a kbs:/// URI. */
    policy: str(''),
    /** containers-policy.json text inline, instead of policy. */
    policy_inline: str(''),
    enable_signature_verification: bool(false),
    /** auth.json: a path or a kbs:/// URI. */
    auth: str(''),
    /** registries.conf subset: a path. */
    registries: str(''),
    /** registries.d directory for simple-signing lookaside. */
    registries_d: str(''),
    max_concurrent_layers: int(3, 1, 32),
    /** os/architecture[/variant] picked from multi-platform indexes; empty: the host's (linux/amd64 in the TDX guest). */
    platform: str(''),
    /** kata grpc.Image/PullImage puts bundles in <bundle_base>/<container_id>. */
    bundle_base: str('/run/kata-containers'),
    /** Bundle rootfs: "overlay" (overlayfs over the layer dirs), "copy" (flattened), "auto" (overlay where it works). */
    bundle_mode: oneOf(['auto', 'overlay', 'copy'], 'auto'),
    /** kata's built-in pause bundle (config.json, rootfs/pause) for sandbox containers. */
    pause_bundle: str('/pause_bundle'),
    /** Caps per layer against hostile archives. */
    max_layer_entries: int(1_000_000, 1, Number.MAX_SAFE_INTEGER),
    max_file_size: int(8 * 1024 ** 3, 0, Number.MAX_SAFE_INTEGER),
    /** Decompressed bytes of one layer (and of its files together). */
    max_layer_bytes: int(16 * 1024 ** 3, 0, Number.MAX_SAFE_INTEGER),
    /** Decompressed:compressed, checked past 16 MiB of output; gzip never exceeds ~1032:1, zstd can. */
    max_decompression_ratio: int(1100, 1, Number.MAX_SAFE_INTEGER),
    /** Private keys for JWE-wrapped layer keys: PEM, DER or JWK files, or kbs:/// URIs of such keys. */
    decryption_keys: strings([]),
    /** Also hash AES_256_GCM_STREAM layers against their private digest (its AEAD already authenticates them). */
    verify_gcm_stream_digest: bool(false),
  },
  registry: {
    /** PEM file of extra CA certificates trusted for registries, added to the system roots. */
    ca_bundle: str(''),
    /** Registries ("host[:port]") reached over plain HTTP; registries.conf's insecure does the same per prefix. */
    insecure: strings([]),
    connect_timeout_ms: int(10_000, 100, 600_000),
    /** Longest silence while waiting for headers or between body chunks. */
    idle_timeout_ms: int(30_000, 100, 3_600_000),
    /** A transfer slower than low_speed_bytes per second over a whole low_speed_window_ms fails (0: off). */
    low_speed_bytes: int(1024, 0, 1 << 30),
    low_speed_window_ms: int(30_000, 100, 3_600_000),
    /** Extra attempts after a transient failure (network, 5xx, 429, cut body). */
    retries: int(4, 0, 20),
    backoff_ms: int(250, 1, 60_000),
    /** Longest wait between attempts; a longer Retry-After fails the request. */
    max_backoff_ms: int(30_000, 1, 600_000),
  },
  storage: {
    /** dm-integrity on encrypted volumes (kata agent.secure_storage_integrity). */
    integrity: bool(true),
    /** tmpfs directory for LUKS2 headers and volume state records (never a disk). */
    run_dir: str('/run/tee-agent/storage'),
    /** sysfs mount point: deviceId MAJ:MIN resolves through <sysfs>/dev/block/MAJ:MIN/uevent. */
    sysfs: str('/sys'),
  },
  /** Proxies for registry and lookaside requests (kata agent.https_proxy, agent.http_proxy, agent.no_proxy). */
  proxy: {
    https_proxy: str(''),
    http_proxy: str(''),
    no_proxy: str(''),
  },
} as const;

export type Schema = typeof schema;
type FieldValue<F> = F extends Field<infer T> ? T : never;

/** The resolved, immutable configuration passed down to every capability. */
export type AgentConfig = {
  readonly [S in keyof Schema]: { readonly [K in keyof Schema[S]]: FieldValue<Schema[S][K]> };
};
