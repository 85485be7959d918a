// Issue 8, items 4–9: what crosses the trust boundary on retries, in cookies and in responses, and what large claim
// sets do to a login. Every upstream here is support/raw-upstream.mjs (node:net): it records the exact bytes of each
// request and which connection carried it, so a byte >= 0x80 is compared as that byte and a retry is seen as such.
//
//   (4) retries      an upstream that drops every request arriving on a reused keep-alive connection, so pingora
//                    retries on a fresh one: both attempts carry the normalised target, the same Host, the same
//                    header lines, no spoofed identity and the session's identity.
//   (5) Cookie bytes every byte 0x20–0xFF but `;` (and multi-byte UTF-8) in an app cookie next to the session cookie,
//                    in every position, on two header lines, with the chunk/flow/idt/logout names, on a public and
//                    a protected route: the app gets its cookies byte for byte and in order, never Passerelle's.
//   (6) Set-Cookie   an upstream setting each of Passerelle's cookie names: removed before the browser, counted in
//                    /metrics (passerelle_upstream_cookies_removed_total); the app's own cookies pass intact.
//   (7) caching      identified responses become private (Vary: Cookie, no s-maxage, no CDN headers); a response
//                    carrying a Passerelle Set-Cookie is no-store; `cache = "upstream"` keeps the app's headers.
//   (8) large claims a 9,000-character usual_name: a working session without a loop (or a French 400 page), every
//                    Set-Cookie ≤ 4,096 bytes, logout still works; 40,000 characters mapped by a header: the French
//                    page, counted as session_too_large.
//   (9) app cookies  passerelle_pref, passerelle2, passerelle.x are the app's: no WARN, no delete, no invalid count.
//
// Run: node --test --test-reporter=spec tests/integration/boundary-response.test.mjs   ($PASSERELLE_BIN to choose
// the binary). Passerelle's output for each world is kept in tests/output/boundary_<test name>.log.

import assert from 'node:assert/strict';
import http from 'node:http';
import { test } from 'node:test';

import { assertFrenchErrorPage } from '../support/checks.mjs';
import { stopAfter } from '../support/http.mjs';
import { launchPasserelle, outputName } from '../support/passerelle.mjs';
import { createPerson, parseSetCookie } from '../support/person.mjs';
import { openRaw } from '../support/raw-http.mjs';
import { headerBytes, headerText, startRawUpstream } from '../support/raw-upstream.mjs';
import { ROGUE_ACCOUNT, startRogueProvider } from '../support/rogue-provider.mjs';
import { addresses, configToml, PREFIX, providerToml, tv } from '../support/stack.mjs';

const TIMEOUT = { timeout: 120_000 };

// The callback's answer after a large login sets the session and the id_token hint in chunks: about 32 KB of
// header lines, which browsers accept (Chromium reads up to 256 KiB of response headers) but node's HTTP client
// refuses past 16 KiB. The scripted person (support/person.mjs, node:http) is given a browser's allowance, in
// this test process only.
const nodeRequest = http.request;
http.request = (options, callback) => nodeRequest({ maxHeaderSize: 256 * 1024, ...options }, callback);
const PROVIDER = 'rogue';
const SUB = ROGUE_ACCOUNT.sub;

// ---------------------------------------------------------------------------------------------------------------
// World: a rogue provider (logs in at once, no form), a raw upstream, Passerelle (JSON logs).

/** An upstream answer whose header lines are given in the target's query: `?h=<base64url of JSON [[n, v], …]>`. */
function withHeaders(path, lines) {
  return `${path}?h=${Buffer.from(JSON.stringify(lines)).toString('base64url')}`;
}

function answerFromQuery(record) {
  const m = /[?&]h=([A-Za-z0-9_-]+)/.exec(record.target);
  const headers = m ? JSON.parse(Buffer.from(m[1], 'base64url').toString('utf8')) : [];
  return { status: 200, headers: [['Content-Type', 'text/plain; charset=utf-8'], ...headers], body: 'ok' };
}

function protectedRoute(path, upstream, { headers = { 'X-Auth-Sub': 'sub', 'X-Auth-Email': 'email' }, scopes = ['email', 'profile'], extra = '' } = {}) {
  return `[[route]]
path = ${tv(path)}
upstream = ${tv(upstream)}
auth = "required"
providers = [${tv(PROVIDER)}]
scopes = ${tv(scopes)}
${extra}
[route.headers]
${Object.entries(headers).map(([h, c]) => `${tv(h)} = ${tv(c)}`).join('\n')}
`;
}

function plainRoute(path, upstream, auth, extra = '') {
  return `[[route]]
path = ${tv(path)}
upstream = ${tv(upstream)}
auth = ${tv(auth)}
${auth === 'public' ? '' : `providers = [${tv(PROVIDER)}]\n`}${extra}
`;
}

/**
 * One world: `routes(upstreamUrl)` gives the [[route]] TOML; `answer` the raw upstream's answers; `provider` the
 * rogue provider's options; `scopes` the provider block's scopes. Stopped by t.after.
 */
async function world(t, { routes, answer = answerFromQuery, provider = {}, scopes = ['openid', 'email', 'profile'] }) {
  const a = await addresses();
  const op = await stopAfter(t, startRogueProvider({ redirectUris: a.redirectUris, ...provider }));
  const upstream = await stopAfter(t, startRawUpstream({ answer }));
  const toml = configToml({
    writtenBy: 'tests/integration/boundary-response.test.mjs',
    port: a.port,
    adminPort: a.adminPort,
    extraServer: 'log_format = "json"\n',
    providers: providerToml(PROVIDER, 'oidc', op, { auth_method: op.authMethod, scopes, timeout: '5s' }),
    routes: routes(upstream.url),
  });
  const p = await launchPasserelle(t, toml, { adminPort: a.adminPort, logName: outputName(t, { prefix: 'boundary_' }) });
  return { ...a, host: `127.0.0.1:${a.port}`, op, upstream, p };
}

/** A number of /metrics (`name` with its labels, e.g. `x_total{reason="y"}`), or undefined when absent. */
async function metric(w, name) {
  const text = await (await fetch(`${w.p.adminUrl}/metrics`)).text();
  const escaped = name.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  const m = new RegExp(`^${escaped} (\\d+)$`, 'm').exec(text);
  return m ? Number(m[1]) : undefined;
}

/** A login redirect: to the provider's authorization endpoint or to Passerelle's own /login. */
function toLogin(w, location) {
  return Boolean(location) && (location.startsWith(w.op.discovery.authorization_endpoint) || location.startsWith(`${w.base}${PREFIX}/login`));
}

/** Logs in through the rogue provider (no form) and returns the session cookie's value. */
async function login(w, person, path = '/app/') {
  const res = await person.get(`${w.base}${path}`);
  assert.equal(res.status, 200, `login through ${path}: ended on ${res.status} ${res.url}\n${res.body.slice(0, 400)}\n${w.p.logs().slice(-1500)}`);
  const session = person.jar.get(w.base, 'passerelle');
  assert.ok(session, 'a session cookie after login');
  return session.value;
}

/** The bytes of one GET with these header lines (strings are latin1, Buffers are sent as they are). */
function rawGet(target, lines) {
  const parts = [Buffer.from(`GET ${target} HTTP/1.1\r\n`, 'latin1')];
  for (const line of lines) {
    if (Array.isArray(line)) parts.push(Buffer.from(`${line[0]}: `, 'latin1'), Buffer.from(line[1], 'latin1'));
    else parts.push(Buffer.isBuffer(line) ? line : Buffer.from(line, 'latin1'));
    parts.push(Buffer.from('\r\n'));
  }
  parts.push(Buffer.from('\r\n'));
  return Buffer.concat(parts);
}

/** Sends `bytes` on raw connection `c` (reopened when closed) and reads the answer. */
async function exchange(w, conn, bytes) {
  if (!conn.c || conn.c.isClosed()) conn.c = await openRaw(w.port);
  conn.c.write(bytes);
  const res = await conn.c.response();
  // Passerelle (pingora) closes the connection after refusing a request: the next one goes on a fresh connection.
  if (res && (res.status >= 400 || /close/i.test(res.headers.connection || ''))) {
    conn.c.destroy();
    conn.c = undefined;
  }
  assert.ok(res, `the connection closed without an answer to ${JSON.stringify(bytes.subarray(0, 120).toString('latin1'))}`);
  return res;
}

/** Set-Cookie values of a raw response. */
function setCookiesOf(res) {
  return res.rawHeaders.filter(([n]) => n.toLowerCase() === 'set-cookie').map(([, v]) => v);
}

/** Values of header `name` of a raw response, every line. */
function valuesOf(res, name) {
  return res.rawHeaders.filter(([n]) => n.toLowerCase() === name.toLowerCase()).map(([, v]) => v);
}

/** Cache-Control directive names, lower-cased. */
function directives(value) {
  return (value || '').split(',').map((d) => d.trim().toLowerCase()).filter(Boolean);
}

// ---------------------------------------------------------------------------------------------------------------
// (4) Retries carry the decided request

test('(4) a retry on a fresh connection carries the decided target, Host and headers', TIMEOUT, async (t) => {
  // Every request arriving on a connection that already answered one is dropped unanswered: pingora then retries
  // on a fresh connection (GET, reused connection). So each client request after the first gives two attempts.
  const w = await world(t, {
    answer: (rec) => (rec.index === 0 ? { status: 200, headers: [['Content-Type', 'text/plain']], body: 'ok' } : 'drop'),
    routes: (up) => protectedRoute('/app', up) + plainRoute('/public', up, 'public'),
  });
  const person = createPerson();
  const session = await login(w, person, '/app/');
  const conn = {};
  t.after(() => conn.c?.destroy());

  const spoof = [['X-Auth-Sub', 'evil'], ['X_Auth_Sub', 'evil'], ['X-Auth-Email', 'evil@example.org'], ['x-auth-sub', 'evil2']];
  const cases = [
    ['/public/../public/x', '/public/x', false],
    ['/public/./x', '/public/x', false],
    ['//public/x', '/public/x', false],
    ['/public/%78', '/public/x', false],
    ['/public/a/../%78?q=1&r=%2e%2e', '/public/x?q=1&r=%2e%2e', false],
    ['/public/../public/x', '/public/x', false, spoof],
    ['/app/../app/x', '/app/x', true, spoof],
    ['/app/./x?y=1', '/app/x?y=1', true, spoof],
    ['//app//x', '/app/x', true, spoof],
    ['/app/%78', '/app/x', true, spoof],
    ['/app/secret/../../public/x', '/public/x', true, spoof],
  ];
  for (const [target, expected, withSession, extra = []] of cases) {
    const what = `${target}${withSession ? ' (with a session)' : ''}${extra.length ? ' (spoofed identity)' : ''}`;
    const mark = w.upstream.requests.length;
    const lines = [['Host', w.host], ...extra];
    if (withSession) lines.push(['Cookie', `passerelle=${session}`]);
    const res = await exchange(w, conn, rawGet(target, lines));
    assert.equal(res.status, 200, `${what}: answered ${res.status} ${res.text.slice(0, 300)}`);
    const attempts = w.upstream.requests.slice(mark);
    assert.equal(attempts.length, 2, `${what}: one dropped attempt on a reused connection then a retry; got ${attempts.map((a) => `${a.target} (conn ${a.conn} #${a.index}${a.dropped ? ', dropped' : ''})`).join(', ')}`);
    assert.ok(attempts[0].dropped && attempts[0].index > 0, `${what}: the first attempt went on a reused connection and was dropped`);
    assert.ok(!attempts[1].dropped && attempts[1].index === 0 && attempts[1].conn !== attempts[0].conn, `${what}: the retry went on a fresh connection`);
    const identity = expected.startsWith('/app');
    for (const [i, a] of attempts.entries()) {
      const label = `${what}: attempt ${i + 1} (${a.dropped ? 'dropped' : 'retry'})`;
      assert.equal(a.target, expected, `${label}: the target decided on`);
      assert.deepEqual(headerText(a, 'host'), [w.host], `${label}: Host`);
      const ids = a.headers.filter(([n]) => /^x[-_]auth[-_]/i.test(n)).map(([n, v]) => [n, v.toString('latin1')]);
      assert.ok(!ids.some(([, v]) => /evil/.test(v)) && !ids.some(([n]) => n.includes('_')), `${label}: spoofed identity reached the upstream: ${JSON.stringify(ids)}`);
      if (identity) {
        assert.deepEqual(headerText(a, 'x-auth-sub'), [SUB], `${label}: the session's identity`);
        assert.deepEqual(headerText(a, 'x-auth-email'), [ROGUE_ACCOUNT.email], `${label}: the session's email`);
      } else {
        assert.deepEqual(ids, [], `${label}: no identity on a public route`);
      }
      assert.ok(!headerText(a, 'cookie').some((v) => /passerelle/.test(v)), `${label}: the session cookie reached the upstream`);
    }
    assert.deepEqual(
      attempts[1].headers.map(([n, v]) => [n.toLowerCase(), v.toString('latin1')]),
      attempts[0].headers.map(([n, v]) => [n.toLowerCase(), v.toString('latin1')]),
      `${what}: both attempts carry the same header lines`,
    );
  }
});

// ---------------------------------------------------------------------------------------------------------------
// Shared world for (5), (6), (7) and (9): protected /app and /raw, public /public, optional /opt.

/** One of Passerelle's cookie names (spec: session and chunks, flows, logout, id_token hint; __Host-/__Secure-). */
function isOwnName(name) {
  const bare = name.trim().replace(/^__(host|secure)-/i, '');
  return /^passerelle(\.\d+)?$|^passerelle_flow_[A-Za-z0-9_-]+$|^passerelle_logout$|^passerelle_idt(\.\d+)?$/.test(bare);
}

const OWN_NAMES = ['passerelle', 'passerelle.1', 'passerelle.3', 'passerelle_flow_AbCdEfGhIjKl', 'passerelle_logout',
  'passerelle_idt', 'passerelle_idt.1', '__Host-passerelle', '__host-passerelle', '__Secure-passerelle'];

test('(5)(6)(7)(9) cookies and caching across the boundary', { timeout: 180_000 }, async (t) => {
  const w = await world(t, {
    routes: (up) => protectedRoute('/app', up)
      + plainRoute('/public', up, 'public')
      + plainRoute('/opt', up, 'optional'),
  });
  const person = createPerson();
  const session = await login(w, person, '/app/');

  // -------------------------------------------------------------------------------------------------------------
  await t.test('(5) Cookie: the app gets its cookies byte for byte and in order, never Passerelle\'s', async () => {
    const conn = {};
    try {
      let n = 0;
      const failures = [];
      /** One request; `lines` are Cookie header values (Buffers); `expected` the app's cookies joined by "; ". */
      const check = async (route, lines, expected, label) => {
        const target = `/${route}/c${n++}`;
        const mark = w.upstream.requests.length;
        const res = await exchange(w, conn, rawGet(target, [['Host', w.host], ...lines.map((l) => Buffer.concat([Buffer.from('Cookie: '), l]))]));
        const got = w.upstream.requests.slice(mark);
        const problem = (() => {
          // DEL (0x7F) is not a field-value byte (RFC 9110 §5.5): the HTTP parser refuses the whole request with
          // 400 before Passerelle sees it. Accepted for that byte only, and only when nothing reached the app.
          if (res.status === 400 && label.startsWith('0x7f ') && got.length === 0) return undefined;
          if (res.status !== 200) return `answered ${res.status}`;
          if (got.length !== 1 || got[0].target !== target) return `upstream got ${got.map((g) => g.target).join(', ') || 'nothing'}`;
          const cookies = headerBytes(got[0], 'cookie');
          const joined = Buffer.concat(cookies.flatMap((c, i) => (i ? [Buffer.from('; '), c] : [c])));
          const names = joined.toString('latin1').split(';').map((p) => p.split('=')[0]);
          const own = names.filter(isOwnName);
          if (own.length) return `Passerelle's cookies reached the upstream: ${own.join(', ')} in ${JSON.stringify(joined.toString('latin1'))}`;
          if (!joined.equals(expected)) return `app cookies ${JSON.stringify(joined.toString('latin1'))} (${joined.toString('hex')}), expected ${JSON.stringify(expected.toString('latin1'))} (${expected.toString('hex')})`;
          if (route === 'app' && headerText(got[0], 'x-auth-sub').join() !== SUB) return `no identity on the protected route: ${JSON.stringify(headerText(got[0], 'x-auth-sub'))}`;
          return undefined;
        })();
        if (problem) failures.push(`${label} on /${route}: ${problem.replaceAll(session, '<session>')}`);
      };
      const b = (s) => Buffer.from(s, 'latin1');
      const values = [];
      for (let x = 0x20; x <= 0xff; x++) if (x !== 0x3b) values.push([`0x${x.toString(16)}`, Buffer.from([0x61, x, 0x62])]);
      for (const s of ['Hélène', 'Nouméa', '日本語', '😀', 'Wamytan-Noël']) values.push([s, Buffer.from(s, 'utf8')]);
      values.push(['latin1 Hélène', Buffer.from('Hélène', 'latin1')]);
      const S = `passerelle=${session}`;
      for (const [label, v] of values) {
        const lang = Buffer.concat([b('lang='), v]);
        const app = Buffer.concat([lang, b('; app=1')]);
        const forms = [
          ['middle', [Buffer.concat([lang, b(`; ${S}; app=1`)])]],
          ['first', [Buffer.concat([b(`${S}; `), lang, b('; app=1')])]],
          ['last', [Buffer.concat([lang, b(`; app=1; ${S}`)])]],
          ['two lines', [Buffer.concat([lang, b('; passerelle_flow_AbCdEfGhIjKl=f')]), b(`${S}; app=1; passerelle_idt=i`)]],
          ['every name', [Buffer.concat([lang, b(`; passerelle_idt.1=i; passerelle_logout=l; app=1; __Host-passerelle=h; passerelle_flow_AbCdEfGhIjKl=f; ${S}`)])]],
        ];
        for (const route of ['public', 'app']) {
          for (const [form, lines] of forms) await check(route, lines, app, `${label} (${form})`);
        }
        // Session chunks next to the session would make it another (broken) session: on the public route only.
        await check('public', [Buffer.concat([b('passerelle.1=c; '), lang, b(`; passerelle.2=c; app=1; ${S}`)])], app, `${label} (chunks)`);
      }
      assert.deepEqual(failures.slice(0, 40), [], `${failures.length} of ${n} requests went wrong (first 40 shown)`);
    } finally {
      conn.c?.destroy();
    }
  });

  // -------------------------------------------------------------------------------------------------------------
  await t.test('(6) an upstream cannot set Passerelle\'s cookies; the app\'s pass intact; /metrics counts them', async () => {
    const forged = [
      ...OWN_NAMES.map((name, i) => `${name}=forged-${i}; Path=${name.includes('idt') ? PREFIX : '/'}${name.startsWith('__') ? '; Secure' : ''}`),
      ' passerelle =forged-spaces; Path=/',
      '=passerelle=forged-nameless; Path=/',
    ];
    const app = ['passerelle_pref=dark; Path=/', 'JSESSIONID=A1B2C3; Path=/; HttpOnly', 'Passerelle=app-owned; Path=/'];
    // Interleaved: the app's cookies must keep their order among the removed ones.
    const lines = [...forged.slice(0, 4), app[0], ...forged.slice(4, 9), app[1], ...forged.slice(9), app[2]].map((v) => ['Set-Cookie', v]);
    const conn = {};
    try {
      for (const [route, withSession] of [['public', false], ['public', true], ['app', true], ['opt', false]]) {
        const what = `/${route}${withSession ? ' with a session' : ''}`;
        const before = await metric(w, 'passerelle_upstream_cookies_removed_total');
        const hdrs = [['Host', w.host]];
        if (withSession) hdrs.push(['Cookie', `passerelle=${session}`]);
        const res = await exchange(w, conn, rawGet(withHeaders(`/${route}/set-cookies`, lines), hdrs));
        assert.equal(res.status, 200, `${what}: ${res.status}`);
        const got = setCookiesOf(res);
        assert.deepEqual(got.filter((v) => /forged/.test(v)), [], `${what}: Passerelle's cookies set by the upstream reached the browser`);
        assert.deepEqual(got, app, `${what}: exactly the app's cookies, intact and in order`);
        const after = await metric(w, 'passerelle_upstream_cookies_removed_total');
        assert.equal(after === undefined ? undefined : after - before, forged.length, `${what}: /metrics passerelle_upstream_cookies_removed_total grows by ${forged.length} (before ${before}, after ${after})`);
      }
      // The browser's jar: the session is still the one Passerelle issued.
      const res = await person.api(`${w.base}/app/after-forgery`);
      assert.equal(res.status, 200, 'the session still works');
    } finally {
      conn.c?.destroy();
    }
  });

  // -------------------------------------------------------------------------------------------------------------
  await t.test('(7) identified responses are private, Passerelle\'s Set-Cookie means no-store, public untouched', async () => {
    const conn = {};
    const CDN = [['CDN-Cache-Control', 'max-age=600'], ['Surrogate-Control', 'max-age=600'], ['Cloudflare-CDN-Cache-Control', 'max-age=600']];
    const variants = [
      ['public, max-age=3600', [['Cache-Control', 'public, max-age=3600']], { keep: ['max-age=3600'] }],
      ['s-maxage', [['Cache-Control', 'public, max-age=3600, s-maxage=600']], { keep: ['max-age=3600'] }],
      ['none', [], { keep: [] }],
      ['Vary: Accept-Encoding', [['Cache-Control', 'public, max-age=3600'], ['Vary', 'Accept-Encoding']], { keep: ['max-age=3600'], vary: ['accept-encoding'] }],
      ['CDN headers', [['Cache-Control', 'public, max-age=3600'], ...CDN], { keep: ['max-age=3600'] }],
      ['no-store, Vary: *', [['Cache-Control', 'no-store'], ['Vary', '*']], { keep: ['no-store'], exact: true }],
    ];
    try {
      for (const [label, lines, expect] of variants) {
        // Protected, with a session: private.
        let res = await exchange(w, conn, rawGet(withHeaders('/app/cache', lines), [['Host', w.host], ['Cookie', `passerelle=${session}`]]));
        assert.equal(res.status, 200, `${label}: protected answered ${res.status}`);
        const cc = directives(valuesOf(res, 'cache-control').join(','));
        const names = cc.map((d) => d.split('=')[0]);
        assert.ok(!names.includes('public') && !names.includes('s-maxage'), `${label}: protected route: no public, no s-maxage in ${JSON.stringify(cc)}`);
        assert.ok(names.includes('private') || names.includes('no-store'), `${label}: protected route: private (or no-store) in ${JSON.stringify(cc)}`);
        if (expect.exact) assert.deepEqual(cc, expect.keep, `${label}: kept as the app said`);
        for (const d of expect.keep) assert.ok(cc.includes(d), `${label}: ${d} kept in ${JSON.stringify(cc)}`);
        const vary = directives(valuesOf(res, 'vary').join(','));
        if (expect.exact) assert.deepEqual(vary, ['*'], `${label}: Vary: * kept`);
        else assert.ok(vary.includes('cookie'), `${label}: Vary names Cookie: ${JSON.stringify(vary)}`);
        for (const v of expect.vary ?? []) assert.ok(vary.includes(v), `${label}: Vary keeps ${v}: ${JSON.stringify(vary)}`);
        for (const [n] of CDN) assert.deepEqual(valuesOf(res, n), [], `${label}: ${n} removed on the protected route`);

        // Public: untouched (anonymous, and with a session cookie too: no identity is injected there).
        for (const cookie of [[], [['Cookie', `passerelle=${session}`]]]) {
          res = await exchange(w, conn, rawGet(withHeaders('/public/cache', lines), [['Host', w.host], ...cookie]));
          assert.equal(res.status, 200);
          for (const [n, v] of lines) assert.deepEqual(valuesOf(res, n), [v], `${label}: public route: ${n} untouched${cookie.length ? ' (session cookie sent)' : ''}`);
          if (!lines.some(([n]) => /^cache-control$/i.test(n))) assert.deepEqual(valuesOf(res, 'cache-control'), [], `${label}: public route: no Cache-Control added`);
          if (!lines.some(([n]) => /^vary$/i.test(n))) assert.deepEqual(valuesOf(res, 'vary'), [], `${label}: public route: no Vary added`);
        }

        // Optional route, broken session cookie: Passerelle deletes it on the proxied response, which is then no-store.
        res = await exchange(w, conn, rawGet(withHeaders('/opt/cache', lines), [['Host', w.host], ['Cookie', 'passerelle=garbage-not-a-session']]));
        assert.equal(res.status, 200, `${label}: optional route answered ${res.status}`);
        assert.ok(setCookiesOf(res).some((c) => parseSetCookie(c)?.name === 'passerelle'), `${label}: the broken session cookie is deleted (the premise)`);
        assert.deepEqual(valuesOf(res, 'cache-control'), ['no-store'], `${label}: a response carrying Passerelle's Set-Cookie is no-store`);
        for (const [n] of CDN) assert.deepEqual(valuesOf(res, n), [], `${label}: ${n} removed when Passerelle sets a cookie`);
      }
    } finally {
      conn.c?.destroy();
    }
  });

  // -------------------------------------------------------------------------------------------------------------
  await t.test('(9) app cookies named passerelle_pref, passerelle2, passerelle.x are not a broken session', async () => {
    const APP = [['passerelle_pref', 'dark'], ['passerelle2', '1'], ['passerelle.x', 'y']];
    const appLine = APP.map(([n, v]) => `${n}=${v}`).join('; ');
    const invalidBefore = await metric(w, 'passerelle_sessions_invalid_total');
    const logMark = w.p.logs().length;
    const deletes = (res) => res.setCookies.filter((c) => c.name === 'passerelle' && (c.value === '' || c.attributes['max-age'] === '0'));

    // A person with the app's cookies logs in (flow cookies and all), then uses both routes.
    const someone = createPerson();
    for (const [n, v] of APP) someone.jar.set(w.base, n, v, { path: '/' });
    const first = await someone.get(`${w.base}/app/with-app-cookies`);
    for (const hop of first.history) assert.deepEqual(deletes(hop), [], `login: no delete of the session cookie at ${hop.url}`);
    assert.equal(first.status, 200, `login with app cookies ended on ${first.status} ${first.url} after ${first.history.length} hops`);
    assert.ok(someone.jar.get(w.base, 'passerelle'), 'a session after the login');
    for (const path of ['/app/again', '/public/p']) {
      const mark = w.upstream.requests.length;
      const res = await someone.api(`${w.base}${path}`);
      assert.equal(res.status, 200, `${path} with a session and app cookies: ${res.status}`);
      assert.deepEqual(deletes(res), [], `${path}: no delete of the session cookie`);
      const got = w.upstream.requests.slice(mark);
      assert.equal(got.length, 1);
      assert.deepEqual(headerText(got[0], 'cookie'), [appLine], `${path}: the app's cookies reach the app, in order`);
      if (path.startsWith('/app')) assert.deepEqual(headerText(got[0], 'x-auth-sub'), [SUB], `${path}: authenticated`);
    }

    // Someone without a session: public 200; protected goes to the provider as for anyone.
    const anonymous = createPerson();
    for (const [n, v] of APP) anonymous.jar.set(w.base, n, v, { path: '/' });
    const pub = await anonymous.get(`${w.base}/public/anon`, { follow: false });
    assert.equal(pub.status, 200, `public without a session: ${pub.status}`);
    assert.deepEqual(deletes(pub), [], 'public without a session: no delete of the session cookie');
    const prot = await anonymous.get(`${w.base}/app/anon`, { follow: false });
    assert.equal(prot.status, 302, `protected without a session: a login redirect, got ${prot.status}`);
    assert.ok(toLogin(w, prot.location), `protected without a session: to the provider (${prot.location})`);
    assert.deepEqual(deletes(prot), [], 'protected without a session: no delete of the session cookie');

    const logs = w.p.logs().slice(logMark);
    assert.doesNotMatch(logs, /session cookie refused/, 'no "session cookie refused" WARN');
    assert.equal(await metric(w, 'passerelle_sessions_invalid_total'), invalidBefore, 'passerelle_sessions_invalid_total unchanged');
  });
});

// ---------------------------------------------------------------------------------------------------------------
// (7) route.cache = "upstream" (a configuration key of its own world: a binary without it refuses the file)

test('(7) cache = "upstream" keeps the app\'s caching headers, except no-store when Passerelle sets a cookie', TIMEOUT, async (t) => {
  const w = await world(t, {
    routes: (up) => protectedRoute('/app', up, { extra: 'cache = "upstream"' })
      + plainRoute('/opt', up, 'optional', 'cache = "upstream"\n'),
  });
  const person = createPerson();
  const session = await login(w, person, '/app/');
  const lines = [['Cache-Control', 'public, max-age=3600, s-maxage=600'], ['Vary', 'Accept-Encoding'], ['CDN-Cache-Control', 'max-age=600'], ['Surrogate-Control', 'max-age=60']];
  const conn = {};
  try {
    let res = await exchange(w, conn, rawGet(withHeaders('/app/theirs', lines), [['Host', w.host], ['Cookie', `passerelle=${session}`]]));
    assert.equal(res.status, 200);
    for (const [n, v] of lines) assert.deepEqual(valuesOf(res, n), [v], `identified, cache = "upstream": ${n} as the app wrote it`);
    res = await exchange(w, conn, rawGet(withHeaders('/opt/theirs', lines), [['Host', w.host], ['Cookie', 'passerelle=garbage-not-a-session']]));
    assert.equal(res.status, 200);
    assert.ok(setCookiesOf(res).some((c) => parseSetCookie(c)?.name === 'passerelle'), 'the broken session cookie is deleted (the premise)');
    assert.deepEqual(valuesOf(res, 'cache-control'), ['no-store'], 'cache = "upstream" but Passerelle sets a cookie: no-store');
    assert.deepEqual(valuesOf(res, 'cdn-cache-control'), [], 'CDN-Cache-Control removed');
    assert.deepEqual(valuesOf(res, 'surrogate-control'), [], 'Surrogate-Control removed');
  } finally {
    conn.c?.destroy();
  }
});

// ---------------------------------------------------------------------------------------------------------------
// (8) Large claims

/** A usual_name of `n` characters (non-ASCII included), recognisable in logs. */
function bigName(n) {
  return 'Wamytan-Noël-'.repeat(Math.ceil(n / 13)).slice(0, n);
}

/** The rogue provider's case: `usual_name` in the id_token and in userinfo, no family_name (as ProConnect does). */
function largeClaims(name) {
  return {
    idToken: { claims: (c) => ({ ...c, usual_name: name }) },
    userinfoClaims: (c) => {
      const { family_name: _, ...rest } = c;
      return { ...rest, usual_name: name };
    },
  };
}

/** Navigates, bounding redirects: { res, loop } (loop: more than `max` redirects). */
async function visit(person, url, max = 12) {
  try {
    return { res: await person.get(url, { maxRedirects: max }) };
  } catch (e) {
    if (/too many redirects/.test(e.message)) return { loop: true, error: e.message };
    throw e;
  }
}

/** Every Set-Cookie Passerelle sent on these responses: [{ url, value, bytes }]. */
function passerelleSetCookies(w, responses) {
  return responses.filter((r) => r.url.startsWith(w.base))
    .flatMap((r) => r.setCookies.map((c) => ({ url: r.url, name: c.name, bytes: Buffer.byteLength(c.raw) })));
}

test('(8) a 9,000-character usual_name: a working session or a French page, never a loop; cookies ≤ 4,096 bytes; logout works', TIMEOUT, async (t) => {
  const name = bigName(9000);
  const w = await world(t, {
    provider: { misbehave: largeClaims(name) },
    scopes: ['openid', 'email', 'profile', 'usual_name'],
    routes: (up) => protectedRoute('/app', up, { headers: { 'X-Auth-Sub': 'sub', 'X-Auth-Family-Name': 'family_name' } })
      + plainRoute('/public', up, 'public'),
  });
  const person = createPerson();
  const sent = [];
  const first = await visit(person, `${w.base}/app/start`);
  assert.ok(!first.loop, `the login loops: ${first.error}\n${w.p.logs().slice(-1500)}`);
  sent.push(...first.res.history);
  const idTokens = w.op.issued.filter((i) => i.type === 'id_token');
  assert.equal(idTokens.length, 1, 'one login at the provider');
  t.diagnostic(`the login ended on ${first.res.status} ${first.res.url}`);
  if (first.res.status === 200) {
    // A working session: the next three requests are answered without going back to the provider.
    for (let i = 0; i < 3; i++) {
      const mark = w.upstream.requests.length;
      const again = await visit(person, `${w.base}/app/next-${i}`);
      assert.ok(!again.loop, `request ${i + 1} after login loops`);
      assert.equal(again.res.status, 200, `request ${i + 1} after login: ${again.res.status}`);
      assert.equal(again.res.history.length, 1, `request ${i + 1} after login: no redirect (${again.res.history.map((h) => `${h.status} ${h.url}`).join(' -> ')})`);
      sent.push(...again.res.history);
      const got = w.upstream.requests.slice(mark);
      assert.equal(got.length, 1);
      assert.deepEqual(headerText(got[0], 'x-auth-sub'), [SUB], `request ${i + 1}: the identity`);
      // The default header encoding percent-encodes non-ASCII text.
      const mapped = headerText(got[0], 'x-auth-family-name');
      assert.ok(mapped.length === 1 && decodeURIComponent(mapped[0]) === name, `request ${i + 1}: the mapped claim, whole (got ${mapped.length} line(s), ${mapped[0]?.length} bytes)`);
    }
    assert.equal(w.op.issued.filter((i) => i.type === 'id_token').length, 1, 'no second login at the provider');
    const logs = w.p.logs();
    assert.match(logs, /dropped[^\n]*usual_name|usual_name[^\n]*dropped/, 'the log names the dropped claims');
    assert.ok(!logs.includes(name.slice(0, 300)), 'the log names claims, never their values');

    // Logout still works: to the provider's end_session endpoint, with the id_token as hint if it was kept.
    const out = await person.get(`${w.base}${PREFIX}/logout`, { follow: false });
    sent.push(out);
    assert.equal(out.status, 302, `logout: ${out.status} ${out.body.slice(0, 300)}`);
    const to = new URL(out.location);
    assert.equal(`${to.origin}${to.pathname}`, w.op.discovery.end_session_endpoint, `logout goes to the provider: ${out.location}`);
    const hint = to.searchParams.get('id_token_hint');
    t.diagnostic(`logout ${hint === null ? 'without id_token_hint' : `with an id_token_hint of ${hint.length} characters`}`);
    if (hint !== null) assert.ok(hint === idTokens[0].value, 'the id_token_hint is the id_token issued, whole');
    assert.ok(out.setCookies.some((c) => c.name === 'passerelle' && c.attributes['max-age'] === '0'), 'logout deletes the session cookie');
    const after = await person.get(`${w.base}/app/after-logout`, { follow: false });
    assert.equal(after.status, 302, 'after logout: a login redirect');
    assert.ok(toLogin(w, after.location), `after logout: to the provider (${after.location})`);
  } else {
    assert.equal(first.res.status, 400, `the login ends in a French page (400) or a working session: ${first.res.status} ${first.res.url}`);
    assert.match(first.res.body, /<html lang="fr"/);
    await assertFrenchErrorPage(first.res, w.p.logs);
  }
  const big = passerelleSetCookies(w, sent).filter((c) => c.bytes > 4096);
  assert.deepEqual(big, [], 'every Set-Cookie Passerelle sent is at most 4,096 bytes');
});

test('(8) a 40,000-character usual_name mapped by a header: the French page, session_too_large, no cookie over 4,096 bytes', TIMEOUT, async (t) => {
  const name = bigName(40000);
  const w = await world(t, {
    provider: { misbehave: largeClaims(name) },
    scopes: ['openid', 'email', 'profile', 'usual_name'],
    routes: (up) => protectedRoute('/app', up, { headers: { 'X-Auth-Sub': 'sub', 'X-Auth-Usual-Name': 'usual_name' }, scopes: ['email', 'usual_name'] })
      + plainRoute('/public', up, 'public'),
  });
  const before = await metric(w, 'passerelle_login_failures_total{reason="session_too_large"}');
  const person = createPerson();
  const first = await visit(person, `${w.base}/app/start`);
  assert.ok(!first.loop, `the login loops: ${first.error}\n${w.p.logs().slice(-1500)}`);
  const { res } = first;
  assert.equal(res.status, 400, `the login ends on a 400 page: ${res.status} ${res.url}\n${res.body.slice(0, 300)}`);
  assert.match(res.body, /<html lang="fr"/, 'a French page');
  await assertFrenchErrorPage(res, w.p.logs);
  assert.equal(person.jar.get(w.base, 'passerelle'), undefined, 'no session cookie');
  assert.equal(w.upstream.requests.length, 0, 'the upstream was never reached');
  const big = passerelleSetCookies(w, res.history).filter((c) => c.bytes > 4096);
  assert.deepEqual(big, [], 'every Set-Cookie Passerelle sent is at most 4,096 bytes');
  const after = await metric(w, 'passerelle_login_failures_total{reason="session_too_large"}');
  assert.equal(after, (before ?? 0) + 1, `/metrics: login failures with reason session_too_large (before ${before}, after ${after})`);
  assert.ok(!w.p.logs().includes(name.slice(0, 300)), 'the claim\'s value is not in the log');
});
