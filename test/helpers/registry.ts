// Debian's docker-registry on loopback for tests: see scripts/lib/registry.ts
// (shared with the demo and the benchmarks).
export { startRegistry, type RegistryOptions, type TestRegistry } from '../../scripts/lib/registry.ts';
export { startTokenServer, type TokenServer, type TokenServerOptions, type TokenRequestLog } from '../../scripts/lib/token-server.ts';
export { makeCa, issueCert, type CertFiles } from '../../scripts/lib/pki.ts';
