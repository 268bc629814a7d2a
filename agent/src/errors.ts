// Typed errors. Each capability defines subclasses of AgentError at the
// source of the failure; the transports map `code` to a gRPC/ttrpc status and
// never look at messages.

/** google.rpc.Code values, shared by gRPC and ttrpc. */
export const Code = {
  OK: 0,
  CANCELLED: 1,
  UNKNOWN: 2,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5,
  ALREADY_EXISTS: 6,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9,
  ABORTED: 10,
  OUT_OF_RANGE: 11,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  DATA_LOSS: 15,
  UNAUTHENTICATED: 16,
} as const;

export type Code = (typeof Code)[keyof typeof Code];

export const codeName = (code: number): string =>
  Object.entries(Code).find(([, v]) => v === code)?.[0] ?? `CODE_${code}`;

/**
 * Base of every error the agent raises on purpose. The message must be safe
 * to return to a caller and to log: never put key material, tokens or
 * plaintext in it.
 */
export class AgentError extends Error {
  readonly code: Code;
  constructor(code: Code, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }
}

export class InvalidArgument extends AgentError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(Code.INVALID_ARGUMENT, message, options);
  }
}

export class Unimplemented extends AgentError {
  constructor(what: string) {
    super(Code.UNIMPLEMENTED, `${what} is not implemented by this agent`);
  }
}

export class Cancelled extends AgentError {
  constructor(message = 'call cancelled') {
    super(Code.CANCELLED, message);
  }
}

export class DeadlineExceeded extends AgentError {
  constructor(message = 'deadline exceeded') {
    super(Code.DEADLINE_EXCEEDED, message);
  }
}

/** Status for any thrown value: typed errors keep their code, anything else is INTERNAL. */
export function toStatus(err: unknown): { code: Code; message: string } {
  if (err instanceof AgentError) return { code: err.code, message: err.message };
  // Unexpected errors may carry arbitrary text; return a generic message and
  // leave the detail to the log line, which the caller decides to write.
  return { code: Code.INTERNAL, message: 'internal error' };
}
