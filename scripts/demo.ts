// Demo: start the agent with the development profile, then call it the way
// the kata shim (ttrpc) and the CDH gRPC clients do.

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startAgentProcess } from './lib/agent-process.ts';

const dir = mkdtempSync(join(tmpdir(), 'tee-agent-demo-'));
const step = (s: string): void => void process.stdout.write(`\n== ${s}\n`);

step('starting tee-agent serve (development profile)');
const agent = await startAgentProcess({ dir, configPath: new URL('./dev-profile.toml', import.meta.url).pathname });
console.log(`ready in ${agent.readyMs} ms; gRPC ${agent.grpcAddress}, ttrpc ${agent.ttrpcAddress}`);
try {
  step('grpc.Health over ttrpc (as the kata shim calls it)');
  const tt = await agent.ttrpc();
  console.log('Check   ->', JSON.stringify(await tt.call('grpc.Health', 'Check', { service: '' })));
  console.log('Version ->', JSON.stringify(await tt.call('grpc.Health', 'Version', { service: '' })));

  step('grpc.Health over gRPC');
  console.log('Check   ->', JSON.stringify(await agent.grpcCall('grpc.Health', 'Check', { service: '' })));
} finally {
  step('stopping');
  const code = await agent.stop();
  console.log(`agent exited with ${code}`);
  rmSync(dir, { recursive: true, force: true });
}
