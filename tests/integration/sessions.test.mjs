// Sessions an administration can revoke: two Passerelle replicas on one real Redis (redis-server from apt),
// in front of a real OpenID provider. Logging out on one replica ends the session on the other within a second;
// a cookie copied before logout is refused everywhere; an administrator revokes a subject's sessions from the
// CLI; Redis going away and coming back is defined behaviour.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { assertLoginRedirect, sessionCookies } from '../support/checks.mjs';
import { runPasserelle } from '../support/passerelle.mjs';
import { createPerson } from '../support/person.mjs';
import { ACCOUNTS } from '../support/provider.mjs';
import { startRedis, waitFor } from '../support/redis.mjs';
import {
  ADMIN_TOKEN, lastSub, loggedIn, personWith, redisTable, refusedWithin, replicas,
} from '../support/replicas.mjs';
import { PREFIX } from '../support/stack.mjs';

const { alice } = ACCOUNTS;
for (const store of ['redis', 'cookie']) {
  test(`(${store}) log in on A, browse on B; logout on B ends the session on A within 1 s; a copied cookie is refused on both`, async (t) => {
    const redis = await startRedis(t);
    const world = await replicas(t, { store, redisToml: redisTable(redis.url) });
    const [a, b] = world.nodes;
    const person = await loggedIn(world, 0);
    const cookies = sessionCookies(person, a.base);
    if (store === 'redis') {
      assert.equal(cookies.length, 1, 'one ticket cookie');
      assert.ok(`${cookies[0].name}=${cookies[0].value}`.length < 200, `ticket cookie under 200 bytes: ${cookies[0].value.length}`);
      assert.equal(sessionCookies(person, a.base, 'passerelle_idt').length, 0, 'no id_token cookie: it stays server-side');
      const keys = await redis.cli('--scan', '--pattern', 't:s:*');
      assert.equal(keys.trim().split('\n').length, 1, `one stored session: ${keys}`);
      const dump = await redis.cli('--scan');
      const values = await Promise.all(dump.trim().split('\n').map(async (k) => `${k}=${await redis.cli('DUMP', k)}`));
      for (const secret of [alice.email, alice.sub, 'Martin']) {
        assert.ok(!values.join('\n').includes(secret), `Redis holds ${secret} in clear`);
      }
    }
    const copy = personWith(cookies);

    const onB = await person.get(`${b.base}/app/b`, { follow: false });
    assert.equal(onB.status, 200, `B serves A's session: ${onB.status}`);
    assert.equal(lastSub(world.upstream), alice.sub);
    assert.equal((await copy.get(`${a.base}/app/copy`, { follow: false })).status, 200, 'the copy works before logout');
    // A has the session cached: what follows is served from memory, and must still end.
    assert.equal((await person.get(`${a.base}/app/a`, { follow: false })).status, 200);

    const lo = await person.get(`${b.base}${PREFIX}/logout`, { follow: false });
    assert.equal(lo.status, 302, `logout on B: ${lo.status}`);
    const elapsed = await refusedWithin(copy, `${a.base}/app/after`, 1000);
    assert.ok(elapsed <= 1000, `A refused within ${elapsed} ms`);
    assertLoginRedirect(await copy.get(`${a.base}/app/x`, { follow: false }), { op: world.op, base: a.base }, 'copied cookie on A');
    assertLoginRedirect(await copy.get(`${b.base}/app/x`, { follow: false }), { op: world.op, base: b.base }, 'copied cookie on B');
    const api = await copy.api(`${a.base}/app/x`);
    assert.equal(api.status, 401, 'API call with the copied cookie');
    assert.match(a.logs() + b.logs(), /session revoked.*logout|cause.*logout/, 'audit line for the logout revocation');
  });
}

test('admin: list and revoke a subject\'s sessions from the CLI; the bearer token is required', async (t) => {
  const redis = await startRedis(t);
  const world = await replicas(t, { redisToml: redisTable(redis.url) });
  const [a, b] = world.nodes;
  const one = await loggedIn(world, 0);
  const two = await loggedIn(world, 1);
  const other = await loggedIn(world, 0, 'helene');

  const list = await runPasserelle(['sessions', 'list', '--sub', alice.sub, '--config', a.configFile], { env: { PASSERELLE_KEY: a.key } });
  assert.equal(list.code, 0, `sessions list: ${list.stderr}`);
  const listed = JSON.parse(list.stdout).sessions;
  assert.equal(listed.length, 2, `alice has two sessions: ${list.stdout}`);
  assert.ok(listed.every((s) => s.provider === 'op' && s.expires > s.created));

  for (const auth of [undefined, 'Bearer wrong-token-wrong-token-wrong', `Basic ${ADMIN_TOKEN}`]) {
    const res = await fetch(`${a.adminUrl}/sessions/revoke?sub=${encodeURIComponent(alice.sub)}`, {
      method: 'POST', headers: auth ? { Authorization: auth } : {},
    });
    assert.equal(res.status, 401, `admin API with ${auth}`);
  }
  assert.equal((await one.get(`${b.base}/app`, { follow: false })).status, 200, 'nothing revoked without the token');

  const revoke = await runPasserelle(['sessions', 'revoke', '--sub', alice.sub, '--config', b.configFile], { env: { PASSERELLE_KEY: b.key } });
  assert.equal(revoke.code, 0, `sessions revoke: ${revoke.stderr}`);
  assert.equal(JSON.parse(revoke.stdout).revoked, 2);
  for (const [who, node] of [[one, a], [one, b], [two, a], [two, b]]) {
    await refusedWithin(who, `${node.base}/app/after`, 1000);
  }
  assert.equal((await other.get(`${a.base}/app`, { follow: false })).status, 200, 'another subject is untouched');
  assert.match(a.logs() + b.logs(), /session revoked[^\n]*admin|admin[^\n]*session revoked/);
  const after = await runPasserelle(['sessions', 'list', '--sub', alice.sub, '--config', a.configFile], { env: { PASSERELLE_KEY: a.key } });
  assert.deepEqual(JSON.parse(after.stdout).sessions, []);
});

test('Redis stopped mid-run: cached sessions keep working within the grace, new logins get a French 503, then recovery', async (t) => {
  const redis = await startRedis(t);
  const world = await replicas(t, { n: 1, redisToml: redisTable(redis.url), extraSession: 'redis_grace = "60s"\n' });
  const [a] = world.nodes;
  const person = await loggedIn(world, 0);
  await redis.stop();

  const served = await person.get(`${a.base}/app/during`, { follow: false });
  assert.equal(served.status, 200, 'a cached session is served while Redis is down');
  const newcomer = createPerson();
  const attempt = await newcomer.login(`${a.base}/app`, 'helene');
  assert.equal(attempt.status, 503, `a new login while Redis is down: ${attempt.status} ${attempt.url}`);
  assert.match(attempt.body, /indisponible/);
  assert.match(attempt.body, /Se reconnecter/);
  const ready = await fetch(`${a.adminUrl}/ready`);
  assert.equal(ready.status, 200, '/ready: still ready within the grace (every replica sees the same Redis)');
  assert.match(await ready.text(), /redis: unreachable for \d+s, cached sessions served for \d+s more/);
  const metrics = await (await fetch(`${a.adminUrl}/metrics`)).text();
  assert.match(metrics, /passerelle_store_errors_total [1-9]/);

  await redis.start();
  // Everything in the lost Redis is gone: the session was not persisted (no RDB/AOF in this test), so recovery
  // means a new login works again and the old ticket is refused, not served from a stale cache forever.
  await waitFor('/ready to see Redis again', async () => /redis: up/.test(await (await fetch(`${a.adminUrl}/ready`)).text()));
  const again = await newcomer.login(`${a.base}/app`, 'helene');
  assert.equal(again.status, 200, `login after recovery: ${again.status}`);
  assert.ok(!/panicked/.test(a.logs()), 'no panic');
});

test('Redis down longer than the grace: a cached session gets a French 503 page, not a login loop', async (t) => {
  const redis = await startRedis(t);
  const world = await replicas(t, {
    n: 1, redisToml: redisTable(redis.url), recheck: '1s', extraSession: 'redis_grace = "1s"\n',
  });
  const [a] = world.nodes;
  const person = await loggedIn(world, 0);
  await redis.stop();
  // Within a second the cached verdict is due again, Redis fails, and one more second later the grace is over.
  const page = await waitFor('the 503 page', async () => {
    const r = await person.get(`${a.base}/app/late`, { follow: false });
    assert.ok(r.status === 200 || r.status === 503, `while Redis is down: ${r.status} ${r.location ?? ''}`);
    return r.status === 503 ? r : undefined;
  }, 10_000);
  assert.match(page.headers['content-type'], /text\/html/);
  assert.match(page.body, /Service momentanément indisponible/);
  assert.equal(page.headers['retry-after'], '5');
  assert.ok(sessionCookies(person, a.base).length > 0, 'the cookie is kept: the session may well be fine');
  assert.equal((await fetch(`${a.adminUrl}/ready`)).status, 503, '/ready: not ready once the grace is over');
  await redis.start();
  // The session was lost with Redis' memory (no persistence here): after recovery, a login, not a 503.
  await waitFor('recovery', async () => (await person.get(`${a.base}/app/back`, { follow: false })).status === 302);
  assert.ok(!/panicked/.test(a.logs()), 'no panic');
});
