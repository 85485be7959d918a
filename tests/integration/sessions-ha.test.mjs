// Server-side sessions where Redis is highly available or large identities: a Sentinel failover (one master, one
// replica, three sentinels on 127.0.0.1) loses no session; a three-node Redis Cluster carries sessions, indexes and
// revocations across slots; a ProConnect-sized identity with a 10 KB claim keeps the cookie under 200 bytes.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { sessionCookies } from '../support/checks.mjs';
import { runPasserelle } from '../support/passerelle.mjs';
import { createPerson } from '../support/person.mjs';
import { ACCOUNTS, SCOPE_CLAIMS } from '../support/provider.mjs';
import { startCluster, startSentinelSet, waitFor } from '../support/redis.mjs';
import {
  lastSub, loggedIn, personWith, refusedWithin, replicas,
} from '../support/replicas.mjs';
import { PREFIX, q } from '../support/stack.mjs';

const { alice } = ACCOUNTS;

test('Sentinel: a master killed and failed over loses no session; logins, browsing and revocation go on', async (t) => {
  const set = await startSentinelSet(t);
  const redisToml = `[session.redis]
sentinel = { master = ${q(set.masterName)}, nodes = [${set.sentinels.map((s) => q(s.url)).join(', ')}] }
key_prefix = "ha:"
timeout = "300ms"
`;
  const world = await replicas(t, { redisToml, recheck: '1s', extraSession: 'redis_grace = "30s"\n' });
  const [a, b] = world.nodes;
  const before = await loggedIn(world, 0);
  const check = await runPasserelle(['check', '--online', '--config', a.configFile], { env: { PASSERELLE_KEY: a.key } });
  assert.equal(check.code, 0, check.stderr);
  assert.match(check.stdout, /session store: sentinel \(redis [0-9.]+\), role master, 1 connected replica/);
  assert.match(check.stdout, new RegExp(`back-channel logout URL to register .*: ${a.base}${PREFIX}/backchannel-logout`));

  await set.failover();
  // While the sentinels agree on the new master, a replica may answer 503 for what it has not cached (nothing
  // is lost); it is back as soon as its admin /ready sees Redis again ("redis: up").
  for (const node of [a, b]) {
    await waitFor(`${node.base} to see Redis after the failover`, async () => /redis: up/.test(await (await fetch(`${node.adminUrl}/ready`)).text()), 20_000);
  }
  // The session written before the failover is on the promoted replica: B, which never cached it, serves it.
  const onB = await before.get(`${b.base}/app/after-failover`, { follow: false });
  assert.equal(onB.status, 200, `B after the failover: ${onB.status}\n${b.logs().slice(-1500)}`);
  assert.equal(lastSub(world.upstream), alice.sub);
  const during = await loggedIn(world, 1, 'helene');
  assert.equal((await during.get(`${a.base}/app`, { follow: false })).status, 200, 'a login after the failover is served by A');

  // Revocation still reaches every replica: the channel followed the master.
  const copy = createPerson();
  for (const c of sessionCookies(before, a.base)) copy.jar.set('http://127.0.0.1/', c.name, c.value, { path: '/' });
  assert.equal((await copy.get(`${b.base}/app/cached`, { follow: false })).status, 200, 'B has the session cached');
  const lo = await before.get(`${a.base}${PREFIX}/logout`, { follow: false });
  assert.equal(lo.status, 302);
  await refusedWithin(copy, `${b.base}/app/revoked`, 1000);
  assert.equal((await during.get(`${b.base}/app`, { follow: false })).status, 200, 'another session is untouched');
  const ready = await fetch(`${b.adminUrl}/ready`);
  assert.equal(ready.status, 200);
  assert.match(await ready.text(), /redis: up \(sentinel\)/);
});

test('Cluster: sessions, the subject index and revocations across slots on a three-node Redis Cluster', async (t) => {
  const cluster = await startCluster(t);
  const redisToml = `[session.redis]
cluster = [${cluster.urls.map(q).join(', ')}]
key_prefix = "cl:"
timeout = "500ms"
`;
  const world = await replicas(t, { redisToml });
  const [a, b] = world.nodes;
  const people = [];
  for (let i = 0; i < 4; i++) people.push(await loggedIn(world, i % 2));
  for (const p of people) assert.equal((await p.get(`${b.base}/app`, { follow: false })).status, 200);
  const check = await runPasserelle(['check', '--online', '--config', a.configFile], { env: { PASSERELLE_KEY: a.key } });
  assert.equal(check.code, 0, check.stderr);
  assert.match(check.stdout, /session store: cluster, state ok, 16384 of 16384 slots served, 3 known nodes/);
  const keysOn = await Promise.all(cluster.nodes.map(async (n) => (await n.cli('--scan', '--pattern', 'cl:*')).trim().split('\n').filter(Boolean)));
  const all = keysOn.flat();
  assert.equal(all.filter((k) => k.startsWith('cl:s:')).length, 4, `four stored sessions: ${all}`);
  // Session values, metadata and the subject index are keys of their own, in their own slots: nothing relies
  // on two of them sharing a node (a multi-key command across slots would have failed with CROSSSLOT).
  assert.ok(keysOn.filter((k) => k.length > 0).length >= 2, `keys spread over the nodes: ${keysOn.map((k) => k.length)}`);

  // Logout on B ends the session on A within a second; an administrator ends the others.
  const [first, ...others] = people;
  const copy = personWith(sessionCookies(first, b.base));
  assert.equal((await first.get(`${b.base}${PREFIX}/logout`, { follow: false })).status, 302);
  await refusedWithin(copy, `${a.base}/app`, 1000);
  const revoke = await runPasserelle(['sessions', 'revoke', '--sub', alice.sub, '--config', a.configFile], { env: { PASSERELLE_KEY: a.key } });
  assert.equal(revoke.code, 0, revoke.stderr);
  assert.equal(JSON.parse(revoke.stdout).revoked, 3);
  for (const p of others) await refusedWithin(p, `${b.base}/app`, 1000);
});

test('a ProConnect-sized identity with a 10 KB claim: the cookie stays under 200 bytes, login and logout work', async (t) => {
  const { startRedis } = await import('../support/redis.mjs');
  const redis = await startRedis(t);
  const big = 'x'.repeat(10 * 1024);
  const accounts = {
    agent: {
      sub: 'f1e2d3c4-agent-0003', email: 'agent.public@interieur.gouv.fr', given_name: 'Agent', family_name: 'Public',
      usual_name: 'Public', siret: '21340126800130', organizational_unit: big,
    },
  };
  const world = await replicas(t, {
    n: 1,
    redisToml: `[session.redis]\nurl = ${q(redis.url)}\n`,
    provider: { accounts, scopes: { ...SCOPE_CLAIMS, profile: [...SCOPE_CLAIMS.profile, 'usual_name', 'siret', 'organizational_unit'] } },
  });
  const [a] = world.nodes;
  const person = await loggedIn(world, 0, 'agent');
  const cookies = person.jar.all(a.base).filter((c) => c.name.startsWith('passerelle'));
  const header = cookies.map((c) => `${c.name}=${c.value}`).join('; ');
  assert.ok(header.length < 200, `every Passerelle cookie together: ${header.length} bytes (${cookies.map((c) => c.name)})`);
  const info = await person.api(`${a.base}${PREFIX}/userinfo`);
  assert.equal(info.status, 200);
  assert.equal(JSON.parse(info.body).claims.organizational_unit, big, 'the whole claim is kept, server-side');
  const copy = personWith(cookies);
  const lo = await person.get(`${a.base}${PREFIX}/logout`, { follow: false });
  assert.equal(lo.status, 302);
  assert.ok(new URL(lo.location).searchParams.get('id_token_hint'), 'the id_token, kept in Redis, is the logout hint');
  await refusedWithin(copy, `${a.base}/app`, 1000);
});
