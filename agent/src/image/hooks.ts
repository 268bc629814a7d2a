// The two seams of the pull that other capabilities fill: signature
// verification (signature/, before anything but the manifest is fetched) and
// layer decryption (crypto/, between the descriptor digest check and
// decompression). The pull defines what it needs; api/index.ts passes the
// implementations in.

import type { Transform } from 'node:stream';
import type { Logger } from 'pino';
import type { Descriptor } from './manifest.ts';
import type { ImageReference } from './reference.ts';
import type { FetchedManifest } from './registry.ts';
import type { HttpResponse } from './registry-http.ts';

/**
 * Registry access for signature material, bound to the repository the image
 * is being pulled from (a mirror, when one answered) with the same
 * credentials, connections and retry rules as the pull.
 */
export interface SignatureSource {
  /** The repository the manifest came from. */
  readonly reference: ImageReference;
  /** A manifest by tag or digest (e.g. cosign's "sha256-<hex>.sig"), verified by its bytes; undefined on 404. */
  getManifest(tagOrDigest: string, signal?: AbortSignal): Promise<FetchedManifest | undefined>;
  /** A small blob read whole, size- and digest-checked, refused above `max` bytes. */
  getBlob(descriptor: Pick<Descriptor, 'digest' | 'size'>, max: number, signal?: AbortSignal): Promise<Buffer>;
  /** Any other GET on the registry ("/v2/", "/extensions/v2/<repo>/signatures/<digest>"); undefined on 404. */
  fetch(path: string, opts: { accept?: string; max: number; signal?: AbortSignal }): Promise<{ bytes: Buffer; headers: HttpResponse['headers'] } | undefined>;
}

export interface VerifyRequest {
  /**
   * The fully qualified name the user asked for: what the policy scope and
   * signed identities are matched against, never the mirror's name.
   */
  readonly reference: ImageReference;
  /** The platform manifest's digest, computed from its bytes. */
  readonly manifestDigest: string;
  /** The manifest bytes exactly as fetched. */
  readonly manifest: Buffer;
  readonly manifestMediaType: string;
  /** When the reference resolved through an index: the index digest (cosign may have signed either). */
  readonly indexDigest?: string;
  /** Where the manifest came from, for fetching signatures. */
  readonly source: SignatureSource;
  readonly signal: AbortSignal;
  readonly log: Logger;
}

/**
 * Decides whether an image may be pulled, by policy and signatures. Runs
 * after the manifest is fetched and digest-checked and before the config or
 * any layer is fetched. Resolve to allow; throw an AgentError with
 * PERMISSION_DENIED (e.g. signature/'s PolicyDenied) to refuse.
 */
export interface ImageVerifier {
  verify(request: VerifyRequest): Promise<void>;
}

export interface EncryptedLayer {
  /** The layer's descriptor as in the manifest: mediaType ends in "+encrypted"; annotations hold the wrapped keys. */
  readonly descriptor: Descriptor;
  /** Position in the manifest, for messages. */
  readonly index: number;
  /** Canonical image reference, for messages and logs. */
  readonly image: string;
  /** The layer's diff_id from the config; known when decrypting, not when checking keys. */
  readonly diffId?: string;
}

export interface DecryptedLayer {
  /**
   * Ciphertext in (already checked against the descriptor digest as it
   * streams), plaintext out. It must fail, at the latest in its flush, when
   * authentication fails; the pull then rolls the layer back, so nothing
   * unauthenticated becomes visible.
   */
  readonly stream: Transform;
  /** The plaintext media type, e.g. "application/vnd.oci.image.layer.v1.tar+gzip". */
  readonly mediaType: string;
}

/**
 * A layer's key, proven by LayerDecryptor.check and held for one pull, so
 * the pull unwraps (and fetches from a KBS) each layer key once.
 */
export interface LayerKey {
  /** Set up decryption of the layer; callable again when a download restarts. */
  open(layer: EncryptedLayer, signal: AbortSignal): Promise<DecryptedLayer>;
  /** Zero the key. The pull calls this when it ends, whether or not open() was called. */
  dispose(): void;
}

/**
 * Decrypts ocicrypt layers. Throws an AgentError with FAILED_PRECONDITION
 * (e.g. crypto/'s NoKeyForLayer) when no configured key unwraps the layer.
 */
export interface LayerDecryptor {
  /**
   * Prove that a configured key opens the layer, and keep it for this pull.
   * The pull calls this for every encrypted layer before fetching any, so a
   * missing key fails fast, and so a layer already in the store (decrypted
   * by an earlier pull) is never handed out to a caller without the key.
   */
  check(layer: EncryptedLayer, signal: AbortSignal): Promise<LayerKey>;
}
