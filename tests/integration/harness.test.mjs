// Checks the test harness itself, without Passerelle: the real oidc-provider, the recording upstream and the
// scripted person, driven by a minimal relying party written here (authorization code + PKCE, userinfo,
// RP-initiated logout). If these fail, the Passerelle scenarios' failures say nothing about Passerelle.

import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import http from 'node:http';
import { test } from 'node:test';

import { stopAfter } from '../support/http.mjs';
import { createPerson, CookieJar, parseForms } from '../support/person.mjs';
import { ACCOUNTS, startProvider } from '../support/provider.mjs';
import { headerValues, startUpstream } from '../support/upstream.mjs';

const b64url = (buf) => Buffer.from(buf).toString('base64url');
const decodeJwtPart = (jwt, i) => JSON.parse(Buffer.from(jwt.split('.')[i], 'base64url').toString('utf8'));

/** A deliberately small RP on 127.0.0.1: enough to exercise every provider feature the scenarios rely on. */
async function startMiniRp(t, providerOpts = {}) {
  const server = http.createServer();
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const base = `http://127.0.0.1:${server.address().port}`;
  const op = await startProvider({
    redirectUris: [`${base}/cb`],
    postLogoutRedirectUris: [`${base}/logged-out`],
    ...providerOpts,
  });
  const d = op.discovery;
  const flows = new Map();
  const sessions = new Map();
  const seen = { userinfo: [], idTokenHeaders: [] };

  const cookie = (req, name) => (req.headers.cookie || '').split(/;\s*/).map((c) => c.split('='))
    .find(([k]) => k === name)?.[1];

  server.on('request', async (req, res) => {
    try {
      const url = new URL(req.url, base);
      if (url.pathname === '/cb') {
        const flow = flows.get(url.searchParams.get('state'));
        if (!flow || url.searchParams.get('iss') !== op.issuer) {
          res.writeHead(400).end('bad state or iss');
          return;
        }
        flows.delete(url.searchParams.get('state'));
        const body = new URLSearchParams({
          grant_type: 'authorization_code',
          code: url.searchParams.get('code'),
          redirect_uri: `${base}/cb`,
          code_verifier: flow.verifier,
        });
        const headers = { 'content-type': 'application/x-www-form-urlencoded' };
        if (op.clientAuthMethod === 'client_secret_post') {
          body.set('client_id', op.clientId);
          body.set('client_secret', op.clientSecret);
        } else {
          headers.authorization = `Basic ${Buffer.from(`${encodeURIComponent(op.clientId)}:${encodeURIComponent(op.clientSecret)}`).toString('base64')}`;
        }
        const tokenRes = await fetch(d.token_endpoint, { method: 'POST', headers, body });
        const tokens = await tokenRes.json();
        if (tokenRes.status !== 200) throw new Error(`token: ${JSON.stringify(tokens)}`);
        seen.idTokenHeaders.push(decodeJwtPart(tokens.id_token, 0));
        const idClaims = decodeJwtPart(tokens.id_token, 1);
        assert.equal(idClaims.nonce, flow.nonce);
        const ui = await fetch(d.userinfo_endpoint, { headers: { authorization: `Bearer ${tokens.access_token}` } });
        const type = ui.headers.get('content-type');
        const text = await ui.text();
        const claims = type.startsWith('application/jwt') ? decodeJwtPart(text, 1) : JSON.parse(text);
        seen.userinfo.push({ type, claims });
        const sid = b64url(randomBytes(16));
        sessions.set(sid, { claims, idToken: tokens.id_token });
        res.writeHead(302, { location: flow.rd, 'set-cookie': `rp=${sid}; Path=/; HttpOnly; SameSite=Lax` }).end();
        return;
      }
      if (url.pathname === '/logout') {
        const s = sessions.get(cookie(req, 'rp'));
        const target = new URL(d.end_session_endpoint);
        if (s) target.searchParams.set('id_token_hint', s.idToken);
        target.searchParams.set('post_logout_redirect_uri', `${base}/logged-out`);
        target.searchParams.set('state', 'logout-state-123');
        sessions.delete(cookie(req, 'rp'));
        res.writeHead(302, { location: target.href, 'set-cookie': 'rp=; Path=/; Max-Age=0' }).end();
        return;
      }
      if (url.pathname === '/logged-out') {
        res.writeHead(200, { 'content-type': 'text/plain' }).end(`logged out, state=${url.searchParams.get('state')}`);
        return;
      }
      const s = sessions.get(cookie(req, 'rp'));
      if (s) {
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ url: req.url, claims: s.claims }));
        return;
      }
      const verifier = b64url(randomBytes(32));
      const state = b64url(randomBytes(32));
      const nonce = b64url(randomBytes(32));
      flows.set(state, { verifier, nonce, rd: req.url });
      const target = new URL(d.authorization_endpoint);
      for (const [k, v] of Object.entries({
        response_type: 'code',
        client_id: op.clientId,
        redirect_uri: `${base}/cb`,
        scope: 'openid email profile',
        state,
        nonce,
        code_challenge: b64url(createHash('sha256').update(verifier).digest()),
        code_challenge_method: 'S256',
      })) target.searchParams.set(k, v);
      res.writeHead(302, { location: target.href }).end();
    } catch (err) {
      res.writeHead(500, { 'content-type': 'text/plain' }).end(String(err?.stack || err));
    }
  });

  op.clientAuthMethod = providerOpts.authMethod || 'client_secret_basic';
  t.after(async () => {
    await op.stop();
    await new Promise((r) => { server.close(r); server.closeAllConnections(); });
  });
  return { base, op, seen };
}

test('cookie jar: path scoping, Max-Age=0 deletion, host-only keying', () => {
  const jar = new CookieJar();
  jar.store('http://127.0.0.1:1000/a/b', ['x=1', 'flow=2; Path=/.passerelle; HttpOnly', 'root=3; Path=/']);
  assert.deepEqual(jar.cookiesFor('http://127.0.0.1:2000/a/c').map((c) => c.name).sort(), ['root', 'x']);
  assert.deepEqual(jar.cookiesFor('http://127.0.0.1:1000/.passerelle/callback').map((c) => c.name).sort(), ['flow', 'root']);
  assert.deepEqual(jar.cookiesFor('http://127.0.0.1:1000/.passerelleX').map((c) => c.name), ['root']);
  jar.store('http://127.0.0.1:1000/', ['root=; Path=/; Max-Age=0']);
  assert.equal(jar.get('http://127.0.0.1:1000/', 'root'), undefined);
  jar.store('http://127.0.0.1:1000/', ['flow=; Path=/.passerelle; Expires=Thu, 01 Jan 1970 00:00:00 GMT']);
  assert.equal(jar.get('http://127.0.0.1:1000/', 'flow'), undefined);
  assert.equal(jar.get('http://127.0.0.1:1000/', 'x').value, '1');
});

test('form parser finds oidc-provider style forms and out-of-form buttons', () => {
  const html = '<form id="op.logoutForm" method="post" action="/session/end/confirm"><input type="hidden" name="xsrf" value="a&amp;b"/></form>'
    + '<button autofocus type="submit" form="op.logoutForm" value="yes" name="logout">Yes</button>';
  const [form] = parseForms(html, 'http://127.0.0.1:9/x');
  assert.equal(form.action, 'http://127.0.0.1:9/session/end/confirm');
  assert.deepEqual(form.inputs, [{ name: 'xsrf', value: 'a&b', type: 'hidden' }]);
  assert.equal(form.buttons[0].name, 'logout');
});

test('upstream records raw header lines as sent, duplicates and case included', async (t) => {
  const up = await stopAfter(t, startUpstream());
  const person = createPerson();
  const res = await person.request(`${up.url}/echo?q=1`, {
    headers: [['X-Auth-Sub', 'evil'], ['x-auth-sub', 'evil2'], ['X_Auth_Sub', 'evil3']],
  });
  assert.equal(res.status, 200);
  const got = up.last();
  assert.equal(got.url, '/echo?q=1');
  assert.deepEqual(headerValues(got.rawHeaders, 'x-auth-sub'), ['evil', 'evil2']);
  assert.deepEqual(headerValues(got.rawHeaders, 'X_Auth_Sub'), ['evil3']);
  assert.deepEqual(JSON.parse(res.body).rawHeaders, got.rawHeaders);
});

for (const variant of [
  { authMethod: 'client_secret_basic', idTokenAlg: 'RS256' },
  { authMethod: 'client_secret_post', idTokenAlg: 'ES256' },
  { authMethod: 'client_secret_basic', idTokenAlg: 'RS256', userinfoSigned: true },
]) {
  test(`provider + person: login, userinfo, logout with a minimal RP (${JSON.stringify(variant)})`, async (t) => {
    const { base, op, seen } = await startMiniRp(t, variant);

    // Discovery advertises what the scenarios rely on.
    assert.equal(op.discovery.issuer, op.issuer);
    assert.equal(op.discovery.authorization_response_iss_parameter_supported, true);
    assert.ok(op.discovery.code_challenge_methods_supported.includes('S256'));
    assert.ok(op.discovery.end_session_endpoint);

    const person = createPerson();
    const res = await person.login(`${base}/page?a=1&b=%C3%A9`, 'helene');
    assert.equal(res.status, 200, res.body);
    assert.deepEqual(res.steps, ['login']);
    assert.equal(res.url, `${base}/page?a=1&b=%C3%A9`);
    const body = JSON.parse(res.body);
    assert.equal(body.claims.sub, ACCOUNTS.helene.sub);
    assert.equal(body.claims.family_name, 'Wamytan-Noël');
    assert.equal(body.claims.email, ACCOUNTS.helene.email);

    assert.equal(seen.idTokenHeaders[0].alg, variant.idTokenAlg);
    assert.equal(seen.userinfo[0].type.split(';')[0], variant.userinfoSigned ? 'application/jwt' : 'application/json');
    const userinfoCalls = op.callsTo(new URL(op.discovery.userinfo_endpoint).pathname);
    assert.equal(userinfoCalls.length, 1);
    assert.match(userinfoCalls[0].headers.authorization, /^Bearer /);
    const tokenCall = op.callsTo(new URL(op.discovery.token_endpoint).pathname)[0];
    assert.equal(tokenCall.status, 200);
    assert.equal(/^Basic /.test(tokenCall.headers.authorization || ''), variant.authMethod === 'client_secret_basic');
    assert.ok(op.issued.some((x) => x.type === 'access_token'));
    assert.ok(op.issued.some((x) => x.type === 'code'));

    // Second visit: the provider session is reused, no form.
    const again = await person.login(`${base}/other`, 'helene');
    assert.equal(again.status, 200);

    // RP-initiated logout through the provider's confirmation page.
    const out = await person.logout(`${base}/logout`);
    assert.deepEqual(out.steps, ['logout-confirm']);
    assert.equal(out.status, 200);
    assert.equal(out.url, `${base}/logged-out?state=logout-state-123`);
    // The provider session is gone: the login form is asked again.
    const relog = await person.login(`${base}/page`, 'alice');
    assert.deepEqual(relog.steps, ['login']);
    assert.equal(JSON.parse(relog.body).claims.sub, ACCOUNTS.alice.sub);
    assert.deepEqual(op.errors, []);
  });
}

test('a callback with a tampered iss is refused by the minimal RP (the person can rewrite redirects)', async (t) => {
  const { base } = await startMiniRp(t);
  const person = createPerson();
  const res = await person.login(`${base}/x`, 'alice', {
    rewrite: (loc) => {
      const u = new URL(loc);
      if (u.pathname !== '/cb') return loc;
      u.searchParams.set('iss', 'http://127.0.0.1:1/evil');
      return u.href;
    },
  });
  assert.equal(res.status, 400);
  assert.equal(person.jar.get(base, 'rp'), undefined);
});
