// The signed JSON both formats share (containers-signature.5, cosign
// SIGNATURE_SPEC): {"critical":{"identity":{"docker-reference"},"image":
// {"docker-manifest-digest"},"type"},"optional":{…}}. Parsed only after the
// signature over these exact bytes verified; "critical" must hold exactly the
// known members, "optional" is free-form.

import { checkKeys, describe, isObject, parseStrictJson, StrictJsonError } from './strict-json.ts';

export const SIMPLE_SIGNING_TYPE = 'atomic container signature';
export const COSIGN_TYPE = 'cosign container image signature';

export interface SignedClaims {
  readonly dockerReference: string;
  readonly manifestDigest: string;
  readonly creator?: string;
  /** Seconds since the epoch, when the signer recorded one. */
  readonly timestamp?: number;
}

export class PayloadInvalid extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'PayloadInvalid';
  }
}

const DIGEST = /^sha(?:256:[a-f0-9]{64}|512:[a-f0-9]{128})$/;

export function parsePayload(bytes: Uint8Array, type: typeof SIMPLE_SIGNING_TYPE | typeof COSIGN_TYPE): SignedClaims {
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    throw new PayloadInvalid('signed payload is not UTF-8');
  }
  try {
    const doc = checkKeys(parseStrictJson(text), [], ['critical', 'optional'], ['critical', 'optional']);
    const critical = checkKeys(doc.critical, ['critical'], ['type', 'image', 'identity'], ['type', 'image', 'identity']);
    if (critical.type !== type) throw new StrictJsonError(['critical', 'type'], `expected ${JSON.stringify(type)}, got ${describe(critical.type)}`);
    const image = checkKeys(critical.image, ['critical', 'image'], ['docker-manifest-digest'], ['docker-manifest-digest']);
    const identity = checkKeys(critical.identity, ['critical', 'identity'], ['docker-reference'], ['docker-reference']);
    const digest = image['docker-manifest-digest'];
    const reference = identity['docker-reference'];
    if (typeof digest !== 'string' || !DIGEST.test(digest)) throw new StrictJsonError(['critical', 'image', 'docker-manifest-digest'], 'not a sha256 or sha512 digest');
    if (typeof reference !== 'string' || reference === '') throw new StrictJsonError(['critical', 'identity', 'docker-reference'], 'expected a non-empty string');
    // cosign writes "optional": null when the signer gave no annotations.
    const optional = doc.optional;
    if (optional !== null && !isObject(optional)) throw new StrictJsonError(['optional'], `expected an object, got ${describe(optional)}`);
    const creator = optional?.creator;
    const timestamp = optional?.timestamp;
    if (creator !== undefined && typeof creator !== 'string') throw new StrictJsonError(['optional', 'creator'], 'expected a string');
    if (timestamp !== undefined && !Number.isSafeInteger(timestamp)) throw new StrictJsonError(['optional', 'timestamp'], 'expected an integer');
    return {
      dockerReference: reference,
      manifestDigest: digest,
      ...(typeof creator === 'string' ? { creator } : {}),
      ...(typeof timestamp === 'number' ? { timestamp } : {}),
    };
  } catch (err) {
    if (err instanceof StrictJsonError) throw new PayloadInvalid(`signed payload ${err.message}`);
    throw err;
  }
}
