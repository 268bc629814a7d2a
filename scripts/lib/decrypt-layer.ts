// The child process of scripts/bench-decrypt (f): tee-agent's layer decryptor
// on the first layer of an OCI layout, to a file, as its own process. Bundled
// by the benchmark (scripts/bundle.ts bundleEntry) so it runs the code the
// guest runs. Usage: decrypt-layer DIR TAG KEY.pem OUT; prints its peak RSS.

import { createReadStream, createWriteStream, readFileSync } from 'node:fs';
import { pipeline } from 'node:stream/promises';
import { createLayerDecryptor, decryptionKeys } from '../../agent/src/crypto/index.ts';
import { OciLayout } from '../../agent/src/crypto/oci-layout.ts';

const [dir, tag, key, out] = process.argv.slice(2) as [string, string, string, string];
const layout = new OciLayout(dir);
const manifest = await layout.readJson<{ layers: Array<{ mediaType: string; digest: string; size: number; annotations?: Record<string, string> }> }>(await layout.resolve(tag));
const layer = manifest.layers[0]!;
const d = await createLayerDecryptor(layer, decryptionKeys({ flags: [key] }));
await pipeline(createReadStream(layout.blobPath(layer.digest), { highWaterMark: 1 << 20 }), d.stream, createWriteStream(out));
d.verify();
// VmHWM, not getrusage: ru_maxrss survives execve and would report the parent's peak.
const hwm = /VmHWM:\s+(\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'));
process.stdout.write(JSON.stringify({ maxRssMiB: Math.round(Number(hwm?.[1] ?? 0) / 1024) }) + '\n');
