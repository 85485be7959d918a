// Every shipped configuration is valid: `passerelle check --config FILE` exits 0 for each file of
// deploy/examples/ and for config.example.toml, with the secrets it names (`"env:NAME"`) set to fresh values.
//
// Run: tests/run-integration.sh --test-name-pattern='examples'   or   node --test tests/integration/examples.test.mjs

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';

import { PASSERELLE_BIN, REPO_ROOT, sessionKey } from '../support/passerelle.mjs';

const EXAMPLES_DIR = path.join(REPO_ROOT, 'deploy', 'examples');
// The examples the README promises; any other .toml dropped in the folder is checked too.
const PROMISED = [
  'proconnect-integration-internet.toml',
  'proconnect-rie-egress-proxy.toml',
  'hybrid-internet-rie.toml',
  'nc-connect.toml',
];

const pause = (ms) => new Promise((r) => setTimeout(r, ms));

/** The binary may be rebuilt by the lead while tests run: wait (bounded) until it is there. */
async function waitForBinary(timeoutMs = 300_000) {
  const deadline = Date.now() + timeoutMs;
  while (!existsSync(PASSERELLE_BIN)) {
    if (Date.now() > deadline) throw new Error(`Passerelle binary not found at ${PASSERELLE_BIN} after ${timeoutMs} ms`);
    await pause(250); // polling for the file to reappear
  }
}

async function check(file, env, { unset = [] } = {}) {
  const childEnv = { ...process.env, ...env };
  for (const name of unset) delete childEnv[name];
  for (let attempt = 0; ; attempt++) {
    await waitForBinary();
    try {
      return await new Promise((resolve, reject) => {
        const child = spawn(PASSERELLE_BIN, ['check', '--config', file], {
          cwd: REPO_ROOT,
          env: childEnv,
          stdio: ['ignore', 'pipe', 'pipe'],
        });
        let stdout = '';
        let stderr = '';
        child.stdout.on('data', (d) => { stdout += d; });
        child.stderr.on('data', (d) => { stderr += d; });
        const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
        child.on('error', (e) => { clearTimeout(timer); reject(e); });
        child.on('close', (code, signal) => { clearTimeout(timer); resolve({ code, signal, stdout, stderr }); });
      });
    } catch (e) {
      // ENOENT / ETXTBSY while the binary is being replaced: retry a few times.
      if (attempt >= 5) throw e;
      await pause(1000); // back-off before retrying the spawn
    }
  }
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
