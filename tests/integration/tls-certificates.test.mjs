// The TLS front door's certificates and its https-only helpers (issue 13, parts 1-3): `server.tls` with several
// certificates chosen by SNI, renewed when their files change on disk and on SIGHUP without dropping an open
// connection; `server.hsts` on every answer; `server.redirect_http`; and what `passerelle check` refuses.
//
// Every certificate comes from a throw-away CA (support/pki.mjs); a test tells which one was served by its SHA-256
// fingerprint, read from a real handshake (node:tls).

import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { copyFile, mkdir, mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import http2 from 'node:http2';
import https from 'node:https';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import tls from 'node:tls';

import { pause, stopAfter } from '../support/http.mjs';
import {
  freePort, keepOutput, launchPasserelle, outputName, runPasserelle, sessionKey, startPasserelle,
} from '../support/passerelle.mjs';
import { makePki } from '../support/pki.mjs';
import { http1, openRaw } from '../support/raw-http.mjs';
import { startProvider } from '../support/provider.mjs';
import { PREFIX, addresses, configToml, providerToml, tv } from '../support/stack.mjs';
import { startUpstream } from '../support/upstream.mjs';

const WRITTEN_BY = 'tests/integration/tls-certificates.test.mjs';
const HSTS = 'max-age=31536000; includeSubDomains';

/** The SHA-256 fingerprint of a PEM certificate, as node:tls reports a peer's. */
const fingerprint = (pem) => new X509Certificate(pem).fingerprint256;

/**
 * One TLS handshake with 127.0.0.1:port, asking for `servername` by SNI (undefined: no SNI — node sends none to an
 * IP address): the fingerprint of the certificate served. The chain must verify against `ca`; the name is not
 * checked (the point is to see which certificate comes back, also for names it does not hold).
 */
function servedCertificate(port, servername, ca) {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({
      host: '127.0.0.1',
      port,
      ...(servername === undefined ? {} : { servername }),
      ca,
      checkServerIdentity: () => undefined,
      ALPNProtocols: ['http/1.1'],
    }, () => {
      const peer = socket.getPeerCertificate();
      socket.destroy();
      resolve(peer.fingerprint256);
    });
    socket.setTimeout(5000, () => socket.destroy(new Error(`no TLS handshake with 127.0.0.1:${port} within 5 s`)));
    socket.on('error', reject);
  });
}

/** Polls `condition` (async) every 100 ms until it is truthy, for at most `timeoutMs`; the error says `what`. */
async function until(condition, what, { timeoutMs = 15_000, detail = () => '' } = {}) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await condition()) return;
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms\n${detail()}`);
    await pause(100); // polling for the condition
  }
}

/** Passerelle's JSON log lines (others skipped) at `level` whose message holds `message`. */
function logEntries(text, level, message) {
  return text.split('\n').flatMap((line) => {
    try {
      const entry = JSON.parse(line);
      return entry.level === level && String(entry.message).includes(message) ? [entry] : [];
    } catch {
      return [];
    }
  });
}

/**
 * A request with node:http or node:https (by the URL's scheme): { status, headers, rawHeaders, body, socket,
 * reusedSocket }. `options` go to request() (agent, ca, headers, method, servername…); `body` is sent.
 */
function request(url, { body, ...options } = {}) {
  return new Promise((resolve, reject) => {
    const req = (url.startsWith('https:') ? https : http).request(url, options, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d) => { text += d; });
      res.on('end', () => resolve({
        status: res.statusCode,
        headers: res.headers,
        rawHeaders: res.rawHeaders,
        body: text,
        socket: req.socket,
        reusedSocket: req.reusedSocket,
      }));
      res.on('error', reject);
    });
    req.setTimeout(10_000, () => req.destroy(new Error(`no answer from ${url} within 10 s`)));
    req.on('error', reject);
    req.end(body);
  });
}

/** GET `path` on an open HTTP/2 session: { status, headers, body }. */
function h2Get(session, urlPath) {
  return new Promise((resolve, reject) => {
    const stream = session.request({ ':path': urlPath });
    let headers;
    let body = '';
    stream.setEncoding('utf8');
    stream.on('response', (h) => { headers = h; });
    stream.on('data', (d) => { body += d; });
    stream.on('end', () => resolve({ status: headers?.[':status'], headers, body }));
    stream.on('error', reject);
    stream.setTimeout(10_000, () => stream.close(http2.constants.NGHTTP2_CANCEL));
    stream.end();
  });
}

/** Every value of the header `name` in a rawHeaders array. */
function headerLines(rawHeaders, name) {
  const out = [];
  for (let i = 0; i < rawHeaders.length; i += 2) {
    if (rawHeaders[i].toLowerCase() === name) out.push(rawHeaders[i + 1]);
  }
  return out;
}

/**
 * startPasserelle (it gives the process and the config file, for SIGHUP), stopped by t.after, which keeps the TOML
 * and the output in tests/output/.
 */
async function launchWithProcess(t, toml) {
  const p = await startPasserelle(toml);
  t.after(async () => {
    await p.stop();
    await keepOutput(outputName(t), toml, p.logs());
  });
  return p;
}

/** Writes the files of `pair` ({ cert?, key? }: PEM texts) into `dir` as cert.pem / key.pem, each to a temporary
 * name first and then renamed over the live one (a renewal as certbot or a Kubernetes secret does it). */
async function renew(dir, pair) {
  for (const [name, text] of [['cert.pem', pair.cert], ['key.pem', pair.key]]) {
    if (text === undefined) continue;
    const tmp = path.join(dir, `.${name}.${process.pid}.tmp`);
    await writeFile(tmp, text, { mode: 0o600 });
    await rename(tmp, path.join(dir, name));
  }
}

/** A Passerelle TOML on 127.0.0.1 with server.tls (`tls`: a TOML value), an https public_url and `routes`. */
function tlsToml(a, tlsValue, routes, extraServer = '') {
  return configToml({
    writtenBy: WRITTEN_BY,
    port: a.port,
    adminPort: a.adminPort,
    publicUrl: `https://127.0.0.1:${a.port}`,
    extraServer: `tls = ${tlsValue}\n${extraServer}`,
    routes,
  });
}

const publicRoute = (upstream, extra = '') => `[[route]]\n${extra}upstream = ${tv(upstream.url)}\nauth = "public"\n`;

test('(tls-certs) SNI picks the certificate: exact name first, then the longest wildcard (not its apex); unknown names and no SNI get the entry without hosts', { timeout: 60_000 }, async (t) => {
  const pki = await makePki(t, {
    servers: {
      fallback: ['IP:127.0.0.1', 'DNS:fallback.test'],
      a: ['DNS:a.test'],
      rie: ['DNS:*.rie.test'],
      deep: ['DNS:*.x.rie.test'],
      b: ['DNS:b.rie.test'],
    },
  });
  assert.ok(pki, 'openssl is installed by the test script');
  const { fallback, a: certA, rie, deep, b } = pki.servers;
  const fp = Object.fromEntries(Object.entries(pki.servers).map(([name, s]) => [name, fingerprint(s.cert)]));
  assert.equal(new Set(Object.values(fp)).size, 5, 'five distinct certificates');
  const addr = await addresses();
  const up = await stopAfter(t, startUpstream());
  // The entry without hosts is not the first: it, not the first, answers every other name.
  const entry = (s, hosts) => ({ cert: s.certFile, key: s.keyFile, ...(hosts ? { hosts } : {}) });
  const toml = tlsToml(addr, tv([
    entry(certA, ['a.test']),
    entry(rie, ['*.rie.test']),
    entry(fallback),
    entry(deep, ['*.x.rie.test']),
    entry(b, ['b.rie.test']),
  ]), publicRoute(up));
  await launchPasserelle(t, toml, { adminPort: addr.adminPort });

  const cases = [
    ['a.test', 'a', 'an exact name'],
    ['A.Test', 'a', 'names are compared without case'],
    ['c.rie.test', 'rie', 'a wildcard'],
    ['b.rie.test', 'b', 'the exact name wins over the wildcard that also covers it'],
    ['y.x.rie.test', 'deep', 'the longest wildcard wins'],
    ['z.y.x.rie.test', 'deep', 'a wildcard covers deeper names too'],
    ['x.rie.test', 'rie', '*.x.rie.test does not cover its apex x.rie.test: the shorter wildcard does'],
    ['rie.test', 'fallback', '*.rie.test does not cover the apex rie.test'],
    ['unknown.test', 'fallback', 'an unknown name gets the entry without hosts'],
    ['sub.a.test', 'fallback', 'an exact name does not cover its subdomains'],
    [undefined, 'fallback', 'no SNI gets the entry without hosts'],
  ];
  for (const [servername, expected, why] of cases) {
    const served = await servedCertificate(addr.port, servername, pki.ca);
    const name = Object.keys(fp).find((k) => fp[k] === served) ?? served;
    assert.equal(name, expected, `SNI ${servername ?? '(none)'}: ${why}`);
  }

  // And a request, over the certificate it picked, verified by name as a browser would.
  const res = await request(`https://127.0.0.1:${addr.port}/sni`, {
    agent: false, ca: pki.ca, servername: 'b.rie.test', headers: { host: `b.rie.test:${addr.port}` },
  });
  assert.equal(res.status, 200, res.body);
  assert.equal(res.socket.getPeerCertificate().fingerprint256, fp.b);

  // Every entry with hosts: the first one answers every other name.
  const other = await addresses();
  await launchPasserelle(t, tlsToml(other, tv([entry(rie, ['*.rie.test']), entry(certA, ['a.test'])]), publicRoute(up)),
    { adminPort: other.adminPort, logName: outputName(t, { suffix: 'all_with_hosts' }) });
  for (const [servername, expected, why] of [
    ['a.test', 'a', 'its own name'],
    ['unknown.test', 'rie', 'no entry without hosts: the first answers other names'],
    [undefined, 'rie', 'and no SNI'],
  ]) {
    const served = await servedCertificate(other.port, servername, pki.ca);
    assert.equal(Object.keys(fp).find((k) => fp[k] === served) ?? served, expected, `SNI ${servername ?? '(none)'}: ${why}`);
  }
});

test('(tls-certs) renewal on file change: new connections get the new certificate, open ones (HTTP/1.1 keep-alive, h2) keep working; a broken pair keeps the running one and says so; the fixed pair is picked up', { timeout: 60_000 }, async (t) => {
  const pki = await makePki(t);
  assert.ok(pki, 'openssl is installed by the test script');
  const ip = ['IP:127.0.0.1'];
  const v1 = await pki.issueServer('v1', ip);
  const v2 = await pki.issueServer('v2', ip);
  const v3 = await pki.issueServer('v3', ip);
  const v4 = await pki.issueServer('v4', ip);
  const fp = { v1: fingerprint(v1.cert), v2: fingerprint(v2.cert), v3: fingerprint(v3.cert), v4: fingerprint(v4.cert) };
  const live = path.join(pki.dir, 'live');
  await mkdir(live);
  await copyFile(v1.certFile, path.join(live, 'cert.pem'));
  await copyFile(v1.keyFile, path.join(live, 'key.pem'));

  const addr = await addresses();
  const up = await stopAfter(t, startUpstream());
  const toml = tlsToml(addr, tv({ cert: path.join(live, 'cert.pem'), key: path.join(live, 'key.pem') }), publicRoute(up));
  const p = await launchWithProcess(t, toml);
  const { logs } = p;
  const base = `https://127.0.0.1:${addr.port}`;
  const served = () => servedCertificate(addr.port, undefined, pki.ca);
  assert.equal(await served(), fp.v1, 'v1 at start');

  // Connections opened before the renewal: HTTP/1.1 keep-alive (one socket) and an HTTP/2 session.
  const agent = new https.Agent({ keepAlive: true, maxSockets: 1, ca: pki.ca });
  t.after(() => agent.destroy());
  const first = await request(`${base}/keep/1`, { agent });
  assert.equal(first.status, 200, first.body);
  assert.equal(first.socket.getPeerCertificate().fingerprint256, fp.v1);
  const session = http2.connect(base, { ca: pki.ca });
  t.after(() => session.destroy());
  session.on('error', () => {}); // a failure shows as a failed request below
  const h2First = await h2Get(session, '/h2/1');
  assert.equal(h2First.status, 200, h2First.body);
  assert.equal(session.alpnProtocol, 'h2', 'HTTP/2 was negotiated');
  assert.equal(session.socket.getPeerCertificate().fingerprint256, fp.v1);

  const renewedLines = () => logEntries(logs(), 'INFO', 'server certificate renewed: new connections use it');
  const brokenLines = () => logEntries(logs(), 'ERROR', 'the changed server certificate cannot be used');
  const detail = () => logs().slice(-3000);

  // 1. v2 replaces v1 on disk: new connections get it, without a signal.
  let renewedBefore = renewedLines().length;
  await renew(live, v2);
  await until(async () => (await served()) === fp.v2, 'new connections are served the renewed certificate v2', { detail });
  await until(() => renewedLines().length > renewedBefore, 'the renewal is logged', { detail });
  // The connections opened before are still open and still answer, on the certificate they started with.
  const second = await request(`${base}/keep/2`, { agent });
  assert.equal(second.status, 200, second.body);
  assert.equal(second.reusedSocket, true, 'the keep-alive request went on the connection opened before the renewal');
  assert.equal(second.socket, first.socket, 'the same socket');
  assert.equal(second.socket.getPeerCertificate().fingerprint256, fp.v1, 'that connection still holds v1');
  assert.equal(session.closed || session.destroyed, false, 'the HTTP/2 session is still open');
  const h2Second = await h2Get(session, '/h2/2');
  assert.equal(h2Second.status, 200, h2Second.body);
  assert.equal(JSON.parse(h2Second.body).url, '/h2/2');
  assert.equal(session.socket.getPeerCertificate().fingerprint256, fp.v1, 'the same HTTP/2 connection, on v1');

  // 2. A broken pair: v3's certificate with v4's key. The running v2 stays, an ERROR says why.
  let brokenBefore = brokenLines().length;
  renewedBefore = renewedLines().length;
  await renew(live, { cert: v3.cert, key: v4.key });
  await until(() => brokenLines().length > brokenBefore, 'an ERROR line for the mismatched pair', { detail });
  assert.match(brokenLines().at(-1).error, /the key in `.*key\.pem` does not go with the certificate in `.*cert\.pem`/);
  assert.equal(await served(), fp.v2, 'the running certificate stays after a mismatched pair');

  // 3. Garbage in the certificate file: still v2, another ERROR.
  brokenBefore = brokenLines().length;
  await renew(live, { cert: 'not a certificate\n' });
  await until(() => brokenLines().length > brokenBefore, 'an ERROR line for a certificate file that is garbage', { detail });
  assert.match(brokenLines().at(-1).error, /cert\.pem` holds no PEM certificate/);
  assert.equal(await served(), fp.v2, 'the running certificate stays after a garbage file');
  assert.equal(renewedLines().length, renewedBefore, 'nothing was renewed by the broken files');

  // 4. The pair fixed (v3 with its own key): picked up.
  renewedBefore = renewedLines().length;
  await renew(live, v3);
  await until(async () => (await served()) === fp.v3, 'the fixed pair v3 is served', { detail });
  assert.ok(renewedLines().length > renewedBefore, 'the renewal is logged');
  // And the connections opened at the start still answer.
  const third = await request(`${base}/keep/3`, { agent });
  assert.equal(third.status, 200);
  assert.equal(third.socket, first.socket, 'the keep-alive connection from the start, through three changes');
  assert.equal((await h2Get(session, '/h2/3')).status, 200);
  assert.equal(p.exited(), null, 'Passerelle is still running');
});

test('(tls-certs) SIGHUP reload: a config naming new certificate files serves them at once; a pair that does not go together refuses the whole reload', { timeout: 60_000 }, async (t) => {
  const pki = await makePki(t);
  assert.ok(pki, 'openssl is installed by the test script');
  const ip = ['IP:127.0.0.1'];
  const v1 = await pki.issueServer('v1', ip);
  const v2 = await pki.issueServer('v2', ip);
  const v3 = await pki.issueServer('v3', ip);
  const fp = { v1: fingerprint(v1.cert), v2: fingerprint(v2.cert), v3: fingerprint(v3.cert) };
  const addr = await addresses();
  const up = await stopAfter(t, startUpstream());
  const toml = (pair) => tlsToml(addr, tv({ cert: pair.certFile, key: pair.keyFile }), publicRoute(up));
  const p = await launchWithProcess(t, toml(v1));
  const { logs } = p;
  const detail = () => logs().slice(-3000);
  const served = () => servedCertificate(addr.port, undefined, pki.ca);
  assert.equal(await served(), fp.v1, 'v1 at start');
  const reloaded = () => logEntries(logs(), 'INFO', 'configuration reloaded').length;
  const refused = () => logEntries(logs(), 'ERROR', 'configuration reload refused');

  // v2's certificate with v3's key: the whole reload is refused, naming the key; v1 stays.
  const refusedBefore = refused().length;
  await writeFile(p.configFile, toml({ certFile: v2.certFile, keyFile: v3.keyFile }), { mode: 0o600 });
  p.process.kill('SIGHUP');
  await until(() => refused().length > refusedBefore, 'the reload with a mismatched pair is refused', { detail });
  assert.match(refused().at(-1).error, /server\.tls\.key/, 'the refusal names server.tls.key');
  assert.match(refused().at(-1).error, /does not go with the certificate/);
  assert.equal(await served(), fp.v1, 'the running certificate stays');

  // v2's own pair: applied by the reload (the certificate is in place before the reload is logged).
  const reloadedBefore = reloaded();
  await writeFile(p.configFile, toml(v2), { mode: 0o600 });
  p.process.kill('SIGHUP');
  await until(() => reloaded() > reloadedBefore, 'the reload is applied', { detail });
  assert.equal(await served(), fp.v2, 'new connections get v2 as soon as the reload is logged');
  assert.ok(logEntries(logs(), 'INFO', 'server certificate renewed').some((e) => e.cert === v2.certFile), 'the renewal names the new file');
  const res = await request(`https://127.0.0.1:${addr.port}/after-reload`, { agent: false, ca: pki.ca });
  assert.equal(res.status, 200, res.body);
  assert.equal(JSON.parse(res.body).url, '/after-reload');
});

test('(tls-certs) server.hsts: the exact Strict-Transport-Security value, once, on proxied answers and on Passerelle\'s own (404 page, login redirect, 401), over HTTP/1.1 and h2; `check` refuses it without https or without max-age', { timeout: 60_000 }, async (t) => {
  const pki = await makePki(t);
  assert.ok(pki, 'openssl is installed by the test script');
  const addr = await addresses();
  const base = `https://127.0.0.1:${addr.port}`;
  const op = await stopAfter(t, startProvider({
    redirectUris: [`${base}${PREFIX}/callback`],
    postLogoutRedirectUris: [`${base}${PREFIX}/logged-out`],
  }));
  const up = await stopAfter(t, startUpstream());
  const toml = configToml({
    writtenBy: WRITTEN_BY,
    port: addr.port,
    adminPort: addr.adminPort,
    publicUrl: base,
    extraServer: `tls = ${tv({ cert: `${pki.dir}/server.pem`, key: `${pki.dir}/server.key` })}\nhsts = ${tv(HSTS)}\n`,
    providers: providerToml('op', 'oidc', op, { auth_method: 'client_secret_basic' }),
    routes: `[[route]]\npath = "/app"\nupstream = ${tv(up.url)}\nauth = "required"\nproviders = ["op"]\n\n`
      + `[[route]]\npath = "/public"\nupstream = ${tv(up.url)}\nauth = "public"\n`,
  });
  await launchPasserelle(t, toml, { adminPort: addr.adminPort });

  const hstsOf = (res, what) => {
    assert.deepEqual(headerLines(res.rawHeaders, 'strict-transport-security'), [HSTS], `${what}: one Strict-Transport-Security line, the configured value`);
  };
  const get = (urlPath, headers = {}) => request(`${base}${urlPath}`, { agent: false, ca: pki.ca, headers });

  const proxied = await get('/public/x');
  assert.equal(proxied.status, 200, proxied.body);
  assert.equal(JSON.parse(proxied.body).url, '/public/x', 'answered by the upstream');
  hstsOf(proxied, 'a proxied 200');
  assert.equal(up.requests.length, 1);

  const notFound = await get('/no-route-here');
  assert.equal(notFound.status, 404, notFound.body);
  assert.equal(up.requests.length, 1, 'the 404 is Passerelle\'s own: the upstream saw nothing');
  hstsOf(notFound, 'Passerelle\'s 404 page');

  const login = await get('/app/page', {
    accept: 'text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8',
    'sec-fetch-mode': 'navigate',
    'sec-fetch-dest': 'document',
    'sec-fetch-site': 'none',
  });
  assert.equal(login.status, 302, login.body);
  assert.ok(login.headers.location.startsWith(`${op.issuer}/`), `a redirect to the provider: ${login.headers.location}`);
  hstsOf(login, 'the login redirect');

  const api = await get('/app/api', { accept: 'application/json', 'sec-fetch-mode': 'cors' });
  assert.equal(api.status, 401, api.body);
  hstsOf(api, 'the 401 to a non-navigation');
  assert.equal(up.requests.length, 1, 'the upstream saw only the public request');

  // Over HTTP/2 too.
  const session = http2.connect(base, { ca: pki.ca });
  t.after(() => session.destroy());
  session.on('error', () => {});
  for (const [urlPath, status] of [['/public/h2', 200], ['/nowhere/h2', 404]]) {
    const res = await h2Get(session, urlPath);
    assert.equal(res.status, status, res.body);
    assert.equal(res.headers['strict-transport-security'], HSTS, `h2 ${urlPath}`);
  }

  // `check`: hsts only for a site served over https, and only a valid value.
  const dir = await mkdtemp(path.join(tmpdir(), 'passerelle-hsts-check-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const check = async (name, server, publicUrl = `http://127.0.0.1:${addr.port}`) => {
    const file = path.join(dir, `${name}.toml`);
    await writeFile(file, configToml({
      writtenBy: WRITTEN_BY, port: addr.port, adminPort: addr.adminPort, publicUrl, extraServer: server, routes: publicRoute(up),
    }));
    const r = await runPasserelle(['check', '--config', file], { cwd: dir, env: { PASSERELLE_KEY: sessionKey() } });
    return { code: r.code, output: `${r.stdout}${r.stderr}` };
  };
  const tlsLine = `tls = ${tv({ cert: `${pki.dir}/server.pem`, key: `${pki.dir}/server.key` })}\n`;
  const accepted = await check('ok', `${tlsLine}hsts = ${tv(HSTS)}\n`, base);
  assert.equal(accepted.code, 0, `the same hsts with server.tls passes: ${accepted.output}`);
  const behindProxy = await check('behind-proxy', `hsts = ${tv(HSTS)}\n`, 'https://app.example');
  assert.equal(behindProxy.code, 0, `hsts with an https public_url (behind a TLS-terminating proxy) passes: ${behindProxy.output}`);
  for (const [name, server, expected] of [
    ['no-tls', `hsts = ${tv(HSTS)}\n`, /server\.hsts.*only for a site served over https/],
    ['no-max-age', `${tlsLine}hsts = "includeSubDomains"\n`, /server\.hsts.*needs a max-age/],
    ['unknown-directive', `${tlsLine}hsts = "max-age=600; includeSubdomain; always"\n`, /server\.hsts.*not a Strict-Transport-Security directive/],
    ['bad-max-age', `${tlsLine}hsts = "max-age=one-year"\n`, /server\.hsts.*not a number of seconds/],
    ['twice', `${tlsLine}hsts = "max-age=600; Max-Age=60"\n`, /server\.hsts.*`max-age` is given twice/],
  ]) {
    const r = await check(name, server, name === 'no-tls' ? undefined : base);
    assert.notEqual(r.code, 0, `${name}: refused`);
    assert.match(r.output, expected, `${name}: ${r.output}`);
  }
});

test('(tls-certs) server.redirect_http: 308 to https with path and query kept (GET and POST), to the public URL\'s origin or a host a route serves; another Host gets 400; the Location serves', { timeout: 60_000 }, async (t) => {
  const pki = await makePki(t, { serverNames: ['IP:127.0.0.1', 'DNS:app.test'] });
  assert.ok(pki, 'openssl is installed by the test script');
  const up = await stopAfter(t, startUpstream());
  const tlsValue = tv({ cert: `${pki.dir}/server.pem`, key: `${pki.dir}/server.key` });
  const plain = (port, urlPath, { host, method = 'GET', body } = {}) => request(`http://127.0.0.1:${port}${urlPath}`, {
    agent: false, method, body, headers: { ...(host ? { host } : {}), ...(body ? { 'content-type': 'application/x-www-form-urlencoded' } : {}) },
  });

  // 1. The public URL's host, and a host-less route (it serves any host).
  const a = await addresses();
  const httpA = await freePort();
  await launchPasserelle(t, tlsToml(a, tlsValue, publicRoute(up), `redirect_http = ${tv([`127.0.0.1:${httpA}`])}\n`), { adminPort: a.adminPort });
  const wanted = `https://127.0.0.1:${a.port}/a/b?c=1`;
  const get = await plain(httpA, '/a/b?c=1');
  assert.equal(get.status, 308, get.body);
  assert.equal(get.headers.location, wanted, 'the public URL\'s origin (the TLS port), the path and the query');
  const post = await plain(httpA, '/a/b?c=1', { method: 'POST', body: 'x=1' });
  assert.equal(post.status, 308, post.body);
  assert.equal(post.headers.location, wanted);
  assert.equal(up.requests.length, 0, 'nothing was proxied over plain HTTP');
  const followed = await request(get.headers.location, { agent: false, ca: pki.ca });
  assert.equal(followed.status, 200, followed.body);
  assert.equal(JSON.parse(followed.body).url, '/a/b?c=1', 'the https URL serves the same path and query');
  const anyHost = await plain(httpA, '/x', { host: `other.test:${httpA}` });
  assert.equal(anyHost.status, 308, anyHost.body);
  assert.equal(anyHost.headers.location, `https://other.test:${a.port}/x`, 'a host-less route serves any host: it is kept');
  // An absolute-form target (RFC 9112 §3.2.2) keeps its path and query too.
  const raw = await openRaw(httpA);
  raw.write(http1('GET', `http://127.0.0.1:${httpA}/abs/p?q=1`, [['Host', `127.0.0.1:${httpA}`], ['Connection', 'close']]));
  const abs = await raw.response({ timeoutMs: 10_000 });
  raw.destroy();
  assert.equal(abs?.status, 308, 'absolute-form target');
  assert.equal(abs.headers.location, `https://127.0.0.1:${a.port}/abs/p?q=1`);

  // 2. Only a route for app.test (no host-less route): app.test is redirected, evil.test is not.
  const b = await addresses();
  const httpB = await freePort();
  await launchPasserelle(t, tlsToml(b, tlsValue, publicRoute(up, 'host = "app.test"\n'), `redirect_http = ${tv([`127.0.0.1:${httpB}`])}\n`), { adminPort: b.adminPort });
  const evil = await plain(httpB, '/login?next=/', { host: 'evil.test' });
  assert.equal(evil.status, 400, `a host no route serves: ${evil.status} ${evil.headers.location ?? ''}`);
  assert.equal(evil.headers.location, undefined, 'no redirect to a host Passerelle does not serve');
  const evilPost = await plain(httpB, '/login', { host: `evil.test:${httpB}`, method: 'POST', body: 'x=1' });
  assert.equal(evilPost.status, 400);
  const app = await plain(httpB, '/p/q?r=s&t=%2F', { host: `app.test:${httpB}` });
  assert.equal(app.status, 308, app.body);
  const appLocation = `https://app.test:${b.port}/p/q?r=s&t=%2F`;
  assert.equal(app.headers.location, appLocation);
  const appPost = await plain(httpB, '/p/q?r=s&t=%2F', { host: 'App.Test', method: 'POST', body: 'x=1' });
  assert.equal(appPost.status, 308, appPost.body);
  assert.equal(appPost.headers.location, appLocation, 'the host as the route names it (case-insensitive match)');
  // Follow it: app.test is 127.0.0.1 here; the certificate is verified for app.test.
  const location = new URL(app.headers.location);
  const served = await request(`https://127.0.0.1:${location.port}${location.pathname}${location.search}`, {
    agent: false, ca: pki.ca, servername: location.hostname, headers: { host: location.host },
  });
  assert.equal(served.status, 200, served.body);
  assert.equal(JSON.parse(served.body).url, '/p/q?r=s&t=%2F');
  assert.equal(up.requests.length, 2, 'the upstream saw exactly the two followed requests');
});

test('(tls-certs) `check` refuses: a key that is not its certificate\'s (named server.tls.key / server.tls[i].key), two entries without hosts, the same host twice, a missing file, redirect_http without https', { timeout: 60_000 }, async (t) => {
  const pki = await makePki(t, { servers: { a: ['DNS:a.test'], b: ['DNS:b.test'] } });
  assert.ok(pki, 'openssl is installed by the test script');
  const { a: certA, b: certB } = pki.servers;
  const dir = await mkdtemp(path.join(tmpdir(), 'passerelle-tls-check-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const addr = { port: await freePort(), adminPort: await freePort() };
  const routes = '[[route]]\nupstream = "http://127.0.0.1:9"\nauth = "public"\n';
  const check = async (name, server, publicUrl = `https://127.0.0.1:${addr.port}`) => {
    const file = path.join(dir, `${name}.toml`);
    await writeFile(file, configToml({ writtenBy: WRITTEN_BY, port: addr.port, adminPort: addr.adminPort, publicUrl, extraServer: server, routes }));
    const r = await runPasserelle(['check', '--config', file], { cwd: dir, env: { PASSERELLE_KEY: sessionKey() } });
    return { code: r.code, output: `${r.stdout}${r.stderr}` };
  };
  const pair = (s, extra = {}) => ({ cert: s.certFile, key: s.keyFile, ...extra });
  const missing = path.join(dir, 'absent.pem');

  // What passes, so that each refusal below is for its one change.
  for (const [name, server] of [
    ['one', `tls = ${tv(pair(certA))}\n`],
    ['several', `tls = ${tv([pair(certA, { hosts: ['a.test'] }), pair(certB), pair(pki.servers.a, { hosts: ['*.a.test'] })])}\n`],
    ['array-of-tables', `[[server.tls]]\ncert = ${tv(certA.certFile)}\nkey = ${tv(certA.keyFile)}\nhosts = ["a.test"]\n[[server.tls]]\ncert = ${tv(certB.certFile)}\nkey = ${tv(certB.keyFile)}\n`],
    ['redirect', `tls = ${tv(pair(certA))}\nredirect_http = ["127.0.0.1:${await freePort()}"]\n`],
  ]) {
    const r = await check(name, server);
    assert.equal(r.code, 0, `${name} passes: ${r.output}`);
  }

  for (const [name, server, expected, publicUrl] of [
    ['key-of-another', `tls = ${tv({ cert: certA.certFile, key: certB.keyFile })}\n`,
      /server\.tls\.key.*does not go with the certificate/],
    ['key-of-another-in-array', `tls = ${tv([pair(certA, { hosts: ['a.test'] }), { cert: certB.certFile, key: certA.keyFile }])}\n`,
      /server\.tls\[1\]\.key.*does not go with the certificate/],
    ['two-without-hosts', `tls = ${tv([pair(certA), pair(certB)])}\n`,
      /server\.tls\[1\]\.hosts.*only one certificate may go without `hosts`/],
    ['same-host-twice', `tls = ${tv([pair(certA, { hosts: ['a.test', 'x.test'] }), pair(certB, { hosts: ['X.test'] })])}\n`,
      /server\.tls\[1\]\.hosts.*already the name of server\.tls\[0\]/],
    ['missing-cert', `tls = ${tv({ cert: missing, key: certA.keyFile })}\n`,
      new RegExp(`server\\.tls\\.cert.*cannot read \`${missing.replaceAll('.', '\\.')}\``)],
    ['missing-key', `tls = ${tv([pair(certA, { hosts: ['a.test'] }), { cert: certB.certFile, key: missing }])}\n`,
      /server\.tls\[1\]\.key.*cannot read/],
    ['key-is-a-certificate', `tls = ${tv({ cert: certA.certFile, key: certA.certFile })}\n`,
      /server\.tls\.key.*not a PEM file with a PRIVATE KEY/],
    ['empty-list', 'tls = []\n', /server\.tls.*at least one certificate/],
    ['redirect-without-https', `redirect_http = ["127.0.0.1:${await freePort()}"]\n`,
      /server\.redirect_http.*redirects to https/, `http://127.0.0.1:${addr.port}`],
  ]) {
    const r = await check(name, server, publicUrl);
    assert.notEqual(r.code, 0, `${name}: refused`);
    assert.match(r.output, expected, `${name}: ${r.output}`);
  }
});
