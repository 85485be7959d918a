// Issue 8, items 1–3 and 12: what Passerelle believes of the request side of the trust boundary, on raw sockets
// (exact bytes, no client-side normalisation). The upstreams are support/raw-upstream.mjs (node:net): they record
// the exact bytes of each request, so the Host and X-Forwarded-Host the app gets are compared byte for byte.
//
//   (1) forward-auth bytes  every byte 0x00–0xFF in a path segment (/admin/x<b>y) and in a query
//                    (/admin/users?x<b>y), as the X-Original-URI of a trusted peer, with and without a session,
//                    in two route layouts (/admin required + / public; /admin refused by a require rule + /
//                    required): 400 or /admin's decision (401, 200 with identity, 403), never the / route's. Bytes
//                    >= 0x80 are read as their %XX escape (decided under /admin, not refused); control bytes and
//                    the space are refused. From an untrusted peer: 400 for every byte. The same with
//                    `forward_auth_uri_header = "X-Forwarded-Uri"`.
//   (2) forward-auth headers  the configured header missing, given twice, or next to another original-URI header
//                    (X-Original-URI, X-Forwarded-Uri, X-Original-URL, X-Rewrite-URL), or not a path: 400, in both
//                    configurations; dot segments and %2e%2e that stay under the root are decided as /admin.
//   (3) hosts        spellings of a host (case, trailing dot, with a port, leading zeros, IDNA as UTF-8 bytes or
//                    punycode, IPv6 literals) are one authority; `..`, empty labels, userinfo, `/`, `\`, `%`, bad
//                    ports, unbracketed IPv6, several Host lines, no Host, an absolute-form target for another
//                    host are 400. With host routes, a host route that answers 403 stays 403 for every spelling
//                    (never the host-less route's 200 with identity), on the main listener and through /auth;
//                    without host routes the decision is the path's. A trusted peer's single X-Forwarded-Host is
//                    routed on, several or a list are 400; an untrusted peer's is ignored. The upstream receives
//                    Host and X-Forwarded-Host equal to the normalised authority routed on.
//   (4) nginx        a real nginx with deploy/nginx/auth_request.conf's set-up (support/nginx.mjs) in front of a raw
//                    app: every byte in path and query, with and without a session: the app never gets an /admin
//                    request without the session's identity, never Passerelle's cookies, and gets its own
//                    (X-Passerelle-App-Cookie); client-sent original-URI headers make nginx answer 500.
//
// Logins go through support/rogue-provider.mjs (no form, fast). The identity is ROGUE_ACCOUNT (email at
// example.nc), which `require = { email_domain = ["example.gouv.fr"] }` refuses: that is the 403 route.
//
// Run: node --test --test-reporter=spec tests/integration/boundary.test.mjs   ($PASSERELLE_BIN to choose the
// binary; nginx at /usr/sbin/nginx or $NGINX_BIN, (4) is skipped without it unless CI=true). Passerelle's output
// for each world is kept in tests/output/boundary_<test name>_<world>.log.

import assert from 'node:assert/strict';
import net from 'node:net';
import { test } from 'node:test';

import { stopAfter } from '../support/http.mjs';
import { nginxAvailable, NGINX_BIN, startNginx } from '../support/nginx.mjs';
import { launchPasserelle, outputName } from '../support/passerelle.mjs';
import { createPerson } from '../support/person.mjs';
import { openRaw } from '../support/raw-http.mjs';
import { headerText, startRawUpstream } from '../support/raw-upstream.mjs';
import { ROGUE_ACCOUNT, startRogueProvider } from '../support/rogue-provider.mjs';
import { addresses, configToml, PREFIX, providerToml, tv } from '../support/stack.mjs';

const TIMEOUT = { timeout: 120_000 };
const PROVIDER = 'rogue';
const SUB = ROGUE_ACCOUNT.sub;
const AUTH = `${PREFIX}/auth`;

// ---------------------------------------------------------------------------------------------------------------
// Worlds: a rogue provider (logs in at once, no form), a raw upstream, Passerelle (JSON logs), a session.

/**
 * One [[route]]: `refuse` adds a require rule the rogue account fails (403); identity headers X-Auth-Sub and
 * X-Auth-Email on every non-public route.
 */
function route(upstream, { host, path = '/', auth = 'required', refuse = false }) {
  return `[[route]]
${host ? `host = ${tv(host)}\n` : ''}path = ${tv(path)}
upstream = ${tv(upstream)}
auth = ${tv(auth)}
${auth === 'public' ? '' : `providers = [${tv(PROVIDER)}]
scopes = ["email", "profile"]
${refuse ? 'require = { email_domain = ["example.gouv.fr"] }\n' : ''}[route.headers]
"X-Auth-Sub" = "sub"
"X-Auth-Email" = "email"
`}
`;
}

// The two path layouts of (1) and (2). P: the permissive route is public. R: the permissive route is required
// without a rule (200 with identity), /admin refuses the account (403).
const LAYOUT_P = (up) => route(up, { path: '/admin' }) + route(up, { path: '/', auth: 'public' });
const LAYOUT_R = (up) => route(up, { path: '/admin', refuse: true }) + route(up, { path: '/' });
// (3) layout A: host routes (b.example and bücher.example refuse the account, c.example is public) and a host-less
// `/` that lets the account in with its identity.
const LAYOUT_HOSTS = (up) => route(up, { host: 'b.example', refuse: true })
  + route(up, { host: 'xn--bcher-kva.example', refuse: true })
  + route(up, { host: 'c.example', auth: 'public' })
  + route(up, { path: '/' });

/**
 * A world: `routes(upstreamUrl)`; `trusted`: 127.0.0.1 is in server.trusted_proxies; `loginPath`: a route the
 * account may open, where the person logs in (null: no session). Stopped by t.after.
 */
async function world(t, name, { routes, trusted = true, extraServer = '', loginPath = '/' }) {
  const a = await addresses();
  const op = await stopAfter(t, startRogueProvider({ redirectUris: a.redirectUris }));
  const upstream = await stopAfter(t, startRawUpstream());
  const toml = configToml({
    writtenBy: 'tests/integration/boundary.test.mjs',
    port: a.port,
    adminPort: a.adminPort,
    extraServer: `log_format = "json"\n${trusted ? 'trusted_proxies = ["127.0.0.1/32"]\n' : ''}${extraServer}`,
    providers: providerToml(PROVIDER, 'oidc', op, { auth_method: op.authMethod, scopes: ['openid', 'email', 'profile'], timeout: '5s' }),
    routes: routes(upstream.url),
  });
  const p = await launchPasserelle(t, toml, { adminPort: a.adminPort, logName: outputName(t, { prefix: 'boundary_', suffix: name }) });
  const w = { ...a, name, host: `127.0.0.1:${a.port}`, op, upstream, p, trusted };
  if (loginPath) {
    const person = createPerson();
    const res = await person.get(`${a.base}${loginPath}`);
    assert.equal(res.status, 200, `${name}: login through ${loginPath} ended on ${res.status} ${res.url}\n${res.body.slice(0, 300)}\n${p.logs().slice(-1500)}`);
    const cookie = person.jar.get(a.base, 'passerelle');
    assert.ok(cookie, `${name}: a session cookie after login`);
    w.session = cookie.value;
  }
  return w;
}

// ---------------------------------------------------------------------------------------------------------------
// Raw requests

const b = (s) => Buffer.from(s, 'latin1');
const u8 = (s) => Buffer.from(s, 'utf8');
const hex = (x) => `0x${x.toString(16).padStart(2, '0')}`;
/** A value for messages: printable ASCII as is, other bytes as \xNN. */
const show = (v) => (Buffer.isBuffer(v) ? v : b(String(v))).toString('latin1').replace(/[^\x21-\x7e]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);

/** The bytes of one request: request line, then each [name, value] (value string as latin1, or Buffer) or raw line. */
function rawRequest(target, lines, { method = 'GET', version = 'HTTP/1.1' } = {}) {
  const parts = [Buffer.isBuffer(target) ? Buffer.concat([b(`${method} `), target, b(` ${version}\r\n`)]) : b(`${method} ${target} ${version}\r\n`)];
  for (const line of lines) {
    if (Array.isArray(line)) parts.push(b(`${line[0]}: `), Buffer.isBuffer(line[1]) ? line[1] : b(line[1]));
    else parts.push(Buffer.isBuffer(line) ? line : b(line));
    parts.push(b('\r\n'));
  }
  parts.push(b('\r\n'));
  return Buffer.concat(parts);
}

/**
 * Sends `bytes` on the raw connection kept in `conn` (reopened when closed) and reads the answer: a response, or
 * null when the server closed the connection without answering.
 */
async function exchange(port, conn, bytes) {
  if (!conn.c || conn.c.isClosed()) conn.c = await openRaw(port);
  conn.c.write(bytes);
  const res = await conn.c.response({ timeoutMs: 10_000 });
  // Passerelle (pingora) closes the connection after refusing a request: the next one goes on a fresh connection.
  if (!res || res.status >= 400 || /close/i.test(res.headers.connection || '') || res.version === '1.0') {
    conn.c.destroy();
    conn.c = undefined;
  }
  return res;
}

/** One answer for messages: status, identity, body. */
function describe(res) {
  if (!res) return 'the connection closed without an answer';
  const sub = res.headers['x-auth-sub'];
  return `${res.status}${sub !== undefined ? ` X-Auth-Sub=${sub}` : ''} ${JSON.stringify(res.text.slice(0, 60))}`;
}

const cookieLine = (w) => ['Cookie', `passerelle=${w.session}`];

// ---------------------------------------------------------------------------------------------------------------
// (1) The byte corpus

/** Each byte in a path segment and in a query of an /admin URI. */
function byteCorpus() {
  const out = [];
  for (let x = 0; x <= 0xff; x++) {
    out.push({ x, where: 'segment', value: Buffer.concat([b('/admin/x'), Buffer.from([x]), b('y')]) });
    out.push({ x, where: 'query', value: Buffer.concat([b('/admin/users?x'), Buffer.from([x]), b('y')]) });
  }
  return out;
}

// In a segment, these ASCII bytes leave a path plainly under /admin (`?` starts the query, `/` another segment,
// `;` parameters); the others (`"`, `<`, `#`, `%`, `\`, `^`…) may be refused but never decided elsewhere.
const PLAIN_IN_SEGMENT = /^[A-Za-z0-9\-._~!$&'()*+,;=:@/?]$/;

/** What the byte must give: 'refused' (400), 'admin' (/admin's decision) or 'either'. */
function expected(x, where) {
  if (x <= 0x20 || x === 0x7f) return 'refused';
  if (where === 'query' || x >= 0x80 || PLAIN_IN_SEGMENT.test(String.fromCharCode(x))) return 'admin';
  return 'either';
}

/** Whether `res` is /admin's decision in `layout` ('P' or 'R'), with or without a session. */
function isAdminDecision(layout, withSession, res) {
  if (!res) return false;
  if (!withSession) return res.status === 401 && res.headers['x-auth-sub'] === undefined;
  if (layout === 'P') return res.status === 200 && res.headers['x-auth-sub'] === SUB && res.text.trim() === 'ok';
  return res.status === 403 && res.headers['x-auth-sub'] === undefined;
}

/** Whether `res` is the decision of the more permissive `/` route: 200 without identity (P), 200 with it (R). */
function isRootDecision(layout, withSession, res) {
  if (!res || res.status !== 200) return false;
  return layout === 'P' || (withSession && res.headers['x-auth-sub'] === SUB);
}

/**
 * Sends the corpus as `header` to /auth, with and without the session; returns the failures, those that are the
 * `/` route's decision first (`permissive` counts them). `refuseAll`: every answer must be 400 (untrusted peer).
 */
async function runByteCorpus(w, { layout, header = 'X-Original-URI', refuseAll = false }) {
  const failures = [];
  const permissive = [];
  const tally = { refused: 0, admin: 0 };
  for (const withSession of [false, true]) {
    const conn = {};
    try {
      for (const { x, where, value } of byteCorpus()) {
        const lines = [['Host', w.host], [header, value], ['Accept', '*/*']];
        if (withSession) lines.push(cookieLine(w));
        const res = await exchange(w.port, conn, rawRequest(AUTH, lines));
        const label = `${hex(x)} in a ${where} (${show(value)})${withSession ? ' with a session' : ''}`;
        const refused = res?.status === 400 && res.headers['x-auth-sub'] === undefined;
        const admin = isAdminDecision(layout, withSession, res);
        if (refused) tally.refused++;
        if (admin) tally.admin++;
        const want = refuseAll ? 'refused' : expected(x, where);
        const wrong = (want === 'refused' && !refused) || (want === 'admin' && !admin) || (want === 'either' && !refused && !admin);
        if (!wrong) continue;
        const message = `${label}: ${describe(res)}, expected ${{ refused: '400', admin: '/admin\'s decision', either: '400 or /admin\'s decision' }[want]}`;
        if (isRootDecision(layout, withSession, res)) permissive.push(`${message} (the / route's decision)`);
        else failures.push(message);
      }
    } finally {
      conn.c?.destroy();
    }
  }
  return { failures: [...permissive, ...failures], permissive: permissive.length, tally };
}

/** Fails with the first 40 failures of a corpus run, the `/` route's decisions first. */
function assertCorpus({ failures, permissive }) {
  assert.deepEqual(failures.slice(0, 40), [], `${failures.length} of 1,024 answers went wrong, ${permissive} of them the / route's decision (first 40 shown)`);
}

test('(1)(2) forward-auth with X-Original-URI (the default): every byte, and the header given once or refused', TIMEOUT, async (t) => {
  const P = await world(t, 'P', { routes: LAYOUT_P, loginPath: '/admin/' });
  const R = await world(t, 'R', { routes: LAYOUT_R, loginPath: '/x' });

  await t.test('(1) /admin required + / public: 400 or /admin\'s decision (401; 200 with identity), never / (200 public)', async (st) => {
    // The premise: / is the more permissive answer, and it differs from /admin's.
    const conn = {};
    const pub = await exchange(P.port, conn, rawRequest(AUTH, [['Host', P.host], ['X-Original-URI', '/x'], cookieLine(P)]));
    assert.ok(pub?.status === 200 && pub.text.trim() === 'public' && pub.headers['x-auth-sub'] === undefined, `/x is public: ${describe(pub)}`);
    conn.c?.destroy();
    const result = await runByteCorpus(P, { layout: 'P' });
    st.diagnostic(`1,024 answers: ${result.tally.admin} /admin decisions, ${result.tally.refused} refusals`);
    assertCorpus(result);
  });

  await t.test('(1) /admin refused by a require rule (403) + / required (200): 400 or 401/403, never 200', async (st) => {
    const conn = {};
    const root = await exchange(R.port, conn, rawRequest(AUTH, [['Host', R.host], ['X-Original-URI', '/x'], cookieLine(R)]));
    assert.ok(root?.status === 200 && root.headers['x-auth-sub'] === SUB, `/x lets the account in: ${describe(root)}`);
    conn.c?.destroy();
    const result = await runByteCorpus(R, { layout: 'R' });
    st.diagnostic(`1,024 answers: ${result.tally.admin} /admin decisions, ${result.tally.refused} refusals`);
    assertCorpus(result);
  });

  await t.test('(2) X-Original-URI missing, twice, beside another original-URI header, or not a path: 400', async () => {
    await checkHeaderCases(P, 'X-Original-URI', 'X-Forwarded-Uri');
  });
});

test('(1) forward-auth from an untrusted peer (no trusted_proxies): 400 for every byte, with or without a session', TIMEOUT, async (t) => {
  const U = await world(t, 'untrusted', { routes: LAYOUT_P, trusted: false, loginPath: '/admin/' });
  const result = await runByteCorpus(U, { layout: 'P', refuseAll: true });
  const conn = {};
  try {
    for (const uri of ['/x', '/admin/x', '/']) {
      const res = await exchange(U.port, conn, rawRequest(AUTH, [['Host', U.host], ['X-Original-URI', uri], cookieLine(U)]));
      if (res?.status !== 400) result.failures.push(`${uri} from an untrusted peer, with a session: ${describe(res)}, expected 400`);
    }
  } finally {
    conn.c?.destroy();
  }
  assertCorpus(result);
});

test('(1)(2) forward-auth with forward_auth_uri_header = "X-Forwarded-Uri"', TIMEOUT, async (t) => {
  const F = await world(t, 'X-Forwarded-Uri', { routes: LAYOUT_P, loginPath: '/admin/', extraServer: 'forward_auth_uri_header = "X-Forwarded-Uri"\n' });

  await t.test('(1) every byte in X-Forwarded-Uri: 400 or /admin\'s decision, never / (200 public)', async (st) => {
    const result = await runByteCorpus(F, { layout: 'P', header: 'X-Forwarded-Uri' });
    st.diagnostic(`1,024 answers: ${result.tally.admin} /admin decisions, ${result.tally.refused} refusals`);
    assertCorpus(result);
  });

  await t.test('(2) X-Forwarded-Uri missing, twice, beside X-Original-URI (or another), or not a path: 400', async () => {
    await checkHeaderCases(F, 'X-Forwarded-Uri', 'X-Original-URI');
  });
});

// ---------------------------------------------------------------------------------------------------------------
// (2) Which header, how many times

/**
 * World `w` (layout P) reads `configured`; `other` is the other common one. Each case, with and without the
 * session: 400, or the decision named.
 */
async function checkHeaderCases(w, configured, other) {
  const refused = [
    [`${other}: /admin/x + ${configured}: /public/`, [[other, '/admin/x'], [configured, '/public/']]],
    [`${configured}: /public/ + ${other}: /admin/x`, [[configured, '/public/'], [other, '/admin/x']]],
    [`${configured}: /admin/x + ${other}: /public/`, [[configured, '/admin/x'], [other, '/public/']]],
    [`${configured}: /admin/x + ${other}: /admin/x (the same value)`, [[configured, '/admin/x'], [other, '/admin/x']]],
    [`${configured}: /admin/x + X-Original-URL: /`, [[configured, '/admin/x'], ['X-Original-URL', '/']]],
    [`${configured}: /admin/x + X-Rewrite-URL: /`, [[configured, '/admin/x'], ['X-Rewrite-URL', '/']]],
    [`${configured}: /admin/x + ${other.toLowerCase()}: /public/ (lower case)`, [[configured, '/admin/x'], [other.toLowerCase(), '/public/']]],
    [`${configured} twice (/public/, /admin/x)`, [[configured, '/public/'], [configured, '/admin/x']]],
    [`${configured} twice (/admin/x, /public/)`, [[configured, '/admin/x'], [configured, '/public/']]],
    [`${configured} twice, two spellings of its name`, [[configured, '/admin/x'], [configured.toUpperCase(), '/public/']]],
    [`${configured} twice, the same value`, [[configured, '/admin/x'], [configured, '/admin/x']]],
    ['no original-URI header', []],
    [`only ${other}: /public/`, [[other, '/public/']]],
    [`only ${other}: /admin/x`, [[other, '/admin/x']]],
    ['only X-Original-URL: /public/', [['X-Original-URL', '/public/']]],
    [`${configured}: (empty)`, [[configured, '']]],
    [`${configured}: admin/x (relative)`, [[configured, 'admin/x']]],
    [`${configured}: http://127.0.0.1/admin/x (absolute)`, [[configured, 'http://127.0.0.1/admin/x']]],
    [`${configured}: /../admin/x (above the root)`, [[configured, '/../admin/x']]],
    [`${configured}: /%2Fadmin/x (encoded slash)`, [[configured, '/%2Fadmin/x']]],
    [`${configured}: /public/..%2Fadmin/x`, [[configured, '/public/..%2Fadmin/x']]],
    [`${configured}: /public\\..\\admin\\x (backslashes)`, [[configured, '/public\\..\\admin\\x']]],
    [`${configured}: /%zz (bad escape)`, [[configured, '/%zz']]],
    [`${configured}: /admin/x (tab) /public/`, [[configured, '/admin/x\t/public/']]],
  ];
  // The decision of the path (layout P): these must be decided, so the refusals above are the header's doing.
  const decided = [
    [`${configured}: /admin/x`, [[configured, '/admin/x']], 'admin'],
    [`${configured}: /public/x`, [[configured, '/public/x']], 'public'],
    [`${configured}: /public/../admin/x`, [[configured, '/public/../admin/x']], 'admin'],
    [`${configured}: /public/%2e%2e/admin/x`, [[configured, '/public/%2e%2e/admin/x']], 'admin'],
    [`${configured}: //admin/x`, [[configured, '//admin/x']], 'admin'],
    [`${configured}: /admin;x=1/x`, [[configured, '/admin;x=1/x']], 'admin'],
    [`${configured}: /%61dmin/x`, [[configured, '/%61dmin/x']], 'admin'],
    [`${configured}: /admin/x?next=/public/`, [[configured, '/admin/x?next=/public/']], 'admin'],
    [`${configured}: /admin/\\xff`, [[configured, b('/admin/\xff')]], 'admin'],
  ];
  const failures = [];
  for (const withSession of [false, true]) {
    const conn = {};
    try {
      for (const [label, lines, want = 'refused'] of [...refused, ...decided]) {
        const all = [['Host', w.host], ...lines, ['Accept', '*/*']];
        if (withSession) all.push(cookieLine(w));
        const res = await exchange(w.port, conn, rawRequest(AUTH, all));
        const what = `${label}${withSession ? ' with a session' : ''}`;
        if (want === 'refused') {
          if (res?.status !== 400 || res.headers['x-auth-sub'] !== undefined) failures.push(`${what}: ${describe(res)}, expected 400`);
        } else if (want === 'admin') {
          if (!isAdminDecision('P', withSession, res)) failures.push(`${what}: ${describe(res)}, expected /admin's decision`);
        } else if (!(res?.status === 200 && res.text.trim() === 'public' && res.headers['x-auth-sub'] === undefined)) {
          failures.push(`${what}: ${describe(res)}, expected 200 public`);
        }
      }
    } finally {
      conn.c?.destroy();
    }
  }
  assert.deepEqual(failures, [], `${failures.length} answers went wrong`);
}

// ---------------------------------------------------------------------------------------------------------------
// (3) Hosts

/**
 * Spellings of hosts: [label, raw Host value, normalised authority or null (refused)]. `port` is the world's, for
 * the host-less spellings naming Passerelle itself.
 */
function spellings(port) {
  return [
    // b.example (a host route refusing the account in layout A)
    ['b.example', 'b.example', 'b.example'],
    ['upper case', 'B.EXAMPLE', 'b.example'],
    ['mixed case', 'b.ExAmPlE', 'b.example'],
    ['trailing dot', 'b.example.', 'b.example'],
    ['upper case, trailing dot', 'B.EXAMPLE.', 'b.example'],
    ['port', 'b.example:8080', 'b.example:8080'],
    ['trailing dot and port', 'b.example.:8080', 'b.example:8080'],
    ['upper case, trailing dot, port', 'B.Example.:8443', 'b.example:8443'],
    ['port with leading zeros', 'b.example:00080', 'b.example:80'],
    ['port 65535', 'b.example:65535', 'b.example:65535'],
    ['port 1', 'b.example:1', 'b.example:1'],
    // bücher.example: its route is written in punycode
    ['IDN, UTF-8', u8('bücher.example'), 'xn--bcher-kva.example'],
    ['IDN, UTF-8 upper case', u8('BÜCHER.example'), 'xn--bcher-kva.example'],
    ['IDN, UTF-8, trailing dot and port', u8('Bücher.Example.:8443'), 'xn--bcher-kva.example:8443'],
    ['IDN, punycode', 'xn--bcher-kva.example', 'xn--bcher-kva.example'],
    ['IDN, punycode upper case, trailing dot', 'XN--BCHER-KVA.EXAMPLE.', 'xn--bcher-kva.example'],
    // UTS 46 mapping, as browsers apply it: fullwidth letters, ideographic and fullwidth full stops, soft hyphen
    ['fullwidth letter', u8('ｂ.example'), 'b.example'],
    ['ideographic full stop', u8('b。example'), 'b.example'],
    ['fullwidth full stop', u8('b．example'), 'b.example'],
    ['soft hyphen', u8('b.ex\u00adample'), 'b.example'],
    ['ideographic full stop as the trailing dot', u8('B.EXAMPLE。'), 'b.example'],
    ['fullwidth full stop as the trailing dot, port', u8('b.example．:8080'), 'b.example:8080'],
    // c.example: a public host route
    ['c.example', 'c.example', 'c.example'],
    ['c.example, upper case, trailing dot, port', 'C.EXAMPLE.:8080', 'c.example:8080'],
    ['c.example, port with leading zeros', 'c.example:0080', 'c.example:80'],
    // host-less
    ['Passerelle\'s own address', `127.0.0.1:${port}`, `127.0.0.1:${port}`],
    ['IPv6 literal', '[::1]', '[::1]'],
    ['IPv6 literal, long form, port', '[0:0::1]:8080', '[::1]:8080'],
    ['IPv6 literal, upper case, mapped IPv4', '[::FFFF:7F00:1]', '[::ffff:127.0.0.1]'],
    ['localhost, upper case, trailing dot', 'LOCALHOST.', 'localhost'],
    ['a subdomain of b.example', 'a.b.example', 'a.b.example'],
    ['another name ending in b.example', 'bb.example', 'bb.example'],
    // refused
    ['two trailing dots', 'b.example..', null],
    ['two trailing dots and a port', 'b.example..:8080', null],
    ['a trailing dot and an ideographic one', u8('b.example.。'), null],
    ['leading dot', '.b.example', null],
    ['empty label', 'b..example', null],
    ['only a dot', '.', null],
    ['userinfo', 'user@b.example', null],
    ['userinfo naming Passerelle', `b.example@127.0.0.1:${port}`, null],
    ['a slash', 'b.example/x', null],
    ['a backslash', 'b.example\\x', null],
    ['percent-encoded', '%62.example', null],
    ['a space inside', 'b .example', null],
    ['a control byte', 'b.example\x01', null],
    ['DEL', 'b.example\x7f', null],
    ['latin-1 byte (not UTF-8)', b('b\xfccher.example'), null],
    ['invalid punycode', 'xn--zz.example', null],
    ['port 0', 'b.example:0', null],
    ['port 65536', 'b.example:65536', null],
    ['port 123456', 'b.example:123456', null],
    ['non-digit port', 'b.example:8o80', null],
    ['negative port', 'b.example:-1', null],
    ['empty port', 'b.example:', null],
    ['two ports', 'b.example:80:80', null],
    ['unbracketed IPv6', '::1', null],
    ['unbracketed IPv6 and a port', '::1:8080', null],
    ['unclosed IPv6 bracket', '[::1', null],
    ['junk after an IPv6 literal', '[::1]x', null],
    ['IPv6 literal, port 0', '[::1]:0', null],
    ['IPv6 zone id', '[fe80::1%25lo]', null],
    ['a fragment', 'b.example#', null],
  ];
}

/** The host part of a normalised authority. */
const hostOf = (authority) => (authority.startsWith('[') ? authority.slice(0, authority.indexOf(']') + 1) : authority.split(':')[0]);

/** What layout A decides for an authority: 'refused' (400), 'forbidden' (403), 'public' or 'identity' (200). */
function layoutA(authority) {
  if (authority === null) return 'refused';
  const host = hostOf(authority);
  if (host === 'b.example' || host === 'xn--bcher-kva.example') return 'forbidden';
  if (host === 'c.example') return 'public';
  return 'identity';
}

/**
 * Checks one request on the main listener of world `w`: `want` is 'refused', 'forbidden', 'public' or 'identity';
 * `authority` the one the upstream must get as Host and X-Forwarded-Host when it is reached. Returns a problem or
 * undefined.
 */
async function mainListener(w, conn, { target = '/x?y=1', lines, version, want, authority, session = true }) {
  const mark = w.upstream.requests.length;
  const all = [...lines, ['Accept', '*/*']];
  if (session) all.push(cookieLine(w));
  const res = await exchange(w.port, conn, rawRequest(target, all, { version }));
  const got = w.upstream.requests.slice(mark);
  const status = { refused: 400, forbidden: 403, public: 200, identity: 200 }[want];
  if (res?.status !== status) return `answered ${describe(res)}, expected ${status} (${want})`;
  if (want === 'refused' || want === 'forbidden') {
    return got.length ? `the upstream was reached: ${got.map((g) => `${g.target} Host=${show(headerText(g, 'host').join('|'))}`).join(', ')}` : undefined;
  }
  if (got.length !== 1) return `the upstream got ${got.length} requests`;
  const [rec] = got;
  const text = Buffer.isBuffer(target) ? target.toString('latin1') : target;
  const path = /^https?:\/\//i.test(text) ? text.slice(text.indexOf('/', text.indexOf('//') + 2)) : text;
  if (rec.target !== path) return `the upstream got ${show(rec.target)}, expected ${path}`;
  const host = headerText(rec, 'host');
  if (host.length !== 1 || host[0] !== authority) return `the upstream got Host ${JSON.stringify(host.map(show))}, expected ${authority}`;
  const xfh = headerText(rec, 'x-forwarded-host');
  if (xfh.length !== 1 || xfh[0] !== authority) return `the upstream got X-Forwarded-Host ${JSON.stringify(xfh.map(show))}, expected ${authority}`;
  const sub = headerText(rec, 'x-auth-sub');
  if (want === 'identity' && (sub.length !== 1 || sub[0] !== SUB)) return `the upstream got X-Auth-Sub ${JSON.stringify(sub)}, expected ${SUB}`;
  if (want === 'public' && sub.length) return `a public route got X-Auth-Sub ${JSON.stringify(sub)}`;
  if (headerText(rec, 'cookie').some((c) => /(^|;\s*)passerelle=/.test(c))) return 'the upstream got the session cookie';
  return undefined;
}

/**
 * Forward-auth of world `w` (trusted) for `uri`, with the session: `want` is 'refused', 'forbidden', 'public' or
 * 'identity'. Returns a problem or undefined.
 */
async function forwardAuth(w, conn, { uri = '/x', lines, want }) {
  const res = await exchange(w.port, conn, rawRequest(AUTH, [...lines, ['X-Original-URI', uri], ['Accept', '*/*'], cookieLine(w)]));
  const ok = {
    refused: (r) => r.status === 400,
    forbidden: (r) => r.status === 403,
    public: (r) => r.status === 200 && r.text.trim() === 'public',
    identity: (r) => r.status === 200 && r.headers['x-auth-sub'] === SUB,
  }[want];
  if (!res || !ok(res) || (want !== 'identity' && res.headers['x-auth-sub'] !== undefined)) return `answered ${describe(res)}, expected ${want}`;
  return undefined;
}

test('(3) host spellings with host routes: a 403 host route stays 403, refused spellings are 400, never the host-less 200', TIMEOUT, async (t) => {
  const A = await world(t, 'hosts-trusted', { routes: LAYOUT_HOSTS, loginPath: '/x' });
  const AU = await world(t, 'hosts-untrusted', { routes: LAYOUT_HOSTS, trusted: false, loginPath: '/x' });

  await t.test('(3) the main listener, from a trusted and from an untrusted peer, with a session', async () => {
    const failures = [];
    for (const w of [A, AU]) {
      const conn = {};
      try {
        for (const [label, raw, authority] of spellings(w.port)) {
          const problem = await mainListener(w, conn, { lines: [['Host', raw]], want: layoutA(authority), authority });
          if (problem) failures.push(`${w.name}: Host ${show(raw)} (${label}): ${problem}`);
        }
      } finally {
        conn.c?.destroy();
      }
    }
    assert.deepEqual(failures, [], `${failures.length} host spellings went wrong`);
  });

  await t.test('(3) /auth routes on the same authority: 403 for every spelling of a 403 host, 400 for refused ones', async () => {
    const failures = [];
    const conn = {};
    try {
      for (const [label, raw, authority] of spellings(A.port)) {
        const problem = await forwardAuth(A, conn, { lines: [['Host', raw]], want: layoutA(authority) });
        if (problem) failures.push(`/auth with Host ${show(raw)} (${label}): ${problem}`);
      }
    } finally {
      conn.c?.destroy();
    }
    assert.deepEqual(failures, [], `${failures.length} host spellings went wrong`);
  });

  await t.test('(3) several Host lines, no Host, absolute-form targets', async () => {
    const own = A.host;
    const cases = [
      ['two Host lines (b.example, Passerelle)', { lines: [['Host', 'b.example'], ['Host', own]], want: 'refused' }],
      ['two Host lines (Passerelle, b.example)', { lines: [['Host', own], ['Host', 'b.example']], want: 'refused' }],
      ['two Host lines, the same', { lines: [['Host', own], ['Host', own]], want: 'refused' }],
      ['HTTP/1.1 without Host', { lines: [], want: 'refused' }],
      ['HTTP/1.0 without Host: the public URL\'s authority', { lines: [], version: 'HTTP/1.0', want: 'identity', authority: own }],
      ['absolute form for b.example, Host b.example', { target: 'http://b.example/x', lines: [['Host', 'b.example']], want: 'forbidden' }],
      ['absolute form for B.EXAMPLE., Host B.EXAMPLE.', { target: 'http://B.EXAMPLE./x', lines: [['Host', 'B.EXAMPLE.']], want: 'forbidden' }],
      ['absolute form for XN--BCHER-KVA.EXAMPLE.:80, same Host', { target: 'http://XN--BCHER-KVA.EXAMPLE.:80/x', lines: [['Host', 'XN--BCHER-KVA.EXAMPLE.:80']], want: 'forbidden' }],
      // A request target is ASCII: bytes >= 0x80 there are refused by the HTTP parser.
      ['absolute form for bücher.example (UTF-8), same Host', { target: u8('http://bücher.example/x'), lines: [['Host', u8('bücher.example')]], want: 'refused' }],
      // pingora itself answers 400 when the two are not the same text, before Passerelle compares them normalised.
      ['absolute form for B.EXAMPLE., Host b.example', { target: 'http://B.EXAMPLE./x', lines: [['Host', 'b.example']], want: 'refused' }],
      ['absolute form for b.example, Host Passerelle', { target: 'http://b.example/x', lines: [['Host', own]], want: 'refused' }],
      ['absolute form for Passerelle, Host b.example', { target: `http://${own}/x`, lines: [['Host', 'b.example']], want: 'refused' }],
      ['absolute form for b.example.., Host b.example', { target: 'http://b.example../x', lines: [['Host', 'b.example']], want: 'refused' }],
      ['absolute form for Passerelle, upper case, Host Passerelle', { target: `HTTP://${own}/x?y=1`, lines: [['Host', own]], want: 'identity', authority: own }],
    ];
    const failures = [];
    const conn = {};
    try {
      for (const [label, c] of cases) {
        const problem = await mainListener(A, conn, c);
        if (problem) failures.push(`${label}: ${problem}`);
      }
    } finally {
      conn.c?.destroy();
    }
    assert.deepEqual(failures, [], `${failures.length} requests went wrong`);
  });

  await t.test('(3) X-Forwarded-Host: a trusted peer\'s single value is routed on, several are 400; an untrusted peer\'s is ignored', async () => {
    const failures = [];
    const run = async (w, label, c) => {
      const conn = {};
      try {
        const problem = await mainListener(w, conn, c);
        if (problem) failures.push(`${w.name}: ${label}: ${problem}`);
        if (w.trusted) {
          const authProblem = await forwardAuth(w, conn, { lines: c.lines, want: c.want });
          if (authProblem) failures.push(`${w.name}: /auth, ${label}: ${authProblem}`);
        }
      } finally {
        conn.c?.destroy();
      }
    };
    const ownA = A.host;
    // Trusted: routed on X-Forwarded-Host, normalised like Host; sent upstream as Host and X-Forwarded-Host.
    await run(A, 'X-Forwarded-Host b.example', { lines: [['Host', ownA], ['X-Forwarded-Host', 'b.example']], want: 'forbidden' });
    await run(A, 'X-Forwarded-Host B.EXAMPLE.:8443', { lines: [['Host', ownA], ['X-Forwarded-Host', 'B.EXAMPLE.:8443']], want: 'forbidden' });
    await run(A, 'X-Forwarded-Host bücher.example (UTF-8)', { lines: [['Host', ownA], ['X-Forwarded-Host', u8('bücher.example')]], want: 'forbidden' });
    await run(A, 'X-Forwarded-Host C.Example. over Host b.example', { lines: [['Host', 'b.example'], ['X-Forwarded-Host', 'C.Example.']], want: 'public', authority: 'c.example' });
    await run(A, 'X-Forwarded-Host D.example:08080 over Host b.example', { lines: [['Host', 'b.example'], ['X-Forwarded-Host', 'D.example:08080']], want: 'identity', authority: 'd.example:8080' });
    await run(A, 'X-Forwarded-Host [0::1]:8080 over Host b.example', { lines: [['Host', 'b.example'], ['X-Forwarded-Host', '[0::1]:8080']], want: 'identity', authority: '[::1]:8080' });
    for (const [label, lines] of [
      ['two X-Forwarded-Host lines (Passerelle, b.example)', [['X-Forwarded-Host', ownA], ['X-Forwarded-Host', 'b.example']]],
      ['two X-Forwarded-Host lines (b.example, Passerelle)', [['X-Forwarded-Host', 'b.example'], ['X-Forwarded-Host', ownA]]],
      ['two X-Forwarded-Host lines, the same', [['X-Forwarded-Host', 'd.example'], ['X-Forwarded-Host', 'd.example']]],
      ['X-Forwarded-Host "d.example, b.example"', [['X-Forwarded-Host', 'd.example, b.example']]],
      ['X-Forwarded-Host "b.example,d.example"', [['X-Forwarded-Host', 'b.example,d.example']]],
      ['X-Forwarded-Host "d.example,"', [['X-Forwarded-Host', 'd.example,']]],
      ['X-Forwarded-Host b.example..', [['X-Forwarded-Host', 'b.example..']]],
      ['X-Forwarded-Host user@b.example', [['X-Forwarded-Host', 'user@b.example']]],
      ['X-Forwarded-Host ::1', [['X-Forwarded-Host', '::1']]],
      ['X-Forwarded-Host b.example:0', [['X-Forwarded-Host', 'b.example:0']]],
    ]) {
      await run(A, label, { lines: [['Host', ownA], ...lines], want: 'refused' });
    }
    // Untrusted: X-Forwarded-Host is not read; the upstream gets Passerelle's own X-Forwarded-Host (the Host).
    const ownU = AU.host;
    await run(AU, 'X-Forwarded-Host b.example over Host Passerelle', { lines: [['Host', ownU], ['X-Forwarded-Host', 'b.example']], want: 'identity', authority: ownU });
    await run(AU, 'X-Forwarded-Host Passerelle over Host b.example', { lines: [['Host', 'b.example'], ['X-Forwarded-Host', ownU]], want: 'forbidden' });
    await run(AU, 'X-Forwarded-Host d.example over Host B.EXAMPLE.', { lines: [['Host', 'B.EXAMPLE.'], ['X-Forwarded-Host', 'd.example']], want: 'forbidden' });
    await run(AU, 'two X-Forwarded-Host lines over Host Passerelle', { lines: [['Host', ownU], ['X-Forwarded-Host', 'b.example'], ['X-Forwarded-Host', 'c.example']], want: 'identity', authority: ownU });
    await run(AU, 'X-Forwarded-Host "b.example, d.example" over Host Passerelle', { lines: [['Host', ownU], ['X-Forwarded-Host', 'b.example, d.example']], want: 'identity', authority: ownU });
    await run(AU, 'X-Forwarded-Host b.example.. over Host Passerelle', { lines: [['Host', ownU], ['X-Forwarded-Host', 'b.example..']], want: 'identity', authority: ownU });
    assert.deepEqual(failures, [], `${failures.length} requests went wrong`);
  });
});

test('(3) host spellings without host routes: the path decides (403 /admin, 200 /), refused spellings are 400', TIMEOUT, async (t) => {
  const B = await world(t, 'no-host-routes', { routes: LAYOUT_R, loginPath: '/x' });
  const failures = [];
  const conn = {};
  try {
    for (const [label, raw, authority] of spellings(B.port)) {
      const what = `Host ${show(raw)} (${label})`;
      const problems = [
        ['GET /admin/x', await mainListener(B, conn, { target: '/admin/x', lines: [['Host', raw]], want: authority ? 'forbidden' : 'refused' })],
        ['GET /x?y=1', await mainListener(B, conn, { lines: [['Host', raw]], want: authority ? 'identity' : 'refused', authority })],
        ['/auth /admin/x', await forwardAuth(B, conn, { uri: '/admin/x', lines: [['Host', raw]], want: authority ? 'forbidden' : 'refused' })],
        ['/auth /x', await forwardAuth(B, conn, { uri: '/x', lines: [['Host', raw]], want: authority ? 'identity' : 'refused' })],
      ];
      for (const [where, problem] of problems) if (problem) failures.push(`${where}, ${what}: ${problem}`);
      // The same spelling as a trusted proxy's X-Forwarded-Host.
      const viaProxy = await mainListener(B, conn, { lines: [['Host', B.host], ['X-Forwarded-Host', raw]], want: authority ? 'identity' : 'refused', authority });
      if (viaProxy) failures.push(`GET /x, X-Forwarded-Host ${show(raw)} (${label}): ${viaProxy}`);
    }
  } finally {
    conn.c?.destroy();
  }
  assert.deepEqual(failures, [], `${failures.length} requests went wrong`);
});

// ---------------------------------------------------------------------------------------------------------------
// (4) Through a real nginx auth_request

/** Sends `bytes` to nginx on a fresh connection (Connection: close) and reads until it closes: { status, raw }. */
function oneShot(port, bytes, timeoutMs = 10_000) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    const socket = net.connect({ port, host: '127.0.0.1' });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`nginx neither answered nor closed within ${timeoutMs} ms: ${show(bytes.subarray(0, 120))}`));
    }, timeoutMs);
    socket.on('data', (d) => chunks.push(d));
    socket.on('error', () => {}); // a reset after nginx's answer: the bytes read so far are the answer
    socket.on('close', () => {
      clearTimeout(timer);
      const raw = Buffer.concat(chunks);
      const m = /^HTTP\/1\.[01] (\d{3})/.exec(raw.subarray(0, 20).toString('latin1'));
      // No status line: an HTTP/0.9 answer (nginx reads `GET /admin/x<LF>` as one).
      resolve({ status: m ? Number(m[1]) : null, raw });
    });
    socket.write(bytes);
  });
}

/**
 * The path of an app request as an app could read it: scheme and authority of an absolute form cut, query cut,
 * %XX decoded, `\` as `/`, `//` collapsed, `;parameters` dropped (servlet containers), dot segments resolved.
 */
function appReading(target) {
  const path = target.replace(/^[a-z][a-z0-9+.-]*:\/\/[^/?]*/i, '').split('?')[0].replace(/%([0-9a-fA-F]{2})/g, (_, h) => String.fromCharCode(parseInt(h, 16)));
  const out = [];
  for (const seg of path.split(/[/\\]/).map((s) => s.split(';')[0])) {
    if (seg === '' || seg === '.') continue;
    if (seg === '..') out.pop();
    else out.push(seg);
  }
  return `/${out.join('/')}`;
}

const isAdminPath = (target) => /^\/admin(\/|;|$)/i.test(appReading(target));

/** Passerelle's cookie names (session, chunks, flows, logout, id_token hint; __Host-/__Secure- forms). */
const isOwnCookie = (name) => /^(__host-|__secure-)?passerelle(\.\d+|_flow_[A-Za-z0-9_-]+|_logout|_idt(\.\d+)?)?$/i.test(name.trim());

test('(4) nginx auth_request: every byte in path and query, the app never gets /admin without identity nor Passerelle\'s cookies', TIMEOUT, async (t) => {
  if (!nginxAvailable()) {
    if (process.env.CI === 'true') assert.fail(`nginx is required under CI=true (${NGINX_BIN}; apt-get install nginx-light)`);
    t.skip(`nginx not found at ${NGINX_BIN} (apt-get install nginx-light)`);
    return;
  }
  const W = await world(t, 'nginx', { routes: (up) => route(up, { path: '/admin' }) + route(up, { path: '/', auth: 'public' }), loginPath: '/admin/' });
  const app = await stopAfter(t, startRawUpstream());
  const ngx = await startNginx({ passerellePort: W.port, appPort: app.port });
  t.after(() => ngx.stop());
  const host = `127.0.0.1:${ngx.port}`;
  const APP_COOKIES = 'lang=fr; theme=dark';

  /** One request through nginx; checks everything the app got for it; returns { status, got, problems }. */
  const send = async (target, { session, cookies = [], extra = [] }) => {
    const mark = app.requests.length;
    const lines = [['Host', host], ['Accept', '*/*'], ['X-Auth-Sub', 'evil'], ['Remote-User', 'evil'], ...cookies.map((c) => ['Cookie', c]), ...extra, ['Connection', 'close']];
    const res = await oneShot(ngx.port, rawRequest(target, lines));
    const got = app.requests.slice(mark);
    const problems = [];
    for (const rec of got) {
      const what = `the app got ${show(rec.target)}`;
      const sub = headerText(rec, 'x-auth-sub');
      if (sub.includes('evil') || headerText(rec, 'remote-user').includes('evil')) problems.push(`${what} with the client's spoofed identity`);
      if (isAdminPath(rec.target) && !(session && sub.length === 1 && sub[0] === SUB)) {
        problems.push(`${what} (an /admin path) with X-Auth-Sub ${JSON.stringify(sub)}${session ? '' : ', for a request without a session'}`);
      }
      const own = headerText(rec, 'cookie').flatMap((line) => line.split(';').map((p) => p.split('=')[0])).filter(isOwnCookie);
      if (own.length) problems.push(`${what} with Passerelle's cookies: ${own.join(', ')}`);
    }
    return { status: res.status, got, problems };
  };

  const breaches = []; // what the app must never get: /admin without identity, Passerelle's cookies, spoofed identity
  const failures = [];
  const statuses = {}; // nginx's answers, for the diagnostic: 400 is nginx's own refusal, 500 Passerelle's 400
  for (const withSession of [false, true]) {
    const cookies = withSession ? [`lang=fr; passerelle=${W.session}; theme=dark`] : [APP_COOKIES];
    for (let x = 0; x <= 0xff; x++) {
      const byte = Buffer.from([x]);
      for (const [kind, target] of [
        ['an /admin segment', Buffer.concat([b('/admin/x'), byte, b('y')])],
        ['an /admin query', Buffer.concat([b('/admin/users?x'), byte, b('y')])],
        ['a public segment', Buffer.concat([b('/pub/x'), byte, b('y')])],
        ['a public query', Buffer.concat([b('/pub/users?x'), byte, b('y')])],
      ]) {
        const label = `${hex(x)} in ${kind} (${show(target)})${withSession ? ' with a session' : ''}`;
        const { status, got, problems } = await send(target, { session: withSession, cookies });
        for (const p of problems) breaches.push(`${label}: ${p}`);
        const key = status ?? 'HTTP/0.9';
        statuses[key] = (statuses[key] ?? 0) + 1;
        // Bytes >= 0x80 (and letters) are read by Passerelle as their escape: decided as the path's route.
        if (x < 0x80 && !/[A-Za-z0-9]/.test(String.fromCharCode(x))) continue;
        const admin = kind.includes('/admin');
        if (admin && !withSession) {
          if (status !== 401 || got.length) failures.push(`${label}: ${status} and the app got ${got.length} request(s), expected 401 and nothing`);
          continue;
        }
        if (got.length !== 1 || got[0].target !== target.toString('latin1')) {
          failures.push(`${label}: ${status}, the app got ${JSON.stringify(got.map((g) => show(g.target)))}, expected the request`);
          continue;
        }
        const sub = headerText(got[0], 'x-auth-sub');
        if (admin && (sub.length !== 1 || sub[0] !== SUB)) failures.push(`${label}: the app got X-Auth-Sub ${JSON.stringify(sub)}`);
        if (!admin && sub.length) failures.push(`${label}: a public path got X-Auth-Sub ${JSON.stringify(sub)}`);
        const appCookies = headerText(got[0], 'cookie');
        if (appCookies.length !== 1 || appCookies[0] !== APP_COOKIES) failures.push(`${label}: the app got Cookie ${JSON.stringify(appCookies)}, expected ["${APP_COOKIES}"]`);
      }
    }
  }
  t.diagnostic(`2,048 requests through nginx, answered: ${Object.entries(statuses).map(([k, n]) => `${k} × ${n}`).join(', ')}`);

  // Cookies in other shapes, and original-URI headers sent by the client (nginx passes them to the subrequest).
  const S = `passerelle=${W.session}`;
  const cases = [
    ['/admin/c1', 'two Cookie lines', { session: true, cookies: ['lang=fr', `${S}; theme=dark`] }, { status: 200, cookie: [APP_COOKIES] }],
    ['/admin/c2', 'the session first', { session: true, cookies: [`${S}; lang=fr; theme=dark`] }, { status: 200, cookie: [APP_COOKIES] }],
    ['/admin/c3', 'only the session', { session: true, cookies: [S] }, { status: 200, cookie: [] }],
    ['/pub/c4', 'flow, id_token hint and logout cookies', { session: false, cookies: [`lang=fr; passerelle_flow_AbCdEfGhIjKl=f; passerelle_idt=i; passerelle_logout=l; theme=dark`] }, { status: 200, cookie: [APP_COOKIES] }],
    ['/pub/c5', 'the session on a public path', { session: true, cookies: [`lang=fr; ${S}; theme=dark`] }, { status: 200, cookie: [APP_COOKIES] }],
    ['/admin/h1', 'X-Forwarded-Uri: /pub/ from the client', { session: false, cookies: [APP_COOKIES], extra: [['X-Forwarded-Uri', '/pub/']] }, { status: 500 }],
    ['/admin/h2', 'X-Original-URL: /pub/ from the client', { session: false, cookies: [APP_COOKIES], extra: [['X-Original-URL', '/pub/']] }, { status: 500 }],
    ['/admin/h3', 'X-Rewrite-URL: /pub/ from the client', { session: false, cookies: [APP_COOKIES], extra: [['X-Rewrite-URL', '/pub/']] }, { status: 500 }],
    ['/admin/h4', 'X-Original-URI: /pub/ from the client (nginx replaces it)', { session: false, cookies: [APP_COOKIES], extra: [['X-Original-URI', '/pub/']] }, { status: 401 }],
    ['/admin/h5', 'X-Forwarded-Uri: /pub/ from the client, with a session', { session: true, cookies: [`lang=fr; ${S}`], extra: [['X-Forwarded-Uri', '/pub/']] }, { status: 500 }],
  ];
  for (const [target, label, opts, want] of cases) {
    const { status, got, problems } = await send(target, opts);
    for (const p of problems) breaches.push(`${target} (${label}): ${p}`);
    if (status !== want.status) failures.push(`${target} (${label}): nginx answered ${status}, expected ${want.status}`);
    if (want.status !== 200) {
      if (got.length) failures.push(`${target} (${label}): the app was reached`);
      continue;
    }
    if (got.length !== 1) {
      failures.push(`${target} (${label}): the app got ${got.length} requests`);
      continue;
    }
    const appCookies = headerText(got[0], 'cookie');
    if (JSON.stringify(appCookies) !== JSON.stringify(want.cookie)) failures.push(`${target} (${label}): the app got Cookie ${JSON.stringify(appCookies)}, expected ${JSON.stringify(want.cookie)}`);
  }

  // Spellings of /admin that nginx routes to `location /` and passes as $request_uri: without a session the app
  // gets none of them (Passerelle decides them as /admin, 401, or refuses them, 500); with one, only with identity.
  const spellingsOfAdmin = ['//admin/x', '/pub/../admin/x', '/pub/./../admin/x', '/pub/%2e%2e/admin/x', '/pub/%2E%2E/admin/x',
    '/%61dmin/x', '/admin;x=1/y', '/admin/', '/admin', '/admin?', '/admin#x', '/pub/..%2fadmin/x', '/pub/..%5cadmin/x',
    '/pub\\..\\admin\\x', '/pub/%2e%2e%2fadmin/x', `http://${host}/admin/x`, 'http://other.example/admin/x', '/pub/..;/admin/x'];
  for (const target of spellingsOfAdmin) {
    for (const withSession of [false, true]) {
      const cookies = withSession ? [`lang=fr; passerelle=${W.session}`] : ['lang=fr'];
      const { status, got, problems } = await send(target, { session: withSession, cookies });
      const label = `${target}${withSession ? ' with a session' : ''}`;
      for (const p of problems) breaches.push(`${label}: ${p}`);
      if (!withSession && got.length) failures.push(`${label}: ${status}, the app got ${JSON.stringify(got.map((g) => show(g.target)))} without a session`);
      if (!withSession && ![401, 500, 400].includes(status)) failures.push(`${label}: nginx answered ${status}, expected 401, 500 or 400`);
    }
  }
  assert.deepEqual(
    [...breaches, ...failures].slice(0, 40),
    [],
    `${breaches.length} breaches (the app got /admin without identity, Passerelle's cookies or a spoofed identity) and `
      + `${failures.length} other problems (first 40 shown, breaches first)\n----- nginx -----\n${ngx.logs().slice(-1500)}`,
  );
});
