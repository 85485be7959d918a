// Identity providers that behave like the French federations, built on the real `oidc-provider` (v9), on 127.0.0.1
// with an ephemeral port. What each one imitates is in /work/shared/federations.md.
//
//   const pc = await startProConnectProvider({ redirectUris, postLogoutRedirectUris });
//   pc.issuer              // "http://127.0.0.1:PORT/api/v2" (mounted under /api/v2, like ProConnect)
//   pc.calls               // every request: { secure, remotePort, method, path, url, query, headers, body, status,
//                          //                  responseType, responseBody }
//   pc.callsTo('/api/v2/token')
//   pc.interactions        // every login interaction: { uid, prompt, params } (params = the authorization request's)
//   pc.issued              // codes and tokens issued (to check none leaks into Passerelle's logs)
//   await pc.stop();
//
//   const nc = await startNcConnectProvider({ redirectUris, authMethod: 'client_secret_post' });  // Keycloak-like v3
//   const v2 = await startNcConnectV2Provider({ redirectUris });   // legacy v2: nested userinfo
//
// The login page is written here (not oidc-provider's devInteractions) so that the login result carries the acr
// and amr ProConnect would return: the essential acr the request asked for (claims parameter, or acr_values) when
// the account can reach it, else the account's first acr; and when an essential acr cannot be reached, the
// interaction ends with `access_denied` "requested ACRs could not be satisfied", as ProConnect answers. The page
// has a login form (fields `login` and `password`, what support/person.mjs fills in) and a cancel form ("Annuler")
// that ends the interaction with `access_denied`.
//
// Also imitated: ProConnect's `/api/v2` endpoint paths, its acr values, `idp_hint`/`siret_hint` as parameters,
// client_secret_post enforced (oidc-provider 9 alone takes basic and post alike), and optionally its userinfo
// controller's Content-Type (`userinfoContentType`); NC Connect v3's Keycloak realm paths and v2's legacy layout.
// Options for edge cases: `honourEssentialAcr: false` (a provider that ignores an essential acr), `tls` (https issuer
// with a plain-http front listener for the scripted person).

import { randomBytes } from 'node:crypto';
import http from 'node:http';
import https from 'node:https';

import Provider, { interactionPolicy } from 'oidc-provider';

import { escapeHtml, getJson, listen, readBody, stopper } from './http.mjs';
import {
  clientRegistration, ERROR_EVENTS, filterProviderNotices, grantWhatIsAsked, recordErrors, recordIssued, signingKeys,
} from './provider-kit.mjs';

// ---------------------------------------------------------------------------------------------------------------
// Accounts: the key is what the person types in the `login` field; `acrs` the levels the account can reach
// (first = default); `claims` what the provider knows (sub included).

export const PROCONNECT_ACCOUNTS = Object.freeze({
  helene: Object.freeze({
    acrs: ['eidas1', 'eidas2'],
    claims: Object.freeze({
      sub: '4d327dd1e427daf4d50296ab71d6f3fc82ccc40742943521d42cb2bae4df41af',
      given_name: 'Hélène',
      usual_name: 'NOËL',
      email: 'Helene.Noel@Example.GOUV.fr',
      uid: 'hnoel-4521',
      siret: '21340126800130',
      idp_id: 'fia1v2-e1c2a3d4',
      organization_label: 'Commune de Montpellier',
      roles: ['agent_public'],
      belonging_population: 'agent',
      'chorusdt:matricule': 'MAT-0042',
      'chorusdt:societe': 'SOC-7510',
    }),
  }),
  // An account whose identity provider cannot do more than eidas1 (no second factor).
  bruno: Object.freeze({
    acrs: ['eidas1'],
    claims: Object.freeze({
      sub: 'b0b0b0b0e427daf4d50296ab71d6f3fc82ccc40742943521d42cb2bae4df0001',
      given_name: 'Bruno',
      usual_name: 'Martin',
      email: 'bruno.martin@example.gouv.fr',
      uid: 'bmartin',
      siret: '13002526500013',
      idp_id: 'fia1v2-e1c2a3d4',
      roles: ['agent_public_etat'],
      belonging_population: 'agent',
    }),
  }),
});

// ProConnect: one scope per claim, `chorusdt` releasing two prefixed claims ([EP] scope-claims.md).
export const PROCONNECT_SCOPES = Object.freeze({
  openid: ['sub'],
  given_name: ['given_name'],
  usual_name: ['usual_name'],
  email: ['email'],
  uid: ['uid'],
  siret: ['siret'],
  siren: ['siren'],
  idp_id: ['idp_id'],
  idp_acr: ['idp_acr'],
  roles: ['roles'],
  belonging_population: ['belonging_population'],
  organization_label: ['organization_label'],
  organizational_unit: ['organizational_unit'],
  phone: ['phone_number'],
  chorusdt: ['chorusdt:matricule', 'chorusdt:societe'],
  custom: ['custom'],
});

export const PROCONNECT_ACR_VALUES = Object.freeze(['eidas0', 'eidas0-mfa', 'eidas1', 'eidas1-mfa', 'eidas2', 'eidas3',
  'https://proconnect.gouv.fr/assurance/certification-dirigeant']);

export const NC_ACCOUNTS = Object.freeze({
  helene: Object.freeze({
    acrs: ['1'],
    claims: Object.freeze({
      sub: 'f2c6a1e0-6b0e-4c51-9d3a-nc0000000042',
      given_name: 'Hélène',
      family_name: 'Wamytan',
      birthdate: '1984-05-17',
      gender: 'female',
      verified: 2,
      birthplace: 'Nouméa',
      birthcountry: 'Nouvelle-Calédonie',
      email: 'helene.wamytan@gouv.nc',
      email_verified: true,
    }),
  }),
});

export const NC_SCOPES = Object.freeze({
  openid: ['sub'],
  profile: ['given_name', 'family_name', 'birthdate', 'gender', 'verified'],
  email: ['email', 'email_verified'],
  birth: ['birthplace', 'birthcountry'],
  identite_pivot: ['given_name', 'family_name', 'birthdate', 'gender', 'verified', 'birthplace', 'birthcountry'],
});

// NC Connect v2: userinfo `{"sub", "login", "info": {"openid": {"Email"}}}` ([NC2], seed documents).
export const NC_V2_ACCOUNTS = Object.freeze({
  jdoe: Object.freeze({
    acrs: ['1'],
    claims: Object.freeze({
      sub: 'nc-v2-jdoe-0001',
      login: 'jdoe',
      info: Object.freeze({ openid: Object.freeze({ Email: 'JDoe@Gouv.NC' }) }),
    }),
  }),
});

export const NC_V2_SCOPES = Object.freeze({
  openid: ['sub'],
  profile: ['login'],
  email: ['info'],
});

// ---------------------------------------------------------------------------------------------------------------

/** The acr values an authorization request asks for, and whether they are essential. */
export function requestedAcr(params) {
  let claims = {};
  if (params.claims) {
    try {
      claims = JSON.parse(params.claims);
    } catch {
      claims = {};
    }
  }
  const acr = claims?.id_token?.acr;
  if (acr && Array.isArray(acr.values)) return { values: acr.values, essential: acr.essential === true };
  if (acr && typeof acr.value === 'string') return { values: [acr.value], essential: acr.essential === true };
  if (params.acr_values) return { values: String(params.acr_values).split(' '), essential: false };
  return { values: [], essential: false };
}

const STRONG_ACRS = new Set(['eidas2', 'eidas3', 'eidas0-mfa', 'eidas1-mfa']);

/**
 * A federation-like OpenID Provider.
 * @param {object} opts
 * @param {string} opts.label                 name on the login page
 * @param {string} [opts.mountPath]           '' or '/api/v2' or '/v3/realms/nc-connect' (the issuer's path)
 * @param {object} [opts.routes]              oidc-provider routes (endpoint paths under the mount)
 * @param {string} [opts.clientId]
 * @param {string} [opts.clientSecret]
 * @param {string[]} opts.redirectUris
 * @param {string[]} [opts.postLogoutRedirectUris]
 * @param {'client_secret_basic'|'client_secret_post'} opts.authMethod the only method the client may use
 * @param {'RS256'|'ES256'|'HS256'} opts.idTokenAlg
 * @param {'RS256'|'ES256'|'HS256'} [opts.userinfoAlg]  signed userinfo (application/jwt); JSON when absent
 * @param {Record<string, {acrs: string[], claims: object}>} opts.accounts
 * @param {Record<string, string[]>} opts.scopes     scope -> claims
 * @param {string[]} [opts.acrValues]
 * @param {string[]} [opts.extraParams]
 * @param {boolean} [opts.pkceRequired]
 * @param {string} [opts.cookiePrefix]         prefix of the provider's cookie names (two providers share a jar)
 * @param {string} [opts.userinfoContentType] Content-Type forced on userinfo answers (ProConnect's controller
 *                                             labels its answer application/jwt even when it is JSON, federations.md §4)
 * @param {boolean} [opts.honourEssentialAcr]  default true; false: the login ignores the requested acr and returns the
 *                                             account's first one (a non-conformant provider, to test the RP's check)
 * @param {{key: string, cert: string, ca: string}} [opts.tls] serve the issuer over https (PEM strings); a plain http
 *                                             listener (`frontOrigin`) serves the same provider for the scripted person
 * @param {boolean} [opts.strictAuthMethod]    refuse (401 invalid_client) a client authenticating with another method
 *                                             than its registered one; oidc-provider 9 takes basic and post alike
 */
export async function startFederationProvider(opts) {
  const {
    label,
    mountPath = '',
    routes = {},
    clientId = `client-${randomBytes(6).toString('hex')}`,
    clientSecret = randomBytes(32).toString('base64url'),
    redirectUris,
    postLogoutRedirectUris = [],
    authMethod,
    idTokenAlg,
    userinfoAlg,
    accounts,
    scopes,
    acrValues = [],
    extraParams = [],
    pkceRequired = false,
    cookiePrefix = `op${randomBytes(3).toString('hex')}`,
    strictAuthMethod = false,
    userinfoContentType,
    honourEssentialAcr = true,
    tls,
  } = opts;
  if (!Array.isArray(redirectUris) || redirectUris.length === 0) throw new TypeError('redirectUris is required');
  filterProviderNotices();

  const calls = [];
  const issued = [];
  const errors = [];
  const interactions = [];

  const server = tls ? https.createServer({ key: tls.key, cert: tls.cert }) : http.createServer();
  const port = await listen(server);
  const origin = `${tls ? 'https' : 'http'}://127.0.0.1:${port}`;
  const issuer = `${origin}${mountPath}`;
  // With tls, the scripted person (plain http only) uses this second listener for the front channel.
  const front = tls ? http.createServer() : undefined;
  if (front) await listen(front);
  const frontOrigin = front ? `http://127.0.0.1:${front.address().port}` : origin;

  // A non-conformant provider does not even re-prompt when the essential acr is not reached.
  const policy = interactionPolicy.base();
  if (!honourEssentialAcr) {
    policy.get('login').checks.remove('essential_acrs');
    policy.get('login').checks.remove('essential_acr');
  }

  const bySub = (sub) => Object.values(accounts).find((a) => a.claims.sub === sub);

  const provider = new Provider(issuer, {
    clients: [clientRegistration({
      clientId, clientSecret, redirectUris, postLogoutRedirectUris, authMethod, idTokenAlg, userinfoAlg,
    })],
    jwks: { keys: signingKeys() },
    cookies: {
      keys: [randomBytes(32).toString('hex')],
      names: {
        session: `${cookiePrefix}_session`,
        interaction: `${cookiePrefix}_interaction`,
        resume: `${cookiePrefix}_resume`,
      },
    },
    routes,
    claims: { ...scopes, acr: null, amr: null, auth_time: null, sid: null, iss: null },
    acrValues,
    extraParams,
    async findAccount(_ctx, id) {
      const account = bySub(id);
      if (!account) return undefined;
      return { accountId: id, async claims() { return structuredClone(account.claims); } };
    },
    // Consent is implicit at the federations: grant what the client asks for.
    loadExistingGrant: grantWhatIsAsked,
    interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}`, policy },
    pkce: { required: () => pkceRequired },
    enabledJWA: {
      idTokenSigningAlgValues: ['RS256', 'ES256', 'HS256'],
      userinfoSigningAlgValues: ['RS256', 'ES256', 'HS256'],
    },
    features: {
      devInteractions: { enabled: false },
      claimsParameter: { enabled: true },
      rpInitiatedLogout: { enabled: true },
      jwtUserinfo: { enabled: true },
    },
    async renderError(ctx, out, error) {
      ctx.type = 'html';
      ctx.body = `<!DOCTYPE html><html lang="fr"><body><h1>Erreur du fournisseur</h1><pre>${escapeHtml(JSON.stringify(out))}</pre></body></html>`;
      if (error) errors.push({ event: 'renderError', message: error.message, detail: error.error_description });
    },
  });

  recordErrors(provider, errors, [...ERROR_EVENTS, 'backchannel.error']);
  recordIssued(provider, issued);

  // -------------------------------------------------------------------------------------------------------------
  // The login page and its two actions.

  function loginPage(uid, details, message) {
    const hint = details.params.login_hint ? ` value="${escapeHtml(details.params.login_hint)}"` : '';
    return `<!DOCTYPE html>
<html lang="fr"><head><meta charset="utf-8"><title>Connexion — ${escapeHtml(label)}</title></head>
<body><main>
<h1>${escapeHtml(label)}</h1>
${message ? `<p role="alert">${escapeHtml(message)}</p>` : ''}
<form method="post" action="/interaction/${escapeHtml(uid)}/login">
<label>Identifiant <input name="login" autocomplete="username"${hint}></label>
<label>Mot de passe <input type="password" name="password" autocomplete="current-password"></label>
<button type="submit">Se connecter</button>
</form>
<form method="post" action="/interaction/${escapeHtml(uid)}/abort"><button type="submit">Annuler</button></form>
</main></body></html>`;
  }

  function sendHtml(res, status, html) {
    res.writeHead(status, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
    res.end(html);
  }

  async function interaction(req, res, url) {
    const m = /^\/interaction\/([^/]+)(?:\/(login|abort))?$/.exec(url.pathname);
    if (!m) return sendHtml(res, 404, '<!DOCTYPE html><p>introuvable</p>');
    const [, uid, action] = m;
    const details = await provider.interactionDetails(req, res);
    if (details.uid !== uid) return sendHtml(res, 400, '<!DOCTYPE html><p>interaction inconnue</p>');
    if (req.method === 'GET' && !action) {
      interactions.push({ uid, prompt: details.prompt, params: { ...details.params } });
      if (details.prompt.name === 'login') return sendHtml(res, 200, loginPage(uid, details));
      // Consent: implicit (loadExistingGrant grants what is asked), so this is only a safety net.
      const grant = new provider.Grant({ clientId: details.params.client_id, accountId: details.session.accountId });
      grant.addOIDCScope(String(details.params.scope || 'openid'));
      const grantId = await grant.save();
      return provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
    }
    if (req.method !== 'POST') return sendHtml(res, 405, '<!DOCTYPE html><p>méthode</p>');
    const form = Object.fromEntries(new URLSearchParams(req.body || ''));
    if (action === 'abort') {
      return provider.interactionFinished(req, res, {
        error: 'access_denied',
        error_description: 'End-User aborted interaction',
      }, { mergeWithLastSubmission: false });
    }
    const account = accounts[form.login] || Object.values(accounts).find((a) => a.claims.email
      && a.claims.email.toLowerCase() === String(form.login || '').toLowerCase());
    if (!account) return sendHtml(res, 200, loginPage(uid, details, 'Identifiant inconnu.'));
    const wanted = honourEssentialAcr ? requestedAcr(details.params) : { values: [], essential: false };
    let acr = wanted.values.find((v) => account.acrs.includes(v));
    if (!acr) {
      if (wanted.essential) {
        return provider.interactionFinished(req, res, {
          error: 'access_denied',
          error_description: 'requested ACRs could not be satisfied',
        }, { mergeWithLastSubmission: false });
      }
      [acr] = account.acrs;
    }
    const amr = STRONG_ACRS.has(acr) ? ['pwd', 'otp', 'mfa'] : ['pwd'];
    return provider.interactionFinished(req, res, {
      login: { accountId: account.claims.sub, acr, amr, remember: true },
    }, { mergeWithLastSubmission: false });
  }

  // -------------------------------------------------------------------------------------------------------------

  // The client authenticates at the token, introspection and revocation endpoints with its registered method only
  // (ProConnect: client_secret_post; federations.md §3).
  function wrongAuthMethod(req, body) {
    if (!/^application\/x-www-form-urlencoded/.test(req.headers['content-type'] || '')) return false;
    const form = new URLSearchParams(body);
    const basic = /^basic /i.test(req.headers.authorization || '');
    const post = form.has('client_secret');
    if (!basic && !post) return false; // another method, or none: oidc-provider decides
    return (authMethod === 'client_secret_post' && (basic || !post))
      || (authMethod === 'client_secret_basic' && (post || !basic));
  }

  const userinfoPath = `${mountPath}${routes.userinfo || '/me'}`;
  const callback = provider.callback();
  const onRequest = (req, res) => {
    const url = new URL(req.url, origin);
    const call = {
      secure: Boolean(req.socket.encrypted),
      remotePort: req.socket.remotePort,
      method: req.method,
      path: url.pathname,
      url: req.url,
      query: Object.fromEntries(url.searchParams),
      headers: { ...req.headers },
      body: undefined,
      status: undefined,
      responseType: undefined,
      responseBody: undefined,
    };
    calls.push(call);
    // Keep what the provider answers on the back channel (token, userinfo) for the assertions.
    const chunks = [];
    const write = res.write.bind(res);
    const end = res.end.bind(res);
    res.write = (chunk, ...rest) => {
      if (chunk && typeof chunk !== 'function') chunks.push(Buffer.from(chunk));
      return write(chunk, ...rest);
    };
    res.end = (chunk, ...rest) => {
      if (chunk && typeof chunk !== 'function') chunks.push(Buffer.from(chunk));
      return end(chunk, ...rest);
    };
    if (userinfoContentType && url.pathname === userinfoPath) {
      const setHeader = res.setHeader.bind(res);
      res.setHeader = (name, value) => setHeader(name, String(name).toLowerCase() === 'content-type' ? userinfoContentType : value);
    }
    res.on('finish', () => {
      call.status = res.statusCode;
      call.responseType = res.getHeader('content-type');
      call.responseBody = Buffer.concat(chunks).toString('utf8');
    });

    const dispatch = () => {
      if (url.pathname.startsWith('/interaction/')) {
        interaction(req, res, url).catch((e) => {
          errors.push({ event: 'interaction', message: e.message });
          if (!res.headersSent) sendHtml(res, 500, `<!DOCTYPE html><pre>${escapeHtml(e.message)}</pre>`);
        });
        return;
      }
      if (mountPath && !(url.pathname === mountPath || url.pathname.startsWith(`${mountPath}/`))) {
        sendHtml(res, 404, '<!DOCTYPE html><p>introuvable</p>');
        return;
      }
      if (mountPath) {
        // Mounted like ProConnect's /api/v2: oidc-provider derives its URLs from originalUrl minus url.
        req.originalUrl = req.url;
        req.url = req.url.slice(mountPath.length) || '/';
      }
      callback(req, res);
    };

    if (req.method === 'POST') {
      // Read the body once, keep it, and hand it to oidc-provider (it uses req.body when the stream is consumed).
      readBody(req).then((body) => {
        call.body = body;
        req.body = body;
        if (strictAuthMethod && wrongAuthMethod(req, body)) {
          const answer = JSON.stringify({ error: 'invalid_client', error_description: 'client authentication failed' });
          res.writeHead(401, { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store' });
          res.end(answer);
          return;
        }
        dispatch();
      }, (e) => {
        errors.push({ event: 'body', message: e.message });
        res.destroy();
      });
      return;
    }
    dispatch();
  };
  server.on('request', onRequest);
  front?.on('request', onRequest);

  const discovery = await getJson(`${issuer}/.well-known/openid-configuration`, tls?.ca);
  calls.length = 0;

  return {
    label,
    issuer,
    origin,
    frontOrigin,
    port,
    clientId,
    clientSecret,
    calls,
    issued,
    errors,
    interactions,
    discovery,
    provider,
    /** Requests received on a path (full path, mount included), e.g. pc.callsTo('/api/v2/token'). */
    callsTo(path) {
      return calls.filter((c) => c.path === path);
    },
    /** Requests received on the endpoint named in discovery, e.g. pc.callsToEndpoint('token_endpoint'). */
    callsToEndpoint(name) {
      const path = new URL(discovery[name]).pathname;
      return calls.filter((c) => c.path === path);
    },
    stop: stopper(...[server, front].filter(Boolean)),
  };
}

/** ProConnect-like: issuer …/api/v2, ES256 id_token and userinfo JWT by default, client_secret_post only. */
export function startProConnectProvider(opts) {
  return startFederationProvider({
    label: 'ProConnect (test)',
    mountPath: '/api/v2',
    routes: {
      authorization: '/authorize',
      token: '/token',
      userinfo: '/userinfo',
      jwks: '/jwks',
      end_session: '/session/end',
      introspection: '/token/introspection',
      revocation: '/token/revocation',
    },
    authMethod: 'client_secret_post',
    idTokenAlg: 'ES256',
    userinfoAlg: 'ES256',
    accounts: PROCONNECT_ACCOUNTS,
    scopes: PROCONNECT_SCOPES,
    acrValues: PROCONNECT_ACR_VALUES,
    extraParams: ['idp_hint', 'siret_hint'],
    cookiePrefix: 'pc',
    strictAuthMethod: true,
    ...opts,
  });
}

/** NC Connect v3-like (Keycloak realm nc-connect): RS256, plain JSON userinfo, client_secret_basic by default. */
export function startNcConnectProvider(opts) {
  return startFederationProvider({
    label: 'NC Connect (test)',
    mountPath: '/v3/realms/nc-connect',
    routes: {
      authorization: '/protocol/openid-connect/auth',
      token: '/protocol/openid-connect/token',
      userinfo: '/protocol/openid-connect/userinfo',
      jwks: '/protocol/openid-connect/certs',
      end_session: '/protocol/openid-connect/logout',
    },
    authMethod: 'client_secret_basic',
    idTokenAlg: 'RS256',
    accounts: NC_ACCOUNTS,
    scopes: NC_SCOPES,
    cookiePrefix: 'nc',
    ...opts,
  });
}

/** NC Connect v2-like (legacy server): issuer at the root, /v2/… endpoints, nested userinfo. */
export function startNcConnectV2Provider(opts) {
  return startFederationProvider({
    label: 'NC Connect v2 (test)',
    mountPath: '',
    routes: {
      authorization: '/v2/oauth/authorize',
      token: '/v2/token',
      userinfo: '/v2/userinfo',
      jwks: '/v2/jwks',
      end_session: '/v2/logout',
    },
    authMethod: 'client_secret_basic',
    idTokenAlg: 'RS256',
    accounts: NC_V2_ACCOUNTS,
    scopes: NC_V2_SCOPES,
    cookiePrefix: 'ncv2',
    ...opts,
  });
}
