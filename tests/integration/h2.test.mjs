// HTTP/2 at the TLS front door (issue 13, part 1). With `server.tls`, Passerelle offers h2 by ALPN and keeps
// http/1.1; every guarantee of the trust boundary holds on both, so each scenario here runs on both protocols with a
// real client: Node's http2 module (one multiplexed connection, as a browser keeps) and node:https over HTTP/1.1,
// plus the openssl and curl command lines for the negotiation itself.
//
//   - ALPN: h2 chosen when offered, http/1.1 when only it is offered, and with no ALPN at all;
//   - the flow: 401 to an API call, 302 to the provider for a navigation, login, identity headers from the session
//     only, a step-up, a 403 by rule, the idle refresh's Set-Cookie, forward-auth, logout;
//   - the boundary corpus: spoofed identity and forwarding fields in every spelling HTTP/2 can carry, Passerelle's
//     cookies in separate `cookie` fields (RFC 9113 §8.2.3) stripped and the app's joined into one line, routing on
//     `:authority` and a contradicting `Host` refused, pseudo-headers never forwarded as fields;
//   - upstreams: HTTP/1.1 by default whatever the client speaks; `upstream_h2 = true` speaks h2 over TLS and h2c;
//   - limits, raw h2: the settings announced, a header list over server.max_header_bytes refused, 100 streams at
//     most at the upstream from one connection, and a reset flood (CVE-2023-44487) that cannot put more than 200
//     requests in flight nor stop the server from answering.

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import http from 'node:http';
import http2 from 'node:http2';
import { test } from 'node:test';

import { identityLines } from '../support/checks.mjs';
import { listen, stopAfter, stopper } from '../support/http.mjs';
import { launchPasserelle } from '../support/passerelle.mjs';
import { createPerson } from '../support/person.mjs';
import { makePki } from '../support/pki.mjs';
import { ACCOUNTS, startProvider } from '../support/provider.mjs';
import { addresses, configToml, PREFIX, providerToml, q, tv } from '../support/stack.mjs';
import { headerValues, startUpstream } from '../support/upstream.mjs';

const { alice } = ACCOUNTS;
const TIMEOUT = { timeout: 120_000 };
const PROTOCOLS = ['h2', 'http/1.1'];
const OPEN_HOST = 'open.test';

/**
 * One Passerelle on https://127.0.0.1:PORT with a provider and two apps:
 *   host open.test, "/"          → `open` (public)
 *   "/" (any other host)          → `app`, required, X-Auth-Sub / X-Auth-Email
 *   "/more"                       → `app`, required, needs `profile` too (step-up)
 *   "/staff"                      → `app`, required, email domain example.org only (alice: 403)
 *   "/public"                     → `app`, public
 */
async function world(t, { trusted = false } = {}) {
  const pki = await makePki(t);
  assert.ok(pki, 'openssl is installed by the test script');
  const a = await addresses();
  const base = `https://127.0.0.1:${a.port}`;
  const op = await stopAfter(t, startProvider({
    redirectUris: [`${base}${PREFIX}/callback`],
    postLogoutRedirectUris: [`${base}${PREFIX}/logged-out`],
  }));
  const app = await stopAfter(t, startUpstream());
  const open = await stopAfter(t, startUpstream());
  const toml = configToml({
    writtenBy: 'tests/integration/h2.test.mjs',
    port: a.port,
    adminPort: a.adminPort,
    publicUrl: base,
    extraServer: `tls = ${tv({ cert: `${pki.dir}/server.pem`, key: `${pki.dir}/server.key` })}\n${trusted ? 'trusted_proxies = ["127.0.0.1/32"]\n' : ''}`,
    extraSession: 'idle_timeout = "10s"\n',
    // The login asks for email only: `profile` is asked for when a route needs it (step-up).
    providers: providerToml('op', 'oidc', op, { scopes: ['openid', 'email'] }),
    routes: `[[route]]
host = ${q(OPEN_HOST)}
upstream = ${q(open.url)}
auth = "public"

[[route]]
path = "/"
upstream = ${q(app.url)}
providers = ["op"]
scopes = ["email"]
[route.headers]
"X-Auth-Sub" = "sub"
"X-Auth-Email" = "email"

[[route]]
path = "/more"
upstream = ${q(app.url)}
providers = ["op"]
scopes = ["email", "profile"]
[route.headers]
"X-Auth-Sub" = "sub"
"X-Auth-Given-Name" = "given_name"

[[route]]
path = "/staff"
upstream = ${q(app.url)}
providers = ["op"]
scopes = ["email"]
require = { email_domain = ["example.org"] }
[route.headers]
"X-Auth-Sub" = "sub"

[[route]]
path = "/public"
upstream = ${q(app.url)}
auth = "public"
`,
  });
  const p = await launchPasserelle(t, toml, { adminPort: a.adminPort });
  const people = [];
  t.after(() => people.forEach((x) => x.close()));
  const person = (protocol) => {
    const x = createPerson({ name: `person over ${protocol}`, tls: { ca: pki.ca, protocol } });
    people.push(x);
    return x;
  };
  return { pki, port: a.port, base, op, app, open, p, person, adminUrl: p.adminUrl };
}

/** Field names the upstream received that no client may set or that HTTP/2 keeps to itself. */
function assertNoPseudoHeaders(record, what) {
  const names = record.rawHeaders.filter((_, i) => i % 2 === 0);
  assert.deepEqual(names.filter((n) => n.startsWith(':')), [], `${what}: pseudo-headers reached the upstream as fields`);
  assert.equal(headerValues(record.rawHeaders, 'host').length, 1, `${what}: exactly one Host`);
}

function run(cmd, args, input = '') {
  return new Promise((resolve) => {
    const child = execFile(cmd, args, { timeout: 15_000 }, (e, stdout, stderr) => resolve({ code: e?.code ?? 0, out: `${stdout}${stderr}` }));
    child.stdin.end(input);
  });
}

test('(h2-alpn) ALPN: h2 when offered, http/1.1 when alone or with no ALPN; curl --http2 and --http1.1 get what they ask', TIMEOUT, async (t) => {
  const w = await world(t);
  const sClient = (alpn) => run('openssl', ['s_client', '-connect', `127.0.0.1:${w.port}`, '-CAfile', w.pki.caFile,
    ...(alpn ? ['-alpn', alpn] : [])], 'Q\n');
  const both = await sClient('h2,http/1.1');
  assert.match(both.out, /^ALPN protocol: h2$/m, both.out);
  const h1only = await sClient('http/1.1');
  assert.match(h1only.out, /^ALPN protocol: http\/1\.1$/m, h1only.out);
  const none = await sClient(undefined);
  assert.match(none.out, /^No ALPN negotiated$/m, none.out);
  assert.match(none.out, /^New, TLSv1\.3/m, 'the handshake without ALPN still succeeds');

  for (const [flag, version] of [['--http2', '2'], ['--http1.1', '1.1']]) {
    const r = await run('curl', ['-sS', flag, '--cacert', w.pki.caFile, '-o', '/dev/null', '-w', '%{http_version} %{http_code}',
      `${w.base}/public/curl`]);
    assert.equal(r.out.trim(), `${version} 200`, `curl ${flag}: ${r.out}`);
  }
  assert.equal(w.app.requests.filter((r) => r.url === '/public/curl').length, 2);
});

for (const protocol of PROTOCOLS) {
  test(`(h2-flow) over ${protocol}: 401, login redirect, login, identity from the session only, step-up, 403, refresh cookie, forward-auth, logout`, TIMEOUT, async (t) => {
    // A trusted peer: forward-auth believes its X-Original-URI.
    const w = await world(t, { trusted: true });
    const person = w.person(protocol);
    const version = protocol === 'h2' ? '2.0' : '1.1';

    const api = await person.api(`${w.base}/app/data`);
    assert.equal(api.httpVersion, version, 'the protocol asked for is the one spoken');
    assert.equal(api.status, 401, `API call without a session: ${api.status}`);
    assert.equal(api.headers.location, undefined);
    const nav = await person.get(`${w.base}/app/data`, { follow: false });
    assert.equal(nav.status, 302);
    assert.ok(nav.location.startsWith(w.op.discovery.authorization_endpoint), nav.location);
    assert.equal(w.app.requests.length, 0, 'nothing reached the app before the login');

    const login = await person.login(`${w.base}/app/data?x=1`, 'alice');
    assert.equal(login.status, 200, `login: ${login.status} at ${login.url}\n${login.body.slice(0, 300)}`);
    assert.equal(login.url, `${w.base}/app/data?x=1`, 'back on the deep link');
    const session = person.jar.get(w.base, '__Host-passerelle') ?? person.jar.get(w.base, 'passerelle');
    assert.ok(session, 'a session cookie');
    assert.ok(session.secure && session.httpOnly, `the session cookie is Secure and HttpOnly over https: ${session.raw}`);
    const first = w.app.last();
    assert.deepEqual(headerValues(first.rawHeaders, 'x-auth-sub'), [alice.sub]);
    assert.deepEqual(headerValues(first.rawHeaders, 'x-auth-email'), [alice.email]);
    assert.deepEqual(headerValues(first.rawHeaders, 'host'), [`127.0.0.1:${w.port}`]);
    assertNoPseudoHeaders(first, 'after login');

    // Step-up: /more needs `profile`, which the login at / did not ask for.
    const more = await person.get(`${w.base}/more/page`, { follow: false });
    assert.equal(more.status, 302, `step-up: ${more.status}`);
    assert.ok(more.location.startsWith(w.op.discovery.authorization_endpoint), more.location);
    assert.match(new URL(more.location).searchParams.get('scope'), /\bprofile\b/);
    // 403 by rule: alice's email is not at example.org.
    const staff = await person.get(`${w.base}/staff/x`, { follow: false });
    assert.equal(staff.status, 403, `rule refused: ${staff.status}`);
    assert.ok(!w.app.requests.some((r) => r.url.startsWith('/staff')), 'a refused request never reaches the app');

    // The idle refresh (idle_timeout 10s: every second): a later request re-issues the cookie.
    const deadline = Date.now() + 10_000;
    let refreshed;
    while (!refreshed && Date.now() < deadline) {
      const res = await person.get(`${w.base}/app/keepalive`, { follow: false });
      assert.equal(res.status, 200);
      refreshed = res.setCookies.find((c) => c.name === session.name);
    }
    assert.ok(refreshed, 'the idle refresh sent a new session cookie');
    assert.ok('secure' in refreshed.attributes && 'httponly' in refreshed.attributes, refreshed.raw);

    // Forward-auth answers the same person over the same protocol.
    const fa = await person.request(`${w.base}${PREFIX}/auth`, { headers: { Accept: '*/*', 'X-Original-URI': '/app/fa' } });
    assert.equal(fa.status, 200, `forward-auth: ${fa.status}`);
    assert.equal(fa.headers['x-auth-sub'], alice.sub);
    const faNone = await createPerson({ tls: { ca: w.pki.ca, protocol } })
      .request(`${w.base}${PREFIX}/auth`, { headers: { Accept: '*/*', 'X-Original-URI': '/app/fa' } });
    assert.equal(faNone.status, 401);

    // Logout: the session ends here, then at the provider.
    const out = await person.get(`${w.base}${PREFIX}/logout`, { follow: false });
    assert.equal(out.status, 302, `logout: ${out.status}`);
    assert.ok(out.location.startsWith(w.op.issuer), out.location);
    const after = await person.api(`${w.base}/app/after`);
    assert.equal(after.status, 401, 'after logout the session is gone');
  });

  test(`(h2-boundary) over ${protocol}: spoofed identity and forwarding fields, split cookie fields, :authority and Host`, TIMEOUT, async (t) => {
    const w = await world(t);
    const person = w.person(protocol);
    const login = await person.login(`${w.base}/app`, 'alice');
    assert.equal(login.status, 200);
    const session = person.jar.all(w.base).find((c) => /passerelle$/.test(c.name));
    assert.ok(session, 'session cookie');

    // Identity and forwarding fields a client may send, in the spellings HTTP/2 can carry (lower case; `_` for `-`;
    // repeated; empty), on a protected and a public route: the app sees Passerelle's values only.
    const spoofNames = ['x-auth-sub', 'x_auth_sub', 'x-auth-email', 'x_auth_email', 'x-auth-given-name', 'x_auth_given_name'];
    const forwarding = [['x-forwarded-for', '203.0.113.9'], ['x-forwarded-host', 'evil.test'], ['x-forwarded-proto', 'http'],
      ['forwarded', 'for=203.0.113.9;host=evil.test'], ['x-real-ip', '203.0.113.9'], ['x-original-uri', '/admin']];
    for (const path of ['/app/spoof', '/public/spoof']) {
      const headers = [];
      for (const n of spoofNames) headers.push([n, 'spoofed'], [n, ''], [n, 'spoofed-again']);
      const res = await person.get(`${w.base}${path}`, { follow: false, headers: [...headers, ...forwarding] });
      assert.equal(res.status, 200, `${path}: ${res.status}`);
      const got = w.app.last();
      assert.equal(got.url, path);
      const identity = identityLines(got.rawHeaders);
      const expected = path.startsWith('/app') ? [['X-Auth-Sub', alice.sub], ['X-Auth-Email', alice.email]] : [];
      assert.deepEqual(identity.map(([k, v]) => [k.toLowerCase(), v]).sort(), expected.map(([k, v]) => [k.toLowerCase(), v]).sort(),
        `${path}: identity fields at the app`);
      assert.ok(!JSON.stringify(got.rawHeaders).includes('spoofed'), `${path}: a spoofed value reached the app`);
      assert.deepEqual(headerValues(got.rawHeaders, 'x-forwarded-for'), ['127.0.0.1'], `${path}: the peer, not the client's claim`);
      assert.deepEqual(headerValues(got.rawHeaders, 'forwarded'), [], `${path}: Forwarded`);
      assert.deepEqual(headerValues(got.rawHeaders, 'x-real-ip'), [], `${path}: X-Real-IP`);
      assert.ok(!JSON.stringify(got.rawHeaders).includes('evil.test'), `${path}: a spoofed host reached the app`);
      assert.deepEqual(headerValues(got.rawHeaders, 'x-forwarded-proto'), ['https'], `${path}: forwarded proto`);
      assertNoPseudoHeaders(got, path);
      assert.equal(res.headers['keep-alive'], undefined, `${path}: the app's Keep-Alive (hop-by-hop) reached the client`);
    }

    // Cookies in separate fields (HTTP/2 allows one per field): Passerelle's are stripped from each, the app's are
    // joined into one line. On HTTP/1.1 the same lines are sent as separate Cookie headers.
    const cookieFields = [['cookie', 'JSESSIONID=abc'], ['cookie', `${session.name}=${session.value}`],
      ['cookie', 'passerelle_flow_AbCdEfGhIjKl=stale'], ['cookie', 'theme=dark; lang=fr'], ['cookie', 'passerelle_idt=x']];
    const split = await person.get(`${w.base}/app/cookies`, { follow: false, cookies: false, headers: cookieFields });
    assert.equal(split.status, 200, `split cookies, the session among them: ${split.status}`);
    const withSession = w.app.last();
    assert.deepEqual(headerValues(withSession.rawHeaders, 'x-auth-sub'), [alice.sub], 'the session in its own field authenticated');
    assert.deepEqual(headerValues(withSession.rawHeaders, 'cookie'), ['JSESSIONID=abc; theme=dark; lang=fr'],
      'one Cookie line, Passerelle\'s removed, the app\'s joined with "; "');
    const appOnly = await person.get(`${w.base}/public/cookies`, { follow: false, cookies: false, headers: [['cookie', 'a=1'], ['cookie', 'b=2']] });
    assert.equal(appOnly.status, 200);
    assert.deepEqual(headerValues(w.app.last().rawHeaders, 'cookie'), ['a=1; b=2'], 'the app\'s split cookies arrive joined');

    // Routing on the request's authority: Host on HTTP/1.1, `:authority` on HTTP/2.
    const h2 = protocol === 'h2';
    const ask = (authority, extra = []) => (h2
      ? rawH2(w, { ':authority': authority, extra })
      : person.request(`${w.base}/open-path`, { headers: [['Host', authority], ...extra] }));
    const openBefore = w.open.requests.length;
    const toOpen = await ask(OPEN_HOST);
    assert.equal(toOpen.status, 200, `${OPEN_HOST}: ${toOpen.status}`);
    assert.equal(w.open.requests.length, openBefore + 1, 'routed to the open.test app');
    assert.deepEqual(headerValues(w.open.last().rawHeaders, 'host'), [OPEN_HOST]);
    assertNoPseudoHeaders(w.open.last(), 'host route');
    const spelled = await ask('OPEN.test.');
    assert.equal(spelled.status, 200);
    assert.deepEqual(headerValues(w.open.last().rawHeaders, 'host'), [OPEN_HOST], 'the normalised host is sent');
    if (h2) {
      // `Host` may repeat `:authority`, never contradict it.
      const same = await rawH2(w, { ':authority': OPEN_HOST, extra: [['host', OPEN_HOST]] });
      assert.equal(same.status, 200);
      const before = { open: w.open.requests.length, app: w.app.requests.length };
      for (const [authority, host] of [[`127.0.0.1:${w.port}`, OPEN_HOST], [OPEN_HOST, `127.0.0.1:${w.port}`], [OPEN_HOST, 'evil.test']]) {
        const res = await rawH2(w, { ':authority': authority, extra: [['host', host]] });
        assert.equal(res.status, 400, `:authority ${authority} with Host ${host}: ${res.status}`);
      }
      assert.deepEqual({ open: w.open.requests.length, app: w.app.requests.length }, before, 'no contradicting request was proxied');
    }
  });
}

/** One request on a fresh HTTP/2 connection with these pseudo-headers and fields: { status, headers, body }. */
async function rawH2(w, { ':authority': authority, ':path': path = '/open-path', ':method': method = 'GET', extra = [] }) {
  const session = http2.connect(w.base, { ca: w.pki.ca });
  session.on('error', () => {});
  try {
    const raw = [':method', method, ':path', path, ':scheme', 'https', ':authority', authority];
    for (const [k, v] of extra) raw.push(k, v);
    return await new Promise((resolve, reject) => {
      const stream = session.request(raw);
      let head;
      const chunks = [];
      stream.on('response', (h) => { head = h; });
      stream.on('data', (c) => chunks.push(c));
      stream.on('error', reject);
      stream.on('close', () => (head
        ? resolve({ status: head[':status'], headers: head, body: Buffer.concat(chunks).toString() })
        : reject(new Error(`stream closed without a response (code ${stream.rstCode})`))));
    });
  } finally {
    session.close();
  }
}

/** An upstream that holds every request until released, counting those open at once. */
async function startHoldingUpstream(t) {
  const held = [];
  let open = 0;
  let peak = 0;
  let total = 0;
  const server = http.createServer((req, res) => {
    total += 1;
    open += 1;
    peak = Math.max(peak, open);
    let closed = false;
    const done = () => {
      if (!closed) {
        closed = true;
        open -= 1;
      }
    };
    res.on('close', done);
    req.on('close', () => { if (req.destroyed && !res.writableEnded) done(); });
    held.push(() => {
      if (!res.destroyed) res.end('ok');
    });
  });
  server.keepAliveTimeout = 60_000;
  const port = await listen(server, 0);
  const stop = stopper(server);
  t.after(async () => {
    held.splice(0).forEach((f) => f());
    server.closeAllConnections?.();
    await stop();
  });
  return {
    url: `http://127.0.0.1:${port}`,
    stats: () => ({ open, peak, total }),
    release: () => held.splice(0).forEach((f) => f()),
  };
}

/** A tls world whose only route is public, to a holding upstream. */
async function holdingWorld(t) {
  const pki = await makePki(t);
  const a = await addresses();
  const base = `https://127.0.0.1:${a.port}`;
  const up = await startHoldingUpstream(t);
  const toml = configToml({
    writtenBy: 'tests/integration/h2.test.mjs',
    port: a.port,
    adminPort: a.adminPort,
    publicUrl: base,
    extraServer: `tls = ${tv({ cert: `${pki.dir}/server.pem`, key: `${pki.dir}/server.key` })}\nupstream_timeout = "60s"\n`,
    routes: `[[route]]\nupstream = ${q(up.url)}\nauth = "public"\n`,
  });
  const p = await launchPasserelle(t, toml, { adminPort: a.adminPort });
  return { pki, base, up, p, adminUrl: p.adminUrl };
}

function connect(w) {
  return new Promise((resolve, reject) => {
    const session = http2.connect(w.base, { ca: w.pki.ca, settings: { enablePush: false } });
    session.once('remoteSettings', () => resolve(session));
    session.once('error', reject);
  });
}

async function waitFor(what, check, ms = 20_000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setImmediate(r));
  }
}

test('(h2-limits) settings announced; a header list over max_header_bytes refused; at most 100 streams reach the app at once', TIMEOUT, async (t) => {
  const w = await holdingWorld(t);
  const session = await connect(w);
  t.after(() => session.destroy());
  assert.equal(session.remoteSettings.maxConcurrentStreams, 100);
  assert.equal(session.remoteSettings.maxHeaderListSize, 64 * 1024, 'server.max_header_bytes (default 64 KiB)');

  // 70 KB of fields: refused before anything is proxied (431, or the stream reset by the HTTP/2 layer).
  const big = await new Promise((resolve) => {
    const s = session.request({ ':path': '/big', 'x-big': 'a'.repeat(70_000) });
    s.on('response', (h) => resolve({ status: h[':status'] }));
    s.on('error', (e) => resolve({ error: e.code }));
    s.on('close', () => resolve({ reset: s.rstCode }));
    s.end();
  });
  assert.ok(big.status === 431 || big.error || big.reset, `oversized header list: ${JSON.stringify(big)}`);
  assert.notEqual(big.status, 200);
  assert.equal(w.up.stats().total, 0, 'the oversized request never reached the app');

  // 150 requests at once on one connection: the app sees at most 100 open at a time, and every one is answered.
  const fresh = await connect(w);
  t.after(() => fresh.destroy());
  const answers = Array.from({ length: 150 }, (_, i) => new Promise((resolve) => {
    const s = fresh.request({ ':path': `/many/${i}` });
    s.on('response', (h) => resolve(h[':status']));
    s.on('error', (e) => resolve(e.code));
    s.end();
  }));
  await waitFor('100 requests held at the app', () => w.up.stats().open >= 100);
  assert.equal(w.up.stats().open, 100, 'no more than MAX_CONCURRENT_STREAMS reach the app from one connection');
  // Release in rounds until all 150 are answered.
  const all = Promise.all(answers);
  let settled = false;
  all.then(() => { settled = true; });
  await waitFor('all 150 answered', () => { w.up.release(); return settled; });
  assert.deepEqual([...new Set(await all)], [200]);
  assert.ok(w.up.stats().peak <= 100, `peak at the app ${w.up.stats().peak}`);
});

test('(h2-limits) a reset flood (CVE-2023-44487) keeps at most 200 requests in flight per connection, and the server keeps answering', TIMEOUT, async (t) => {
  const w = await holdingWorld(t);
  const attacker = await connect(w);
  t.after(() => attacker.destroy());
  let goaway;
  attacker.on('goaway', (code) => { goaway = code; });
  // 5000 streams, each reset right after its HEADERS: the client never counts more than a few as open, the server
  // sees each as a new request.
  const FLOOD = 5000;
  let sent = 0;
  for (; sent < FLOOD && !attacker.destroyed && !attacker.closed && goaway === undefined; sent++) {
    try {
      const s = attacker.request({ ':path': `/flood/${sent}` });
      s.on('error', () => {});
      s.close(http2.constants.NGHTTP2_CANCEL);
    } catch {
      break;
    }
    if (sent % 100 === 99) await new Promise((r) => setImmediate(r));
  }
  // Whatever reached the app is held there: wait until the count stops moving, then judge it.
  let last = -1;
  await waitFor('the flood to settle at the app', async () => {
    const now = w.up.stats().total;
    const stable = now === last;
    last = now;
    await new Promise((r) => setTimeout(r, 200));
    return stable && !(now === 0 && goaway === undefined && sent < FLOOD);
  });
  const { peak, total } = w.up.stats();
  assert.ok(peak <= 200, `requests in flight at the app from one flooding connection: ${peak} (sent ${sent}, GOAWAY ${goaway})`);
  assert.ok(total < sent / 2, `requests that reached the app: ${total} of ${sent}`);
  t.diagnostic(`flood: ${sent} streams opened and reset, ${total} reached the app, at most ${peak} at once, GOAWAY ${goaway}`);

  // Then a browser on another connection is answered (its request is held like the others: released in rounds).
  w.up.release();
  const other = await connect(w);
  t.after(() => other.destroy());
  let status;
  const s = other.request({ ':path': '/after-the-flood' });
  s.on('response', (h) => { status = h[':status']; });
  s.on('error', (e) => { status = e.code; });
  s.end();
  await waitFor('the request after the flood', () => { w.up.release(); return status !== undefined; });
  assert.equal(status, 200);
  const metrics = await (await fetch(`${w.adminUrl}/metrics`)).text();
  const busy = Number(metrics.match(/passerelle_requests_refused_total\{reason="connection_busy"\} (\d+)/)?.[1]);
  t.diagnostic(`answered 429 as over ${200} in flight on the connection: ${busy}`);
});

test('(h2-upstream) upstreams stay HTTP/1.1 whatever the client speaks; upstream_h2 = true speaks h2 over TLS (ALPN) and h2c over http', TIMEOUT, async (t) => {
  const pki = await makePki(t);
  const seen = [];
  const record = (name) => (req, res) => {
    seen.push({ name, version: req.httpVersion, authority: req.headers[':authority'], host: req.headers.host, url: req.url,
      pseudo: Object.keys(req.headers).filter((k) => k.startsWith(':')).sort() });
    res.writeHead(200, { 'content-type': 'text/plain' });
    res.end(name);
  };
  // One server that speaks both (ALPN h2 and http/1.1), one h2c-only, one HTTP/1.1-only.
  const tlsServer = http2.createSecureServer({ key: pki.key, cert: pki.cert, allowHTTP1: true }, record('tls'));
  const h2cServer = http2.createServer(record('h2c'));
  const h1Server = http.createServer(record('h1'));
  const ports = {};
  for (const [name, server] of [['tls', tlsServer], ['h2c', h2cServer], ['h1', h1Server]]) {
    ports[name] = await listen(server, 0);
    // An HTTP/2 server has no closeAllConnections: its sessions are ended by hand.
    const sessions = new Set();
    server.on('session', (s) => { sessions.add(s); s.on('close', () => sessions.delete(s)); });
    const stop = name === 'h1' ? stopper(server) : () => new Promise((resolve) => {
      for (const s of sessions) s.destroy();
      server.close(() => resolve());
    });
    t.after(() => stop());
  }
  const a = await addresses();
  const base = `https://127.0.0.1:${a.port}`;
  const route = (path, upstream, extra = '') => `[[route]]\npath = ${q(path)}\nupstream = ${q(upstream)}\nauth = "public"\n${extra}`;
  const ca = `upstream_tls = { ca_file = ${q(pki.caFile)} }\n`;
  const toml = configToml({
    writtenBy: 'tests/integration/h2.test.mjs',
    port: a.port,
    adminPort: a.adminPort,
    publicUrl: base,
    extraServer: `tls = ${tv({ cert: `${pki.dir}/server.pem`, key: `${pki.dir}/server.key` })}\n`,
    routes: [
      route('/tls-h2', `https://127.0.0.1:${ports.tls}`, `${ca}upstream_h2 = true\n`),
      route('/tls-default', `https://127.0.0.1:${ports.tls}`, ca),
      route('/h2c', `http://127.0.0.1:${ports.h2c}`, 'upstream_h2 = true\n'),
      route('/h1', `http://127.0.0.1:${ports.h1}`),
    ],
  });
  await launchPasserelle(t, toml, { adminPort: a.adminPort });
  for (const protocol of PROTOCOLS) {
    const person = createPerson({ tls: { ca: pki.ca, protocol } });
    t.after(() => person.close());
    for (const [path, name, version] of [['/tls-h2', 'tls', '2.0'], ['/tls-default', 'tls', '1.1'], ['/h2c', 'h2c', '2.0'], ['/h1', 'h1', '1.1']]) {
      seen.length = 0;
      const res = await person.request(`${base}${path}/x?y=1`);
      assert.equal(res.status, 200, `${protocol} ${path}: ${res.status} ${res.body.slice(0, 200)}`);
      assert.equal(res.body, name);
      assert.equal(seen.length, 1, `${protocol} ${path}: one request upstream`);
      const [got] = seen;
      assert.equal(got.version, version, `${protocol} → ${path}: the upstream was spoken to in HTTP/${version}`);
      assert.equal(got.url, `${path}/x?y=1`);
      const authority = version === '2.0' ? got.authority : got.host;
      assert.equal(authority, `127.0.0.1:${a.port}`, `${protocol} ${path}: the host routed on`);
      if (version === '2.0') assert.deepEqual(got.pseudo, [':authority', ':method', ':path', ':scheme']);
    }
  }
});
