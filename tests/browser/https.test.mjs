// Chromium through the sign-in flow over https (issue 13): Passerelle with `[server] tls` offers h2 and http/1.1 by
// ALPN; a real browser signs in at the provider, lands back on the app over HTTP/2, and signs out.
//
// World, all on 127.0.0.1: Passerelle on https://127.0.0.1:PORT (public_url the same, certificate from a throw-away
// CA made by makePki), one required route "/" to an HTML upstream that shows and records the identity headers, and
// an oidc-provider (plain http, its devInteractions login form) whose redirect URIs are on the https base.
//
// Certificate trust: Chromium is launched with --ignore-certificate-errors-spki-list=<base64 SHA-256 of the server
// key's SubjectPublicKeyInfo>, computed here with node:crypto. Only that one key is accepted (any other certificate
// error still fails); the browser context does NOT set ignoreHTTPSErrors. The browser is this test's own.
//
// Screenshot: tests/output/browser-h2-app.png. Passerelle's output: tests/output/browser_h2.log.
//
// Without /usr/bin/chromium (or $CHROMIUM_PATH) the test is skipped with a message, except in CI (CI=true),
// where it fails (same policy as signin.test.mjs).
//
// Run: tests/node_modules/.bin/node --test --test-reporter=spec tests/browser/https.test.mjs

import assert from 'node:assert/strict';
import { createHash, createPublicKey } from 'node:crypto';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { test } from 'node:test';

import { CHROMIUM_ARGS, CHROMIUM_PATH, chromiumAvailability, startHtmlUpstream } from '../support/browser.mjs';
import { stopAfter } from '../support/http.mjs';
import { launchPasserelle, OUTPUT_DIR } from '../support/passerelle.mjs';
import { makePki } from '../support/pki.mjs';
import { ACCOUNTS, startProvider } from '../support/provider.mjs';
import { addresses, configToml, PREFIX, providerToml, q, tv } from '../support/stack.mjs';
import { headerValues } from '../support/upstream.mjs';

const availability = chromiumAvailability();
const { alice } = ACCOUNTS;
const squash = (s) => String(s ?? '').replace(/\s+/g, ' ').trim();

/** base64(SHA-256(SubjectPublicKeyInfo DER)) of a PEM private key: the form --ignore-certificate-errors-spki-list takes. */
function spkiHash(keyPem) {
  const der = createPublicKey(keyPem).export({ type: 'spki', format: 'der' });
  return createHash('sha256').update(der).digest('base64');
}

/** Headless Chromium as launchChromium (browser.mjs) starts it, plus `extraArgs`; closed by t.after. */
async function launchChromiumWith(t, extraArgs) {
  let chromium;
  try {
    ({ chromium } = await import('playwright-core'));
  } catch (e) {
    throw new Error(`playwright-core is not installed (run tests/run-integration.sh, which runs npm ci): ${e.message}`);
  }
  // playwright always passes its own --user-data-dir, which the SPKI switch requires to take effect.
  const browser = await chromium.launch({
    executablePath: CHROMIUM_PATH,
    headless: true,
    args: [...CHROMIUM_ARGS, ...extraArgs],
    timeout: 60_000,
  });
  t.after(() => browser.close());
  return browser;
}

test('(browser-h2) Chromium over https: /app → provider login as alice → back on /app over h2 with X-Auth-Sub; Secure HttpOnly session cookie; logout ends it', {
  skip: availability.skip,
  timeout: 120_000,
}, async (t) => {
  if (availability.failure) assert.fail(availability.failure);
  await mkdir(OUTPUT_DIR, { recursive: true });

  const pki = await makePki(t);
  assert.ok(pki, 'openssl is installed by the test script');
  const a = await addresses();
  const base = `https://127.0.0.1:${a.port}`;
  const op = await stopAfter(t, startProvider({
    redirectUris: [`${base}${PREFIX}/callback`],
    postLogoutRedirectUris: [`${base}${PREFIX}/logged-out`],
  }));
  const app = await stopAfter(t, startHtmlUpstream());
  const toml = configToml({
    writtenBy: 'tests/browser/https.test.mjs',
    port: a.port,
    adminPort: a.adminPort,
    publicUrl: base,
    extraServer: `tls = ${tv({ cert: path.join(pki.dir, 'server.pem'), key: path.join(pki.dir, 'server.key') })}\n`,
    providers: providerToml('op', 'oidc', op, { scopes: ['openid', 'email'] }),
    routes: `[[route]]
path = "/"
upstream = ${q(app.url)}
auth = "required"
providers = ["op"]
scopes = ["email"]
[route.headers]
"X-Auth-Sub" = "sub"
"X-Auth-Email" = "email"
`,
  });
  const passerelle = await launchPasserelle(t, toml, { adminPort: a.adminPort, logName: 'browser_h2' });

  const spki = spkiHash(pki.key);
  const browser = await launchChromiumWith(t, [`--ignore-certificate-errors-spki-list=${spki}`]);
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 }, locale: 'fr-FR' });
  const page = await context.newPage();
  page.setDefaultTimeout(30_000);
  const diag = () => `\nat ${page.url()}\n--- passerelle (tail):\n${passerelle.logs().slice(-2000)}\n--- provider errors: ${JSON.stringify(op.errors)}`;
  const atProviderLogin = (u) => u.origin === op.issuer && u.pathname.startsWith('/interaction/');

  // 1. /app without a session: a navigation, sent to the provider's login form (one provider: straight there).
  const target = `${base}/app`;
  const first = await page.goto(target);
  assert.ok(first, 'a navigation response');
  await page.waitForURL(atProviderLogin).catch(() => assert.fail(`not sent to the provider's login form${diag()}`));
  assert.equal(app.requests.length, 0, 'nothing reached the application before sign-in');
  const authorize = op.callsTo('/auth');
  assert.equal(authorize.length, 1, `one authorization request${diag()}`);
  const redirectUri = new URL(authorize[0].url, op.issuer).searchParams.get('redirect_uri');
  assert.equal(redirectUri, `${base}${PREFIX}/callback`, 'the redirect URI is on the https base');

  // 2. The provider's login form: alice.
  await page.locator('input[name="login"]').fill('alice');
  await page.locator('input[name="password"]').fill('any');
  const appResponse = page.waitForResponse((r) => r.url() === target && r.status() === 200);
  await Promise.all([
    page.waitForURL(target, { waitUntil: 'load' }).catch(() => assert.fail(`did not come back to ${target}${diag()}`)),
    page.locator('form button[type="submit"]').click(),
  ]);
  assert.equal(page.url(), target, 'back on the URL first asked for');
  await page.screenshot({ path: path.join(OUTPUT_DIR, 'browser-h2-app.png'), fullPage: true });

  // 3. The protocol Chromium spoke to Passerelle for this page, and the TLS it saw.
  const nav = await page.evaluate(() => {
    const e = performance.getEntriesByType('navigation')[0];
    return { nextHopProtocol: e.nextHopProtocol, name: e.name };
  });
  assert.equal(nav.name, target);
  assert.equal(nav.nextHopProtocol, 'h2', `Chromium fetched ${target} over ${nav.nextHopProtocol}`);
  const tls = await (await appResponse).securityDetails();
  assert.equal(tls?.issuer, 'Passerelle integration test CA', `the certificate Chromium accepted: ${JSON.stringify(tls)}`);
  assert.equal(tls?.protocol, 'TLS 1.3', `TLS version: ${JSON.stringify(tls)}`);
  assert.equal(await page.evaluate(() => window.isSecureContext), true, 'the app page is a secure context');

  // 4. The upstream's page shows alice, and its recorded request carries her identity headers.
  assert.equal(squash(await page.locator('h1').innerText()), 'Application de test');
  assert.equal(squash(await page.locator('#request').innerText()), 'GET /app');
  assert.equal(squash(await page.locator('td[data-header="x-auth-sub"]').innerText()), alice.sub);
  const atApp = app.requests.filter((r) => r.url === '/app');
  assert.equal(atApp.length, 1, `the upstream received /app once after sign-in: ${JSON.stringify(app.requests.map((r) => r.url))}`);
  assert.deepEqual(headerValues(atApp[0].rawHeaders, 'X-Auth-Sub'), [alice.sub]);
  assert.deepEqual(headerValues(atApp[0].rawHeaders, 'X-Auth-Email'), [alice.email]);
  assert.deepEqual(headerValues(atApp[0].rawHeaders, 'X-Forwarded-Proto'), ['https']);
  assert.ok(!/passerelle/i.test(atApp[0].headers.cookie || ''), 'Passerelle\'s own cookies are not forwarded');

  // 5. The session cookie: Secure and HttpOnly.
  const cookies = await context.cookies(base);
  const session = cookies.find((c) => c.name === '__Host-passerelle' || c.name === 'passerelle');
  assert.ok(session, `a session cookie among ${JSON.stringify(cookies.map((c) => c.name))}`);
  assert.equal(session.secure, true, `the session cookie is Secure: ${JSON.stringify(session)}`);
  assert.equal(session.httpOnly, true, `the session cookie is HttpOnly: ${JSON.stringify(session)}`);
  t.diagnostic(`session cookie ${session.name}: secure=${session.secure} httpOnly=${session.httpOnly} sameSite=${session.sameSite} path=${session.path}`);

  // 6. Logout: Passerelle ends the session and sends the browser to the provider's end-session page; confirm there,
  //    then back on Passerelle's logged-out page.
  await page.goto(`${base}${PREFIX}/logout`);
  await page.waitForURL((u) => u.origin === op.issuer).catch(() => assert.fail(`logout did not go to the provider${diag()}`));
  const confirm = page.locator('button[name="logout"][value="yes"]');
  await confirm.waitFor();
  await Promise.all([
    page.waitForURL((u) => u.origin === base, { waitUntil: 'load' }).catch(() => assert.fail(`not back at Passerelle after the provider's logout${diag()}`)),
    confirm.click(),
  ]);
  assert.equal(new URL(page.url()).pathname, `${PREFIX}/logged-out`, `after logout: ${page.url()}`);
  const after = await context.cookies(base);
  assert.deepEqual(after.filter((c) => c.name === session.name && c.value), [], `the session cookie is gone: ${JSON.stringify(after)}`);

  // 7. /app again: back to the provider's login form, and nothing more reached the app.
  const before = app.requests.length;
  await page.goto(target);
  await page.waitForURL(atProviderLogin).catch(() => assert.fail(`/app after logout did not go to the provider's login${diag()}`));
  await page.locator('input[name="login"]').waitFor();
  assert.equal(app.requests.length, before, 'no request reached the app after logout');
});
