// offline_fs_kbc: resources from local JSON files that map "repo/type/tag"
// to standard base64 (guest-components /etc/aa-offline_fs_kbc-keys.json and
// …-resources.json). Read on each get, so keys never sit in memory unasked.

import { readFile } from 'node:fs/promises';
import { AgentError, Code } from '../errors.ts';
import { ResourceNotFound, type KeySource, type ResourceUri } from '../resource.ts';

export class OfflineStoreError extends AgentError {
  constructor(message: string) {
    super(Code.FAILED_PRECONDITION, message);
  }
}

export class OfflineKeyStore implements KeySource {
  private readonly files: readonly string[];

  constructor(files: readonly string[]) {
    this.files = files;
  }

  async get(uri: ResourceUri): Promise<Buffer> {
    if (uri.plugin !== 'resource') throw new ResourceNotFound(uri.text);
    const id = `${uri.repository}/${uri.type}/${uri.tag}`;
    for (const file of this.files) {
      let text: string;
      try {
        text = await readFile(file, 'utf8');
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue;
        throw new OfflineStoreError(`offline key store ${file}: ${(err as NodeJS.ErrnoException).code ?? 'unreadable'}`);
      }
      let map: unknown;
      try {
        map = JSON.parse(text);
      } catch {
        throw new OfflineStoreError(`offline key store ${file}: not valid JSON`);
      }
      if (typeof map !== 'object' || map === null || Array.isArray(map)) throw new OfflineStoreError(`offline key store ${file}: expected a JSON object`);
      const value = (map as Record<string, unknown>)[id];
      if (value === undefined) continue;
      if (typeof value !== 'string' || !/^[A-Za-z0-9+/]*={0,2}$/.test(value)) throw new OfflineStoreError(`offline key store ${file}: entry ${id} is not standard base64`);
      return Buffer.from(value, 'base64');
    }
    throw new ResourceNotFound(uri.text);
  }
}
