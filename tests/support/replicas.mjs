// Several Passerelle replicas sharing one session key and one Redis, in front of one real OpenID provider and one
// recording upstream; and what the session tests do with them.
//
//   const world = await replicas(t, { redisToml: redisTable(redis.url) });   // world.nodes[i].base, .adminUrl, …
//   const person = await loggedIn(world, 0);                                  // signed in on replica 0

import assert from 'node:assert/strict';

import { freePort, keepOutput, outputName, sessionKey, startPasserelle } from './passerelle.mjs';
import { createPerson } from './person.mjs';
import { startProvider } from './provider.mjs';
import { waitFor } from './redis.mjs';
import { configToml, PREFIX, providerToml, q } from './stack.mjs';
import { headerValues, startUpstream } from './upstream.mjs';

export const ADMIN_TOKEN = 'admin-token-for-tests-0123456789abcdef';

/**
 * `n` replicas sharing one session key, one provider registration and `redisToml` (the [session.redis] table and
 * store); each has its own port and admin port.
 */
export async function replicas(t, {
  n = 2, store = 'redis', redisToml, recheck = '30s', extraSession = '', backchannel = false, extraProviders = '',
  provider = {}, scopes = ['openid', 'email', 'profile'], readyPath = '/ready',
}) {
  const ports = [];
  for (let i = 0; i < n; i++) ports.push({ port: await freePort(), adminPort: await freePort() });
  const bases = ports.map(({ port }) => `http://127.0.0.1:${port}`);
  const op = await startProvider({
    redirectUris: bases.map((b) => `${b}${PREFIX}/callback`),
    postLogoutRedirectUris: bases.map((b) => `${b}${PREFIX}/logged-out`),
    backchannelLogoutUri: backchannel ? `${bases[0]}${PREFIX}/backchannel-logout` : undefined,
    ...provider,
  });
  t.after(() => op.stop());
  const upstream = await startUpstream();
  t.after(() => upstream.stop());
  const key = sessionKey();
  const nodes = [];
  for (const [i, { port, adminPort }] of ports.entries()) {
    const toml = configToml({
      writtenBy: 'tests/support/replicas.mjs',
      port,
      adminPort,
      extraServer: `admin_token = ${q(ADMIN_TOKEN)}\n`,
      extraSession: `store = ${q(store)}\nrecheck_interval = ${q(recheck)}\n${extraSession}${redisToml}\n`,
      providers: [providerToml('op', 'oidc', op, { scopes }), extraProviders],
      routes: `[[route]]
path = "/"
upstream = ${q(upstream.url)}
providers = ["op"]
scopes = ["email"]
[route.headers]
"X-Auth-Sub" = "sub"
"X-Auth-Email" = "email"
`,
    });
    const p = await startPasserelle(toml, { env: { PASSERELLE_KEY: key }, readyPath });
    // /ready stays 200 for a while when Redis does not answer (the grace); a replica meant to start with Redis
    // up is ready for these tests once /ready has seen it.
    if (readyPath === '/ready') {
      await waitFor(`replica ${i} to see Redis`, async () => /redis: up/.test(await (await fetch(`${p.adminUrl}/ready`)).text()), 20_000);
    }
    t.after(async () => {
      await p.stop();
      await keepOutput(outputName(t, { suffix: `replica${i}` }), toml, p.logs());
    });
    nodes.push({ ...p, base: bases[i], toml });
  }
  return { op, upstream, nodes };
}

export function redisTable(url, extra = '') {
  return `[session.redis]\nurl = ${q(url)}\nkey_prefix = "t:"\ntimeout = "300ms"\n${extra}`;
}

/** The identity the upstream saw on the last request, or undefined. */
export function lastSub(upstream) {
  const last = upstream.requests.at(-1);
  return last ? headerValues(last.rawHeaders, 'x-auth-sub')[0] : undefined;
}

/** A person holding exactly these cookies for 127.0.0.1 (a copy of another's session). */
export function personWith(cookies) {
  const p = createPerson();
  for (const c of cookies) p.jar.set('http://127.0.0.1/', c.name, c.value, { path: '/' });
  return p;
}

export async function loggedIn(world, at = 0, login = 'alice') {
  const person = createPerson();
  const res = await person.login(`${world.nodes[at].base}/app`, login);
  assert.equal(res.status, 200, `login ends on the app: ${res.status} ${res.url}\n${res.body.slice(0, 500)}\n${world.nodes[at].logs().slice(-2000)}`);
  return person;
}

/** Polls `url` with `person` until it is no longer served (not 200), at most `ms`; returns the elapsed ms. */
export async function refusedWithin(person, url, ms) {
  const started = Date.now();
  await waitFor(`${url} refused`, async () => (await person.get(url, { follow: false })).status !== 200, ms);
  return Date.now() - started;
}

