// One scenario's world: a provider, an upstream, a Passerelle in front of the upstream, and a person.
// Everything is stopped by the test's `t.after`.
//
//   const s = await startStack(t, { provider: { authMethod: 'client_secret_post' } });
//   const res = await s.person.login(`${s.base}/app`, 'alice');

import { startProvider } from './provider.mjs';
import { startUpstream } from './upstream.mjs';
import { freePort, keepOutput, outputName, startPasserelle } from './passerelle.mjs';
import { createPerson } from './person.mjs';

export const PREFIX = '/.passerelle';

/** Ports, a URL base and the redirect URIs a provider registers for one Passerelle on 127.0.0.1. */
export async function addresses() {
  const port = await freePort();
  const adminPort = await freePort();
  const base = `http://127.0.0.1:${port}`;
  return {
    port,
    adminPort,
    base,
    redirectUris: [`${base}${PREFIX}/callback`],
    postLogoutRedirectUris: [`${base}${PREFIX}/logged-out`],
  };
}

// ---------------------------------------------------------------------------------------------------------------
// Passerelle TOML

/** A TOML string of `s` (numbers included). */
export function q(s) {
  return tv(String(s));
}

/** A TOML value: strings, numbers, booleans, arrays and inline tables. */
export function tv(v) {
  if (typeof v === 'string') return JSON.stringify(v); // a TOML basic string is JSON-compatible for these values
  if (typeof v === 'number' || typeof v === 'boolean') return String(v);
  if (Array.isArray(v)) return `[${v.map(tv).join(', ')}]`;
  return `{ ${Object.entries(v).map(([k, x]) => `${k} = ${tv(x)}`).join(', ')} }`;
}

/**
 * A Passerelle TOML: [server] on 127.0.0.1 (`publicUrl` null: none), [session] keyed by $PASSERELLE_KEY, then the
 * provider blocks and the routes (TOML text, or arrays of TOML texts). `writtenBy` names the file that wrote it.
 */
export function configToml({
  writtenBy, port, adminPort, publicUrl = `http://127.0.0.1:${port}`, extraServer = '', extraSession = '',
  providers = '', routes,
}) {
  return `# written by ${writtenBy}
[server]
listen = [${q(`127.0.0.1:${port}`)}]
${publicUrl ? `public_url = ${q(publicUrl)}\n` : ''}admin_listen = ${q(`127.0.0.1:${adminPort}`)}
prefix = ${q(PREFIX)}
${extraServer}
[session]
keys = ["env:PASSERELLE_KEY"]
cookie_name = "passerelle"
${extraSession}
${[].concat(providers).join('\n')}
${[].concat(routes).join('\n')}`;
}

/** [providers.NAME] for a provider `op` ({ issuer, clientId, clientSecret }); `extra` adds keys (values written with tv). */
export function providerToml(name, kind, op, extra = {}) {
  return `[providers.${name}]
kind = ${tv(kind)}
issuer = ${tv(op.issuer)}
client_id = ${tv(op.clientId)}
client_secret = ${tv(op.clientSecret)}
${Object.entries(extra).map(([k, v]) => `${k} = ${tv(v)}`).join('\n')}
`;
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
  extraRoutes = () => '', // (upstream URL) => more [[route]] TOML
}) {
  return configToml({
    writtenBy: 'tests/support/stack.mjs',
    port,
    adminPort,
    extraServer: `${headerEncoding ? `header_encoding = ${q(headerEncoding)}\n` : ''}${extraServer}`,
    extraSession: `idle_timeout = ${q(idleTimeout)}\nmax_lifetime = ${q(maxLifetime)}\n`,
    providers: providerToml('op', 'oidc', { issuer, clientId, clientSecret }, { auth_method: authMethod, scopes }),
    routes: `[[route]]
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
${extraRoutes(upstream)}`,
  });
}

/**
 * @param {import('node:test').TestContext} t
 * @param {object} [opts]
 * @param {object} [opts.provider] options for startProvider (redirect URIs are filled in)
 * @param {object} [opts.config] options for passerelleToml (ports, issuer, client filled in)
 * @param {object} [opts.passerelle] options for startPasserelle
 */
export async function startStack(t, opts = {}) {
  const { port, adminPort, base, redirectUris, postLogoutRedirectUris } = await addresses();
  const stops = [];
  t.after(async () => {
    for (const stop of stops.reverse()) await stop();
  });

  const authMethod = opts.provider?.authMethod || 'client_secret_basic';
  const op = await startProvider({
    redirectUris,
    postLogoutRedirectUris,
    ...opts.provider,
    authMethod,
  });
  stops.push(() => op.stop());
  const upstream = await startUpstream(opts.upstream);
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
    await keepOutput(outputName(t, { max: 120 }), toml, passerelle.logs());
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
