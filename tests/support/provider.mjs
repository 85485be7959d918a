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

import { randomBytes } from 'node:crypto';
import http from 'node:http';

import Provider from 'oidc-provider';

import { getJson, listen, stopper } from './http.mjs';
import {
  clientRegistration, filterProviderNotices, findAccountIn, grantWhatIsAsked, passLoginAsSub, recordErrors,
  recordIssued, renderErrorInto, signingKeys,
} from './provider-kit.mjs';

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
 * @param {string} [opts.backchannelLogoutUri] enables Back-Channel Logout 1.0 towards this URI; every logout token
 *   sent is recorded in `op.backchannel` ({ token, status })
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
    backchannelLogoutUri,
  } = opts;
  if (!Array.isArray(redirectUris) || redirectUris.length === 0) {
    throw new TypeError('startProvider: redirectUris is required');
  }
  if (quiet) filterProviderNotices();

  const calls = [];
  const issued = [];
  const errors = [];
  const backchannel = [];
  const keys = signingKeys();

  // Listen first: the issuer must contain the port before the Provider is built.
  const server = http.createServer();
  const port = await listen(server);
  const issuer = `http://127.0.0.1:${port}`;

  const provider = new Provider(issuer, {
    clients: [clientRegistration({
      clientId, clientSecret, redirectUris, postLogoutRedirectUris, authMethod, idTokenAlg,
      userinfoAlg: userinfoSigned ? 'RS256' : undefined,
      backchannelLogoutUri,
    })],
    jwks: { keys },
    // oidc-provider's outgoing requests go through an SSRF guard that refuses 127.0.0.0/8: the Passerelle under
    // test listens there. Drop the guard's dispatcher, and record what is sent back-channel.
    fetch: async (url, options) => {
      const { dispatcher, ...rest } = options;
      const res = await fetch(url, rest);
      if (String(url) === backchannelLogoutUri) {
        backchannel.push({ token: new URLSearchParams(String(rest.body)).get('logout_token'), status: res.status });
      }
      return res;
    },
    cookies: { keys: [randomBytes(32).toString('hex')] },
    claims: scopes,
    // `id` is the account's sub (the login typed on the form is mapped to it, see the request handler).
    findAccount: findAccountIn(accounts),
    // Auto-consent: grant whatever OIDC scopes/claims the client asks for.
    loadExistingGrant: grantWhatIsAsked,
    pkce: { required: () => true }, // S256 is the only method oidc-provider accepts
    enabledJWA: {
      idTokenSigningAlgValues: ['RS256', 'ES256', 'HS256'],
      userinfoSigningAlgValues: ['RS256', 'ES256'],
    },
    features: {
      devInteractions: { enabled: true },
      rpInitiatedLogout: { enabled: true },
      jwtUserinfo: { enabled: true },
      backchannelLogout: { enabled: Boolean(backchannelLogoutUri) },
    },
    // The Passerelle under test is the only client; keep errors visible in `errors`.
    renderError: renderErrorInto(errors),
  });
  recordErrors(provider, errors);
  recordIssued(provider, issued);

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
    if (passLoginAsSub(req, res, url.pathname, accounts, callback)) return;
    callback(req, res);
  });

  // The real endpoint URLs, from the provider's own discovery document (then forget that call).
  const discovery = await getJson(`${issuer}/.well-known/openid-configuration`);
  calls.length = 0;

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
    backchannel,
    /** The provider's private signing keys (JWKs), to forge tokens a real provider could have signed. */
    signingKeys: keys,
    /** requests received on a path, e.g. op.callsTo('/me') */
    callsTo(path) {
      return calls.filter((c) => c.path === path);
    },
    stop: stopper(server),
  };
}
