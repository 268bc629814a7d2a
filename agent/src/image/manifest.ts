// Manifests, indexes and configs: media types, strict shape checks
// (CVE-2021-41190 ambiguity, schemaVersion, Content-Type agreement), the
// platform choice in an index, and the image config's diff_ids. Parsing
// only; fetching is the registry client's job.

import { checkDigest } from './reference.ts';
import { ManifestRejected } from './registry-errors.ts';

export const MediaType = {
  OciManifest: 'application/vnd.oci.image.manifest.v1+json',
  OciIndex: 'application/vnd.oci.image.index.v1+json',
  DockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  DockerList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  OciConfig: 'application/vnd.oci.image.config.v1+json',
  DockerConfig: 'application/vnd.docker.container.image.v1+json',
} as const;

/** Accept header for manifest GETs: the four types we can read. */
export const MANIFEST_ACCEPT = [MediaType.OciIndex, MediaType.OciManifest, MediaType.DockerList, MediaType.DockerManifest];

/** Manifests and configs larger than this are refused (containers/image iolimits, CVE-2020-1702). */
export const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;
export const MAX_CONFIG_BYTES = 4 * 1024 * 1024;

const INDEX_TYPES = new Set<string>([MediaType.OciIndex, MediaType.DockerList]);
const MANIFEST_TYPES = new Set<string>([MediaType.OciManifest, MediaType.DockerManifest]);
const CONFIG_TYPES = new Set<string>([MediaType.OciConfig, MediaType.DockerConfig]);

export interface Platform {
  readonly os: string;
  readonly architecture: string;
  readonly variant?: string;
}

export interface Descriptor {
  readonly mediaType: string;
  readonly digest: string;
  readonly size: number;
  readonly annotations?: Readonly<Record<string, string>>;
  readonly urls?: readonly string[];
  readonly platform?: Platform;
}

export interface ImageIndex {
  readonly kind: 'index';
  readonly mediaType: string;
  readonly manifests: readonly Descriptor[];
}

export interface ImageManifest {
  readonly kind: 'manifest';
  readonly mediaType: string;
  readonly config: Descriptor;
  readonly layers: readonly Descriptor[];
  readonly annotations?: Readonly<Record<string, string>>;
}

export interface ImageConfig {
  readonly diffIds: readonly string[];
  readonly os?: string;
  readonly architecture?: string;
  readonly variant?: string;
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Strip parameters and case from a Content-Type value. */
function baseType(contentType: string | undefined): string | undefined {
  const t = contentType?.split(';')[0]?.trim().toLowerCase();
  return t ? t : undefined;
}

function stringMap(v: unknown, where: string): Record<string, string> | undefined {
  if (v === undefined || v === null) return undefined;
  if (!isObject(v) || !Object.values(v).every((x) => typeof x === 'string')) throw new ManifestRejected(`${where}: annotations must map strings to strings`);
  return v as Record<string, string>;
}

export function parseDescriptor(v: unknown, where: string): Descriptor {
  if (!isObject(v)) throw new ManifestRejected(`${where}: expected a descriptor object`);
  const { mediaType, digest, size } = v;
  if (typeof mediaType !== 'string' || mediaType === '') throw new ManifestRejected(`${where}: mediaType missing`);
  if (typeof digest !== 'string') throw new ManifestRejected(`${where}: digest missing`);
  try {
    checkDigest(digest);
  } catch (err) {
    throw new ManifestRejected(`${where}: ${(err as Error).message}`);
  }
  if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0) throw new ManifestRejected(`${where}: size must be a non-negative integer`);
  let platform: Platform | undefined;
  if (v.platform !== undefined) {
    const p = v.platform;
    if (!isObject(p) || typeof p.os !== 'string' || typeof p.architecture !== 'string' || (p.variant !== undefined && typeof p.variant !== 'string')) {
      throw new ManifestRejected(`${where}: malformed platform`);
    }
    platform = { os: p.os, architecture: p.architecture, ...(typeof p.variant === 'string' ? { variant: p.variant } : {}) };
  }
  let urls: string[] | undefined;
  if (v.urls !== undefined) {
    if (!Array.isArray(v.urls) || !v.urls.every((u) => typeof u === 'string')) throw new ManifestRejected(`${where}: urls must be strings`);
    urls = v.urls as string[];
  }
  const annotations = stringMap(v.annotations, where);
  return { mediaType, digest, size, ...(annotations ? { annotations } : {}), ...(urls ? { urls } : {}), ...(platform ? { platform } : {}) };
}

/**
 * Parse manifest or index bytes. The type comes from the body's mediaType,
 * else from Content-Type; when both are given they must agree, and a body
 * with both "manifests" and "layers"/"config" is refused as ambiguous
 * (CVE-2021-41190).
 */
export function parseManifest(bytes: Buffer, contentType: string | undefined, where: string): ImageIndex | ImageManifest {
  let doc: unknown;
  try {
    doc = JSON.parse(bytes.toString('utf8'));
  } catch {
    throw new ManifestRejected(`${where}: manifest is not valid JSON`);
  }
  if (!isObject(doc)) throw new ManifestRejected(`${where}: manifest is not a JSON object`);
  if (doc.schemaVersion !== 2) throw new ManifestRejected(`${where}: unsupported schemaVersion ${JSON.stringify(doc.schemaVersion)} (only 2)`);
  const hasManifests = 'manifests' in doc;
  const hasImageFields = 'layers' in doc || 'config' in doc;
  if (hasManifests && hasImageFields) throw new ManifestRejected(`${where}: ambiguous manifest: it has both "manifests" and "layers"/"config"`);
  const bodyType = doc.mediaType;
  if (bodyType !== undefined && typeof bodyType !== 'string') throw new ManifestRejected(`${where}: mediaType must be a string`);
  const headerType = baseType(contentType);
  const known = (t: string | undefined): boolean => t !== undefined && (INDEX_TYPES.has(t) || MANIFEST_TYPES.has(t));
  if (bodyType !== undefined && known(headerType) && headerType !== bodyType) {
    throw new ManifestRejected(`${where}: Content-Type ${headerType} does not match the manifest's mediaType ${bodyType}`);
  }
  const type = bodyType ?? (known(headerType) ? headerType! : undefined);
  if (type === undefined) throw new ManifestRejected(`${where}: manifest has no mediaType and the registry sent Content-Type ${JSON.stringify(headerType ?? '')}`);

  if (INDEX_TYPES.has(type)) {
    if (hasImageFields || !Array.isArray(doc.manifests)) throw new ManifestRejected(`${where}: ${type} must have a "manifests" array and no layers or config`);
    const manifests = doc.manifests.map((d, i) => parseDescriptor(d, `${where}: manifests[${i}]`));
    return { kind: 'index', mediaType: type, manifests };
  }
  if (MANIFEST_TYPES.has(type)) {
    if (hasManifests || !Array.isArray(doc.layers)) throw new ManifestRejected(`${where}: ${type} must have "config" and a "layers" array, and no "manifests"`);
    const config = parseDescriptor(doc.config, `${where}: config`);
    if (!CONFIG_TYPES.has(config.mediaType)) throw new ManifestRejected(`${where}: config media type ${config.mediaType} is not an image config (an artifact, not a container image?)`);
    if (config.size > MAX_CONFIG_BYTES) throw new ManifestRejected(`${where}: config is ${config.size} bytes, more than the ${MAX_CONFIG_BYTES}-byte limit`);
    const layers = doc.layers.map((d, i) => parseDescriptor(d, `${where}: layers[${i}]`));
    const annotations = stringMap(doc.annotations, where);
    return { kind: 'manifest', mediaType: type, config, layers, ...(annotations ? { annotations } : {}) };
  }
  throw new ManifestRejected(`${where}: unsupported manifest type ${JSON.stringify(type).slice(0, 120)}`);
}

/** The config fields the pull needs: rootfs.diff_ids, and the platform for a sanity check. */
export function parseConfig(bytes: Buffer, layerCount: number, where: string): ImageConfig {
  let doc: unknown;
  try {
    doc = JSON.parse(bytes.toString('utf8'));
  } catch {
    throw new ManifestRejected(`${where}: image config is not valid JSON`);
  }
  if (!isObject(doc)) throw new ManifestRejected(`${where}: image config is not a JSON object`);
  const rootfs = doc.rootfs;
  if (!isObject(rootfs) || rootfs.type !== 'layers' || !Array.isArray(rootfs.diff_ids)) throw new ManifestRejected(`${where}: image config has no rootfs of type "layers"`);
  const diffIds = rootfs.diff_ids.map((d, i) => {
    if (typeof d !== 'string') throw new ManifestRejected(`${where}: rootfs.diff_ids[${i}] is not a string`);
    try {
      return checkDigest(d);
    } catch (err) {
      throw new ManifestRejected(`${where}: rootfs.diff_ids[${i}]: ${(err as Error).message}`);
    }
  });
  if (diffIds.length !== layerCount) throw new ManifestRejected(`${where}: the config lists ${diffIds.length} diff_ids for ${layerCount} layers`);
  const s = (v: unknown): string | undefined => (typeof v === 'string' ? v : undefined);
  const os = s(doc.os);
  const architecture = s(doc.architecture);
  const variant = s(doc.variant);
  return { diffIds, ...(os ? { os } : {}), ...(architecture ? { architecture } : {}), ...(variant ? { variant } : {}) };
}

/** "os/arch[/variant]", e.g. "linux/amd64", "linux/arm/v7". */
export function parsePlatform(text: string): Platform {
  const parts = text.split('/');
  if (parts.length < 2 || parts.length > 3 || parts.some((p) => !/^[a-z0-9._-]+$/.test(p))) {
    throw new ManifestRejected(`bad platform ${JSON.stringify(text)}: expected os/architecture[/variant]`);
  }
  const [os, architecture, variant] = parts as [string, string, string | undefined];
  return { os, architecture, ...(variant ? { variant } : {}) };
}

export function formatPlatform(p: Platform): string {
  return `${p.os}/${p.architecture}${p.variant ? `/${p.variant}` : ''}`;
}

/** The platform this process runs on, in OCI terms. */
export function hostPlatform(): Platform {
  const arch: Record<string, string> = { x64: 'amd64', arm64: 'arm64', arm: 'arm', ia32: '386', ppc64: 'ppc64le', s390x: 's390x', riscv64: 'riscv64' };
  return { os: process.platform === 'linux' ? 'linux' : process.platform, architecture: arch[process.arch] ?? process.arch };
}

/** Variants that mean the same thing (image-spec: arm64 without a variant is v8). */
function normVariant(arch: string, variant: string | undefined): string | undefined {
  if (arch === 'arm64' && (variant === undefined || variant === 'v8')) return 'v8';
  if (arch === 'amd64' && (variant === undefined || variant === 'v1')) return 'v1';
  return variant;
}

/**
 * The first manifest in an index for the wanted platform (image-spec: first
 * match wins). With a variant wanted, only that variant matches; without
 * one, the architecture's base variant is preferred, then any.
 */
export function selectPlatform(index: ImageIndex, want: Platform): Descriptor | undefined {
  const candidates = index.manifests.filter((d) => d.platform && d.platform.os === want.os && d.platform.architecture === want.architecture);
  const base = normVariant(want.architecture, want.variant);
  const exact = candidates.find((d) => normVariant(d.platform!.architecture, d.platform!.variant) === base);
  if (exact || want.variant !== undefined) return exact;
  return candidates[0];
}

/** Encrypted layer media types end in "+encrypted" (ocicrypt). */
export const isEncrypted = (mediaType: string): boolean => mediaType.endsWith('+encrypted');
