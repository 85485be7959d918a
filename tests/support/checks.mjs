// Assertions shared by the scenarios.

import assert from 'node:assert/strict';

import { pause } from './http.mjs';
import { PREFIX } from './stack.mjs';
import { headersMatching } from './upstream.mjs';

/** Header lines that look like identity headers: X-Auth-*, x_auth_*, any case. */
export function identityLines(rawHeaders) {
  return headersMatching(rawHeaders, /^x[-_]auth[-_]/i);
}

export function decodeJwt(jwt) {
  const [h, p] = jwt.split('.');
  return {
    header: JSON.parse(Buffer.from(h, 'base64url').toString('utf8')),
    payload: JSON.parse(Buffer.from(p, 'base64url').toString('utf8')),
  };
}

/** A redirect that starts a login: to the provider's authorization endpoint, or to Passerelle's own /login. */
export function assertLoginRedirect(res, s, what = 'response') {
  assert.ok(res.status < 500, `${what}: must never be a server error, got ${res.status}:\n${res.body.slice(0, 500)}`);
  assert.equal(res.status, 302, `${what}: expected 302 to login, got ${res.status} (location ${res.location}):\n${res.body.slice(0, 500)}`);
  const loc = new URL(res.location);
  const toProvider = `${loc.origin}${loc.pathname}` === s.op.discovery.authorization_endpoint;
  const toPasserelle = `${loc.origin}${loc.pathname}` === `${s.base}${PREFIX}/login`;
  assert.ok(toProvider || toPasserelle, `${what}: expected a redirect to the provider's authorize or ${PREFIX}/login, got ${res.location}`);
}

/** 401, no redirect. */
export function assertUnauthorized(res, what = 'response') {
  assert.equal(res.status, 401, `${what}: expected 401, got ${res.status} (location ${res.location}):\n${res.body.slice(0, 500)}`);
  assert.equal(res.headers.location, undefined, `${what}: a 401 must carry no Location`);
}

const FRENCH_WORDS = ['connexion', 'erreur', 'réessayer', 'veuillez', 'identifi', 'fournisseur', 'retour',
  'accueil', 'impossible', 'expiré', 'échec', 'désolé', 'problème', 'recommencer', 'référence', 'corrélation'];

/**
 * A failure page as the design wants it: 4xx, HTML, French, with a correlation id that is also in the logs.
 * `logs`: a function returning Passerelle's output so far (its log line may arrive just after the response,
 * so this waits, bounded, for it). `exclude`: strings (e.g. values from the request URL) that must not count
 * as the correlation id.
 */
export async function assertFrenchErrorPage(res, logs, { exclude = [], timeoutMs = 3000 } = {}) {
  assert.ok(res.status >= 400 && res.status < 500, `expected a 4xx error page, got ${res.status} at ${res.url}:\n${res.body.slice(0, 800)}`);
  assert.match(res.headers['content-type'] || '', /text\/html/, 'the error page is HTML');
  const lower = res.body.toLowerCase();
  const french = FRENCH_WORDS.filter((w) => lower.includes(w));
  assert.ok(french.length > 0, `the error page should be in French:\n${res.body.slice(0, 800)}`);
  // The exact id: a request_id of the logs shown on the page (ids may start with `-` or `_`, which the heuristic
  // below would cut off).
  const exact = await correlationIdOn(res, logs, timeoutMs);
  if (exact && !exclude.some((e) => e.includes(exact))) return exact;
  // Candidate ids: runs of ≥ 8 id characters shown on the page that do not look like words (a digit, or a
  // lower-case letter followed by an upper-case one: true of random ids with overwhelming probability), and are
  // present in the logs.
  const candidates = [...new Set(res.body.match(/[A-Za-z0-9][A-Za-z0-9_-]{7,}/g) || [])]
    .filter((x) => (/\d/.test(x) || /[a-z][A-Z]/.test(x)) && !exclude.some((e) => e.includes(x)));
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const found = candidates.find((x) => logs().includes(x));
    if (found) return found;
    if (Date.now() > deadline) break;
    await pause(20); // polling for the log line to be flushed
  }
  assert.fail(`the error page should show a correlation id that also appears in the logs; page:\n${res.body.slice(0, 800)}\n--- logs (tail):\n${logs().slice(-2000)}`);
}

/**
 * The request id Passerelle logged for a response it wrote, found on the page: every `request_id` of the logs
 * (JSON or text format) is looked for in the body. Waits (bounded) for the log line to be flushed.
 */
export async function correlationIdOn(res, logs, timeoutMs = 3000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const text = logs();
    const ids = new Set([
      ...[...text.matchAll(/"request_id"\s*:\s*"([^"]+)"/g)].map((m) => m[1]),
      ...[...text.matchAll(/request_id=([A-Za-z0-9_-]+)/g)].map((m) => m[1]),
    ]);
    const found = [...ids].find((id) => id.length >= 8 && res.body.includes(id));
    if (found) return found;
    if (Date.now() > deadline) return undefined;
    await pause(20); // polling for the log line to be flushed
  }
}

/** No code, token or client secret of the provider appears in Passerelle's output (`s`: { passerelle, op }). */
export function assertNoSecretsInLogs(s, extra = []) {
  const logs = s.passerelle.logs();
  for (const { type, value } of s.op.issued) {
    assert.ok(!logs.includes(value), `the ${type} issued by the provider appears in Passerelle's logs`);
  }
  assert.ok(!logs.includes(s.op.clientSecret), 'the client secret appears in Passerelle\'s logs');
  assert.ok(!logs.includes(s.passerelle.key), 'the session key appears in Passerelle\'s logs');
  for (const [what, value] of extra) {
    if (value) assert.ok(!logs.includes(value), `${what} appears in Passerelle's logs`);
  }
}

/** Session cookies (passerelle, passerelle.1, …) the person holds for `base`. */
export function sessionCookies(person, base, name = 'passerelle') {
  return person.jar.all(base).filter((c) => c.name === name || new RegExp(`^${name}\\.\\d+$`).test(c.name));
}
