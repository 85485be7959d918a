// The signed identity assertion (`route.assertion`): an ES256 JWT of what a route releases, verified here the way
// an application would, with a standard JOSE library (npm `jose`) against Passerelle's /.passerelle/jwks.json.
//
// What an app checking it may rely on: a request that did not cross Passerelle cannot carry a valid one (a forged
// token, another key, `alg: none`, HS256 with the public key, a token made for another app, a tampered one), a
// client cannot smuggle one through Passerelle, and keys rotate without an assertion failing verification.

import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import { test } from 'node:test';

import { createLocalJWKSet, decodeJwt, decodeProtectedHeader, generateKeyPair, jwtVerify, SignJWT, UnsecuredJWT } from 'jose';

import { pause } from '../support/http.mjs';
import { runPasserelle } from '../support/passerelle.mjs';
import { PREFIX, startStack, tv } from '../support/stack.mjs';
import { headerValues } from '../support/upstream.mjs';

const APP = 'https://conges.example.gouv.fr';
const OTHER_APP = 'https://autre.example.gouv.fr';
const TIMEOUT = { timeout: 120_000 };

async function keygen() {
  const r = await runPasserelle(['keygen', '--assertion']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^-----BEGIN PRIVATE KEY-----\n[\s\S]+\n-----END PRIVATE KEY-----\n$/);
  assert.match(r.stderr, /\[assertion\] keys/);
  return r.stdout;
}

function routes(keys) {
  return () => `
[[route]]
path = "/conges"
upstream = "${'UPSTREAM'}"
providers = ["op"]
scopes = ["email", "profile"]
assertion = ${tv({ audience: APP, ttl: '60s' })}
[route.headers]
"X-Auth-Email" = "email"
"X-Auth-Given-Name" = "given_name"

[[route]]
path = "/autre"
upstream = "${'UPSTREAM'}"
providers = ["op"]
scopes = ["email"]
assertion = ${tv({ audience: OTHER_APP, header: 'X-Identite-Signee' })}
[route.headers]
"X-Auth-Email" = "email"

[assertion]
keys = ${tv(keys.map((k) => `env:${k}`))}
`;
}

/** The stack with its routes; `env` holds the PEM keys named in `keyNames`. */
async function start(t, keyNames, env) {
  const s = await startStack(t, {
    // The test's client stands for the front proxy too, for forward-auth.
    config: { extraServer: 'trusted_proxies = ["127.0.0.1/32"]\n', extraRoutes: (upstream) => routes(keyNames)().replaceAll('UPSTREAM', upstream) },
    passerelle: { env },
  });
  return s;
}

async function jwks(base) {
  const res = await fetch(`${base}${PREFIX}/jwks.json`);
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type'), /application\/jwk-set\+json/);
  assert.match(res.headers.get('cache-control'), /public, max-age=\d+/);
  return res.json();
}

/** What the app does with the header: verify it, or throw. */
async function appVerifies(token, keySet, audience = APP, issuer) {
  const { payload } = await jwtVerify(token, createLocalJWKSet(keySet), { issuer, audience, algorithms: ['ES256'] });
  return payload;
}

test('(assertion1) the app verifies the assertion with the published keys; it holds sub and the route\'s claims only; nothing forged, replayed from another app or smuggled by the client passes', TIMEOUT, async (t) => {
  const env = { ASSERTION_KEY: await keygen(), NEXT_KEY: await keygen() };
  const s = await start(t, ['ASSERTION_KEY', 'NEXT_KEY'], env);
  const keySet = await jwks(s.base);
  assert.equal(keySet.keys.length, 2, 'both keys published');
  for (const k of keySet.keys) {
    assert.deepEqual(Object.keys(k).sort(), ['alg', 'crv', 'kid', 'kty', 'use', 'x', 'y'], 'public members only');
    assert.equal(k.alg, 'ES256');
  }

  // A client sends its own assertion: it never reaches the app.
  const forgedByClient = await new UnsecuredJWT({ sub: 'admin', email: 'admin@example.gouv.fr' }).setIssuer(s.base).setAudience(APP).setExpirationTime('1h').encode();
  const res = await s.person.login(`${s.base}/conges/demande`, 'alice', { headers: { 'X-Passerelle-Assertion': forgedByClient } });
  assert.equal(res.status, 200, res.body);
  const seen = s.upstream.last();
  const values = headerValues(seen.rawHeaders, 'x-passerelle-assertion');
  assert.equal(values.length, 1, 'exactly one assertion reaches the app');
  const token = values[0];
  assert.notEqual(token, forgedByClient);
  const payload = await appVerifies(token, keySet, APP, s.base);
  assert.equal(payload.email, 'alice.martin@example.gouv.fr');
  assert.equal(payload.given_name, 'Alice');
  assert.ok(payload.sub, 'sub');
  assert.equal(payload.exp - payload.iat, 60);
  assert.ok(Math.abs(payload.iat - Date.now() / 1000) < 30, 'iat is now');
  assert.match(payload.jti, /^[A-Za-z0-9_-]{16,}$/);
  assert.deepEqual(Object.keys(payload).sort(), ['aud', 'email', 'exp', 'given_name', 'iat', 'iss', 'jti', 'sub'], 'nothing the route does not map');
  assert.equal(decodeProtectedHeader(token).kid, keySet.keys[0].kid, 'the first key signs');
  assert.equal(decodeProtectedHeader(token).typ, 'JWT');

  // The other route: its own header and audience. Its token is refused by the first app, and the reverse.
  const other = await s.person.get(`${s.base}/autre/x`);
  assert.equal(other.status, 200);
  const otherToken = headerValues(s.upstream.last().rawHeaders, 'x-identite-signee')[0];
  assert.ok(otherToken, 'the second route sends its header');
  assert.deepEqual(headerValues(s.upstream.last().rawHeaders, 'x-passerelle-assertion'), [], 'and not the first route\'s');
  await appVerifies(otherToken, keySet, OTHER_APP, s.base);
  await assert.rejects(appVerifies(otherToken, keySet, APP, s.base), /aud/, 'a token made for another app is refused');
  await assert.rejects(appVerifies(token, keySet, OTHER_APP, s.base), /aud/);

  // A public route carries none, whatever the client sends.
  const pub = await s.person.get(`${s.base}/public/x`, { headers: { 'X-Passerelle-Assertion': token, 'x-identite-signee': token } });
  assert.equal(pub.status, 200);
  assert.deepEqual(headerValues(s.upstream.last().rawHeaders, 'x-passerelle-assertion'), []);
  assert.deepEqual(headerValues(s.upstream.last().rawHeaders, 'x-identite-signee'), []);

  // Requests that bypass Passerelle: whatever they carry, the app's check refuses it.
  const attacker = await generateKeyPair('ES256');
  const claims = { sub: payload.sub, email: 'alice.martin@example.gouv.fr' };
  const forged = [
    ['signed by another key, with our kid', await new SignJWT(claims).setProtectedHeader({ alg: 'ES256', kid: keySet.keys[0].kid }).setIssuer(s.base).setAudience(APP).setIssuedAt().setExpirationTime('1m').sign(attacker.privateKey)],
    ['alg none', forgedByClient],
    ['HS256 keyed with the public key', await new SignJWT(claims).setProtectedHeader({ alg: 'HS256', kid: keySet.keys[0].kid }).setIssuer(s.base).setAudience(APP).setExpirationTime('1m').sign(new TextEncoder().encode(JSON.stringify(keySet.keys[0])))],
    ['a real token with its payload changed', (() => {
      const [h, , sig] = token.split('.');
      const body = Buffer.from(JSON.stringify({ ...decodeJwt(token), email: 'directeur@example.gouv.fr' })).toString('base64url');
      return `${h}.${body}.${sig}`;
    })()],
    ['a real token from another route', otherToken],
  ];
  for (const [what, bad] of forged) {
    await assert.rejects(appVerifies(bad, keySet, APP, s.base), `${what}: refused`);
  }

  // Forward-auth hands the same assertion to a proxy that asks (nginx auth_request copies it to the app).
  const auth = await s.person.request(`${s.base}${PREFIX}/auth`, { headers: { 'X-Original-URI': '/conges/x' } });
  assert.equal(auth.status, 200, auth.body);
  const fromAuth = auth.headers['x-passerelle-assertion'];
  assert.ok(fromAuth, 'forward-auth answers the assertion');
  await appVerifies(fromAuth, keySet, APP, s.base);
});

test('(assertion2) key rotation across reloads: the next key published first, then signing; assertions signed by the previous key keep verifying until it is withdrawn', TIMEOUT, async (t) => {
  const env = { OLD_KEY: await keygen(), NEW_KEY: await keygen() };
  const s = await start(t, ['OLD_KEY'], env);
  const { configFile, process: child, adminUrl, logs } = s.passerelle;
  const reloads = async (n) => {
    const deadline = Date.now() + 10_000;
    for (;;) {
      const text = await (await fetch(`${adminUrl}/metrics`)).text();
      if (Number(text.match(/^passerelle_config_reloads_total (\d+)$/m)?.[1]) >= n) return;
      assert.ok(Date.now() < deadline, `reload ${n} applied:\n${logs().slice(-2000)}`);
      await pause(20); // polling the admin listener for the reload to be counted
    }
  };
  const rewrite = async (keys, n) => {
    const text = (await readFile(configFile, 'utf8')).replace(/\[assertion\]\nkeys = .*\n/, `[assertion]\nkeys = ${tv(keys.map((k) => `env:${k}`))}\n`);
    await writeFile(configFile, text, { mode: 0o600 });
    child.kill('SIGHUP');
    await reloads(n);
  };
  const current = async () => {
    const res = await s.person.get(`${s.base}/conges/x`);
    assert.equal(res.status, 200, res.body);
    return headerValues(s.upstream.last().rawHeaders, 'x-passerelle-assertion')[0];
  };

  await s.person.login(`${s.base}/conges/`, 'alice');
  const first = await current();
  const oldSet = await jwks(s.base);
  assert.equal(oldSet.keys.length, 1);
  const oldKid = oldSet.keys[0].kid;
  assert.equal(decodeProtectedHeader(first).kid, oldKid);

  // 1. The next key is published, not yet signing.
  await rewrite(['OLD_KEY', 'NEW_KEY'], 1);
  const both = await jwks(s.base);
  assert.deepEqual(both.keys.map((k) => k.kid)[0], oldKid);
  assert.equal(both.keys.length, 2);
  const newKid = both.keys[1].kid;
  assert.equal(decodeProtectedHeader(await current()).kid, oldKid, 'the first key still signs');

  // 2. It signs; the previous one stays published: an assertion it signed still verifies.
  await rewrite(['NEW_KEY', 'OLD_KEY'], 2);
  const swapped = await jwks(s.base);
  const next = await current();
  assert.equal(decodeProtectedHeader(next).kid, newKid, 'the new key signs');
  await appVerifies(next, swapped, APP, s.base);
  await appVerifies(first, swapped, APP, s.base);

  // 3. Withdrawn: what it signed no longer verifies, the new key's assertions do.
  await rewrite(['NEW_KEY'], 3);
  const last = await jwks(s.base);
  assert.deepEqual(last.keys.map((k) => k.kid), [newKid]);
  await assert.rejects(appVerifies(first, last, APP, s.base), /no applicable key|key/i);
  await appVerifies(await current(), last, APP, s.base);
});

test('(assertion3) check: a route assertion needs [assertion] keys, server.public_url and an audience; a key that is not P-256 PKCS#8 is refused with its key name', TIMEOUT, async (t) => {
  const { mkdtemp, rm } = await import('node:fs/promises');
  const { tmpdir } = await import('node:os');
  const path = await import('node:path');
  const { sessionKey } = await import('../support/passerelle.mjs');
  const dir = await mkdtemp(path.join(tmpdir(), 'passerelle-assertion-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const key = await keygen();
  await writeFile(path.join(dir, 'good.pem'), key);
  await writeFile(path.join(dir, 'rsa.pem'), (await runPasserelleOpenssl(dir)));
  const server = '[server]\npublic_url = "https://passerelle.example.gouv.fr"\n';
  const session = '[session]\nkeys = ["env:PASSERELLE_KEY"]\n';
  const provider = '[providers.op]\nkind = "dev"\nlisten = "127.0.0.1:1"\n';
  const route = (assertion) => `[[route]]\nupstream = "http://127.0.0.1:2"\nscopes = ["email"]\nassertion = ${assertion}\n`;
  const cases = [
    [`${server}${session}${provider}${route('{ audience = "x" }')}`, 'route[0].assertion', 'needs a signing key'],
    [`${session}${provider}${route('{ audience = "x" }')}[assertion]\nkeys = ["file:${dir}/good.pem"]\n`, 'route[0].assertion', 'server.public_url'],
    [`${server}${session}${provider}${route('{ ttl = "60s" }')}[assertion]\nkeys = ["file:${dir}/good.pem"]\n`, 'route[0].assertion.audience', 'required'],
    [`${server}${session}${provider}${route('{ audience = "x", ttl = "2h" }')}[assertion]\nkeys = ["file:${dir}/good.pem"]\n`, 'route[0].assertion.ttl', 'at most 1h'],
    [`${server}${session}${provider}${route('{ audience = "x", header = "Cookie" }')}[assertion]\nkeys = ["file:${dir}/good.pem"]\n`, 'route[0].assertion.header', 'protocol header'],
    [`${server}${session}${provider}${route('{ audience = "x", header = "Authorization" }')}[assertion]\nkeys = ["file:${dir}/good.pem"]\n`, 'route[0].assertion.header', 'protocol header'],
    [`${server}${session}${provider}${route('{ audience = "x", ttl = "5s" }')}[assertion]\nkeys = ["file:${dir}/good.pem"]\n`, 'route[0].assertion.ttl', 'at least 10s'],
    [`${server}${session}${provider}${route('{ audience = "x" }')}[assertion]\nkeys = ["file:${dir}/rsa.pem"]\n`, 'assertion.keys', 'not a P-256'],
    [`${server}${session}${provider}${route('{ audience = "x" }')}[assertion]\nkeys = ["not a key"]\n`, 'assertion.keys', 'not a PKCS#8 PEM private key'],
  ];
  for (const [toml, k, message] of cases) {
    await writeFile(path.join(dir, 'config.toml'), toml);
    const r = await runPasserelle(['check', '--config', 'config.toml'], { cwd: dir, env: { PASSERELLE_KEY: sessionKey() } });
    const output = `${r.stdout}${r.stderr}`;
    assert.notEqual(r.code, 0, `${k}: check fails:\n${toml}\n${output}`);
    assert.ok(output.includes(k) && output.includes(message), `${k}: "${message}" expected:\n${output}`);
  }
  await writeFile(path.join(dir, 'config.toml'), `${server}${session}${provider}${route('{ audience = "x" }')}[assertion]\nkeys = ["file:${dir}/good.pem"]\n`);
  const ok = await runPasserelle(['check', '--config', 'config.toml'], { cwd: dir, env: { PASSERELLE_KEY: sessionKey() } });
  assert.equal(ok.code, 0, `${ok.stdout}${ok.stderr}`);
  const register = await runPasserelle(['register', '--config', 'config.toml'], { cwd: dir, env: { PASSERELLE_KEY: sessionKey() } });
  assert.match(register.stdout, /Assertion d'identité signée \(JWT ES256\) : en-tête `x-passerelle-assertion`, destinataire \(`aud`\) x, valable 60 s, données signées : sub\n/, register.stdout);
});

/** An RSA key in PKCS#8 PEM (openssl CLI): a valid key of the wrong kind. */
async function runPasserelleOpenssl(dir) {
  const { execFile } = await import('node:child_process');
  return new Promise((resolve, reject) => {
    execFile('openssl', ['genpkey', '-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048'], { cwd: dir }, (e, stdout, stderr) => (e ? reject(new Error(stderr)) : resolve(stdout)));
  });
}
