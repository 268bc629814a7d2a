// Initdata (Trustee kbs/docs/initdata.md): a TOML document whose digest,
// over the exact bytes delivered, the host put into MRCONFIGID. We bind it
// at start and send the same bytes to the KBS as {format:"toml", body}.

import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { parse as parseToml } from 'smol-toml';
import { InvalidInitData } from './errors.ts';

export const INITDATA_ALGORITHMS = ['sha256', 'sha384', 'sha512'] as const;
export type InitDataAlgorithm = (typeof INITDATA_ALGORITHMS)[number];

export interface InitData {
  /** The TOML text exactly as delivered. */
  readonly toml: string;
  readonly algorithm: InitDataAlgorithm;
  readonly digest: Buffer;
  readonly data: Readonly<Record<string, string>>;
}

export function parseInitData(toml: string): InitData {
  let doc: Record<string, unknown>;
  try {
    doc = parseToml(toml) as Record<string, unknown>;
  } catch {
    throw new InvalidInitData('not valid TOML');
  }
  if (typeof doc.version !== 'string') throw new InvalidInitData('missing version');
  const algorithm = doc.algorithm;
  // Only the lowercase names; "sha-256" from the spec prose is rejected upstream too.
  if (typeof algorithm !== 'string' || !(INITDATA_ALGORITHMS as readonly string[]).includes(algorithm)) {
    throw new InvalidInitData(`algorithm must be one of ${INITDATA_ALGORITHMS.join(', ')}`);
  }
  const data = doc.data ?? {};
  if (typeof data !== 'object' || data === null || Array.isArray(data) || !Object.values(data).every((v) => typeof v === 'string')) {
    throw new InvalidInitData('[data] must map names to strings');
  }
  return {
    toml,
    algorithm: algorithm as InitDataAlgorithm,
    digest: createHash(algorithm).update(toml, 'utf8').digest(),
    data: data as Record<string, string>,
  };
}

/** The initdata file, or undefined when there is none (no initdata for this pod). */
export async function loadInitData(path: string): Promise<InitData | undefined> {
  if (!path) return undefined;
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new InvalidInitData(`cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`);
  }
  return parseInitData(text);
}
