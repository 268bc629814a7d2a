// tee-agent pull: one image into one bundle, the daemon's code path run once.
// Progress goes to stderr; the result is one JSON line on stdout.

import { isAbsolute, resolve } from 'node:path';
import { loadConfig } from '../config/index.ts';
import { createLogger } from '../log.ts';
import { openImageService } from '../api/image-service.ts';
import { createAttestation } from '../attestation/index.ts';
import { parse, UsageError, type Command } from './args.ts';
import { ProgressDisplay } from './progress.ts';

const usage = `Usage: tee-agent pull IMAGE --bundle DIR [options]

Pull IMAGE into DIR/rootfs through the layer store, exactly as the daemon's
PullImage does. Progress goes to stderr; on success one JSON line goes to
stdout: {"manifest_digest", "layers", "bytes", "seconds", ...}.

Options:
  --bundle DIR                  bundle directory (required); DIR/rootfs is created
  --config FILE                 TOML config file (registries, timeouts, limits)
  --auth FILE                   auth.json with registry credentials (config image.auth)
  --insecure-registry HOST[:PORT]
                                reach this registry over plain HTTP (repeatable)
  --platform OS/ARCH[/VARIANT]  platform to pick from multi-platform images (config image.platform)
  --policy FILE                 containers-policy.json; turns signature verification on
                                (config image.policy, image.enable_signature_verification)
  --registries-d DIR            registries.d directory for simple-signing lookaside (config image.registries_d)
  --decryption-key FILE         private key (PEM, DER or JWK) for keys.jwe encrypted layers (repeatable;
                                adds to config image.decryption_keys; CoCo packets use the configured KBS/offline keys)
  --work-dir DIR                layer store (config image.work_dir)
  --cmdline FILE                read kernel parameters from FILE instead of /proc/cmdline
  --log-level L                 fatal|error|warn|info|debug|trace|silent (default warn)
  --no-progress                 no progress display
  -h, --help                    show this help`;

export const pull: Command = {
  name: 'pull',
  usage,
  async run(argv) {
    const { values, positionals } = parse(
      argv,
      {
        bundle: { type: 'string' },
        config: { type: 'string' },
        auth: { type: 'string' },
        'insecure-registry': { type: 'string', multiple: true },
        platform: { type: 'string' },
        policy: { type: 'string' },
        'registries-d': { type: 'string' },
        'decryption-key': { type: 'string', multiple: true },
        'work-dir': { type: 'string' },
        cmdline: { type: 'string' },
        'log-level': { type: 'string' },
        'no-progress': { type: 'boolean' },
      },
      true,
    );
    if (values.help) {
      process.stdout.write(usage + '\n');
      return 0;
    }
    if (positionals.length !== 1) throw new UsageError(positionals.length === 0 ? 'IMAGE is required' : 'exactly one IMAGE');
    if (!values.bundle) throw new UsageError('--bundle DIR is required');
    const insecure = values['insecure-registry'] ?? [];
    for (const h of insecure) if (!/^[A-Za-z0-9.-]+(:\d+)?$|^\[[0-9a-fA-F:]+\](:\d+)?$/.test(h)) throw new UsageError(`--insecure-registry ${JSON.stringify(h)}: expected HOST[:PORT]`);
    const flags = new Map<string, unknown>([['log.level', values['log-level'] ?? 'warn']]);
    if (values.auth) flags.set('image.auth', resolve(values.auth));
    if (values.platform) flags.set('image.platform', values.platform);
    if (values.policy) {
      flags.set('image.policy', resolve(values.policy));
      flags.set('image.enable_signature_verification', true);
    }
    if (values['registries-d']) flags.set('image.registries_d', resolve(values['registries-d']));
    if (values['work-dir']) flags.set('image.work_dir', resolve(values['work-dir']));
    const config = loadConfig({ configPath: values.config, cmdlinePath: values.cmdline, flags });
    const log = createLogger(config.log.level);
    const bundlePath = isAbsolute(values.bundle) ? values.bundle : resolve(values.bundle);

    const attestation = await createAttestation(config, log);
    const image = await openImageService(config, log, attestation.keys, {
      insecureHosts: insecure,
      decryptionKeyFiles: (values['decryption-key'] ?? []).map((f) => resolve(f)),
    });
    const abort = new AbortController();
    const onSignal = (): void => abort.abort();
    process.once('SIGINT', onSignal);
    process.once('SIGTERM', onSignal);
    try {
      const display = values['no-progress'] ? undefined : new ProgressDisplay();
      const r = await image.puller.pull({ image: positionals[0]!, bundlePath }, { signal: abort.signal, log, ...(display ? { onEvent: display.onEvent } : {}) });
      process.stdout.write(
        JSON.stringify({
          manifest_digest: r.manifestDigest,
          ...(r.indexDigest ? { index_digest: r.indexDigest } : {}),
          reference: r.reference,
          layers: r.layers,
          bytes: r.bytes,
          seconds: Math.round(r.seconds * 1000) / 1000,
          bundle: r.bundlePath,
        }) + '\n',
      );
      return 0;
    } finally {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
      await image.close();
      await attestation.close();
    }
  },
};
