// Kernel command line: the agent.* parameters kata documents for the guest.
// kata-agent reads the same line, so agent.* keys we do not know are theirs
// and are ignored; a key we do know with a bad value is an error.

import { ConfigError } from './schema.ts';

/** Split a kernel command line into key/value pairs; double quotes group words as the kernel does. */
export function parseCmdline(text: string): Map<string, string> {
  const out = new Map<string, string>();
  const re = /(?:[^\s"]+|"[^"]*")+/g;
  for (const m of text.matchAll(re)) {
    const word = m[0].replace(/"/g, '');
    const eq = word.indexOf('=');
    if (eq < 0) out.set(word, '');
    else out.set(word.slice(0, eq), word.slice(eq + 1));
  }
  return out;
}

/** A cmdline key and the config keys ("section.key") it sets. */
type Mapping = (value: string) => Array<[string, string]>;

const to = (key: string): Mapping => (v) => [[key, v]];

/** agent.aa_kbc_params=<kbc>::<url>, exactly two parts (guest-components aa_kbc_params.rs). */
const kbcParams: Mapping = (v) => {
  const parts = v.split('::');
  if (parts.length !== 2) throw new ConfigError('agent.aa_kbc_params', `expected <kbc>::<url>, got ${JSON.stringify(v)}`);
  return [
    ['kbc.name', parts[0]!],
    ['kbc.url', parts[1]!],
  ];
};

export const CMDLINE_KEYS: Readonly<Record<string, Mapping>> = {
  'agent.log': to('log.level'),
  'agent.aa_kbc_params': kbcParams,
  'agent.image_registry_auth': to('image.auth'),
  'agent.enable_signature_verification': to('image.enable_signature_verification'),
  'agent.image_policy_file': to('image.policy'),
  'agent.secure_storage_integrity': to('storage.integrity'),
  'agent.https_proxy': to('proxy.https_proxy'),
  'agent.http_proxy': to('proxy.http_proxy'),
  'agent.no_proxy': to('proxy.no_proxy'),
};

/** The config keys set by the command line, as strings still to be parsed by the schema. */
export function cmdlineSettings(text: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const [k, v] of parseCmdline(text)) {
    const mapping = CMDLINE_KEYS[k];
    if (!mapping) continue;
    for (const [key, value] of mapping(v)) out.set(key, value);
  }
  return out;
}
