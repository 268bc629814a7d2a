// tee-agent attest: print this TEE's evidence for some runtime data, the
// same evidence GetEvidence returns. For image maintainers checking a guest.

import { createAttester } from '../attestation/index.ts';
import { loadConfig } from '../config/index.ts';
import { createLogger } from '../log.ts';
import { parse, UsageError, type Command } from './args.ts';

const usage = `Usage: tee-agent attest [options]

Print the TEE evidence (JSON) for RUNTIME DATA on stdout: for tdx
{"cc_eventlog","quote"} from configfs-tsm, for sample {"svn","report_data"}.

Options:
  --tee T              sample or tdx (default: [attestation] tee, auto-detected)
  --runtime-data HEX   up to 64 bytes placed in REPORTDATA (default: empty)
  --config FILE        TOML config file (sysfs/configfs roots, event log path)
  --cmdline FILE       read kernel parameters from FILE instead of /proc/cmdline
  -h, --help           show this help`;

export const attest: Command = {
  name: 'attest',
  usage,
  async run(argv) {
    const { values } = parse(argv, {
      tee: { type: 'string' },
      'runtime-data': { type: 'string' },
      config: { type: 'string' },
      cmdline: { type: 'string' },
    });
    if (values.help) {
      process.stdout.write(usage + '\n');
      return 0;
    }
    if (values.tee !== undefined && values.tee !== 'sample' && values.tee !== 'tdx') throw new UsageError(`--tee must be sample or tdx, got ${JSON.stringify(values.tee)}`);
    const hex = values['runtime-data'] ?? '';
    if (!/^(?:[0-9a-fA-F]{2}){0,64}$/.test(hex)) throw new UsageError('--runtime-data must be hex, at most 64 bytes');
    const config = loadConfig({ configPath: values.config, cmdlinePath: values.cmdline });
    const log = createLogger('warn');
    const attester = await createAttester(config, log, values.tee);
    const evidence = await attester.evidence(Buffer.from(hex, 'hex'));
    process.stdout.write(JSON.stringify({ tee: attester.tee, evidence }, null, 2) + '\n');
    return 0;
  },
};
