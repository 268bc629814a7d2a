// grpc.Health: answers for the agent process itself.

import type { Handler } from '../server/table.ts';
import { AGENT_VERSION } from '../version.ts';

export interface CheckRequest {
  service: string;
}

export const healthHandlers = {
  Check: (async () => ({ status: 'SERVING' })) satisfies Handler<CheckRequest, { status: string }>,
  // grpc_version is the kata agent protocol version ("0.0.1" in kata's agent/Makefile).
  Version: (async () => ({ grpc_version: '0.0.1', agent_version: AGENT_VERSION })) satisfies Handler<
    CheckRequest,
    { grpc_version: string; agent_version: string }
  >,
};
