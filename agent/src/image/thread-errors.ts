// Errors across the unpack worker's message port. Structured clone keeps
// only a plain Error, so the worker sends the class name, message and the
// error's own string and number fields, and the pull's side re-creates the
// same AgentError class, which keeps its gRPC code and its `instanceof`.

import * as base from '../errors.ts';
import { AgentError } from '../errors.ts';
import * as image from './errors.ts';

export interface SentError {
  readonly message: string;
  readonly stack?: string;
  /** Own enumerable string and number fields: name, code, expected, limit, … */
  readonly fields: Readonly<Record<string, string | number>>;
}

type ErrorClass = abstract new (...args: never[]) => AgentError;

const CLASSES = new Map<string, ErrorClass>();
for (const mod of [base, image]) {
  for (const v of Object.values(mod)) {
    if (typeof v === 'function' && (v === AgentError || v.prototype instanceof AgentError)) CLASSES.set(v.name, v as ErrorClass);
  }
}

export function sendError(err: unknown): SentError {
  const e = err instanceof Error ? err : new Error(String(err));
  const fields: Record<string, string | number> = { name: e.name };
  for (const [k, v] of Object.entries(e)) if (typeof v === 'string' || typeof v === 'number') fields[k] = v;
  return { message: e.message, ...(e.stack ? { stack: e.stack } : {}), fields };
}

/** The error as it was thrown in the worker: an AgentError of the same class, else a plain Error (reported as INTERNAL). */
export function receiveError(sent: SentError): Error {
  const cls = CLASSES.get(String(sent.fields.name));
  const e: Error = cls && typeof sent.fields.code === 'number' ? (Object.create(cls.prototype) as Error) : new Error();
  Object.defineProperty(e, 'message', { value: sent.message, writable: true, configurable: true });
  if (sent.stack) Object.defineProperty(e, 'stack', { value: sent.stack, writable: true, configurable: true });
  Object.assign(e, sent.fields);
  return e;
}
