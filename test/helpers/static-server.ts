// A plain HTTP file server on loopback for lookaside storage tests: GET
// serves files below a directory (404 when absent), and a test can make
// every answer a given status. Requests are counted by path.

import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { readFile } from 'node:fs/promises';
import { join, normalize } from 'node:path';

export interface StaticServer {
  readonly url: string;
  readonly requests: string[];
  /** Answer every request with this status (undefined: serve files). */
  failWith: number | undefined;
  close(): Promise<void>;
}

export async function startStaticServer(root: string): Promise<StaticServer> {
  const state: { failWith: number | undefined; requests: string[] } = { failWith: undefined, requests: [] };
  const server: Server = createServer((req, res) => {
    const path = decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname);
    state.requests.push(path);
    if (state.failWith !== undefined) {
      res.writeHead(state.failWith).end();
      return;
    }
    const file = normalize(join(root, path));
    if (req.method !== 'GET' || !file.startsWith(root)) {
      res.writeHead(400).end();
      return;
    }
    readFile(file).then(
      (bytes) => res.writeHead(200, { 'content-type': 'application/octet-stream' }).end(bytes),
      () => res.writeHead(404).end(),
    );
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    requests: state.requests,
    get failWith() {
      return state.failWith;
    },
    set failWith(v) {
      state.failWith = v;
    },
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
