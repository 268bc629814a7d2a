// Loads our .proto files once: the service definitions used by both
// transports, and the ttrpc envelope codec.

import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import protobuf from 'protobufjs';
import { fromJSON, type PackageDefinition, type MethodDefinition } from '@grpc/proto-loader';

/** How messages look to handlers: field names as in the .proto, bytes as Buffer, enums as names. */
export const LOADER_OPTIONS = {
  keepCase: true,
  longs: Number,
  enums: String,
  bytes: Buffer,
  defaults: true,
  oneofs: true,
} as const;

function protosDir(): string {
  // Source tree (agent/src/server/) or a bundle with protos/ beside it.
  for (const rel of ['../../../protos/', './protos/']) {
    const dir = fileURLToPath(new URL(rel, import.meta.url));
    if (existsSync(`${dir}ttrpc.proto`)) return dir;
  }
  throw new Error('protos directory not found next to the agent');
}

export interface Protos {
  readonly root: protobuf.Root;
  readonly definition: PackageDefinition;
  readonly envelope: {
    readonly Request: protobuf.Type;
    readonly Response: protobuf.Type;
  };
}

let cached: Protos | undefined;

export function loadProtos(): Protos {
  if (cached) return cached;
  const dir = protosDir();
  const root = new protobuf.Root();
  for (const name of readdirSync(dir).filter((f) => f.endsWith('.proto')).sort()) {
    protobuf.parse(readFileSync(dir + name, 'utf8'), root, { keepCase: true });
  }
  root.resolveAll();
  // The envelope is not a service; keep it out of the served definition.
  const served = root.toJSON();
  const nested = served.nested as Record<string, unknown>;
  delete nested['ttrpc'];
  cached = {
    root,
    definition: fromJSON(served, LOADER_OPTIONS),
    envelope: {
      Request: root.lookupType('ttrpc.Request'),
      Response: root.lookupType('ttrpc.Response'),
    },
  };
  return cached;
}

export type { MethodDefinition };

/** Every method in the definition, keyed "package.Service" then method name. Message types are skipped. */
export function serviceMethods(definition: PackageDefinition): Map<string, Map<string, MethodDefinition<object, object>>> {
  const out = new Map<string, Map<string, MethodDefinition<object, object>>>();
  for (const [name, def] of Object.entries(definition)) {
    if ('format' in def) continue;
    out.set(name, new Map(Object.entries(def as Record<string, MethodDefinition<object, object>>)));
  }
  return out;
}
