// Simple signing (containers-signature.5): an OpenPGP signed message whose
// literal data is the JSON payload. The signature is verified before the
// payload is read; signing subkeys work, and both the signature's and the
// key's expiry and revocation are honoured, at signing time and now.

import type { PublicKey } from 'openpgp';

export class SimpleSignatureInvalid extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'SimpleSignatureInvalid';
  }
}

export interface VerifiedSimpleSignature {
  readonly payload: Uint8Array;
  /** Fingerprint of the (sub)key that made the signature. */
  readonly signer: string;
}

/** Short reasons from openpgp's messages, which carry key IDs at most. */
const clean = (err: unknown): string => (err instanceof Error ? err.message : String(err)).split('\n')[0]!.slice(0, 200);

export async function verifySimpleSignature(blob: Uint8Array, keys: readonly PublicKey[], now: Date): Promise<VerifiedSimpleSignature> {
  // openpgp is large: loaded with the first simple signature, not at agent start.
  const { readMessage, verify } = await import('openpgp');
  let message;
  try {
    const armored = Buffer.from(blob.subarray(0, 32)).toString('latin1').startsWith('-----BEGIN PGP');
    message = armored ? await readMessage({ armoredMessage: Buffer.from(blob).toString('utf8') }) : await readMessage({ binaryMessage: blob });
  } catch (err) {
    throw new SimpleSignatureInvalid(`not an OpenPGP message (${clean(err)})`);
  }
  let result;
  try {
    result = await verify({ message, verificationKeys: [...keys], format: 'binary', date: now });
  } catch (err) {
    throw new SimpleSignatureInvalid(`unreadable signed message (${clean(err)})`);
  }
  if (result.signatures.length !== 1) throw new SimpleSignatureInvalid(`expected one signature in the message, found ${result.signatures.length}`);
  const sig = result.signatures[0]!;
  try {
    await sig.verified;
  } catch (err) {
    throw new SimpleSignatureInvalid(clean(err));
  }
  const primary = keys.find((k) => k.getKeys(sig.keyID).length > 0);
  if (!primary) throw new SimpleSignatureInvalid(`signed by unknown key ${sig.keyID.toHex()}`);
  // openpgp checked the key at signing time; a key that has since expired or been revoked is refused too (gpgme does).
  let signing;
  try {
    signing = await primary.getSigningKey(sig.keyID, now);
  } catch (err) {
    throw new SimpleSignatureInvalid(`signing key ${sig.keyID.toHex()} is not valid now (${clean(err)})`);
  }
  return { payload: result.data, signer: signing.getFingerprint() };
}
