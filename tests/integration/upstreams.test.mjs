// Upstreams reached the way real ones are: over TLS with a private CA, hostname verification and a client
// certificate (mTLS), and by names whose DNS record changes while Passerelle runs.
//
// Real parts: node's https server with throw-away CAs made by the openssl CLI (a wrong CA, a certificate for
// another name, a client CA), the OpenID provider (oidc-provider), and a private /etc/hosts in a mount namespace
// (unshare) standing for a DNS record that changes. The upstreams listen on loopback addresses only
// (127.0.0.1, and 127.0.0.2/127.0.0.3 for the two addresses a name moves between).

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';

import { pause, stopAfter } from '../support/http.mjs';
import { createPerson } from '../support/person.mjs';
import { freePort, launchPasserelle, runPasserelle, sessionKey } from '../support/passerelle.mjs';
import { makePki } from '../support/pki.mjs';
import { startProvider } from '../support/provider.mjs';
import { addresses, configToml, providerToml, tv } from '../support/stack.mjs';
import { headerValues, startUpstream } from '../support/upstream.mjs';

const TIMEOUT = { timeout: 120_000 };

function route({ path: routePath, upstream, auth = 'required', tls, extra = '' }) {
  return `[[route]]
path = ${tv(routePath)}
upstream = ${tv(upstream)}
auth = ${tv(auth)}
${auth === 'public' ? '' : 'scopes = ["email"]\n'}${tls ? `upstream_tls = ${tv(tls)}\n` : ''}${extra}
${auth === 'public' ? '' : '[route.headers]\n"X-Auth-Email" = "email"\n'}`;
}

/** A provider, Passerelle with `routes` (a function of nothing: TOML text), a person; extraServer for [server]. */
async function stack(t, routes, { extraServer = '', wrapper, env } = {}) {
  const a = await addresses();
  const op = await stopAfter(t, startProvider({ redirectUris: a.redirectUris, postLogoutRedirectUris: a.postLogoutRedirectUris }));
  const toml = configToml({
    writtenBy: 'tests/integration/upstreams.test.mjs',
    port: a.port,
    adminPort: a.adminPort,
    extraServer,
    providers: providerToml('op', 'oidc', op, { auth_method: 'client_secret_basic', scopes: ['openid', 'email'] }),
    routes,
  });
  const p = await launchPasserelle(t, toml, { adminPort: a.adminPort, wrapper, env });
  return { ...a, p, person: createPerson() };
}

const REFUSED_PAGE = /Connexion au service refusée[\s\S]*un certificat n(&#39;|&#x27;|')a pas été reconnu/;

test('(tls1) https upstream with a private CA: the login lands and identity reaches it over TLS; a wrong CA or the system roots: 502 page, one log line naming the CA file, nothing sent', TIMEOUT, async (t) => {
  const pki = await makePki(t);
  assert.ok(pki, 'openssl is installed by the test script');
  const up = await stopAfter(t, startUpstream({ tls: { key: pki.key, cert: pki.cert } }));
  const s = await stack(t, [
    route({ path: '/', upstream: up.url, tls: { ca_file: pki.caFile } }),
    route({ path: '/wrong-ca', upstream: up.url, tls: { ca_file: pki.otherCaFile } }),
    route({ path: '/system-roots', upstream: up.url }),
  ]);

  const res = await s.person.login(`${s.base}/dossiers?id=7`, 'alice');
  assert.equal(res.status, 200, res.body);
  const seen = up.last();
  assert.equal(seen.url, '/dossiers?id=7');
  assert.deepEqual(headerValues(seen.rawHeaders, 'x-auth-email'), ['alice.martin@example.gouv.fr']);
  const before = up.requests.length;

  for (const [where, caFile] of [['/wrong-ca/x', pki.otherCaFile], ['/system-roots/x', 'system roots']]) {
    const refused = await s.person.get(`${s.base}${where}`);
    assert.equal(refused.status, 502, `${where}: ${refused.body}`);
    assert.match(refused.body, REFUSED_PAGE, where);
    const id = refused.body.match(/assistance : <strong>([^<]+)<\/strong>/)?.[1];
    assert.ok(id, `${where}: the page shows a correlation id:\n${refused.body}`);
    const line = s.p.logs().split('\n').find((l) => l.includes('upstream TLS refused') && l.includes(id));
    assert.ok(line, `${where}: an ERROR line with the page's correlation id ${id}:\n${s.p.logs()}`);
    assert.ok(line.includes(caFile), `${where}: the line names ${caFile}: ${line}`);
    assert.match(line, /ERROR/);
    assert.match(line, /UnknownIssuer/, line);
  }
  assert.equal(up.requests.length, before, 'no request reached the upstream over an untrusted connection');
});

test('(tls2) hostname verification is on by default: a certificate for another name is refused; `sni` names the one it holds; verify_hostname = false accepts it', TIMEOUT, async (t) => {
  const pki = await makePki(t, { serverNames: ['DNS:app.interne.example'] });
  assert.ok(pki, 'openssl is installed by the test script');
  const up = await stopAfter(t, startUpstream({ tls: { key: pki.key, cert: pki.cert } }));
  const s = await stack(t, [
    route({ path: '/by-address', upstream: up.url, auth: 'public', tls: { ca_file: pki.caFile } }),
    route({ path: '/by-name', upstream: up.url, auth: 'public', tls: { ca_file: pki.caFile, sni: 'app.interne.example' } }),
    route({ path: '/unverified-name', upstream: up.url, auth: 'public', tls: { ca_file: pki.caFile, verify_hostname: false } }),
    route({ path: '/wrong-ca-unverified-name', upstream: up.url, auth: 'public', tls: { ca_file: pki.otherCaFile, verify_hostname: false } }),
  ]);

  const refused = await s.person.get(`${s.base}/by-address/`);
  assert.equal(refused.status, 502, refused.body);
  assert.match(refused.body, REFUSED_PAGE);
  assert.ok(s.p.logs().split('\n').some((l) => l.includes('upstream TLS refused') && /NotValidForName|not valid for name/i.test(l)), s.p.logs());

  const byName = await s.person.get(`${s.base}/by-name/`);
  assert.equal(byName.status, 200, byName.body);
  assert.equal(up.last().url, '/by-name/');
  assert.equal(up.last().headers.host, `127.0.0.1:${new URL(s.base).port}`, 'the Host the person asked for is forwarded, whatever the SNI');
  const unverified = await s.person.get(`${s.base}/unverified-name/`);
  assert.equal(unverified.status, 200, unverified.body);
  // Without hostname verification, the chain is still verified.
  const stillChecked = await s.person.get(`${s.base}/wrong-ca-unverified-name/`);
  assert.equal(stillChecked.status, 502, stillChecked.body);
});

test('(tls3) mTLS: an upstream that requires a client certificate gets the configured one (key from env:); without it the handshake is refused and the person gets the 502 page', TIMEOUT, async (t) => {
  const pki = await makePki(t, { client: true });
  assert.ok(pki, 'openssl is installed by the test script');
  const up = await stopAfter(t, startUpstream({
    tls: { key: pki.key, cert: pki.cert, ca: pki.client.ca, requestCert: true, rejectUnauthorized: true },
  }));
  const s = await stack(t, [
    route({ path: '/', upstream: up.url, tls: { ca_file: pki.caFile, cert: pki.client.certFile, key: 'env:UPSTREAM_CLIENT_KEY' } }),
    route({ path: '/no-client-certificate', upstream: up.url, tls: { ca_file: pki.caFile } }),
  ], { env: { UPSTREAM_CLIENT_KEY: await readFile(pki.client.keyFile, 'utf8') } });
  const { person, p } = s;

  const res = await person.login(`${s.base}/mutuel`, 'alice');
  assert.equal(res.status, 200, res.body);
  assert.equal(up.last().clientCertificate, 'passerelle-gateway', 'the upstream saw the client certificate');
  assert.deepEqual(headerValues(up.last().rawHeaders, 'x-auth-email'), ['alice.martin@example.gouv.fr']);
  const count = up.requests.length;

  const refused = await person.get(`${s.base}/no-client-certificate/x`);
  assert.equal(refused.status, 502, refused.body);
  assert.equal(up.requests.length, count, 'nothing reached the app without the client certificate');
  assert.ok(up.refusedHandshakes.length > 0, 'the upstream refused a handshake');
  assert.ok(p.logs().split('\n').some((l) => l.includes('upstream TLS refused')), p.logs());
});

test('(tls4) check refuses what pingora would choke on: a CA file that is not PEM, a key that does not go with its certificate, upstream_tls on an http upstream, mixed schemes in a pool', TIMEOUT, async (t) => {
  const pki = await makePki(t, { client: true });
  assert.ok(pki, 'openssl is installed by the test script');
  const dir = await mkdtemp(path.join(tmpdir(), 'passerelle-upstreams-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const notPem = path.join(dir, 'not.pem');
  await writeFile(notPem, 'hello\n');
  const base = `[server]\nlisten = ["127.0.0.1:${await freePort()}"]\n[session]\nkeys = ["env:PASSERELLE_KEY"]\n`;
  const cases = [
    [`[[route]]\nupstream = "https://127.0.0.1:1"\nauth = "public"\nupstream_tls = { ca_file = ${tv(notPem)} }\n`, 'route[0].upstream_tls.ca_file', 'holds no PEM certificate'],
    [`[[route]]\nupstream = "https://127.0.0.1:1"\nauth = "public"\nupstream_tls = { cert = ${tv(pki.client.certFile)}, key = ${tv(`file:${path.join(pki.dir, 'server.key')}`)} }\n`, 'route[0].upstream_tls.key', 'does not go with the certificate'],
    [`[[route]]\nupstream = "https://127.0.0.1:1"\nauth = "public"\nupstream_tls = { cert = ${tv(pki.client.certFile)} }\n`, 'route[0].upstream_tls.key', 'needs its private key'],
    [`[[route]]\nupstream = "http://127.0.0.1:1"\nauth = "public"\nupstream_tls = { ca_file = ${tv(pki.caFile)} }\n`, 'route[0].upstream_tls', 'write https://'],
    [`[[route]]\nupstream = ["http://127.0.0.1:1", "https://127.0.0.1:2"]\nauth = "public"\n`, 'route[0].upstream', 'mixes http:// and https://'],
    [`[[route]]\nupstream = "https://127.0.0.1:1"\nauth = "public"\nupstream_tls = { sni = "not a name" }\n`, 'route[0].upstream_tls.sni', 'not a DNS name'],
    [`[[route]]\nupstream = "https://127.0.0.1:1"\nauth = "public"\nupstream_tls = { verify_hostname = false }\n`, 'route[0].upstream_tls.verify_hostname', 'false only with `ca_file`'],
    [`[[route]]\nupstream = ["https://a.example:1", "https://b.example:1"]\nauth = "public"\n`, 'route[0].upstream', 'different hosts'],
  ];
  for (const [routeToml, key, message] of cases) {
    await writeFile(path.join(dir, 'config.toml'), `${base}${routeToml}`);
    const r = await runPasserelle(['check', '--config', 'config.toml'], { cwd: dir, env: { PASSERELLE_KEY: sessionKey() } });
    const output = `${r.stdout}${r.stderr}`;
    assert.notEqual(r.code, 0, `${key}: check fails:\n${output}`);
    assert.ok(output.includes(key) && output.includes(message), `${key}: "${message}" expected:\n${output}`);
  }
});

/** Passerelle in its own mount namespace, where /etc/hosts is `hostsFile` (rewritten by the test as DNS would change). */
function privateHosts(hostsFile) {
  return ['unshare', '--user', '--map-root-user', '--mount', 'sh', '-c', 'mount --bind "$0" /etc/hosts && exec "$@"', hostsFile];
}

async function unshareWorks(hostsFile) {
  return new Promise((resolve) => {
    execFile(privateHosts(hostsFile)[0], [...privateHosts(hostsFile).slice(1), 'getent', 'hosts', 'app.passerelle.test'], (e, stdout) => resolve(!e && stdout.includes('127.0.0.2')));
  });
}

/** Two upstreams on one port, on 127.0.0.2 and 127.0.0.3: the two addresses a name moves between. */
async function twoAddresses(t) {
  for (let attempt = 0; ; attempt++) {
    const port = await freePort();
    try {
      const blue = await stopAfter(t, startUpstream({ host: '127.0.0.2', port }));
      const green = await stopAfter(t, startUpstream({ host: '127.0.0.3', port }));
      return { port, blue, green };
    } catch (e) {
      if (attempt > 5) throw e;
    }
  }
}

test('(resolve1) resolve_interval: a single upstream and a pool follow their name to its new address without a restart; a name that stops resolving keeps its last address', TIMEOUT, async (t) => {
  const dir = await mkdtemp(path.join(tmpdir(), 'passerelle-hosts-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const hosts = path.join(dir, 'hosts');
  const point = (ip) => writeFile(hosts, `127.0.0.1 localhost\n${ip} app.passerelle.test\n${ip} pool.passerelle.test\n`);
  await point('127.0.0.2');
  assert.ok(await unshareWorks(hosts), 'unshare (util-linux) can give Passerelle its own /etc/hosts');
  const { port, blue, green } = await twoAddresses(t);
  const s = await stack(t, [
    route({ path: '/single', upstream: `http://app.passerelle.test:${port}`, auth: 'public' }),
    route({ path: '/pool', upstream: [`http://pool.passerelle.test:${port}`, `http://127.0.0.1:${await freePort()}`], auth: 'public' }),
  ], { extraServer: 'resolve_interval = "1s"\n', wrapper: privateHosts(hosts) });

  const served = async (p) => {
    const before = { blue: blue.requests.length, green: green.requests.length };
    const res = await s.person.get(`${s.base}${p}`);
    assert.equal(res.status, 200, `${p}: ${res.body}`);
    return blue.requests.length > before.blue ? 'blue' : green.requests.length > before.green ? 'green' : 'nobody';
  };
  assert.equal(await served('/single/a'), 'blue');
  assert.equal(await served('/pool/a'), 'blue', 'the pool member that answers (the other one is down)');

  await point('127.0.0.3');
  for (const p of ['/single/b', '/pool/b']) {
    const deadline = Date.now() + 15_000;
    let who;
    while ((who = await served(p)) !== 'green') {
      assert.ok(Date.now() < deadline, `${p} follows the name to 127.0.0.3 within a few intervals (last: ${who})`);
      await pause(200); // the next lookup is due every second
    }
  }
  assert.ok(s.p.logs().split('\n').some((l) => l.includes('upstream address changed') && l.includes('127.0.0.3')), s.p.logs());

  // The record disappears: the last good address is kept, with a warning.
  await writeFile(hosts, '127.0.0.1 localhost\n');
  const deadline = Date.now() + 15_000;
  while (!s.p.logs().includes('upstream name did not resolve')) {
    assert.ok(Date.now() < deadline, `a WARN once the name stops resolving:\n${s.p.logs()}`);
    await pause(200); // the next lookup is due every second
  }
  assert.equal(await served('/single/c'), 'green');
  assert.equal(await served('/pool/c'), 'green');
});

test('(pool1) an http pool with health_check: the probe names the upstream in Host, and a member that fails it gets no traffic', TIMEOUT, async (t) => {
  const answer = (status) => (req, res, record) => {
    const body = req.url === '/healthz' ? 'health' : JSON.stringify({ url: record.url });
    res.writeHead(req.url === '/healthz' ? status : 200, { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(body) });
    res.end(body);
  };
  const well = await stopAfter(t, startUpstream({ answer: answer(200) }));
  const sick = await stopAfter(t, startUpstream({ answer: answer(503) }));
  const s = await stack(t, [
    route({ path: '/', upstream: [well.url, sick.url], auth: 'public', extra: 'health_check = "/healthz"\n' }),
  ]);
  const deadline = Date.now() + 15_000;
  // Two rounds (every 5 s): the first one's verdict has then been applied.
  while (sick.requests.filter((r) => r.url === '/healthz').length < 2) {
    assert.ok(Date.now() < deadline, 'the sick member is probed');
    await pause(100); // health checks run at start, then every 5 s
  }
  const probe = sick.requests.find((r) => r.url === '/healthz');
  assert.equal(probe.headers.host, '127.0.0.1', 'the probe carries the upstream host');
  const before = sick.requests.filter((r) => r.url !== '/healthz').length;
  for (let i = 0; i < 10; i++) {
    const res = await s.person.get(`${s.base}/page/${i}`);
    assert.equal(res.status, 200, res.body);
  }
  assert.equal(sick.requests.filter((r) => r.url !== '/healthz').length, before, 'no request to the member that fails its check');
  assert.ok(well.requests.filter((r) => r.url.startsWith('/page/')).length === 10);
});
