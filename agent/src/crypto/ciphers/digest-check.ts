// The private-options `digest`: the plaintext blob must hash to it. Hashes
// what passes through only when a digest is expected.

import { createHash, type Hash } from 'node:crypto';
import { PlainDigestMismatch } from '../errors.ts';

/** Hashes what passes through when a digest is expected, and checks it at the end. */
export class DigestCheck {
  private readonly hash: Hash | undefined;
  private readonly expected: string | undefined;
  constructor(expected: string | undefined) {
    this.expected = expected;
    this.hash = expected ? createHash(expected.slice(0, expected.indexOf(':'))) : undefined;
  }
  update(chunk: Buffer): void {
    this.hash?.update(chunk);
  }
  /** Undefined when it matches (or nothing was expected), else the error. */
  check(layer: string): PlainDigestMismatch | undefined {
    if (!this.hash || !this.expected) return undefined;
    const got = `${this.expected.slice(0, this.expected.indexOf(':'))}:${this.hash.digest('hex')}`;
    return got === this.expected ? undefined : new PlainDigestMismatch(`layer ${layer}: decrypted blob is ${got}, its private options say ${this.expected}`);
  }
}
