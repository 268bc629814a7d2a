// api/: the handler table. Each handler decodes nothing itself (the transport
// did), calls one capability function and returns the response message.
// Capabilities are built here from the resolved config, once.

import type { Logger } from 'pino';
import type { AgentConfig } from '../config/index.ts';
import type { Handlers } from '../server/table.ts';
import { healthHandlers } from './health.ts';

export interface Api {
  readonly handlers: Handlers;
  /** Release what the capabilities hold (mounts, keys, sessions). */
  close(): Promise<void>;
}

export async function createApi(_config: AgentConfig, _log: Logger): Promise<Api> {
  return {
    handlers: {
      'grpc.Health': healthHandlers,
    },
    close: async () => {},
  };
}
