// What the real-browser tests (tests/browser/) need: Debian's Chromium driven by npm's `playwright-core`, a
// ProConnect-like OpenID provider, an upstream that renders an HTML page of what it received, and a Passerelle
// launcher that survives the binary being rebuilt while the tests run.
//
//   const availability = chromiumAvailability();   // { present, skip, failure }: skip outside CI, fail in CI
//   const browser = await launchChromium(t);        // closed by t.after
//   const pc = await startProConnectLikeProvider({ redirectUris, postLogoutRedirectUris });
//   pc.issuer                                       // "http://127.0.0.1:PORT/api/v2"
//   const app = await startHtmlUpstream();          // app.requests, app.last()
//   const p = await launchPasserelle(t, toml, { adminPort });
//
// Browsers are never downloaded: the executable is /usr/bin/chromium (apt-get install chromium; scripts/test.sh
// does it), or $CHROMIUM_PATH. Never `npx playwright install`.

import { spawn } from 'node:child_process';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';

import Provider from 'oidc-provider';

import { PASSERELLE_BIN, sessionKey } from './passerelle.mjs';
import { OUTPUT_DIR } from './stack.mjs';

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

const pause = (ms) => new Promise((r) => setTimeout(r, ms));

// oidc-provider prints development notices through console.* ("oidc-provider WARNING: …") when the first
// Provider is built; they are expected here (devInteractions, in-memory adapter) and only clutter the output.
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
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const { port } = server.address();
  const origin = `http://127.0.0.1:${port}`;
  const issuer = `${origin}${PROCONNECT_PREFIX}`;

  const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ format: 'jwk' });
  const provider = new Provider(issuer, {
    clients: [{
      client_id: clientId,
      client_secret: clientSecret,
      redirect_uris: redirectUris,
      post_logout_redirect_uris: postLogoutRedirectUris,
      response_types: ['code'],
      grant_types: ['authorization_code'],
      token_endpoint_auth_method: 'client_secret_post',
      id_token_signed_response_alg: 'ES256',
      userinfo_signed_response_alg: 'ES256',
    }],
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
    async findAccount(_ctx, id) {
      const claims = Object.values(accounts).find((a) => a.sub === id);
      if (!claims) return undefined;
      return { accountId: claims.sub, async claims() { return { ...claims }; } };
    },
    // ProConnect shows no consent screen: grant what the client asks for.
    async loadExistingGrant(ctx) {
      const { oidc } = ctx;
      const grantId = oidc.result?.consent?.grantId || oidc.session.grantIdFor(oidc.client.clientId);
      let grant = grantId ? await oidc.provider.Grant.find(grantId) : undefined;
      if (!grant) grant = new oidc.provider.Grant({ clientId: oidc.client.clientId, accountId: oidc.session.accountId });
      grant.addOIDCScope([...oidc.requestParamScopes].join(' '));
      const claims = [...oidc.requestParamClaims];
      if (claims.length) grant.addOIDCClaims(claims);
      await grant.save();
      return grant;
    },
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
    // devInteractions takes the typed `login` as the account id: map it to the account's sub (see provider.mjs).
    if (req.method === 'POST' && /^\/interaction\/[^/]+$/.test(url.pathname.slice(PROCONNECT_PREFIX.length))) {
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

  let stopped = false;
  return {
    issuer,
    port,
    clientId,
    clientSecret,
    calls,
    errors,
    provider,
    callsTo(p) { return calls.filter((c) => c.path === p); },
    async stop() {
      if (stopped) return;
      stopped = true;
      await new Promise((resolve) => { server.close(() => resolve()); server.closeAllConnections(); });
    },
  };
}

// ---------------------------------------------------------------------------------------------------------------
// The application behind Passerelle, as a person sees it: an HTML page listing the identity headers received.

function escapeHtml(s) {
  return String(s).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]);
}

export async function startHtmlUpstream() {
  const requests = [];
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      requests.push({ method: req.method, url: req.url, rawHeaders: [...req.rawHeaders], headers: { ...req.headers } });
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
    });
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const { port } = server.address();
  let stopped = false;
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    requests,
    last() { return requests[requests.length - 1]; },
    async stop() {
      if (stopped) return;
      stopped = true;
      await new Promise((resolve) => { server.close(() => resolve()); server.closeAllConnections(); });
    },
  };
}

// ---------------------------------------------------------------------------------------------------------------
// Passerelle, tolerant of the binary being rebuilt under the tests.

/** Wait (bounded) until the binary is there: it may be being rebuilt. */
export async function waitForBinary(timeoutMs = 300_000) {
  const deadline = Date.now() + timeoutMs;
  while (!existsSync(PASSERELLE_BIN)) {
    if (Date.now() > deadline) throw new Error(`Passerelle binary not found at ${PASSERELLE_BIN} after ${timeoutMs} ms`);
    await pause(250); // polling for the file to reappear
  }
}

function httpGetStatus(url, timeoutMs = 1000) {
  return new Promise((resolve) => {
    const req = http.get(url, { agent: false, timeout: timeoutMs }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode));
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(undefined));
  });
}

/**
 * `passerelle run --config FILE` with this TOML; waits for admin /ready; stopped (SIGINT) by t.after, which keeps
 * the TOML and the output in tests/output/<logName>.log.
 */
export async function launchPasserelle(t, toml, { adminPort, logName, env = {}, readyTimeoutMs = 30_000 }) {
  const dir = await mkdtemp(path.join(tmpdir(), 'passerelle-browser-'));
  const configFile = path.join(dir, 'config.toml');
  await writeFile(configFile, toml, { mode: 0o600 });
  const key = sessionKey();
  let output = '';
  let child;
  let exited = null;
  let exitPromise;
  for (let attempt = 0; ; attempt++) {
    await waitForBinary();
    exited = null;
    let spawnError;
    child = spawn(PASSERELLE_BIN, ['run', '--config', configFile], {
      env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'info', PASSERELLE_KEY: key, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
      cwd: dir,
    });
    child.stdout.on('data', (d) => { output += d; });
    child.stderr.on('data', (d) => { output += d; });
    exitPromise = new Promise((resolve) => {
      child.on('close', (code, signal) => { exited = { code, signal }; resolve(exited); });
    });
    child.on('error', (e) => { spawnError = e; output += `\n[spawn error] ${e.message}\n`; });
    await new Promise((r) => { child.once('spawn', r); child.once('error', r); });
    if (!spawnError) break;
    // ENOENT / ETXTBSY while the binary is being replaced: retry a few times.
    if (attempt >= 5) throw new Error(`cannot start ${PASSERELLE_BIN}: ${spawnError.message}`);
    await pause(1000); // back-off before retrying the spawn
  }

  let stopped = false;
  async function stop() {
    if (stopped) return exited;
    stopped = true;
    if (!exited) {
      child.kill('SIGINT');
      const timer = setTimeout(() => { if (!exited) child.kill('SIGKILL'); }, 5000);
      await exitPromise;
      clearTimeout(timer);
    }
    await rm(dir, { recursive: true, force: true });
    return exited;
  }
  t.after(async () => {
    await stop();
    await mkdir(OUTPUT_DIR, { recursive: true });
    const name = logName || `browser_${(t.name || 'scenario').replace(/[^A-Za-z0-9._-]+/g, '_').slice(0, 110)}`;
    await writeFile(path.join(OUTPUT_DIR, `${name}.log`), `${toml}\n----- passerelle output -----\n${output}`);
  });

  const readyUrl = `http://127.0.0.1:${adminPort}/ready`;
  const deadline = Date.now() + readyTimeoutMs;
  for (;;) {
    if (exited) throw new Error(`passerelle exited before ready (${JSON.stringify(exited)}):\n${output}`);
    if ((await httpGetStatus(readyUrl)) === 200) break;
    if (Date.now() > deadline) throw new Error(`passerelle not ready after ${readyTimeoutMs} ms at ${readyUrl}:\n${output}`);
    await pause(50); // polling for readiness
  }
  return { logs: () => output, key, stop, exited: () => exited, adminUrl: `http://127.0.0.1:${adminPort}` };
}
