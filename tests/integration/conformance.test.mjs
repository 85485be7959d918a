// OpenID Foundation RP conformance, in the spirit of the certification's RP tests (Basic and Config profiles,
// modules oidcc-client-test-*), plus the failures a provider or an attacker can produce around them. The provider is
// support/rogue-provider.mjs: a small but correct OP (node:http + jose) told case by case how to misbehave.
//
// Every refused login is checked the same way (assertRefused): (1) no 5xx, except the 502 Passerelle answers when
// the provider or the network fails (failing or hanging token endpoint), (2) the French error page with a correlation
// id that is in the log, on a "login failed" line giving the expected reason, (3) userinfo never called when the
// id_token was bad, (4) no session: no session cookie set, and the next navigation to the protected route goes back
// to the provider, (5) the upstream never called, (6) no code, token or secret in Passerelle's output.
//
// Worlds (each: one rogue provider, one upstream, one Passerelle; stopped by t.after):
//   basic profile        client_secret_basic, JWKS {RSA main, EC}: the control and almost every case, one subtest each
//   client_secret_post   the same provider registered for client_secret_post
//   kid absent           JWKS with one key / with several keys, id_token without kid
//   key rotation         a new kid after start-up: one JWKS refetch
//   jwks_uri             keys served at an unusual jwks_uri: the one discovery names is used
//   issuer mismatch      discovery issuer differing by a trailing slash: `passerelle run` refuses to start
//
// Run: node --test --test-reporter=spec tests/integration/conformance.test.mjs
// Passerelle's output for each world is kept in tests/output/conformance_<test name>.log.

import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';

import { createLocalJWKSet, jwtVerify } from 'jose';

import {
  assertFrenchErrorPage, assertLoginRedirect, assertNoSecretsInLogs, correlationIdOn, decodeJwt, sessionCookies,
} from '../support/checks.mjs';
import { httpGetStatus, stopAfter } from '../support/http.mjs';
import {
  keepOutput, launchPasserelle, outputName, runPasserelle, sessionKey,
} from '../support/passerelle.mjs';
import { createPerson } from '../support/person.mjs';
import { alterSignature, publicPem, startRogueProvider } from '../support/rogue-provider.mjs';
import { addresses, configToml, PREFIX, providerToml, tv } from '../support/stack.mjs';
import { headerValues, startUpstream } from '../support/upstream.mjs';

const TIMEOUT = { timeout: 180_000 };
const PROVIDER = 'rogue';
const REFETCHED = 'signing keys refetched';

// ---------------------------------------------------------------------------------------------------------------
// World

/** [[route]] blocks: "/" (identity headers), "/autre" (another protected route), "/public". */
function routes(upstream) {
  return `[[route]]
path = "/"
upstream = ${tv(upstream)}
auth = "required"
providers = [${tv(PROVIDER)}]
scopes = ["email", "profile"]
[route.headers]
"X-Auth-Sub" = "sub"
"X-Auth-Email" = "email"
"X-Auth-Given-Name" = "given_name"
"X-Auth-Family-Name" = "family_name"
"X-Auth-Provider" = "provider"

[[route]]
path = "/autre"
upstream = ${tv(upstream)}
auth = "required"
providers = [${tv(PROVIDER)}]
scopes = ["email"]
[route.headers]
"X-Auth-Sub" = "sub"
"X-Auth-Email" = "email"

[[route]]
path = "/public"
upstream = ${tv(upstream)}
auth = "public"
`;
}

function worldToml(a, op, upstream, extra = {}) {
  return configToml({
    writtenBy: 'tests/integration/conformance.test.mjs',
    port: a.port,
    adminPort: a.adminPort,
    extraServer: 'log_format = "json"\n',
    providers: providerToml(PROVIDER, 'oidc', op, {
      auth_method: op.authMethod, scopes: ['openid', 'email', 'profile'], timeout: '2s', ...extra,
    }),
    routes: routes(upstream.url),
  });
}

/**
 * A rogue provider (`provider`: startRogueProvider options), an upstream, and Passerelle configured for them
 * (`extra`: more keys of the provider block). Stopped by t.after.
 */
async function world(t, { provider = {}, extra = {} } = {}) {
  const a = await addresses();
  const op = await stopAfter(t, startRogueProvider({ redirectUris: a.redirectUris, ...provider }));
  const upstream = await stopAfter(t, startUpstream());
  const toml = worldToml(a, op, upstream, extra);
  const p = await launchPasserelle(t, toml, { adminPort: a.adminPort, logName: outputName(t, { prefix: 'conformance_' }) });
  return { ...a, op, upstream, p, s: { base: a.base, op, passerelle: p } };
}

/** Marks where a case starts in the provider's and the upstream's records, and a fresh person. */
function begin(w) {
  return { calls: w.op.calls.length, upstream: w.upstream.requests.length, errors: w.op.errors.length, person: createPerson() };
}

const since = (w, trial, p) => w.op.callsTo(p, trial.calls);
const backChannel = (w, trial) => w.op.calls.slice(trial.calls).filter((c) => c.backChannel).map((c) => `${c.method} ${c.path}`);

function diag(w, res) {
  return `ended on ${res.status} ${res.url}\n${res.body.slice(0, 600)}\n--- history:\n${(res.history || []).map((h) => `${h.status} ${h.url}`).join('\n')}`
    + `\n--- provider errors: ${JSON.stringify(w.op.errors)}\n--- passerelle (tail):\n${w.p.logs().slice(-2500)}`;
}

/** Passerelle's JSON log lines. */
function logLines(w) {
  return w.p.logs().split('\n').filter(Boolean).map((line) => {
    try {
      return JSON.parse(line);
    } catch {
      return { message: line };
    }
  });
}

/** The "login failed" log line of request `id` (waits, bounded, for it to be flushed). */
async function failureLine(w, id) {
  const find = () => logLines(w).find((l) => l.request_id === id && /login failed/.test(String(l.message)));
  for (let i = 0; i < 150 && !find(); i++) await new Promise((r) => setTimeout(r, 20)); // polling for the log line
  return find();
}

function count(text, needle) {
  return text.split(needle).length - 1;
}

/** The navigation's hop at Passerelle's callback. */
function callbackHop(w, res) {
  return (res.history || []).find((h) => h.url.startsWith(`${w.base}${PREFIX}/callback`));
}

/** One character changed at the end, the string staying a valid URL/identifier: a digit +1 mod 10, else a letter. */
function offByOne(s) {
  const last = s.at(-1);
  const changed = /\d/.test(last) ? String((Number(last) + 1) % 10) : (last === 'z' ? 'y' : String.fromCharCode(last.charCodeAt(0) + 1));
  return `${s.slice(0, -1)}${changed}`;
}

// ---------------------------------------------------------------------------------------------------------------
// Outcomes

/** A login that worked: back on `target`, the upstream saw it once with the identity (claims from userinfo). */
function assertSignedIn(w, trial, res, target, { email = w.op.account.email } = {}) {
  assert.equal(res.status, 200, diag(w, res));
  assert.equal(res.url, target, `back on the URL first asked for\n${diag(w, res)}`);
  const seen = w.upstream.requests.slice(trial.upstream);
  assert.equal(seen.length, 1, 'the upstream saw the request once');
  const h = (name) => headerValues(seen[0].rawHeaders, name);
  assert.deepEqual(h('X-Auth-Sub'), [w.op.account.sub]);
  assert.deepEqual(h('X-Auth-Email'), [email], 'email (from userinfo)');
  assert.deepEqual(h('X-Auth-Provider'), [PROVIDER]);
  assert.ok(sessionCookies(trial.person, w.base).length >= 1, 'the person holds a session');
  assert.deepEqual(w.op.errors.slice(trial.errors), [], 'the provider refused nothing Passerelle sent');
  assert.equal(since(w, trial, '/token').length, 1, 'one code exchange');
  assertNoSecretsInLogs(w.s, tokenExtras(w, trial));
  return seen[0];
}

/** What Passerelle sent the token endpoint during the trial that must not be logged either. */
function tokenExtras(w, trial) {
  return since(w, trial, '/token').flatMap((c) => [
    ['the PKCE code_verifier', c.form?.code_verifier],
    ['the Authorization header of the code exchange', c.headers.authorization],
  ]);
}

/**
 * A refused login (see the header): `status` the exact status expected (4xx: the French page of checks.mjs; 502:
 * Passerelle's "provider unavailable" page), `reason` what the log line must say, `token` and `userinfo` how many
 * times those endpoints were reached during the case, `named` whether the log line names the provider (not when the
 * state is unknown: then so is the provider).
 */
async function assertRefused(w, trial, res, { status, reason, token = 1, userinfo = 0, named = true }) {
  const logs = w.p.logs;
  const cb = callbackHop(w, res);
  assert.ok(cb, `the flow reached Passerelle's callback\n${diag(w, res)}`);
  assert.equal(res.url, cb.url, `the answer is the callback's own (no redirect)\n${diag(w, res)}`);

  // (1) no 5xx, except a provider/network failure, which is 502 — exactly the status expected.
  assert.equal(res.status, status, `expected ${status}\n${diag(w, res)}`);
  // (2) French error page, correlation id in the log on the "login failed" line with the reason.
  if (status === 502) {
    assert.match(res.headers['content-type'] || '', /text\/html/);
    assert.match(res.body, /<html[^>]*\blang="fr"/, 'French page');
    assert.match(res.body, /Fournisseur d(&#39;|')identité indisponible/, `the page says the provider is unavailable:\n${res.body.slice(0, 600)}`);
  } else {
    assert.ok(status >= 400 && status < 500);
    await assertFrenchErrorPage(res, logs, { exclude: [...new URL(cb.url).searchParams.values()] });
  }
  // The exact request id (assertFrenchErrorPage's candidates cannot start with '-' or '_').
  const id = await correlationIdOn(res, logs);
  assert.ok(id, `a correlation id on the page that is in the log\n${diag(w, res)}`);
  const line = await failureLine(w, id);
  assert.ok(line, `a "login failed" line with request_id ${id}\n${logs().slice(-2500)}`);
  if (named) assert.equal(line.provider, PROVIDER, `the line names the provider: ${JSON.stringify(line)}`);
  assert.match(String(line.error), reason, `the reason logged: ${JSON.stringify(line)}`);

  // (3) the token and userinfo endpoints reached exactly as expected (userinfo never, for a bad id_token).
  assert.equal(since(w, trial, '/token').length, token, `token endpoint calls: ${JSON.stringify(backChannel(w, trial))}`);
  assert.equal(since(w, trial, '/userinfo').length, userinfo, `userinfo calls: ${JSON.stringify(backChannel(w, trial))}`);

  // (4) no session: none set on the way, none held, and the protected route sends back to the provider.
  const set = res.history.flatMap((h) => h.setCookies).filter((c) => /^passerelle(\.\d+)?$/.test(c.name) && c.value !== '');
  assert.deepEqual(set.map((c) => c.raw), [], 'no session cookie set');
  assert.deepEqual(sessionCookies(trial.person, w.base).map((c) => c.name), [], 'no session cookie held');
  // (5) the upstream never called.
  assert.equal(w.upstream.requests.length, trial.upstream, 'the upstream was not called');
  const again = await trial.person.get(`${w.base}/dossier`, { follow: false });
  assertLoginRedirect(again, w.s, 'the protected route after the refusal');

  // (6) nothing secret in Passerelle's output.
  assertNoSecretsInLogs(w.s, tokenExtras(w, trial));
  return line;
}

// ---------------------------------------------------------------------------------------------------------------
// The harness: the rogue provider, straight, behaves as a strict OP (so the controls below mean something)

test('harness: the rogue provider, with no misbehaviour, is a strict OP (PKCE, one-time codes, client auth, signed id_token)', TIMEOUT, async (t) => {
  const redirectUri = 'http://127.0.0.1:9/.passerelle/callback';
  const op = await stopAfter(t, startRogueProvider({ redirectUris: [redirectUri] }));
  const verifier = randomBytes(32).toString('base64url');
  const challenge = createHash('sha256').update(verifier).digest('base64url');
  const authorize = async (extra = {}) => {
    const u = new URL(op.discovery.authorization_endpoint);
    const params = {
      response_type: 'code', client_id: op.clientId, redirect_uri: redirectUri, scope: 'openid email', state: 'state-0123456789',
      nonce: 'nonce-0123456789', code_challenge: challenge, code_challenge_method: 'S256', ...extra,
    };
    for (const [k, v] of Object.entries(params)) if (v !== undefined) u.searchParams.set(k, v);
    const res = await fetch(u, { redirect: 'manual' });
    return { status: res.status, location: res.headers.get('location') ? new URL(res.headers.get('location')) : undefined };
  };
  const basic = `Basic ${Buffer.from(`${op.clientId}:${op.clientSecret}`).toString('base64')}`;
  const exchange = async (code, { codeVerifier = verifier, authorization = basic, body = {} } = {}) => {
    const form = new URLSearchParams({ grant_type: 'authorization_code', code, redirect_uri: redirectUri, code_verifier: codeVerifier, ...body });
    const res = await fetch(op.discovery.token_endpoint, {
      method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded', ...(authorization ? { authorization } : {}) }, body: form,
    });
    return { status: res.status, json: await res.json() };
  };

  const ok = await authorize();
  assert.equal(ok.status, 302);
  assert.equal(`${ok.location.origin}${ok.location.pathname}`, redirectUri);
  assert.equal(ok.location.searchParams.get('state'), 'state-0123456789');
  assert.equal(ok.location.searchParams.get('iss'), op.issuer);
  const codeA = ok.location.searchParams.get('code');
  const codeB = (await authorize()).location.searchParams.get('code');

  assert.equal((await authorize({ redirect_uri: 'http://127.0.0.1:9/elsewhere' })).status, 400, 'unregistered redirect_uri: no redirect');
  assert.equal((await authorize({ code_challenge_method: 'plain' })).location.searchParams.get('error'), 'invalid_request', 'PKCE S256 only');
  assert.equal((await authorize({ code_challenge: undefined })).location.searchParams.get('error'), 'invalid_request', 'PKCE required');

  assert.equal((await exchange(codeA, { codeVerifier: randomBytes(32).toString('base64url') })).json.error, 'invalid_grant', 'wrong code_verifier');
  assert.equal((await exchange(codeA)).json.error, 'invalid_grant', 'a code is spent by a failed attempt too');
  assert.equal((await exchange(codeB, { authorization: null, body: { client_id: op.clientId, client_secret: op.clientSecret } })).status, 401, 'client_secret_post while client_secret_basic is registered');
  assert.equal((await exchange(codeB, { authorization: `Basic ${Buffer.from(`${op.clientId}:wrong`).toString('base64')}` })).status, 401, 'wrong secret');
  const good = await exchange(codeB);
  assert.equal(good.status, 200, JSON.stringify(good.json));
  assert.equal(good.json.token_type, 'Bearer');
  const jwks = await (await fetch(op.discovery.jwks_uri)).json();
  const { payload, protectedHeader } = await jwtVerify(good.json.id_token, createLocalJWKSet(jwks), {
    issuer: op.issuer, audience: op.clientId, algorithms: ['RS256'],
  });
  assert.equal(protectedHeader.kid, op.ring.main.kid);
  assert.equal(payload.nonce, 'nonce-0123456789');
  assert.equal(payload.sub, op.account.sub);
  assert.equal((await exchange(codeB)).json.error, 'invalid_grant', 'one-time code');

  const info = await fetch(op.discovery.userinfo_endpoint, { headers: { authorization: `Bearer ${good.json.access_token}` } });
  assert.equal(info.status, 200);
  assert.equal((await info.json()).email, op.account.email);
  assert.equal((await fetch(op.discovery.userinfo_endpoint)).status, 401, 'userinfo needs the access token');
});

// ---------------------------------------------------------------------------------------------------------------
// Basic profile (and the other misbehaviours), one Passerelle for all

/** id_token misbehaviours: the code is redeemed once, the id_token refused, userinfo never called: 400. */
const ID_TOKEN_CASES = [
  ['oidcc-client-test-nonce-invalid', { claims: (c) => ({ ...c, nonce: offByOne(c.nonce) }) }, /nonce/i],
  ['oidcc-client-test-invalid-iss (off by one character)', { claims: (c) => ({ ...c, iss: offByOne(c.iss) }) }, /iss/i],
  ['oidcc-client-test-invalid-aud (off by one character)', { claims: (c) => ({ ...c, aud: [offByOne(c.aud[0])] }) }, /aud/i],
  ['oidcc-client-test-missing-sub', { claims: ({ sub, ...c }) => c }, /sub/i],
  ['oidcc-client-test-missing-iat', { claims: ({ iat, ...c }) => c }, /iat/i],
  ['oidcc-client-test-missing-aud', { claims: ({ aud, ...c }) => c }, /aud/i],
  ['oidcc-client-test-idtoken-sig-none (alg none, no signature)', { alg: 'none' }, /alg|algorithm|none|unsigned|signature/i],
  ['oidcc-client-test-invalid-sig-rs256 (signature altered)', { alg: 'RS256', tamper: alterSignature }, /signature/i],
  ['oidcc-client-test-invalid-sig-es256 (signature altered)', { alg: 'ES256', tamper: alterSignature }, /signature/i],
  ['oidcc-client-test-invalid-sig-hs256 (signature altered; key: the client secret)', { alg: 'HS256', tamper: alterSignature }, /signature/i],
  ['expired id_token (exp 2 min ago, beyond the 60 s skew)', { claims: (c) => ({ ...c, iat: c.iat - 300, exp: c.iat - 120 }) }, /expir/i],
  ['iat 10 min in the future (beyond 2 min)', { claims: (c) => ({ ...c, iat: c.iat + 600, exp: c.iat + 1200 }) }, /future|iat|issue/i],
  ['RS256 by a key not in the JWKS (unknown kid)', { alg: 'RS256', key: 'rogue' }, /No matching key/i],
  ['ES256 by a key not in the JWKS (unknown kid)', { alg: 'ES256', key: 'rogueEc' }, /No matching key/i],
  ['RS256 by a key not in the JWKS, under the kid of a published key', { alg: 'RS256', key: 'rogue', kid: 'main' }, /signature/i],
  ['HS256 keyed with a wrong secret', { alg: 'HS256', key: 'wrong-secret' }, /signature/i],
  ['alg confusion: HS256 keyed with the published RSA public key (PEM), its kid', { alg: 'HS256', key: 'rsa-pem', kid: 'main' }, /signature/i],
  ['aud with an extra untrusted audience, azp = client_id', { claims: (c) => ({ ...c, aud: [...c.aud, 'https://untrusted.example/rp'], azp: c.aud[0] }) }, /aud/i],
  ['aud with an extra untrusted audience, no azp', { claims: (c) => ({ ...c, aud: [...c.aud, 'https://untrusted.example/rp'] }) }, /aud|azp|authorized party/i],
  ['azp of another client (OIDC Core §3.1.3.7 step 5)', { claims: (c) => ({ ...c, azp: 'another-client' }) }, /azp|authorized party/i],
];

/** Turn the table's symbolic keys into a signature spec for the rogue provider. */
function signSpec(op, spec) {
  const out = { ...spec };
  if (spec.key === 'wrong-secret') out.key = new TextEncoder().encode(`not-the-client-secret-${randomBytes(8).toString('hex')}`);
  if (spec.key === 'rsa-pem') out.key = new TextEncoder().encode(publicPem(op.ring.main));
  if (spec.kid === 'main') out.kid = op.ring.main.kid;
  return out;
}

test('Basic profile: oidcc-client-test-* and more against one Passerelle (client_secret_basic)', TIMEOUT, async (t) => {
  const w = await world(t);
  const { op } = w;
  const target = (p = '/dossier/42') => `${w.base}${p}`;

  /** Run one case: set the provider's misbehaviour, log in from a fresh person, return { trial, res }. */
  async function attempt(misbehaviour, url = target()) {
    op.setCase(misbehaviour);
    const trial = begin(w);
    const res = await trial.person.navigate(url);
    return { trial, res };
  }

  await t.test('oidcc-client-test: the control, a login that works end to end', async (st) => {
    const url = target('/dossier/42?onglet=pi%C3%A8ces');
    const { trial, res } = await attempt({}, url);
    const seen = assertSignedIn(w, trial, res, url);
    // The authorization request as the provider got it.
    const [authz] = since(w, trial, '/authorize');
    assert.equal(authz.query.response_type, 'code');
    assert.equal(authz.query.client_id, op.clientId);
    assert.equal(authz.query.redirect_uri, `${w.base}${PREFIX}/callback`);
    assert.deepEqual(authz.query.scope.split(' ').sort(), ['email', 'openid', 'profile']);
    assert.equal(authz.query.code_challenge_method, 'S256');
    // The id_token: RS256, a published kid, iss/aud/nonce as they should be; no identity claim in it.
    const idToken = decodeJwt(op.issued.filter((x) => x.type === 'id_token').at(-1).value);
    assert.deepEqual(idToken.header, { alg: 'RS256', typ: 'JWT', kid: op.ring.main.kid });
    assert.equal(idToken.payload.nonce, authz.query.nonce);
    assert.equal(idToken.payload.email, undefined);
    // Userinfo fetched with the access token.
    const [ui] = since(w, trial, '/userinfo');
    assert.equal(ui.headers.authorization, `Bearer ${op.issued.filter((x) => x.type === 'access_token').at(-1).value}`);
    assert.deepEqual(headerValues(seen.rawHeaders, 'X-Auth-Given-Name'), ['H%C3%A9l%C3%A8ne']);
    assert.deepEqual(headerValues(seen.rawHeaders, 'X-Auth-Family-Name'), ['Wamytan-No%C3%ABl']);
    // Back channel: discovery and JWKS (only if not cached yet: start-up's check uses a throw-away client), then the
    // code exchange, then userinfo.
    const back = backChannel(w, trial);
    st.diagnostic(`back channel of the control: ${JSON.stringify(back)}`);
    assert.deepEqual(back.filter((c) => !/^GET \/(\.well-known\/openid-configuration|jwks)$/.test(c)), ['POST /token', 'GET /userinfo']);
    assert.ok(back.filter((c) => c === 'GET /jwks').length <= 1);
  });

  await t.test('oidcc-client-test-idtoken-sig-rs256 (and the same with ES256 and HS256, controls of the invalid-sig cases)', async (st) => {
    for (const alg of ['RS256', 'ES256', 'HS256']) {
      await st.test(alg, async () => {
        const { trial, res } = await attempt({ idToken: { alg } });
        assertSignedIn(w, trial, res, target());
        const idToken = decodeJwt(op.issued.filter((x) => x.type === 'id_token').at(-1).value);
        assert.equal(idToken.header.alg, alg);
      });
    }
  });

  await t.test('oidcc-client-test-scope-userinfo-claims: claims only userinfo holds reach the upstream', async () => {
    const { trial, res } = await attempt({
      userinfoClaims: (c) => ({ ...c, email: 'h.wamytan@example.nc', given_name: 'Héléna' }),
    });
    const seen = assertSignedIn(w, trial, res, target(), { email: 'h.wamytan@example.nc' });
    assert.deepEqual(headerValues(seen.rawHeaders, 'X-Auth-Given-Name'), ['H%C3%A9l%C3%A9na']);
    const idToken = decodeJwt(op.issued.filter((x) => x.type === 'id_token').at(-1).value).payload;
    assert.equal(idToken.email, undefined, 'the id_token does not carry the email: it came from userinfo');
  });

  await t.test('oidcc-client-secret-basic: the code exchange authenticates with HTTP Basic only', async () => {
    const { trial, res } = await attempt({});
    assertSignedIn(w, trial, res, target());
    const [tok] = since(w, trial, '/token');
    const basic = /^Basic (.+)$/.exec(tok.headers.authorization || '');
    assert.ok(basic, `Authorization: Basic …, got ${tok.headers.authorization}`);
    assert.equal(Buffer.from(basic[1], 'base64').toString('utf8'), `${op.clientId}:${op.clientSecret}`);
    assert.equal(tok.form.client_secret, undefined, 'no secret in the body');
    assert.equal(tok.form.grant_type, 'authorization_code');
    assert.equal(tok.form.redirect_uri, `${w.base}${PREFIX}/callback`);
  });

  await t.test('aud as a single string (not an array): accepted', async () => {
    const { trial, res } = await attempt({ idToken: { claims: (c) => ({ ...c, aud: c.aud[0] }) } });
    assertSignedIn(w, trial, res, target());
  });

  for (const [name, spec, reason] of ID_TOKEN_CASES) {
    await t.test(name, async (st) => {
      const { trial, res } = await attempt({ idToken: signSpec(op, spec) });
      const line = await assertRefused(w, trial, res, { status: 400, reason, token: 1, userinfo: 0 });
      st.diagnostic(`logged: ${line.error}`);
      assert.ok(since(w, trial, '/jwks').length <= 1, 'at most one JWKS refetch');
    });
  }

  await t.test('signed userinfo (application/jwt, RS256): accepted, its claims reach the upstream (control)', async () => {
    const { trial, res } = await attempt({ userinfoSigned: { alg: 'RS256' }, userinfoClaims: (c) => ({ ...c, email: 'jwt.helene@example.nc' }) });
    assertSignedIn(w, trial, res, target(), { email: 'jwt.helene@example.nc' });
    assert.equal(since(w, trial, '/userinfo')[0].status, 200);
    assert.ok(w.op.issued.some((x) => x.type === 'userinfo_jwt'), 'userinfo was answered as a JWT');
  });

  for (const [name, misbehaviour, reason] of [
    ['oidcc-client-test-userinfo-invalid-sub', { userinfoClaims: (c) => ({ ...c, sub: offByOne(c.sub) }) }, /sub/i],
    ['signed userinfo with an altered signature', { userinfoSigned: { alg: 'RS256', tamper: alterSignature } }, /signature/i],
    ['signed userinfo by a key not in the JWKS', { userinfoSigned: { alg: 'RS256', key: 'rogue' } }, /key/i],
  ]) {
    await t.test(name, async (st) => {
      const { trial, res } = await attempt(misbehaviour);
      // Not a provider outage: the answer could not be verified, a 4xx like a bad id_token.
      const line = await assertRefused(w, trial, res, { status: 400, reason, token: 1, userinfo: 1 });
      st.diagnostic(`logged: ${line.error}`);
    });
  }

  await t.test('token response without id_token', async () => {
    const { trial, res } = await attempt({ tokenResponse: ({ id_token: _, ...body }) => body });
    await assertRefused(w, trial, res, { status: 400, reason: /id_token/i });
  });

  await t.test('token endpoint answers 400 invalid_grant: 400 "Connexion expirée", the code was refused (expired or replayed)', async (st) => {
    const answer = { status: 400, body: JSON.stringify({ error: 'invalid_grant', error_description: 'grant request is invalid' }) };
    const { trial, res } = await attempt({ tokenAnswer: answer });
    const line = await assertRefused(w, trial, res, { status: 400, reason: /invalid_grant/i, token: 1, userinfo: 0 });
    assert.match(res.body, /Connexion expirée/, 'the page says the sign-in attempt expired, with a way to retry');
    st.diagnostic(`logged: ${line.error}`);
  });

  for (const [name, answer, reason] of [
    ['token endpoint answers 500', { status: 500, contentType: 'text/html', body: '<h1>Internal Server Error</h1>' }, /token exchange/i],
    ['token endpoint answers 200 with a non-JSON body', { status: 200, contentType: 'text/html; charset=utf-8', body: '<!DOCTYPE html><p>maintenance</p>' }, /token exchange/i],
  ]) {
    await t.test(`${name}: 502, a provider failure`, async (st) => {
      const { trial, res } = await attempt({ tokenAnswer: answer });
      const line = await assertRefused(w, trial, res, { status: 502, reason, token: 1, userinfo: 0 });
      st.diagnostic(`logged: ${line.error}`);
    });
  }

  await t.test('token endpoint never answers: Passerelle gives up after its timeout (502) and keeps serving meanwhile', async (st) => {
    // Someone already signed in, on another route.
    op.setCase({});
    const other = begin(w);
    const first = await other.person.navigate(target('/autre/tableau'));
    assert.equal(first.status, 200, diag(w, first));

    op.setCase({ tokenAnswer: 'hang' });
    const trial = begin(w);
    let settled = false;
    const login = trial.person.navigate(target('/dossier/7')).finally(() => { settled = true; });
    const held = await op.waitFor((c) => c.path === '/token' && c.held && op.calls.indexOf(c) >= trial.calls);

    // While the code exchange hangs: a public page and the signed-in person's route are served.
    const upBefore = w.upstream.requests.length;
    const pub = await createPerson().navigate(target('/public/horaires'));
    assert.equal(pub.status, 200, `public route during the hang: ${pub.status}`);
    const autre = await other.person.navigate(target('/autre/liste'));
    assert.equal(autre.status, 200, `existing session during the hang: ${autre.status}`);
    assert.deepEqual(headerValues(w.upstream.last().rawHeaders, 'X-Auth-Sub'), [op.account.sub]);
    assert.equal(w.upstream.requests.length, upBefore + 2);
    assert.equal(settled, false, 'those were served while the login was still waiting on the provider');
    assert.equal(held.closed, false, 'and while the token request was still open');

    const res = await login;
    await op.waitFor((c) => c === held && c.closed);
    st.diagnostic('Passerelle closed the held token request itself');
    // The two requests above were the only ones to reach the upstream since.
    trial.upstream += 2;
    const line = await assertRefused(w, trial, res, { status: 502, reason: /token exchange/i, token: 1, userinfo: 0 });
    st.diagnostic(`logged: ${line.error}`);
  });

  for (const [name, edit, status, reason, named = true] of [
    ['authorization response iss of another issuer (RFC 9207)', (p) => p.set('iss', offByOne(p.get('iss'))), 400, /iss/i],
    ['authorization response without iss, though advertised (RFC 9207)', (p) => p.delete('iss'), 400, /iss/i],
    ['authorization response state not ours (made up)', (p) => p.set('state', randomBytes(32).toString('base64url')), 400, /state/i, false],
    ['callback with error=access_denied', (p) => { p.delete('code'); p.set('error', 'access_denied'); p.set('error_description', 'the person said no'); }, 403, /access_denied/],
  ]) {
    await t.test(`${name}: the code is never redeemed`, async (st) => {
      const { trial, res } = await attempt({ authorizationResponse: edit });
      const line = await assertRefused(w, trial, res, { status, reason, token: 0, userinfo: 0, named });
      st.diagnostic(`logged: ${line.error}`);
    });
  }

  await t.test('replayed callback (the same URL twice): no second session, the code not redeemed again', async () => {
    const { trial, res } = await attempt({});
    assertSignedIn(w, trial, res, target());
    const cb = callbackHop(w, res);
    for (const [who, person] of [['the same person', trial.person], ['another person', createPerson()]]) {
      const before = begin(w);
      const replay = await person.get(cb.url, { follow: false });
      assert.equal(replay.status, 400, `${who}: ${replay.status}\n${replay.body.slice(0, 400)}`);
      await assertFrenchErrorPage(replay, w.p.logs, { exclude: [...new URL(cb.url).searchParams.values()] });
      assert.deepEqual(replay.setCookies.filter((c) => /^passerelle(\.\d+)?$/.test(c.name) && c.value !== '').map((c) => c.raw), [], `${who}: no session cookie`);
      assert.deepEqual(backChannel(w, before), [], `${who}: the provider was not asked anything (code not redeemed again)`);
      assert.equal(w.upstream.requests.length, before.upstream);
    }
    assert.equal(since(w, trial, '/token').length, 1, 'one code exchange in all');
    assertNoSecretsInLogs(w.s);
  });

  await t.test('/metrics: each refused login is counted under its reason', async () => {
    const text = await (await fetch(`${w.p.adminUrl}/metrics`)).text();
    const count = (reason) => Number((text.match(new RegExp(`^passerelle_login_failures_total\\{reason="${reason}"\\} (\\d+)$`, 'm')) || [])[1]);
    assert.equal(count('userinfo'), 3, `the three bad userinfo answers:\n${text}`);
    assert.equal(count('issuer'), 2, 'the RFC 9207 cases');
    assert.equal(count('provider_error'), 1, 'access_denied');
    assert.equal(count('acr'), 0);
    assert.ok(count('id_token') >= ID_TOKEN_CASES.length + 1, `every bad id_token, and the missing one: ${count('id_token')}`);
    assert.ok(count('provider_unavailable') >= 3, `500, non-JSON and the hang: ${count('provider_unavailable')}`);
    assert.ok(count('state') >= 4, `invalid_grant, a made-up state, two replays: ${count('state')}`);
  });
});

// ---------------------------------------------------------------------------------------------------------------
// Worlds of their own

test('oidcc-client-secret-post: the code exchange authenticates with the secret in the body only', TIMEOUT, async (t) => {
  const w = await world(t, { provider: { authMethod: 'client_secret_post' } });
  const trial = begin(w);
  const url = `${w.base}/dossier/1`;
  const res = await trial.person.navigate(url);
  assertSignedIn(w, trial, res, url);
  const [tok] = since(w, trial, '/token');
  assert.equal(tok.headers.authorization, undefined, 'no Authorization header');
  assert.equal(tok.form.client_id, w.op.clientId);
  assert.equal(tok.form.client_secret, w.op.clientSecret);
});

test('oidcc-client-test-kid-absent-single-jwks: an id_token without kid, a JWKS of one key: accepted', TIMEOUT, async (t) => {
  const w = await world(t, { provider: { misbehave: { jwks: (_keys, ring) => [ring.main.publicJwk], idToken: { kid: null } } } });
  const trial = begin(w);
  const url = `${w.base}/dossier/1`;
  const res = await trial.person.navigate(url);
  assertSignedIn(w, trial, res, url);
  assert.deepEqual(decodeJwt(w.op.issued.find((x) => x.type === 'id_token').value).header, { alg: 'RS256', typ: 'JWT' });
});

test('oidcc-client-test-kid-absent-multiple-jwks: an id_token without kid, two RSA keys (and an EC one) published: a clean answer either way', TIMEOUT, async (t) => {
  const w = await world(t, {
    provider: { misbehave: { jwks: (_keys, ring) => [ring.main.publicJwk, ring.second.publicJwk, ring.ec.publicJwk], idToken: { kid: null } } },
  });
  const trial = begin(w);
  const url = `${w.base}/dossier/1`;
  const res = await trial.person.navigate(url);
  assert.ok(res.status < 500, diag(w, res));
  if (res.status === 200) {
    t.diagnostic('Passerelle accepted it (found the key among the candidates)');
    assertSignedIn(w, trial, res, url);
  } else {
    // The OIDF allows refusing an ambiguous key choice: then a clean refusal, the id_token not trusted.
    const line = await assertRefused(w, trial, res, { status: 400, reason: /key/i, token: 1, userinfo: 0 });
    t.diagnostic(`Passerelle refused it: ${line.error}`);
  }
});

test('oidcc-client-test-signing-key-rotation: a new kid after start-up → exactly one JWKS refetch, then cached', TIMEOUT, async (t) => {
  const w = await world(t);
  const jwksPath = new URL(w.op.discovery.jwks_uri).pathname;
  const first = begin(w);
  const res1 = await first.person.navigate(`${w.base}/un`);
  assertSignedIn(w, first, res1, `${w.base}/un`);
  assert.equal(count(w.p.logs(), REFETCHED), 0);

  // Rotation: the provider now publishes `next` too and signs with it.
  w.op.setCase({ jwks: (keys, ring) => [ring.next.publicJwk, ...keys], idToken: { key: 'next' } });
  const second = begin(w);
  const res2 = await second.person.navigate(`${w.base}/deux`);
  assertSignedIn(w, second, res2, `${w.base}/deux`);
  assert.equal(decodeJwt(w.op.issued.filter((x) => x.type === 'id_token').at(-1).value).header.kid, w.op.ring.next.kid);
  assert.deepEqual(backChannel(w, second), ['POST /token', `GET ${jwksPath}`, 'GET /userinfo'], 'one JWKS request, between the exchange and userinfo');
  assert.equal(count(w.p.logs(), REFETCHED), 1);

  const third = begin(w);
  const res3 = await third.person.navigate(`${w.base}/trois`);
  assertSignedIn(w, third, res3, `${w.base}/trois`);
  assert.deepEqual(backChannel(w, third), ['POST /token', 'GET /userinfo'], 'the new key is cached');
});

test('oidcc-client-test-discovery-jwks-uri-keys: keys come from the jwks_uri discovery names', TIMEOUT, async (t) => {
  const jwksPath = `/oidc/certs/${randomBytes(4).toString('hex')}.json`;
  const w = await world(t, { provider: { jwksPath } });
  assert.equal(w.op.discovery.jwks_uri, `${w.op.issuer}${jwksPath}`);
  const atStart = w.op.calls.filter((c) => c.backChannel).map((c) => `${c.method} ${c.path} ${c.status}`);
  assert.ok(atStart.includes(`GET ${jwksPath} 200`), `the advertised jwks_uri was fetched: ${JSON.stringify(atStart)}`);
  assert.equal(w.op.callsTo('/jwks').length, 0, 'no guessed JWKS location');
  const trial = begin(w);
  const res = await trial.person.navigate(`${w.base}/dossier`);
  assertSignedIn(w, trial, res, `${w.base}/dossier`);
});

/** Write `toml` to a fresh directory (removed by t.after) and run `passerelle ARGS --config config.toml` there. */
async function runWith(t, toml, args) {
  const dir = await mkdtemp(path.join(tmpdir(), 'passerelle-conformance-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  await writeFile(path.join(dir, 'config.toml'), toml, { mode: 0o600 });
  const run = await runPasserelle([...args, '--config', 'config.toml'], { cwd: dir, env: { PASSERELLE_KEY: sessionKey() }, timeoutMs: 30_000 });
  return { ...run, output: `${run.stdout}${run.stderr}` };
}

test('oidcc-client-test-discovery-issuer-mismatch: a trailing slash of difference stops `passerelle run` and `check --online`, naming the provider', TIMEOUT, async (t) => {
  for (const [i, [name, advertise, configure]] of [
    ['discovery says issuer/', (iss) => `${iss}/`, (iss) => iss],
    ['configured issuer/, discovery says issuer', (iss) => iss, (iss) => `${iss}/`],
    ['control: the same issuer on both sides', (iss) => iss, (iss) => iss],
  ].entries()) {
    await t.test(name, async (st) => {
      const a = await addresses();
      const op = await stopAfter(st, startRogueProvider({
        redirectUris: a.redirectUris,
        misbehave: { discovery: (doc) => ({ ...doc, issuer: advertise(doc.issuer) }) },
      }));
      const upstream = await stopAfter(st, startUpstream());
      const configured = configure(op.issuer);
      const toml = worldToml(a, { ...op, issuer: configured, authMethod: op.authMethod }, upstream);
      const check = await runWith(st, toml, ['check', '--online']);
      await keepOutput(outputName(t, { prefix: 'conformance_', suffix: `${i}_check` }), toml, check.output);
      assert.ok(op.callsTo('/.well-known/openid-configuration').length >= 1, 'discovery was fetched');
      if (advertise(op.issuer) === configured) {
        assert.equal(check.code, 0, `the same TOML with matching issuers passes:\n${check.output}`);
        return;
      }
      const run = await runWith(st, toml, ['run']);
      await keepOutput(outputName(t, { prefix: 'conformance_', suffix: `${i}_run` }), toml, run.output);
      for (const [cmd, r] of [['check --online', check], ['run', run]]) {
        assert.equal(r.signal, null, `${cmd} exits by itself (not killed after 30 s): ${JSON.stringify(r)}`);
        assert.notEqual(r.code, 0, `${cmd}: non-zero exit:\n${r.output}`);
        assert.match(r.output, new RegExp(`\\b${PROVIDER}\\b`), `${cmd}: the message names the provider:\n${r.output}`);
        assert.match(r.output, /issuer/i, `${cmd}: the message speaks of the issuer:\n${r.output}`);
        assert.ok(r.output.includes(advertise(op.issuer)) && r.output.includes(configured), `${cmd}: both issuers shown:\n${r.output}`);
        assert.ok(!r.output.includes(op.clientSecret), `${cmd}: the client secret is not printed`);
      }
      assert.equal(op.callsTo('/token').length + op.callsTo('/authorize').length, 0);
      assert.equal(await httpGetStatus(`http://127.0.0.1:${a.adminPort}/ready`, 300), undefined, 'nothing left serving');
    });
  }
});

test('oidcc-client-test-idtoken-sig-none, configuration side: `none` cannot be listed in id_token_algs', TIMEOUT, async (t) => {
  const a = await addresses();
  const op = { issuer: 'http://127.0.0.1:9', clientId: 'client', clientSecret: randomBytes(16).toString('hex'), authMethod: 'client_secret_basic' };
  const accepted = await runWith(t, worldToml(a, op, { url: 'http://127.0.0.1:9' }, { id_token_algs: ['RS256', 'ES256'] }), ['check']);
  assert.equal(accepted.code, 0, `control: id_token_algs without none passes check:\n${accepted.output}`);
  const refused = await runWith(t, worldToml(a, op, { url: 'http://127.0.0.1:9' }, { id_token_algs: ['RS256', 'none'] }), ['check']);
  assert.notEqual(refused.code, 0, `id_token_algs with none must be refused:\n${refused.output}`);
  assert.match(refused.output, /id_token_algs/, refused.output);
  assert.match(refused.output, /none/, refused.output);
});
