// Passerelle as a gateway, end to end: the sign-in chooser with two providers, several tabs logging in at once,
// a load-balanced upstream with health checks, forwarding headers (untrusted and trusted peers), Passerelle's own
// cookies kept from the upstream, forward-auth, the CLI (check, keygen, run with a wrong issuer), the demo of
// config.example.toml, and an upstream that is down. Each scenario starts and stops its own servers on 127.0.0.1.
//
// Needs target/release/passerelle (or $PASSERELLE_BIN). Run: tests/run-integration.sh --test-name-pattern='\(g'
// or: node --test tests/integration/gateway.test.mjs

import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';

import { correlationIdOn, identityLines } from '../support/checks.mjs';
import { closeServer, httpGetStatus, listen, pause, stopAfter } from '../support/http.mjs';
import { createPerson, decodeEntities, parseForms } from '../support/person.mjs';
import { ACCOUNTS, startProvider } from '../support/provider.mjs';
import {
  freePort, keepOutput, launchPasserelle, outputName, REPO_ROOT, runPasserelle, sessionKey, spawnPasserelle,
} from '../support/passerelle.mjs';
import { addresses, configToml, PREFIX, providerToml, q, startStack } from '../support/stack.mjs';
import { headerValues, headersMatching, startUpstream } from '../support/upstream.mjs';

const { alice } = ACCOUNTS;
const TEST_TIMEOUT = { timeout: 120_000 };

function testName(t) {
  return outputName(t, { prefix: 'gateway_' });
}

/**
 * `passerelle run --config FILE` with this TOML, stopped (SIGINT) by t.after; waits for admin /ready.
 * Unlike support/passerelle.mjs's startPasserelle it does not need `public_url` in the TOML (some scenarios test
 * its absence).
 */
function launch(t, toml, opts) {
  return launchPasserelle(t, toml, { ...opts, logName: testName(t) });
}

const FRENCH_5XX_WORDS = ['service', 'indisponible', 'réessayez', 'répond', 'erreur', 'identifiant', 'assistance', 'accueil'];

/** Links of an HTML page: [{ href (entities decoded), text (tags stripped) }]. */
function links(html) {
  return [...html.matchAll(/<a\b([^>]*)>([\s\S]*?)<\/a>/gi)].map((m) => {
    const href = m[1].match(/\bhref\s*=\s*(?:"([^"]*)"|'([^']*)')/i);
    return {
      href: href ? decodeEntities(href[1] ?? href[2]) : undefined,
      text: decodeEntities(m[2].replace(/<[^>]*>/g, '')).trim(),
    };
  });
}

function flowCookies(person, base) {
  return person.jar.all(base).filter((c) => c.name.startsWith('passerelle_flow_'));
}

/** Minimal valid Passerelle TOML around the given provider blocks and routes. */
function gatewayToml(opts) {
  return configToml({ writtenBy: 'tests/integration/gateway.test.mjs', ...opts });
}

function oidcProviderToml(name, op, { displayName, scopes = ['openid', 'email', 'profile'] } = {}) {
  return providerToml(name, 'oidc', op, {
    auth_method: 'client_secret_basic',
    scopes,
    ...(displayName ? { display_name: displayName } : {}),
  });
}

function assertNoServerError(res, what) {
  assert.ok(res.status < 500, `${what}: server error ${res.status}:\n${res.body.slice(0, 500)}`);
}

// (g1) -----------------------------------------------------------------------------------------------------------
test('(g1) sign-in chooser: two providers on one route, the chosen one logs in, rd survives the choice', TEST_TIMEOUT, async (t) => {
  const { port, adminPort, base, redirectUris, postLogoutRedirectUris } = await addresses();
  const alpha = await stopAfter(t, startProvider({ redirectUris, postLogoutRedirectUris }));
  const betaAccounts = { alice: { ...alice, sub: 'beta-alice-0001' } };
  const beta = await stopAfter(t, startProvider({ redirectUris, postLogoutRedirectUris, accounts: betaAccounts }));
  const upstream = await stopAfter(t, startUpstream());

  const toml = gatewayToml({
    port,
    adminPort,
    providers: `${oidcProviderToml('alpha', alpha, { displayName: 'Fédération Alpha' })}
${oidcProviderToml('beta', beta, { displayName: 'Fédération Bêta & Cie' })}`,
    routes: `[[route]]
path = "/"
upstream = ${q(upstream.url)}
auth = "required"
providers = ["alpha", "beta"]
scopes = ["email"]
[route.headers]
"X-Auth-Sub" = "sub"
"X-Auth-Provider" = "provider"
`,
  });
  const p = await launch(t, toml, { adminPort });
  const person = createPerson();
  const rd = '/app/page?x=1&y=%C3%A9';
  const target = `${base}${rd}`;

  // 1. Unauthenticated navigation → 302 to Passerelle's sign-in page, with rd.
  const first = await person.get(target, { follow: false });
  assert.equal(first.status, 302, `unauthenticated navigation: expected 302, got ${first.status}: ${first.body.slice(0, 500)}`);
  const loginUrl = new URL(first.location);
  assert.equal(`${loginUrl.origin}${loginUrl.pathname}`, `${base}${PREFIX}/login`, `redirected to ${first.location}`);
  assert.equal(loginUrl.searchParams.get('rd'), rd, `rd carries the original path and query: ${first.location}`);
  assert.equal(loginUrl.searchParams.get('provider'), null, 'no provider chosen yet');
  assert.deepEqual(alpha.callsTo(new URL(alpha.discovery.authorization_endpoint).pathname), [], 'no authorize at alpha yet');
  assert.deepEqual(beta.callsTo(new URL(beta.discovery.authorization_endpoint).pathname), [], 'no authorize at beta yet');

  // 2. The sign-in page.
  const page = await person.get(first.location, { follow: false });
  assert.equal(page.status, 200, `sign-in page: ${page.status}: ${page.body.slice(0, 500)}`);
  assert.match(page.headers['content-type'] || '', /^text\/html/);
  assert.match(page.body, /<html[^>]*\blang="fr"/, 'the sign-in page is French (lang="fr")');
  const csp = page.headers['content-security-policy'] || '';
  assert.match(csp, /frame-ancestors 'none'/, `CSP: ${csp}`);
  assert.match(csp, /default-src 'none'/, `CSP is strict (default-src 'none'): ${csp}`);
  assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval|(^|[\s;])\*($|[\s;])/, `CSP allows nothing unsafe: ${csp}`);
  assert.doesNotMatch(page.body, /<script/i, 'no script on the sign-in page');
  const pageLinks = links(page.body);
  const choice = (name, label) => {
    const link = pageLinks.find((l) => l.text.includes(label));
    assert.ok(link, `the sign-in page lists ${label}; links: ${JSON.stringify(pageLinks)}\n${page.body.slice(0, 1500)}`);
    const u = new URL(link.href, base);
    assert.equal(`${u.origin}${u.pathname}`, `${base}${PREFIX}/login`, `${label} link: ${link.href}`);
    assert.equal(u.searchParams.get('provider'), name, `${label} link: ${link.href}`);
    assert.equal(u.searchParams.get('rd'), rd, `${label} link keeps rd: ${link.href}`);
    assert.ok(link.href.startsWith(`${PREFIX}/login?provider=${name}&rd=`), `link shape /.passerelle/login?provider=NAME&rd=…: ${link.href}`);
    return u.href;
  };
  choice('alpha', 'Fédération Alpha');
  const betaLink = choice('beta', 'Fédération Bêta & Cie');

  // 3. The second provider: login there, back on the original URL.
  const res = await person.login(betaLink, 'alice');
  assert.equal(res.status, 200, `ended on ${res.url} with ${res.status}:\n${res.body.slice(0, 800)}\n--- passerelle logs:\n${p.logs().slice(-3000)}`);
  assert.deepEqual(res.steps, ['login']);
  assert.equal(res.url, target, 'back on the exact original URL (rd survived the choice)');
  assert.ok(res.history.some((h) => h.url.startsWith(beta.discovery.authorization_endpoint)), 'went through beta\'s authorize');
  assert.deepEqual(alpha.callsTo(new URL(alpha.discovery.authorization_endpoint).pathname), [], 'alpha was never asked');
  assert.equal(upstream.requests.length, 1);
  const up = upstream.last();
  assert.equal(up.url, rd);
  assert.deepEqual(headerValues(up.rawHeaders, 'X-Auth-Sub'), ['beta-alice-0001'], 'the upstream sees beta\'s sub');
  assert.deepEqual(headerValues(up.rawHeaders, 'X-Auth-Provider'), ['beta']);
});

// (g2) -----------------------------------------------------------------------------------------------------------
test('(g2) several tabs: two logins started, the second completed first, then the first; each lands on its own deep link', TEST_TIMEOUT, async (t) => {
  const s = await startStack(t);
  const deepA = `${s.base}/app/one?tab=1`;
  const deepB = `${s.base}/app/two?tab=2`;

  const pageA = await s.person.navigate(deepA); // ends on the provider's login form
  const pageB = await s.person.navigate(deepB);
  for (const [what, page] of [['tab A', pageA], ['tab B', pageB]]) {
    assert.equal(page.status, 200, `${what}: expected the provider's login form, got ${page.status} at ${page.url}`);
    assert.ok(page.url.startsWith(s.op.issuer), `${what}: on the provider (${page.url})`);
    assert.ok(parseForms(page.body, page.url).some((f) => f.inputs.some((i) => i.name === 'login')), `${what}: a login form`);
  }
  const flowsStarted = flowCookies(s.person, s.base).map((c) => c.name);
  assert.equal(flowsStarted.length, 2, `two flow cookies coexist: ${flowsStarted.join(', ')}`);
  assert.notEqual(flowsStarted[0], flowsStarted[1]);

  const resB = await s.person.throughProvider(pageB, { login: 'alice' });
  assert.equal(resB.status, 200, `tab B ended on ${resB.url} with ${resB.status}:\n${resB.body.slice(0, 800)}\n${s.passerelle.logs().slice(-3000)}`);
  assert.equal(resB.url, deepB, 'tab B lands on its own deep link');
  assert.equal(flowCookies(s.person, s.base).length, 1, 'tab A\'s flow cookie survived tab B\'s callback');

  const resA = await s.person.throughProvider(pageA, { login: 'alice' });
  assert.equal(resA.status, 200, `tab A ended on ${resA.url} with ${resA.status}:\n${resA.body.slice(0, 800)}\n${s.passerelle.logs().slice(-3000)}`);
  assert.equal(resA.url, deepA, 'tab A lands on its own deep link');
  assert.deepEqual(flowCookies(s.person, s.base).map((c) => c.name), [], 'both flow cookies consumed');

  assert.deepEqual(s.upstream.requests.map((r) => r.url), ['/app/two?tab=2', '/app/one?tab=1']);
  for (const r of s.upstream.requests) assert.deepEqual(headerValues(r.rawHeaders, 'X-Auth-Sub'), [alice.sub]);
});

/**
 * Start `n` logins, one hop each: by navigating to a protected deep link (`via: 'navigation'`, the single
 * provider's authorize comes straight back) or through `/.passerelle/login?provider=op&rd=…` (`via: 'login'`).
 * Returns [{ url, location, flow }] in the order started.
 */
async function startLogins(s, person, n, via) {
  const started = [];
  for (let i = 1; i <= n; i++) {
    const url = `${s.base}/app/tab${i}`;
    const first = via === 'login' ? `${s.base}${PREFIX}/login?provider=op&rd=${encodeURIComponent(`/app/tab${i}`)}` : url;
    const res = await person.get(first, { follow: false });
    assert.equal(res.status, 302, `login ${i}: expected 302, got ${res.status}: ${res.body.slice(0, 300)}`);
    const flow = res.setCookies.find((c) => c.name.startsWith('passerelle_flow_') && c.value !== '');
    assert.ok(flow, `login ${i} sets a flow cookie: ${res.setCookies.map((c) => c.raw).join(' | ')}`);
    started.push({ url, location: res.location, flow: flow.name });
  }
  return started;
}

test('(g2b) six logins started: at most 4 flow cookies remain, the newest one works', TEST_TIMEOUT, async (t) => {
  for (const via of ['navigation', 'login']) {
    await t.test(via === 'navigation' ? 'started by navigating to protected deep links' : `started at ${PREFIX}/login?provider=op&rd=…`, async (st) => {
      const s = await startStack(st);
      const person = s.newPerson();
      const started = await startLogins(s, person, 6, via);
      const names = flowCookies(person, s.base).map((c) => c.name);
      assert.ok(names.length <= 4, `at most 4 flow cookies in the jar, got ${names.length}: ${names.join(', ')}`);
      assert.ok(names.length >= 1, 'the flow just started is kept');
      for (const n of names) assert.ok(started.some((x) => x.flow === n), `${n} is one of the started flows`);
      const newest = started[started.length - 1];
      assert.ok(names.includes(newest.flow), `the newest flow ${newest.flow} is kept; jar: ${names.join(', ')}`);

      const res = await person.throughProvider(await person.get(newest.location), { login: 'alice' });
      assert.equal(res.status, 200, `newest login ended on ${res.url} with ${res.status}:\n${res.body.slice(0, 500)}`);
      assert.equal(res.url, newest.url);
    });
  }
});

test('(g2c) six logins started: the flows deleted are the oldest ones', TEST_TIMEOUT, async (t) => {
  const s = await startStack(t);
  const person = s.newPerson();
  const started = await startLogins(s, person, 6, 'login');
  const names = flowCookies(person, s.base).map((c) => c.name).sort();
  const expected = started.slice(-4).map((x) => x.flow).sort();
  assert.deepEqual(names, expected,
    `the 4 newest flows should be kept (started in order: ${started.map((x) => x.flow).join(', ')}); jar holds: ${names.join(', ')}`);
});

// (g3) -----------------------------------------------------------------------------------------------------------
test('(g3) load-balanced upstream with health checks: both serve; with B stopped, A serves everything', TEST_TIMEOUT, async (t) => {
  const { port, adminPort, base } = await addresses();
  const a = await stopAfter(t, startUpstream());
  const b = await stopAfter(t, startUpstream());
  const toml = gatewayToml({
    port,
    adminPort,
    routes: `[[route]]
path = "/"
upstream = [${q(a.url)}, ${q(b.url)}]
auth = "public"
`,
  });
  const p = await launch(t, toml, { adminPort });
  const person = createPerson();

  // Both up: requests reach both (round robin), all 200.
  const deadline1 = Date.now() + 10_000;
  let n = 0;
  while (a.requests.length === 0 || b.requests.length === 0) {
    assert.ok(Date.now() < deadline1, `both upstreams should receive requests; A ${a.requests.length}, B ${b.requests.length} after ${n} requests`);
    const res = await person.get(`${base}/lb/${n++}`, { follow: false });
    assert.equal(res.status, 200, `request ${n} with both up: ${res.status} ${res.body.slice(0, 300)}`);
  }
  assert.ok(n <= 4, `round robin should reach both within a few requests, took ${n}`);

  // Stop B, then poll until 10 consecutive requests all reach A with 200.
  await b.stop();
  const bAfterStop = b.requests.length;
  const transition = [];
  const deadline2 = Date.now() + 20_000;
  let ok = false;
  let lastRound = [];
  while (!ok) {
    lastRound = [];
    for (let i = 0; i < 10; i++) {
      const before = a.requests.length;
      const res = await person.get(`${base}/after/${n++}`, { follow: false });
      const reachedA = a.requests.length === before + 1;
      lastRound.push({ status: res.status, reachedA });
      if (res.status !== 200 || !reachedA) transition.push(res.status);
    }
    ok = lastRound.every((r) => r.status === 200 && r.reachedA);
    if (!ok) {
      assert.ok(Date.now() < deadline2,
        `after stopping B, 10 consecutive requests should all reach A with 200 within 20 s; last round: ${JSON.stringify(lastRound)}\n--- passerelle logs:\n${p.logs().slice(-2000)}`);
      await pause(250); // polling interval while the health check notices B is gone
    }
  }
  assert.equal(b.requests.length, bAfterStop, 'B received nothing once stopped');
  t.diagnostic(`failed requests during the transition: ${transition.length} (statuses: ${[...new Set(transition)].join(', ') || 'none'})`);
});

// (g4) -----------------------------------------------------------------------------------------------------------
const SPOOFED_FORWARDING = [
  ['X-Forwarded-For', '6.6.6.6'],
  ['X-Forwarded-Host', 'evil.example'],
  ['X-Forwarded-Proto', 'https'],
  ['X_Forwarded_User', 'x'],
  ['Forwarded', 'for=6.6.6.6'],
];

function assertPasserelleForwarding(up, port, what) {
  assert.deepEqual(headerValues(up.rawHeaders, 'X-Forwarded-For'), ['127.0.0.1'], `${what}: x-forwarded-for`);
  assert.deepEqual(headerValues(up.rawHeaders, 'X-Forwarded-Proto'), ['http'], `${what}: x-forwarded-proto`);
  assert.deepEqual(headerValues(up.rawHeaders, 'X-Forwarded-Host'), [`127.0.0.1:${port}`], `${what}: x-forwarded-host`);
  assert.deepEqual(headerValues(up.rawHeaders, 'Forwarded'), [], `${what}: no Forwarded header`);
  assert.deepEqual(headersMatching(up.rawHeaders, /^x[-_]forwarded[-_]user$/i), [], `${what}: no X-Forwarded-User in any spelling`);
  for (let i = 0; i < up.rawHeaders.length; i += 2) {
    const v = up.rawHeaders[i + 1];
    assert.ok(!v.includes('6.6.6.6') && !v.includes('evil.example'), `${what}: spoofed value reached the upstream in ${up.rawHeaders[i]}: ${v}`);
  }
}

test('(g4) forwarding headers from an untrusted client never reach the upstream as sent', TEST_TIMEOUT, async (t) => {
  const s = await startStack(t);
  const port = new URL(s.base).port;

  const pub = await s.person.get(`${s.base}/public/fwd`, { headers: SPOOFED_FORWARDING, follow: false });
  assert.equal(pub.status, 200, `public route: ${pub.status} ${pub.body.slice(0, 300)}`);
  assert.equal(s.upstream.last().url, '/public/fwd');
  assertPasserelleForwarding(s.upstream.last(), port, 'public route');

  const login = await s.person.login(`${s.base}/app/fwd`, 'alice');
  assert.equal(login.status, 200, `login: ${login.status} at ${login.url}`);
  const prot = await s.person.get(`${s.base}/app/fwd2`, { headers: SPOOFED_FORWARDING, follow: false });
  assert.equal(prot.status, 200);
  assert.equal(s.upstream.last().url, '/app/fwd2');
  assertPasserelleForwarding(s.upstream.last(), port, 'protected route, logged in');
});

/**
 * A stand-in for a TLS-terminating load balancer on 127.0.0.1:listenPort: forwards every request to Passerelle
 * as is (Host included) with `X-Forwarded-Proto: https`. The person talks to it over http; the https URLs
 * Passerelle builds (redirect_uri, Location) lead back to it because person.mjs only uses host and port.
 */
async function startTlsTerminator(t, listenPort, targetPort) {
  const server = http.createServer((req, res) => {
    const headers = [];
    for (let i = 0; i < req.rawHeaders.length; i += 2) {
      if (/^(x-forwarded-proto|connection|keep-alive)$/i.test(req.rawHeaders[i])) continue;
      headers.push(req.rawHeaders[i], req.rawHeaders[i + 1]);
    }
    headers.push('X-Forwarded-Proto', 'https');
    const upstream = http.request({ host: '127.0.0.1', port: targetPort, method: req.method, path: req.url, headers, agent: false }, (ur) => {
      const out = [];
      for (let i = 0; i < ur.rawHeaders.length; i += 2) {
        if (/^(connection|keep-alive|transfer-encoding)$/i.test(ur.rawHeaders[i])) continue;
        out.push(ur.rawHeaders[i], ur.rawHeaders[i + 1]);
      }
      res.writeHead(ur.statusCode, out);
      ur.pipe(res);
    });
    upstream.on('error', (e) => {
      res.writeHead(599, { 'content-type': 'text/plain' });
      res.end(`tls-terminator stand-in: ${e.message}`);
    });
    req.pipe(upstream);
  });
  await listen(server, listenPort);
  t.after(() => closeServer(server));
}

/** Passerelle behind trusted_proxies = 127.0.0.1/32 and without public_url, one provider, routes / and /public. */
async function startTrusted(t) {
  const { port, adminPort } = await addresses();
  const lbPort = await freePort();
  const lb = `http://127.0.0.1:${lbPort}`;
  const op = await stopAfter(t, startProvider({ redirectUris: [`https://127.0.0.1:${lbPort}${PREFIX}/callback`] }));
  const upstream = await stopAfter(t, startUpstream());
  const toml = gatewayToml({
    port,
    adminPort,
    publicUrl: null,
    extraServer: 'trusted_proxies = ["127.0.0.1/32"]\n',
    providers: oidcProviderToml('op', op),
    routes: `[[route]]
path = "/"
upstream = ${q(upstream.url)}
auth = "required"
providers = ["op"]
scopes = ["email"]
[route.headers]
"X-Auth-Sub" = "sub"

[[route]]
path = "/public"
upstream = ${q(upstream.url)}
auth = "public"
`,
  });
  assert.doesNotMatch(toml, /public_url/, 'this scenario runs without public_url');
  const p = await launch(t, toml, { adminPort });
  return { port, lbPort, lb, op, upstream, p, person: createPerson() };
}

test('(g4b) trusted proxy: its X-Forwarded-For is extended with the peer, its X-Forwarded-Proto kept', TEST_TIMEOUT, async (t) => {
  const { port, upstream } = await startTrusted(t);
  const person = createPerson();
  const direct = await person.get(`http://127.0.0.1:${port}/public/chain`, {
    follow: false,
    headers: [['X-Forwarded-For', '10.1.2.3'], ['X-Forwarded-Proto', 'https']],
  });
  assert.equal(direct.status, 200, `${direct.status} ${direct.body.slice(0, 300)}`);
  const up = upstream.last();
  assert.equal(up.url, '/public/chain');
  assert.deepEqual(headerValues(up.rawHeaders, 'X-Forwarded-For'), ['10.1.2.3, 127.0.0.1'], 'the trusted chain is extended with the peer');
  assert.deepEqual(headerValues(up.rawHeaders, 'X-Forwarded-Proto'), ['https'], 'the trusted proto is kept');
});

test('(g4c) trusted https proxy, no public_url: Secure __Host- session cookie and an https redirect_uri', TEST_TIMEOUT, async (t) => {
  const { port, lbPort, lb, op, upstream, p, person } = await startTrusted(t);
  // Through a TLS-terminating stand-in (X-Forwarded-Proto: https): a whole login believed to be over https.
  await startTlsTerminator(t, lbPort, port);
  const target = `${lb}/app/secure?x=1`;
  const first = await person.get(target, { follow: false });
  assert.equal(first.status, 302, `${first.status} ${first.body.slice(0, 300)}`);
  const authz = new URL(first.location);
  assert.equal(`${authz.origin}${authz.pathname}`, op.discovery.authorization_endpoint, `redirect to ${first.location}`);
  const redirectUri = authz.searchParams.get('redirect_uri') || '';
  assert.ok(redirectUri.startsWith('https://'), `redirect_uri starts with https:// behind a trusted https proxy: ${redirectUri}`);
  assert.equal(redirectUri, `https://127.0.0.1:${lbPort}${PREFIX}/callback`);
  const flow = first.setCookies.find((c) => c.name.startsWith('__Host-passerelle_flow_'));
  assert.ok(flow, `a __Host- flow cookie is set: ${first.setCookies.map((c) => c.raw).join(' | ')}`);
  assert.ok('secure' in flow.attributes, `the flow cookie is Secure under https: ${flow.raw}`);

  const res = await person.throughProvider(await person.get(first.location), { login: 'alice' });
  assert.equal(res.status, 200, `ended on ${res.url} with ${res.status}:\n${res.body.slice(0, 800)}\n--- passerelle logs:\n${p.logs().slice(-3000)}`);
  assert.equal(new URL(res.url).pathname + new URL(res.url).search, '/app/secure?x=1');
  const cb = res.history.find((h) => new URL(h.url).pathname === `${PREFIX}/callback`);
  assert.ok(cb, 'went through the callback');
  const sessionSet = cb.setCookies.filter((c) => c.value !== '' && /^(__Host-)?passerelle(\.\d+)?$/.test(c.name));
  assert.ok(sessionSet.length >= 1, `the callback sets the session: ${cb.setCookies.map((c) => c.raw).join(' | ')}`);
  for (const c of sessionSet) {
    assert.ok(c.name.startsWith('__Host-'), `session cookie has the __Host- prefix under https: ${c.raw}`);
    assert.ok('secure' in c.attributes, `session cookie is Secure: ${c.raw}`);
    assert.equal(c.attributes.path, '/', `__Host- cookie has Path=/: ${c.raw}`);
    assert.equal(c.attributes.domain, undefined, `__Host- cookie has no Domain: ${c.raw}`);
  }
  const up = upstream.last();
  assert.deepEqual(headerValues(up.rawHeaders, 'X-Auth-Sub'), [alice.sub]);
  assert.deepEqual(headerValues(up.rawHeaders, 'X-Forwarded-Proto'), ['https']);

  // The __Host- session is read back on the next https request.
  const again = await person.get(`${lb}/app/again`, { follow: false });
  assert.equal(again.status, 200, `next request with the __Host- session: ${again.status} ${again.location || ''}`);
  assert.deepEqual(headerValues(upstream.last().rawHeaders, 'X-Auth-Sub'), [alice.sub]);
});

// (g5) -----------------------------------------------------------------------------------------------------------
test('(g5) Passerelle\'s own cookies are not forwarded; the application\'s are', TEST_TIMEOUT, async (t) => {
  const s = await startStack(t);
  const login = await s.person.login(`${s.base}/app`, 'alice');
  assert.equal(login.status, 200, `login: ${login.status} at ${login.url}`);
  assert.ok(s.person.jar.get(s.base, 'passerelle'), 'session cookie held');
  // The provider's own cookies (oidc-provider's _session…) share the host 127.0.0.1 in the jar, as in a browser:
  // leave them out so the only application cookie is JSESSIONID.
  for (const c of s.person.jar.all(s.base)) if (!c.name.startsWith('passerelle')) s.person.jar.delete(s.base, c.name);
  s.person.jar.set(s.base, 'JSESSIONID', 'abc', { path: '/' });
  // A stray flow cookie visible at / (as a misconfigured or older instance could leave behind).
  s.person.jar.set(s.base, 'passerelle_flow_AbCdEfGhIjKl', 'stale', { path: '/' });

  for (const url of [`${s.base}/app/data`, `${s.base}/public/data`]) {
    const res = await s.person.get(url, { follow: false });
    assert.equal(res.status, 200, `${url}: ${res.status}`);
    const sentCookie = res.sentHeaders.find(([k]) => k.toLowerCase() === 'cookie')?.[1] || '';
    assert.match(sentCookie, /(^|; )passerelle=/, `the request carried the session cookie: ${sentCookie}`);
    assert.match(sentCookie, /passerelle_flow_/, `the request carried a flow cookie: ${sentCookie}`);
    const up = s.upstream.last();
    assert.equal(up.url, new URL(url).pathname);
    assert.deepEqual(headerValues(up.rawHeaders, 'Cookie'), ['JSESSIONID=abc'], `${url}: upstream cookie header`);
  }
  // The session was used on the protected route (the stripped cookie still authenticated the request).
  const appReq = s.upstream.requests.find((r) => r.url === '/app/data');
  assert.deepEqual(headerValues(appReq.rawHeaders, 'X-Auth-Sub'), [alice.sub]);
});

// (g6) -----------------------------------------------------------------------------------------------------------
function forwardAuth(person, base, uri) {
  return person.request(`${base}${PREFIX}/auth`, { headers: { Accept: '*/*', 'X-Original-URI': uri } });
}

test('(g6) forward-auth /.passerelle/auth: 401 without a session, 200 with the route\'s headers; uri believed only from trusted proxies', TEST_TIMEOUT, async (t) => {
  await t.test('trusted peer (trusted_proxies = 127.0.0.1/32)', async (st) => {
    const s = await startStack(st, { config: { extraServer: 'trusted_proxies = ["127.0.0.1/32"]\n' } });
    const none = await forwardAuth(s.person, s.base, '/app/x');
    assert.equal(none.status, 401, `without a session: ${none.status} ${none.body.slice(0, 200)}`);
    assert.equal(none.headers.location, undefined, 'a 401 carries no Location');
    assert.deepEqual(identityLines(none.rawHeaders), [], 'no identity header without a session');
    const pub = await forwardAuth(s.person, s.base, '/public/x');
    assert.equal(pub.status, 200, `uri=/public/x is read from a trusted peer: a public route needs no session (${pub.status})`);

    const login = await s.person.login(`${s.base}/app`, 'alice');
    assert.equal(login.status, 200);
    const before = s.upstream.requests.length;
    const ok = await forwardAuth(s.person, s.base, '/app/x');
    assert.equal(ok.status, 200, `with the session: ${ok.status} ${ok.body.slice(0, 200)}`);
    assert.equal(ok.headers['x-auth-sub'], alice.sub);
    assert.equal(ok.headers['x-auth-email'], alice.email);
    assert.equal(ok.headers['x-auth-family-name'], alice.family_name);
    assert.equal(s.upstream.requests.length, before, 'forward-auth is answered by Passerelle, not proxied');
  });

  await t.test('untrusted peer: 400 with or without a session, never a decision for another route', async (st) => {
    const s = await startStack(st);
    const pub = await forwardAuth(s.person, s.base, '/public/x');
    assert.equal(pub.status, 400, `an original URI from an untrusted peer is not believed: 400, got ${pub.status}`);
    const bare = await s.person.request(`${s.base}${PREFIX}/auth`, { headers: { Accept: '*/*' } });
    assert.equal(bare.status, 400, `no original URI at all: 400, not the route for / (got ${bare.status})`);
    const login = await s.person.login(`${s.base}/app`, 'alice');
    assert.equal(login.status, 200);
    const ok = await forwardAuth(s.person, s.base, '/app/x');
    assert.equal(ok.status, 400, `with a session, still 400 from an untrusted peer: ${ok.status} ${ok.body.slice(0, 200)}`);
    assert.deepEqual(identityLines(ok.rawHeaders), [], 'no identity header on a refusal');
  });
});

// (g7) -----------------------------------------------------------------------------------------------------------
const CLI_BASE = (key) => `[server]
listen = ["127.0.0.1:18080"]

[session]
keys = [${q(key)}]

[providers.op]
kind = "oidc"
issuer = "https://op.example.gouv.fr"
client_id = "client"
client_secret = "secret"

[[route]]
path = "/"
upstream = "http://127.0.0.1:9000"
providers = ["op"]
scopes = ["email"]
[route.headers]
"X-Auth-Email" = "email"
`;

/** Inserts `line` after the first line equal to `after`; returns { text, line: 1-based number of the new line }. */
function insertAfter(text, after, line) {
  const lines = text.split('\n');
  const i = lines.indexOf(after);
  assert.ok(i >= 0, `insertAfter: no line ${after}`);
  lines.splice(i + 1, 0, line);
  return { text: lines.join('\n'), line: i + 2 };
}

function replaceLine(text, old, line) {
  const lines = text.split('\n');
  const i = lines.indexOf(old);
  assert.ok(i >= 0, `replaceLine: no line ${old}`);
  lines[i] = line;
  return { text: lines.join('\n'), line: i + 1 };
}

const escapeRe = (s) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

test('(g7) CLI: check names file, line and key (unknown key, unreleased claim, unset env secret); check of the example; keygen', TEST_TIMEOUT, async (t) => {
  const dir = await mkdtemp(path.join(tmpdir(), 'passerelle-cli-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const base = CLI_BASE(sessionKey());
  await writeFile(path.join(dir, 'good.toml'), base);
  const good = await runPasserelle(['check', '--config', 'good.toml'], { cwd: dir });
  assert.equal(good.code, 0, `the base config is valid: ${good.stdout}${good.stderr}`);

  const unsetVar = `PASSERELLE_TEST_UNSET_${randomBytes(6).toString('hex').toUpperCase()}`;
  const cases = [
    ['unknown key', insertAfter(base, 'client_secret = "secret"', 'client_secrett = "x"'), 'providers.op.client_secrett', /client_secrett/],
    ['claim not released', insertAfter(base, '"X-Auth-Email" = "email"', '"X-Auth-Siret" = "siret"'), 'route[0].headers."X-Auth-Siret"', /claim `siret` is not released/],
    ['unset env secret', replaceLine(base, 'client_secret = "secret"', `client_secret = "env:${unsetVar}"`), 'providers.op.client_secret', new RegExp(escapeRe(unsetVar))],
  ];
  for (const [what, { text, line }, key, message] of cases) {
    await writeFile(path.join(dir, 'bad.toml'), text);
    const r = await runPasserelle(['check', '--config', 'bad.toml'], { cwd: dir, unset: [unsetVar] });
    const out = `${r.stderr}${r.stdout}`;
    assert.notEqual(r.code, 0, `${what}: check must fail; output:\n${out}`);
    const m = out.match(/bad\.toml:(\d+): (\S+): (.*)/);
    assert.ok(m, `${what}: expected "bad.toml:<line>: <key>: …", got:\n${out}`);
    assert.equal(Number(m[1]), line, `${what}: line number in ${m[0]}`);
    assert.equal(m[2], key, `${what}: key in ${m[0]}`);
    assert.match(m[3], message, `${what}: message in ${m[0]}`);
    assert.doesNotMatch(r.stdout, /\bOK\b/, `${what}: no OK printed`);
  }

  // An upstream name that does not resolve (RFC 6761 `.invalid`): offline, check has no DNS to ask and passes;
  // `check --online` resolves every upstream as `run` will, and fails naming the route and the name.
  const unresolvable = base.replace(/upstream = "http:\/\/127\.0\.0\.1:(\d+)"/, 'upstream = "http://upstream.invalid:$1"');
  assert.notEqual(unresolvable, base, 'the base config has an upstream to replace');
  await writeFile(path.join(dir, 'dns.toml'), unresolvable);
  const offline = await runPasserelle(['check', '--config', 'dns.toml'], { cwd: dir });
  assert.equal(offline.code, 0, `offline check does not resolve names: ${offline.stdout}${offline.stderr}`);
  const online = await runPasserelle(['check', '--online', '--config', 'dns.toml'], { cwd: dir });
  assert.notEqual(online.code, 0, `check --online must fail on an unresolvable upstream: ${online.stdout}${online.stderr}`);
  assert.match(online.stderr, /route\[0\]\.upstream: cannot resolve `upstream\.invalid:\d+`/, online.stderr);

  const example = await runPasserelle(['check', '--config', path.join(REPO_ROOT, 'config.example.toml')], { cwd: dir });
  assert.equal(example.code, 0, `config.example.toml checks: ${example.stdout}${example.stderr}`);

  const k1 = await runPasserelle(['keygen'], { cwd: dir });
  const k2 = await runPasserelle(['keygen'], { cwd: dir });
  for (const k of [k1, k2]) {
    assert.equal(k.code, 0);
    const key = k.stdout.trim();
    assert.match(key, /^[A-Za-z0-9+/]{43}=$/, `keygen prints 44 base64 characters: ${JSON.stringify(k.stdout)}`);
    assert.equal(Buffer.from(key, 'base64').length, 32);
  }
  assert.notEqual(k1.stdout.trim(), k2.stdout.trim(), 'two keys differ');
});

test('(g7b) run: a discovery document whose issuer differs from the configured one stops the start, naming provider and mismatch', TEST_TIMEOUT, async (t) => {
  // A tiny provider whose discovery document claims another issuer than the URL it is served at.
  const hits = [];
  const server = http.createServer((req, res) => {
    hits.push(req.url);
    const origin = `http://127.0.0.1:${server.address().port}`;
    if (req.url === '/.well-known/openid-configuration') {
      const body = JSON.stringify({
        issuer: `${origin}/elsewhere`,
        authorization_endpoint: `${origin}/authorize`,
        token_endpoint: `${origin}/token`,
        userinfo_endpoint: `${origin}/userinfo`,
        jwks_uri: `${origin}/jwks`,
        response_types_supported: ['code'],
        subject_types_supported: ['public'],
        id_token_signing_alg_values_supported: ['RS256'],
      });
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
      res.end(body);
      return;
    }
    res.writeHead(404).end();
  });
  const issuer = `http://127.0.0.1:${await listen(server)}`;
  t.after(() => closeServer(server));

  const { port, adminPort } = await addresses();
  const dir = await mkdtemp(path.join(tmpdir(), 'passerelle-mismatch-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const toml = gatewayToml({
    port,
    adminPort,
    providers: `[providers.federation-test]
kind = "oidc"
issuer = ${q(issuer)}
client_id = "client"
client_secret = "secret"
`,
    routes: `[[route]]
path = "/"
upstream = "http://127.0.0.1:9"
providers = ["federation-test"]
`,
  });
  await writeFile(path.join(dir, 'config.toml'), toml);
  const child = await spawnPasserelle(['run', '--config', 'config.toml'], {
    cwd: dir, env: { ...process.env, PASSERELLE_KEY: sessionKey() },
  });
  let output = '';
  child.stdout.on('data', (d) => { output += d; });
  child.stderr.on('data', (d) => { output += d; });
  let exited;
  const exit = new Promise((r) => child.on('close', (code, signal) => { exited = { code, signal }; r(exited); }));
  t.after(() => { if (!exited) child.kill('SIGKILL'); });

  // While it runs, nothing may answer on its listeners.
  const served = [];
  const deadline = Date.now() + 20_000;
  while (!exited) {
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      await exit;
      assert.fail(`passerelle run did not exit within 20 s with a mismatching issuer; output:\n${output}`);
    }
    const connected = await new Promise((resolve) => {
      const sock = net.connect({ host: '127.0.0.1', port }, () => { sock.destroy(); resolve(true); });
      sock.on('error', () => resolve(false));
    });
    if (connected) served.push('listen');
    if ((await httpGetStatus(`http://127.0.0.1:${adminPort}/ready`, 300)) !== undefined) served.push('admin');
    await pause(50); // polling until the process exits
  }
  await keepOutput(testName(t), toml, output).catch(() => {});
  assert.notEqual(exited.code, 0, `exit status should be non-zero: ${JSON.stringify(exited)}\n${output}`);
  assert.equal(exited.signal, null, `it should exit by itself: ${JSON.stringify(exited)}`);
  assert.deepEqual(served, [], 'nothing was served');
  assert.ok(hits.includes('/.well-known/openid-configuration'), `discovery was fetched (hits: ${hits.join(', ')})`);
  assert.match(output, /federation-test/, `the message names the provider:\n${output}`);
  assert.match(output, /issuer/i, `the message speaks of the issuer:\n${output}`);
  assert.match(output, /mismatch|does not match|differ/i, `the message says they differ:\n${output}`);
  assert.ok(output.includes(`${issuer}/elsewhere`), `the message shows the issuer the provider advertises:\n${output}`);
});

// (g8) -----------------------------------------------------------------------------------------------------------
test('(g8) the demo: config.example.toml on free ports, sign in as Hélène at the development provider, echo, logout', TEST_TIMEOUT, async (t) => {
  const original = readFileSync(path.join(REPO_ROOT, 'config.example.toml'), 'utf8');
  const ports = {};
  for (const p of ['8080', '8081', '9000', '9090']) {
    assert.ok(original.includes(`127.0.0.1:${p}`), `config.example.toml uses 127.0.0.1:${p}`);
    ports[p] = await freePort();
  }
  const toml = original.replace(/127\.0\.0\.1:(8080|8081|9000|9090)\b/g, (_, p) => `127.0.0.1:${ports[p]}`);
  assert.doesNotMatch(toml, /:(8080|8081|9000|9090)\b/, 'every demo port was replaced');
  const base = `http://127.0.0.1:${ports['8080']}`;
  const issuer = `http://127.0.0.1:${ports['8081']}`;
  const clientId = toml.match(/^client_id\s*=\s*"([^"]+)"/m)?.[1];
  const clientSecret = toml.match(/^client_secret\s*=\s*"([^"]+)"/m)?.[1];
  assert.ok(clientId && clientSecret, 'the demo provider has a client_id and client_secret');

  const p = await launch(t, toml, { adminPort: ports['9090'] });
  const person = createPerson();
  // The development provider is its own listener: wait (bounded) until it answers discovery.
  const readyBy = Date.now() + 10_000;
  while ((await httpGetStatus(`${issuer}/.well-known/openid-configuration`)) !== 200) {
    assert.ok(Date.now() < readyBy, `the development provider answers discovery at ${issuer}\n${p.logs()}`);
    await pause(50); // polling for the dev provider's listener
  }

  // 1. Navigate: the development provider's sign-in page.
  const page = await person.navigate(`${base}/page?x=1`);
  assert.equal(page.status, 200, `${page.status} at ${page.url}: ${page.body.slice(0, 500)}`);
  assert.ok(page.url.startsWith(`${issuer}/authorize?`), `on the development provider's authorize page: ${page.url}`);
  assert.match(page.body, /<html[^>]*\blang="fr"/, 'the sign-in page is French');
  assert.ok(page.body.includes('Hélène WAMYTAN'), 'the test identities are listed (Hélène WAMYTAN)');
  const forms = parseForms(page.body, page.url);
  const isHelene = (f) => f.inputs.some((i) => i.name === 'identity' && i.value === 'helene');
  const form = forms.find(isHelene);
  assert.ok(form, `a form for identity helene: ${JSON.stringify(forms.map((f) => f.inputs))}`);
  assert.ok(forms.filter((f) => f.inputs.some((i) => i.name === 'identity')).length >= 2, 'several test identities');
  assert.equal(form.method, 'POST');
  assert.equal(form.action, `${issuer}/authorize/approve`);
  assert.ok(form.inputs.find((i) => i.name === 'request')?.value, 'the form carries the pending request');

  // 2. Choose Hélène: back on the echo page for /page?x=1.
  const res = await person.submitForm(page, { form: isHelene });
  assert.equal(res.status, 200, `ended on ${res.url} with ${res.status}:\n${res.body.slice(0, 800)}\n--- logs:\n${p.logs().slice(-3000)}`);
  assert.equal(res.url, `${base}/page?x=1`);
  assert.match(res.headers['content-type'] || '', /^text\/html/);
  assert.ok(res.body.includes('nc-7f3e9a1b-0001'), 'the echo page shows the sub');
  assert.ok(res.history.some((h) => h.url.startsWith(`${base}${PREFIX}/callback?`)), 'through Passerelle\'s callback');

  const echo = await person.api(`${base}/page?x=1`);
  assert.equal(echo.status, 200, `${echo.status} ${echo.body.slice(0, 300)}`);
  const json = JSON.parse(echo.body);
  assert.equal(json.method, 'GET');
  assert.equal(json.uri, '/page?x=1');
  const echoed = (name) => json.headers.filter(([n]) => n.toLowerCase() === name).map(([, v]) => v);
  assert.deepEqual(echoed('x-auth-sub'), ['nc-7f3e9a1b-0001']);
  assert.deepEqual(echoed('x-auth-given-name'), ['H%C3%A9l%C3%A8ne']);
  assert.deepEqual(echoed('cookie').filter((c) => /passerelle/.test(c)), [], 'the echo never sees Passerelle\'s cookies');

  // 3. Logout through the development provider's end_session endpoint.
  const out = await person.navigate(`${base}${PREFIX}/logout`);
  assert.ok(out.history.some((h) => h.url.startsWith(`${issuer}/session/end?`)),
    `logout goes through ${issuer}/session/end: ${out.history.map((h) => `${h.status} ${h.url}`).join(' → ')}`);
  assert.equal(new URL(out.url).pathname, `${PREFIX}/logged-out`, `ends on logged-out: ${out.url}`);
  assert.equal(out.status, 200);
  assert.ok(out.body.includes('Vous êtes déconnecté'), out.body.slice(0, 500));
  const after = await person.get(`${base}/page?x=2`, { follow: false });
  assert.equal(after.status, 302);
  assert.ok(after.location.startsWith(`${issuer}/authorize?`), `signed out: back to the provider (${after.location})`);

  // 4. The development provider itself: RFC 9207 advertised, userinfo as a signed JWT.
  const disco = JSON.parse((await person.request(`${issuer}/.well-known/openid-configuration`, { cookies: false })).body);
  assert.equal(disco.issuer, issuer);
  assert.equal(disco.authorization_response_iss_parameter_supported, true);

  const rp = createPerson({ name: 'rp' });
  const verifier = randomBytes(32).toString('base64url');
  const challenge = createHash('sha256').update(verifier).digest('base64url');
  const redirectUri = `${base}${PREFIX}/callback`;
  const authz = new URL(disco.authorization_endpoint);
  Object.entries({
    client_id: clientId, redirect_uri: redirectUri, response_type: 'code', scope: 'openid email given_name',
    state: randomBytes(16).toString('base64url'), nonce: randomBytes(16).toString('base64url'),
    code_challenge: challenge, code_challenge_method: 'S256',
  }).forEach(([k, v]) => authz.searchParams.set(k, v));
  const authPage = await rp.request(authz.href);
  assert.equal(authPage.status, 200, authPage.body.slice(0, 300));
  const heleneForm = parseForms(authPage.body, authPage.url).find(isHelene);
  assert.ok(heleneForm, 'the authorize page offers helene');
  const approve = await rp.request(heleneForm.action, {
    method: 'POST',
    headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams(heleneForm.inputs.map((i) => [i.name, i.value])).toString(),
  });
  assert.equal(approve.status, 302, approve.body.slice(0, 300));
  const back = new URL(approve.location);
  assert.equal(back.searchParams.get('iss'), issuer, 'the authorization response carries iss (RFC 9207)');
  const token = await rp.request(disco.token_endpoint, {
    method: 'POST',
    headers: {
      'Content-Type': 'application/x-www-form-urlencoded',
      Authorization: `Basic ${Buffer.from(`${clientId}:${clientSecret}`).toString('base64')}`,
    },
    body: new URLSearchParams({ grant_type: 'authorization_code', code: back.searchParams.get('code'), redirect_uri: redirectUri, code_verifier: verifier }).toString(),
  });
  assert.equal(token.status, 200, token.body);
  const { access_token: accessToken } = JSON.parse(token.body);
  const ui = await rp.request(disco.userinfo_endpoint, { headers: { Authorization: `Bearer ${accessToken}` } });
  assert.equal(ui.status, 200, ui.body);
  assert.match(ui.headers['content-type'] || '', /^application\/jwt/);
  const payload = JSON.parse(Buffer.from(ui.body.split('.')[1], 'base64url').toString('utf8'));
  assert.equal(payload.sub, 'nc-7f3e9a1b-0001');
});

// (g9) -----------------------------------------------------------------------------------------------------------
test('(g9) upstream down: a French 502 page with a correlation id, and the other routes keep being served', TEST_TIMEOUT, async (t) => {
  const { port, adminPort, base } = await addresses();
  const closedPort = await freePort(); // nothing listens there
  const upstream = await stopAfter(t, startUpstream());
  const toml = gatewayToml({
    port,
    adminPort,
    routes: `[[route]]
path = "/down"
upstream = "http://127.0.0.1:${closedPort}"
auth = "public"

[[route]]
path = "/"
upstream = ${q(upstream.url)}
auth = "public"
`,
  });
  const p = await launch(t, toml, { adminPort });
  const person = createPerson();

  const ids = [];
  for (const [i, reqPath] of ['/down/page', '/down/again?x=1'].entries()) {
    const res = await person.get(`${base}${reqPath}`, { follow: false });
    assert.equal(res.status, 502, `${reqPath}: expected 502, got ${res.status}:\n${res.body.slice(0, 500)}`);
    assert.match(res.headers['content-type'] || '', /^text\/html/, `${reqPath}: content-type ${res.headers['content-type']}`);
    assert.match(res.body, /<html[^>]*\blang="fr"/, `${reqPath}: a French page`);
    const lower = res.body.toLowerCase();
    assert.ok(FRENCH_5XX_WORDS.some((w) => lower.includes(w)), `${reqPath}: French wording:\n${res.body.slice(0, 800)}`);
    assert.doesNotMatch(res.body, /panicked|backtrace|stack trace|\.rs:\d+|ConnectRefused|Connection refused|os error/i, `${reqPath}: no internals on the page`);
    const id = await correlationIdOn(res, p.logs);
    assert.ok(id, `${reqPath}: the page shows a correlation id that is in the logs; page:\n${res.body.slice(0, 800)}\n--- logs:\n${p.logs().slice(-2000)}`);
    ids.push(id);

    // Meanwhile the other route is served.
    const ok = await person.get(`${base}/ok/${i}`, { follow: false });
    assert.equal(ok.status, 200, `/ok/${i} while /down is down: ${ok.status}`);
    assert.equal(upstream.last().url, `/ok/${i}`);
  }
  assert.notEqual(ids[0], ids[1], 'each failure has its own correlation id');
  assert.equal(p.exited(), null, 'Passerelle is still running');
});
