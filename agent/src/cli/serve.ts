// tee-agent serve: the daemon.

import { flushCompileCache } from 'node:module';
import { loadConfig, type AgentConfig } from '../config/index.ts';
import { startDaemon } from '../daemon.ts';
import { exposedGc } from '../gc.ts';
import { createLogger } from '../log.ts';
import { parse, type Command } from './args.ts';

const usage = `Usage: tee-agent serve [options]

Run the agent: CDH, attestation-agent and kata image services over gRPC and ttrpc.

Options:
  --grpc ADDR      gRPC listen address (repeatable; replaces the defaults; "none" for no gRPC)
                   default tcp://127.0.0.1:50000
  --ttrpc ADDR     ttrpc listen address (repeatable; replaces the defaults; "none" for no ttrpc)
                   default unix:///run/confidential-containers/cdh.sock and
                   unix:///run/confidential-containers/attestation-agent/attestation-agent.sock
  --config FILE    TOML config file
  --work-dir DIR   image layer store and scratch (config image.work_dir)
  --cmdline FILE   read kernel parameters from FILE instead of /proc/cmdline
  --log-level L    fatal|error|warn|info|debug|trace|silent (config log.level)
  -h, --help       show this help

ADDR is unix://PATH, tcp://HOST:PORT or vsock://CID:PORT (vsock through a socat bridge).
Precedence: flags > config file > kernel cmdline > defaults.`;

export const serve: Command = {
  name: 'serve',
  usage,
  async run(argv) {
    const { values } = parse(argv, {
      grpc: { type: 'string', multiple: true },
      ttrpc: { type: 'string', multiple: true },
      config: { type: 'string' },
      'work-dir': { type: 'string' },
      cmdline: { type: 'string' },
      'log-level': { type: 'string' },
    });
    if (values.help) {
      process.stdout.write(usage + '\n');
      return 0;
    }
    const flags = new Map<string, unknown>();
    const list = (v: string[]): string[] => (v.length === 1 && v[0] === 'none' ? [] : v);
    if (values.grpc) flags.set('listen.grpc', list(values.grpc));
    if (values.ttrpc) flags.set('listen.ttrpc', list(values.ttrpc));
    if (values['work-dir']) flags.set('image.work_dir', values['work-dir']);
    if (values['log-level']) flags.set('log.level', values['log-level']);
    const config: AgentConfig = loadConfig({ configPath: values.config, cmdlinePath: values.cmdline, flags });
    const log = createLogger(config.log.level);
    // Signal handlers go in before the daemon starts, so a SIGTERM right after "ready" is graceful.
    let onSignal: (signal: NodeJS.Signals) => void = () => {};
    const stopped = new Promise<NodeJS.Signals>((resolve) => (onSignal = resolve));
    process.once('SIGTERM', onSignal);
    process.once('SIGINT', onSignal);
    const daemon = await startDaemon(config, log);
    // "ready" is what supervisors and tests wait for: logged even when the level is above info.
    const announce = config.log.level === 'silent' ? log : log.child({}, { level: 'info' });
    announce.info({ grpc: daemon.addresses.grpc, ttrpc: daemon.addresses.ttrpc, startup_ms: Math.round(performance.now()) }, 'ready');
    collectStartupGarbage();
    // A daemon runs until shutdown: write the compile cache (agent/bin/tee-agent.js) now, not at exit.
    flushCompileCache();
    log.info({ signal: await stopped }, 'shutting down');
    await daemon.stop();
    log.info('stopped');
    return 0;
  },
};

/**
 * One full GC once serving. V8 does not collect while a process is idle, so
 * the garbage of start-up (config and proto parsing, module initialisation)
 * would otherwise stay resident for the daemon's whole life.
 */
function collectStartupGarbage(): void {
  const gc = exposedGc();
  setImmediate(() => gc?.());
}
