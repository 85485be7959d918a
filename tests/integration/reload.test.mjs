// Reload without a dropped request (SIGHUP, `systemctl reload`).
//
// A bounded client loop, on keep-alive and on fresh connections, signed in and not, runs through ten reloads: one
// adds a route, one rotates the session keys, one is invalid, one changes a listener (applied only by an upgrade),
// one removes a route while a request to it is held at the upstream. Every request of the loop must succeed; the new
// route is served as soon as the reload is counted; the session signed in before the rotation stays valid; the
// invalid file leaves the running configuration and says why, with its line; the request in flight finishes on the
// configuration it started with.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';

import { sessionCookies } from '../support/checks.mjs';
import { pause } from '../support/http.mjs';
import { freePort, keepOutput, outputName, spawnPasserelle } from '../support/passerelle.mjs';
import { startStack } from '../support/stack.mjs';

/** GET url with the given agent (false: a fresh connection) and headers: { status, body, retried }. */
function getOnce(url, { agent, headers = {} } = {}) {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { agent, headers }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d) => { body += d; });
      res.on('end', () => resolve({ status: res.statusCode, body, headers: res.headers }));
      res.on('error', reject);
    });
    req.setTimeout(10_000, () => req.destroy(new Error('no answer within 10 s')));
    req.on('error', (e) => {
      e.reusedSocket = req.reusedSocket;
      reject(e);
    });
  });
}

/**
 * As a browser does (RFC 9112 §9.3.1): a request that fails on a reused keep-alive connection before any answer,
 * because the server closed that idle connection as the request was sent, is sent again once on a new one.
 * Nothing else is retried.
 */
async function get(url, opts = {}) {
  try {
    return { ...(await getOnce(url, opts)), retried: false };
  } catch (e) {
    if (!(e.reusedSocket && (e.code === 'ECONNRESET' || e.message === 'socket hang up'))) throw e;
    return { ...(await getOnce(url, { ...opts, agent: false })), retried: true };
  }
}

/**
 * Four workers until stop(): two on keep-alive connections, two on a fresh connection per request; every other
 * request signed in (`cookie`) on /app, the others on /public. Bounded at 50,000 requests.
 */
function clientLoop(t, base, cookie) {
  const keepAlive = new http.Agent({ keepAlive: true, maxSockets: 2 });
  t.after(() => keepAlive.destroy());
  const tally = { requests: 0, retried: 0, failures: [] };
  let running = true;
  const worker = async (agent, i) => {
    for (let n = 0; running && tally.requests < 50_000; n++) {
      const signed = (n + i) % 2 === 0;
      const url = signed ? `${base}/app/loop-${i}-${n}` : `${base}/public/loop-${i}-${n}`;
      try {
        const res = await get(url, { agent, headers: signed ? { cookie } : {} });
        tally.requests++;
        if (res.retried) tally.retried++;
        if (res.status !== 200) tally.failures.push(`${url}: ${res.status} ${res.body.slice(0, 200)}`);
      } catch (e) {
        tally.requests++;
        tally.failures.push(`${url}: ${e.message}`);
      }
    }
  };
  const workers = [worker(keepAlive, 0), worker(keepAlive, 1), worker(false, 2), worker(false, 3)];
  t.after(async () => {
    running = false;
    await Promise.all(workers);
  });
  return {
    tally,
    /** Resolves once the loop has completed at least `n` more requests. */
    async progress(n) {
      const target = tally.requests + n;
      const deadline = Date.now() + 20_000;
      while (tally.requests < target) {
        if (Date.now() > deadline) throw new Error(`the client loop is stuck at ${tally.requests} requests`);
        await pause(5); // waiting for the loop's own requests to complete
      }
    },
    async stop() {
      running = false;
      await Promise.all(workers);
    },
  };
}

async function metric(adminUrl, name) {
  const text = await (await fetch(`${adminUrl}/metrics`)).text();
  const m = text.match(new RegExp(`^${name} (\\d+)$`, 'm'));
  return m ? Number(m[1]) : undefined;
}

/** Waits until the admin counter `name` reaches `value` (the reload was applied or refused). */
async function counted(adminUrl, name, value, logs) {
  const deadline = Date.now() + 10_000;
  for (;;) {
    if ((await metric(adminUrl, name)) >= value) return;
    if (Date.now() > deadline) throw new Error(`${name} did not reach ${value}:\n${logs().slice(-3000)}`);
    await pause(20); // polling the admin listener for the reload to be counted
  }
}

test('(reload1) ten SIGHUP reloads under a client loop: 0 failed requests, a new route served, sessions kept across a key rotation, an invalid file refused with its line', { timeout: 120_000 }, async (t) => {
  // The upstream holds requests to …/slow until released: a request in flight across a reload.
  let release;
  const held = new Promise((resolve) => { release = resolve; });
  let heldArrived;
  const arrived = new Promise((resolve) => { heldArrived = resolve; });
  const s = await startStack(t, {
    upstream: {
      answer: async (req, res, record) => {
        if (req.url.includes('/slow')) {
          heldArrived();
          await held;
        }
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ url: record.url }));
      },
    },
  });
  const { adminUrl, configFile, process: child, logs } = s.passerelle;
  const signedIn = await s.person.login(`${s.base}/app`, 'alice');
  assert.equal(signedIn.status, 200, signedIn.body.slice(0, 500));
  const cookie = sessionCookies(s.person, s.base).map((c) => `${c.name}=${c.value}`).join('; ');
  assert.ok(cookie, 'a session cookie');

  const loop = clientLoop(t, s.base, cookie);
  const { tally } = loop;

  const base = s.toml;
  const addedRoute = `
[[route]]
path = "/nouvelle"
upstream = "${s.upstream.url}"
auth = "public"
`;
  const newKey = randomBytes(32).toString('base64');
  const rotated = (text) => text.replace('keys = ["env:PASSERELLE_KEY"]', `keys = [${JSON.stringify(newKey)}, ${JSON.stringify(s.passerelle.key)}]`);
  assert.notEqual(rotated(base), base, 'the stack config has the key line to rotate');
  const otherPort = await freePort();
  const listenLine = base.match(/^listen = .*$/m)[0];
  let reloads = 0;
  let failedReloads = 0;
  const reload = async (text, { invalid = false } = {}) => {
    // The loop is running across every reload: some requests before it, some after.
    await loop.progress(10);
    await writeFile(configFile, text, { mode: 0o600 });
    child.kill('SIGHUP');
    if (invalid) {
      failedReloads++;
      await counted(adminUrl, 'passerelle_config_reload_failures_total', failedReloads, logs);
    } else {
      reloads++;
      await counted(adminUrl, 'passerelle_config_reloads_total', reloads, logs);
    }
    await loop.progress(10);
  };

  // 1. The same file.
  await reload(base);
  // 2. A route added: served at once.
  assert.equal((await get(`${s.base}/nouvelle/x`)).status, 401, 'before: /nouvelle falls under the protected "/" route (401 to a non-navigation)');
  await reload(base + addedRoute);
  const added = await get(`${s.base}/nouvelle/x`);
  assert.equal(added.status, 200, `the new route is served after the reload: ${added.status}`);
  assert.equal(JSON.parse(added.body).url, '/nouvelle/x');
  // 3. Keys rotated: a new key first, the old one kept to decrypt. The session signed in before stays valid, and a
  //    login now issues a cookie the old key alone could not open.
  await reload(rotated(base + addedRoute));
  assert.equal((await get(`${s.base}/app/after-rotation`, { headers: { cookie } })).status, 200, 'the old session is still valid');
  const newcomer = s.newPerson();
  assert.equal((await newcomer.login(`${s.base}/app/new`, 'alice')).status, 200, 'a login after the rotation');
  const newCookie = sessionCookies(newcomer, s.base).map((c) => `${c.name}=${c.value}`).join('; ');
  // 4. An invalid file: refused, the running configuration kept (the added route still served), the error logged
  //    with its file line and key.
  const invalid = `${rotated(base + addedRoute)}
[[route]]
path = "/cassee"
upstream = "${s.upstream.url}"
auth = "peut-etre"
`;
  const invalidLine = invalid.split('\n').findIndex((l) => l.startsWith('auth = "peut-etre"')) + 1;
  await reload(invalid, { invalid: true });
  assert.match(logs(), new RegExp(`configuration reload refused.*config\\.toml:${invalidLine}: route\\[\\d\\]\\.auth`), logs().slice(-2000));
  assert.equal((await get(`${s.base}/nouvelle/y`)).status, 200, 'the running configuration still serves the added route');
  assert.equal((await get(`${s.base}/app/still`, { headers: { cookie } })).status, 200, 'and the rotated keys');
  // 5. A listener changed: logged as needing an upgrade; everything else applied, the old listener keeps serving.
  await reload(rotated(base + addedRoute).replace(listenLine, `listen = ["127.0.0.1:${otherPort}"]`));
  assert.ok(logs().split('\n').some((l) => /WARN/.test(l) && l.includes('server.listen') && l.includes('binary upgrade')), `a warning names server.listen:\n${logs().slice(-2000)}`);
  // 6-8. Three more, back and forth.
  await reload(rotated(base + addedRoute));
  await reload(`${rotated(base + addedRoute)}\n# reload 7\n`);
  await reload(rotated(base + addedRoute));
  // 9. The added route removed while a request to it is held at the upstream: that request finishes on the
  //    configuration it started with; new requests no longer find the route.
  const inFlight = get(`${s.base}/nouvelle/slow`);
  await arrived;
  await reload(rotated(base));
  assert.equal((await get(`${s.base}/nouvelle/z`)).status, 401, 'the route is gone for new requests');
  release();
  const finished = await inFlight;
  assert.equal(finished.status, 200, `the request in flight finished: ${finished.status} ${finished.body}`);
  // 10. Back to the first file.
  await reload(base);
  assert.equal((await get(`${s.base}/app/end`, { headers: { cookie } })).status, 200, 'the session is valid on the original key alone');
  const sealedWithNewKey = await get(`${s.base}/app/end`, { headers: { cookie: newCookie } });
  assert.equal(sealedWithNewKey.status, 401, `a cookie sealed with the rotated-in key no longer opens once that key is gone: ${sealedWithNewKey.status}`);

  await loop.stop();
  t.diagnostic(`client loop: ${tally.requests} requests through ${reloads + failedReloads} reloads, ${tally.failures.length} failed, ${tally.retried} resent after a keep-alive close`);
  assert.deepEqual(tally.failures, [], 'no request of the loop failed');
  assert.ok(tally.requests >= 100, `the loop ran throughout (${tally.requests} requests)`);
  assert.equal(reloads + failedReloads, 10);
  assert.equal(await metric(adminUrl, 'passerelle_config_reloads_total'), 9);
  assert.equal(await metric(adminUrl, 'passerelle_config_reload_failures_total'), 1);
});

test('(upgrade1) binary upgrade: `run --upgrade` takes the listening sockets over, SIGQUIT hands them and ends the old process; the client loop sees 0 failed requests, the session stays valid', { timeout: 120_000 }, async (t) => {
  const socket = path.join(tmpdir(), `passerelle-upgrade-test-${randomBytes(4).toString('hex')}.sock`);
  t.after(() => rm(socket, { force: true }));
  const s = await startStack(t, {
    config: { extraServer: `upgrade_socket = ${JSON.stringify(socket)}\ngrace_period = "1s"\nshutdown_timeout = "2s"\n` },
  });
  const old = s.passerelle;
  const signedIn = await s.person.login(`${s.base}/app`, 'alice');
  assert.equal(signedIn.status, 200, signedIn.body.slice(0, 500));
  const cookie = sessionCookies(s.person, s.base).map((c) => `${c.name}=${c.value}`).join('; ');
  const oldPid = old.process.pid;
  const loop = clientLoop(t, s.base, cookie);
  await loop.progress(50);

  // The new process: same file, same key; it waits on the upgrade socket for the sockets.
  const next = await spawnPasserelle(['run', '--upgrade', '--config', old.configFile], {
    cwd: path.dirname(old.configFile),
    env: { ...process.env, RUST_LOG: 'info', PASSERELLE_KEY: old.key },
  });
  let nextOutput = '';
  next.stdout.on('data', (d) => { nextOutput += d; });
  next.stderr.on('data', (d) => { nextOutput += d; });
  const nextExit = new Promise((resolve) => next.on('close', (code, signal) => resolve({ code, signal })));
  t.after(async () => {
    next.kill('SIGINT');
    await nextExit;
    await keepOutput(outputName(t, { prefix: 'reload_', suffix: 'new_process' }), s.toml, nextOutput);
  });
  const deadline = Date.now() + 10_000;
  while (!existsSync(socket)) {
    if (Date.now() > deadline) throw new Error(`the new process never opened ${socket}:\n${nextOutput}`);
    await pause(10); // waiting for the new process to listen on the upgrade socket
  }
  const oldExit = new Promise((resolve) => old.process.once('close', (code, signal) => resolve({ code, signal })));
  old.process.kill('SIGQUIT');
  const ended = old.exited() || await oldExit;
  assert.equal(ended.code, 0, `the old process ended cleanly: ${JSON.stringify(ended)}\n${old.logs().slice(-2000)}`);

  // Only the new process is left: everything from now on is its answer.
  await loop.progress(200);
  assert.equal((await get(`${s.base}/app/after-upgrade`, { headers: { cookie } })).status, 200, 'the session is valid on the new process');
  const ready = await fetch(`${old.adminUrl}/ready`);
  assert.equal(ready.status, 200, 'the admin listener was handed over too');
  assert.notEqual(next.pid, oldPid);
  await loop.stop();
  const { tally } = loop;
  t.diagnostic(`client loop: ${tally.requests} requests through one binary upgrade, ${tally.failures.length} failed, ${tally.retried} resent after a keep-alive close`);
  assert.deepEqual(tally.failures, [], 'no request of the loop failed');
});
