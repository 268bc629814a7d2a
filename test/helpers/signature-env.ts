// Shared set-up for signature tests: Debian's docker-registry on loopback,
// the agent's registry client, tiny unique images pushed by skopeo
// (optionally signed by it with --sign-by), verifiers with inline policies,
// and verify() resolving the digests the way a pull does (the manifest by
// tag, and the platform manifest below an index).

import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import assert from 'node:assert/strict';
import { createLogger, type Logger } from '../../agent/src/log.ts';
import { manifestReference, parseReference } from '../../agent/src/image/reference.ts';
import { parseManifest, selectPlatform } from '../../agent/src/image/manifest.ts';
import { RegistryClient } from '../../agent/src/image/registry.ts';
import { signatureSource } from '../../agent/src/image/pull.ts';
import { DEFAULT_HTTP } from '../../agent/src/image/registry-http.ts';
import { SignatureRejected, type RejectReason } from '../../agent/src/signature/errors.ts';
import { SignatureVerifier, type VerifierOptions, type Verdict } from '../../agent/src/signature/verifier.ts';
import type { SignatureSource, VerifyRequest } from '../../agent/src/image/hooks.ts';
import { Code } from '../../agent/src/errors.ts';
import { buildImage, buildIndex, writeTree } from '../fixtures/images.ts';
import type { GpgHome } from '../fixtures/gpg.ts';
import { startRegistry, type TestRegistry } from './registry.ts';
import { removeTree } from './mounts.ts';

const execFileP = promisify(execFile);

export const log = createLogger(process.env.TEST_LOG ?? 'silent');

export interface SignatureEnv {
  readonly work: string;
  readonly reg: TestRegistry;
  readonly client: RegistryClient;
  /** Build and push a tiny image with unique content; returns the manifest digest. */
  pushImage(repo: string, tag: string, opts?: { signBy?: GpgHome; registriesD?: string; host?: string }): Promise<string>;
  /** An image index of two platforms; returns both digests of linux/amd64. */
  pushIndex(repo: string, tag: string): Promise<{ index: string; manifest: string }>;
  source(repo: string, host?: string): SignatureSource;
  verifier(policy: unknown, opts?: Partial<VerifierOptions>): SignatureVerifier;
  /** Verify `image` (what the user asked for) with bytes from `repo` at `host` (default: the image's own). */
  verify(v: SignatureVerifier, image: string, from?: { repo?: string; host?: string; log?: Logger }): Promise<Verdict>;
  close(): Promise<void>;
}

let seq = 0;

export async function startSignatureEnv(): Promise<SignatureEnv> {
  const work = mkdtempSync(join(tmpdir(), 'tee-agent-signature-'));
  const reg = await startRegistry();
  const client = new RegistryClient({ ...DEFAULT_HTTP, retries: 1, backoffMs: 10 }, log);
  const layout = join(work, 'layout');
  const verifiers: SignatureVerifier[] = [];
  // The pull's own view of a repository for the verifier.
  const source = (repo: string, host = reg.host): SignatureSource =>
    signatureSource(client.repository({ registry: host, repository: repo }, { insecure: true }), parseReference(`${host}/${repo}`));

  return {
    work,
    reg,
    client,
    async pushImage(repo, tag, opts = {}) {
      const n = ++seq;
      const dir = writeTree(join(work, `tree-${n}`), [{ type: 'file', path: 'id', content: `${repo}:${tag} #${n} ${Math.random()}\n` }]);
      const img = buildImage(layout, `img-${n}`, [{ dir, compression: 'gzip' }]);
      const args = ['copy', '--quiet', '--dest-tls-verify=false'];
      if (opts.signBy) args.push('--sign-by', opts.signBy.fingerprint);
      // Always a private registries.d, so skopeo never writes to the system's default lookaside.
      const regd = opts.registriesD ?? join(work, 'empty-registries.d');
      mkdirSync(regd, { recursive: true });
      await execFileP('skopeo', ['--registries.d', regd, ...args, `oci:${layout}:img-${n}`, `docker://${opts.host ?? reg.host}/${repo}:${tag}`], { env: opts.signBy?.env ?? process.env });
      return img.manifestDigest;
    },
    async pushIndex(repo, tag) {
      const n = ++seq;
      const tree = (arch: string) => ({ dir: writeTree(join(work, `tree-${n}-${arch}`), [{ type: 'file', path: 'arch', content: `${arch} ${Math.random()}\n` }]), compression: 'gzip' as const });
      const idx = buildIndex(layout, `idx-${n}`, [
        { platform: { os: 'linux', architecture: 'arm64', variant: 'v8' }, layers: [tree('arm64')] },
        { platform: { os: 'linux', architecture: 'amd64' }, layers: [tree('amd64')] },
      ]);
      await reg.push(`oci:${layout}:idx-${n}`, `${repo}:${tag}`, { all: true });
      return { index: idx.indexDigest, manifest: idx.images[1]!.manifestDigest };
    },
    source,
    verifier(policy, opts = {}) {
      const v = new SignatureVerifier({ policy: { kind: 'inline', text: typeof policy === 'string' ? policy : JSON.stringify(policy) }, ...opts });
      verifiers.push(v);
      return v;
    },
    async verify(v, image, from = {}) {
      const ref = parseReference(image);
      const src = source(from.repo ?? ref.repository, from.host ?? (from.repo ? reg.host : ref.registry));
      const top = await src.getManifest(manifestReference(ref));
      assert.ok(top, `${image} exists`);
      const parsed = parseManifest(top.bytes, top.contentType, image);
      const signal = new AbortController().signal;
      let req: VerifyRequest = { reference: ref, source: src, manifestDigest: top.digest, manifest: top.bytes, manifestMediaType: parsed.mediaType, signal, log: from.log ?? log };
      if (parsed.kind === 'index') {
        const pick = selectPlatform(parsed, { os: 'linux', architecture: 'amd64' });
        assert.ok(pick, 'index has linux/amd64');
        const m = await src.getManifest(pick.digest);
        assert.ok(m);
        req = { ...req, manifestDigest: m.digest, manifest: m.bytes, manifestMediaType: pick.mediaType, indexDigest: top.digest };
      }
      return v.evaluate(req);
    },
    async close() {
      for (const v of verifiers) await v.close();
      await client.close();
      await reg.stop();
      removeTree(work);
    },
  };
}

/** assert.rejects predicate: SignatureRejected, PERMISSION_DENIED, with this reason (and message pattern). */
export const rejectedWith = (reason: RejectReason, re?: RegExp) => (err: unknown): boolean => {
  assert.ok(err instanceof SignatureRejected, `expected SignatureRejected, got ${String(err)}`);
  assert.equal(err.code, Code.PERMISSION_DENIED);
  assert.equal(err.reason, reason, err.message);
  if (re) assert.match(err.message, re);
  return true;
};

export function writeRegistriesD(dir: string, files: Record<string, string>): string {
  mkdirSync(dir, { recursive: true });
  for (const [name, text] of Object.entries(files)) writeFileSync(join(dir, name), text);
  return dir;
}
