// What the real-browser tests (tests/browser/) need: Debian's Chromium driven by npm's `playwright-core`, a
// ProConnect-like OpenID provider, and an upstream that renders an HTML page of what it received. Passerelle is
// started with passerelle.mjs's launchPasserelle (it survives the binary being rebuilt while the tests run).
//
//   const availability = chromiumAvailability();   // { present, skip, failure }: skip outside CI, fail in CI
//   const browser = await launchChromium(t);        // closed by t.after
//   const pc = await startProConnectLikeProvider({ redirectUris, postLogoutRedirectUris });
//   pc.issuer                                       // "http://127.0.0.1:PORT/api/v2"
//   const app = await startHtmlUpstream();          // app.requests, app.last()
//   const p = await launchPasserelle(t, toml, { adminPort });   // from passerelle.mjs
//
// Browsers are never downloaded: the executable is /usr/bin/chromium (apt-get install chromium; scripts/test.sh
// does it), or $CHROMIUM_PATH. Never `npx playwright install`.

import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import http from 'node:http';

import Provider from 'oidc-provider';

import { escapeHtml, listen, stopper } from './http.mjs';
import {
  clientRegistration, filterProviderNotices, findAccountIn, grantWhatIsAsked, passLoginAsSub, privateJwk,
  recordErrors, renderErrorInto,
} from './provider-kit.mjs';
import { startUpstream } from './upstream.mjs';

export const CHROMIUM_PATH = process.env.CHROMIUM_PATH || '/usr/bin/chromium';

// Headless, no sandbox (root in a container), and nothing that would call out to the Internet on its own.
// `--headless` is added by playwright itself (headless: true).
export const CHROMIUM_ARGS = Object.freeze([
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--disable-dev-shm-usage',
]);

/** True when running in CI (CI=true, or any non-empty value other than false/0). */
export function inCi() {
  const v = (process.env.CI || '').trim().toLowerCase();
  return v !== '' && v !== 'false' && v !== '0';
}

/**
 * Is the browser there? Outside CI a missing Chromium skips the browser tests with a message; in CI it must not
 * skip: the test runs and fails with `failure`.
 * @returns {{ present: boolean, skip: string | false, failure: string | undefined }}
 */
export function chromiumAvailability() {
  const present = existsSync(CHROMIUM_PATH);
  if (present) return { present, skip: false, failure: undefined };
  const hint = 'install it with `apt-get install -y chromium` (scripts/test.sh does), or set CHROMIUM_PATH';
  if (inCi()) {
    return {
      present,
      skip: false,
      failure: `Chromium not found at ${CHROMIUM_PATH}, and CI=${process.env.CI}: the browser test must run in CI; ${hint}`,
    };
  }
  return { present, skip: `Chromium not found at ${CHROMIUM_PATH} (not in CI, so skipped): ${hint}`, failure: undefined };
}

/** Launch headless Chromium (a fresh temporary profile of playwright's own); closed by t.after. */
export async function launchChromium(t) {
  let chromium;
  try {
    ({ chromium } = await import('playwright-core'));
  } catch (e) {
    throw new Error(`playwright-core is not installed (run tests/run-integration.sh, which runs npm ci): ${e.message}`);
  }
  const browser = await chromium.launch({
    executablePath: CHROMIUM_PATH,
    headless: true,
    args: [...CHROMIUM_ARGS],
    timeout: 60_000,
  });
  t.after(() => browser.close());
  return browser;
}

// ---------------------------------------------------------------------------------------------------------------
// A ProConnect-like provider: oidc-provider mounted under /api/v2 (issuer http://127.0.0.1:PORT/api/v2, like
// https://fca.integ01.dev-agentconnect.fr/api/v2), ProConnect's endpoint paths (/authorize, /token, /userinfo,
// /jwks, /session/end), client_secret_post, ES256 id_token and ES256-signed userinfo (application/jwt), the
// `claims` parameter, acr values eidas1..3, and ProConnect's scopes, each releasing the claim of its name.

export const PROCONNECT_PREFIX = '/api/v2';

// Test identities of the ProConnect-like provider, keyed by the login typed on its form.
export const PROCONNECT_ACCOUNTS = Object.freeze({
  angela: Object.freeze({
    sub: '7f3c9a1e5b2d4c68a0e1f2d3c4b5a697',
    given_name: 'Angela Claire',
    usual_name: 'Dubois',
    email: 'angela.dubois@interieur.gouv.fr',
    uid: '1',
    siret: '21340126800130',
    siren: '213401268',
    idp_id: 'fia1v2',
    organizational_unit: 'Direction du numérique',
    belonging_population: 'agent',
    phone: '0123456789',
  }),
});

// ProConnect's scopes, each releasing the claim of the same name (`openid` → sub).
export const PROCONNECT_SCOPES = Object.freeze({
  openid: ['sub'],
  given_name: ['given_name'],
  usual_name: ['usual_name'],
  email: ['email'],
  uid: ['uid'],
  siret: ['siret'],
  siren: ['siren'],
  idp_id: ['idp_id'],
  organizational_unit: ['organizational_unit'],
  belonging_population: ['belonging_population'],
  phone: ['phone'],
});

/**
 * @param {object} opts
 * @param {string[]} opts.redirectUris
 * @param {string[]} [opts.postLogoutRedirectUris]
 * @param {string} [opts.clientId]
 * @param {string} [opts.clientSecret]
 */
export async function startProConnectLikeProvider(opts) {
  const {
    redirectUris,
    postLogoutRedirectUris = [],
    clientId = `proconnect-client-${randomBytes(4).toString('hex')}`,
    clientSecret = randomBytes(32).toString('base64url'),
    accounts = PROCONNECT_ACCOUNTS,
  } = opts;
  filterProviderNotices();
  const calls = [];
  const errors = [];

  const server = http.createServer();
  const port = await listen(server);
  const origin = `http://127.0.0.1:${port}`;
  const issuer = `${origin}${PROCONNECT_PREFIX}`;

  const ec = privateJwk('ec', { namedCurve: 'P-256' });
  const provider = new Provider(issuer, {
    clients: [clientRegistration({
      clientId,
      clientSecret,
      redirectUris,
      postLogoutRedirectUris,
      authMethod: 'client_secret_post',
      idTokenAlg: 'ES256',
      userinfoAlg: 'ES256',
    })],
    jwks: { keys: [{ ...ec, kid: `pc-es256-${randomBytes(4).toString('hex')}`, use: 'sig', alg: 'ES256' }] },
    cookies: { keys: [randomBytes(32).toString('hex')] },
    claims: PROCONNECT_SCOPES,
    acrValues: ['eidas1', 'eidas2', 'eidas3'],
    routes: {
      authorization: '/authorize',
      token: '/token',
      userinfo: '/userinfo',
      jwks: '/jwks',
      end_session: '/session/end',
    },
    findAccount: findAccountIn(accounts),
    // ProConnect shows no consent screen: grant what the client asks for.
    loadExistingGrant: grantWhatIsAsked,
    pkce: { required: () => true },
    enabledJWA: {
      idTokenSigningAlgValues: ['ES256'],
      userinfoSigningAlgValues: ['ES256'],
    },
    features: {
      devInteractions: { enabled: true },
      rpInitiatedLogout: { enabled: true },
      jwtUserinfo: { enabled: true },
      claimsParameter: { enabled: true },
    },
    renderError: renderErrorInto(errors),
  });
  recordErrors(provider, errors);

  const callback = provider.callback();
  server.on('request', (req, res) => {
    const url = new URL(req.url, origin);
    const call = { method: req.method, path: url.pathname, url: req.url, query: Object.fromEntries(url.searchParams), status: undefined };
    calls.push(call);
    res.on('finish', () => { call.status = res.statusCode; });
    // Mounted under /api/v2: oidc-provider sees the path below the mount point and finds the mount path again
    // from req.originalUrl when it writes its own URLs (login form action, redirects).
    if (url.pathname !== PROCONNECT_PREFIX && !url.pathname.startsWith(`${PROCONNECT_PREFIX}/`)) {
      res.writeHead(404, { 'content-type': 'text/plain' });
      res.end('not under /api/v2');
      return;
    }
    req.originalUrl = req.url;
    req.url = req.url.slice(PROCONNECT_PREFIX.length) || '/';
    if (req.url.startsWith('?')) req.url = `/${req.url}`;
    // devInteractions takes the typed `login` as the account id: map it to the account's sub.
    if (passLoginAsSub(req, res, url.pathname.slice(PROCONNECT_PREFIX.length), accounts, callback)) return;
    callback(req, res);
  });

  return {
    issuer,
    port,
    clientId,
    clientSecret,
    calls,
    errors,
    provider,
    callsTo(p) { return calls.filter((c) => c.path === p); },
    stop: stopper(server),
  };
}

// ---------------------------------------------------------------------------------------------------------------
// The application behind Passerelle, as a person sees it: an HTML page listing the identity headers received.

/** The answer of startHtmlUpstream: a page listing the X-Auth-* headers received (favicon: 204). */
function identityPage(req, res) {
  if (req.url === '/favicon.ico') {
    res.writeHead(204);
    res.end();
    return;
  }
  const rows = [];
  for (let i = 0; i < req.rawHeaders.length; i += 2) {
    if (/^x-auth-/i.test(req.rawHeaders[i])) {
      rows.push(`<tr><th scope="row">${escapeHtml(req.rawHeaders[i])}</th><td data-header="${escapeHtml(req.rawHeaders[i].toLowerCase())}">${escapeHtml(req.rawHeaders[i + 1])}</td></tr>`);
    }
  }
  const body = `<!DOCTYPE html>
<html lang="fr"><head><meta charset="utf-8"><title>Application de test</title>
<style>body{font-family:Arial,sans-serif;margin:2rem;color:#161616}table{border-collapse:collapse}th,td{border:1px solid #ccc;padding:.3rem .6rem;text-align:left}</style>
</head><body>
<h1>Application de test</h1>
<p>Requête reçue : <code id="request">${escapeHtml(`${req.method} ${req.url}`)}</code></p>
<table id="identity"><caption>En-têtes d'identité reçus de Passerelle</caption>
<tr><th scope="col">En-tête</th><th scope="col">Valeur</th></tr>
${rows.join('\n')}
</table>
</body></html>`;
  res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

/** The recording upstream of upstream.mjs (app.requests, app.last()), answering identityPage. */
export function startHtmlUpstream() {
  return startUpstream({ answer: identityPage });
}
