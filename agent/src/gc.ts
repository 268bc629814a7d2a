// V8's gc(), for the few places that collect on purpose: node offers it
// only behind --expose-gc, which a new context picks up when set at run time.

import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

export type Gc = (opts?: { type?: 'major' | 'minor' }) => void;

/** This isolate's gc(), or undefined where V8 would not expose it. */
export function exposedGc(): Gc | undefined {
  setFlagsFromString('--expose-gc');
  return runInNewContext('gc') as Gc | undefined;
}
