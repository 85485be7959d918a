// Path confusion, end to end: "the access decision is taken on exactly the path the upstream will receive … never a
// public-route match that reaches a protected path; query strings never take part in matching".
//
// One Passerelle, one recording upstream, a real provider. Two route tables:
//   - any host (127.0.0.1:PORT): `/public` (auth = "public") and `/admin` (auth = "required"); nothing at `/` (404);
//   - host `portal.test`: `/` (public, a landing app) and `/admin` (required): the usual shape of a legacy portal,
//     where a path that escapes `/admin` in Passerelle's eyes but not in the application's is served without login.
//
// A corpus of request targets is generated combinatorially (public prefix × traversal × separator × protected target,
// plus singles: `#`/`%23`, query tricks, absolute-form, NUL and control bytes, tab and space, long traversal chains,
// double encoding, mixed-case escapes, `;` path parameters) and sent on raw sockets, byte for byte (Node's http/fetch
// would normalise some of them), each on a connection of its own, with no session. Each request carries
// `X-Corpus-Id` (to find what the upstream got for it) and a spoofed `X-Auth-Sub` (never to be forwarded).
//
// Two oracles:
//   1. The safety property, independent of any model: never a 5xx; a 200 means exactly one request at the upstream,
//      whose path has no `//`, no `.`/`..` segment, no `\`, and which, read the way a servlet container reads it
//      (`;params` dropped, empty segments merged), is on a public route, never under `/admin`; any other answer means
//      nothing reached the upstream.
//   2. A model: Passerelle's normaliser (src/routes/path.rs) and route table (src/routes/mod.rs) ported to JS, after
//      what pingora does to a target before Passerelle sees it (fragment dropped; a request line httparse refuses —
//      controls, space — retried with those bytes %-escaped; absolute-form reduced to its path; targets the `http`
//      crate refuses answered with a bare 400). The answer must be the one the model predicts: 200 with exactly the
//      forwarded path and query the model computes, 401 for the protected route (API request; navigations: 302 to
//      login), 400 "Adresse invalide" for a refused path, 404 "Page introuvable" for no route, 400 (or a closed
//      connection) for what pingora refuses.
// Every other payload without query is sent again with a query made of path-looking text: the route, the answer and
// the forwarded path are the same. Protected-resolving payloads are sent again with a valid session: they reach the
// upstream on the normalised `/admin…` path with the identity headers.
//
// Needs target/release/passerelle (or $PASSERELLE_BIN). Run:
//   node --test --test-reporter=spec tests/integration/paths.test.mjs

import assert from 'node:assert/strict';
import { isUtf8 } from 'node:buffer';
import { test } from 'node:test';

import { assertLoginRedirect, identityLines } from '../support/checks.mjs';
import { stopAfter } from '../support/http.mjs';
import { launchPasserelle, outputName } from '../support/passerelle.mjs';
import { createPerson } from '../support/person.mjs';
import { ACCOUNTS, startProvider } from '../support/provider.mjs';
import { http1, openRaw } from '../support/raw-http.mjs';
import { addresses, configToml, PREFIX, providerToml, q } from '../support/stack.mjs';
import { headerValues, startUpstream } from '../support/upstream.mjs';

const { alice } = ACCOUNTS;
const TEST_TIMEOUT = { timeout: 300_000 };
const CONCURRENCY = 6; // connections in flight at once: loopback, but a loaded 2-core machine runs everything
const PORTAL = 'portal.test';
const SPOOFED_SUB = 'spoofed-by-the-client';

// ---------------------------------------------------------------------------------------------------------------
// Byte strings: every payload is a JS string of code units 0–255, one per byte (latin1), as http1() writes it.

const utf8 = (s) => Buffer.from(s, 'utf8').toString('latin1');
const bytes = (...b) => String.fromCharCode(...b);
/** A payload shown unambiguously: printable ASCII as is, every other byte as \xNN. */
const show = (s) => `"${s.replace(/[^\x21-\x7e]|\\|"/g, (c) => (c === '\\' || c === '"' ? `\\${c}` : `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`))}"`;
const showShort = (s) => (s.length > 160 ? `${show(s.slice(0, 100))}…(${s.length} bytes)…${show(s.slice(-40))}` : show(s));

// ---------------------------------------------------------------------------------------------------------------
// The model

const MAX_PATH = 8192; // src/routes/path.rs
const UNRESERVED = /^[A-Za-z0-9\-._~]$/;

/** src/routes/path.rs decode_unreserved: { out } or { error }. */
function decodeUnreserved(raw) {
  let out = '';
  for (let i = 0; i < raw.length;) {
    const b = raw.charCodeAt(i);
    if (b === 0x25) {
      const hex = raw.slice(i + 1, i + 3);
      // Rust's u8::from_str_radix also takes "+F": a one-digit value, a control byte, refused below anyway.
      if (hex.length < 2 || !/^(?:[0-9A-Fa-f]{2}|\+[0-9A-Fa-f])$/.test(hex)) return { error: 'BadEscape' };
      const v = parseInt(hex, 16);
      if (v === 0x2f || v === 0x5c || v === 0x25 || v <= 0x1f || v === 0x7f) return { error: 'AmbiguousEncoding' };
      const c = String.fromCharCode(v);
      out += UNRESERVED.test(c) ? c : `%${v.toString(16).toUpperCase().padStart(2, '0')}`;
      i += 3;
      continue;
    }
    if (b <= 0x20 || b >= 0x7f || b === 0x5c || b === 0x23) return { error: 'ForbiddenByte' };
    out += raw[i];
    i += 1;
  }
  return { out };
}

/** src/routes/path.rs normalise_path: { forward, matching } or { error }. */
function normalisePath(raw) {
  if (raw.length > MAX_PATH) return { error: 'TooLong' };
  if (!raw.startsWith('/')) return { error: 'NotAbsolute' };
  const { out: decoded, error } = decodeUnreserved(raw);
  if (error) return { error };
  const segments = [];
  const endsWithSlash = decoded.endsWith('/') || decoded.endsWith('/.') || decoded.endsWith('/..');
  for (const segment of decoded.split('/')) {
    const bare = segment.split(';')[0];
    if (bare === '' && segment === '') continue;
    if (bare === '') return { error: 'NamelessParameters' };
    if ((bare === '.' || bare === '..') && segment.length !== bare.length) return { error: 'DotSegmentParameters' };
    if (bare === '.') continue;
    if (bare === '..') {
      if (segments.pop() === undefined) return { error: 'AboveRoot' };
      continue;
    }
    segments.push(segment);
  }
  let forward = segments.map((s) => `/${s}`).join('');
  let matching = segments.map((s) => `/${s.split(';')[0]}`).join('');
  if (segments.length === 0 || endsWithSlash) {
    forward += '/';
    matching += '/';
  }
  return { forward, matching };
}

/** src/routes/mod.rs prefix_matches. */
function prefixMatches(prefix, path) {
  if (prefix === '/') return true;
  if (!path.startsWith(prefix)) return false;
  const rest = path.slice(prefix.length);
  return rest === '' || rest.startsWith('/');
}

// The route tables of the config below, in Passerelle's matching order (host-specific first, longest prefix first).
const ANY_HOST_ROUTES = [
  { prefix: '/admin', auth: 'required', name: 'admin' },
  { prefix: '/public', auth: 'public', name: 'public' },
];
const PORTAL_ROUTES = [
  { prefix: '/admin', auth: 'required', name: 'portal-admin' },
  { prefix: '/', auth: 'public', name: 'portal-root' },
  ...ANY_HOST_ROUTES,
];

function routeFor(routes, matching) {
  return routes.find((r) => prefixMatches(r.prefix, matching));
}

// What pingora does to a request target before Passerelle reads `uri.path()` and `uri.query()`.
const HTTPARSE_REFUSES = /[\x00-\x20\x7f]/; // httparse's URI token is 0x21–0x7E and 0x80–0xFF
const PINGORA_ESCAPES = /[\x00-\x20\x7f<>"\x80-\xff]/g; // percent_encode(CONTROLS + space < > "), then parsed again
const HTTP_PATH_REFUSES = /[\x00-\x20\x7f<>`]/; // the `http` crate's path map ('"', '{', '}', '\', '^', '|' pass)
const HTTP_QUERY_REFUSES = /[\x00-\x20\x7f<>"]/;

function transport(target, authority) {
  if (target.includes('\n')) return { error: 'a line feed ends the request line' };
  if (!isUtf8(Buffer.from(target, 'latin1'))) return { error: 'not UTF-8: pingora refuses it' };
  let t = target;
  if (HTTPARSE_REFUSES.test(t)) {
    t = t.replace(PINGORA_ESCAPES, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase().padStart(2, '0')}`);
  }
  const hash = t.indexOf('#');
  if (hash >= 0) t = t.slice(0, hash);
  let pq;
  if (t === '' || t.startsWith('/') || t === '*') {
    pq = t;
  } else if (t.startsWith('?')) {
    pq = `/${t}`;
  } else {
    const m = t.match(/^https?:\/\/([^/?#]*)(.*)$/i);
    if (m) {
      if (m[1] !== authority) return { error: 'absolute-form authority other than Host' };
      pq = m[2] === '' ? '/' : m[2].startsWith('?') ? `/${m[2]}` : m[2];
    } else {
      pq = '/'; // anything else reaches Passerelle as the root (pingora anchors it there)
    }
  }
  const qi = pq.indexOf('?');
  const path = qi < 0 ? pq : pq.slice(0, qi);
  const query = qi < 0 ? undefined : pq.slice(qi + 1);
  if (HTTP_PATH_REFUSES.test(path)) return { error: 'the http crate refuses a byte of the path' };
  if (query !== undefined && HTTP_QUERY_REFUSES.test(query)) return { error: 'the http crate refuses a byte of the query' };
  return { path, query };
}

/**
 * What Passerelle should answer for `target` sent with `Host: authority` to a world with `routes`:
 * { kind: 'transport' | 'refused' | 'none' | 'endpoint' | 'public' | 'protected', why, forward, query, route }.
 */
function predict(target, authority, routes) {
  const tr = transport(target, authority);
  if (tr.error) return { kind: 'transport', why: tr.error };
  const n = normalisePath(tr.path);
  if (n.error) return { kind: 'refused', why: n.error };
  const rest = n.matching.startsWith(PREFIX) ? n.matching.slice(PREFIX.length) : undefined;
  if (rest !== undefined && (rest === '' || rest.startsWith('/'))) return { kind: 'endpoint', why: n.matching };
  const route = routeFor(routes, n.matching);
  const forwarded = n.forward + (tr.query !== undefined ? `?${tr.query}` : '');
  if (!route) return { kind: 'none', why: n.matching, forwarded };
  return { kind: route.auth === 'public' ? 'public' : 'protected', why: n.matching, route: route.name, forwarded };
}

/** The path as a servlet container maps it: `;params` dropped from every segment, empty segments merged, dots resolved. */
function containerView(path) {
  const out = [];
  for (const segment of path.split('/')) {
    const bare = segment.split(';')[0];
    if (bare === '' || bare === '.') continue;
    if (bare === '..') out.pop();
    else out.push(bare);
  }
  return `/${out.join('/')}`;
}

// ---------------------------------------------------------------------------------------------------------------
// The corpus

const PUBLIC_PREFIXES = [
  '/public', '/public/', '/PUBLIC', '/public;x=1', '/public/.', '//public', '/./public', '/public/x', '/%70ublic',
  '/public//', '/public;jsessionid=ABC/x', '/Public/', '/public/%2e', '/pub%6cic',
];
const TRAVERSALS = [
  '..', '%2e%2e', '%2E%2E', '.%2e', '%2e.', '.%2E', '%2E%2e', '%252e%252e', '%252E%252E', '..;', '..;x', '.;', '%2e%2e;',
  '..%00', '..%2f', '..%2F', '..%5c', '..\\', '%c0%ae%c0%ae', '%C0%AE%C0%AE', utf8('\u2025'), '%e2%80%a5', '.%00.',
  '...', '.', '..%3b', '..%3B', '%u002e%u002e', '..%20', '.. ', '..\t', '%2e%2e%2f..', '..%ef%bc%8f',
  bytes(0xc0, 0xae, 0xc0, 0xae), '%%32%65%%32%65', '%2', '..%09', '..%0d', '..%23', '%2e', '.%2e.', utf8('\uff0e\uff0e'),
];
const SEPARATORS = ['/', '%2f', '%2F', '\\', '%5c', '%5C', '//', '/;/', '%252f', ';/', '/./', '%c0%af'];
const TARGETS = ['admin', 'admin/secret', 'ADMIN', '%61dmin', 'admin;jsessionid=x', '%41DMIN', 'admin/'];

function singles(authority) {
  const A = authority;
  const long = (n) => `/public/${'a/'.repeat(n)}${'../'.repeat(n + 1)}admin`;
  return [
    // `#` and `%23`
    '/public%23/../admin', '/public#/../admin', '/public/..#/admin', '/admin#/public', '/public/#/../../admin',
    '#/admin', '#', '/public%23%2f..%2fadmin', '/public/%23/../../admin', '/%23/../admin', '/public?#/../admin',
    // queries
    '/public?/../admin', '/admin?x=/public', '/public?x=%2f..%2fadmin', '/public?/admin', '/public/..?/admin',
    '/public%3f/../admin', '/public/%3f/../../admin', '/admin%3fx=/public', '/public%3F/%2e%2e/admin', '?x', '?/admin',
    '/public/x?a=..;/admin&b=/../admin', '/admin?', '/public?', '/public/?%2e%2e/admin',
    // absolute-form (same authority as Host, then another one)
    `http://${A}/public/../admin`, `http://${A}/public/%2e%2e/admin`, `http://${A}//public/x`, `HTTP://${A}/public/./x`,
    `http://${A}/public/..;/admin`, `http://${A}/public?/../admin`, `http://${A}`, `http://${A}?x=/admin`,
    `http://${A}/public#/../admin`, `https://${A}/public/../admin`, `http://${A}/public/..%2fadmin`, `http://${A}/;/admin`,
    `http://${A}/public/x`, `http://${A}/admin`, 'http://evil.test/public/../admin', `http://user@${A}/public/x`,
    '*', 'public', 'public/../admin', 'admin',
    // NUL and control bytes, raw
    '/public/\x00/../admin', '/public\x00/../admin', '/public/..\x00/admin', '/admin\x00', '/public/\x01../admin',
    '/public/\x7f/../admin', '/public/\r/../admin', '/public/\x0b/../admin', '/public/\x1b[0m/../admin',
    '/public/..\n/admin', '/public/\x0c', bytes(0x2f, 0x70, 0x75, 0x62, 0x6c, 0x69, 0x63, 0x2f, 0xff, 0x2f, 0x2e, 0x2e, 0x2f, 0x2e, 0x2e, 0x2f, 0x61, 0x64, 0x6d, 0x69, 0x6e),
    // tab and space inside the target
    '/public\t/../admin', '/public /../admin', '/public/.. /admin', '/public/ ../admin', '/pub lic/../admin',
    '/public/x /../../admin', '/public/\t..\t/admin', '/admin /../public', '/public/a b',
    // long traversal chains (the last ones around the 8192-byte limit of the normaliser)
    long(3), long(50), long(1000), long(1635), long(1636), `/public/${'../'.repeat(2)}admin`,
    `/public/${'../'.repeat(100)}admin`, `/public/${'./'.repeat(3000)}../admin`, `/public${'/'.repeat(5000)}../admin`,
    `/public/${'%2e%2e/'.repeat(1)}${'x/'.repeat(2000)}${'%2E%2e/'.repeat(2000)}admin`, `/public/${'.;/'.repeat(50)}admin`,
    `/public/${'x/'.repeat(20)}${'..%2f'.repeat(21)}admin`,
    // double and triple encoding, mixed case escapes
    '/public/%252e%252e/admin', '/public/%25252e%25252e/admin', '/public%252f..%252fadmin', '/public/%25%32%65%25%32%65/admin',
    '/public/%%32%65%%32%65/admin', '/public/%2%65/admin', '/public/%2E%2e/%61DMIN', '/public/%2e%2E/%61%64%6d%69%6e',
    '/%70%75%62%6C%69%63/%2E%2E/%41%44%4D%49%4E', '/%70ublic/%2e%2e/%61dmin/secret', '/public/%2e%2e%2F%61dmin',
    '/public/%2e%2e/%2561dmin', '/public/%+e%+e/admin', '/public/%zz/../admin', '/public/%/../admin',
    // `;` path parameters
    '/;/admin', '/;x=1/admin/secret', '//;/admin', '/public/../;/admin', '/;jsessionid=x/admin', '/.;/admin',
    '/;/;/admin', '/public/..;/admin', '/admin;x/..;/public', '/admin;x=/../public', '/public/x;/../../admin',
    '/public;/../admin', '/public/;x/../../admin', '/admin/..;/public', '/public/%3b/../admin', '/%3b/admin',
    '/public;a=/../admin', '/public;/admin', '/public/;/admin', '/admin;jsessionid=x', '/admin;/secret',
    // a traversal into Passerelle's own prefix
    `/public/..${PREFIX}/userinfo`, `/public/%2e%2e${PREFIX}/userinfo`,
    // plain references
    '/public', '/public/', '/public/x', '/admin', '/admin/', '/ADMIN', '/', '/x', '/publicity', '/administration',
  ];
}

/** The corpus for one Host: unique payloads, in a stable order. */
function corpus(authority) {
  const out = new Set();
  for (const prefix of PUBLIC_PREFIXES) {
    for (const trav of TRAVERSALS) {
      // every target behind the plain separator, then each separator with one target (rotating)
      TARGETS.forEach((target) => out.add(`${prefix}/${trav}/${target}`));
    }
  }
  let k = 0;
  for (const trav of TRAVERSALS) {
    for (const sep of SEPARATORS) {
      for (const prefix of ['/public', '/public/x', '//public']) {
        const target = TARGETS[k++ % TARGETS.length];
        out.add(`${prefix}${sep}${trav}${sep}${target}`);
        out.add(`${prefix}/${trav}${sep}${target}`);
      }
    }
  }
  for (const s of singles(authority)) out.add(s);
  return [...out];
}

// Queries appended to the payloads without one: path-looking text that must never change the route.
const QUERIES = ['/../admin', 'x=/public', 'x=%2f..%2fadmin', '', '..;/admin', 'next=/admin/secret&p=/public/..', '%2e%2e/admin'];

// ---------------------------------------------------------------------------------------------------------------
// Sending

let corpusSeq = 0;
const answers = new Map(); // X-Corpus-Id → status (null: closed)

/** Send one GET with this exact target on a fresh connection; resolves { id, response } (response null: closed). */
async function send(port, target, { host, extra = [] }) {
  const id = `c${++corpusSeq}`;
  const conn = await openRaw(port);
  try {
    conn.write(http1('GET', target, [['Host', host], ['X-Corpus-Id', id], ...extra, ['Connection', 'close']]));
    const response = await conn.response({ timeoutMs: 30_000 });
    answers.set(id, response ? response.status : null);
    return { id, response };
  } finally {
    conn.destroy();
  }
}

/** Run `fn` over `items`, `n` at a time, results in order. */
async function inPool(items, n, fn) {
  const results = new Array(items.length);
  let next = 0;
  await Promise.all(Array.from({ length: n }, async () => {
    while (next < items.length) {
      const i = next++;
      results[i] = await fn(items[i], i);
    }
  }));
  return results;
}

/** Upstream requests by X-Corpus-Id. */
function byCorpusId(upstream) {
  const map = new Map();
  for (const r of upstream.requests) {
    for (const id of headerValues(r.rawHeaders, 'X-Corpus-Id')) {
      if (!map.has(id)) map.set(id, []);
      map.get(id).push(r);
    }
  }
  return map;
}

/** What was observed, as a class: the per-class counts and the comparison with the model use it. */
function observedKind(res) {
  if (!res) return 'closed';
  if (res.status === 200) return 'public';
  if (res.status === 401 || res.status === 302) return 'protected';
  if (res.status === 404 && /Page introuvable/.test(res.text)) return 'none';
  if (res.status === 400 && /Adresse invalide/.test(res.text)) return 'refused';
  if (res.status === 400) return 'transport';
  return `status ${res.status}`;
}

/** Per-class counts of the payloads (without the query variants). */
function classes(run) {
  const c = run.counts;
  const known = ['refused', 'transport', 'closed', 'public', 'protected', 'none', 'endpoint'];
  const other = Object.entries(c).filter(([k]) => !known.includes(k)).map(([k, v]) => `, ${k} ${v}`).join('');
  return `refused 400 "Adresse invalide" ${c.refused || 0}, refused 400 by pingora ${c.transport || 0}, closed ${c.closed || 0}, `
    + `routed public ${c.public || 0}, routed protected ${c.protected || 0}, 404 ${c.none || 0}, Passerelle's own endpoints ${c.endpoint || 0}${other}`;
}

const describeRes = (res) => (res ? `${res.status} ${JSON.stringify(res.text.slice(0, 100))}` : 'connection closed without an answer');

/**
 * Every violation of the safety property and of the model for one payload sent without a session.
 * @returns {string[]}
 */
function violations(world, target, res, ups, prediction) {
  const out = [];
  const at = `${showShort(target)} (Host ${world.host})`;
  const seen = ups.map((r) => r.url);
  if (res && res.status >= 500) out.push(`${at}: server error ${describeRes(res)}`);
  if (res?.status === 200) {
    if (ups.length !== 1) out.push(`${at}: 200 but the upstream got ${ups.length} requests: ${JSON.stringify(seen)}`);
  } else if (ups.length !== 0) {
    out.push(`${at}: answered ${describeRes(res)} yet the upstream got ${JSON.stringify(seen)}`);
  }
  for (const r of ups) {
    const qi = r.url.indexOf('?');
    const path = qi < 0 ? r.url : r.url.slice(0, qi);
    const view = containerView(path);
    const viewRoute = routeFor(world.routes, view);
    if (!path.startsWith('/') || path.includes('//') || path.includes('\\') || path.includes('#')
      || path.split('/').some((s) => s === '.' || s === '..')) {
      out.push(`${at}: the upstream got a path that is not normalised: ${show(r.url)}`);
    }
    if (!viewRoute || viewRoute.auth !== 'public') {
      out.push(`${at}: PUBLIC MATCH REACHING A PROTECTED PATH: answered ${res?.status}, the upstream got ${show(r.url)}, which a servlet container maps to ${show(view)} (route ${viewRoute?.name ?? 'none'})`);
    }
    if (world.host !== PORTAL && !prefixMatches('/public', view)) {
      out.push(`${at}: the upstream got ${show(r.url)}: not on the public route /public (${show(view)})`);
    }
    if (prediction.kind === 'public' && r.url !== prediction.forwarded) {
      out.push(`${at}: FORWARDED DIFFERENTLY: the upstream got ${show(r.url)}, the normaliser gives ${show(prediction.forwarded)}`);
    }
    const spoof = identityLines(r.rawHeaders);
    if (spoof.length) out.push(`${at}: identity headers reached the upstream without a session: ${JSON.stringify(spoof)}`);
  }
  const got = observedKind(res);
  const expected = prediction.kind;
  const ok = {
    public: got === 'public',
    protected: res?.status === 401 && /authentication_required/.test(res.text) && res.headers.location === undefined,
    refused: got === 'refused',
    none: got === 'none',
    transport: got === 'transport' || got === 'closed' || got === 'refused',
    endpoint: res && res.status < 500 && ups.length === 0,
  }[expected];
  if (!ok) {
    out.push(`${at}: expected ${expected} (${prediction.why}${prediction.forwarded ? ` → ${show(prediction.forwarded)}` : ''}), got ${describeRes(res)}${seen.length ? `, upstream got ${JSON.stringify(seen)}` : ''}`);
  }
  return out;
}

/** Send a whole corpus to one host without a session; resolves { results, problems, counts }. */
async function runCorpus(world, targets) {
  // Every other origin- or absolute-form payload without query or fragment (`*` and the targets pingora anchors to the
  // root are neither: `*?` is not `*` with a query), again with a query.
  const withQuery = [];
  targets.forEach((target, i) => {
    if (i % 2 === 0 && /^(?:\/|https?:\/\/)/i.test(target) && !/[?#\n]/.test(target)) {
      withQuery.push({ base: target, target: `${target}?${QUERIES[(i / 2) % QUERIES.length]}` });
    }
  });
  const all = [...targets.map((target) => ({ target })), ...withQuery];
  const sent = await inPool(all, CONCURRENCY, ({ target }) => send(world.port, target, {
    host: world.host, extra: [['X-Auth-Sub', SPOOFED_SUB]],
  }));
  const ups = byCorpusId(world.upstream);
  const problems = [];
  const results = new Map();
  all.forEach(({ target }, i) => {
    const { id, response } = sent[i];
    const prediction = predict(target, world.host, world.routes);
    const got = ups.get(id) || [];
    problems.push(...violations(world, target, response, got, prediction));
    results.set(target, { response, ups: got, prediction, kind: prediction.kind === 'endpoint' ? 'endpoint' : observedKind(response) });
  });
  // A query never changes the route, the answer or the forwarded path.
  for (const { base, target } of withQuery) {
    const a = results.get(base);
    const b = results.get(target);
    if (a.kind === 'transport' || a.kind === 'closed') continue; // the query adds nothing to a refused request line
    if (a.kind !== b.kind || a.response?.status !== b.response?.status) {
      problems.push(`QUERY CHANGED THE ANSWER (Host ${world.host}): ${showShort(base)} → ${describeRes(a.response)}; ${showShort(target)} → ${describeRes(b.response)}`);
    } else if (a.kind === 'public') {
      const pathOf = (r) => r.ups[0]?.url.split('?')[0];
      if (pathOf(a) !== pathOf(b)) {
        problems.push(`QUERY CHANGED THE FORWARDED PATH (Host ${world.host}): ${showShort(base)} → ${a.ups[0]?.url}; ${showShort(target)} → ${b.ups[0]?.url}`);
      }
    }
  }
  const counts = {};
  for (const target of targets) {
    const { kind } = results.get(target);
    counts[kind] = (counts[kind] || 0) + 1;
  }
  // Not a property of Passerelle (routing is case-sensitive, as on the servlet containers and Linux servers behind it),
  // but worth knowing for case-insensitive upstreams (IIS): answers forwarded on a path that folds to /admin.
  const caseFolded = targets.filter((target) => results.get(target).kind === 'public'
    && results.get(target).ups.some((u) => prefixMatches('/admin', containerView(u.url.split('?')[0]).toLowerCase())));
  return { results, problems, counts, caseFolded, sent: all.length, withQuery: withQuery.length };
}

// ---------------------------------------------------------------------------------------------------------------

test('paths: a path-confusion corpus on raw sockets never lets a public match reach a protected path, queries never route', TEST_TIMEOUT, async (t) => {
  const { port, adminPort, base, redirectUris, postLogoutRedirectUris } = await addresses();
  const op = await stopAfter(t, startProvider({ redirectUris, postLogoutRedirectUris }));
  const upstream = await stopAfter(t, startUpstream());
  const route = (path, auth, host) => `[[route]]
${host ? `host = ${q(host)}\n` : ''}path = ${q(path)}
upstream = ${q(upstream.url)}
auth = ${q(auth)}
${auth === 'required' ? `providers = ["op"]
scopes = ["email", "profile"]
[route.headers]
"X-Auth-Sub" = "sub"
"X-Auth-Email" = "email"
` : ''}`;
  const toml = configToml({
    writtenBy: 'tests/integration/paths.test.mjs',
    port,
    adminPort,
    providers: providerToml('op', 'oidc', op, { auth_method: 'client_secret_basic', scopes: ['openid', 'email', 'profile'] }),
    routes: [route('/public', 'public'), route('/admin', 'required'), route('/', 'public', PORTAL), route('/admin', 'required', PORTAL)],
  });
  const passerelle = await launchPasserelle(t, toml, { adminPort, logName: outputName(t, { max: 110 }) });
  const main = { port, host: `127.0.0.1:${port}`, routes: ANY_HOST_ROUTES, upstream };
  const portal = { port, host: PORTAL, routes: PORTAL_ROUTES, upstream };

  const payloads = corpus(main.host);
  let mainRun;

  await t.test('the model agrees with the normaliser\'s own unit tests (src/routes/path.rs)', () => {
    const fwd = (p) => normalisePath(p).forward;
    assert.equal(fwd('//admin'), '/admin');
    assert.equal(fwd('/public/.%2E/admin'), '/admin');
    assert.equal(fwd('/a/./b/.'), '/a/b/');
    assert.equal(fwd('/a/b/..'), '/a/');
    assert.equal(fwd('/caf%c3%a9'), '/caf%C3%A9');
    assert.deepEqual(normalisePath('/admin;jsessionid=ABC/page'), { forward: '/admin;jsessionid=ABC/page', matching: '/admin/page' });
    for (const [p, e] of [['/a%2fb', 'AmbiguousEncoding'], ['/a%252e%252e/', 'AmbiguousEncoding'], ['/a\\b', 'ForbiddenByte'],
      ['/a#b', 'ForbiddenByte'], ['/a%zz', 'BadEscape'], ['/a%2', 'BadEscape'], ['/a/../..', 'AboveRoot'], ['a/b', 'NotAbsolute'],
      ['/public/..;x/admin', 'DotSegmentParameters'], ['/;/admin', 'NamelessParameters'], ['/;x=1/admin', 'NamelessParameters'],
      ['//;/admin', 'NamelessParameters'], ['/public/../;/admin', 'NamelessParameters'], ['/a/;', 'NamelessParameters']]) {
      assert.equal(normalisePath(p).error, e, p);
    }
  });

  await t.test('the corpus: at least 400 distinct payloads, every one built from bytes (no client normalisation)', () => {
    assert.equal(new Set(payloads).size, payloads.length, 'payloads are deduplicated');
    assert.ok(payloads.length >= 400, `corpus size ${payloads.length}`);
    t.diagnostic(`corpus: ${payloads.length} distinct payloads per host (and every other one again with a path-looking query)`);
  });

  await t.test('without a session, /public and /admin on any host: the safety property and the model, payload by payload', async (st) => {
    const started = Date.now();
    mainRun = await runCorpus(main, payloads);
    st.diagnostic(`${mainRun.sent} requests (${mainRun.withQuery} with a query) in ${Date.now() - started} ms`);
    t.diagnostic(`any host: ${classes(mainRun)}`);
    assert.deepEqual(mainRun.problems, [], `${mainRun.problems.length} violations:\n${mainRun.problems.slice(0, 80).join('\n')}`);
    for (const kind of ['public', 'protected', 'refused', 'none']) {
      assert.ok((mainRun.counts[kind] || 0) > 0, `the corpus exercises the class ${kind}`);
    }
  });

  await t.test(`without a session, host ${PORTAL} (public "/", required "/admin"): the same corpus`, async (st) => {
    const started = Date.now();
    const run = await runCorpus(portal, corpus(portal.host));
    st.diagnostic(`${run.sent} requests (${run.withQuery} with a query) in ${Date.now() - started} ms`);
    t.diagnostic(`${PORTAL}: ${classes(run)}`);
    if (run.caseFolded.length) {
      t.diagnostic(`${PORTAL}: ${run.caseFolded.length} payloads served by the public root on a path a case-insensitive upstream would read as /admin, e.g. ${run.caseFolded.slice(0, 3).map(show).join(', ')}`);
    }
    assert.deepEqual(run.problems, [], `${run.problems.length} violations:\n${run.problems.slice(0, 80).join('\n')}`);
  });

  await t.test('navigations to protected-resolving payloads without a session: 302 to login, nothing at the upstream', async () => {
    assert.ok(mainRun, 'the corpus ran');
    const protectedOnes = [...mainRun.results].filter(([target, r]) => r.prediction.kind === 'protected' && !/[?#]/.test(target) && r.kind === 'protected');
    const picked = protectedOnes.filter((_, i) => i % Math.max(1, Math.floor(protectedOnes.length / 12)) === 0).slice(0, 12).map(([target]) => target);
    assert.ok(picked.length >= 8, `protected-resolving payloads: ${protectedOnes.length}`);
    const nav = [['Accept', 'text/html,application/xhtml+xml'], ['Sec-Fetch-Mode', 'navigate'], ['Sec-Fetch-Dest', 'document']];
    const sent = await inPool(picked, CONCURRENCY, (target) => send(port, target, { host: main.host, extra: nav }));
    const ups = byCorpusId(upstream);
    picked.forEach((target, i) => {
      const { id, response } = sent[i];
      assert.ok(response, `${show(target)}: closed without an answer`);
      assertLoginRedirect({ status: response.status, location: response.headers.location && new URL(response.headers.location, base).href, body: response.text },
        { op, base }, show(target));
      assert.deepEqual((ups.get(id) || []).map((r) => r.url), [], `${show(target)}: nothing reaches the upstream`);
    });
  });

  await t.test('with a valid session, protected-resolving payloads reach the upstream on the normalised /admin path, with identity', async () => {
    assert.ok(mainRun, 'the corpus ran');
    const person = createPerson();
    const login = await person.login(`${base}/admin/after-login`, 'alice');
    assert.equal(login.status, 200, `login: ${login.status} ${login.body.slice(0, 300)}`);
    const cookie = person.jar.header(`${base}/admin`);
    assert.match(cookie, /passerelle=/, 'a session cookie after login');
    const protectedOnes = [...mainRun.results].filter(([, r]) => r.prediction.kind === 'protected' && r.kind === 'protected');
    const step = Math.max(1, Math.floor(protectedOnes.length / 16));
    const picked = protectedOnes.filter((_, i) => i % step === 0).slice(0, 16).map(([target]) => target);
    for (const extra of ['/public/%2e%2e/admin/secret;jsessionid=x?y=/public', `http://${main.host}/public/../admin/x`]) picked.push(extra);
    const sent = await inPool(picked, CONCURRENCY, (target) => send(port, target, {
      host: main.host, extra: [['Cookie', cookie], ['X-Auth-Sub', SPOOFED_SUB]],
    }));
    const ups = byCorpusId(upstream);
    picked.forEach((target, i) => {
      const { id, response } = sent[i];
      const prediction = predict(target, main.host, main.routes);
      assert.equal(prediction.kind, 'protected', `${show(target)} resolves to the protected route`);
      assert.equal(response?.status, 200, `${show(target)} with a session: ${describeRes(response)}`);
      const got = ups.get(id) || [];
      assert.equal(got.length, 1, `${show(target)}: one request at the upstream, got ${JSON.stringify(got.map((r) => r.url))}`);
      assert.equal(got[0].url, prediction.forwarded, `${show(target)}: forwarded on the normalised path`);
      assert.ok(prefixMatches('/admin', containerView(got[0].url.split('?')[0])), `${show(target)}: ${got[0].url} is under /admin`);
      assert.deepEqual(headerValues(got[0].rawHeaders, 'X-Auth-Sub'), [alice.sub], `${show(target)}: X-Auth-Sub is the session's, once`);
      assert.deepEqual(headerValues(got[0].rawHeaders, 'X-Auth-Email'), [alice.email], `${show(target)}: X-Auth-Email`);
    });
  });

  await t.test('after all of it: every upstream request is accounted for, Passerelle is up', async () => {
    assert.equal(passerelle.exited(), null, `Passerelle exited:\n${passerelle.logs().slice(-2000)}`);
    // Every request the upstream ever got is one Passerelle answered 200 for, or the landing after login.
    const unaccounted = upstream.requests.filter((r) => {
      const ids = headerValues(r.rawHeaders, 'X-Corpus-Id');
      if (ids.length === 0) return r.url !== '/admin/after-login';
      return ids.length !== 1 || answers.get(ids[0]) !== 200;
    }).map((r) => `${r.url} (${headerValues(r.rawHeaders, 'X-Corpus-Id')} answered ${headerValues(r.rawHeaders, 'X-Corpus-Id').map((i) => answers.get(i))})`);
    assert.deepEqual(unaccounted, [], 'upstream requests that no 200 accounts for');
    const res = await send(port, '/public/alive', { host: main.host });
    assert.equal(res.response?.status, 200, describeRes(res.response));
    assert.ok(!/panicked|panic/i.test(passerelle.logs()), `a panic in Passerelle's output:\n${passerelle.logs().split('\n').filter((l) => /panic/i.test(l)).slice(0, 5).join('\n')}`);
  });
});

test('paths: windows_paths = true (IIS, ASP.NET upstreams): every spelling of a protected prefix is protected, Windows-only spellings route nowhere', TEST_TIMEOUT, async (t) => {
  const { port, adminPort, base, redirectUris, postLogoutRedirectUris } = await addresses();
  const op = await stopAfter(t, startProvider({ redirectUris, postLogoutRedirectUris }));
  const upstream = await stopAfter(t, startUpstream());
  const toml = configToml({
    writtenBy: 'tests/integration/paths.test.mjs',
    port,
    adminPort,
    extraServer: 'windows_paths = true',
    providers: providerToml('op', 'oidc', op, { auth_method: 'client_secret_basic', scopes: ['openid', 'email', 'profile'] }),
    routes: [`[[route]]
path = "/"
upstream = ${q(upstream.url)}
auth = "public"
`, `[[route]]
path = "/Admin"
upstream = ${q(upstream.url)}
providers = ["op"]
scopes = ["email"]
[route.headers]
"X-Auth-Sub" = "sub"
`],
  });
  await launchPasserelle(t, toml, { adminPort, logName: outputName(t, { max: 110 }) });
  // What an IIS application reads as /admin, however it is spelt; `%41` is an unreserved escape, decoded to `A`.
  const spellings = ['/admin', '/ADMIN', '/Admin/users', '/aDmIn/secret', '/public/../ADMIN/x', '/%41DMIN/x', '/admin;x=1/y'];
  const person = createPerson();
  for (const path of spellings) {
    const res = await person.api(`${base}${path}`);
    assert.equal(res.status, 401, `${path} without a session: ${res.status}`);
  }
  assert.deepEqual(upstream.requests.map((r) => r.url), [], 'nothing reached the upstream without a session');
  // Names Windows resolves to another one (trailing dot or space, alternate data stream, 8.3 short name) match no
  // route at all: a 404 page, nothing forwarded, whatever route their spelling would otherwise fall to.
  for (const path of ['/admin./x', '/ADMIN%20/x', '/admin::$DATA', '/ADMINI~1/x', '/public.', '/docs/report.pdf.']) {
    const res = await person.api(`${base}${path}`);
    assert.equal(res.status, 404, `${path}: ${res.status}`);
  }
  assert.deepEqual(upstream.requests.map((r) => r.url), [], 'nothing reached the upstream for Windows-ambiguous spellings');
  // Other paths stay public, and the prefix still ends on a segment boundary.
  for (const path of ['/ADMINISTRATION', '/adm', '/']) {
    const res = await person.api(`${base}${path}`);
    assert.equal(res.status, 200, `${path} is public: ${res.status}`);
    assert.deepEqual(identityLines(upstream.last().rawHeaders), [], `${path}: no identity on a public route`);
  }
  const login = await person.login(`${base}/admin/start`, 'alice');
  assert.equal(login.status, 200, `login: ${login.status}`);
  for (const path of spellings) {
    const res = await person.api(`${base}${path}`);
    assert.equal(res.status, 200, `${path} with a session: ${res.status}`);
    assert.deepEqual(headerValues(upstream.last().rawHeaders, 'X-Auth-Sub'), [alice.sub], `${path}: the identity is forwarded`);
  }
});
