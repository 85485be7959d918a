// The Redis store as operators run it: TLS with a private CA, an ACL user and password from the environment, a
// unix socket; a start with Redis down; and what the steady state costs Redis (nothing per request) and shows in
// /metrics.

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';

import { pause } from '../support/http.mjs';
import { freePort, runPasserelle } from '../support/passerelle.mjs';
import { createPerson } from '../support/person.mjs';
import { startRedis, waitFor } from '../support/redis.mjs';
import { sessionCookies } from '../support/checks.mjs';
import {
  loggedIn, personWith, redisTable, refusedWithin, replicas,
} from '../support/replicas.mjs';
import { PREFIX, q } from '../support/stack.mjs';

const PASSWORD = 'redis-acl-password-0123456789';

function openssl(args, cwd) {
  return new Promise((resolve, reject) => {
    execFile('openssl', args, { cwd }, (e, stdout, stderr) => (e ? reject(new Error(`openssl ${args[0]}: ${stderr}`)) : resolve(stdout)));
  });
}

test('TLS with a private CA, an ACL user with its password from the environment, and a unix socket', async (t) => {
  const dir = await mkdtemp(path.join(tmpdir(), 'passerelle-redis-tls-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  await openssl(['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '1', '-subj', '/CN=Passerelle test CA'], dir);
  await openssl(['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'server.key', '-out', 'server.pem', '-days', '1',
    '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1', '-addext', 'basicConstraints=critical,CA:FALSE',
    '-CA', 'ca.pem', '-CAkey', 'ca.key'], dir);
  const tlsPort = await freePort();
  const socket = path.join(dir, 'redis.sock');
  const redis = await startRedis(t, {
    args: ['--tls-port', String(tlsPort), '--tls-cert-file', path.join(dir, 'server.pem'), '--tls-key-file', path.join(dir, 'server.key'),
      '--tls-ca-cert-file', path.join(dir, 'ca.pem'), '--tls-auth-clients', 'no', '--unixsocket', socket, '--unixsocketperm', '700',
      '--user', 'default', 'off', '--user', 'passerelle', 'on', `>${PASSWORD}`, '~*', '&*', '+@all'],
  });
  process.env.PASSERELLE_TEST_REDIS_PASSWORD = PASSWORD;
  t.after(() => { delete process.env.PASSERELLE_TEST_REDIS_PASSWORD; });
  const credentials = 'username = "passerelle"\npassword = "env:PASSERELLE_TEST_REDIS_PASSWORD"\n';
  for (const [what, table] of [
    ['rediss:// with ca_file', `[session.redis]\nurl = ${q(`rediss://127.0.0.1:${tlsPort}`)}\nca_file = ${q(path.join(dir, 'ca.pem'))}\n${credentials}`],
    ['unix socket', `[session.redis]\nurl = ${q(`unix://${socket}`)}\n${credentials}`],
  ]) {
    const world = await replicas(t, { n: 1, redisToml: table });
    const [a] = world.nodes;
    const person = await loggedIn(world, 0);
    assert.equal((await person.get(`${a.base}/app`, { follow: false })).status, 200, what);
    const check = await runPasserelle(['check', '--online', '--config', a.configFile], { env: { PASSERELLE_KEY: a.key } });
    assert.equal(check.code, 0, `${what}: ${check.stderr}`);
    assert.match(check.stdout, /session store: standalone \(redis 7[0-9.]*\), role master/, what);
    assert.ok(!a.logs().includes(PASSWORD), `${what}: the password is never logged`);
    await a.stop();
  }
  // A wrong password, and TLS without the private CA: `check --online` says so, without the secret.
  const bad = await replicas(t, { n: 1, redisToml: redisTable(redis.url), readyPath: '/health' });
  for (const [what, table, words] of [
    ['wrong password', `[session.redis]\nurl = ${q(redis.url)}\nusername = "passerelle"\npassword = "not-the-password-at-all"\n`, /WRONGPASS|invalid username-password|auth/i],
    ['unknown CA', `[session.redis]\nurl = ${q(`rediss://127.0.0.1:${tlsPort}`)}\n${credentials}`, /certificate|tls|UnknownIssuer/i],
  ]) {
    const file = bad.nodes[0].configFile;
    const text = (await readFile(file, 'utf8')).replace(/\[session\.redis\][\s\S]*?(?=\n\[providers)/, table);
    await writeFile(file, text);
    const check = await runPasserelle(['check', '--online', '--config', file], { env: { PASSERELLE_KEY: bad.nodes[0].key } });
    assert.equal(check.code, 1, `${what}: ${check.stdout}`);
    assert.match(check.stderr, /session\.redis/, what);
    assert.match(check.stderr, words, `${what}: ${check.stderr}`);
    assert.ok(!check.stderr.includes('not-the-password'), `${what}: the password is not echoed`);
  }
});

test('run starts with Redis down: it serves, /ready says so, logins get a 503 page, then it recovers by itself', async (t) => {
  const redis = await startRedis(t);
  await redis.stop();
  const world = await replicas(t, { n: 1, redisToml: redisTable(redis.url), readyPath: '/health' });
  const [a] = world.nodes;
  const ready = await fetch(`${a.adminUrl}/ready`);
  assert.match(await ready.text(), /redis: unreachable/);
  const person = createPerson();
  const attempt = await person.login(`${a.base}/app`, 'alice');
  assert.equal(attempt.status, 503, `login with Redis down: ${attempt.status}`);
  assert.match(attempt.body, /indisponible/);
  await redis.start();
  await waitFor('/ready to see Redis', async () => /redis: up/.test(await (await fetch(`${a.adminUrl}/ready`)).text()));
  const again = await person.login(`${a.base}/app`, 'alice');
  assert.equal(again.status, 200, `login after Redis came up: ${again.status}`);
});

test('steady state: no Redis command per request; metrics show revocations by cause, latency and active sessions', async (t) => {
  const redis = await startRedis(t);
  const world = await replicas(t, { redisToml: redisTable(redis.url) });
  const [a, b] = world.nodes;
  const person = await loggedIn(world, 0);
  assert.equal((await person.get(`${b.base}/app`, { follow: false })).status, 200);
  const commands = async () => {
    const stats = await redis.cli('INFO', 'commandstats');
    return [...stats.matchAll(/cmdstat_(\w+):calls=(\d+)/g)]
      .filter(([, name]) => !['info', 'ping'].includes(name))
      .reduce((sum, [, , n]) => sum + Number(n), 0);
  };
  const before = await commands();
  for (let i = 0; i < 50; i++) {
    const node = i % 2 ? a : b;
    assert.equal((await person.get(`${node.base}/app/${i}`, { follow: false })).status, 200);
  }
  assert.equal(await commands(), before, '100 requests on two replicas sent no command to Redis');

  const metrics = async (node) => (await fetch(`${node.adminUrl}/metrics`)).text();
  assert.match(await metrics(a), /passerelle_sessions_active\{provider="op"\} 1\n/);
  const copy = personWith(sessionCookies(person, a.base));
  assert.equal((await person.get(`${a.base}${PREFIX}/logout`, { follow: false })).status, 302);
  await refusedWithin(copy, `${b.base}/app`, 1000);
  const text = await metrics(a);
  assert.match(text, /passerelle_revocations_total\{reason="logout"\} 1\n/);
  assert.match(text, /passerelle_revocations_total\{reason="admin"\} 0\n/);
  assert.match(text, /passerelle_revocations_total\{reason="backchannel"\} 0\n/);
  assert.match(text, /passerelle_sessions_active\{provider="op"\} 0\n/);
  assert.match(text, /passerelle_store_latency_seconds_bucket\{le="\+Inf"\} [1-9]\d*\n/);
  assert.match(text, /passerelle_store_errors_total 0\n/);
  const onB = await metrics(b);
  assert.match(onB, /passerelle_sessions_revoked_presented_total [1-9]/, onB);
});

test('a revocation whose message is lost is caught by the recheck, within recheck_interval', async (t) => {
  const redis = await startRedis(t);
  for (const store of ['redis', 'cookie']) {
    const world = await replicas(t, { n: 1, store, recheck: '1s', redisToml: redisTable(redis.url) });
    const [a] = world.nodes;
    const person = await loggedIn(world, 0);
    const ids = (await redis.cli('--scan', '--pattern', 't:m:*')).trim().split('\n').filter(Boolean)
      .map((k) => k.slice('t:m:'.length));
    assert.equal(ids.length, 1, `one indexed session: ${ids}`);
    const [id] = ids;
    // What another replica's revocation leaves in Redis, without its message on the channel.
    if (store === 'redis') await redis.cli('DEL', `t:s:${id}`);
    else await redis.cli('SET', `t:r:${id}`, '1', 'EX', '600');
    const elapsed = await refusedWithin(person, `${a.base}/app`, 5000);
    assert.ok(elapsed <= 3000, `${store}: refused after ${elapsed} ms (recheck_interval 1 s)`);
    await a.stop();
    await redis.cli('FLUSHALL');
  }
});

test('a new login in the same browser (a step-up, say) ends the session it replaces, on every replica', async (t) => {
  const redis = await startRedis(t);
  for (const store of ['redis', 'cookie']) {
    const world = await replicas(t, { store, redisToml: redisTable(redis.url) });
    const [a, b] = world.nodes;
    const person = await loggedIn(world, 0);
    const old = personWith(sessionCookies(person, a.base));
    assert.equal((await old.get(`${b.base}/app`, { follow: false })).status, 200);
    const again = await person.login(`${a.base}${PREFIX}/login?rd=/app/again`, 'alice');
    assert.equal(again.status, 200, `${store}: second login`);
    await refusedWithin(old, `${b.base}/app/old`, 1000);
    assert.equal((await person.get(`${b.base}/app/new`, { follow: false })).status, 200, `${store}: the new session works`);
    assert.match(await (await fetch(`${a.adminUrl}/metrics`)).text(), /passerelle_revocations_total\{reason="replaced"\} 1\n/);
    for (const n of world.nodes) await n.stop();
  }
});

test('a session kept alive past its first idle deadline is still found and ended by subject', async (t) => {
  const redis = await startRedis(t);
  for (const store of ['redis', 'cookie']) {
    const world = await replicas(t, { n: 1, store, redisToml: redisTable(redis.url), extraSession: 'idle_timeout = "2s"\n' });
    const [a] = world.nodes;
    const person = await loggedIn(world, 0);
    // Browsing keeps it alive past the idle deadline it had at login (time passing is the scenario here).
    for (let i = 0; i < 8; i++) {
      await pause(500);
      assert.equal((await person.get(`${a.base}/app/${i}`, { follow: false })).status, 200, `${store}: request ${i}`);
    }
    const list = await runPasserelle(['sessions', 'list', '--sub', 'a1b2c3d4-alice-0001', '--config', a.configFile], { env: { PASSERELLE_KEY: a.key } });
    assert.equal(JSON.parse(list.stdout).sessions.length, 1, `${store}: listed after 4 s of use: ${list.stdout}`);
    const copy = personWith(sessionCookies(person, a.base));
    const revoke = await runPasserelle(['sessions', 'revoke', '--sub', 'a1b2c3d4-alice-0001', '--config', a.configFile], { env: { PASSERELLE_KEY: a.key } });
    assert.equal(JSON.parse(revoke.stdout).revoked, 1, `${store}: ${revoke.stdout}`);
    await refusedWithin(copy, `${a.base}/app/after`, 1000);
    await a.stop();
  }
});
