// Just enough of an OCI image layout on disk (image-spec image-layout.md)
// for tee-agent encrypt: read index.json and blobs, write blobs atomically
// under their digest, and tag a manifest in index.json.

import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { copyFile, constants, mkdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { Transform, type Readable, type Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { InvalidArgument } from '../errors.ts';

export const REF_NAME = 'org.opencontainers.image.ref.name';
export const MT_INDEX = 'application/vnd.oci.image.index.v1+json';
export const MT_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
  platform?: unknown;
  [key: string]: unknown;
}

export interface ImageIndex {
  schemaVersion: number;
  mediaType?: string;
  manifests: Descriptor[];
  [key: string]: unknown;
}

/** "oci:DIR[:TAG]" as skopeo writes it. */
export function parseOciReference(text: string): { dir: string; tag?: string } {
  if (!text.startsWith('oci:')) throw new InvalidArgument(`expected oci:DIR[:TAG], got ${JSON.stringify(text)}`);
  const rest = text.slice(4);
  const colon = rest.lastIndexOf(':');
  const [dir, tag] = colon > 0 && !rest.slice(colon).includes('/') ? [rest.slice(0, colon), rest.slice(colon + 1)] : [rest, undefined];
  if (!dir) throw new InvalidArgument(`expected oci:DIR[:TAG], got ${JSON.stringify(text)}`);
  return { dir: resolve(dir), tag: tag || undefined };
}

const DIGEST = /^sha256:[0-9a-f]{64}$/;

export class OciLayout {
  readonly dir: string;

  constructor(dir: string) {
    this.dir = dir;
  }

  blobPath(digest: string): string {
    if (!DIGEST.test(digest)) throw new InvalidArgument(`unsupported or malformed digest ${JSON.stringify(digest)}`);
    return join(this.dir, 'blobs', 'sha256', digest.slice(7));
  }

  async readIndex(): Promise<ImageIndex> {
    let text: string;
    try {
      text = await readFile(join(this.dir, 'index.json'), 'utf8');
    } catch (err) {
      throw new InvalidArgument(`${this.dir} is not an OCI layout: index.json ${(err as NodeJS.ErrnoException).code ?? 'unreadable'}`);
    }
    const index = JSON.parse(text) as ImageIndex;
    if (!Array.isArray(index.manifests)) throw new InvalidArgument(`${this.dir}/index.json has no manifests`);
    return index;
  }

  /** The descriptor tagged `tag`, or the only one when no tag is given. */
  async resolve(tag: string | undefined): Promise<Descriptor> {
    const { manifests } = await this.readIndex();
    const found = tag === undefined ? (manifests.length === 1 ? manifests : []) : manifests.filter((m) => m.annotations?.[REF_NAME] === tag);
    if (found.length !== 1) {
      throw new InvalidArgument(tag === undefined ? `${this.dir} holds ${manifests.length} images; name one with :TAG` : `${this.dir} has no image tagged ${JSON.stringify(tag)}`);
    }
    return found[0]!;
  }

  /** A small JSON blob, checked against its digest. */
  async readJson<T>(desc: Descriptor): Promise<T> {
    const bytes = await readFile(this.blobPath(desc.digest));
    if (`sha256:${createHash('sha256').update(bytes).digest('hex')}` !== desc.digest) throw new InvalidArgument(`blob ${desc.digest} does not match its digest`);
    return JSON.parse(bytes.toString('utf8')) as T;
  }

  openBlob(digest: string): Readable {
    return createReadStream(this.blobPath(digest), { highWaterMark: 1 << 20 });
  }

  private async ensure(): Promise<void> {
    await mkdir(join(this.dir, 'blobs', 'sha256'), { recursive: true });
    try {
      await stat(join(this.dir, 'oci-layout'));
    } catch {
      await writeFile(join(this.dir, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
    }
  }

  async writeJson(value: unknown): Promise<{ digest: string; size: number }> {
    await this.ensure();
    const bytes = Buffer.from(JSON.stringify(value));
    const digest = `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
    await writeFile(this.blobPath(digest), bytes);
    return { digest, size: bytes.length };
  }

  /** Write a blob from a stream: to a temporary name, renamed to its digest once complete. */
  async writeStream(source: Readable, ...through: Array<Transform | Writable>): Promise<{ digest: string; size: number }> {
    await this.ensure();
    const tmp = join(this.dir, 'blobs', 'sha256', `.tmp-${process.pid}-${Math.random().toString(36).slice(2)}`);
    const hash = createHash('sha256');
    let size = 0;
    const measure = new Transform({
      transform(chunk: Buffer, _enc, done) {
        hash.update(chunk);
        size += chunk.length;
        done(null, chunk);
      },
    });
    try {
      await pipeline([source, ...through, measure, createWriteStream(tmp)] as unknown as [Readable, Writable]);
      const digest = `sha256:${hash.digest('hex')}`;
      await rename(tmp, this.blobPath(digest));
      return { digest, size };
    } catch (err) {
      await rm(tmp, { force: true });
      throw err;
    }
  }

  /** Copy a blob from another layout (nothing to do when it is this one). */
  async copyBlobFrom(from: OciLayout, digest: string): Promise<void> {
    if (resolve(from.dir) === resolve(this.dir)) return;
    await this.ensure();
    await copyFile(from.blobPath(digest), this.blobPath(digest), constants.COPYFILE_FICLONE);
  }

  /** Point `tag` at `desc` in index.json (replacing what it pointed at), or add it untagged. */
  async tag(desc: Descriptor, tag: string | undefined): Promise<void> {
    await this.ensure();
    let index: ImageIndex;
    try {
      index = await this.readIndex();
    } catch {
      index = { schemaVersion: 2, mediaType: MT_INDEX, manifests: [] };
    }
    const entry: Descriptor = { ...desc, annotations: { ...(desc.annotations ?? {}) } };
    if (tag !== undefined) entry.annotations![REF_NAME] = tag;
    else delete entry.annotations![REF_NAME];
    if (Object.keys(entry.annotations!).length === 0) delete entry.annotations;
    index.manifests = index.manifests.filter((m) => tag === undefined || m.annotations?.[REF_NAME] !== tag);
    index.manifests.push(entry);
    const tmp = join(this.dir, `.index.json.tmp-${process.pid}`);
    await writeFile(tmp, JSON.stringify(index));
    await rename(tmp, join(this.dir, 'index.json'));
  }
}
