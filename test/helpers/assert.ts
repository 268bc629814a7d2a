// Assertion helpers shared by the tests.

import assert from 'node:assert/strict';

/**
 * For assert.rejects: the error carries this status code (AgentError,
 * TtrpcError and gRPC errors all have `code`), and its message matches `re`.
 */
export const hasCode =
  (code: number, re?: RegExp) =>
  (e: unknown): boolean => {
    const err = e as { code?: number; message?: string };
    assert.equal(err.code, code, `expected code ${code}, got ${err.code}: ${err.message}`);
    if (re) assert.match(err.message ?? '', re);
    return true;
  };
