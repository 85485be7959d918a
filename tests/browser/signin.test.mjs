// A person in a real browser: Debian's Chromium, driven by playwright-core, signs in through Passerelle with a
// ProConnect-like provider and lands on the deep link they first asked for.
//
// World, all on 127.0.0.1: a ProConnect-like oidc-provider mounted under /api/v2 (ES256 id_token, ES256-signed
// userinfo, client_secret_post), a second plain oidc provider (so the sign-in page offers two choices), an HTML
// upstream that shows and records the identity headers, and the Passerelle binary in front of it.
//
// Screenshots (looked at by a person, kept for diagnosis): tests/output/signin-page.png,
// tests/output/provider-login.png, tests/output/app.png, and with [pages] branding tests/output/branded-signin-page.png
// and tests/output/branded-error-page.png. Passerelle's output: tests/output/browser_signin.log.
//
// Without /usr/bin/chromium (or $CHROMIUM_PATH) the test is skipped with a message, except in CI (CI=true),
// where it fails: scripts/test.sh installs chromium.
//
// Run: tests/run-integration.sh --test-name-pattern='browser'   or   node --test tests/browser/

import assert from 'node:assert/strict';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { test } from 'node:test';

import {
  chromiumAvailability, launchChromium, PROCONNECT_ACCOUNTS, PROCONNECT_PREFIX, startHtmlUpstream,
  startProConnectLikeProvider,
} from '../support/browser.mjs';
import { stopAfter } from '../support/http.mjs';
import { launchPasserelle, OUTPUT_DIR } from '../support/passerelle.mjs';
import { startProvider } from '../support/provider.mjs';
import { addresses, PREFIX, q } from '../support/stack.mjs';
import { headerValues } from '../support/upstream.mjs';

const availability = chromiumAvailability();
const { angela } = PROCONNECT_ACCOUNTS;
const squash = (s) => String(s ?? '').replace(/\s+/g, ' ').trim();

/** WCAG 2 contrast ratio of two CSS rgb()/rgba() colours (alpha ignored: both are opaque here). */
function contrastRatio(fg, bg) {
  const lum = (css) => {
    const [r, g, b] = css.match(/[\d.]+/g).slice(0, 3).map(Number).map((v) => {
      const c = v / 255;
      return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4;
    });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b;
  };
  const [a, b] = [lum(fg), lum(bg)].sort((x, y) => y - x);
  return (a + 0.05) / (b + 0.05);
}

function passerelleToml({ port, adminPort, pc, autre, upstream }) {
  const base = `http://127.0.0.1:${port}`;
  return `# written by tests/browser/signin.test.mjs
[server]
listen = [${q(`127.0.0.1:${port}`)}]
public_url = ${q(base)}
admin_listen = ${q(`127.0.0.1:${adminPort}`)}

[session]
keys = ["env:PASSERELLE_KEY"]

[providers.proconnect]
kind = "proconnect"
issuer = ${q(pc.issuer)}
client_id = ${q(pc.clientId)}
client_secret = ${q(pc.clientSecret)}

[providers.autre]
kind = "oidc"
issuer = ${q(autre.issuer)}
client_id = ${q(autre.clientId)}
client_secret = ${q(autre.clientSecret)}
display_name = "Autre fournisseur"

[[route]]
path = "/"
upstream = ${q(upstream)}
providers = ["proconnect", "autre"]
scopes = ["email", "given_name", "usual_name"]
[route.headers]
"X-Auth-Sub" = "sub"
"X-Auth-Email" = "email"
"X-Auth-Family-Name" = "family_name"
`;
}

test('(browser) Chromium: deep link → sign-in page (two providers, keyboard reachable) → ProConnect login form → back on /dossier/42?onglet=pieces with identity headers', {
  skip: availability.skip,
  timeout: 180_000,
}, async (t) => {
  if (availability.failure) assert.fail(availability.failure);
  await mkdir(OUTPUT_DIR, { recursive: true });

  const { port, adminPort, base, redirectUris, postLogoutRedirectUris } = await addresses();

  const pc = await stopAfter(t, startProConnectLikeProvider({ redirectUris, postLogoutRedirectUris }));
  const autre = await stopAfter(t, startProvider({ redirectUris, postLogoutRedirectUris, authMethod: 'client_secret_basic' }));
  const app = await stopAfter(t, startHtmlUpstream());
  const toml = passerelleToml({ port, adminPort, pc, autre, upstream: app.url });
  const passerelle = await launchPasserelle(t, toml, { adminPort, logName: 'browser_signin' });

  const browser = await launchChromium(t);
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 }, locale: 'fr-FR' });
  const page = await context.newPage();
  page.setDefaultTimeout(30_000);
  // Only loopback is reachable: anything else (the provider's login page asks for web fonts) is blocked and noted.
  const external = [];
  await context.route((u) => !['127.0.0.1', 'localhost', '[::1]'].includes(u.hostname), (route) => {
    external.push({ url: route.request().url(), from: page.url() });
    return route.abort('blockedbyclient');
  });
  // Console errors on Passerelle's origin (its own pages, and the app it serves): a CSP violation would show here.
  const consoleErrors = [];
  page.on('console', (m) => {
    if (m.type() !== 'error') return;
    const at = m.location()?.url || '';
    if (new URL(page.url()).origin !== base || /\/favicon\.ico$/.test(at)) return;
    consoleErrors.push(`${page.url()} (${at}): ${m.text()}`);
  });
  const diag = () => `\nat ${page.url()}\n--- passerelle (tail):\n${passerelle.logs().slice(-2000)}\n--- provider errors: ${JSON.stringify(pc.errors)}`;

  // 1. The deep link, without a session: Passerelle's sign-in page, in French, with both providers.
  const target = `${base}/dossier/42?onglet=pieces`;
  const first = await page.goto(target);
  assert.ok(first, 'a navigation response');
  assert.equal(first.status(), 200, `the sign-in page answers 200${diag()}`);
  const signInUrl = new URL(page.url());
  assert.equal(signInUrl.origin, base, `the sign-in page is Passerelle's${diag()}`);
  assert.ok(signInUrl.pathname.startsWith(PREFIX), `the sign-in page is under ${PREFIX}, got ${page.url()}`);
  assert.equal(squash(await page.locator('h1').innerText()), 'Connexion');
  assert.equal(await page.locator('html').getAttribute('lang'), 'fr', 'the page declares lang="fr"');
  assert.match(await page.title(), /Connexion/);
  await page.screenshot({ path: path.join(OUTPUT_DIR, 'signin-page.png'), fullPage: true });
  assert.equal(app.requests.length, 0, 'nothing reached the application before sign-in');

  // 2. Accessibility basics: the choices are real links (href) with visible text and an accessible name.
  const pcLink = page.locator('a.fed.proconnect');
  assert.equal(await pcLink.count(), 1, 'one ProConnect button');
  assert.ok(await pcLink.isVisible(), 'the ProConnect button is visible');
  assert.match(squash(await pcLink.innerText()), /S'identifier avec ProConnect/, 'visible text of the ProConnect button');
  const pcHref = await pcLink.getAttribute('href');
  assert.ok(pcHref, 'the ProConnect button is a link with an href');
  assert.equal(new URL(pcHref, base).searchParams.get('provider'), 'proconnect');
  assert.equal(await page.getByRole('link', { name: /S'identifier avec\s+ProConnect/ }).count(), 1,
    'the ProConnect link has the accessible name "S\'identifier avec ProConnect" (the "PC" mark is aria-hidden)');
  const box = await pcLink.boundingBox();
  assert.ok(box.width >= 44 && box.height >= 44, `the ProConnect button is a comfortable target (${box.width}×${box.height})`);
  const pcColours = await pcLink.evaluate((el) => {
    const s = getComputedStyle(el);
    return { color: s.color, background: s.backgroundColor };
  });
  const pcContrast = contrastRatio(pcColours.color, pcColours.background);
  assert.ok(pcContrast >= 4.5, `ProConnect button text contrast ${pcContrast.toFixed(2)}:1 (${JSON.stringify(pcColours)}) must be ≥ 4.5:1`);

  const autreLink = page.getByRole('link', { name: /Autre fournisseur/ });
  assert.equal(await autreLink.count(), 1, 'the second provider is offered as a link named after its display_name');
  assert.ok(await autreLink.isVisible());
  assert.match(squash(await autreLink.innerText()), /Autre fournisseur/);
  assert.equal(new URL(await autreLink.getAttribute('href'), base).searchParams.get('provider'), 'autre');
  const autreColours = await autreLink.evaluate((el) => {
    const s = getComputedStyle(el);
    return { color: s.color, background: s.backgroundColor };
  });
  const autreContrast = contrastRatio(autreColours.color, autreColours.background);
  assert.ok(autreContrast >= 4.5, `second provider button contrast ${autreContrast.toFixed(2)}:1 must be ≥ 4.5:1`);

  // 3. Keyboard: Tab from the top of the page until the ProConnect link has focus; the focus is visible.
  const focusOrder = [];
  let reached = false;
  for (let i = 0; i < 15 && !reached; i++) {
    await page.keyboard.press('Tab');
    const focused = await page.evaluate(() => {
      const el = document.activeElement;
      return {
        tag: el?.tagName,
        className: el?.className || '',
        text: (el?.innerText || '').replace(/\s+/g, ' ').trim(),
        isProConnect: !!el?.matches?.('a.fed.proconnect'),
        outlineStyle: el ? getComputedStyle(el).outlineStyle : '',
        outlineWidth: el ? getComputedStyle(el).outlineWidth : '',
      };
    });
    focusOrder.push(`${focused.tag}.${focused.className}: ${focused.text}`);
    if (focused.isProConnect) {
      reached = true;
      assert.equal(focused.tag, 'A');
      assert.notEqual(focused.outlineStyle, 'none', 'keyboard focus on the ProConnect link is visible (outline)');
      assert.notEqual(focused.outlineWidth, '0px', 'keyboard focus on the ProConnect link is visible (outline width)');
    }
  }
  assert.ok(reached, `the ProConnect link is reachable with Tab; focus went: ${focusOrder.join(' → ')}`);
  await page.screenshot({ path: path.join(OUTPUT_DIR, 'signin-page-focus.png'), fullPage: true });
  t.diagnostic(`Tab order to ProConnect: ${focusOrder.join(' → ')}`);
  t.diagnostic(`contrast: ProConnect ${pcContrast.toFixed(2)}:1, Autre fournisseur ${autreContrast.toFixed(2)}:1`);

  // 4. Click ProConnect: the ProConnect-like provider's login form (under /api/v2).
  await Promise.all([
    page.waitForURL((u) => u.origin === new URL(pc.issuer).origin && u.pathname.startsWith(`${PROCONNECT_PREFIX}/interaction/`)),
    pcLink.click(),
  ]);
  const authorize = pc.callsTo(`${PROCONNECT_PREFIX}/authorize`);
  assert.equal(authorize.length, 1, `one authorization request at the ProConnect-like provider${diag()}`);
  const params = authorize[0].query;
  assert.equal(params.client_id, pc.clientId);
  assert.equal(params.redirect_uri, redirectUris[0]);
  assert.equal(params.code_challenge_method, 'S256');
  const scopes = new Set(params.scope.split(' '));
  for (const s of ['openid', 'email', 'given_name', 'usual_name']) assert.ok(scopes.has(s), `scope ${s} asked for (${params.scope})`);
  assert.ok(params.claims, 'the ProConnect preset sends the claims parameter (acr, amr)');
  assert.equal(autre.calls.filter((c) => c.path === '/auth').length, 0, 'the other provider was not asked');

  await page.locator('input[name="login"]').waitFor();
  await page.screenshot({ path: path.join(OUTPUT_DIR, 'provider-login.png'), fullPage: true });
  await page.locator('input[name="login"]').fill('angela');
  await page.locator('input[name="password"]').fill('mot-de-passe');
  await page.locator('form button[type="submit"]').click();

  // 5. Consent if the provider shows it (this one grants silently, as ProConnect does), then back at Passerelle's
  //    callback and on the exact deep link. Polled: the redirects between pages are not all observable events.
  const deadline = Date.now() + 30_000;
  let consentClicks = 0;
  for (;;) {
    if (page.url() === target) break;
    if (Date.now() > deadline) {
      assert.fail(`did not come back to ${target}${diag()}\n--- page:\n${(await page.content().catch(() => '')).slice(0, 1500)}`);
    }
    const onConsent = new URL(page.url()).pathname.includes('/interaction/')
      && await page.locator('input[name="prompt"][value="consent"]').count().catch(() => 0) > 0;
    if (onConsent && consentClicks < 3) {
      consentClicks++;
      await page.locator('form button[type="submit"]').click().catch(() => {});
    }
    await new Promise((r) => setTimeout(r, 100)); // polling the page while the browser follows redirects
  }
  await page.waitForLoadState('load');
  assert.equal(page.url(), target, 'the browser ends on the exact URL first asked for');
  await page.screenshot({ path: path.join(OUTPUT_DIR, 'app.png'), fullPage: true });

  // 6. The application's page shows the identity headers, and its recorded request carries them.
  assert.equal(squash(await page.locator('#request').innerText()), 'GET /dossier/42?onglet=pieces');
  const shown = async (h) => squash(await page.locator(`td[data-header="${h}"]`).innerText());
  assert.equal(await shown('x-auth-sub'), angela.sub);
  assert.equal(await shown('x-auth-email'), angela.email);
  assert.equal(await shown('x-auth-family-name'), angela.usual_name, 'ProConnect usual_name reaches the app as family_name');

  const landed = app.requests.filter((r) => r.url === '/dossier/42?onglet=pieces');
  assert.ok(landed.length >= 1, 'the upstream received the deep link');
  const last = landed[landed.length - 1];
  assert.deepEqual(headerValues(last.rawHeaders, 'X-Auth-Sub'), [angela.sub]);
  assert.deepEqual(headerValues(last.rawHeaders, 'X-Auth-Email'), [angela.email]);
  assert.deepEqual(headerValues(last.rawHeaders, 'X-Auth-Family-Name'), [angela.usual_name]);
  const identityNames = [];
  for (let i = 0; i < last.rawHeaders.length; i += 2) {
    if (/^x-auth-/i.test(last.rawHeaders[i])) identityNames.push(last.rawHeaders[i].toLowerCase());
  }
  assert.deepEqual(identityNames.sort(), ['x-auth-email', 'x-auth-family-name', 'x-auth-sub'],
    'only the route\'s identity headers reach the application');
  assert.ok(!/passerelle/i.test(last.headers.cookie || ''), 'Passerelle\'s own cookies are not forwarded');

  // The back channel went to the ProConnect-like provider: token, then signed userinfo.
  assert.equal(pc.callsTo(`${PROCONNECT_PREFIX}/token`).filter((c) => c.status === 200).length, 1, 'one successful token request');
  assert.equal(pc.callsTo(`${PROCONNECT_PREFIX}/userinfo`).filter((c) => c.status === 200).length, 1, 'one successful userinfo request');
  assert.deepEqual(pc.errors, [], 'the provider reported no error');
  assert.deepEqual(consoleErrors, [], 'no error in the browser console on Passerelle\'s origin');
  const fromPasserelle = external.filter((e) => new URL(e.from).origin === base);
  assert.deepEqual(fromPasserelle, [], 'Passerelle\'s pages load nothing from outside');
  if (external.length) t.diagnostic(`blocked requests outside loopback (not Passerelle's): ${[...new Set(external.map((e) => new URL(e.url).host))].join(', ')}`);
});

/** A 24×24 PNG in the accent colour, written out (zlib and CRC computed once): no image tool needed. */
function logoPng() {
  return Buffer.from(
    'iVBORw0KGgoAAAANSUhEUgAAABgAAAAYCAIAAABvFaqvAAAAHklEQVR4nGNgCPKhDho1aNSgUYNGDRo1aNSggTcIAB0YY5B23ICwAAAAAElFTkSuQmCC',
    'base64',
  );
}

test('(browser-brand) [pages]: the sign-in and error pages carry the service\'s name, logo, accent colour and support contact; the correlation id reads in groups, the retry button says "Se reconnecter"', {
  skip: availability.skip,
  timeout: 180_000,
}, async (t) => {
  if (availability.failure) assert.fail(availability.failure);
  await mkdir(OUTPUT_DIR, { recursive: true });
  const { writeFile, mkdtemp, rm } = await import('node:fs/promises');
  const { tmpdir } = await import('node:os');
  const dir = await mkdtemp(path.join(tmpdir(), 'passerelle-brand-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const logo = path.join(dir, 'logo.png');
  await writeFile(logo, logoPng());

  const { port, adminPort, base, redirectUris, postLogoutRedirectUris } = await addresses();
  const pc = await stopAfter(t, startProConnectLikeProvider({ redirectUris, postLogoutRedirectUris }));
  const autre = await stopAfter(t, startProvider({ redirectUris, postLogoutRedirectUris, authMethod: 'client_secret_basic' }));
  const app = await stopAfter(t, startHtmlUpstream());
  const toml = `${passerelleToml({ port, adminPort, pc, autre, upstream: app.url })}
[pages]
service_name = "Démarches RH du ministère"
logo = ${q(logo)}
support = "assistance-rh@interieur.gouv.fr"
accent_colour = "#00524C"
`;
  const passerelle = await launchPasserelle(t, toml, { adminPort, logName: 'browser_brand' });
  const browser = await launchChromium(t);
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 }, locale: 'fr-FR' });
  const page = await context.newPage();
  page.setDefaultTimeout(30_000);
  const consoleErrors = [];
  // Only what the pages themselves break: a refused stylesheet or image (CSP), not the error statuses they are.
  page.on('console', (m) => {
    if (m.type() === 'error' && /Content Security Policy|Refused to/.test(m.text())) consoleErrors.push(`${page.url()}: ${m.text()}`);
  });
  const diag = () => `\nat ${page.url()}\n--- passerelle (tail):\n${passerelle.logs().slice(-2000)}`;

  // The sign-in page: the service's name in the header and the title, its logo, its colour on the buttons.
  const first = await page.goto(`${base}/conges`);
  assert.equal(first.status(), 200, diag());
  assert.equal(squash(await page.locator('header').innerText()), 'Démarches RH du ministère');
  assert.match(await page.title(), /^Connexion — Démarches RH du ministère$/);
  assert.match(squash(await page.locator('main').innerText()), /pour accéder à Démarches RH du ministère/);
  const img = page.locator('header img');
  assert.equal(await img.getAttribute('src'), `${PREFIX}/logo`);
  assert.equal(await img.evaluate((i) => i.complete && i.naturalWidth), 24, 'the logo loads under the CSP');
  const generic = page.locator('a.btn', { hasText: 'Autre fournisseur' });
  assert.equal(await generic.evaluate((e) => getComputedStyle(e).backgroundColor), 'rgb(0, 82, 76)', 'the accent colour');
  await page.screenshot({ path: path.join(OUTPUT_DIR, 'branded-signin-page.png'), fullPage: true });

  // An error page: a callback nobody started.
  const error = await page.goto(`${base}${PREFIX}/callback?state=nobody-started-this&code=x`);
  assert.equal(error.status(), 400, diag());
  assert.equal(squash(await page.locator('h1').innerText()), 'Connexion expirée');
  assert.equal(squash(await page.locator('main a.btn').first().innerText()), 'Se reconnecter');
  const id = squash(await page.locator('p.id strong').innerText());
  assert.match(id, /^[0-9A-HJKMNP-TV-Z]{4}-[0-9A-HJKMNP-TV-Z]{4}-[0-9A-HJKMNP-TV-Z]{4}$/, 'three groups, nothing that looks cut');
  assert.ok(passerelle.logs().includes(id), 'the same id in the log');
  assert.equal(await page.locator('p.id a').getAttribute('href'), 'mailto:assistance-rh@interieur.gouv.fr');
  assert.equal(squash(await page.locator('header').innerText()), 'Démarches RH du ministère');
  await page.screenshot({ path: path.join(OUTPUT_DIR, 'branded-error-page.png'), fullPage: true });
  assert.deepEqual(consoleErrors, [], 'no CSP violation: the accent stylesheet and the logo are allowed');
});
