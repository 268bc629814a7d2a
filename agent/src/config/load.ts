// Resolve the configuration once at start: defaults < kernel cmdline < config
// file < flags. The result is frozen and passed down; nothing else reads the
// environment, argv or /proc/cmdline.

import { readFileSync } from 'node:fs';
import { parse as parseToml } from 'smol-toml';
import { cmdlineSettings } from './cmdline.ts';
import { ConfigError, schema, type AgentConfig, type Field } from './schema.ts';

export interface ConfigSources {
  /** TOML text of the config file, and its path for messages. */
  file?: { path: string; text: string };
  /** Kernel command line text. */
  cmdline?: string;
  /** Flag overrides as TOML-typed values keyed "section.key". */
  flags?: ReadonlyMap<string, unknown>;
}

type Sections = Record<string, Record<string, Field<unknown>>>;
const sections = schema as unknown as Sections;

function fieldOf(key: string): Field<unknown> {
  const [section, name, ...rest] = key.split('.');
  const field = rest.length === 0 && section && name ? sections[section]?.[name] : undefined;
  if (!field) throw new ConfigError(key, 'unknown key');
  return field;
}

export function resolveConfig(sources: ConfigSources): AgentConfig {
  const values = new Map<string, unknown>();
  for (const [section, fields] of Object.entries(sections)) {
    for (const [name, field] of Object.entries(fields)) values.set(`${section}.${name}`, field.default);
  }

  if (sources.cmdline !== undefined) {
    for (const [key, text] of cmdlineSettings(sources.cmdline)) values.set(key, fieldOf(key).fromString(text, key));
  }

  if (sources.file) {
    let doc: Record<string, unknown>;
    try {
      doc = parseToml(sources.file.text) as Record<string, unknown>;
    } catch (err) {
      throw new ConfigError(sources.file.path, `not valid TOML: ${(err as Error).message}`);
    }
    for (const [section, table] of Object.entries(doc)) {
      if (!sections[section]) throw new ConfigError(section, 'unknown section');
      if (typeof table !== 'object' || table === null || Array.isArray(table)) throw new ConfigError(section, 'expected a table');
      for (const [name, raw] of Object.entries(table)) {
        const key = `${section}.${name}`;
        values.set(key, fieldOf(key).parse(raw, key));
      }
    }
  }

  for (const [key, raw] of sources.flags ?? []) values.set(key, fieldOf(key).parse(raw, key));

  const out: Record<string, Record<string, unknown>> = {};
  for (const [key, value] of values) {
    const [section = '', name = ''] = key.split('.');
    (out[section] ??= {})[name] = value;
  }
  for (const s of Object.values(out)) Object.freeze(s);
  return Object.freeze(out) as unknown as AgentConfig;
}

/** Read the files named by the CLI and resolve. A missing /proc/cmdline (not Linux) counts as empty. */
export function loadConfig(opts: { configPath?: string; cmdlinePath?: string; flags?: ReadonlyMap<string, unknown> }): AgentConfig {
  const sources: ConfigSources = { flags: opts.flags ?? new Map() };
  if (opts.configPath) {
    let text: string;
    try {
      text = readFileSync(opts.configPath, 'utf8');
    } catch (err) {
      throw new ConfigError(opts.configPath, `cannot read config file: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
    }
    sources.file = { path: opts.configPath, text };
  }
  const cmdlinePath = opts.cmdlinePath ?? '/proc/cmdline';
  try {
    sources.cmdline = readFileSync(cmdlinePath, 'utf8');
  } catch (err) {
    if (opts.cmdlinePath) throw new ConfigError(cmdlinePath, `cannot read cmdline file: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
  }
  return resolveConfig(sources);
}
