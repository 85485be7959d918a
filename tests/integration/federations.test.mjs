// Passerelle's federation presets (`kind = "proconnect"`, `kind = "nc-connect"`) against the real `oidc-provider`
// configured to behave like ProConnect and NC Connect (tests/support/federation-provider.mjs; the behaviour
// imitated is described in /work/shared/federations.md), plus an egress HTTP proxy for the RIE back channel
// (tests/support/forward-proxy.mjs). Each scenario starts and stops its own servers on 127.0.0.1.
//
// Needs target/release/passerelle (or $PASSERELLE_BIN). Run: tests/run-integration.sh --test-name-pattern='\(pc'
// or: node --test tests/integration/federations.test.mjs

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';

import {
  assertFrenchErrorPage, assertNoSecretsInLogs, correlationIdOn, decodeJwt, identityLines, sessionCookies,
} from '../support/checks.mjs';
import {
  NC_ACCOUNTS, NC_V2_ACCOUNTS, PROCONNECT_ACCOUNTS,
  startNcConnectProvider, startNcConnectV2Provider, startProConnectProvider,
} from '../support/federation-provider.mjs';
import { startForwardProxy, VIA } from '../support/forward-proxy.mjs';
import { stopAfter } from '../support/http.mjs';
import { makePki } from '../support/pki.mjs';
import { createPerson, decodeEntities, parseForms } from '../support/person.mjs';
import { freePort, launchPasserelle, outputName } from '../support/passerelle.mjs';
import { addresses, configToml, PREFIX, providerToml, tv } from '../support/stack.mjs';
import { headerValues, headersMatching, startUpstream } from '../support/upstream.mjs';

const helene = PROCONNECT_ACCOUNTS.helene.claims;
const bruno = PROCONNECT_ACCOUNTS.bruno.claims;
const ncHelene = NC_ACCOUNTS.helene.claims;
const TEST_TIMEOUT = { timeout: 120_000 };

// ---------------------------------------------------------------------------------------------------------------
// Harness

/**
 * `passerelle run --config FILE` with this TOML, stopped (SIGINT) by t.after; waits for admin /ready. Its output is
 * kept in tests/output/federations_<test name>[_<logName>].log.
 */
function launch(t, toml, { logName = '', ...opts }) {
  return launchPasserelle(t, toml, { ...opts, logName: outputName(t, { prefix: 'federations_', suffix: logName }) });
}

function tomlConfig({ port, adminPort, providers, routes }) {
  return configToml({ writtenBy: 'tests/integration/federations.test.mjs', port, adminPort, providers, routes });
}

/** [[route]] with its keys then its [route.headers]. */
function routeToml({ path: routePath, upstream, providers, scopes = [], headers = {}, ...extra }) {
  return `[[route]]
path = ${tv(routePath)}
upstream = ${tv(upstream)}
providers = ${tv(providers)}
scopes = ${tv(scopes)}
${Object.entries(extra).map(([k, v]) => `${k} = ${tv(v)}`).join('\n')}
[route.headers]
${Object.entries(headers).map(([h, c]) => `${tv(h)} = ${tv(c)}`).join('\n')}
`;
}

/**
 * One scenario's world: a federation-like provider (`start`, with Passerelle's redirect URIs, its post-logout one
 * too when `logout`, and the `provider` options) configured as [providers.NAME] of `kind` (`extra`: more keys), an
 * upstream, Passerelle with the `routes` (routeToml options; the upstream and the provider filled in), and a person.
 * Everything is stopped by t.after.
 */
async function world(t, {
  start = startProConnectProvider, provider = {}, logout = false, name = 'pc', kind = 'proconnect', extra = {}, routes,
}) {
  const a = await addresses();
  const logoutUris = logout ? { postLogoutRedirectUris: a.postLogoutRedirectUris } : {};
  const op = await stopAfter(t, start({ redirectUris: a.redirectUris, ...logoutUris, ...provider }));
  const upstream = await stopAfter(t, startUpstream());
  const toml = tomlConfig({
    ...a,
    providers: [providerToml(name, kind, op, extra)],
    routes: routes.map((route) => routeToml({ upstream: upstream.url, providers: [name], ...route })),
  });
  const p = await launch(t, toml, a);
  return { a, op, upstream, p, person: createPerson() };
}

/** Links of an HTML page: [{ href (entities decoded), text (tags stripped), attrs (raw), inner (raw) }]. */
function links(html) {
  return [...html.matchAll(/<a\b([^>]*)>([\s\S]*?)<\/a>/gi)].map((m) => {
    const href = m[1].match(/\bhref\s*=\s*(?:"([^"]*)"|'([^']*)')/i);
    const cls = m[1].match(/\bclass\s*=\s*(?:"([^"]*)"|'([^']*)')/i);
    return {
      href: href ? decodeEntities(href[1] ?? href[2]) : undefined,
      className: cls ? (cls[1] ?? cls[2]) : '',
      text: decodeEntities(m[2].replace(/<[^>]*>/g, ' ')).replace(/\s+/g, ' ').trim(),
      // What a screen reader announces: aria-hidden parts removed.
      accessibleText: decodeEntities(m[2].replace(/<(\w+)\b[^>]*aria-hidden="true"[^>]*>[\s\S]*?<\/\1>/gi, ' ')
        .replace(/<[^>]*>/g, ' ')).replace(/\s+/g, ' ').trim(),
      attrs: m[1],
      inner: m[2],
    };
  });
}

/** The "retry" link of a Passerelle error page: /.passerelle/login?provider=NAME&rd=RD. */
function retryLink(res, provider) {
  const found = links(res.body).find((l) => l.href?.startsWith(`${PREFIX}/login?provider=${provider}&`));
  assert.ok(found, `the error page offers to retry with ${PREFIX}/login?provider=${provider}&rd=…; links: ${JSON.stringify(links(res.body).map((l) => l.href))}\n${res.body.slice(0, 1500)}`);
  return found;
}

function scopeSet(scope) {
  return new Set(String(scope || '').split(' ').filter(Boolean));
}

function sorted(set) {
  return [...set].sort();
}

/** Every header line of `rawHeaders` named `name`, exactly one expected: its value. */
function oneHeader(rawHeaders, name, what = name) {
  const values = headerValues(rawHeaders, name);
  assert.equal(values.length, 1, `${what}: exactly one ${name} line expected, got ${JSON.stringify(values)}`);
  return values[0];
}

/** The callback hop of a navigation (Passerelle's redirect_uri), as a URL. */
function callbackHop(res, base) {
  const hop = res.history.find((h) => h.url.startsWith(`${base}${PREFIX}/callback`));
  assert.ok(hop, `the navigation went through ${PREFIX}/callback: ${res.history.map((h) => `${h.status} ${h.url}`).join('\n')}`);
  return new URL(hop.url);
}

/** Back-channel requests Passerelle made to a provider (its User-Agent is passerelle/VERSION). */
function backChannel(op) {
  return op.calls.filter((c) => /^passerelle\//.test(c.headers['user-agent'] || ''));
}

/** A 5xx page as Passerelle writes them: HTML, French, the given title, a correlation id that is in the logs. */
async function assertFrench5xx(res, logs, status, title) {
  assert.equal(res.status, status, `expected ${status}, got ${res.status} at ${res.url}:\n${res.body.slice(0, 800)}\n--- logs (tail):\n${logs().slice(-2000)}`);
  assert.match(res.headers['content-type'] || '', /text\/html/, 'the error page is HTML');
  assert.match(res.body, /<html[^>]*\blang="fr"/, 'the error page is French (lang="fr")');
  assert.ok(decodeEntities(res.body).includes(title), `the page says « ${title} »:\n${res.body.slice(0, 800)}`);
  const id = await correlationIdOn(res, logs);
  assert.ok(id, `the page shows a correlation id that is also in the logs:\n${res.body.slice(0, 800)}\n--- logs (tail):\n${logs().slice(-2000)}`);
  return id;
}

/** No session: no session cookie, /.passerelle/userinfo answers 401. */
async function assertNoSession(person, base, what) {
  assert.deepEqual(sessionCookies(person, base).map((c) => c.name), [], `${what}: no session cookie`);
  const info = await person.api(`${base}${PREFIX}/userinfo`);
  assert.equal(info.status, 401, `${what}: ${PREFIX}/userinfo must answer 401 without a session, got ${info.status}: ${info.body.slice(0, 300)}`);
}

function assertLanded(res, target, logs, what = 'login') {
  assert.equal(res.status, 200, `${what}: ended on ${res.url} with ${res.status}:\n${res.body.slice(0, 800)}\n--- history:\n${(res.history || []).map((h) => `${h.status} ${h.url}`).join('\n')}\n--- passerelle logs (tail):\n${logs().slice(-3000)}`);
  assert.equal(res.url, target, `${what}: back on the exact URL first asked for`);
}

// ProConnect-like headers of the main route.
const PC_HEADERS = {
  'X-Auth-Sub': 'sub',
  'X-Auth-Given-Name': 'given_name',
  'X-Auth-Family-Name': 'family_name',
  'X-Auth-Usual-Name': 'usual_name',
  'X-Auth-Email': 'email',
  'X-Auth-Siret': 'siret',
  'X-Auth-Chorusdt-Matricule': 'chorusdt_matricule',
  'X-Auth-Chorusdt-Societe': 'chorusdt_societe',
  'X-Auth-Acr': 'acr',
  'X-Auth-Amr': 'amr',
  'X-Auth-Provider': 'provider',
};
const PC_SCOPES = ['email', 'siret', 'usual_name', 'given_name', 'chorusdt'];
// What the preset asks for by default (federations.md §4, default scopes since August 2024).
const PC_DEFAULT_SCOPES = ['openid', 'given_name', 'usual_name', 'email', 'uid', 'siret', 'idp_id'];

// ===============================================================================================================
// 1. ProConnect
// ===============================================================================================================

test('(pc1) ProConnect: login end to end: claims parameter, state/nonce, client_secret_post, ES256 id_token and userinfo JWT, normalised headers', TEST_TIMEOUT, async (t) => {
  const { a, op: pc, upstream, p, person } = await world(t, {
    logout: true,
    routes: [{ path: '/', scopes: PC_SCOPES, headers: PC_HEADERS }],
  });
  const target = `${a.base}/dossiers/42?onglet=pi%C3%A8ces`;

  const res = await person.login(target, 'helene');
  assertLanded(res, target, p.logs);
  assert.deepEqual(res.steps, ['login'], 'one login form at the provider');

  // The authorization request, as the provider received it.
  const authz = pc.callsToEndpoint('authorization_endpoint');
  assert.equal(authz.length, 1, `one authorization request: ${authz.map((c) => c.url).join('\n')}`);
  const q = authz[0].query;
  assert.equal(q.response_type, 'code');
  assert.equal(q.client_id, pc.clientId);
  assert.equal(q.redirect_uri, `${a.base}${PREFIX}/callback`, 'redirect_uri is exactly the registered one');
  assert.deepEqual(sorted(scopeSet(q.scope)), sorted(new Set([...PC_DEFAULT_SCOPES, ...PC_SCOPES])),
    `scope = the preset's defaults plus the route's: ${q.scope}`);
  assert.ok(q.claims, `the claims parameter is sent: ${authz[0].url}`);
  assert.deepEqual(JSON.parse(q.claims), { id_token: { acr: null, amr: null } },
    `without acr configured the preset reads acr and amr: claims=${q.claims}`);
  assert.equal(q.acr_values, undefined, 'acr goes through the claims parameter, not acr_values');
  assert.ok(q.state && q.state.length >= 32, `state ≥ 32 chars (ProConnect): ${q.state}`);
  assert.ok(q.nonce && q.nonce.length >= 32, `nonce ≥ 32 chars (ProConnect): ${q.nonce}`);
  assert.notEqual(q.state, q.nonce);
  assert.equal(q.code_challenge_method, 'S256');
  assert.ok(q.code_challenge, 'PKCE challenge sent');

  // The provider answered with code, state and iss (RFC 9207).
  const cb = callbackHop(res, a.base);
  assert.equal(cb.searchParams.get('state'), q.state);
  assert.equal(cb.searchParams.get('iss'), pc.issuer, 'the authorization response carries iss');

  // Token request: client_secret_post, the only method the client may use.
  const tokens = pc.callsToEndpoint('token_endpoint');
  assert.equal(tokens.length, 1, 'one token request');
  const tok = tokens[0];
  assert.equal(tok.method, 'POST');
  assert.equal(tok.status, 200, `token endpoint answered ${tok.status}: ${tok.responseBody}\nprovider errors: ${JSON.stringify(pc.errors)}`);
  assert.equal(tok.headers.authorization, undefined, 'client_secret_post: no Authorization header');
  assert.match(tok.headers['content-type'] || '', /^application\/x-www-form-urlencoded/);
  const form = Object.fromEntries(new URLSearchParams(tok.body));
  assert.equal(form.grant_type, 'authorization_code');
  assert.equal(form.client_id, pc.clientId, 'client_id in the body');
  assert.equal(form.client_secret, pc.clientSecret, 'client_secret in the body');
  assert.equal(form.redirect_uri, `${a.base}${PREFIX}/callback`);
  assert.equal(form.code, cb.searchParams.get('code'));
  assert.ok(form.code_verifier, 'PKCE verifier sent');
  const tokenBody = JSON.parse(tok.responseBody);
  const idToken = decodeJwt(tokenBody.id_token);
  assert.equal(idToken.header.alg, 'ES256', 'the provider signed the id_token with ES256');
  assert.equal(idToken.payload.nonce, q.nonce);
  assert.equal(idToken.payload.acr, 'eidas1');
  assert.deepEqual(idToken.payload.amr, ['pwd']);
  assert.equal(idToken.payload.email, undefined, 'identity claims are only in userinfo (as at ProConnect)');

  // Userinfo: a signed JWT (ES256), fetched with the access token.
  const infos = pc.callsToEndpoint('userinfo_endpoint');
  assert.equal(infos.length, 1, 'one userinfo request');
  assert.equal(infos[0].headers.authorization, `Bearer ${tokenBody.access_token}`);
  assert.equal(infos[0].status, 200);
  assert.match(String(infos[0].responseType), /^application\/jwt/, `userinfo is a JWT: ${infos[0].responseType}`);
  assert.equal(decodeJwt(infos[0].responseBody).header.alg, 'ES256');

  // What the upstream received.
  assert.equal(upstream.requests.length, 1);
  const up = upstream.last();
  assert.equal(up.url, '/dossiers/42?onglet=pi%C3%A8ces');
  const h = (name) => oneHeader(up.rawHeaders, name);
  assert.equal(h('X-Auth-Sub'), helene.sub);
  assert.equal(h('X-Auth-Given-Name'), 'H%C3%A9l%C3%A8ne', 'given_name percent-encoded UTF-8');
  assert.equal(h('X-Auth-Family-Name'), 'NO%C3%8BL', 'family_name comes from usual_name, percent-encoded');
  assert.equal(h('X-Auth-Usual-Name'), 'NO%C3%8BL');
  assert.equal(h('X-Auth-Email'), 'helene.noel@example.gouv.fr', 'email lower-cased');
  assert.equal(h('X-Auth-Siret'), helene.siret);
  assert.equal(h('X-Auth-Chorusdt-Matricule'), 'MAT-0042', 'chorusdt:matricule → chorusdt_matricule');
  assert.equal(h('X-Auth-Chorusdt-Societe'), 'SOC-7510');
  assert.equal(h('X-Auth-Acr'), 'eidas1');
  assert.equal(h('X-Auth-Amr'), '["pwd"]', 'amr as compact JSON');
  assert.equal(h('X-Auth-Provider'), 'pc');
  assert.equal(identityLines(up.rawHeaders).length, Object.keys(PC_HEADERS).length,
    `only the configured identity headers: ${JSON.stringify(identityLines(up.rawHeaders))}`);

  // The session as front-ends see it: normalised claims.
  const info = await person.api(`${a.base}${PREFIX}/userinfo`);
  assert.equal(info.status, 200, `${PREFIX}/userinfo: ${info.status} ${info.body.slice(0, 300)}`);
  const claims = JSON.parse(info.body).claims;
  assert.equal(claims.family_name, 'NOËL');
  assert.equal(claims.email, 'helene.noel@example.gouv.fr');
  assert.equal(claims.chorusdt_matricule, 'MAT-0042');
  assert.equal(claims['chorusdt:matricule'], undefined, 'the prefixed name is normalised away');
  assert.equal(claims.sub, helene.sub);

  assert.deepEqual(pc.errors, [], 'the provider reported no error');
  assertNoSecretsInLogs({ passerelle: p, op: pc });
});

for (const variant of [
  { name: 'id_token ES256, userinfo HS256 (keyed by the client secret)', idTokenAlg: 'ES256', userinfoAlg: 'HS256' },
  { name: 'id_token RS256, userinfo ES256', idTokenAlg: 'RS256', userinfoAlg: 'ES256' },
  { name: 'id_token RS256, userinfo RS256', idTokenAlg: 'RS256', userinfoAlg: 'RS256' },
  { name: 'id_token HS256, userinfo without signature (JSON, application/json)', idTokenAlg: 'HS256' },
  // ProConnect's GET /userinfo controller hard-sets Content-Type: application/jwt, even for a client registered
  // without a userinfo algorithm (federations.md §4): the body is JSON under a JWT label.
  { name: 'id_token ES256, userinfo JSON labelled application/jwt (as ProConnect\'s controller does)', idTokenAlg: 'ES256', userinfoContentType: 'application/jwt' },
]) {
  test(`(pc2) ProConnect variant: ${variant.name}`, TEST_TIMEOUT, async (t) => {
    const { a, op: pc, upstream, p, person } = await world(t, {
      provider: {
        idTokenAlg: variant.idTokenAlg,
        userinfoAlg: variant.userinfoAlg,
        userinfoContentType: variant.userinfoContentType,
      },
      routes: [{ path: '/', scopes: PC_SCOPES, headers: PC_HEADERS }],
    });
    const res = await person.login(`${a.base}/`, 'helene');
    const tok = pc.callsToEndpoint('token_endpoint')[0];
    assert.ok(tok, `the code was redeemed; ended on ${res.url} with ${res.status}:\n${res.body.slice(0, 500)}\n${p.logs().slice(-2000)}`);
    assert.equal(decodeJwt(JSON.parse(tok.responseBody).id_token).header.alg, variant.idTokenAlg);
    const ui = pc.callsToEndpoint('userinfo_endpoint');
    assert.equal(ui.length, 1);
    assert.equal(ui[0].status, 200);
    if (variant.userinfoAlg) {
      assert.match(String(ui[0].responseType), /^application\/jwt/);
      assert.equal(decodeJwt(ui[0].responseBody).header.alg, variant.userinfoAlg, 'the userinfo JWT alg');
    } else {
      assert.match(String(ui[0].responseType), variant.userinfoContentType ? /^application\/jwt/ : /^application\/json/);
      assert.equal(JSON.parse(ui[0].responseBody).sub, helene.sub, 'the userinfo body is JSON');
    }
    assertLanded(res, `${a.base}/`, p.logs);
    const up = upstream.last();
    assert.equal(oneHeader(up.rawHeaders, 'X-Auth-Sub'), helene.sub);
    assert.equal(oneHeader(up.rawHeaders, 'X-Auth-Email'), 'helene.noel@example.gouv.fr', 'userinfo claims were read');
    assert.equal(oneHeader(up.rawHeaders, 'X-Auth-Family-Name'), 'NO%C3%8BL');
    assert.deepEqual(pc.errors, []);
  });
}

test('(pc3) ProConnect step-up: a route needing `roles` sends the person back asking for the union of scopes; API calls get 401', TEST_TIMEOUT, async (t) => {
  const { a, op: pc, upstream, p, person } = await world(t, {
    routes: [
      { path: '/', scopes: ['email', 'siret'], headers: { 'X-Auth-Sub': 'sub', 'X-Auth-Email': 'email' } },
      {
        path: '/habilitations',
        scopes: ['roles', 'belonging_population'],
        require: { roles: ['agent_public'], belonging_population: ['agent'] },
        headers: { 'X-Auth-Sub': 'sub', 'X-Auth-Roles': 'roles', 'X-Auth-Belonging-Population': 'belonging_population' },
      },
    ],
  });
  const first = await person.login(`${a.base}/`, 'helene');
  assertLanded(first, `${a.base}/`, p.logs);
  const authz = () => pc.callsToEndpoint('authorization_endpoint');
  assert.equal(authz().length, 1);
  const firstScopes = scopeSet(authz()[0].query.scope);
  assert.ok(!firstScopes.has('roles'), `the first login did not ask for roles: ${authz()[0].query.scope}`);

  // An API call to the route needing more: 401, no redirect, nothing forwarded.
  const api = await person.api(`${a.base}/habilitations/liste`);
  assert.equal(api.status, 401, `API call needing a step-up: ${api.status} ${api.body.slice(0, 300)}`);
  assert.equal(api.headers.location, undefined);
  assert.equal(upstream.requests.length, 1);

  // A navigation: through the provider again, asking for the union, back on the route with the new claim.
  const target = `${a.base}/habilitations/liste?service=rh`;
  const res = await person.login(target, 'helene');
  assertLanded(res, target, p.logs, 'step-up');
  assert.equal(authz().length, 2, 'exactly one more authorization request');
  const second = authz()[1].query;
  const union = new Set([...firstScopes, 'roles', 'belonging_population']);
  assert.deepEqual(sorted(scopeSet(second.scope)), sorted(union), `the step-up asks for the union: ${second.scope}`);
  assert.notEqual(second.state, authz()[0].query.state, 'a fresh state');
  assert.ok(second.state.length >= 32 && second.nonce.length >= 32);
  assert.deepEqual(JSON.parse(second.claims), { id_token: { acr: null, amr: null } });
  assert.deepEqual(upstream.requests.map((r) => r.url), ['/', '/habilitations/liste?service=rh'],
    'the route needing roles was reached only after the step-up');
  const up = upstream.last();
  assert.equal(oneHeader(up.rawHeaders, 'X-Auth-Roles'), '["agent_public"]', 'roles as compact JSON');
  assert.equal(oneHeader(up.rawHeaders, 'X-Auth-Belonging-Population'), 'agent');
  assert.equal(oneHeader(up.rawHeaders, 'X-Auth-Sub'), helene.sub);

  // The session keeps what was granted before: "/" still works without another login, with its email.
  const back = await person.get(`${a.base}/`);
  assertLanded(back, `${a.base}/`, p.logs, 'back on /');
  assert.equal(authz().length, 2, 'no third authorization request');
  assert.equal(oneHeader(upstream.last().rawHeaders, 'X-Auth-Email'), 'helene.noel@example.gouv.fr');
  assert.deepEqual(pc.errors, []);
});

test('(pc3b) ProConnect step-up the provider does not grant: asked once, then a 403 page, no loop', TEST_TIMEOUT, async (t) => {
  // `rie_habilitation` is a scope this provider does not know: it is silently not granted.
  const { a, op: pc, upstream, p, person } = await world(t, {
    routes: [
      { path: '/', scopes: ['email'], headers: { 'X-Auth-Sub': 'sub' } },
      { path: '/rie', scopes: ['rie_habilitation'], headers: { 'X-Auth-Rie': 'rie_habilitation' } },
    ],
  });
  assertLanded(await person.login(`${a.base}/`, 'helene'), `${a.base}/`, p.logs);
  const res = await person.login(`${a.base}/rie/acte`, 'helene');
  const authz = pc.callsToEndpoint('authorization_endpoint');
  assert.equal(authz.length, 2, `one step-up, not a loop: ${authz.map((c) => c.query.scope).join(' | ')}`);
  assert.ok(scopeSet(authz[1].query.scope).has('rie_habilitation'), 'the step-up asked for the missing scope');
  assert.equal(res.status, 403, `a refused step-up ends on a 403 page, got ${res.status} at ${res.url}:\n${res.body.slice(0, 500)}`);
  await assertFrenchErrorPage(res, p.logs);
  assert.deepEqual(upstream.requests.map((r) => r.url), ['/'], 'the upstream never saw /rie');
});

test('(pc4) ProConnect acr: the provider\'s eidas1 through claims, then a route needing eidas2 steps up with claims asking eidas2', TEST_TIMEOUT, async (t) => {
  const headers = { 'X-Auth-Sub': 'sub', 'X-Auth-Acr': 'acr', 'X-Auth-Amr': 'amr' };
  const { a, op: pc, upstream, p, person } = await world(t, {
    extra: { acr: { essential: true, values: ['eidas1'] } },
    routes: [
      { path: '/', scopes: ['email'], headers },
      { path: '/signature', scopes: ['email'], acr: { essential: true, values: ['eidas2'] }, headers },
    ],
  });
  assertLanded(await person.login(`${a.base}/`, 'helene'), `${a.base}/`, p.logs);
  const authz = () => pc.callsToEndpoint('authorization_endpoint');
  assert.deepEqual(JSON.parse(authz()[0].query.claims), { id_token: { acr: { essential: true, values: ['eidas1'] }, amr: null } },
    `the provider's acr goes in claims: ${authz()[0].query.claims}`);
  assert.equal(oneHeader(upstream.last().rawHeaders, 'X-Auth-Acr'), 'eidas1');

  const target = `${a.base}/signature/parapheur?doc=12`;
  const res = await person.login(target, 'helene');
  assertLanded(res, target, p.logs, 'acr step-up');
  assert.deepEqual(res.steps, ['login'], 'eidas2 needs a new authentication at the provider');
  assert.equal(authz().length, 2);
  const second = authz()[1].query;
  assert.deepEqual(JSON.parse(second.claims), { id_token: { acr: { essential: true, values: ['eidas2'] }, amr: null } },
    `the step-up asks eidas2 through claims: ${second.claims}`);
  assert.ok([...scopeSet(authz()[0].query.scope)].every((s) => scopeSet(second.scope).has(s)), 'no scope lost in the step-up');
  const tok = pc.callsToEndpoint('token_endpoint');
  assert.equal(decodeJwt(JSON.parse(tok[1].responseBody).id_token).payload.acr, 'eidas2');
  assert.deepEqual(upstream.requests.map((r) => r.url), ['/', '/signature/parapheur?doc=12']);
  const up = upstream.last();
  assert.equal(oneHeader(up.rawHeaders, 'X-Auth-Acr'), 'eidas2');
  assert.equal(oneHeader(up.rawHeaders, 'X-Auth-Amr'), '["pwd","otp","mfa"]');

  // "/" (no acr rule of its own) still works without another login.
  const back = await person.get(`${a.base}/`);
  assertLanded(back, `${a.base}/`, p.logs, 'back on /');
  assert.equal(authz().length, 2);
  assert.deepEqual(pc.errors, []);
});

test('(pc4b) ProConnect acr checked in the id_token: a provider answering eidas1 to an essential eidas2 request is refused (403), no session, upstream not called', TEST_TIMEOUT, async (t) => {
  const { a, op: pc, upstream, p, person } = await world(t, {
    // A non-conformant provider: it ignores the essential acr and returns the account's eidas1.
    provider: { honourEssentialAcr: false },
    routes: [
      { path: '/', scopes: ['email'], headers: { 'X-Auth-Sub': 'sub' } },
      { path: '/signature', scopes: ['email'], acr: { essential: true, values: ['eidas2'] }, headers: { 'X-Auth-Acr': 'acr' } },
    ],
  });
  const res = await person.login(`${a.base}/signature/parapheur`, 'helene');
  const authz = pc.callsToEndpoint('authorization_endpoint');
  assert.equal(authz.length, 1);
  assert.deepEqual(JSON.parse(authz[0].query.claims), { id_token: { acr: { essential: true, values: ['eidas2'] }, amr: null } });
  const tok = pc.callsToEndpoint('token_endpoint');
  assert.equal(tok.length, 1, `the code was redeemed (the check is on the id_token); history:\n${res.history.map((h) => `${h.status} ${h.url}`).join('\n')}\nprovider errors: ${JSON.stringify(pc.errors)}`);
  assert.equal(decodeJwt(JSON.parse(tok[0].responseBody).id_token).payload.acr, 'eidas1', 'the provider did answer eidas1');
  assert.equal(res.status, 403, `an id_token below the essential acr is refused with 403, got ${res.status} at ${res.url}:\n${res.body.slice(0, 600)}`);
  await assertFrenchErrorPage(res, p.logs);
  retryLink(res, 'pc');
  await assertNoSession(person, a.base, 'after an insufficient acr');
  assert.deepEqual(upstream.requests, [], 'the upstream was never called');
});

test('(pc8) ProConnect authorize hints: provider idp_hint/login_hint, route prompt/siret_hint/login_hint (route wins), prompt=login forces a new authentication', TEST_TIMEOUT, async (t) => {
  const { a, op: pc, p, person } = await world(t, {
    extra: { idp_hint: helene.idp_id, login_hint: 'helene.noel@example.gouv.fr' },
    routes: [
      { path: '/', scopes: ['email'], headers: { 'X-Auth-Sub': 'sub' } },
      {
        path: '/urgent',
        scopes: ['email'],
        prompt: 'login',
        siret_hint: '21340126800130',
        login_hint: 'autre.agent@example.gouv.fr',
        headers: { 'X-Auth-Sub': 'sub' },
      },
    ],
  });
  assertLanded(await person.login(`${a.base}/`, 'helene'), `${a.base}/`, p.logs);
  const authz = () => pc.callsToEndpoint('authorization_endpoint');
  let q = authz()[0].query;
  assert.equal(q.idp_hint, helene.idp_id, 'the provider\'s idp_hint');
  assert.equal(q.login_hint, 'helene.noel@example.gouv.fr', 'the provider\'s login_hint');
  assert.equal(q.siret_hint, undefined);
  assert.equal(q.prompt, undefined);
  assert.equal(pc.interactions[0].params.idp_hint, helene.idp_id, 'the provider received idp_hint as a parameter');

  // A new Passerelle session (the old one gone) on "/": the provider's SSO session answers without a form.
  for (const c of sessionCookies(person, a.base)) person.jar.delete(a.base, c.name);
  const sso = await person.login(`${a.base}/`, 'helene');
  assertLanded(sso, `${a.base}/`, p.logs, 'SSO');
  assert.deepEqual(sso.steps, [], 'no login form: the provider\'s session was reused');

  // On /urgent the route's hints win, and prompt=login makes the provider ask again despite its session.
  for (const c of sessionCookies(person, a.base)) person.jar.delete(a.base, c.name);
  const urgent = await person.login(`${a.base}/urgent/dossier`, 'helene');
  assertLanded(urgent, `${a.base}/urgent/dossier`, p.logs, 'prompt=login');
  q = authz()[authz().length - 1].query;
  assert.equal(q.prompt, 'login', 'the route\'s prompt');
  assert.equal(q.siret_hint, '21340126800130', 'the route\'s siret_hint');
  assert.equal(q.login_hint, 'autre.agent@example.gouv.fr', 'the route\'s login_hint wins over the provider\'s');
  assert.equal(q.idp_hint, helene.idp_id, 'the provider\'s idp_hint still applies');
  assert.deepEqual(urgent.steps, ['login'], 'prompt=login: a new authentication at the provider');
  const last = pc.interactions[pc.interactions.length - 1];
  assert.equal(last.params.siret_hint, '21340126800130', 'the provider received siret_hint');
  assert.deepEqual(pc.errors, []);
});

test('(pc5) ProConnect error callbacks (access_denied with state and iss) → French page offering to retry, no session', TEST_TIMEOUT, async (t) => {
  const { a, op: pc, upstream, p } = await world(t, {
    routes: [
      { path: '/', scopes: ['email'], headers: { 'X-Auth-Sub': 'sub' } },
      { path: '/signature', scopes: ['email'], acr: { essential: true, values: ['eidas2'] }, headers: { 'X-Auth-Acr': 'acr' } },
    ],
  });

  async function check(res, { rd, description }) {
    const cb = callbackHop(res, a.base);
    assert.equal(cb.searchParams.get('error'), 'access_denied', `the provider answered access_denied: ${cb.href}`);
    assert.equal(cb.searchParams.get('error_description'), description);
    assert.ok(cb.searchParams.get('state'), 'with the state');
    assert.equal(cb.searchParams.get('iss'), pc.issuer, 'with iss');
    assert.equal(cb.searchParams.get('code'), null);
    assert.ok(res.url.startsWith(`${a.base}${PREFIX}/callback`), `the error is shown at the callback, not elsewhere: ${res.url}`);
    assert.equal(res.status, 403, `access_denied → 403, got ${res.status}:\n${res.body.slice(0, 600)}`);
    await assertFrenchErrorPage(res, p.logs, { exclude: [cb.search] });
    assert.match(res.body, /<html[^>]*\blang="fr"/);
    const retry = retryLink(res, 'pc');
    const u = new URL(retry.href, a.base);
    assert.equal(u.searchParams.get('rd'), rd, `retry keeps the page first asked for: ${retry.href}`);
    assert.ok(retry.text.length > 0, 'the retry link has a text');
    assert.ok(!res.body.includes(description), 'the provider\'s raw description is not echoed on the page');
    return u;
  }

  await t.test('the person cancels at the provider', async () => {
    const person = createPerson();
    const page = await person.navigate(`${a.base}/dossiers?page=2`);
    assert.equal(page.status, 200, `the provider's login page: ${page.status} ${page.url}`);
    const res = await person.submitForm(page, { form: (f) => f.action.endsWith('/abort') });
    const retry = await check(res, { rd: '/dossiers?page=2', description: 'End-User aborted interaction' });
    await assertNoSession(person, a.base, 'after a cancelled login');
    // The retry link starts a fresh login at the provider.
    const again = await person.get(retry.href, { follow: false });
    assert.equal(again.status, 302, `retry: ${again.status} ${again.body.slice(0, 300)}`);
    assert.ok(again.location.startsWith(pc.discovery.authorization_endpoint), `retry goes to the provider: ${again.location}`);
  });

  await t.test('the identity provider cannot reach the essential acr (eidas2): "requested ACRs could not be satisfied"', async () => {
    const person = createPerson();
    const res = await person.login(`${a.base}/signature/parapheur`, 'bruno');
    assert.deepEqual(res.steps, ['login']);
    const retry = await check(res, { rd: '/signature/parapheur', description: 'requested ACRs could not be satisfied' });
    await assertNoSession(person, a.base, 'after an unsatisfied acr');
    const again = await person.get(retry.href, { follow: false });
    assert.equal(again.status, 302);
    const q = new URL(again.location).searchParams;
    assert.deepEqual(JSON.parse(q.get('claims')), { id_token: { acr: { essential: true, values: ['eidas2'] }, amr: null } },
      'the retry asks for the route\'s acr again');
  });

  assert.deepEqual(upstream.requests, [], 'the upstream was never called');
  assert.equal(pc.callsToEndpoint('token_endpoint').length, 0, 'no code was redeemed');
});

test('(pc6) ProConnect require rules: allowed siret/email domain/roles pass; a siret not allowed → 403 "Accès refusé", upstream never called', TEST_TIMEOUT, async (t) => {
  const { a, upstream, p, person } = await world(t, {
    routes: [
      {
        path: '/',
        scopes: ['email', 'siret', 'idp_id', 'roles'],
        require: { siret: ['21340126800130'], email_domain: ['example.gouv.fr'], idp_id: [helene.idp_id], roles: ['agent_public'] },
        headers: { 'X-Auth-Sub': 'sub', 'X-Auth-Siret': 'siret' },
      },
      {
        path: '/prefecture',
        scopes: ['email', 'siret', 'idp_id', 'roles'],
        require: { siret: ['13002526500013'] },
        headers: { 'X-Auth-Sub': 'sub', 'X-Auth-Siret': 'siret' },
      },
    ],
  });

  // Hélène's SIRET, domain (Example.GOUV.fr, lower-cased), idp_id and roles are allowed on "/".
  assertLanded(await person.login(`${a.base}/accueil`, 'helene'), `${a.base}/accueil`, p.logs);
  assert.equal(oneHeader(upstream.last().rawHeaders, 'X-Auth-Siret'), '21340126800130');

  // Not on /prefecture.
  const before = upstream.requests.length;
  const refused = await person.get(`${a.base}/prefecture/titres`);
  assert.equal(refused.status, 403, `siret not allowed: ${refused.status} at ${refused.url}:\n${refused.body.slice(0, 500)}`);
  assert.ok(decodeEntities(refused.body).includes('Accès refusé'), `the page says « Accès refusé »:\n${refused.body.slice(0, 800)}`);
  await assertFrenchErrorPage(refused, p.logs);
  assert.equal(upstream.requests.length, before, 'the upstream was not called');

  // A person whose first visit is the forbidden route: login, then 403; the upstream never hears of them.
  const other = createPerson();
  const res = await other.login(`${a.base}/prefecture/titres`, 'helene');
  assert.equal(res.status, 403, `first visit on a forbidden route: ${res.status} at ${res.url}`);
  assert.ok(decodeEntities(res.body).includes('Accès refusé'), `the page says « Accès refusé »:\n${res.body.slice(0, 800)}`);
  await assertFrenchErrorPage(res, p.logs);
  assert.equal(upstream.requests.length, before, 'the upstream was never called for the forbidden route');

  // Bruno's SIRET is allowed on /prefecture but not on "/".
  const brunoPerson = createPerson();
  const br = await brunoPerson.login(`${a.base}/prefecture/titres`, 'bruno');
  assertLanded(br, `${a.base}/prefecture/titres`, p.logs, 'bruno on /prefecture');
  assert.equal(oneHeader(upstream.last().rawHeaders, 'X-Auth-Sub'), bruno.sub);
  const brRoot = await brunoPerson.get(`${a.base}/`);
  assert.equal(brRoot.status, 403, 'bruno (other SIRET, roles agent_public_etat) is refused on "/"');
  assert.equal(upstream.requests.filter((r) => r.url === '/').length, 0);
});

test('(pc7) ProConnect logout: id_token_hint, state and post_logout_redirect_uri to end_session_endpoint, back on /.passerelle/logged-out', TEST_TIMEOUT, async (t) => {
  const { a, op: pc, p, person } = await world(t, {
    logout: true,
    routes: [{ path: '/', scopes: ['email'], headers: { 'X-Auth-Sub': 'sub' } }],
  });
  assertLanded(await person.login(`${a.base}/`, 'helene'), `${a.base}/`, p.logs);
  const idToken = JSON.parse(pc.callsToEndpoint('token_endpoint')[0].responseBody).id_token;

  const first = await person.get(`${a.base}${PREFIX}/logout`, { follow: false });
  assert.equal(first.status, 302, `logout: ${first.status} ${first.body.slice(0, 300)}`);
  const end = new URL(first.location);
  assert.equal(`${end.origin}${end.pathname}`, pc.discovery.end_session_endpoint, `to the provider's end_session_endpoint: ${first.location}`);
  assert.equal(end.searchParams.get('id_token_hint'), idToken, 'id_token_hint is the id_token of the session');
  assert.equal(end.searchParams.get('post_logout_redirect_uri'), `${a.base}${PREFIX}/logged-out`);
  const state = end.searchParams.get('state');
  assert.ok(state && state.length >= 32, `state ≥ 32 chars: ${state}`);
  assert.deepEqual(sessionCookies(person, a.base).map((c) => c.name), [], 'the session cookie is deleted at once');

  const res = await person.throughProvider(await person.get(first.location));
  assert.ok(res.steps.includes('logout-confirm'), `the provider's logout confirmation was submitted: ${res.steps}`);
  assert.equal(res.status, 200, `ended on ${res.url} with ${res.status}:\n${res.body.slice(0, 500)}`);
  const landed = new URL(res.url);
  assert.equal(`${landed.origin}${landed.pathname}`, `${a.base}${PREFIX}/logged-out`, `back on logged-out: ${res.url}`);
  assert.equal(landed.searchParams.get('state'), state, 'the provider returned the state');
  assert.match(res.body, /<html[^>]*\blang="fr"/);
  assert.match(res.body, /déconnecté/i);
  assert.equal(pc.errors.length, 0, `provider errors: ${JSON.stringify(pc.errors)}`);
  await assertNoSession(person, a.base, 'after logout');

  // The provider's session is over too: the next visit shows its login form again.
  const again = await person.navigate(`${a.base}/`);
  assert.ok(again.url.startsWith(`${pc.origin}/interaction/`), `a new login at the provider: ${again.url}`);
  assert.ok(parseForms(again.body, again.url).some((f) => f.inputs.some((i) => i.name === 'login')), 'the login form');
});

// ===============================================================================================================
// 2. NC Connect
// ===============================================================================================================

for (const authMethod of ['client_secret_basic', 'client_secret_post']) {
  test(`(nc1) NC Connect v3 (${authMethod}): non-ASCII name, verified, birthplace only on the route with scope birth`, TEST_TIMEOUT, async (t) => {
    const { a, op: nc, upstream, p, person } = await world(t, {
      start: startNcConnectProvider,
      provider: { authMethod },
      name: 'nc',
      kind: 'nc-connect',
      // client_secret_basic is the preset's default: only the post variant says it.
      extra: authMethod === 'client_secret_post' ? { auth_method: authMethod } : {},
      routes: [
        {
          path: '/',
          scopes: ['profile', 'email'],
          headers: {
            'X-Auth-Sub': 'sub',
            'X-Auth-Given-Name': 'given_name',
            'X-Auth-Family-Name': 'family_name',
            'X-Auth-Email': 'email',
            'X-Auth-Verified': 'verified',
            'X-Auth-Birthdate': 'birthdate',
          },
        },
        {
          path: '/etat-civil',
          scopes: ['profile', 'birth'],
          headers: {
            'X-Auth-Sub': 'sub',
            'X-Auth-Given-Name': 'given_name',
            'X-Auth-Verified': 'verified',
            'X-Auth-Birthplace': 'birthplace',
            'X-Auth-Birthcountry': 'birthcountry',
          },
        },
      ],
    });

    const res = await person.login(`${a.base}/demarches`, 'helene');
    assertLanded(res, `${a.base}/demarches`, p.logs);
    const authz = () => nc.callsToEndpoint('authorization_endpoint');
    assert.deepEqual(sorted(scopeSet(authz()[0].query.scope)), ['email', 'openid', 'profile'],
      `the preset's scopes, no birth: ${authz()[0].query.scope}`);
    assert.ok(authz()[0].query.nonce?.length >= 32);

    const tok = nc.callsToEndpoint('token_endpoint');
    assert.equal(tok.length, 1);
    assert.equal(tok[0].status, 200, `token: ${tok[0].status} ${tok[0].responseBody}`);
    const form = Object.fromEntries(new URLSearchParams(tok[0].body));
    if (authMethod === 'client_secret_basic') {
      const expected = `Basic ${Buffer.from(`${encodeURIComponent(nc.clientId)}:${encodeURIComponent(nc.clientSecret)}`).toString('base64')}`;
      assert.equal(tok[0].headers.authorization, expected, 'client_secret_basic');
      assert.equal(form.client_secret, undefined, 'no secret in the body');
    } else {
      assert.equal(tok[0].headers.authorization, undefined, 'client_secret_post: no Authorization header');
      assert.equal(form.client_secret, nc.clientSecret);
      assert.equal(form.client_id, nc.clientId);
    }
    assert.equal(decodeJwt(JSON.parse(tok[0].responseBody).id_token).header.alg, 'RS256');
    const ui = nc.callsToEndpoint('userinfo_endpoint');
    assert.equal(ui.length, 1);
    assert.match(String(ui[0].responseType), /^application\/json/, 'plain JSON userinfo');
    assert.equal(JSON.parse(ui[0].responseBody).birthplace, undefined, 'birth was not asked for, so not released');

    let up = upstream.last();
    const h = (name) => oneHeader(up.rawHeaders, name);
    assert.equal(h('X-Auth-Sub'), ncHelene.sub);
    assert.equal(h('X-Auth-Given-Name'), 'H%C3%A9l%C3%A8ne');
    assert.equal(h('X-Auth-Family-Name'), 'Wamytan');
    assert.equal(h('X-Auth-Email'), 'helene.wamytan@gouv.nc');
    assert.equal(h('X-Auth-Verified'), '2', 'the NC Connect verification level');
    assert.equal(h('X-Auth-Birthdate'), '1984-05-17');
    assert.deepEqual(headersMatching(up.rawHeaders, /birth(place|country)/i), [], 'no birth headers on a route without birth');

    // The route with scope birth: step-up asking for the union, then the birthplace.
    const target = `${a.base}/etat-civil/extrait?type=naissance`;
    const civil = await person.login(target, 'helene');
    assertLanded(civil, target, p.logs, 'step-up for birth');
    assert.equal(authz().length, 2);
    assert.deepEqual(sorted(scopeSet(authz()[1].query.scope)), ['birth', 'email', 'openid', 'profile'],
      `the union: ${authz()[1].query.scope}`);
    up = upstream.last();
    assert.equal(oneHeader(up.rawHeaders, 'X-Auth-Birthplace'), 'Noum%C3%A9a');
    assert.equal(oneHeader(up.rawHeaders, 'X-Auth-Birthcountry'), 'Nouvelle-Cal%C3%A9donie');
    assert.equal(oneHeader(up.rawHeaders, 'X-Auth-Verified'), '2');

    // Back on the route without birth: the session has the birthplace, the route never forwards it, even
    // when the browser sends such headers itself.
    const back = await person.navigate(`${a.base}/demarches`, {
      headers: [['X-Auth-Birthplace', 'Paris'], ['x_auth_birthplace', 'Lyon'], ['X-AUTH-BIRTHCOUNTRY', 'France']],
    });
    assertLanded(back, `${a.base}/demarches`, p.logs, 'back on the route without birth');
    up = upstream.last();
    assert.deepEqual(headersMatching(up.rawHeaders, /birth(place|country)/i), [],
      `no birthplace on a route without birth: ${JSON.stringify(identityLines(up.rawHeaders))}`);
    assert.equal(oneHeader(up.rawHeaders, 'X-Auth-Given-Name'), 'H%C3%A9l%C3%A8ne');
    assert.equal(authz().length, 2, 'no new login');
    assert.deepEqual(nc.errors, []);
    assertNoSecretsInLogs({ passerelle: p, op: nc });
  });
}

test('(nc2) NC Connect v2 (version = 2): nested userinfo {"info":{"openid":{"Email"}}} → email lower-cased at the upstream', TEST_TIMEOUT, async (t) => {
  const { a, op: v2, upstream, p, person } = await world(t, {
    start: startNcConnectV2Provider,
    name: 'ncv2',
    kind: 'nc-connect',
    extra: { version: 2 },
    routes: [{ path: '/', scopes: ['email'], headers: { 'X-Auth-Sub': 'sub', 'X-Auth-Email': 'email' } }],
  });
  const res = await person.login(`${a.base}/guichet`, 'jdoe');
  assertLanded(res, `${a.base}/guichet`, p.logs);

  // The provider really answered the legacy layout, and only in userinfo.
  const ui = v2.callsToEndpoint('userinfo_endpoint');
  assert.equal(ui.length, 1);
  const body = JSON.parse(ui[0].responseBody);
  assert.equal(body.sub, NC_V2_ACCOUNTS.jdoe.claims.sub);
  assert.equal(body.login, 'jdoe');
  assert.equal(body.info?.openid?.Email, 'JDoe@Gouv.NC');
  assert.equal(body.email, undefined, 'no top-level email in the v2 layout');
  const idToken = decodeJwt(JSON.parse(v2.callsToEndpoint('token_endpoint')[0].responseBody).id_token).payload;
  assert.equal(idToken.info, undefined, 'the id_token does not carry the email');

  const up = upstream.last();
  assert.equal(oneHeader(up.rawHeaders, 'X-Auth-Sub'), NC_V2_ACCOUNTS.jdoe.claims.sub);
  assert.equal(oneHeader(up.rawHeaders, 'X-Auth-Email'), 'jdoe@gouv.nc');
  assert.deepEqual(v2.errors, []);
});

// ===============================================================================================================
// 3. Two federations on one instance
// ===============================================================================================================

async function duo(t) {
  const a = await addresses();
  const pc = await stopAfter(t, startProConnectProvider({ redirectUris: a.redirectUris }));
  const nc = await stopAfter(t, startNcConnectProvider({ redirectUris: a.redirectUris }));
  const upstream = await stopAfter(t, startUpstream());
  const toml = tomlConfig({
    ...a,
    providers: [providerToml('pc', 'proconnect', pc), providerToml('nc', 'nc-connect', nc)],
    routes: [routeToml({
      path: '/',
      upstream: upstream.url,
      providers: ['pc', 'nc'],
      scopes: ['email'],
      headers: { 'X-Auth-Sub': 'sub', 'X-Auth-Email': 'email', 'X-Auth-Provider': 'provider' },
    })],
  });
  const p = await launch(t, toml, a);
  return { ...a, pc, nc, upstream, p };
}

/** Navigate to `target` without a session and return the sign-in page and its two federation links. */
async function signInPage(person, s, rd) {
  const first = await person.get(`${s.base}${rd}`, { follow: false });
  assert.equal(first.status, 302, `unauthenticated navigation: ${first.status} ${first.body.slice(0, 300)}`);
  const loginUrl = new URL(first.location);
  assert.equal(`${loginUrl.origin}${loginUrl.pathname}`, `${s.base}${PREFIX}/login`, `to the sign-in page: ${first.location}`);
  assert.equal(loginUrl.searchParams.get('rd'), rd);
  const page = await person.get(first.location, { follow: false });
  assert.equal(page.status, 200, `sign-in page: ${page.status} ${page.body.slice(0, 300)}`);
  const all = links(page.body);
  const fed = (cls) => all.filter((l) => l.className.split(/\s+/).includes('fed') && l.className.split(/\s+/).includes(cls));
  return { page, all, proconnect: fed('proconnect'), ncconnect: fed('ncconnect') };
}

test('(duo1) ProConnect and NC Connect on one route: accessible French sign-in page with both buttons, rd survives the choice', TEST_TIMEOUT, async (t) => {
  const s = await duo(t);
  const rd = '/demarche/suivi?id=7&etape=%C3%A9tat';
  const person = createPerson();
  const { page, all, proconnect, ncconnect } = await signInPage(person, s, rd);

  assert.match(page.headers['content-type'] || '', /^text\/html/);
  assert.match(page.body, /<html[^>]*\blang="fr"/, 'lang="fr"');
  assert.match(page.body, /<title>[^<]+<\/title>/, 'a title');
  assert.match(page.body, /<h1[^>]*>[^<]+<\/h1>/, 'a heading');
  assert.equal(proconnect.length, 1, `one ProConnect button (class="fed proconnect"): ${JSON.stringify(all)}`);
  assert.equal(ncconnect.length, 1, `one NC Connect button (class="fed ncconnect"): ${JSON.stringify(all)}`);
  for (const [name, link, label] of [['pc', proconnect[0], 'ProConnect'], ['nc', ncconnect[0], 'NC Connect']]) {
    assert.ok(link.accessibleText.includes(label), `the ${label} link's accessible text names it: « ${link.accessibleText} »`);
    const u = new URL(link.href, s.base);
    assert.equal(`${u.origin}${u.pathname}`, `${s.base}${PREFIX}/login`);
    assert.equal(u.searchParams.get('provider'), name, `${label} link: ${link.href}`);
    assert.equal(u.searchParams.get('rd'), rd, `${label} link keeps rd: ${link.href}`);
  }
  for (const img of page.body.match(/<img\b[^>]*>/gi) || []) assert.match(img, /\balt=/, `images have alt text: ${img}`);
  for (const l of all) assert.ok(l.accessibleText.length > 0, `every link has a text: ${l.attrs}`);
  assert.doesNotMatch(page.body, /<script/i, 'no script');

  // Choose ProConnect: back on the exact page, identity from ProConnect, NC Connect never asked.
  const res = await person.login(new URL(proconnect[0].href, s.base).href, 'helene');
  assertLanded(res, `${s.base}${rd}`, s.p.logs, 'via ProConnect');
  let up = s.upstream.last();
  assert.equal(up.url, rd);
  assert.equal(oneHeader(up.rawHeaders, 'X-Auth-Provider'), 'pc');
  assert.equal(oneHeader(up.rawHeaders, 'X-Auth-Sub'), helene.sub);
  assert.equal(oneHeader(up.rawHeaders, 'X-Auth-Email'), 'helene.noel@example.gouv.fr');
  assert.equal(s.nc.callsToEndpoint('authorization_endpoint').length, 0);

  // Another person chooses NC Connect.
  const other = createPerson();
  const second = await signInPage(other, s, rd);
  const resNc = await other.login(new URL(second.ncconnect[0].href, s.base).href, 'helene');
  assertLanded(resNc, `${s.base}${rd}`, s.p.logs, 'via NC Connect');
  up = s.upstream.last();
  assert.equal(oneHeader(up.rawHeaders, 'X-Auth-Provider'), 'nc');
  assert.equal(oneHeader(up.rawHeaders, 'X-Auth-Sub'), ncHelene.sub);
  assert.equal(s.pc.callsToEndpoint('authorization_endpoint').length, 1, 'ProConnect was asked only by the first person');
});

test('(duo2) mix-up defence: a callback whose iss is the other federation\'s issuer is refused, no session, no code redeemed', TEST_TIMEOUT, async (t) => {
  const s = await duo(t);
  for (const [chosen, other, login] of [['nc', 'pc', 'helene'], ['pc', 'nc', 'helene']]) {
    await t.test(`a ${chosen} login answered with ${other}'s iss`, async () => {
      const person = createPerson();
      const rewritten = [];
      const rewrite = (url) => {
        if (!url.startsWith(`${s.base}${PREFIX}/callback`)) return undefined;
        const u = new URL(url);
        assert.equal(u.searchParams.get('iss'), s[chosen].issuer, 'the real callback carries the chosen provider\'s iss');
        u.searchParams.set('iss', s[other].issuer);
        rewritten.push(u.href);
        return u.href;
      };
      const choice = await signInPage(person, s, '/dossier');
      const link = chosen === 'pc' ? choice.proconnect[0] : choice.ncconnect[0];
      const tokensBefore = s[chosen].callsToEndpoint('token_endpoint').length + s[other].callsToEndpoint('token_endpoint').length;
      const res = await person.login(new URL(link.href, s.base).href, login, { rewrite });
      assert.equal(rewritten.length, 1, 'the callback was rewritten');
      assert.ok(res.status >= 400 && res.status < 500, `a mixed-up callback is refused with a 4xx page, got ${res.status} at ${res.url}:\n${res.body.slice(0, 500)}`);
      await assertFrenchErrorPage(res, s.p.logs, { exclude: rewritten });
      await assertNoSession(person, s.base, 'after a mixed-up callback');
      assert.equal(s[chosen].callsToEndpoint('token_endpoint').length + s[other].callsToEndpoint('token_endpoint').length, tokensBefore,
        'the code was not redeemed at either provider');
    });
  }
  assert.deepEqual(s.upstream.requests, [], 'the upstream was never called');
});

// ===============================================================================================================
// 4. Egress proxy (RIE back channel)
// ===============================================================================================================

test('(egress1) egress_proxy: discovery, JWKS, token and userinfo all go through the proxy; with it stopped, a 502 page and no bypass', TEST_TIMEOUT, async (t) => {
  const proxy = await stopAfter(t, startForwardProxy());
  const { a, op: pc, upstream, p, person } = await world(t, {
    extra: { egress_proxy: proxy.url },
    routes: [{ path: '/', scopes: ['email'], headers: { 'X-Auth-Sub': 'sub', 'X-Auth-Email': 'email' } }],
  });
  const res = await person.login(`${a.base}/`, 'helene');
  assertLanded(res, `${a.base}/`, p.logs, 'login through the egress proxy');
  assert.equal(oneHeader(upstream.last().rawHeaders, 'X-Auth-Email'), 'helene.noel@example.gouv.fr');

  // What the proxy relayed: absolute-form requests to each back-channel endpoint.
  const seen = proxy.requests.map((r) => `${r.method} ${r.url}`);
  for (const [method, url] of [
    ['GET', `${pc.issuer}/.well-known/openid-configuration`],
    ['GET', pc.discovery.jwks_uri],
    ['POST', pc.discovery.token_endpoint],
    ['GET', pc.discovery.userinfo_endpoint],
  ]) {
    assert.ok(proxy.requests.some((r) => r.method === method && r.url === url && r.status === 200),
      `the proxy relayed ${method} ${url}; it saw:\n${seen.join('\n')}`);
  }
  // And the provider saw no back-channel call that did not come through the proxy.
  const direct = backChannel(pc).filter((c) => c.headers.via !== VIA);
  assert.deepEqual(direct.map((c) => `${c.method} ${c.path}`), [], 'no back-channel call bypassed the proxy');
  assert.ok(backChannel(pc).length >= 4, `the provider saw the proxied calls: ${backChannel(pc).map((c) => `${c.method} ${c.path}`).join(', ')}`);
  for (const c of pc.calls.filter((x) => x.headers.via === VIA)) {
    assert.match(c.headers['user-agent'] || '', /^passerelle\//, `only Passerelle's calls went through the proxy: ${c.method} ${c.path}`);
  }

  // The proxy goes away: a new login fails with the French 502 page, and nothing reaches the provider directly.
  await proxy.stop();
  const backChannelBefore = backChannel(pc).length;
  const tokensBefore = pc.callsToEndpoint('token_endpoint').length;
  const other = createPerson();
  const failed = await other.login(`${a.base}/dossiers`, 'helene');
  await assertFrench5xx(failed, p.logs, 502, 'Fournisseur d\'identité indisponible');
  retryLink(failed, 'pc');
  assert.equal(backChannel(pc).length, backChannelBefore,
    `no back-channel call reached the provider without the proxy: ${backChannel(pc).slice(backChannelBefore).map((c) => `${c.method} ${c.path}`).join(', ')}`);
  assert.equal(pc.callsToEndpoint('token_endpoint').length, tokensBefore, 'the code was not redeemed directly');
  await assertNoSession(other, a.base, 'after the failed login');
  assert.equal(upstream.requests.length, 1, 'the upstream saw only the first person');
});

test('(egress2) egress_proxy down from the start: Passerelle starts, a login is a 502 page without any direct call; when the proxy comes up, login works', TEST_TIMEOUT, async (t) => {
  const proxyPort = await freePort(); // nothing listens there yet
  const proxyUrl = `http://127.0.0.1:${proxyPort}`;
  const { a, op: pc, upstream, p, person } = await world(t, {
    extra: { egress_proxy: proxyUrl },
    routes: [{ path: '/', scopes: ['email'], headers: { 'X-Auth-Sub': 'sub' } }],
  });
  const res = await person.login(`${a.base}/dossiers?id=1`, 'helene');
  await assertFrench5xx(res, p.logs, 502, 'Fournisseur d\'identité indisponible');
  assert.deepEqual(backChannel(pc).map((c) => `${c.method} ${c.path}`), [], 'the provider was never called directly');
  assert.equal(pc.callsToEndpoint('authorization_endpoint').length, 0, 'the person was not sent to the provider');
  await assertNoSession(person, a.base, 'proxy down');
  assert.deepEqual(upstream.requests, []);

  // The proxy comes up on its address: the next login works through it.
  const proxy = await stopAfter(t, startForwardProxy({ port: proxyPort }));
  const ok = await person.login(`${a.base}/dossiers?id=1`, 'helene');
  assertLanded(ok, `${a.base}/dossiers?id=1`, p.logs, 'once the proxy is up');
  assert.ok(proxy.requests.some((r) => r.method === 'POST' && r.url === pc.discovery.token_endpoint), 'token through the proxy');
  assert.deepEqual(backChannel(pc).filter((c) => c.headers.via !== VIA).map((c) => `${c.method} ${c.path}`), []);
});

test('(egress3) https provider (RIE-like): back channel tunnelled through the proxy with CONNECT, private CA from ca_file; without ca_file the certificate is refused', TEST_TIMEOUT, async (t) => {
  const pki = await makePki(t);
  if (!pki) {
    t.skip('openssl not found: cannot make a test certificate');
    return;
  }
  const a = await addresses(); // Passerelle with ca_file
  const b = await addresses(); // Passerelle without ca_file
  const proxy = await stopAfter(t, startForwardProxy());
  const pc = await stopAfter(t, startProConnectProvider({
    redirectUris: [...a.redirectUris, ...b.redirectUris],
    tls: { key: pki.key, cert: pki.cert, ca: pki.ca },
  }));
  assert.ok(pc.issuer.startsWith('https://'), pc.issuer);
  const upstream = await stopAfter(t, startUpstream());
  const route = routeToml({ path: '/', upstream: upstream.url, providers: ['pc'], scopes: ['email'], headers: { 'X-Auth-Sub': 'sub', 'X-Auth-Email': 'email' } });
  const pA = await launch(t, tomlConfig({ ...a, providers: [providerToml('pc', 'proconnect', pc, { egress_proxy: proxy.url, ca_file: pki.caFile })], routes: [route] }), { ...a, logName: 'with_ca_file' });
  const pB = await launch(t, tomlConfig({ ...b, providers: [providerToml('pc', 'proconnect', pc, { egress_proxy: proxy.url })], routes: [route] }), { ...b, logName: 'without_ca_file' });
  // The scripted person speaks plain http: its front-channel hops go to the provider's http listener.
  const rewrite = (url) => (url.startsWith(pc.origin) ? `${pc.frontOrigin}${url.slice(pc.origin.length)}` : undefined);

  const person = createPerson();
  const res = await person.login(`${a.base}/dossiers`, 'helene', { rewrite });
  assertLanded(res, `${a.base}/dossiers`, pA.logs, 'login with an https provider');
  assert.equal(oneHeader(upstream.last().rawHeaders, 'X-Auth-Email'), 'helene.noel@example.gouv.fr');
  const tunnels = proxy.requests.filter((r) => r.method === 'CONNECT');
  assert.ok(tunnels.some((r) => r.url === `127.0.0.1:${pc.port}` && r.status === 200),
    `the back channel was tunnelled with CONNECT 127.0.0.1:${pc.port}; the proxy saw: ${proxy.requests.map((r) => `${r.method} ${r.url}`).join(', ')}`);
  const calls = backChannel(pc);
  for (const endpoint of ['token_endpoint', 'userinfo_endpoint', 'jwks_uri']) {
    assert.ok(calls.some((c) => c.path === new URL(pc.discovery[endpoint]).pathname), `${endpoint} was called: ${calls.map((c) => c.path).join(', ')}`);
  }
  const tunnelPorts = new Set(tunnels.map((r) => r.tunnelPort));
  for (const c of calls) {
    assert.ok(c.secure, `${c.method} ${c.path} came over TLS`);
    assert.ok(tunnelPorts.has(c.remotePort), `${c.method} ${c.path} came through a proxy tunnel (from port ${c.remotePort}; tunnels: ${[...tunnelPorts].join(', ')})`);
  }

  // The same provider for a Passerelle that does not trust the private CA: a 502 page, no token redeemed.
  const tokensBefore = pc.callsToEndpoint('token_endpoint').length;
  const other = createPerson();
  const failed = await other.login(`${b.base}/dossiers`, 'helene', { rewrite });
  await assertFrench5xx(failed, pB.logs, 502, 'Fournisseur d\'identité indisponible');
  assert.equal(pc.callsToEndpoint('token_endpoint').length, tokensBefore, 'no token request got through an untrusted TLS connection');
  await assertNoSession(other, b.base, 'untrusted certificate');
});
