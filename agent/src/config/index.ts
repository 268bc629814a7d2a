// config/: the typed, immutable agent configuration, resolved once at start
// from flags, the TOML config file, the kernel command line and defaults.
export { ConfigError, schema, type AgentConfig } from './schema.ts';
export { loadConfig, resolveConfig, type ConfigSources } from './load.ts';
export { parseCmdline, CMDLINE_KEYS } from './cmdline.ts';
