// Passerelle against hostile clients, end to end: request smuggling and framing tricks on raw sockets, huge header
// blocks and slow clients, forged and planted cookies, login-flow abuse, and the security headers of Passerelle's
// own answers. Same world as core.test.mjs (support/stack.mjs: a real oidc-provider, a recording upstream, the
// Passerelle binary, a scripted person); what core (c), (d), (k) and gateway (g1), (g2b), (g5) already check is
// not repeated here.
//
// The property checked for every malformed request is the safety one, whatever pingora answers (400 or a closed
// connection): nothing smuggled reaches the upstream as a request of its own, a protected path is never reached
// without a session, no server error, and Passerelle keeps serving the next client. What each case gets from the
// current binary is recorded in a comment next to it.
//
// Needs target/release/passerelle (or $PASSERELLE_BIN). Run:
//   node --test --test-reporter=spec tests/integration/abuse.test.mjs

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';

import {
  assertFrenchErrorPage, assertLoginRedirect, assertUnauthorized, identityLines, sessionCookies,
} from '../support/checks.mjs';
import { httpGetStatus, stopAfter } from '../support/http.mjs';
import { launchPasserelle, outputName } from '../support/passerelle.mjs';
import { createPerson } from '../support/person.mjs';
import { ACCOUNTS, startProvider } from '../support/provider.mjs';
import { http1, openRaw } from '../support/raw-http.mjs';
import { addresses, configToml, PREFIX, providerToml, q, startStack } from '../support/stack.mjs';
import { headerValues, startUpstream } from '../support/upstream.mjs';

const { alice, helene } = ACCOUNTS;
const TEST_TIMEOUT = { timeout: 240_000 };

function portOf(s) {
  return Number(new URL(s.base).port);
}

function hostOf(s) {
  return new URL(s.base).host;
}

function assertNoServerError(res, what) {
  assert.ok(res.status < 500, `${what}: server error ${res.status}:\n${res.body.slice(0, 500)}`);
}

/** Passerelle still answers: admin /health, and a normal request through the proxy. */
async function assertStillServing(s, tag) {
  assert.equal(s.passerelle.exited(), null, `${tag}: Passerelle exited:\n${s.passerelle.logs().slice(-2000)}`);
  assert.equal(await httpGetStatus(`${s.passerelle.adminUrl}/health`, 10_000), 200, `${tag}: admin /health`);
  const url = `${s.base}/public/alive-${tag}`;
  const res = await createPerson().get(url, { follow: false });
  assert.equal(res.status, 200, `${tag}: a normal request after it: ${res.status} ${res.body.slice(0, 300)}`);
  assert.equal(s.upstream.last().url, `/public/alive-${tag}`, `${tag}: the normal request reached the upstream`);
}

/** Upstream requests that must never exist: a protected path without a session, or a smuggled/embedded request. */
function forbiddenAtUpstream(s) {
  return s.upstream.requests.filter((r) => r.url.startsWith('/protected') || /smuggled|embedded/.test(r.url) || !r.url.startsWith('/'));
}

let sentinelSeq = 0;

/**
 * Send `bytes` on a fresh connection and read what comes back: the first response (null: closed without one);
 * then, if the connection is still open, a normal request (the sentinel) is sent on it and every response up to
 * the sentinel's is collected in `extra`: a response there answers bytes the client sent as part of the first
 * request (a desync). No timing is involved: HTTP/1.1 answers in order, and a closed connection ends the reading.
 */
async function attack(s, bytes) {
  const conn = await openRaw(portOf(s));
  try {
    conn.write(bytes);
    const first = await conn.response({ timeoutMs: 30_000 });
    const extra = [];
    let sentinel;
    if (first && !conn.isClosed()) {
      const id = `sentinel-${++sentinelSeq}`;
      conn.write(http1('GET', `/public/${id}`, [['Host', hostOf(s)]]));
      for (;;) {
        const r = await conn.response({ timeoutMs: 30_000 });
        if (!r) break;
        if (r.status === 200 && r.text.includes(`"/public/${id}"`)) {
          sentinel = r;
          break;
        }
        extra.push(r);
      }
    }
    return { first, extra, sentinel, closed: conn.isClosed() };
  } finally {
    conn.destroy();
  }
}

function describe(out) {
  const one = (r) => (r ? `${r.status} ${JSON.stringify(r.text.slice(0, 120))}` : 'connection closed');
  return `first: ${one(out.first)}; extra: [${out.extra.map(one).join(', ')}]; sentinel: ${out.sentinel ? 'answered' : 'not sent or closed'}`;
}

/** The safety property of every framing case. */
function assertSafe(s, out, what, { allow = [] } = {}) {
  if (out.first) {
    assert.ok(out.first.status < 500, `${what}: server error: ${describe(out)}`);
    assert.ok(out.first.status === 400 || allow.includes(out.first.status),
      `${what}: expected 400${allow.length ? ` or ${allow.join('/')}` : ''} or a closed connection, got ${describe(out)}`);
  }
  assert.deepEqual(out.extra, [], `${what}: bytes sent inside the first request were answered as a request of their own: ${describe(out)}`);
  const bad = forbiddenAtUpstream(s);
  assert.deepEqual(bad.map((r) => `${r.method} ${r.url}`), [], `${what}: reached the upstream as a request`);
  for (const r of s.upstream.requests) {
    assert.ok(!(r.headers['content-length'] !== undefined && r.headers['transfer-encoding'] !== undefined),
      `${what}: the upstream got both Content-Length and Transfer-Encoding for ${r.method} ${r.url}`);
  }
}

// (A1–A5) ------------------------------------------------------------------------------------------------------
test('abuse (A) request smuggling and framing on raw sockets: nothing smuggled reaches the upstream, Passerelle keeps serving', TEST_TIMEOUT, async (t) => {
  const s = await startStack(t);
  const H = hostOf(s);
  // Requests hidden in bodies: a protected path (must never be reached without a session) and a public one (would be
  // recorded by the upstream if Passerelle ever parsed it as a request).
  const smuggled = (id) => `GET /protected/smuggled-${id} HTTP/1.1\r\nHost: ${H}\r\n\r\nGET /public/smuggled-${id} HTTP/1.1\r\nHost: ${H}\r\n\r\n`;
  const post = (id, headers, body) => http1('POST', `/public/a-${id}`, [['Host', H], ...headers], body);

  const cases = [
    // A1: Content-Length and Transfer-Encoding both present. pingora lets TE win, drops CL before any of Passerelle's
    // code sees the request, and closes after the answer (RFC 9112 §6.1). TE.CL: the smuggled request is chunk data →
    // 200 from the upstream, with it as the body, then close. CL.TE: an empty chunked body, the smuggled bytes after it
    // are never read → 200, close.
    ['A1 CL: 4 + TE: chunked, smuggled request inside the chunk (TE.CL)', (id) => {
      const sm = smuggled(id);
      return post(id, [['Content-Length', '4'], ['Transfer-Encoding', 'chunked']], `${sm.length.toString(16)}\r\n${sm}\r\n0\r\n\r\n`);
    }, [200]],
    ['A1 CL covering everything + TE: chunked, smuggled request after the last chunk (CL.TE)', (id) => {
      const body = `0\r\n\r\n${smuggled(id)}`;
      return post(id, [['Content-Length', String(body.length)], ['Transfer-Encoding', 'chunked']], body);
    }, [200]],
    ['A1 TE: chunked then CL: 4 (order reversed), smuggled in the chunk', (id) => {
      const sm = smuggled(id);
      return post(id, [['Transfer-Encoding', 'chunked'], ['Content-Length', '4']], `${sm.length.toString(16)}\r\n${sm}\r\n0\r\n\r\n`);
    }, [200]],
    // A2: Content-Length ambiguity: each is a 400 from pingora (empty body, Connection: close).
    ['A2 two Content-Length with different values (5, 6)', (id) => post(id, [['Content-Length', '5'], ['Content-Length', '6']], `hello${smuggled(id)}`)],
    ['A2 Content-Length: +5', (id) => post(id, [['Content-Length', '+5']], `hello${smuggled(id)}`)],
    ['A2 Content-Length: 5, 6', (id) => post(id, [['Content-Length', '5, 6']], `hello${smuggled(id)}`)],
    ['A2 Content-Length:  0x5', (id) => post(id, [['Content-Length', ' 0x5']], `hello${smuggled(id)}`)],
    ['A2 Content-Length: -1', (id) => post(id, [['Content-Length', '-1']], `hello${smuggled(id)}`)],
    ['A2 Content-Length: 5 5', (id) => post(id, [['Content-Length', '5 5']], `hello${smuggled(id)}`)],
    // A3: bad chunking. The header is valid, so the request is routed and proxying starts; reading the body fails:
    // 400 "Requête invalide" page from Passerelle (fail_to_proxy, Downstream InvalidChunk), then close.
    ['A3 invalid hex chunk size (zz)', (id) => post(id, [['Transfer-Encoding', 'chunked']], `zz\r\nhello\r\n0\r\n\r\n${smuggled(id)}`)],
    ['A3 chunk size overflow (ffffffffffffffffff)', (id) => post(id, [['Transfer-Encoding', 'chunked']], `ffffffffffffffffff\r\nhello\r\n0\r\n\r\n${smuggled(id)}`)],
    ['A3 chunk data not followed by CRLF', (id) => post(id, [['Transfer-Encoding', 'chunked']], `5\r\nhello0\r\n\r\n${smuggled(id)}`)],
    ['A3 chunk size line with a bare LF', (id) => post(id, [['Transfer-Encoding', 'chunked']], `5\nhello\n0\n\n${smuggled(id)}`)],
    ['A3 negative chunk size (-5)', (id) => post(id, [['Transfer-Encoding', 'chunked']], `-5\r\nhello\r\n0\r\n\r\n${smuggled(id)}`)],
    // TE values where chunked is not final, or not chunked at all: 400 from pingora, close.
    ['A3 Transfer-Encoding: chunked, identity', (id) => post(id, [['Transfer-Encoding', 'chunked, identity']], `5\r\nhello\r\n0\r\n\r\n${smuggled(id)}`)],
    ['A3 Transfer-Encoding: xchunked', (id) => post(id, [['Transfer-Encoding', 'xchunked']], `5\r\nhello\r\n0\r\n\r\n${smuggled(id)}`)],
    ['A3 Transfer-Encoding: chunked then a second line Transfer-Encoding: identity (TE not final)', (id) => post(id, [['Transfer-Encoding', 'chunked'], ['Transfer-Encoding', 'identity']], `5\r\nhello\r\n0\r\n\r\n${smuggled(id)}`)],
    ['A3 Transfer-Encoding: identity with a body', (id) => post(id, [['Transfer-Encoding', 'identity']], `hello${smuggled(id)}`)],
    ['A3 "Transfer-Encoding : chunked" (space before the colon)', (id) => Buffer.from(`POST /public/a-${id} HTTP/1.1\r\nHost: ${H}\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n${smuggled(id)}`, 'latin1')],
    ['A3 Transfer-Encoding: chunked on HTTP/1.0', (id) => http1('POST', `/public/a-${id}`, [['Host', H], ['Transfer-Encoding', 'chunked']], `0\r\n\r\n${smuggled(id)}`, 'HTTP/1.0')],
    // A5: authority tricks. 400 from pingora (Host differs from the absolute-form authority; multiple Host lines;
    // userinfo), then close.
    ['A5 absolute-form URI for another host, Host: Passerelle', () => http1('GET', 'http://evil.example/public/abs', [['Host', H]])],
    ['A5 absolute-form URI for another host to a protected path, Host: Passerelle', () => http1('GET', 'http://evil.example/protected/abs', [['Host', H]])],
    ['A5 Host duplicated with different values', () => http1('GET', '/protected/dup-host', [['Host', H], ['Host', 'evil.example']])],
    ['A5 Host duplicated with the same value', () => http1('GET', '/protected/dup-host', [['Host', H], ['Host', H]])],
    ['A5 Host with userinfo (evil@host)', () => http1('GET', '/protected/userinfo-host', [['Host', `evil@${H}`]])],
  ];
  let n = 0;
  for (const [what, build, allow = []] of cases) {
    await t.test(what, async () => {
      const id = `${++n}`;
      const out = await attack(s, build(id));
      assertSafe(s, out, what, { allow });
      if (/^A[123] /.test(what)) {
        // After a framing error, or a request with both TE and CL (RFC 9112 §6.1), the connection must be closed:
        // what follows on it cannot be delimited. The sentinel is never read as a request.
        assert.equal(out.sentinel, undefined, `${what}: the connection should be closed after its answer: ${describe(out)}`);
      }
      await assertStillServing(s, `a${id}`);
    });
  }

  await t.test('A1 TE.CL: what the upstream got is one request whose body holds the smuggled text', () => {
    const r = s.upstream.requests.find((x) => x.url === '/public/a-1');
    assert.ok(r, `the TE.CL request was proxied: ${s.upstream.requests.map((x) => x.url).join(', ')}`);
    assert.match(r.body, /^GET \/protected\/smuggled-1 HTTP\/1\.1\r\n/, 'the smuggled request arrived as body, not as a request');
    assert.deepEqual(headerValues(r.rawHeaders, 'Content-Length'), [], 'the ambiguous Content-Length was dropped');
  });

  // A5 continued: an HTTP/1.1 request without a Host header is answered 400 by Passerelle (RFC 9112 §3.2), absolute
  // form or not, before routing: nothing reaches the upstream. The connection stays open and the sentinel is
  // answered. Absolute-form naming Passerelle itself, with its Host, is served and forwarded in origin-form.
  for (const [what, target, expected] of [
    ['A5 absolute-form URI for another host, no Host header, public path', 'http://evil.example/public/abs-nohost', [400]],
    ['A5 absolute-form URI for another host, no Host header, protected path', 'http://evil.example/protected/abs-nohost', [400]],
    ['A5 origin-form, no Host header, public path', '/public/nohost', [400]],
    ['A5 absolute-form URI for Passerelle itself (Host matching)', `http://${H}/public/abs-self`, [200]],
  ]) {
    await t.test(what, async () => {
      const out = await attack(s, http1('GET', target, target.includes(H) ? [['Host', H]] : []));
      assertSafe(s, out, what, { allow: expected });
      assert.ok(out.first, `${what}: answered: ${describe(out)}`);
      assert.ok(expected.includes(out.first.status), `${what}: expected ${expected.join(' or ')}: ${describe(out)}`);
      if (expected[0] === 400) {
        assert.equal(s.upstream.requests.filter((r) => r.url.includes('nohost')).length, 0, `${what}: nothing reached the upstream`);
      }
      if (target.includes('/public/abs-self')) {
        assert.equal(s.upstream.requests.filter((r) => r.url === '/public/abs-self').length, 1, 'forwarded once, in origin-form');
      }
      await assertStillServing(s, `abs-${++n}`);
    });
  }

  // A4: early response. Without a session a protected route is answered by Passerelle itself (401 to a POST or an
  // API request, 302 to a navigation) without reading the body; pingora then answers with Connection: close (it
  // closes when a response goes out before the request body was read), so the body is never parsed as requests.
  const embedded = (id) => `GET /protected/secret-embedded-${id} HTTP/1.1\r\nHost: ${H}\r\n\r\nGET /public/embedded-${id} HTTP/1.1\r\nHost: ${H}\r\n\r\n`;
  for (const [what, build, expected] of [
    ['A4 POST with a Content-Length body holding whole requests, protected route, no session', (id) => {
      const body = embedded(id);
      return http1('POST', `/protected/early-${id}`, [['Host', H], ['Content-Type', 'text/plain'], ['Content-Length', String(body.length)]], body);
    }, 401],
    ['A4 POST with a chunked body holding whole requests, protected route, no session', (id) => {
      const body = embedded(id);
      return http1('POST', `/protected/early-${id}`, [['Host', H], ['Transfer-Encoding', 'chunked']], `${body.length.toString(16)}\r\n${body}\r\n0\r\n\r\n`);
    }, 401],
    ['A4 GET navigation with a Content-Length body holding whole requests, protected route, no session', (id) => {
      const body = embedded(id);
      return http1('GET', `/protected/early-${id}`, [['Host', H], ['Accept', 'text/html'], ['Sec-Fetch-Mode', 'navigate'], ['Content-Length', String(body.length)]], body);
    }, 302],
    ['A4 POST to a Passerelle endpoint (/userinfo) with a body holding whole requests', (id) => {
      const body = embedded(id);
      return http1('POST', `${PREFIX}/userinfo`, [['Host', H], ['Content-Length', String(body.length)]], body);
    }, 401],
  ]) {
    await t.test(what, async () => {
      const id = `${++n}`;
      const out = await attack(s, build(id));
      assertSafe(s, out, what, { allow: [expected] });
      assert.equal(out.first?.status, expected, `${what}: ${describe(out)}`);
      // If the connection stayed open, the pipelined legitimate request (the sentinel) must be answered correctly.
      if (!out.closed) assert.ok(out.sentinel, `${what}: the connection stayed open but the next request was not answered: ${describe(out)}`);
      await assertStillServing(s, `early-${id}`);
    });
  }

  await t.test('A4 the body and a legitimate request pipelined in the same write: the embedded requests are never answered', async () => {
    const id = `${++n}`;
    const body = embedded(id);
    const conn = await openRaw(portOf(s));
    try {
      conn.write(Buffer.concat([
        http1('POST', `/protected/early-${id}`, [['Host', H], ['Content-Length', String(body.length)]], body),
        http1('GET', `/public/legit-${id}`, [['Host', H]]),
      ]));
      const responses = [];
      for (let r = await conn.response(); r; r = await conn.response()) responses.push(r);
      // Observed: the 401, then Connection: close (pingora closes rather than read a pipelined request after an
      // early answer). Allowed too: the 401 then the legitimate request's 200.
      assert.ok(responses.length >= 1, 'the POST is answered');
      assert.equal(responses[0].status, 401, `the POST: ${responses[0].status} ${responses[0].text.slice(0, 200)}`);
      const rest = responses.slice(1);
      assert.ok(rest.length === 0 || (rest.length === 1 && rest[0].status === 200 && rest[0].text.includes(`"/public/legit-${id}"`)),
        `after the 401 only the legitimate request may be answered, got: ${rest.map((r) => `${r.status} ${r.text.slice(0, 120)}`).join(' | ')}`);
    } finally {
      conn.destroy();
    }
    assert.deepEqual(forbiddenAtUpstream(s).map((r) => r.url), []);
    await assertStillServing(s, `early-${id}`);
  });

  // A6: header-line tricks meant to slip an identity header past the stripping (parser differentials), on a public
  // route and on the protected route with a valid session (where the upstream trusts X-Auth-*). Observed: obs-fold,
  // tab fold, space before the colon, bare CR and NUL are 400 from pingora (close); x_AUTH_sub is forwarded without
  // that header (200, only the real identity on the protected route).
  const login = await s.person.login(`${s.base}/app/login-for-a6`, 'alice');
  assert.equal(login.status, 200, `login: ${login.status} at ${login.url}`);
  const session = sessionCookies(s.person, s.base).map((c) => `${c.name}=${c.value}`).join('; ');
  for (const [what, lines] of [
    ['obs-fold continuation line carrying X-Auth-Sub', ['X-Note: a', ' X-Auth-Sub: evil-fold']],
    ['tab-folded X-Auth-Email', ['X-Note: a', '\tX-Auth-Email: evil-tab@example.org']],
    ['space before the colon (X-Auth-Sub : …)', ['X-Auth-Sub : evil-space']],
    ['bare CR inside a header line', ['X-Note: a\rX-Auth-Sub: evil-cr']],
    ['NUL in the header name', ['X-Auth-Sub\0: evil-nul']],
    ['underscore and odd case (x_AUTH_sub)', ['x_AUTH_sub: evil-underscore']],
  ]) {
    for (const [where, path, cookie] of [['public route', '/public/a6', undefined], ['protected route with a session', '/app/a6', session]]) {
      await t.test(`A6 ${what}, ${where}`, async () => {
        const before = s.upstream.requests.length;
        const headers = [['Host', H], ...(cookie ? [['Cookie', cookie]] : []), ...lines];
        const out = await attack(s, http1('GET', `${path}-${++n}`, headers));
        assertSafe(s, out, what, { allow: [200] });
        for (const r of s.upstream.requests.slice(before)) {
          for (const [name, value] of identityLines(r.rawHeaders)) {
            assert.ok(!/evil/.test(value), `${what}: ${name}: ${value} reached the upstream`);
          }
          if (cookie && r.url.startsWith('/app/')) assert.deepEqual(headerValues(r.rawHeaders, 'X-Auth-Sub'), [alice.sub], `${what}: the real identity only`);
        }
      });
    }
  }

  await t.test('after all of it: nothing smuggled ever reached the upstream, Passerelle is up', async () => {
    assert.deepEqual(forbiddenAtUpstream(s).map((r) => `${r.method} ${r.url}`), []);
    await assertStillServing(s, 'a-end');
  });
});

// (B1–B3) ------------------------------------------------------------------------------------------------------
test('abuse (B1) huge header blocks: 4xx or a closed connection, never a 5xx, and Passerelle keeps serving', TEST_TIMEOUT, async (t) => {
  const s = await startStack(t);
  const H = hostOf(s);
  const cases = [
    // A 64 KiB value is within pingora's 1 MiB header limit: on a public route it is forwarded and the upstream (Node,
    // 16 KiB limit) refuses it with 431 and resets; on a protected route without a session Passerelle answers 401
    // itself (connection kept). Observed on the public route: the client gets the upstream's "431" status line and,
    // as its chunked body, Passerelle's 502 "Service indisponible" page (fail_to_proxy writes its page after the
    // upstream's header was already sent) — reported as a defect.
    ['a 64 KiB header value, public route', () => http1('GET', '/public/big', [['Host', H], ['X-Big', 'a'.repeat(64 * 1024)]]), [431, 400]],
    ['a 64 KiB header value, protected route (API, no session)', () => http1('GET', '/protected/big', [['Host', H], ['Accept', 'application/json'], ['X-Big', 'a'.repeat(64 * 1024)]]), [431, 400, 401]],
    // 300 header lines: more than pingora's 256 → 400, close.
    ['300 header lines', () => http1('GET', '/public/many', [['Host', H], ...Array.from({ length: 300 }, (_, i) => [`X-H${i}`, 'v'])]), [431, 400]],
    // A 2 MiB header block: more than pingora's 1 MiB → 400, close.
    ['a 2 MiB header block (200 lines of 10 KiB)', () => http1('GET', '/public/huge', [['Host', H], ...Array.from({ length: 200 }, (_, i) => [`X-H${i}`, 'b'.repeat(10_500)])]), [431, 400]],
    ['a 2 MiB single header value', () => http1('GET', '/public/huge', [['Host', H], ['X-H', 'b'.repeat(2 * 1024 * 1024)]]), [431, 400]],
    ['a 2 MiB request line', () => http1('GET', `/public/${'c'.repeat(2 * 1024 * 1024)}`, [['Host', H]]), [414, 431, 400]],
  ];
  for (const [i, [what, build, allowed]] of cases.entries()) {
    await t.test(what, async () => {
      const out = await attack(s, build());
      if (out.first) {
        assert.ok(allowed.includes(out.first.status), `${what}: expected ${allowed.join('/')} or a close, got ${describe(out)}`);
        // The answer is what it says: a 4xx never carries one of Passerelle's server-error pages.
        assert.doesNotMatch(out.first.text, /indisponible/i,
          `${what}: a ${out.first.status} answer whose body is a server-error page ("Service indisponible"):\n${out.first.text.slice(0, 600)}\n--- logs:\n${s.passerelle.logs().slice(-1500)}`);
      }
      assert.deepEqual(out.extra, [], `${what}: ${describe(out)}`);
      assert.deepEqual(forbiddenAtUpstream(s).map((r) => r.url), []);
      await assertStillServing(s, `b1-${i}`);
    });
  }
});

test('abuse (B2) a huge Cookie header (100 cookies of 4 KiB named passerelle.N): a 431 page, no session, never a 5xx', TEST_TIMEOUT, async (t) => {
  const s = await startStack(t);
  const flood = Array.from({ length: 100 }, (_, i) => `${i === 0 ? 'passerelle' : `passerelle.${i}`}=${randomBytes(3072).toString('base64url')}`).join('; ');
  assert.ok(flood.length > 400_000, `the Cookie header is ${flood.length} bytes`);
  const cookie = [['Cookie', flood]];
  const before = s.upstream.requests.length;
  // Over server.max_header_bytes (64 KiB by default): refused before routing, on any route, with a French page that
  // tells the person to clear the site's cookies (the usual cause).
  for (const where of ['/app/flood', '/public/flood']) {
    const nav = await s.person.get(`${s.base}${where}`, { follow: false, headers: cookie });
    assert.equal(nav.status, 431, `navigation to ${where} with 100 cookies of 4 KiB: ${nav.status}`);
    assert.match(nav.body, /cookies/i, 'the page names the likely cause');
    await assertFrenchErrorPage(nav, s.passerelle.logs);
    const api = await s.person.api(`${s.base}${where}`, { headers: cookie });
    assert.equal(api.status, 431, `API request to ${where} with the flood: ${api.status}`);
  }
  assert.equal(s.upstream.requests.length, before, 'nothing reached the upstream');
  // Operators see them: /metrics counts requests refused before routing, by reason.
  for (const bad of ['/public/a%00b', '/public/a%2fb']) {
    assert.equal((await s.person.get(`${s.base}${bad}`, { follow: false })).status, 400, bad);
  }
  const metrics = await (await fetch(`${s.passerelle.adminUrl}/metrics`)).text();
  assert.match(metrics, /^passerelle_requests_refused_total\{reason="headers_too_large"\} 4$/m, `four 431s counted:\n${metrics}`);
  assert.match(metrics, /^passerelle_requests_refused_total\{reason="path"\} 2$/m, `two refused paths counted:\n${metrics}`);

  // A real session drowned in 99 planted chunks (passerelle.1 … passerelle.99), small enough to pass the size limit:
  // more chunks than allowed, refused; the same chunks on a public route are not forwarded.
  const login = await s.person.login(`${s.base}/app`, 'alice');
  assert.equal(login.status, 200);
  const real = s.person.jar.get(s.base, 'passerelle').value;
  const drowned = [`passerelle=${real}`, ...Array.from({ length: 99 }, (_, i) => `passerelle.${i + 1}=${randomBytes(300).toString('base64url')}`)].join('; ');
  assert.ok(drowned.length < 64 * 1024, `the drowned Cookie header is ${drowned.length} bytes`);
  const n2 = s.upstream.requests.length;
  assertLoginRedirect(await s.person.get(`${s.base}/app/drowned`, { follow: false, headers: [['Cookie', drowned]] }), s, 'a real session with 99 planted chunks');
  assertUnauthorized(await s.person.api(`${s.base}/app/drowned`, { headers: [['Cookie', drowned]] }), 'API request with 99 planted chunks');
  assert.equal(s.upstream.requests.length, n2, 'the protected route was not reached');
  const pub = await s.person.get(`${s.base}/public/drowned`, { follow: false, headers: [['Cookie', drowned]] });
  assertNoServerError(pub, 'public route with the planted chunks');
  assert.equal(pub.status, 200, `public route with the planted chunks: ${pub.status}`);
  const up = s.upstream.last();
  assert.equal(up.url, '/public/drowned');
  assert.ok(!headerValues(up.rawHeaders, 'Cookie').some((v) => /passerelle/.test(v)), 'Passerelle\'s cookies are not forwarded');
  assert.equal(await httpGetStatus(`${s.passerelle.adminUrl}/health`, 10_000), 200);
});

test('abuse (B4) an upstream that dies mid-response: the client sees a truncated answer, never Passerelle\'s page appended to the app\'s bytes', TEST_TIMEOUT, async (t) => {
  // The app answers its status and headers, a first part of the body, then its connection breaks. The status is
  // already on its way to the client: a page of Passerelle's after it would be framed as the rest of the app's body
  // (a chunked answer would even look complete). The only honest answer left is to close the connection.
  const die = (req, res, record) => {
    if (!record.url.startsWith('/public/die-')) {
      res.writeHead(200, { 'content-type': 'text/plain', 'content-length': '2' });
      res.end('ok');
      return;
    }
    const chunked = record.url.includes('chunked');
    res.writeHead(200, chunked
      ? { 'content-type': 'application/json' }
      : { 'content-type': 'application/json', 'content-length': '100000' });
    res.write('{"partial": "');
    setImmediate(() => res.socket.destroy()); // after the first bytes are handed to the socket
  };
  const s = await startStack(t, { upstream: { answer: die } });
  const H = hostOf(s);
  for (const kind of ['content-length', 'chunked']) {
    await t.test(kind, async () => {
      const c = await openRaw(portOf(s));
      t.after(() => c.destroy());
      c.write(http1('GET', `/public/die-${kind}`, [['Host', H]]));
      const res = await c.response();
      assert.equal(res, null, `${kind}: the answer must not be complete: ${JSON.stringify(res && { status: res.status, body: res.text?.slice(0, 200) })}`);
      assert.ok(c.isClosed(), `${kind}: the connection is closed`);
      assert.match(c.partial, /^HTTP\/1\.1 200/, `${kind}: the app's status went out first`);
      assert.ok(!/<!DOCTYPE html>|Service indisponible/i.test(c.partial), `${kind}: Passerelle's page was appended to the app's body:\n${c.partial.slice(0, 600)}`);
      assert.ok(!/\r\n0\r\n\r\n$/.test(c.partial), `${kind}: a chunked answer must not be terminated as if complete`);
      await assertStillServing(s, `b4-${kind}`);
    });
  }
});

test('abuse (B3) 100 slow clients trickling their headers byte by byte: normal clients are served meanwhile', TEST_TIMEOUT, async (t) => {
  const s = await startStack(t);
  const H = hostOf(s);
  const SLOW = 100;
  const slow = [];
  const timers = new Set();
  t.after(() => {
    for (const timer of timers) clearInterval(timer);
    for (const c of slow) c.conn.destroy();
  });

  // Each slow client sends its request line and headers one byte at a time, every 60–120 ms (timers pace the
  // clients; nothing below waits on time), and keeps going with an endless header value until told to finish. The
  // normal clients start once every slow one is inside its header block (request line and Host sent).
  let resolveWarm;
  const warm = new Promise((r) => { resolveWarm = r; });
  let warmCount = 0;
  for (let i = 0; i < SLOW; i++) {
    const conn = await openRaw(portOf(s));
    const prefix = Buffer.from(`GET /public/slow-${i} HTTP/1.1\r\nHost: ${H}\r\nX-Slow: `, 'latin1');
    const c = { conn, prefix, sent: 0, warm: false };
    const timer = setInterval(() => {
      const byte = c.sent < prefix.length ? prefix.subarray(c.sent, c.sent + 1) : Buffer.from('a');
      if (!conn.write(byte)) return;
      c.sent++;
      if (!c.warm && c.sent > prefix.length) {
        c.warm = true;
        if (++warmCount === SLOW) resolveWarm();
      }
    }, 60 + (i % 5) * 15);
    timers.add(timer);
    c.timer = timer;
    slow.push(c);
  }
  await warm; // every slow client is trickling its X-Slow value

  // Normal clients, meanwhile: public requests, a whole login, authenticated requests, the admin endpoint.
  const results = await Promise.all(Array.from({ length: 5 }, (_, i) => createPerson().get(`${s.base}/public/normal-${i}`, { follow: false })));
  for (const [i, r] of results.entries()) assert.equal(r.status, 200, `normal public request ${i}: ${r.status}`);
  const login = await s.person.login(`${s.base}/app/during-slow`, 'alice');
  assert.equal(login.status, 200, `a login while 100 slow clients are connected: ${login.status} at ${login.url}`);
  for (let i = 0; i < 3; i++) {
    const r = await s.person.get(`${s.base}/app/during-slow-${i}`, { follow: false });
    assert.equal(r.status, 200);
    assert.deepEqual(headerValues(s.upstream.last().rawHeaders, 'X-Auth-Sub'), [alice.sub]);
  }
  assert.equal(await httpGetStatus(`${s.passerelle.adminUrl}/health`, 10_000), 200);

  const stillOpen = slow.filter((c) => !c.conn.isClosed() && c.conn.received.length === 0);
  assert.equal(stillOpen.length, SLOW, 'the slow clients were all still connected and unanswered while the normal ones were served');

  // Now the slow clients finish their requests: each is answered (Passerelle was still reading them).
  for (const c of slow) {
    clearInterval(c.timer);
    timers.delete(c.timer);
  }
  for (const c of slow) c.conn.write('\r\n\r\n');
  const answers = await Promise.all(slow.map((c) => c.conn.response({ timeoutMs: 60_000 })));
  for (const [i, r] of answers.entries()) {
    assert.ok(r, `slow client ${i} got an answer`);
    assert.equal(r.status, 200, `slow client ${i}: ${r.status} ${r.text.slice(0, 200)}`);
    assert.ok(r.text.includes(`"/public/slow-${i}"`), `slow client ${i} got its own answer`);
  }
  for (const c of slow) c.conn.destroy();
});

// (C1–C6) ------------------------------------------------------------------------------------------------------
/** `passerelle=…; passerelle.1=…` from [name, value] pairs. */
function cookieHeader(pairs) {
  return pairs.map(([n, v]) => `${n}=${v}`).join('; ');
}

/** A navigation gets a 302 to login, an API request a 401; nothing reaches the upstream. */
async function assertRefused(s, pairs, what, person = s.newPerson()) {
  const before = s.upstream.requests.length;
  const headers = [['Cookie', cookieHeader(pairs)]];
  const nav = await person.get(`${s.base}/app/forged`, { follow: false, headers });
  assertLoginRedirect(nav, s, `navigation with ${what}`);
  const api = await person.api(`${s.base}/app/forged`, { headers });
  assertNoServerError(api, `API request with ${what}`);
  assertUnauthorized(api, `API request with ${what}`);
  assert.equal(s.upstream.requests.length, before, `${what}: nothing reached the upstream`);
}

/** The session is accepted: 200 and the upstream sees `sub`. */
async function assertAccepted(s, pairs, what, sub = alice.sub) {
  const res = await s.newPerson().get(`${s.base}/app/genuine`, { follow: false, headers: [['Cookie', cookieHeader(pairs)]] });
  assert.equal(res.status, 200, `${what}: ${res.status} ${res.location || ''}`);
  assert.deepEqual(headerValues(s.upstream.last().rawHeaders, 'X-Auth-Sub'), [sub], `${what}: identity at the upstream`);
}

test('abuse (C1) forged session cookies beyond core (d): oversized, too many chunks, shuffled, duplicated, wrong purpose → login, never 5xx', TEST_TIMEOUT, async (t) => {
  const s = await startStack(t);
  // Start a login first to have a flow cookie's value (same key, another purpose), then log in.
  const started = await s.person.get(`${s.base}/app/x`, { follow: false });
  const flow = started.setCookies.find((c) => c.name.startsWith('passerelle_flow_') && c.value);
  assert.ok(flow, 'a flow cookie');
  const login = await s.person.login(`${s.base}/app`, 'alice');
  assert.equal(login.status, 200);
  const chunks = sessionCookies(s.person, s.base);
  assert.deepEqual(chunks.map((c) => c.name), ['passerelle'], 'a small session is one cookie');
  const v = chunks[0].value;
  const half = Math.floor(v.length / 2);

  // Positive control: the real value split in two chunks, in order, is a valid session (so the refusals below are
  // about order, count and duplication, not about splitting).
  await assertAccepted(s, [['passerelle', v.slice(0, half)], ['passerelle.1', v.slice(half)]], 'the real value as two chunks in order');

  const pieces = Array.from({ length: 21 }, (_, i) => v.slice(Math.floor((i * v.length) / 21), Math.floor(((i + 1) * v.length) / 21)));
  const variants = {
    'a 16 KiB value': [['passerelle', randomBytes(12 * 1024).toString('base64url')]],
    'a 32 KiB value (beyond what Passerelle decodes)': [['passerelle', randomBytes(24 * 1024).toString('base64url')]],
    'the real value in 21 chunks passerelle … passerelle.20 (their concatenation is valid)': pieces.map((p, i) => [i ? `passerelle.${i}` : 'passerelle', p]),
    'the real value in two chunks, swapped': [['passerelle', v.slice(half)], ['passerelle.1', v.slice(0, half)]],
    'the real value in two chunks, the second named passerelle.01': [['passerelle', v.slice(0, half)], ['passerelle.01', v.slice(half)]],
    'the real cookie twice (a planted duplicate)': [['passerelle', v], ['passerelle', v]],
    'a planted garbage cookie of the same name before the real one': [['passerelle', 'planted'], ['passerelle', v]],
    'the real cookie followed by a planted chunk passerelle.1': [['passerelle', v], ['passerelle.1', 'AAAA']],
    'a login-flow cookie\'s value as the session (same key, other purpose)': [['passerelle', flow.value]],
    'the real value with a quote-wrapped garbage suffix': [['passerelle', `"${v}x"`]],
  };
  for (const [what, pairs] of Object.entries(variants)) {
    await t.test(what, () => assertRefused(s, pairs, what));
  }
  await t.test('the genuine cookie still works', () => assertAccepted(s, [['passerelle', v]], 'the genuine cookie'));
});

test('abuse (C2) a real multi-chunk session: chunks shuffled, one missing, one added → login, never 5xx', TEST_TIMEOUT, async (t) => {
  // A long `name` claim (released by scope profile, kept in the session) makes the session span several cookies.
  const big = { ...alice, name: `Alice ${'Martin-'.repeat(1400)}` };
  const s = await startStack(t, { provider: { accounts: { alice: big } } });
  const login = await s.person.login(`${s.base}/app`, 'alice');
  assert.equal(login.status, 200, `login: ${login.status} at ${login.url}\n${s.passerelle.logs().slice(-2000)}`);
  const chunks = sessionCookies(s.person, s.base).sort((a, b) => a.name.localeCompare(b.name, 'en', { numeric: true }));
  assert.ok(chunks.length >= 3, `a session of several chunks: ${chunks.map((c) => `${c.name} (${c.value.length})`).join(', ')}`);
  assert.ok(chunks.length <= 6, `at most 6 chunks: ${chunks.length}`);
  const pairs = chunks.map((c) => [c.name, c.value]);
  await assertAccepted(s, pairs, 'the real chunks');
  await assertAccepted(s, [...pairs].reverse(), 'the real chunks, Cookie header in reverse order (order of the header does not matter)');

  const values = pairs.map(([, val]) => val);
  const names = pairs.map(([name]) => name);
  const variants = {
    'chunks 1 and 2 swapped': names.map((name, i) => [name, values[i === 1 ? 2 : i === 2 ? 1 : i]]),
    'values rotated across the names': names.map((name, i) => [name, values[(i + 1) % values.length]]),
    'the middle chunk missing': pairs.filter((_, i) => i !== 1),
    'the first chunk missing': pairs.slice(1),
    'an extra chunk after the last one': [...pairs, [`passerelle.${pairs.length}`, values[1]]],
    'a chunk duplicated': [...pairs, [names[1], values[1]]],
  };
  for (const [what, p] of Object.entries(variants)) {
    await t.test(what, () => assertRefused(s, p, what));
  }
});

test('abuse (C3) a valid session cookie from another Passerelle (another PASSERELLE_KEY) is refused', TEST_TIMEOUT, async (t) => {
  const s = await startStack(t);
  await t.test('the other instance', async (st) => {
    const other = await startStack(st);
    assert.notEqual(other.passerelle.key, s.passerelle.key);
    const res = await other.person.login(`${other.base}/app`, 'alice');
    assert.equal(res.status, 200, 'login at the other instance');
    const foreign = sessionCookies(other.person, other.base).map((c) => [c.name, c.value]);
    assert.ok(foreign.length >= 1);
    await assertAccepted(other, foreign, 'at its own instance');
    await assertRefused(s, foreign, 'a cookie sealed with another key');
  });
});

test('abuse (C4) no session fixation: a person holding an attacker\'s valid session who logs in gets a new cookie and their own identity', TEST_TIMEOUT, async (t) => {
  const s = await startStack(t);
  const attacker = s.newPerson();
  const a = await attacker.login(`${s.base}/app/attacker`, 'helene');
  assert.equal(a.status, 200);
  const planted = sessionCookies(attacker, s.base).map((c) => [c.name, c.value]);
  assert.deepEqual(planted.map(([n]) => n), ['passerelle']);
  assert.deepEqual(headerValues(s.upstream.last().rawHeaders, 'X-Auth-Sub'), [helene.sub]);

  // The victim's browser holds the attacker's session, plus a planted junk chunk that would break any session
  // joined with it.
  const victim = s.newPerson();
  victim.jar.set(s.base, 'passerelle', planted[0][1], { path: '/' });
  victim.jar.set(s.base, 'passerelle.1', 'planted-junk-chunk', { path: '/' });

  const res = await victim.login(`${s.base}${PREFIX}/login?provider=op&rd=${encodeURIComponent('/app/mine')}`, 'alice');
  assert.equal(res.status, 200, `the victim's login: ${res.status} at ${res.url}`);
  assert.equal(res.url, `${s.base}/app/mine`);
  const cb = res.history.find((h) => h.url.startsWith(`${s.base}${PREFIX}/callback`));
  assert.ok(cb, 'through the callback');
  const issued = cb.setCookies.find((c) => c.name === 'passerelle' && c.value);
  assert.ok(issued, `the callback issues a session cookie: ${cb.setCookies.map((c) => c.raw).join(' | ')}`);
  assert.notEqual(issued.value, planted[0][1], 'a new cookie value, not the planted one');
  const junk = cb.setCookies.find((c) => c.name === 'passerelle.1');
  assert.ok(junk && (junk.attributes['max-age'] === '0' || Date.parse(junk.attributes.expires) <= Date.now()),
    `the planted chunk passerelle.1 is deleted by the callback: ${cb.setCookies.map((c) => c.raw).join(' | ')}`);
  assert.deepEqual(headerValues(s.upstream.last().rawHeaders, 'X-Auth-Sub'), [alice.sub], 'the upstream sees the victim, not the attacker');
  const again = await victim.get(`${s.base}/app/next`, { follow: false });
  assert.equal(again.status, 200);
  assert.deepEqual(headerValues(s.upstream.last().rawHeaders, 'X-Auth-Sub'), [alice.sub]);
  assert.deepEqual(headerValues(s.upstream.last().rawHeaders, 'X-Auth-Email'), [alice.email]);
  // And the attacker's own session is untouched (stateless: each cookie is its own session).
  const still = await attacker.get(`${s.base}/app/attacker-again`, { follow: false });
  assert.equal(still.status, 200);
  assert.deepEqual(headerValues(s.upstream.last().rawHeaders, 'X-Auth-Sub'), [helene.sub]);
});

test('abuse (C5) login flows: a replay with the flow cookie kept, a login-CSRF callback, malformed states → French error page, no session', TEST_TIMEOUT, async (t) => {
  const s = await startStack(t);
  const tokenPath = new URL(s.op.discovery.token_endpoint).pathname;

  await t.test('replay of a used callback URL with a copy of its flow cookie: no second session, the code is not accepted twice', async () => {
    const person = s.newPerson();
    let flowCopy;
    const res = await person.login(`${s.base}/app/replay`, 'alice', {
      rewrite: (loc) => {
        if (new URL(loc).pathname === `${PREFIX}/callback`) {
          flowCopy = person.jar.all(s.base).filter((c) => c.name.startsWith('passerelle_flow_'));
        }
        return loc;
      },
    });
    assert.equal(res.status, 200);
    assert.equal(flowCopy?.length, 1, 'the flow cookie was copied just before the callback');
    const cb = res.history.find((h) => h.url.startsWith(`${s.base}${PREFIX}/callback`));
    const first = s.op.callsTo(tokenPath).length;

    const thief = s.newPerson(); // the callback URL and the flow cookie, stolen together
    thief.jar.set(s.base, flowCopy[0].name, flowCopy[0].value, { path: '/' });
    const replay = await thief.get(cb.url, { follow: false });
    assert.deepEqual(replay.setCookies.filter((c) => c.name === 'passerelle' && c.value), [], 'no session issued');
    assert.deepEqual(sessionCookies(thief, s.base), []);
    assertUnauthorized(await thief.api(`${s.base}/app/replay`), 'the thief is not logged in');
    const calls = s.op.callsTo(tokenPath);
    if (calls.length > first) assert.ok(calls.at(-1).status >= 400, `the provider refused the code a second time (${calls.at(-1).status})`);
    // The provider answered the second redemption with invalid_grant (RFC 6749 §5.2, HTTP 400): the request was bad,
    // the provider is fine. That is a 4xx "connexion impossible/expirée" page, not a 502 "provider unavailable".
    assertNoServerError(replay, `replayed callback with its flow cookie (the provider answered ${calls.at(-1)?.status} to the second code redemption)`);
    await assertFrenchErrorPage(replay, s.passerelle.logs, { exclude: [...new URL(cb.url).searchParams.values()] });
  });

  await t.test('login CSRF: the attacker\'s callback URL opened by a victim with a login of their own in progress', async () => {
    const attacker = s.newPerson();
    let stolen;
    await attacker.login(`${s.base}/app/csrf`, 'helene', {
      rewrite: (loc) => {
        if (new URL(loc).pathname !== `${PREFIX}/callback`) return loc;
        stolen = loc; // the attacker keeps the callback instead of following it
        return `${s.base}/public/attacker-stopped`;
      },
    });
    assert.ok(stolen, 'the attacker got a callback URL with a fresh code');

    const victim = s.newPerson();
    const page = await victim.navigate(`${s.base}/app/victim`); // on the provider's login form
    const ownFlow = victim.jar.all(s.base).filter((c) => c.name.startsWith('passerelle_flow_')).map((c) => c.name);
    assert.equal(ownFlow.length, 1, 'the victim has a login of their own in progress');
    const before = s.upstream.requests.length;
    const lured = await victim.get(stolen, { follow: false });
    assertNoServerError(lured, 'the attacker\'s callback');
    await assertFrenchErrorPage(lured, s.passerelle.logs, { exclude: [...new URL(stolen).searchParams.values()] });
    assert.deepEqual(lured.setCookies.filter((c) => c.name === 'passerelle' && c.value), [], 'no session from the attacker\'s code');
    assert.deepEqual(sessionCookies(victim, s.base), []);
    assert.deepEqual(victim.jar.all(s.base).filter((c) => c.name.startsWith('passerelle_flow_')).map((c) => c.name), ownFlow,
      'the victim\'s own flow cookie is left alone');
    assert.equal(s.upstream.requests.length, before);

    const own = await victim.throughProvider(page, { login: 'alice' });
    assert.equal(own.status, 200, `the victim's own login still completes: ${own.status} at ${own.url}`);
    assert.equal(own.url, `${s.base}/app/victim`);
    assert.deepEqual(headerValues(s.upstream.last().rawHeaders, 'X-Auth-Sub'), [alice.sub]);
    assert.ok(!s.upstream.requests.some((r) => headerValues(r.rawHeaders, 'X-Auth-Sub').includes(helene.sub)), 'nobody was ever logged in as the attacker');
  });

  const callback = `${s.base}${PREFIX}/callback`;
  for (const [what, query] of [
    ['no state', `code=abc&iss=${encodeURIComponent(s.op.issuer)}`],
    ['a 5-character state', 'code=abc&state=short'],
    ['a 600-character state', `code=abc&state=${'a'.repeat(600)}`],
    ['markup in the state', `code=abc&state=${encodeURIComponent('<script>alert(1)</script>')}`],
    ['a well-formed state of no login in progress', `code=abc&state=${randomBytes(32).toString('base64url')}&iss=${encodeURIComponent(s.op.issuer)}`],
    ['a repeated state parameter', `code=abc&state=${randomBytes(32).toString('base64url')}&state=${randomBytes(32).toString('base64url')}`],
    ['no parameters at all', ''],
  ]) {
    await t.test(`callback with ${what}: French error page, no session`, async () => {
      const person = s.newPerson();
      const url = `${callback}${query ? `?${query}` : ''}`;
      const res = await person.get(url, { follow: false });
      assertNoServerError(res, what);
      await assertFrenchErrorPage(res, s.passerelle.logs, { exclude: [...new URL(url).searchParams.values()] });
      assert.doesNotMatch(res.body, /<script>alert/, 'nothing from the query is reflected as markup');
      assert.deepEqual(res.setCookies.filter((c) => c.name === 'passerelle' && c.value), []);
    });
  }
});

// (C6) -----------------------------------------------------------------------------------------------------------
/** The headers every HTML page Passerelle renders carries. */
function assertHtmlPageHeaders(res, what) {
  assert.match(res.headers['content-type'] || '', /^text\/html/, `${what}: HTML`);
  const csp = res.headers['content-security-policy'] || '';
  assert.match(csp, /frame-ancestors 'none'/, `${what}: CSP frame-ancestors 'none': ${csp}`);
  assert.match(csp, /default-src 'none'/, `${what}: CSP default-src 'none': ${csp}`);
  assert.equal(res.headers['x-frame-options'], 'DENY', `${what}: X-Frame-Options`);
  assert.equal(res.headers['x-content-type-options'], 'nosniff', `${what}: X-Content-Type-Options`);
}

function assertNoStore(res, what) {
  assert.match(res.headers['cache-control'] || '', /\bno-store\b/, `${what}: Cache-Control: no-store, got ${res.headers['cache-control']}`);
}

function assertDeleted(res, name, what) {
  const c = res.setCookies.find((x) => x.name === name);
  assert.ok(c, `${what}: deletes ${name}; Set-Cookie: ${res.setCookies.map((x) => x.raw).join(' | ')}`);
  const past = c.attributes.expires && Date.parse(c.attributes.expires) <= Date.now();
  assert.ok(c.attributes['max-age'] === '0' || past, `${what}: ${name} deleted with Max-Age=0 or a past Expires: ${c.raw}`);
}

function assertClearSiteData(res, what) {
  const v = res.headers['clear-site-data'];
  assert.ok(v, `${what}: Clear-Site-Data expected (status ${res.status} at ${res.url}); headers: ${JSON.stringify(res.headers)}`);
  assert.ok(v.split(',').map((x) => x.trim()).includes('"cookies"'), `${what}: Clear-Site-Data contains "cookies": ${v}`);
}

test('abuse (C6) response headers: no-store on login, callback, userinfo and auth; CSP, X-Frame-Options and nosniff on every page; logout clears the site', TEST_TIMEOUT, async (t) => {
  // Two providers on the protected route, so that the sign-in chooser exists.
  const { port, adminPort, base, redirectUris, postLogoutRedirectUris } = await addresses();
  const op = await stopAfter(t, startProvider({ redirectUris, postLogoutRedirectUris }));
  const op2 = await stopAfter(t, startProvider({ redirectUris, postLogoutRedirectUris }));
  const upstream = await stopAfter(t, startUpstream());
  const toml = configToml({
    writtenBy: 'tests/integration/abuse.test.mjs',
    port,
    adminPort,
    // Forward-auth is answered to a trusted front proxy only (here, the test itself on loopback).
    extraServer: 'trusted_proxies = ["127.0.0.1/32"]\n',
    providers: [
      providerToml('op', 'oidc', op, { auth_method: 'client_secret_basic', display_name: 'Fournisseur A' }),
      providerToml('op2', 'oidc', op2, { auth_method: 'client_secret_basic', display_name: 'Fournisseur B' }),
    ],
    routes: `[[route]]
path = "/"
upstream = ${q(upstream.url)}
auth = "required"
providers = ["op", "op2"]
scopes = ["email"]
[route.headers]
"X-Auth-Sub" = "sub"

[[route]]
path = "/public"
upstream = ${q(upstream.url)}
auth = "public"
`,
  });
  const p = await launchPasserelle(t, toml, { adminPort, logName: outputName(t) });
  const person = createPerson();
  const logs = () => p.logs();

  // The login redirect (to the sign-in chooser), the chooser, the redirect to the provider.
  const first = await person.get(`${base}/app/headers?x=1`, { follow: false });
  assert.equal(first.status, 302);
  assertNoStore(first, 'the login redirect');
  const chooser = await person.get(first.location, { follow: false });
  assert.equal(chooser.status, 200, `sign-in chooser: ${chooser.status}`);
  assertHtmlPageHeaders(chooser, 'the sign-in chooser');
  assertNoStore(chooser, 'the sign-in chooser');
  const toProvider = await person.get(`${base}${PREFIX}/login?provider=op&rd=${encodeURIComponent('/app/headers?x=1')}`, { follow: false });
  assert.equal(toProvider.status, 302);
  assert.ok(toProvider.location.startsWith(op.discovery.authorization_endpoint), `to the provider: ${toProvider.location}`);
  assertNoStore(toProvider, 'the redirect to the provider');

  // The callback.
  const done = await person.throughProvider(await person.get(toProvider.location), { login: 'alice' });
  assert.equal(done.status, 200, `login: ${done.status} at ${done.url}`);
  const cb = done.history.find((h) => h.url.startsWith(`${base}${PREFIX}/callback`));
  assert.equal(cb.status, 302);
  assertNoStore(cb, 'the callback');
  assert.equal(cb.headers['referrer-policy'], 'no-referrer', 'the callback answer: Referrer-Policy: no-referrer (the code is in its URL)');

  // userinfo and auth, with and without a session.
  const stranger = createPerson();
  for (const [what, who, path, status] of [
    ['userinfo with a session', person, `${PREFIX}/userinfo`, 200],
    ['userinfo without a session', stranger, `${PREFIX}/userinfo`, 401],
    ['auth with a session', person, `${PREFIX}/auth`, 200],
    ['auth without a session', stranger, `${PREFIX}/auth`, 401],
  ]) {
    const headers = path.endsWith('/auth') ? { 'X-Original-URI': '/app/headers' } : {};
    const res = await who.api(`${base}${path}`, { headers });
    assert.equal(res.status, status, `${what}: ${res.status}`);
    assertNoStore(res, what);
  }

  // Passerelle's HTML pages: error pages and the logged-out page.
  const pages = [
    ['a callback for no login in progress (400)', `${PREFIX}/callback?code=abc&state=${randomBytes(32).toString('base64url')}`, 400],
    ['an unknown Passerelle endpoint (404)', `${PREFIX}/nope`, 404],
    ['an ambiguous path (400)', '/app/a%2Fb', 400],
    ['the logged-out page', `${PREFIX}/logged-out`, 200],
  ];
  for (const [what, path, status] of pages) {
    const res = await stranger.get(`${base}${path}`, { follow: false });
    assert.equal(res.status, status, `${what}: ${res.status} ${res.body.slice(0, 200)}`);
    assertHtmlPageHeaders(res, what);
    assertNoStore(res, what);
    if (path.startsWith(`${PREFIX}/callback`)) {
      assert.equal(res.headers['referrer-policy'], 'no-referrer', `${what}: Referrer-Policy`);
      await assertFrenchErrorPage(res, logs, { exclude: [...new URL(`${base}${path}`).searchParams.values()] });
    }
  }

  // Logout with a session: the session cookie is deleted on the redirect to the provider; the answer that ends the
  // logout here (/logged-out) carries Clear-Site-Data. (It is deliberately not on the redirect to the provider:
  // the browser would then also erase the logout flow cookie that checks the state on the way back.)
  const lo = await person.get(`${base}${PREFIX}/logout`, { follow: false });
  assert.equal(lo.status, 302, `logout: ${lo.status}`);
  assertNoStore(lo, 'the logout redirect');
  assertDeleted(lo, 'passerelle', 'logout');
  const out = await person.throughProvider(await person.get(lo.location), {});
  const loggedOut = out.history.find((h) => h.url.startsWith(`${base}${PREFIX}/logged-out`));
  assert.ok(loggedOut, `back on ${PREFIX}/logged-out: ${out.history.map((h) => `${h.status} ${h.url}`).join(' → ')}`);
  assertClearSiteData(loggedOut, 'the /logged-out answer ending a logout');
  assertHtmlPageHeaders(loggedOut, 'the logged-out page');
  assert.deepEqual(sessionCookies(person, base), [], 'no session cookie left');

  // Logout ended here at once (no session to end at the provider: the person holds an unreadable one): the 302 to
  // /logged-out deletes the cookie and carries Clear-Site-Data.
  const stale = createPerson();
  stale.jar.set(base, 'passerelle', 'stale-or-forged', { path: '/' });
  const local = await stale.get(`${base}${PREFIX}/logout`, { follow: false });
  assert.equal(local.status, 302, `logout without a valid session: ${local.status}`);
  assert.equal(new URL(local.location).pathname, `${PREFIX}/logged-out`);
  assertDeleted(local, 'passerelle', 'logout without a valid session');
  assertClearSiteData(local, 'the logout redirect that ends the logout here');

  // Sessions are stateless encrypted cookies (SECURITY.md, "What it does not do (yet)": no server-side sessions, a
  // stolen cookie stays valid until its idle or absolute limit). So an old session cookie replayed after logout is
  // NOT asserted to be refused: Passerelle does not claim server-side invalidation.
});
