// README's first command, in a real browser: the demo (config.example.toml, on free ports) in Chromium. A newcomer
// opens the URL the start line gives, picks a test identity at the built-in provider, lands on the echo application
// that shows the identity headers, raw and decoded, and signs out.
//
// Screenshots: tests/output/demo-provider.png, tests/output/demo-echo.png, tests/output/demo-signed-out.png.

import assert from 'node:assert/strict';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { test } from 'node:test';

import { chromiumAvailability, launchChromium } from '../support/browser.mjs';
import { demoConfig, launchPasserelle, OUTPUT_DIR } from '../support/passerelle.mjs';

const availability = chromiumAvailability();
const squash = (s) => String(s ?? '').replace(/\s+/g, ' ').trim();

test('(browser-demo) the demo in Chromium: the start line\'s URL, a test identity, the echo page with Hélène decoded, sign out', {
  skip: availability.skip,
  timeout: 180_000,
}, async (t) => {
  if (availability.failure) assert.fail(availability.failure);
  await mkdir(OUTPUT_DIR, { recursive: true });
  const { toml, ports } = await demoConfig();
  const passerelle = await launchPasserelle(t, toml, { adminPort: ports.admin, logName: 'browser_demo' });
  const url = passerelle.logs().match(/open (http:\/\/127\.0\.0\.1:\d+\/)/)?.[1];
  assert.equal(url, `http://127.0.0.1:${ports.proxy}/`, passerelle.logs());

  const browser = await launchChromium(t);
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, locale: 'fr-FR' });
  const page = await context.newPage();
  page.setDefaultTimeout(30_000);
  const refused = [];
  page.on('console', (m) => { if (/Content Security Policy|Refused to/.test(m.text())) refused.push(m.text()); });

  await page.goto(url);
  assert.equal(new URL(page.url()).port, String(ports.dev), 'sent to the development provider');
  await page.screenshot({ path: path.join(OUTPUT_DIR, 'demo-provider.png'), fullPage: true });
  await page.locator('#identity-helene').click();
  await page.waitForURL((u) => u.port === String(ports.proxy) && u.pathname === '/');
  assert.equal(squash(await page.locator('h1').innerText()), 'Application de démonstration');
  const row = page.locator('tr', { has: page.locator('th', { hasText: /^x-auth-given-name$/ }) });
  assert.equal(squash(await row.locator('code').innerText()), 'H%C3%A9l%C3%A8ne');
  assert.equal(squash(await row.locator('strong').innerText()), 'Hélène');
  const th = row.locator('th');
  assert.equal(await th.evaluate((e) => getComputedStyle(e).whiteSpace), 'nowrap', 'header names are not broken');
  await page.screenshot({ path: path.join(OUTPUT_DIR, 'demo-echo.png'), fullPage: true });

  await page.locator('a', { hasText: 'Se déconnecter' }).click();
  await page.waitForLoadState('load');
  await page.screenshot({ path: path.join(OUTPUT_DIR, 'demo-signed-out.png'), fullPage: true });
  const cookies = await context.cookies(url);
  assert.deepEqual(cookies.filter((c) => c.name.startsWith('passerelle') && c.value), [], 'the session cookie is gone');
  assert.deepEqual(refused, [], 'no CSP violation on the demo\'s pages');
});
