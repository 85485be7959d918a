// Passerelle's core behaviour end to end (issue #2): a real OpenID Provider (oidc-provider), the Passerelle
// binary, a recording upstream, and a scripted person with a cookie jar. Each scenario starts and stops its own
// servers, all on 127.0.0.1.
//
// Needs target/release/passerelle (or $PASSERELLE_BIN). Run: tests/run-integration.sh

import assert from 'node:assert/strict';
import { test } from 'node:test';

import {
  assertFrenchErrorPage, assertLoginRedirect, assertNoSecretsInLogs, assertUnauthorized, decodeJwt, identityLines,
  sessionCookies,
} from '../support/checks.mjs';
import { createPerson } from '../support/person.mjs';
import { ACCOUNTS } from '../support/provider.mjs';
import { PREFIX, startStack } from '../support/stack.mjs';
import { headerValues } from '../support/upstream.mjs';

const { alice, helene } = ACCOUNTS;

/** Log in `login` starting from a protected URL; returns the final response (asserts it is the app's 200). */
async function loginAt(s, url, login = 'alice', person = s.person) {
  const res = await person.login(url, login);
  assert.equal(res.status, 200, `login via ${url} should end on the app with 200, ended on ${res.url} with ${res.status}:\n${res.body.slice(0, 800)}\n--- passerelle logs:\n${s.passerelle.logs().slice(-3000)}`);
  assert.equal(res.url, url, 'login ends on the exact original URL');
  return res;
}

function callbackOf(res, s) {
  return res.history.find((h) => h.url.startsWith(`${s.base}${PREFIX}/callback`));
}

// (a) ------------------------------------------------------------------------------------------------------------
test('(a) login: navigation to a protected route → provider (state, nonce, PKCE S256) → back on the exact URL with identity headers', async (t) => {
  const s = await startStack(t);
  const target = `${s.base}/app/page?x=1&y=%C3%A9&z=a%2Fb`;

  let first = await s.person.get(target, { follow: false });
  assertLoginRedirect(first, s, 'unauthenticated navigation');
  if (first.location.startsWith(`${s.base}${PREFIX}/login`)) {
    // A detour through Passerelle's own /login (checked separately by (a0)); the authorize request comes next.
    first = await s.person.get(first.location, { follow: false });
    assert.equal(first.status, 302, `${PREFIX}/login: expected 302, got ${first.status}: ${first.body.slice(0, 500)}`);
  }
  const authz = new URL(first.location);
  assert.equal(`${authz.origin}${authz.pathname}`, s.op.discovery.authorization_endpoint);
  const q = authz.searchParams;
  assert.equal(q.get('response_type'), 'code');
  assert.equal(q.get('client_id'), s.op.clientId);
  assert.equal(q.get('redirect_uri'), `${s.base}${PREFIX}/callback`);
  assert.ok(q.get('scope').split(' ').includes('openid'), `scope ${q.get('scope')}`);
  for (const scope of ['email', 'profile']) assert.ok(q.get('scope').split(' ').includes(scope), `route scope ${scope} requested`);
  assert.ok((q.get('state') || '').length >= 32, `state too short: ${q.get('state')}`);
  assert.ok((q.get('nonce') || '').length >= 32, `nonce too short: ${q.get('nonce')}`);
  assert.notEqual(q.get('state'), q.get('nonce'));
  assert.equal(q.get('code_challenge_method'), 'S256');
  assert.match(q.get('code_challenge') || '', /^[A-Za-z0-9_-]{43}$/);
  const flow = first.setCookies.find((c) => c.name.startsWith('passerelle_flow_'));
  assert.ok(flow, `a passerelle_flow_* cookie is set; got ${first.setCookies.map((c) => c.raw).join(' | ')}`);
  // Path=/ so a login started on any protected path sees (and caps) the flows already in progress.
  assert.equal(flow.attributes.path, '/');
  assert.ok('httponly' in flow.attributes, 'flow cookie is HttpOnly');
  assert.equal(s.upstream.requests.length, 0, 'nothing reached the upstream before login');

  const res = await s.person.throughProvider(await s.person.get(first.location), { login: 'alice' });
  assert.deepEqual(res.steps, ['login']);
  assert.equal(res.status, 200, `ended on ${res.url} with ${res.status}:\n${res.body.slice(0, 800)}\n${s.passerelle.logs().slice(-3000)}`);
  assert.equal(res.url, target, 'back on the exact original URL, query string included');

  const cb = callbackOf(res, s);
  assert.ok(cb, 'the provider sent the person to the callback');
  assert.equal(new URL(cb.url).searchParams.get('iss'), s.op.issuer, 'provider sent RFC 9207 iss');
  assert.equal(cb.status, 302);
  assert.equal(cb.location, target);
  const session = cb.setCookies.find((c) => c.name === 'passerelle');
  assert.ok(session, `the callback sets the session cookie; got ${cb.setCookies.map((c) => c.raw).join(' | ')}`);
  assert.ok('httponly' in session.attributes, 'session cookie is HttpOnly');
  assert.match(session.attributes.samesite || '', /^lax$/i, 'session cookie is SameSite=Lax');
  assert.equal(session.attributes.path, '/', 'session cookie Path=/');
  assert.deepEqual(s.person.jar.all(s.base).filter((c) => c.name.startsWith('passerelle_flow_')).map((c) => c.name), [],
    'the single-use flow cookie is gone after the callback');

  assert.equal(s.upstream.requests.length, 1);
  const up = s.upstream.last();
  assert.equal(up.method, 'GET');
  assert.equal(up.url, '/app/page?x=1&y=%C3%A9&z=a%2Fb');
  assert.deepEqual(headerValues(up.rawHeaders, 'X-Auth-Sub'), [alice.sub]);
  assert.deepEqual(headerValues(up.rawHeaders, 'X-Auth-Email'), [alice.email]);
  assert.deepEqual(headerValues(up.rawHeaders, 'X-Auth-Family-Name'), [alice.family_name]);
  for (const [name, value] of identityLines(up.rawHeaders)) {
    assert.ok(!/token/i.test(name) && !value.includes('.ey'), `no token is forwarded (${name})`);
  }

  // The session is used on the next request: no new trip to the provider.
  const authorizeCalls = s.op.callsTo(new URL(s.op.discovery.authorization_endpoint).pathname).length;
  const again = await s.person.get(`${s.base}/other`);
  assert.equal(again.status, 200);
  assert.deepEqual(headerValues(s.upstream.last().rawHeaders, 'X-Auth-Sub'), [alice.sub]);
  assert.equal(s.op.callsTo(new URL(s.op.discovery.authorization_endpoint).pathname).length, authorizeCalls);

  assertNoSecretsInLogs(s, [['the session cookie', session.value]]);
});

test('(a0) with a single provider, an unauthenticated navigation is sent straight to its authorize endpoint', async (t) => {
  const s = await startStack(t);
  const target = `${s.base}/app/page?x=1`;
  const first = await s.person.get(target, { follow: false });
  assert.equal(first.status, 302, `expected 302, got ${first.status}: ${first.body.slice(0, 500)}`);
  const loc = new URL(first.location);
  assert.equal(`${loc.origin}${loc.pathname}`, s.op.discovery.authorization_endpoint,
    `one redirect to the provider expected (DESIGN §4), got ${first.location}`);
});

// (b) ------------------------------------------------------------------------------------------------------------
test('(b) non-ASCII: Hélène Wamytan-Noël reaches the upstream percent-encoded UTF-8 by default', async (t) => {
  const s = await startStack(t);
  await loginAt(s, `${s.base}/dossier`, 'helene');
  const up = s.upstream.last();
  assert.deepEqual(headerValues(up.rawHeaders, 'X-Auth-Family-Name'), ['Wamytan-No%C3%ABl']);
  assert.deepEqual(headerValues(up.rawHeaders, 'X-Auth-Given-Name'), ['H%C3%A9l%C3%A8ne']);
  assert.deepEqual(headerValues(up.rawHeaders, 'X-Auth-Email'), [helene.email], 'ASCII values are unchanged');
  assert.deepEqual(headerValues(up.rawHeaders, 'X-Auth-Sub'), [helene.sub]);
  assert.equal(decodeURIComponent(headerValues(up.rawHeaders, 'X-Auth-Family-Name')[0]), helene.family_name);
});

test('(b2) non-ASCII: header_encoding utf8, base64 and rfc2047 each carry Wamytan-Noël intact', async (t) => {
  // Node's HTTP parser hands header values over as latin1: re-read the bytes as UTF-8.
  const rawBytes = (v) => Buffer.from(v, 'latin1');
  const decoders = {
    utf8: (v) => rawBytes(v).toString('utf8'),
    base64: (v) => Buffer.from(v, 'base64').toString('utf8'),
    rfc2047: (v) => {
      const m = v.match(/^=\?utf-8\?([bq])\?(.*)\?=$/i);
      assert.ok(m, `rfc2047 encoded-word expected, got ${v}`);
      if (m[1].toLowerCase() === 'b') return Buffer.from(m[2], 'base64').toString('utf8');
      return Buffer.from(m[2].replace(/_/g, ' ').replace(/=([0-9a-f]{2})/gi, (_, h) => String.fromCharCode(parseInt(h, 16))), 'latin1').toString('utf8');
    },
  };
  for (const [encoding, decode] of Object.entries(decoders)) {
    await t.test(encoding, async (st) => {
      const s = await startStack(st, { config: { headerEncoding: encoding } });
      await loginAt(s, `${s.base}/dossier`, 'helene');
      const up = s.upstream.last();
      const [family] = headerValues(up.rawHeaders, 'X-Auth-Family-Name');
      assert.ok(family !== undefined, 'X-Auth-Family-Name is sent');
      assert.equal(decode(family), helene.family_name, `raw value ${JSON.stringify(family)}`);
      const [given] = headerValues(up.rawHeaders, 'X-Auth-Given-Name');
      assert.equal(decode(given), helene.given_name, `raw value ${JSON.stringify(given)}`);
    });
  }
});

// (c) ------------------------------------------------------------------------------------------------------------
const SPOOFED = [
  ['X-Auth-Sub', 'evil'],
  ['x-auth-sub', 'evil2'],
  ['X_Auth_Sub', 'evil3'],
  ['X-Auth-Anything', 'x'],
  ['X-AUTH-EMAIL', 'evil@example.org'],
  ['x_auth_family_name', 'Evil'],
];

test('(c) spoofed identity headers never reach the upstream, logged in or not, public or protected route', async (t) => {
  const s = await startStack(t);
  const spoofValues = new Set(SPOOFED.map(([, v]) => v));
  const noSpoof = (up, what) => {
    for (let i = 0; i < up.rawHeaders.length; i += 2) {
      const [name, value] = [up.rawHeaders[i], up.rawHeaders[i + 1]];
      if (/^x[-_]auth[-_]/i.test(name)) {
        assert.ok(!spoofValues.has(value), `${what}: spoofed ${name}: ${value} reached the upstream`);
      }
    }
  };

  // Not logged in, public route: forwarded, without any identity header.
  let res = await s.person.get(`${s.base}/public/page`, { headers: SPOOFED });
  assert.equal(res.status, 200, `public route without session: ${res.status} ${res.body.slice(0, 300)}`);
  assert.equal(s.upstream.requests.length, 1);
  assert.deepEqual(identityLines(s.upstream.last().rawHeaders), [], 'anonymous public request: no X-Auth-* at all');

  // Not logged in, protected route: not forwarded at all (navigation → login, API → 401).
  res = await s.person.get(`${s.base}/app`, { headers: SPOOFED, follow: false });
  assertLoginRedirect(res, s, 'anonymous navigation with spoofed headers');
  res = await s.person.api(`${s.base}/app`, { headers: SPOOFED });
  assertUnauthorized(res, 'anonymous API request with spoofed headers');
  assert.equal(s.upstream.requests.length, 1, 'the protected route forwarded nothing without a session');

  await loginAt(s, `${s.base}/app/start`, 'alice');

  // Logged in, protected route: exactly the real values.
  res = await s.person.get(`${s.base}/app/data`, { headers: SPOOFED });
  assert.equal(res.status, 200);
  let up = s.upstream.last();
  assert.equal(up.url, '/app/data');
  noSpoof(up, 'logged-in protected');
  assert.deepEqual(headerValues(up.rawHeaders, 'X-Auth-Sub'), [alice.sub]);
  assert.deepEqual(headerValues(up.rawHeaders, 'X-Auth-Email'), [alice.email]);
  assert.deepEqual(headerValues(up.rawHeaders, 'X-Auth-Family-Name'), [alice.family_name]);
  assert.deepEqual(headerValues(up.rawHeaders, 'X-Auth-Anything'), []);
  assert.deepEqual(headerValues(up.rawHeaders, 'X_Auth_Sub'), []);
  assert.deepEqual(headerValues(up.rawHeaders, 'x_auth_family_name'), []);

  // Logged in, API-style request to the protected route: same.
  res = await s.person.api(`${s.base}/app/api`, { headers: SPOOFED });
  assert.equal(res.status, 200);
  up = s.upstream.last();
  noSpoof(up, 'logged-in API');
  assert.deepEqual(headerValues(up.rawHeaders, 'X-Auth-Sub'), [alice.sub]);

  // Logged in, public route: no identity header configured there, so none at all.
  res = await s.person.get(`${s.base}/public/page`, { headers: SPOOFED });
  assert.equal(res.status, 200);
  up = s.upstream.last();
  assert.equal(up.url, '/public/page');
  assert.deepEqual(identityLines(up.rawHeaders), [], 'logged-in public request: no X-Auth-* at all');
});

// (c2) -----------------------------------------------------------------------------------------------------------
test('(c2) spoofed identity headers on CORS preflights and on Passerelle\'s own endpoints are never believed', async (t) => {
  // Behind a trusted front proxy (loopback), as forward-auth is only answered to one.
  const s = await startStack(t, { config: { extraServer: 'trusted_proxies = ["127.0.0.1/32"]\n' } });
  const preflight = [['Origin', 'https://evil.example'], ['Access-Control-Request-Method', 'POST'],
    ['Access-Control-Request-Headers', 'x-auth-sub'], ...SPOOFED];

  // A preflight carries no cookie. Public route: forwarded to the app (which answers CORS), without identity.
  let res = await s.person.request(`${s.base}/public/api`, { method: 'OPTIONS', headers: preflight, cookies: false });
  assert.equal(res.status, 200, `preflight on a public route: ${res.status} ${res.body.slice(0, 300)}`);
  assert.equal(s.upstream.last().method, 'OPTIONS');
  assert.deepEqual(identityLines(s.upstream.last().rawHeaders), [], 'a public preflight: no X-Auth-* at all');
  // Protected route: no session, so not forwarded at all, whatever the spoofed headers say.
  const before = s.upstream.requests.length;
  res = await s.person.request(`${s.base}/app/api`, { method: 'OPTIONS', headers: preflight, cookies: false });
  assertUnauthorized(res, 'a preflight on a protected route, no session');
  assert.equal(s.upstream.requests.length, before, 'the protected route forwarded nothing');

  await loginAt(s, `${s.base}/app/start`, 'alice');

  // A credentialed OPTIONS with a session: the real identity only.
  res = await s.person.request(`${s.base}/app/api`, { method: 'OPTIONS', headers: SPOOFED });
  assert.equal(res.status, 200, `OPTIONS with a session: ${res.status}`);
  assert.deepEqual(headerValues(s.upstream.last().rawHeaders, 'X-Auth-Sub'), [alice.sub]);
  assert.deepEqual(identityLines(s.upstream.last().rawHeaders).filter(([, v]) => SPOOFED.some(([, x]) => x === v)), []);

  // Passerelle's own endpoints read the session, never the request's headers.
  res = await s.person.api(`${s.base}${PREFIX}/userinfo`, { headers: SPOOFED });
  assert.equal(res.status, 200, `userinfo: ${res.status}`);
  const info = JSON.parse(res.body);
  assert.equal(info.claims.sub, alice.sub, 'userinfo shows the session\'s sub');
  assert.ok(!res.body.includes('evil'), `a spoofed value leaked into userinfo: ${res.body}`);
  res = await s.person.request(`${s.base}${PREFIX}/auth`, { headers: [['Accept', '*/*'], ['X-Original-URI', '/app/api'], ...SPOOFED] });
  assert.equal(res.status, 200, `forward-auth: ${res.status}`);
  assert.equal(res.headers['x-auth-sub'], alice.sub, 'forward-auth answers the session\'s sub');
  for (const [name, value] of Object.entries(res.headers)) {
    assert.ok(!/^x[-_]auth[-_]/i.test(name) || !SPOOFED.some(([, v]) => v === value), `forward-auth echoed a spoofed ${name}: ${value}`);
  }
  // And without a session, spoofed headers do not make forward-auth say yes.
  res = await createPerson().request(`${s.base}${PREFIX}/auth`, { headers: [['Accept', '*/*'], ['X-Original-URI', '/app/api'], ...SPOOFED] });
  assert.equal(res.status, 401, `forward-auth without a session: ${res.status}`);
  assert.equal(res.headers['x-auth-sub'], undefined);
});

// (c3) -----------------------------------------------------------------------------------------------------------
test('(c3) cors_allow_preflight: a CORS preflight to a protected API is forwarded without a session and without identity; nothing else is', async (t) => {
  const s = await startStack(t, {
    config: {
      extraRoutes: (upstream) => `
[[route]]
path = "/api"
upstream = ${JSON.stringify(upstream)}
providers = ["op"]
scopes = ["email"]
cors_allow_preflight = true
[route.headers]
"X-Auth-Sub" = "sub"
`,
    },
  });
  const preflight = [['Origin', 'https://front.example.gouv.fr'], ['Access-Control-Request-Method', 'POST'], ...SPOOFED];
  let res = await s.person.request(`${s.base}/api/dossiers`, { method: 'OPTIONS', headers: preflight, cookies: false });
  assert.equal(res.status, 200, `a preflight on /api: ${res.status} ${res.body.slice(0, 300)}`);
  const up = s.upstream.last();
  assert.equal(`${up.method} ${up.url}`, 'OPTIONS /api/dossiers');
  assert.deepEqual(identityLines(up.rawHeaders), [], 'a forwarded preflight carries no identity, spoofed or not');

  // Not a preflight (no Origin, or no Access-Control-Request-Method, or another method): authentication as usual.
  const before = s.upstream.requests.length;
  for (const [what, method, headers] of [
    ['a bare OPTIONS', 'OPTIONS', SPOOFED],
    ['OPTIONS without Access-Control-Request-Method', 'OPTIONS', [['Origin', 'https://front.example.gouv.fr']]],
    ['a GET with preflight headers', 'GET', preflight],
    ['a POST with preflight headers', 'POST', preflight],
  ]) {
    res = await s.person.request(`${s.base}/api/dossiers`, { method, headers: [['Accept', 'application/json'], ...headers], cookies: false });
    assertUnauthorized(res, what);
  }
  // A route without the option keeps preflights behind authentication.
  res = await s.person.request(`${s.base}/app/x`, { method: 'OPTIONS', headers: preflight, cookies: false });
  assertUnauthorized(res, 'a preflight on a route without cors_allow_preflight');
  assert.equal(s.upstream.requests.length, before, 'nothing else reached the upstream');
});

// (d) ------------------------------------------------------------------------------------------------------------
test('(d) tampered session cookie → navigation 302 to login, API 401, never 5xx', async (t) => {
  const s = await startStack(t);
  await loginAt(s, `${s.base}/app`, 'alice');
  const original = s.person.jar.get(s.base, 'passerelle');
  assert.ok(original, 'session cookie present after login');
  const v = original.value;
  const mid = Math.floor(v.length / 2);
  const flipped = v.slice(0, mid) + (v[mid] === 'A' ? 'B' : 'A') + v.slice(mid + 1);
  const variants = {
    'one character flipped in the middle': flipped,
    truncated: v.slice(0, mid),
    'garbage': 'garbage-not-a-session',
    'random base64 of the same length': Buffer.from(Array.from({ length: v.length }, (_, i) => (i * 7 + 3) % 256)).toString('base64url').slice(0, v.length),
    empty: '',
  };
  const before = s.upstream.requests.length;
  for (const [what, value] of Object.entries(variants)) {
    s.person.jar.set(s.base, 'passerelle', value);
    const nav = await s.person.get(`${s.base}/app/secret`, { follow: false });
    assertLoginRedirect(nav, s, `navigation with a ${what} cookie`);
    s.person.jar.set(s.base, 'passerelle', value);
    const api = await s.person.api(`${s.base}/app/secret`);
    assert.ok(api.status < 500, `API with a ${what} cookie: ${api.status}`);
    assertUnauthorized(api, `API request with a ${what} cookie`);
  }
  assert.equal(s.upstream.requests.length, before, 'no tampered request reached the upstream');

  // The genuine cookie still works (the key did not change).
  s.person.jar.set(s.base, 'passerelle', v);
  const ok = await s.person.get(`${s.base}/app/secret`, { follow: false });
  assert.equal(ok.status, 200);
  assert.deepEqual(headerValues(s.upstream.last().rawHeaders, 'X-Auth-Sub'), [alice.sub]);
});

// (e) ------------------------------------------------------------------------------------------------------------
test('(e) expired session (max_lifetime = 2s): the next navigation logs in again', async (t) => {
  const s = await startStack(t, { config: { maxLifetime: '2s' } });
  await loginAt(s, `${s.base}/app`, 'alice');
  const loggedInAt = Date.now();
  const fresh = await s.person.get(`${s.base}/app/fresh`, { follow: false });
  assert.equal(fresh.status, 200, 'session valid right after login');

  // Waiting for time to pass is the point of this scenario (not a synchronisation): let max_lifetime (2 s)
  // elapse, with a margin for second-granularity timestamps.
  await new Promise((r) => setTimeout(r, Math.max(0, loggedInAt + 3200 - Date.now())));

  const before = s.upstream.requests.length;
  const api = await s.person.api(`${s.base}/app/late`);
  assertUnauthorized(api, 'API request with an expired session');
  const target = `${s.base}/app/late?n=2`;
  const nav = await s.person.get(target, { follow: false });
  assertLoginRedirect(nav, s, 'navigation with an expired session');
  assert.equal(s.upstream.requests.length, before, 'nothing forwarded with the expired session');

  // The provider session still exists: Passerelle's new login goes through without a form.
  const res = await s.person.throughProvider(await s.person.get(nav.location), { login: 'alice' });
  assert.equal(res.status, 200);
  assert.equal(res.url, target);
  assert.deepEqual(headerValues(s.upstream.last().rawHeaders, 'X-Auth-Sub'), [alice.sub]);
});

test('(e2) idle timeout (idle_timeout = 3s): activity keeps the session, 3 s of silence ends it', async (t) => {
  const s = await startStack(t, { config: { idleTimeout: '3s' } });
  await loginAt(s, `${s.base}/app`, 'alice');
  // Waiting for time to pass is the point here too (not a synchronisation): requests 1.5 s apart, in all
  // longer than the idle timeout, keep the session alive…
  const pause = (ms) => new Promise((r) => setTimeout(r, ms));
  for (let i = 1; i <= 3; i++) {
    await pause(1500);
    const res = await s.person.get(`${s.base}/app/active-${i}`, { follow: false });
    assert.equal(res.status, 200, `request ${i} after ${i * 1.5} s of activity: ${res.status} ${res.location || ''}`);
  }
  // …and then more than 3 s without a request ends it.
  await pause(4200);
  assertLoginRedirect(await s.person.get(`${s.base}/app/idle`, { follow: false }), s, 'navigation after 4.2 s idle');
});

// (f) ------------------------------------------------------------------------------------------------------------
test('(f) logout: cookie deleted, RP-initiated logout at the provider, back on /logged-out, then login required', async (t) => {
  const s = await startStack(t);
  await loginAt(s, `${s.base}/app`, 'alice');
  assert.ok(sessionCookies(s.person, s.base).length > 0);

  const lo = await s.person.get(`${s.base}${PREFIX}/logout`, { follow: false });
  assert.equal(lo.status, 302, `logout: ${lo.status} ${lo.body.slice(0, 300)}`);
  const deleted = lo.setCookies.find((c) => c.name === 'passerelle');
  assert.ok(deleted, `logout deletes the session cookie; got ${lo.setCookies.map((c) => c.raw).join(' | ')}`);
  const expiresPast = deleted.attributes.expires && Date.parse(deleted.attributes.expires) <= Date.now();
  assert.ok(deleted.attributes['max-age'] === '0' || expiresPast, `deletion uses Max-Age=0: ${deleted.raw}`);
  assert.deepEqual(sessionCookies(s.person, s.base).map((c) => c.name), [], 'no session cookie left');

  const end = new URL(lo.location);
  assert.equal(`${end.origin}${end.pathname}`, s.op.discovery.end_session_endpoint);
  const hint = end.searchParams.get('id_token_hint');
  assert.ok(hint, 'id_token_hint sent');
  const { payload } = decodeJwt(hint);
  assert.equal(payload.iss, s.op.issuer);
  assert.equal(payload.sub, alice.sub);
  assert.ok([payload.aud].flat().includes(s.op.clientId));
  const state = end.searchParams.get('state');
  assert.ok(state && state.length >= 16, `logout state: ${state}`);
  assert.equal(end.searchParams.get('post_logout_redirect_uri'), `${s.base}${PREFIX}/logged-out`);

  const out = await s.person.throughProvider(await s.person.get(lo.location), {});
  assert.deepEqual(out.steps, ['logout-confirm'], 'the provider asked to confirm the logout');
  const landed = out.history.find((h) => h.url.startsWith(`${s.base}${PREFIX}/logged-out`));
  assert.ok(landed, `back on ${PREFIX}/logged-out; went through ${out.history.map((h) => `${h.status} ${h.url}`).join(' → ')}`);
  assert.equal(new URL(landed.url).searchParams.get('state'), state);
  assert.equal(out.url, landed.url, 'without rd, /logged-out is the last stop');
  assert.equal(out.status, 200, `/logged-out answers 200: ${out.body.slice(0, 300)}`);
  assert.deepEqual(s.op.errors, []);

  const after = await s.person.get(`${s.base}/app`, { follow: false });
  assertLoginRedirect(after, s, 'protected route after logout');
  // The provider session ended too: the login form is shown again.
  const relog = await s.person.throughProvider(await s.person.get(after.location), { login: 'alice' });
  assert.deepEqual(relog.steps, ['login']);
  assert.equal(relog.status, 200);

  assertNoSecretsInLogs(s, [['the id_token', hint]]);
});

test('(f2) logout with rd=/public/bye ends on that local page', async (t) => {
  const s = await startStack(t);
  await loginAt(s, `${s.base}/app`, 'alice');
  const out = await s.person.logout(`${s.base}${PREFIX}/logout?rd=${encodeURIComponent('/public/bye')}`);
  assert.deepEqual(out.steps, ['logout-confirm']);
  assert.equal(out.url, `${s.base}/public/bye`, `went through ${out.history.map((h) => `${h.status} ${h.url}`).join(' → ')}`);
  assert.equal(out.status, 200);
  assert.equal(s.upstream.last().url, '/public/bye');
  assert.deepEqual(identityLines(s.upstream.last().rawHeaders), []);
});

// (g) ------------------------------------------------------------------------------------------------------------
test('(g) without a session, non-navigation requests get 401 and no redirect', async (t) => {
  const s = await startStack(t);
  assertUnauthorized(await s.person.api(`${s.base}/app/items`), 'GET Accept: application/json');
  assertUnauthorized(await s.person.request(`${s.base}/app/items`, {
    headers: { Accept: '*/*', 'Sec-Fetch-Mode': 'cors', 'Sec-Fetch-Dest': 'empty', 'X-Requested-With': 'XMLHttpRequest' },
  }), 'XHR (Sec-Fetch-Mode: cors)');
  assertUnauthorized(await s.person.request(`${s.base}/app/items`, {
    method: 'POST',
    navigate: true,
    headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
    body: 'a=1',
  }), 'POST form submission');
  assertUnauthorized(await s.person.request(`${s.base}/app/items`, {
    method: 'DELETE',
    headers: { Accept: 'application/json' },
  }), 'DELETE');
  assert.equal(s.upstream.requests.length, 0, 'nothing reached the upstream');
  // …whereas a navigation is sent to login.
  assertLoginRedirect(await s.person.get(`${s.base}/app/items`, { follow: false }), s, 'navigation');
});

// (h) ------------------------------------------------------------------------------------------------------------
for (const variant of [
  { authMethod: 'client_secret_post', idTokenAlg: 'RS256' },
  { authMethod: 'client_secret_basic', idTokenAlg: 'ES256' },
  { authMethod: 'client_secret_basic', idTokenAlg: 'RS256', userinfoSigned: true },
]) {
  test(`(h) provider variant ${variant.authMethod}, id_token ${variant.idTokenAlg}${variant.userinfoSigned ? ', userinfo as signed JWT' : ''}`, async (t) => {
    const s = await startStack(t, { provider: variant });
    await loginAt(s, `${s.base}/app?v=1`, 'helene');

    const tokenCalls = s.op.callsTo(new URL(s.op.discovery.token_endpoint).pathname);
    assert.equal(tokenCalls.length, 1, 'one code exchange');
    assert.equal(tokenCalls[0].status, 200, 'the provider accepted the client authentication');
    const basic = /^Basic /.test(tokenCalls[0].headers.authorization || '');
    assert.equal(basic, variant.authMethod === 'client_secret_basic', `Authorization header: ${tokenCalls[0].headers.authorization}`);

    const userinfoCalls = s.op.callsTo(new URL(s.op.discovery.userinfo_endpoint).pathname);
    assert.equal(userinfoCalls.length, 1, 'userinfo called once');
    assert.equal(userinfoCalls[0].status, 200);
    assert.match(userinfoCalls[0].responseType || '', variant.userinfoSigned ? /^application\/jwt/ : /^application\/json/);

    // email and family_name are released by scope, so (oidc-provider's conformIdTokenClaims) only userinfo
    // carries them: their presence shows userinfo was understood, JSON or signed JWT.
    const up = s.upstream.last();
    assert.deepEqual(headerValues(up.rawHeaders, 'X-Auth-Sub'), [helene.sub]);
    assert.deepEqual(headerValues(up.rawHeaders, 'X-Auth-Email'), [helene.email]);
    assert.deepEqual(headerValues(up.rawHeaders, 'X-Auth-Family-Name'), ['Wamytan-No%C3%ABl']);
    assertNoSecretsInLogs(s);
  });
}

// (i) ------------------------------------------------------------------------------------------------------------
test('(i) userinfo is called with the access token as Bearer', async (t) => {
  const s = await startStack(t);
  await loginAt(s, `${s.base}/app`, 'alice');
  const path = new URL(s.op.discovery.userinfo_endpoint).pathname;
  const calls = s.op.callsTo(path);
  assert.ok(calls.length >= 1, `userinfo (${path}) was called; provider calls: ${s.op.calls.map((c) => `${c.method} ${c.path}`).join(', ')}`);
  const auth = calls[0].headers.authorization || '';
  assert.match(auth, /^Bearer \S+$/);
  const issuedAccessTokens = s.op.issued.filter((x) => x.type === 'access_token').map((x) => x.value);
  assert.ok(issuedAccessTokens.includes(auth.slice('Bearer '.length)), 'the Bearer is the access token the provider issued');
  assert.equal(calls[0].status, 200);
  assert.equal(new URL(calls[0].url, s.op.issuer).searchParams.get('access_token'), null, 'token not sent in the query');
});

// (j) ------------------------------------------------------------------------------------------------------------
test('(j) RFC 9207: a callback whose iss was tampered with (or removed) is refused with a French error page', async (t) => {
  const s = await startStack(t);
  for (const [what, tamper] of [
    ['tampered iss', (u) => u.searchParams.set('iss', 'http://127.0.0.1:1/evil')],
    ['iss removed', (u) => u.searchParams.delete('iss')],
  ]) {
    const person = s.newPerson();
    let callbackUrl;
    const res = await person.login(`${s.base}/app`, 'alice', {
      rewrite: (loc) => {
        const u = new URL(loc);
        if (u.pathname !== `${PREFIX}/callback`) return loc;
        tamper(u);
        callbackUrl = u.href;
        return u.href;
      },
    });
    assert.ok(callbackUrl, `${what}: the flow reached the callback`);
    const u = new URL(callbackUrl);
    await assertFrenchErrorPage(res, s.passerelle.logs, { exclude: [...u.searchParams.values()] });
    assert.deepEqual(res.setCookies.filter((c) => c.name === 'passerelle' && c.value !== ''), [], `${what}: no session cookie set`);
    assert.deepEqual(sessionCookies(person, s.base), [], `${what}: the person holds no session`);
    assert.equal(s.upstream.requests.length, 0, `${what}: nothing reached the upstream`);
    const api = await person.api(`${s.base}/app`);
    assertUnauthorized(api, `${what}: still not logged in`);
  }
});

// Beyond the issue's list: contract points of DESIGN.md §3–4 that the same harness checks cheaply. -------------
test('(k) replayed callback (same URL again, other browser or same) is an error page, not a second session', async (t) => {
  const s = await startStack(t);
  const res = await loginAt(s, `${s.base}/app`, 'alice');
  const cb = callbackOf(res, s);
  assert.ok(cb);
  for (const [what, person] of [['same person', s.person], ['another person', s.newPerson()]]) {
    if (person !== s.person) assert.deepEqual(sessionCookies(person, s.base), []);
    const replay = await person.get(cb.url, { follow: false });
    assert.ok(replay.status >= 400 && replay.status < 500, `${what}: replayed callback answered ${replay.status}: ${replay.body.slice(0, 300)}`);
    assert.deepEqual(replay.setCookies.filter((c) => c.name === 'passerelle' && c.value !== ''), [], `${what}: no new session`);
  }
  await assertFrenchErrorPage(await s.newPerson().get(cb.url, { follow: false }), s.passerelle.logs,
    { exclude: [...new URL(cb.url).searchParams.values()] });
});

test('(l) rd is never an open redirect', async (t) => {
  const s = await startStack(t);
  await loginAt(s, `${s.base}/app`, 'alice');
  for (const rd of ['https://evil.example/x', '//evil.example/x', '/\\evil.example/x', 'http://127.0.0.2:1/x']) {
    const visited = [];
    const res = await s.person.navigate(`${s.base}${PREFIX}/login?provider=op&rd=${encodeURIComponent(rd)}`, {
      rewrite: (loc) => {
        visited.push(loc);
        const u = new URL(loc);
        // Stop at the first hop that would leave Passerelle or the provider (the person never leaves 127.0.0.1).
        return u.hostname === '127.0.0.1' ? loc : `${s.base}/public/__left_to__${encodeURIComponent(u.host)}`;
      },
    });
    const left = visited.filter((loc) => new URL(loc).hostname !== '127.0.0.1');
    assert.deepEqual(left, [], `rd=${rd} redirected off-site: ${visited.join(' → ')}`);
    assert.ok(res.status < 500, `rd=${rd}: ${res.status}`);
  }
});

test('(m) /.passerelle/userinfo: JSON of the session for front-ends, without any token; 401 without a session', async (t) => {
  const s = await startStack(t);
  assertUnauthorized(await s.person.api(`${s.base}${PREFIX}/userinfo`), 'userinfo without a session');
  await loginAt(s, `${s.base}/app`, 'helene');
  const res = await s.person.api(`${s.base}${PREFIX}/userinfo`);
  assert.equal(res.status, 200, res.body);
  assert.match(res.headers['content-type'] || '', /^application\/json/);
  const body = JSON.parse(res.body);
  const text = JSON.stringify(body);
  assert.ok(text.includes(helene.sub), `userinfo shows the sub: ${text}`);
  assert.ok(text.includes(helene.family_name), `userinfo shows the family name as is (JSON is UTF-8): ${text}`);
  for (const { type, value } of s.op.issued) assert.ok(!res.body.includes(value), `userinfo must not expose the ${type}`);
  assert.equal(s.upstream.requests.length, 1, 'served by Passerelle itself, not the upstream');
});

test('admin endpoints: /health and /ready answer 200', async (t) => {
  const s = await startStack(t);
  for (const path of ['/health', '/ready']) {
    const res = await s.person.request(`${s.passerelle.adminUrl}${path}`, { cookies: false });
    assert.equal(res.status, 200, `${path}: ${res.status}`);
  }
});
