// The audit trail ([audit]): one JSON line per security event, apart from the operational log.
//
// A real login through the real provider, a forged callback, a refusal by a `require` rule, a step-up, a logout:
// each gives exactly one line with its event, correlation id, session id, provider, subject (or its pseudonym),
// route, upstream and the claims released, client address and user agent; hostile text (a user agent with a line
// break and quotes) stays inside its field; the cookie never appears.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';

import { sessionCookies } from '../support/checks.mjs';
import { pause } from '../support/http.mjs';
import { ACCOUNTS } from '../support/provider.mjs';
import { PREFIX, startStack } from '../support/stack.mjs';

const { alice } = ACCOUNTS;

const ROUTES = (upstream) => `
[[route]]
path = "/rh"
upstream = "${upstream}"
providers = ["op"]
scopes = ["email"]
require = { email_domain = ["interieur.gouv.fr"] }
[route.headers]
"X-Auth-Email" = "email"

[[route]]
path = "/plus"
upstream = "${upstream}"
providers = ["op"]
scopes = ["email", "profile", "phone"]
[route.headers]
"X-Auth-Phone" = "phone_number"
`;

/** The audit lines of `text` (JSON objects with "log":"audit"), parsed. */
function auditLines(text) {
  return text.split('\n').filter((l) => l.includes('"log":"audit"')).map((l) => JSON.parse(l));
}

/** Waits until `read()` holds at least `n` audit lines; returns them. */
async function lines(read, n) {
  const deadline = Date.now() + 5000;
  for (;;) {
    const found = auditLines(await read());
    if (found.length >= n) return found;
    if (Date.now() > deadline) throw new Error(`expected ${n} audit lines, found ${found.length}:\n${await read()}`);
    await pause(20); // the writer thread appends asynchronously
  }
}

test('(audit1) [audit] file: login succeeded and failed, access refused, step-up and logout, one bounded JSON line each', async (t) => {
  const file = path.join(tmpdir(), `passerelle-audit-${randomBytes(4).toString('hex')}.jsonl`);
  t.after(() => rm(file, { force: true }));
  const s = await startStack(t, { config: { extraRoutes: ROUTES } });
  // The same stack, restarted with [audit]: startStack has no hook for a top-level table, so it goes at the end.
  await s.passerelle.stop();
  const { startPasserelle } = await import('../support/passerelle.mjs');
  const toml = `${s.toml}\n[audit]\nfile = ${JSON.stringify(file)}\n`;
  const p = await startPasserelle(toml, { env: { PASSERELLE_KEY: s.passerelle.key } });
  t.after(() => p.stop());
  const read = () => readFile(file, 'utf8').catch(() => '');

  const ok = await s.person.login(`${s.base}/`, 'alice');
  assert.equal(ok.status, 200, ok.body.slice(0, 300));
  const [login] = await lines(read, 1);
  assert.equal(login.event, 'login_succeeded');
  assert.equal(login.provider, 'op');
  assert.equal(login.sub, alice.sub);
  assert.match(login.session, /^[A-Za-z0-9_-]{8,}$/);
  assert.match(login.request_id, /^[0-9A-HJKMNP-TV-Z]{4}-[0-9A-HJKMNP-TV-Z]{4}-[0-9A-HJKMNP-TV-Z]{4}$/);
  assert.equal(login.route, 0);
  assert.equal(login.upstream, s.upstream.url);
  assert.deepEqual(login.released.sort(), ['x-auth-email=email', 'x-auth-family-name=family_name', 'x-auth-given-name=given_name', 'x-auth-sub=sub']);
  assert.equal(login.client, '127.0.0.1');
  assert.ok(login.user_agent, 'the user agent');
  assert.ok(login.time.endsWith('Z') && !Number.isNaN(Date.parse(login.time)));

  // A forged callback from a hostile user agent: login failed, with the reason; the text stays in its field.
  const ua = 'Mozilla/5.0 ","injected":"yes\\';
  await s.person.get(`${s.base}${PREFIX}/callback?state=forgedforgedforged&code=x`, { headers: { 'User-Agent': ua } });
  const failed = (await lines(read, 2))[1];
  assert.equal(failed.event, 'login_failed');
  assert.match(failed.reason, /^state: /);
  assert.equal(failed.user_agent, ua);
  assert.equal(failed.injected, undefined, 'the user agent did not add a field');

  // A require rule refuses alice (example.gouv.fr is not allowed).
  const refused = await s.person.get(`${s.base}/rh/dossier`);
  assert.equal(refused.status, 403);
  const denied = (await lines(read, 3))[2];
  assert.equal(denied.event, 'access_refused');
  assert.equal(denied.reason, 'require.email_domain');
  assert.equal(denied.route, 2);
  assert.equal(denied.session, login.session);

  // A route that needs more scopes: step-up.
  const more = await s.person.get(`${s.base}/plus/x`, { follow: false });
  assert.ok([302, 303].includes(more.status), `step-up redirect: ${more.status}`);
  const stepUp = (await lines(read, 4))[3];
  assert.equal(stepUp.event, 'step_up');
  assert.deepEqual(stepUp.released, ['x-auth-phone=phone_number']);

  const out = await s.person.get(`${s.base}${PREFIX}/logout`, { follow: false });
  assert.equal(out.status, 302);
  const logout = (await lines(read, 5))[4];
  assert.equal(logout.event, 'logout');
  assert.equal(logout.session, login.session);

  const all = await read();
  for (const c of sessionCookies(s.person, s.base)) assert.ok(!all.includes(c.value), 'no cookie value in the audit trail');
  assert.equal(auditLines(all).length, 5, `exactly one line per event:\n${all}`);
  assert.ok(!auditLines(p.logs()).length, 'audit lines go to the file, not to the operational log');
});

test('(audit2) [audit] on standard output, pseudonymised: the subject is an HMAC, stable across logins, never in clear', async (t) => {
  const s = await startStack(t);
  await s.passerelle.stop();
  const { startPasserelle } = await import('../support/passerelle.mjs');
  const toml = `${s.toml}\n[audit]\npseudonymise = true\npseudonym_key = "env:AUDIT_KEY"\n`;
  const p = await startPasserelle(toml, { env: { PASSERELLE_KEY: s.passerelle.key, AUDIT_KEY: randomBytes(32).toString('base64') } });
  t.after(() => p.stop());
  for (const person of [s.person, s.newPerson()]) {
    const res = await person.login(`${s.base}/`, 'alice');
    assert.equal(res.status, 200);
  }
  const found = await lines(async () => p.logs(), 2);
  assert.equal(found.length, 2);
  for (const line of found) {
    assert.equal(line.sub, undefined, 'no subject in clear');
    assert.match(line.sub_pseudonym, /^[A-Za-z0-9_-]{43}$/);
  }
  assert.equal(found[0].sub_pseudonym, found[1].sub_pseudonym, 'the same person, the same pseudonym');
  assert.notEqual(found[0].session, found[1].session);
  assert.ok(!p.logs().includes(alice.sub), 'the subject appears nowhere, not even in the operational log lines of these logins');
});
