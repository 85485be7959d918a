// Every shipped configuration is valid: `passerelle check --config FILE` exits 0 for each file of
// deploy/examples/ and for config.example.toml, with the secrets it names (`"env:NAME"`) set to fresh values.
//
// Run: tests/run-integration.sh --test-name-pattern='examples'   or   node --test tests/integration/examples.test.mjs

import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';

import { REPO_ROOT, runPasserelle, sessionKey } from '../support/passerelle.mjs';

const EXAMPLES_DIR = path.join(REPO_ROOT, 'deploy', 'examples');
// The examples the README promises; any other .toml dropped in the folder is checked too.
const PROMISED = [
  'proconnect-integration-internet.toml',
  'proconnect-rie-egress-proxy.toml',
  'hybrid-internet-rie.toml',
  'nc-connect.toml',
];

/** `passerelle check --config FILE` from the repository root: { code, signal, stdout, stderr }. */
function check(file, env, { unset = [] } = {}) {
  return runPasserelle(['check', '--config', file], { cwd: REPO_ROOT, env, unset });
}

/** `"env:NAME"` secrets named anywhere in the file (comments included: setting an unused one is harmless). */
function envSecrets(toml) {
  const names = new Set();
  for (const m of toml.matchAll(/"env:([A-Za-z_][A-Za-z0-9_]*)"/g)) names.add(m[1]);
  // A fresh session key is valid for session.keys and is as good a client secret as any.
  return Object.fromEntries([...names].map((n) => [n, sessionKey()]));
}

const files = existsSync(EXAMPLES_DIR)
  ? readdirSync(EXAMPLES_DIR).filter((f) => f.endsWith('.toml')).sort().map((f) => path.join(EXAMPLES_DIR, f))
  : [];

test('(x0) deploy/examples/ holds the example configurations the README promises', () => {
  const names = files.map((f) => path.basename(f));
  for (const name of PROMISED) assert.ok(names.includes(name), `deploy/examples/${name} is missing (found: ${names.join(', ')})`);
  assert.ok(existsSync(path.join(EXAMPLES_DIR, 'README.md')), 'deploy/examples/README.md is missing');
});

for (const file of [...files, path.join(REPO_ROOT, 'config.example.toml')]) {
  const rel = path.relative(REPO_ROOT, file);
  test(`(x1) passerelle check --config ${rel} exits 0`, { timeout: 360_000 }, async () => {
    const env = envSecrets(readFileSync(file, 'utf8'));
    const res = await check(file, env);
    assert.equal(res.code, 0,
      `passerelle check --config ${rel} (env: ${Object.keys(env).join(', ') || 'none'}) exited ${res.code}${res.signal ? ` (${res.signal})` : ''}:\n${res.stdout}${res.stderr}`);
    assert.match(res.stdout + res.stderr, /OK/, `check reports OK for ${rel}`);
  });
}

test('(x2) check is not a rubber stamp: an example whose secret is unset fails, naming the variable', { timeout: 360_000 }, async () => {
  const file = path.join(EXAMPLES_DIR, 'nc-connect.toml');
  const env = envSecrets(readFileSync(file, 'utf8'));
  assert.ok('NC_SECRET' in env, 'nc-connect.toml names its client secret as env:NC_SECRET');
  const res = await check(file, env, { unset: ['NC_SECRET'] });
  assert.notEqual(res.code, 0, `check must fail without NC_SECRET:\n${res.stdout}${res.stderr}`);
  assert.match(res.stdout + res.stderr, /NC_SECRET/, 'the error names the missing variable');
});
