// tee-agent encrypt: the image maintainers' command to encrypt layers of an
// OCI layout for JWE recipients and/or KBS-held KEKs (CoCo annotation packet).

import { readFile } from 'node:fs/promises';
import { DEFAULT_CHUNK_SIZE, MAX_CHUNK_SIZE, MIN_CHUNK_SIZE } from '../crypto/ciphers/gcm-stream.ts';
import { encryptImage } from '../crypto/encrypt-image.ts';
import type { KbsRecipient } from '../crypto/encrypt-layer.ts';
import { parsePublicKey, readKeyFile, type PublicRecipientKey } from '../crypto/keys.ts';
import { parseOciReference } from '../crypto/oci-layout.ts';
import { CIPHER_CTR_HMAC, CIPHER_GCM_STREAM, type CipherName } from '../crypto/options.ts';
import { parseResourceUri } from '../resource.ts';
import { parse, UsageError, type Command } from './args.ts';

const usage = `Usage: tee-agent encrypt --input oci:DIR[:TAG] --output oci:DIR[:TAG] --recipient R [options]

Encrypt the layers of an image in an OCI layout, ocicrypt-compatibly, and write
the result (encrypted layer blobs, rewritten manifest) to an OCI layout that
skopeo can push: skopeo copy oci:DIR:TAG docker://REGISTRY/IMAGE:TAG

Options:
  --input oci:DIR[:TAG]    the plain image (TAG may be omitted when DIR holds one image)
  --output oci:DIR[:TAG]   where to write (may be the input layout; TAG defaults to the input's)
  --recipient R            repeatable; R is one of
                             jwe:PUB        a public key or certificate (PEM, DER or JWK) for keys.jwe
                             kbs:///R/T/G   a KEK held by the KBS, for the CoCo annotation packet
                                            (keys.provider.attestation-agent); needs --kek
  --kek FILE               the 32-byte KEK of a kbs: recipient (raw, or its standard base64);
                           repeatable in the order of the kbs: recipients, or once for all of them
  --cipher C               ctr-hmac (AES_256_CTR_HMAC_SHA256, readable by skopeo/containerd/image-rs;
                           the default) or gcm-stream (AES_256_GCM_STREAM, tee-agent only,
                           authenticated per chunk: docs/aes-256-gcm-stream.md)
  --layers LIST            comma-separated layer indexes, 0-based, negative from the end
                           (as skopeo --encrypt-layer); default: every layer
  --chunk-size BYTES       gcm-stream chunk size, ${MIN_CHUNK_SIZE}..${MAX_CHUNK_SIZE} (default ${DEFAULT_CHUNK_SIZE})
  -h, --help               show this help

Progress goes to stderr; the new manifest (or index) digest goes to stdout.`;

async function readKek(path: string): Promise<Buffer> {
  const bytes = await readKeyFile(path);
  if (bytes.length === 32) return bytes;
  const text = bytes.toString('ascii').trim();
  const decoded = /^[A-Za-z0-9+/]{43}=$/.test(text) ? Buffer.from(text, 'base64') : undefined;
  bytes.fill(0);
  if (decoded?.length === 32) return decoded;
  throw new UsageError(`--kek ${path}: expected 32 raw bytes or their standard base64`);
}

function parseLayers(text: string | undefined): number[] | undefined {
  if (text === undefined) return undefined;
  return text.split(',').map((s) => {
    if (!/^-?\d+$/.test(s.trim())) throw new UsageError(`--layers: ${JSON.stringify(s)} is not an integer`);
    return Number(s);
  });
}

export const encrypt: Command = {
  name: 'encrypt',
  usage,
  async run(argv) {
    const { values } = parse(argv, {
      input: { type: 'string' },
      output: { type: 'string' },
      recipient: { type: 'string', multiple: true },
      kek: { type: 'string', multiple: true },
      cipher: { type: 'string' },
      layers: { type: 'string' },
      'chunk-size': { type: 'string' },
    });
    if (values.help) {
      process.stdout.write(usage + '\n');
      return 0;
    }
    if (!values.input || !values.output) throw new UsageError('--input and --output are required');
    const recipients = values.recipient ?? [];
    if (recipients.length === 0) throw new UsageError('at least one --recipient is required');
    const ciphers: Record<string, CipherName> = { 'ctr-hmac': CIPHER_CTR_HMAC, 'gcm-stream': CIPHER_GCM_STREAM };
    const cipher = ciphers[values.cipher ?? 'ctr-hmac'];
    if (!cipher) throw new UsageError(`--cipher must be ctr-hmac or gcm-stream, got ${JSON.stringify(values.cipher)}`);
    const chunkSize = values['chunk-size'] === undefined ? DEFAULT_CHUNK_SIZE : Number(values['chunk-size']);
    if (!Number.isInteger(chunkSize) || chunkSize < MIN_CHUNK_SIZE || chunkSize > MAX_CHUNK_SIZE) throw new UsageError(`--chunk-size must be an integer in [${MIN_CHUNK_SIZE}, ${MAX_CHUNK_SIZE}]`);
    let input, output;
    try {
      input = parseOciReference(values.input);
      output = parseOciReference(values.output);
    } catch (err) {
      throw new UsageError((err as Error).message);
    }

    const jwe: PublicRecipientKey[] = [];
    const kids: string[] = [];
    for (const r of recipients) {
      if (r.startsWith('jwe:')) jwe.push(parsePublicKey(await readKeyFile(r.slice(4)), r.slice(4)));
      else if (r.startsWith('kbs:')) {
        const kid = r.startsWith('kbs://') ? r : `kbs:///${r.slice(4).replace(/^\/+/, '')}`;
        try {
          kids.push(parseResourceUri(kid).text);
        } catch (err) {
          throw new UsageError(`--recipient ${r}: ${(err as Error).message}`);
        }
      } else throw new UsageError(`--recipient ${JSON.stringify(r)}: expected jwe:FILE or kbs:///REPO/TYPE/TAG`);
    }
    const kekFiles = values.kek ?? [];
    if (kids.length > 0 && kekFiles.length !== kids.length && kekFiles.length !== 1) {
      throw new UsageError(`${kids.length} kbs: recipient(s) need one --kek each, or one --kek for all`);
    }
    if (kids.length === 0 && kekFiles.length > 0) throw new UsageError('--kek is only for kbs: recipients');
    const keks = await Promise.all(kekFiles.map(readKek));
    const kbs: KbsRecipient[] = kids.map((kid, i) => ({ kid, kek: keks[keks.length === 1 ? 0 : i]! }));
    try {
      const result = await encryptImage({
        input,
        output,
        recipients: { jwe, kbs },
        cipher,
        layers: parseLayers(values.layers),
        chunkSize,
        progress: (line) => process.stderr.write(`${line}\n`),
      });
      process.stderr.write(`encrypted ${result.encryptedLayers} layer(s); wrote ${values.output}\n`);
      process.stdout.write(`${result.digest}\n`);
      return 0;
    } finally {
      for (const k of keks) k.fill(0);
    }
  },
};
