// The agent's version, from package.json at build time of the bundle or at load in the tree.
import pkg from '../../package.json' with { type: 'json' };

export const AGENT_VERSION: string = pkg.version;
