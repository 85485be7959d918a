// OpenID Connect Back-Channel Logout 1.0, driven by the real oidc-provider (its backchannelLogout feature): the
// person's session ends at the provider, the provider posts a logout_token to replica A, and both replicas refuse
// the session within a second. Then the whole class of bad logout tokens: each is answered 400 and leaves the
// session untouched, while the same token made right is accepted (so each refusal is for its stated reason).

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';

import { importJWK, SignJWT } from 'jose';

import { privateJwk } from '../support/provider-kit.mjs';
import { ACCOUNTS } from '../support/provider.mjs';
import { startRedis, waitFor } from '../support/redis.mjs';
import { loggedIn, redisTable, refusedWithin, replicas } from '../support/replicas.mjs';
import { PREFIX } from '../support/stack.mjs';

const { alice } = ACCOUNTS;
const EVENT = 'http://schemas.openid.net/event/backchannel-logout';

async function post(url, body, contentType = 'application/x-www-form-urlencoded') {
  const res = await fetch(url, { method: 'POST', headers: { 'Content-Type': contentType }, body });
  return { status: res.status, body: await res.text(), headers: res.headers };
}

for (const store of ['redis', 'cookie']) {
  test(`(${store}) the provider ends the session: its logout_token reaches A, both replicas refuse within 1 s`, async (t) => {
    const redis = await startRedis(t);
    const world = await replicas(t, { store, redisToml: redisTable(redis.url), backchannel: true });
    const [a, b] = world.nodes;
    const person = await loggedIn(world, 0);
    const bystander = await loggedIn(world, 1, 'helene');
    assert.equal((await person.get(`${b.base}/app`, { follow: false })).status, 200);

    // Logout at the provider itself, not through Passerelle: only the back channel can tell Passerelle.
    const out = await person.throughProvider(await person.get(world.op.discovery.end_session_endpoint), {});
    assert.deepEqual(out.steps, ['logout-confirm']);
    await waitFor('the logout token', async () => world.op.backchannel.length > 0, 5000);
    assert.equal(world.op.backchannel[0].status, 200, 'Passerelle accepted the logout token');
    await refusedWithin(person, `${a.base}/app/a`, 1000);
    await refusedWithin(person, `${b.base}/app/b`, 1000);
    assert.equal((await bystander.get(`${a.base}/app`, { follow: false })).status, 200, 'another person is untouched');
    assert.match(a.logs(), /back-channel logout/);

    const replay = await post(`${a.base}${PREFIX}/backchannel-logout`, `logout_token=${world.op.backchannel[0].token}`);
    assert.equal(replay.status, 400, `a replayed logout_token: ${replay.body}`);
    assert.match(JSON.parse(replay.body).error_description, /replay/);
  });
}

test('bad logout tokens: 400 with a JSON error, session untouched; the same token made right ends it', async (t) => {
  const redis = await startRedis(t);
  const world = await replicas(t, { n: 1, redisToml: redisTable(redis.url), backchannel: true });
  const [a] = world.nodes;
  const { op } = world;
  const rsa = op.signingKeys.find((k) => k.alg === 'RS256');
  const key = await importJWK(rsa, 'RS256');
  const strangerJwk = { ...privateJwk('rsa', { modulusLength: 2048 }), kid: rsa.kid };
  const stranger = await importJWK(strangerJwk, 'RS256');
  const person = await loggedIn(world, 0);
  const url = `${a.base}${PREFIX}/backchannel-logout`;

  const claims = (extra = {}) => ({
    iss: op.issuer, aud: op.clientId, iat: Math.floor(Date.now() / 1000), exp: Math.floor(Date.now() / 1000) + 120,
    jti: randomBytes(12).toString('hex'), sub: alice.sub, events: { [EVENT]: {} }, ...extra,
  });
  const sign = (payload, { with: k = key, typ = 'logout+jwt', alg = 'RS256' } = {}) => {
    const header = { alg, kid: rsa.kid };
    if (typ) header.typ = typ;
    return new SignJWT(payload).setProtectedHeader(header).sign(k);
  };
  const without = (name) => { const c = claims(); delete c[name]; return c; };

  const bad = [
    ['signed by another key', await sign(claims(), { with: stranger })],
    ['with a nonce', await sign(claims({ nonce: 'n-0123456789' }))],
    ['without events', await sign(without('events'))],
    ['with another event', await sign(claims({ events: { 'http://schemas.openid.net/event/other': {} } }))],
    ['of another issuer', await sign(claims({ iss: 'http://127.0.0.1:1/other' }))],
    ['for another audience', await sign(claims({ aud: 'someone-else' }))],
    ['without aud', await sign(without('aud'))],
    ['without sub nor sid', await sign(without('sub'))],
    ['without jti', await sign(without('jti'))],
    ['without iat', await sign(without('iat'))],
    ['expired', await sign(claims({ exp: Math.floor(Date.now() / 1000) - 3600 }))],
    ['issued in the future', await sign(claims({ iat: Math.floor(Date.now() / 1000) + 3600 }))],
    ['typed as an access token', await sign(claims(), { typ: 'at+jwt' })],
    ['alg none', `${Buffer.from('{"alg":"none"}').toString('base64url')}.${Buffer.from(JSON.stringify(claims())).toString('base64url')}.`],
    ['HS256 keyed with the public key', await new SignJWT(claims()).setProtectedHeader({ alg: 'HS256' }).sign(Buffer.from(rsa.n))],
    // The client secret is in operators' hands: it must not let them (or a leak) end anyone's sessions.
    ['HS256 keyed with the client secret', await new SignJWT(claims()).setProtectedHeader({ alg: 'HS256', typ: 'logout+jwt' }).sign(Buffer.from(op.clientSecret))],
    ['not a JWT', 'garbage'],
  ];
  for (const [what, token] of bad) {
    const res = await post(url, `logout_token=${encodeURIComponent(token)}`);
    assert.equal(res.status, 400, `${what}: ${res.status} ${res.body}`);
    assert.equal(JSON.parse(res.body).error, 'invalid_request', what);
    assert.equal((await person.get(`${a.base}/app`, { follow: false })).status, 200, `${what}: the session is untouched`);
  }
  const shapes = [
    ['GET', await fetch(url)],
    ['no token', await fetch(url, { method: 'POST', headers: { 'Content-Type': 'application/x-www-form-urlencoded' }, body: 'x=1' })],
    ['two tokens', await fetch(url, { method: 'POST', headers: { 'Content-Type': 'application/x-www-form-urlencoded' }, body: 'logout_token=a&logout_token=b' })],
    ['JSON body', await fetch(url, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: '{"logout_token":"x"}' })],
  ];
  // A body over the limit is answered (400) before it is all read; the client may see the connection close
  // while it still writes. Either way: no 5xx, and nothing ended.
  const huge = await fetch(url, { method: 'POST', headers: { 'Content-Type': 'application/x-www-form-urlencoded' }, body: `logout_token=${'a'.repeat(1 << 20)}` })
    .catch((e) => ({ status: 'closed', error: e }));
  assert.ok(huge.status === 400 || huge.status === 'closed', `1 MB body: ${huge.status}`);
  for (const [what, res] of shapes) {
    assert.ok(res.status === 400 || res.status === 405, `${what}: ${res.status}`);
    assert.ok(JSON.parse(await res.text()).error, `${what}: a JSON error`);
  }
  assert.equal((await person.get(`${a.base}/app`, { follow: false })).status, 200, 'still signed in');

  const good = await post(url, `logout_token=${await sign(claims())}`);
  assert.equal(good.status, 200, `the well-formed token: ${good.body}`);
  assert.equal(good.headers.get('cache-control'), 'no-store');
  await refusedWithin(person, `${a.base}/app`, 1000);
  assert.ok(!/panicked/.test(a.logs()));
});
