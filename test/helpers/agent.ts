// The daemon as a child process, for tests: see scripts/lib/agent-process.ts.
export { startAgentProcess as startAgent, grpcCall, AGENT_BIN, type AgentProcess, type StartOptions } from '../../scripts/lib/agent-process.ts';
