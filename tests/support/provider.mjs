// A real OpenID Provider for the integration tests: the OpenID-certified `oidc-provider` package,
// listening on 127.0.0.1 with an ephemeral port.
//
//   const op = await startProvider({ redirectUris: [`${base}/.passerelle/callback`], ... });
//   op.issuer            // "http://127.0.0.1:PORT"
//   op.calls             // every request received: { method, path, url, headers, status, responseType }
//   op.issued            // every code / token value issued (to check none leaks into Passerelle's logs)
//   op.errors            // errors the provider reported (server_error, grant.error, …) for diagnosis
//   await op.stop();
//
// The login form is oidc-provider's built-in `devInteractions` page: the person posts `login` (an account key
// below) and any `password`. Consent is automatic (`loadExistingGrant` grants what the client asks for).

import { generateKeyPairSync, randomBytes } from 'node:crypto';
import http from 'node:http';

import Provider from 'oidc-provider';

// Test identities, keyed by the login typed on the provider's form.
export const ACCOUNTS = Object.freeze({
  alice: Object.freeze({
    sub: 'a1b2c3d4-alice-0001',
    email: 'alice.martin@example.gouv.fr',
    email_verified: true,
    given_name: 'Alice',
    family_name: 'Martin',
    name: 'Alice Martin',
  }),
  helene: Object.freeze({
    sub: 'e5f6a7b8-helene-0002',
    email: 'helene.wamytan@example.nc',
    email_verified: true,
    given_name: 'Hélène',
    family_name: 'Wamytan-Noël',
    name: 'Hélène Wamytan-Noël',
  }),
});

// scope -> claims released by that scope
export const SCOPE_CLAIMS = Object.freeze({
  openid: ['sub'],
  email: ['email', 'email_verified'],
  profile: ['name', 'given_name', 'family_name'],
});

// oidc-provider prints development notices/warnings through console.* ("oidc-provider WARNING: …").
// They are expected here (devInteractions, default pages) and only clutter the test output.
let consoleFiltered = false;
function filterProviderNotices() {
  if (consoleFiltered) return;
  consoleFiltered = true;
  for (const level of ['warn', 'info']) {
    const original = console[level].bind(console);
    console[level] = (...args) => {
      if (typeof args[0] === 'string' && args[0].startsWith('oidc-provider ')) return;
      original(...args);
    };
  }
}

function generateSigningKeys() {
  const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'jwk' });
  const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ format: 'jwk' });
  return [
    { ...rsa, kid: `rsa-${randomBytes(4).toString('hex')}`, use: 'sig', alg: 'RS256' },
    { ...ec, kid: `ec-${randomBytes(4).toString('hex')}`, use: 'sig', alg: 'ES256' },
  ];
}

function getJson(url) {
  return new Promise((resolve, reject) => {
    http.get(url, { agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk) => { body += chunk; });
      res.on('end', () => {
        if (res.statusCode !== 200) reject(new Error(`GET ${url} answered ${res.statusCode}: ${body}`));
        else resolve(JSON.parse(body));
      });
    }).on('error', reject);
  });
}

/**
 * @param {object} [opts]
 * @param {string} [opts.clientId]
 * @param {string} [opts.clientSecret]
 * @param {string[]} opts.redirectUris
 * @param {string[]} [opts.postLogoutRedirectUris]
 * @param {'client_secret_basic'|'client_secret_post'} [opts.authMethod]
 * @param {'RS256'|'ES256'|'HS256'} [opts.idTokenAlg]
 * @param {boolean} [opts.userinfoSigned] when true /userinfo answers application/jwt (signed RS256)
 * @param {Record<string, object>} [opts.accounts] login -> claims (must include sub)
 * @param {Record<string, string[]>} [opts.scopes] scope -> claims
 * @param {boolean} [opts.quiet] filter oidc-provider's console notices (default true)
 */
export async function startProvider(opts = {}) {
  const {
    clientId = 'passerelle-test',
    clientSecret = randomBytes(32).toString('base64url'),
    redirectUris,
    postLogoutRedirectUris = [],
    authMethod = 'client_secret_basic',
    idTokenAlg = 'RS256',
    userinfoSigned = false,
    accounts = ACCOUNTS,
    scopes = SCOPE_CLAIMS,
    quiet = true,
  } = opts;
  if (!Array.isArray(redirectUris) || redirectUris.length === 0) {
    throw new TypeError('startProvider: redirectUris is required');
  }
  if (quiet) filterProviderNotices();

  const calls = [];
  const issued = [];
  const errors = [];

  // Listen first: the issuer must contain the port before the Provider is built.
  const server = http.createServer();
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const { port } = server.address();
  const issuer = `http://127.0.0.1:${port}`;

  const client = {
    client_id: clientId,
    client_secret: clientSecret,
    redirect_uris: redirectUris,
    post_logout_redirect_uris: postLogoutRedirectUris,
    response_types: ['code'],
    grant_types: ['authorization_code'],
    token_endpoint_auth_method: authMethod,
    id_token_signed_response_alg: idTokenAlg,
  };
  if (userinfoSigned) client.userinfo_signed_response_alg = 'RS256';

  const provider = new Provider(issuer, {
    clients: [client],
    jwks: { keys: generateSigningKeys() },
    cookies: { keys: [randomBytes(32).toString('hex')] },
    claims: scopes,
    // `id` is the account's sub (the login typed on the form is mapped to it, see the request handler).
    async findAccount(_ctx, id) {
      const claims = Object.values(accounts).find((a) => a.sub === id);
      if (!claims) return undefined;
      return {
        accountId: claims.sub,
        async claims() {
          return { ...claims };
        },
      };
    },
    // Auto-consent: grant whatever OIDC scopes/claims the client asks for.
    async loadExistingGrant(ctx) {
      const { oidc } = ctx;
      const grantId = oidc.result?.consent?.grantId || oidc.session.grantIdFor(oidc.client.clientId);
      let grant = grantId ? await oidc.provider.Grant.find(grantId) : undefined;
      if (!grant) {
        grant = new oidc.provider.Grant({ clientId: oidc.client.clientId, accountId: oidc.session.accountId });
      }
      grant.addOIDCScope([...oidc.requestParamScopes].join(' '));
      const claims = [...oidc.requestParamClaims];
      if (claims.length) grant.addOIDCClaims(claims);
      await grant.save();
      return grant;
    },
    pkce: { required: () => true }, // S256 is the only method oidc-provider accepts
    enabledJWA: {
      idTokenSigningAlgValues: ['RS256', 'ES256', 'HS256'],
      userinfoSigningAlgValues: ['RS256', 'ES256'],
    },
    features: {
      devInteractions: { enabled: true },
      rpInitiatedLogout: { enabled: true },
      jwtUserinfo: { enabled: true },
    },
    // The Passerelle under test is the only client; keep errors visible in `errors`.
    async renderError(ctx, out, error) {
      ctx.type = 'html';
      ctx.body = `<!DOCTYPE html><html><body><h1>oidc-provider error</h1><pre>${JSON.stringify(out)
        .replace(/</g, '&lt;')}</pre></body></html>`;
      if (error) errors.push(error);
    },
  });

  for (const event of ['server_error', 'grant.error', 'authorization.error', 'userinfo.error',
    'end_session.error', 'jwks.error', 'discovery.error', 'interaction.error']) {
    provider.on(event, (_ctx, err) => errors.push({ event, message: err?.message, detail: err?.error_description }));
  }
  provider.on('authorization.success', (_ctx, out) => {
    if (out?.code) issued.push({ type: 'code', value: out.code });
  });
  provider.on('grant.success', (ctx) => {
    const body = ctx.body || {};
    for (const type of ['access_token', 'id_token', 'refresh_token']) {
      if (body[type]) issued.push({ type, value: body[type] });
    }
  });

  const callback = provider.callback();
  server.on('request', (req, res) => {
    const url = new URL(req.url, issuer);
    const call = {
      method: req.method,
      path: url.pathname,
      url: req.url,
      headers: { ...req.headers },
      status: undefined,
      responseType: undefined,
    };
    calls.push(call);
    res.on('finish', () => {
      call.status = res.statusCode;
      call.responseType = res.getHeader('content-type');
    });
    // devInteractions takes the typed `login` as the account id, and oidc-provider uses the account id as `sub`.
    // Map login -> sub here so accounts can have a sub distinct from their login; oidc-provider then uses this
    // already-parsed body (req.body).
    if (req.method === 'POST' && /^\/interaction\/[^/]+$/.test(url.pathname)) {
      const chunks = [];
      req.on('data', (c) => chunks.push(c));
      req.on('end', () => {
        const form = Object.fromEntries(new URLSearchParams(Buffer.concat(chunks).toString('utf8')));
        if (form.login && accounts[form.login]) form.login = accounts[form.login].sub;
        req.body = form;
        callback(req, res);
      });
      return;
    }
    callback(req, res);
  });

  // The real endpoint URLs, from the provider's own discovery document (then forget that call).
  const discovery = await getJson(`${issuer}/.well-known/openid-configuration`);
  calls.length = 0;

  let stopped = false;
  async function stop() {
    if (stopped) return;
    stopped = true;
    await new Promise((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    });
  }

  return {
    issuer,
    port,
    clientId,
    clientSecret,
    calls,
    issued,
    errors,
    discovery,
    provider,
    /** requests received on a path, e.g. op.callsTo('/me') */
    callsTo(path) {
      return calls.filter((c) => c.path === path);
    },
    stop,
  };
}
