// The CLI's start: Node's compile cache for the TypeScript sources, enabled
// by agent/bin/tee-agent.js before the CLI is imported.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { AGENT_BIN } from '../helpers/agent.ts';

const CACHE = new URL('../../node_modules/.cache/tee-agent/', import.meta.url).pathname;

test('from the sources, the CLI keeps its compiled, type-stripped modules in node_modules/.cache/tee-agent', () => {
  const env = { ...process.env };
  delete env.NODE_COMPILE_CACHE; // the variable would take the place of the CLI's own choice
  const r = spawnSync(process.execPath, [AGENT_BIN, 'pull', '--help'], { encoding: 'utf8', env });
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /^Usage: tee-agent pull /);
  assert.ok(existsSync(CACHE), `${CACHE} missing`);
  const versions = readdirSync(CACHE).filter((d) => d.startsWith(process.version));
  assert.ok(versions.length > 0, `no cache for ${process.version} in ${readdirSync(CACHE).join(' ')}`);
  // The CLI, its config and image code, module by module: dozens of entries.
  const entries = versions.flatMap((v) => readdirSync(join(CACHE, v)));
  assert.ok(entries.length >= 40, `${entries.length} cache entries`);
});
