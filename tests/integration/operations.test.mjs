// Operations: what an operator and a data-protection officer get from the command line.
//
// - `passerelle check --online` tries every hop `run` depends on (egress proxy, provider discovery and keys, every
//   upstream, Redis), fails naming the hop that does not answer, compares each provider's discovery document with
//   the configuration, and prints the registration sheet to copy into the federation's form;
// - `passerelle register` prints the register of processing (Markdown and JSON) from the configuration, and what it
//   lists is what an upstream really receives.
//
// Real parts: the ProConnect-like and NC Connect-like providers (oidc-provider), a forward proxy, an HTTP upstream,
// redis-server.

import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';

import { startNcConnectProvider, startProConnectProvider } from '../support/federation-provider.mjs';
import { startForwardProxy } from '../support/forward-proxy.mjs';
import { stopAfter } from '../support/http.mjs';
import { freePort, keepOutput, outputName, runPasserelle, sessionKey } from '../support/passerelle.mjs';
import { startRogueProvider } from '../support/rogue-provider.mjs';
import { addresses, configToml, providerToml, startStack, tv } from '../support/stack.mjs';
import { headersMatching, startUpstream } from '../support/upstream.mjs';

const TIMEOUT = { timeout: 120_000 };

function routeToml({ path: routePath = '/', upstream, providers, scopes = [], headers = {}, ...extra }) {
  return `[[route]]
path = ${tv(routePath)}
upstream = ${tv(upstream)}
${providers ? `providers = ${tv(providers)}\n` : ''}scopes = ${tv(scopes)}
${Object.entries(extra).map(([k, v]) => `${k} = ${tv(v)}`).join('\n')}
[route.headers]
${Object.entries(headers).map(([h, c]) => `${tv(h)} = ${tv(c)}`).join('\n')}
`;
}

/** Writes `toml` to a fresh directory (removed by t.after) and runs `passerelle ARGS --config config.toml` there. */
async function passerelle(t, toml, args) {
  const dir = await mkdtemp(path.join(tmpdir(), 'passerelle-operations-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  await writeFile(path.join(dir, 'config.toml'), toml, { mode: 0o600 });
  const r = await runPasserelle([...args, '--config', 'config.toml'], { cwd: dir, env: { PASSERELLE_KEY: sessionKey() } });
  const output = `${r.stdout}${r.stderr}`;
  await keepOutput(outputName(t, { prefix: 'operations_' }), toml, output);
  assert.equal(r.signal, null, `passerelle ${args.join(' ')} exits by itself:\n${output}`);
  return { ...r, output };
}

/** The value printed after `name` in the registration sheet of `provider`. */
function sheetValue(output, provider, name) {
  const block = output.split(/\n(?=provider `)/).find((b) => b.startsWith(`provider \`${provider}\` (`) && b.includes('register at'));
  assert.ok(block, `a registration sheet for ${provider}:\n${output}`);
  const line = block.split('\n').find((l) => l.trimStart().startsWith(`${name} `));
  assert.ok(line, `${provider}'s sheet has a "${name}" line:\n${block}`);
  return line.trim().slice(name.length).trim();
}

async function federations(t, a) {
  const uris = { redirectUris: a.redirectUris, postLogoutRedirectUris: a.postLogoutRedirectUris };
  const pc = await stopAfter(t, startProConnectProvider(uris));
  const nc = await stopAfter(t, startNcConnectProvider(uris));
  const upstream = await stopAfter(t, startUpstream());
  return { pc, nc, upstream };
}

function federationsToml(a, { pc, nc, upstream }, { pcExtra = {}, upstreamUrl = upstream.url, extraSession = '', pcScopes } = {}) {
  return configToml({
    writtenBy: 'tests/integration/operations.test.mjs',
    port: a.port,
    adminPort: a.adminPort,
    extraSession,
    providers: [providerToml('pc', 'proconnect', pc, pcExtra), providerToml('nc', 'nc-connect', nc)],
    routes: [
      routeToml({ path: '/', upstream: upstreamUrl, providers: ['pc'], scopes: pcScopes || ['email', 'siret', 'phone'], headers: { 'X-Auth-Siret': 'siret' } }),
      routeToml({ path: '/nc', upstream: upstreamUrl, providers: ['nc'], scopes: ['email', 'birth'], headers: { 'X-Auth-Birthplace': 'birthplace' } }),
    ],
  });
}

test('(online1) check --online against ProConnect and NC Connect: every hop answers, discovery agrees, and the registration sheet is exactly what the providers must hold', TIMEOUT, async (t) => {
  const a = await addresses();
  const world = await federations(t, a);
  const r = await passerelle(t, federationsToml(a, world), ['check', '--online']);
  assert.equal(r.code, 0, r.output);
  assert.match(r.stdout, /config\.toml: OK/, r.output);
  for (const name of ['pc', 'nc']) {
    assert.match(r.stdout, new RegExp(`provider \`${name}\`: discovery and keys reached; they agree with the configuration`), r.output);
  }
  // What the providers were registered with in this test is what the sheet says to register.
  assert.equal(sheetValue(r.stdout, 'pc', 'redirect URI'), a.redirectUris[0]);
  assert.equal(sheetValue(r.stdout, 'pc', 'post-logout redirect URI'), a.postLogoutRedirectUris[0]);
  assert.equal(sheetValue(r.stdout, 'pc', 'back-channel logout URI'), '(not offered by ProConnect)');
  assert.equal(sheetValue(r.stdout, 'pc', 'token endpoint auth method'), 'client_secret_post');
  assert.equal(sheetValue(r.stdout, 'pc', 'client_id'), world.pc.clientId);
  assert.deepEqual(sheetValue(r.stdout, 'pc', 'scopes').split(' '), ['email', 'given_name', 'idp_id', 'openid', 'phone', 'siret', 'uid', 'usual_name']);
  assert.equal(sheetValue(r.stdout, 'pc', 'network'), 'Internet');
  assert.equal(sheetValue(r.stdout, 'pc', 'environment'), 'intégration');
  assert.equal(sheetValue(r.stdout, 'pc', 'id_token signature'), 'ES256');
  assert.equal(sheetValue(r.stdout, 'pc', 'extra scopes'), 'phone', 'only the scope beyond ProConnect\'s defaults');
  assert.equal(sheetValue(r.stdout, 'nc', 'redirect URI'), a.redirectUris[0]);
  assert.equal(sheetValue(r.stdout, 'nc', 'back-channel logout URI'), `${a.base}/.passerelle/backchannel-logout`);
  assert.equal(sheetValue(r.stdout, 'nc', 'token endpoint auth method'), 'client_secret_basic');
  assert.deepEqual(sheetValue(r.stdout, 'nc', 'scopes').split(' '), ['birth', 'email', 'openid', 'profile']);
  assert.ok(!r.output.includes(world.pc.clientSecret) && !r.output.includes(world.nc.clientSecret), 'no client secret printed');
  assert.equal(world.pc.calls.filter((c) => /token|authorize/.test(c.path)).length, 0, 'check never signs in');
});

test('(online2) check --online through the egress proxy: up, it passes and the calls go through it; the proxy down, or the provider behind it down, each fails naming its hop', TIMEOUT, async (t) => {
  const a = await addresses();
  const world = await federations(t, a);
  const proxy = await stopAfter(t, startForwardProxy());

  const up = await passerelle(t, federationsToml(a, world, { pcExtra: { egress_proxy: proxy.url } }), ['check', '--online']);
  assert.equal(up.code, 0, up.output);
  assert.match(up.stdout, new RegExp(`provider \`pc\`: discovery and keys reached through egress proxy ${proxy.url}`), up.output);
  for (const url of [`${world.pc.issuer}/.well-known/openid-configuration`, world.pc.discovery.jwks_uri]) {
    assert.ok(proxy.requests.some((x) => x.method === 'GET' && x.url === url && x.status === 200), `the proxy relayed GET ${url}`);
  }

  // Nothing listens at the proxy's address: the first hop is named, not the provider behind it.
  const closed = `http://127.0.0.1:${await freePort()}`;
  const noProxy = await passerelle(t, federationsToml(a, world, { pcExtra: { egress_proxy: closed } }), ['check', '--online']);
  assert.equal(noProxy.code, 1, noProxy.output);
  assert.match(noProxy.stderr, new RegExp(`error: config\\.toml: provider \`pc\`: egress proxy ${closed} unreachable: .*refused`, 'i'), noProxy.output);
  assert.doesNotMatch(noProxy.stdout, /\bOK\b/, noProxy.output);
  assert.match(noProxy.stdout, /provider `nc`: discovery and keys reached/, 'the other provider is still checked');

  // The proxy answers but the provider behind it does not: the second hop is named, with the proxy it went through.
  const deadIssuer = `http://127.0.0.1:${await freePort()}/api/v2`;
  const behind = await passerelle(t, federationsToml(a, { ...world, pc: { ...world.pc, issuer: deadIssuer } }, { pcExtra: { egress_proxy: proxy.url } }), ['check', '--online']);
  assert.equal(behind.code, 1, behind.output);
  assert.match(behind.stderr, new RegExp(`provider \`pc\`: discovery ${deadIssuer.replace(/[/.]/g, '\\$&')}/\\.well-known/openid-configuration through egress proxy ${proxy.url} unreachable: answered 502`), behind.output);

  // Without a proxy, the provider down: named as well.
  const direct = await passerelle(t, federationsToml(a, { ...world, pc: { ...world.pc, issuer: deadIssuer } }), ['check', '--online']);
  assert.equal(direct.code, 1, direct.output);
  assert.match(direct.stderr, /provider `pc`: discovery http:\/\/127\.0\.0\.1:\d+\/api\/v2\/\.well-known\/openid-configuration unreachable: .*(refused|connect)/i, direct.output);
  assert.doesNotMatch(direct.stderr, /egress proxy/, direct.output);
});

test('(online3) check --online: an upstream or Redis that does not answer is an error naming the route or session.redis; offline check still passes', TIMEOUT, async (t) => {
  const a = await addresses();
  const world = await federations(t, a);
  const deadUpstream = `http://127.0.0.1:${await freePort()}`;
  const toml = federationsToml(a, world, { upstreamUrl: deadUpstream });
  const offline = await passerelle(t, toml, ['check']);
  assert.equal(offline.code, 0, `offline, nothing is dialled: ${offline.output}`);
  const online = await passerelle(t, toml, ['check', '--online']);
  assert.equal(online.code, 1, online.output);
  assert.match(online.stderr, new RegExp(`route\\[0\\]\\.upstream: ${deadUpstream} unreachable: .*refused`, 'i'), online.output);
  assert.equal(online.stderr.match(/unreachable/g).length, 1, `one address, one error (both routes share it):\n${online.stderr}`);

  const deadRedis = await freePort();
  const redis = await passerelle(t, federationsToml(a, world, { extraSession: `store = "redis"\n[session.redis]\nurl = "redis://127.0.0.1:${deadRedis}"\ntimeout = "500ms"\n` }), ['check', '--online']);
  assert.equal(redis.code, 1, redis.output);
  assert.match(redis.stderr, /error: config\.toml: session\.redis: /, redis.output);
  assert.match(redis.stderr, /1 problem\(s\) found/, redis.output);
});

test('(online4) check --online names every way discovery contradicts the configuration', TIMEOUT, async (t) => {
  const a = await addresses();
  const op = await stopAfter(t, startRogueProvider({
    redirectUris: a.redirectUris,
    misbehave: {
      discovery: (doc) => ({
        ...doc,
        token_endpoint_auth_methods_supported: ['private_key_jwt'],
        id_token_signing_alg_values_supported: ['PS512'],
        scopes_supported: ['openid', 'email', 'profile'],
        claims_parameter_supported: false,
        acr_values_supported: ['eidas1'],
        code_challenge_methods_supported: ['plain'],
      }),
    },
  }));
  const upstream = await stopAfter(t, startUpstream());
  const toml = configToml({
    writtenBy: 'tests/integration/operations.test.mjs',
    port: a.port,
    adminPort: a.adminPort,
    providers: providerToml('op', 'oidc', op, { auth_method: 'client_secret_basic', id_token_algs: ['RS256', 'ES256'] }),
    routes: routeToml({ upstream: upstream.url, scopes: ['email', 'siret'], acr: { essential: true, values: ['eidas2'] } }),
  });
  const r = await passerelle(t, toml, ['check', '--online']);
  assert.equal(r.code, 1, r.output);
  for (const expected of [
    /providers\.op\.auth_method is `client_secret_basic`, token_endpoint_auth_methods_supported is \[private_key_jwt\]/,
    /providers\.op\.id_token_algs \[RS256, ES256\] has none of id_token_signing_alg_values_supported \[PS512\]/,
    /scope `siret` \(route\[0\]\.scopes\) is not in scopes_supported/,
    /claims_parameter_supported is not true, but route\[0\]\.acr is sent through the `claims` parameter/,
    /route\[0\]\.acr asks for `eidas2`, not in acr_values_supported \[eidas1\]/,
    /code_challenge_methods_supported \[plain\] lacks S256/,
  ]) {
    assert.match(r.stderr, new RegExp(`error: config\\.toml: provider \`op\`: ${expected.source}`), r.output);
  }
  assert.match(r.stderr, /6 problem\(s\) found/, r.output);
  assert.doesNotMatch(r.stderr, /scope `email`/, 'an advertised scope is no mismatch');
});

test('(register1) passerelle register: Markdown and JSON list per route what its app receives, and that is exactly what the upstream gets', TIMEOUT, async (t) => {
  const purpose = 'Instruction des dossiers | agents *habilités*';
  const s = await startStack(t, {
    config: {
      extraRoutes: (upstream) => `
[[route]]
path = "/rh"
upstream = ${tv(upstream)}
providers = ["op"]
scopes = ["email"]
purpose = ${tv(purpose)}
require = { email_domain = ["example.org", "example.gouv.fr"] }
[route.headers]
"X-Auth-Email" = "email"
"X-Agent-Sub" = "sub"
`,
    },
  });
  const json = await passerelle(t, s.toml, ['register', '--json']);
  assert.equal(json.code, 0, json.output);
  const register = JSON.parse(json.stdout);
  const rh = register.routes.find((r) => r.path === '/rh');
  assert.ok(rh, `the /rh route is in the register: ${json.stdout}`);
  assert.equal(rh.purpose, purpose);
  assert.equal(rh.upstreams[0], s.upstream.url);
  assert.deepEqual(rh.released.map((x) => [x.header, x.claim]), [['x-agent-sub', 'sub'], ['x-auth-email', 'email']]);
  assert.deepEqual(rh.require, [{ claim: 'email_domain', allowed: ['example.org', 'example.gouv.fr'] }]);
  assert.equal(register.routes.find((r) => r.path === '/public').released.length, 0);
  assert.equal(register.sessions.store, 'cookie');

  // What the register says the app receives is what it receives: the identity headers of a signed-in request.
  for (const route of register.routes.filter((r) => r.auth === 'required')) {
    const url = `${s.base}${route.path.replace(/\/$/, '')}/register-check`;
    const res = await s.person.login(url, 'alice');
    assert.equal(res.status, 200, `signed in on ${url}: ${res.status}`);
    // Every header that could be an identity header in this config (both prefixes used), as received.
    const received = headersMatching(s.upstream.last().rawHeaders, /^x-(auth|agent)-/i).map(([name]) => name.toLowerCase()).sort();
    const listed = route.released.map((x) => x.header).sort();
    assert.ok(listed.length > 0, `route ${route.path} releases something`);
    assert.deepEqual(received, listed, `route ${route.path}: the upstream received exactly the headers the register lists`);
  }

  const md = await passerelle(t, s.toml, ['register']);
  assert.equal(md.code, 0, md.output);
  assert.match(md.stdout, /^# Registre des traitements/m);
  assert.ok(md.stdout.includes('Finalité : Instruction des dossiers \\| agents \\*habilités\\*'), `the purpose, escaped for Markdown:\n${md.stdout}`);
  assert.ok(md.stdout.includes('| `x-auth-email` | `email` | email |'), md.stdout);
  assert.ok(md.stdout.includes('*non renseignée*'), 'a route without purpose says so');
});
