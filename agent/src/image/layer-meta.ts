// The sidecar that unpackLayer leaves next to a layer directory
// (`<dir>.layer.json`) and the store keeps beside the layer. It holds what
// Node cannot read back from the directory (opaque markers and xattrs live in
// xattrs, whiteouts need mknod as root) so a flattened copy can be built
// without trusting the layer directory's special files.

import { readFileSync } from 'node:fs';
import { StoreError } from './errors.ts';

export interface EntryMeta {
  mode: number;
  uid: number;
  gid: number;
  /** Seconds since the epoch. */
  mtime: number;
}

export interface LayerMeta {
  version: 1;
  /** Root-relative paths this layer deletes from the layers below it. */
  whiteouts: string[];
  /** Directories that hide the content of the layers below ("" is the root). */
  opaque: string[];
  /** Directories created only as parents of other entries (no entry of their own). */
  implicitDirs: string[];
  /** Kept xattrs of files and directories, values base64. */
  xattrs: { path: string; name: string; value: string }[];
  /** Whiteouts exist as 0/0 character devices and opaque dirs carry trusted.overlay.opaque. */
  overlayReady: boolean;
  /** Metadata of an explicit root entry ("./"). */
  root?: EntryMeta;
  /** Number of tar entries; 0 means the layer changes nothing. */
  entries: number;
}

export const sidecarPath = (dir: string): string => `${dir}.layer.json`;

const strings = (v: unknown): v is string[] => Array.isArray(v) && v.every((s) => typeof s === 'string');

export function readLayerMeta(path: string): LayerMeta {
  let m: Partial<LayerMeta>;
  try {
    m = JSON.parse(readFileSync(path, 'utf8')) as Partial<LayerMeta>;
  } catch (err) {
    throw new StoreError(`layer metadata ${path} unreadable`, { cause: err });
  }
  const ok =
    m.version === 1 &&
    strings(m.whiteouts) &&
    strings(m.opaque) &&
    strings(m.implicitDirs) &&
    Array.isArray(m.xattrs) &&
    typeof m.overlayReady === 'boolean' &&
    typeof m.entries === 'number';
  if (!ok) throw new StoreError(`layer metadata ${path} is malformed`);
  return m as LayerMeta;
}
