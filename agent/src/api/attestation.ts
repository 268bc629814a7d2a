// CDH GetResource and UnsealSecret, and the attestation-agent service:
// thin handlers over the attestation capability.

import { InvalidArgument } from '../errors.ts';
import type { Attestation } from '../attestation/index.ts';
import { parseResourceUri } from '../resource.ts';
import type { Handler } from '../server/table.ts';

export function resourceHandlers(att: Attestation) {
  return {
    GetResource: (async (req, ctx) => ({ Resource: await att.keys.get(parseResourceUri(req.ResourcePath), ctx.signal) })) satisfies Handler<
      { ResourcePath: string },
      { Resource: Buffer }
    >,
  };
}

export function sealedSecretHandlers(att: Attestation) {
  return {
    UnsealSecret: (async (req, ctx) => ({ plaintext: await att.unseal(req.secret, ctx.signal) })) satisfies Handler<{ secret: Buffer }, { plaintext: Buffer }>,
  };
}

interface ExtendRequest {
  Domain: string;
  Operation: string;
  Content: string;
  /** proto3 optional: absent when the caller did not set it. */
  RegisterIndex?: number | null;
}

export function attestationAgentHandlers(att: Attestation) {
  const aa = att.agent;
  return {
    GetEvidence: (async (req) => ({ Evidence: await aa.evidence(req.RuntimeData) })) satisfies Handler<{ RuntimeData: Buffer }, { Evidence: Buffer }>,
    // No additional (device) attesters exist in this agent, as upstream answers then.
    GetAdditionalEvidence: (async () => ({ Evidence: Buffer.alloc(0) })) satisfies Handler<{ RuntimeData: Buffer }, { Evidence: Buffer }>,
    GetToken: (async (req, ctx) => ({ Token: await aa.token(req.TokenType, ctx.signal) })) satisfies Handler<{ TokenType: string }, { Token: Buffer }>,
    GetTeeType: (async () => ({ tee: aa.tee })) satisfies Handler<object, { tee: string }>,
    ExtendRuntimeMeasurement: (async (req) => {
      const pcr = req.RegisterIndex ?? undefined;
      if (pcr !== undefined && (!Number.isSafeInteger(pcr) || pcr < 0)) throw new InvalidArgument('RegisterIndex out of range');
      return { Result: await aa.extendRuntimeMeasurement({ domain: req.Domain, operation: req.Operation, content: req.Content }, pcr) };
    }) satisfies Handler<ExtendRequest, { Result: string }>,
    BindInitData: (async (req) => {
      await aa.bindInitData(req.Digest);
      return {};
    }) satisfies Handler<{ Digest: Buffer }, object>,
  };
}

