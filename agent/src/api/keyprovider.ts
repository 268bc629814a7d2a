// keyprovider.KeyProviderService: ocicrypt's key provider as CDH serves it.
// UnWrapKey opens a CoCo annotation packet with the KEK from the key source;
// WrapKey stays UNIMPLEMENTED, as upstream (the guest never wraps).

import { unwrapForKeyProvider } from '../crypto/index.ts';
import type { KeySource } from '../resource.ts';
import type { Handler } from '../server/table.ts';

export interface KeyProviderInput {
  KeyProviderKeyWrapProtocolInput: Buffer;
}

export interface KeyProviderOutput {
  KeyProviderKeyWrapProtocolOutput: Buffer;
}

export function keyProviderHandlers(keySource: KeySource) {
  return {
    UnWrapKey: (async (req, ctx) => ({
      KeyProviderKeyWrapProtocolOutput: await unwrapForKeyProvider(req.KeyProviderKeyWrapProtocolInput, keySource, ctx.signal),
    })) satisfies Handler<KeyProviderInput, KeyProviderOutput>,
  };
}
