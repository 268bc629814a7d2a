// What verification needs from the repository an image is pulled from (the
// mirror when there is one). image/registry.ts's Repository has this shape,
// so the pull passes its repository handle straight in.

export interface SourceManifest {
  readonly bytes: Buffer;
  /** Digest computed from the bytes by the client. */
  readonly digest: string;
  readonly contentType?: string | undefined;
}

export interface SignatureSource {
  /** Registry as written in references, for messages: "quay.io", "127.0.0.1:5000". */
  readonly registry: string;
  /** Repository path: "ns/app". */
  readonly name: string;
  /** A manifest by tag or digest; rejects with an AgentError of code NOT_FOUND when there is none. */
  getManifest(reference: string, signal?: AbortSignal): Promise<SourceManifest>;
  /** A small blob read whole, its size and digest checked against the descriptor. */
  getBlob(desc: { readonly digest: string; readonly size: number }, max: number, signal?: AbortSignal): Promise<Buffer>;
  /** Another GET below the registry root (/v2/, extensions); undefined on 404. */
  fetchBytes(
    path: string,
    opts: { accept?: string; max: number; signal?: AbortSignal },
  ): Promise<{ bytes: Buffer; headers: Readonly<Record<string, string | string[] | undefined>> } | undefined>;
}

/** Signatures, manifests of signatures and lookaside files above this size are refused (containers/image iolimits). */
export const MAX_SIGNATURE_BYTES = 4 * 1024 * 1024;
/** More signatures than this for one digest are not read: a hostile store cannot keep us busy. */
export const MAX_SIGNATURES = 64;
