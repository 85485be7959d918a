// One scenario's world: a provider, an upstream, a Passerelle in front of the upstream, and a person.
// Everything is stopped by the test's `t.after`.
//
//   const s = await startStack(t, { provider: { authMethod: 'client_secret_post' } });
//   const res = await s.person.login(`${s.base}/app`, 'alice');

import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { startProvider } from './provider.mjs';
import { startUpstream } from './upstream.mjs';
import { freePort, startPasserelle } from './passerelle.mjs';
import { createPerson } from './person.mjs';

export const PREFIX = '/.passerelle';
export const OUTPUT_DIR = fileURLToPath(new URL('../output/', import.meta.url));

function q(s) {
  return JSON.stringify(String(s)); // a TOML basic string is JSON-compatible for these values
}

/**
 * The Passerelle TOML of the contract, for one provider `op` and two routes: "/" (required, identity headers)
 * and "/public" (public).
 */
export function passerelleToml({
  port, adminPort, issuer, clientId, clientSecret, authMethod, upstream,
  idleTimeout = '30m', maxLifetime = '12h', headerEncoding, scopes = ['openid', 'email', 'profile'],
  routeScopes = ['email', 'profile'],
  headers = {
    'X-Auth-Sub': 'sub',
    'X-Auth-Email': 'email',
    'X-Auth-Given-Name': 'given_name',
    'X-Auth-Family-Name': 'family_name',
  },
  extraServer = '',
}) {
  const base = `http://127.0.0.1:${port}`;
  return `# written by tests/support/stack.mjs
[server]
listen = [${q(`127.0.0.1:${port}`)}]
public_url = ${q(base)}
admin_listen = ${q(`127.0.0.1:${adminPort}`)}
prefix = ${q(PREFIX)}
${headerEncoding ? `header_encoding = ${q(headerEncoding)}\n` : ''}${extraServer}
[session]
keys = ["env:PASSERELLE_KEY"]
cookie_name = "passerelle"
idle_timeout = ${q(idleTimeout)}
max_lifetime = ${q(maxLifetime)}

[providers.op]
kind = "oidc"
issuer = ${q(issuer)}
client_id = ${q(clientId)}
client_secret = ${q(clientSecret)}
auth_method = ${q(authMethod)}
scopes = [${scopes.map(q).join(', ')}]

[[route]]
path = "/"
upstream = ${q(upstream)}
auth = "required"
providers = ["op"]
scopes = [${routeScopes.map(q).join(', ')}]
[route.headers]
${Object.entries(headers).map(([h, c]) => `${q(h)} = ${q(c)}`).join('\n')}

[[route]]
path = "/public"
upstream = ${q(upstream)}
auth = "public"
`;
}

/**
 * @param {import('node:test').TestContext} t
 * @param {object} [opts]
 * @param {object} [opts.provider] options for startProvider (redirect URIs are filled in)
 * @param {object} [opts.config] options for passerelleToml (ports, issuer, client filled in)
 * @param {object} [opts.passerelle] options for startPasserelle
 */
export async function startStack(t, opts = {}) {
  const port = await freePort();
  const adminPort = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const stops = [];
  t.after(async () => {
    for (const stop of stops.reverse()) await stop();
  });

  const authMethod = opts.provider?.authMethod || 'client_secret_basic';
  const op = await startProvider({
    redirectUris: [`${base}${PREFIX}/callback`],
    postLogoutRedirectUris: [`${base}${PREFIX}/logged-out`],
    ...opts.provider,
    authMethod,
  });
  stops.push(() => op.stop());
  const upstream = await startUpstream();
  stops.push(() => upstream.stop());

  const toml = passerelleToml({
    port,
    adminPort,
    issuer: op.issuer,
    clientId: op.clientId,
    clientSecret: op.clientSecret,
    authMethod,
    upstream: upstream.url,
    ...opts.config,
  });
  const passerelle = await startPasserelle(toml, opts.passerelle);
  stops.push(async () => {
    await passerelle.stop();
    // Keep what it printed, for diagnosis: tests/output/<test name>.log
    const name = (t.fullName || t.name || 'scenario').replace(/[^A-Za-z0-9._-]+/g, '_').slice(0, 120);
    await mkdir(OUTPUT_DIR, { recursive: true });
    await writeFile(path.join(OUTPUT_DIR, `${name}.log`), `${toml}\n----- passerelle output -----\n${passerelle.logs()}`);
  });

  return {
    base,
    op,
    upstream,
    passerelle,
    toml,
    person: createPerson(),
    newPerson: () => createPerson(),
  };
}
