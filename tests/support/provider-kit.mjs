// What the test OpenID providers have in common (provider.mjs, federation-provider.mjs and browser.mjs's
// ProConnect-like one, all built on the real `oidc-provider`): quiet console, signing keys, the client they
// register, implicit consent, and the recording of errors and of the codes and tokens issued.

import { createPrivateKey, generateKeyPairSync, randomBytes } from 'node:crypto';

import { readBody } from './http.mjs';

// oidc-provider prints development notices through console.* ("oidc-provider WARNING: …") when the first Provider
// is built; they are expected here (devInteractions, in-memory adapter, default pages) and only clutter the output.
let consoleFiltered = false;
export function filterProviderNotices() {
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

/**
 * A fresh private key as a JWK. Not `generateKeyPairSync(…).privateKey.export({format:'jwk'})`: on Node 20.20 that
 * can deadlock (about once in 20 runs: KeyObjectHandle::ExportJWK → GC → ~KeyGenJob → a mutex the export holds).
 * The key is PEM-encoded inside the generation job and re-imported, so the KeyObject shares nothing with the job.
 */
export function privateJwk(type, options) {
  const { privateKey } = generateKeyPairSync(type, {
    ...options,
    privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
    publicKeyEncoding: { type: 'spki', format: 'pem' },
  });
  return createPrivateKey(privateKey).export({ format: 'jwk' });
}

/** Fresh RS256 and ES256 signing keys (private JWKs with a random kid). */
export function signingKeys() {
  const rsa = privateJwk('rsa', { modulusLength: 2048 });
  const ec = privateJwk('ec', { namedCurve: 'P-256' });
  return [
    { ...rsa, kid: `rsa-${randomBytes(4).toString('hex')}`, use: 'sig', alg: 'RS256' },
    { ...ec, kid: `ec-${randomBytes(4).toString('hex')}`, use: 'sig', alg: 'ES256' },
  ];
}

/** The one client (the Passerelle under test) a provider registers; `userinfoAlg` absent: JSON userinfo. */
export function clientRegistration({
  clientId, clientSecret, redirectUris, postLogoutRedirectUris, authMethod, idTokenAlg, userinfoAlg, backchannelLogoutUri,
}) {
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
  if (userinfoAlg) client.userinfo_signed_response_alg = userinfoAlg;
  if (backchannelLogoutUri) {
    client.backchannel_logout_uri = backchannelLogoutUri;
    client.backchannel_logout_session_required = true; // logout tokens carry `sid`
  }
  return client;
}

/**
 * oidc-provider's `loadExistingGrant` for an implicit consent (as at the federations): grant whatever OIDC scopes
 * and claims the client asks for.
 */
export async function grantWhatIsAsked(ctx) {
  const { oidc } = ctx;
  const grantId = oidc.result?.consent?.grantId || oidc.session.grantIdFor(oidc.client.clientId);
  let grant = grantId ? await oidc.provider.Grant.find(grantId) : undefined;
  if (!grant) grant = new oidc.provider.Grant({ clientId: oidc.client.clientId, accountId: oidc.session.accountId });
  grant.addOIDCScope([...oidc.requestParamScopes].join(' '));
  const claims = [...oidc.requestParamClaims];
  if (claims.length) grant.addOIDCClaims(claims);
  await grant.save();
  return grant;
}

/** oidc-provider's `findAccount` over accounts whose value is the claims (sub included); `id` is the sub. */
export function findAccountIn(accounts) {
  return async function findAccount(_ctx, id) {
    const claims = Object.values(accounts).find((a) => a.sub === id);
    if (!claims) return undefined;
    return { accountId: claims.sub, async claims() { return { ...claims }; } };
  };
}

/** oidc-provider's `renderError`: a bare HTML page; the error is kept in `errors` for diagnosis. */
export function renderErrorInto(errors) {
  return async function renderError(ctx, out, error) {
    ctx.type = 'html';
    ctx.body = `<!DOCTYPE html><html><body><h1>oidc-provider error</h1><pre>${JSON.stringify(out)
      .replace(/</g, '&lt;')}</pre></body></html>`;
    if (error) errors.push(error);
  };
}

export const ERROR_EVENTS = Object.freeze(['server_error', 'grant.error', 'authorization.error', 'userinfo.error',
  'end_session.error', 'jwks.error', 'discovery.error', 'interaction.error']);

/** Push every error the provider reports on these events into `errors`, as { event, message, detail }. */
export function recordErrors(provider, errors, events = ERROR_EVENTS) {
  for (const event of events) {
    provider.on(event, (_ctx, err) => errors.push({ event, message: err?.message, detail: err?.error_description }));
  }
}

/** Push every code and token the provider issues into `issued`, as { type, value }. */
export function recordIssued(provider, issued) {
  provider.on('authorization.success', (_ctx, out) => {
    if (out?.code) issued.push({ type: 'code', value: out.code });
  });
  provider.on('grant.success', (ctx) => {
    const body = ctx.body || {};
    for (const type of ['access_token', 'id_token', 'refresh_token']) {
      if (body[type]) issued.push({ type, value: body[type] });
    }
  });
}

/**
 * devInteractions takes the typed `login` as the account id, and oidc-provider uses the account id as `sub`. So that
 * accounts can have a sub distinct from their login: when `req` posts the login form (`path`: below the issuer),
 * read the form, map login -> sub, and hand oidc-provider this already-parsed body (req.body) through `callback`.
 * Returns whether it took the request.
 */
export function passLoginAsSub(req, res, path, accounts, callback) {
  if (req.method !== 'POST' || !/^\/interaction\/[^/]+$/.test(path)) return false;
  readBody(req).then((body) => {
    const form = Object.fromEntries(new URLSearchParams(body));
    if (form.login && accounts[form.login]) form.login = accounts[form.login].sub;
    req.body = form;
    callback(req, res);
  }, () => res.destroy());
  return true;
}
