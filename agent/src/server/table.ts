// One table of handlers, served by every transport. A handler gets a decoded
// request and a context, and returns the response object or throws an
// AgentError. Methods in the protos without a handler answer UNIMPLEMENTED.

import type { Logger } from 'pino';
import { Code, codeName, toStatus, Unimplemented, type Code as CodeT } from '../errors.ts';
import type { MethodDefinition } from './protos.ts';

export interface CallContext {
  /** Aborted when the caller cancels, the deadline passes, the connection drops or the daemon stops. */
  readonly signal: AbortSignal;
  readonly transport: 'grpc' | 'ttrpc';
  readonly metadata: ReadonlyMap<string, readonly string[]>;
  readonly log: Logger;
}

export type Handler<Req extends object, Res extends object> = (request: Req, ctx: CallContext) => Promise<Res>;

/** Any handler, whatever its request type; the table stores them like this. */
export type AnyHandler = (request: never, ctx: CallContext) => Promise<object>;

/** Handlers keyed "package.Service" then method name, e.g. handlers['grpc.Health'].Check. */
export type Handlers = Readonly<Record<string, Readonly<Record<string, AnyHandler>>>>;

type ErasedHandler = (request: object, ctx: CallContext) => Promise<object>;

export interface Method {
  readonly service: string;
  readonly name: string;
  /** "/package.Service/Method", the gRPC path. */
  readonly path: string;
  readonly definition: MethodDefinition<object, object>;
  readonly handler: ErasedHandler;
  /** Health checks are polled; log them at debug so they do not drown the rest. */
  readonly logLevel: 'info' | 'debug';
}

export class ServiceTable {
  private readonly byService = new Map<string, Map<string, Method>>();

  constructor(services: Map<string, Map<string, MethodDefinition<object, object>>>, handlers: Handlers) {
    for (const [service, methods] of services) {
      const table = new Map<string, Method>();
      for (const [name, definition] of methods) {
        const given = handlers[service]?.[name];
        // The request was decoded from this method's own message type, which is what the handler declares.
        const handler: ErasedHandler =
          (given as ErasedHandler | undefined) ??
          (async () => {
            throw new Unimplemented(`${service}/${name}`);
          });
        table.set(name, { service, name, path: definition.path, definition, handler, logLevel: service === 'grpc.Health' ? 'debug' : 'info' });
      }
      this.byService.set(service, table);
    }
    for (const [service, methods] of Object.entries(handlers)) {
      for (const name of Object.keys(methods)) {
        if (!this.byService.get(service)?.has(name)) throw new Error(`handler for ${service}/${name} has no method in the protos`);
      }
    }
  }

  lookup(service: string, method: string): Method | undefined {
    return this.byService.get(service)?.get(method);
  }

  services(): ReadonlyMap<string, ReadonlyMap<string, Method>> {
    return this.byService;
  }
}

/**
 * A handler may attach facts for its request log line under this key of the
 * response object; encoders only see the message's own fields.
 */
export const LOG_FIELDS: unique symbol = Symbol('logFields');

/** Returns `response` with `fields` for the request log line. */
export function withLogFields<T extends object>(response: T, fields: Record<string, unknown>): T {
  Object.defineProperty(response, LOG_FIELDS, { value: fields, enumerable: false });
  return response;
}

export interface Outcome {
  readonly code: CodeT;
  readonly message: string;
  readonly response?: object;
}

/**
 * Run one call: the single place that times it, maps errors to status codes
 * and writes the per-request log line.
 */
export async function invoke(method: Method, request: object, ctx: CallContext): Promise<Outcome> {
  const start = performance.now();
  let outcome: Outcome;
  try {
    const response = await method.handler(request, ctx);
    outcome = { code: Code.OK, message: '', response };
  } catch (err) {
    const status = toStatus(err);
    outcome = status;
    if (status.code === Code.INTERNAL) ctx.log.error({ err, method: method.path }, 'handler failed');
  }
  const level = outcome.code === Code.OK ? method.logLevel : 'warn';
  if (ctx.log.isLevelEnabled(level)) {
    const ms = Math.round((performance.now() - start) * 1000) / 1000;
    const extra = (outcome.response as { [LOG_FIELDS]?: Record<string, unknown> } | undefined)?.[LOG_FIELDS];
    const line = { ...extra, method: method.path, transport: ctx.transport, ms, status: codeName(outcome.code) };
    ctx.log[level](outcome.code === Code.OK ? line : { ...line, error: outcome.message }, 'request');
  }
  return outcome;
}
