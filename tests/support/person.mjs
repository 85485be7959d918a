// A scripted person with a browser-like cookie jar, following redirects by hand, and able to fill in the
// provider's forms (oidc-provider devInteractions login, consent, logout confirmation, auto-submitted forms).
//
// Requests go through node:http directly (not fetch) so that a test controls the exact header lines sent:
// case, duplicates and names such as `X_Auth_Sub` reach the server as written.
//
//   const person = createPerson();
//   const res = await person.login(`${base}/app?x=1`, 'alice');   // final response, res.history = every hop
//   const api = await person.api(`${base}/app`);                     // non-navigation request, no redirect following
//   person.jar.get(base, 'passerelle')                               // a cookie, or undefined
//
// Cookies are keyed by host name only (not port), like browsers do: 127.0.0.1:PASSERELLE and 127.0.0.1:PROVIDER
// share one jar, so cookie names must not collide (they don't: oidc-provider uses `_session`, `_interaction`…).
// Path, Max-Age and Expires are honoured; Domain, Secure and SameSite are recorded but not enforced (every
// request here is same-site http on 127.0.0.1).

import http from 'node:http';
import http2 from 'node:http2';
import https from 'node:https';

const NAVIGATION_HEADERS = [
  ['Accept', 'text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8'],
  ['Accept-Language', 'fr-FR,fr;q=0.9'],
  ['Sec-Fetch-Mode', 'navigate'],
  ['Sec-Fetch-Dest', 'document'],
  ['Upgrade-Insecure-Requests', '1'],
];
const API_HEADERS = [
  ['Accept', 'application/json'],
  ['Sec-Fetch-Mode', 'cors'],
  ['Sec-Fetch-Dest', 'empty'],
];
const USER_AGENT = 'passerelle-integration-tests (scripted person)';

// ---------------------------------------------------------------------------------------------------------------
// Cookie jar (RFC 6265 subset)

function defaultPath(pathname) {
  if (!pathname.startsWith('/')) return '/';
  const i = pathname.lastIndexOf('/');
  return i <= 0 ? '/' : pathname.slice(0, i);
}

function pathMatches(requestPath, cookiePath) {
  if (requestPath === cookiePath) return true;
  if (!requestPath.startsWith(cookiePath)) return false;
  return cookiePath.endsWith('/') || requestPath[cookiePath.length] === '/';
}

/** Parse one Set-Cookie header value. */
export function parseSetCookie(header) {
  const parts = header.split(';');
  const first = parts.shift();
  const eq = first.indexOf('=');
  if (eq < 0) return undefined;
  const cookie = {
    name: first.slice(0, eq).trim(),
    value: first.slice(eq + 1).trim(),
    attributes: {},
    raw: header,
  };
  for (const part of parts) {
    const i = part.indexOf('=');
    const key = (i < 0 ? part : part.slice(0, i)).trim().toLowerCase();
    const val = i < 0 ? '' : part.slice(i + 1).trim();
    if (key) cookie.attributes[key] = val;
  }
  return cookie;
}

export class CookieJar {
  constructor() {
    /** @type {Map<string, Map<string, object>>} host -> "path\0name" -> cookie */
    this.hosts = new Map();
  }

  #host(host) {
    if (!this.hosts.has(host)) this.hosts.set(host, new Map());
    return this.hosts.get(host);
  }

  /** Store the Set-Cookie headers of a response to `url`. */
  store(url, setCookieHeaders) {
    const u = new URL(url);
    for (const header of setCookieHeaders) {
      const parsed = parseSetCookie(header);
      if (!parsed || !parsed.name) continue;
      const a = parsed.attributes;
      const path = a.path && a.path.startsWith('/') ? a.path : defaultPath(u.pathname);
      let expires;
      if ('max-age' in a && /^-?\d+$/.test(a['max-age'])) {
        const seconds = Number(a['max-age']);
        expires = seconds <= 0 ? 0 : Date.now() + seconds * 1000;
      } else if ('expires' in a) {
        const t = Date.parse(a.expires);
        if (!Number.isNaN(t)) expires = t;
      }
      const jar = this.#host(u.hostname);
      const key = `${path}\0${parsed.name}`;
      if (expires !== undefined && expires <= Date.now()) {
        jar.delete(key);
        continue;
      }
      jar.set(key, {
        name: parsed.name,
        value: parsed.value,
        path,
        expires,
        httpOnly: 'httponly' in a,
        secure: 'secure' in a,
        sameSite: a.samesite,
        raw: header,
      });
    }
  }

  #live(host) {
    const jar = this.#host(host);
    const now = Date.now();
    for (const [key, c] of jar) if (c.expires !== undefined && c.expires <= now) jar.delete(key);
    return jar;
  }

  /** Cookies a request to `url` carries, longest path first (RFC 6265 §5.4). */
  cookiesFor(url) {
    const u = new URL(url);
    return [...this.#live(u.hostname).values()]
      .filter((c) => pathMatches(u.pathname, c.path))
      .sort((x, y) => y.path.length - x.path.length);
  }

  header(url) {
    return this.cookiesFor(url).map((c) => `${c.name}=${c.value}`).join('; ');
  }

  /** Every live cookie of the host of `url` (any path). */
  all(url) {
    return [...this.#live(new URL(url).hostname).values()];
  }

  /** The cookie named `name` on the host of `url` (any path; the longest path if several). */
  get(url, name) {
    return this.all(url).filter((c) => c.name === name).sort((x, y) => y.path.length - x.path.length)[0];
  }

  /** Set (or overwrite) a cookie by hand, e.g. to tamper with it. Keeps the existing cookie's path if any. */
  set(url, name, value, { path } = {}) {
    const existing = this.get(url, name);
    const p = path ?? existing?.path ?? '/';
    const jar = this.#host(new URL(url).hostname);
    jar.set(`${p}\0${name}`, { ...(existing || {}), name, value, path: p, expires: existing?.expires });
  }

  delete(url, name) {
    const jar = this.#host(new URL(url).hostname);
    for (const [key, c] of jar) if (c.name === name) jar.delete(key);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// HTML forms (just enough for oidc-provider's pages)

const ENTITIES = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'", '#39': "'" };
export function decodeEntities(s) {
  return s.replace(/&(#x[0-9a-f]+|#\d+|[a-z]+);/gi, (m, e) => {
    if (e[0] === '#') {
      const code = e[1] === 'x' || e[1] === 'X' ? parseInt(e.slice(2), 16) : parseInt(e.slice(1), 10);
      return String.fromCodePoint(code);
    }
    return ENTITIES[e.toLowerCase()] ?? m;
  });
}

function parseAttributes(tag) {
  const attrs = {};
  const inner = tag.replace(/^<\s*[a-z0-9]+/i, '').replace(/\/?>$/, '');
  const re = /([^\s=/>]+)(?:\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>]+)))?/g;
  let m;
  while ((m = re.exec(inner))) {
    attrs[m[1].toLowerCase()] = decodeEntities(m[2] ?? m[3] ?? m[4] ?? '');
  }
  return attrs;
}

/** The forms of an HTML page: [{ id, action, method, inputs: [{name, value, type}], buttons: [...] }]. */
export function parseForms(html, baseUrl) {
  const forms = [];
  const formRe = /<form\b[^>]*>([\s\S]*?)<\/form>/gi;
  let m;
  while ((m = formRe.exec(html))) {
    const attrs = parseAttributes(m[0].match(/^<form\b[^>]*>/i)[0]);
    const inner = m[1];
    const inputs = [...inner.matchAll(/<input\b[^>]*>/gi)].map((x) => parseAttributes(x[0]))
      .filter((a) => a.name)
      .map((a) => ({ name: a.name, value: a.value ?? '', type: (a.type || 'text').toLowerCase() }));
    const buttons = [...inner.matchAll(/<button\b[^>]*>/gi)].map((x) => parseAttributes(x[0]));
    forms.push({
      id: attrs.id,
      action: new URL(attrs.action || baseUrl, baseUrl).href,
      method: (attrs.method || 'get').toUpperCase(),
      inputs,
      buttons,
      autoSubmit: false,
    });
  }
  // Buttons outside the form that point at it with form="id" (oidc-provider's logout page does this).
  for (const x of html.matchAll(/<button\b[^>]*>/gi)) {
    const a = parseAttributes(x[0]);
    if (a.form) {
      const form = forms.find((f) => f.id === a.form);
      if (form) form.buttons.push(a);
    }
  }
  if (/document\.forms\[0\]\.submit\(\)/.test(html) && forms[0]) forms[0].autoSubmit = true;
  return forms;
}

// ---------------------------------------------------------------------------------------------------------------
// The person

function toPairs(headers) {
  if (!headers) return [];
  if (Array.isArray(headers)) return headers.map(([k, v]) => [k, String(v)]);
  return Object.entries(headers).map(([k, v]) => [k, String(v)]);
}

function isRedirect(status) {
  return [301, 302, 303, 307, 308].includes(status);
}

/**
 * `tls`: for https URLs, `{ ca, protocol }` — the CA to trust, and 'h2' (one HTTP/2 connection per origin, reused as a
 * browser does; `person.close()` ends them) or 'http/1.1'. http URLs always go over node:http, and so do https ones
 * without `tls`.
 */
export function createPerson({ name = 'person', tls } = {}) {
  const jar = new CookieJar();
  const h2Sessions = new Map(); // origin -> ClientHttp2Session

  function h2Session(origin) {
    let session = h2Sessions.get(origin);
    if (!session || session.closed || session.destroyed) {
      session = http2.connect(origin, { ca: tls?.ca });
      session.on('error', () => {});
      h2Sessions.set(origin, session);
    }
    return session;
  }

  /** One HTTP/2 request: `pairs` become regular fields (lower-cased, order and repeats kept); Host stays a field if given. */
  function h2Exchange(u, method, pairs, payload, timeoutMs) {
    const raw = [':method', method, ':path', `${u.pathname}${u.search}`, ':scheme', 'https', ':authority', u.host];
    for (const [k, v] of pairs) {
      // Connection-specific fields do not exist in HTTP/2 (RFC 9113 §8.2.2).
      if (['connection', 'keep-alive', 'transfer-encoding', 'upgrade'].includes(k.toLowerCase())) continue;
      raw.push(k.toLowerCase(), v);
    }
    return new Promise((resolve, reject) => {
      const stream = h2Session(u.origin).request(raw, { endStream: payload === undefined });
      const timer = setTimeout(() => stream.close(http2.constants.NGHTTP2_CANCEL), timeoutMs);
      let head;
      const chunks = [];
      stream.on('response', (h) => { head = h; });
      stream.on('data', (c) => chunks.push(c));
      stream.on('error', (e) => { clearTimeout(timer); reject(e); });
      stream.on('close', () => {
        clearTimeout(timer);
        if (!head) {
          reject(new Error(`${name}: ${method} ${u.href} over h2: stream closed without a response (code ${stream.rstCode})`));
          return;
        }
        const rawHeaders = [];
        for (const [k, v] of Object.entries(head)) {
          if (k.startsWith(':')) continue;
          for (const one of [].concat(v)) rawHeaders.push(k, String(one));
        }
        resolve({ statusCode: head[':status'], rawHeaders, body: Buffer.concat(chunks), httpVersion: '2.0' });
      });
      if (payload !== undefined) stream.end(payload);
    });
  }

  /** One HTTP/1.1 request (http or https). */
  function h1Exchange(u, method, pairs, payload, timeoutMs) {
    return new Promise((resolve, reject) => {
      // Without `tls`, an https URL goes over plain HTTP to its host and port: scenarios with a TLS-terminating
      // stand-in in front of Passerelle rely on it.
      const secure = u.protocol === 'https:' && Boolean(tls);
      const req = (secure ? https : http).request({
        host: u.hostname,
        port: u.port,
        path: `${u.pathname}${u.search}`,
        method,
        agent: false,
        headers: pairs.flat(),
        timeout: timeoutMs,
        ...(secure ? { ca: tls?.ca, ALPNProtocols: ['http/1.1'] } : {}),
      }, (res) => {
        const chunks = [];
        res.on('data', (c) => chunks.push(c));
        res.on('error', reject);
        res.on('end', () => resolve({
          statusCode: res.statusCode, rawHeaders: res.rawHeaders, body: Buffer.concat(chunks), httpVersion: res.httpVersion,
        }));
      });
      req.on('timeout', () => req.destroy(new Error(`${name}: ${method} ${u.href} timed out after ${timeoutMs} ms`)));
      req.on('error', reject);
      req.end(payload);
    });
  }

  /**
   * One HTTP request, no redirect following. Cookies from the jar are sent and Set-Cookie stored.
   * opts.headers: object or array of [name, value] pairs (sent as is, in order, after the defaults)
   * opts.navigate: add browser navigation headers (Accept: text/html, Sec-Fetch-Mode: navigate)
   * opts.cookies: false to send no Cookie header
   */
  function request(url, opts = {}) {
    const { method = 'GET', headers, body, navigate = false, cookies = true, timeoutMs = 10000, site = 'none' } = opts;
    const u = new URL(url);
    if (u.hostname !== '127.0.0.1' && u.hostname !== 'localhost') {
      return Promise.reject(new Error(`${name}: refusing to leave the loopback: ${url}`));
    }
    const pairs = [['Host', u.host], ['User-Agent', USER_AGENT]];
    if (navigate) pairs.push(...NAVIGATION_HEADERS, ['Sec-Fetch-Site', site], ['Sec-Fetch-User', '?1']);
    const extra = toPairs(headers);
    // Explicit headers override defaults of the same name (case-insensitive) but keep duplicates among themselves.
    const overridden = new Set(extra.map(([k]) => k.toLowerCase()));
    const all = pairs.filter(([k]) => !overridden.has(k.toLowerCase())).concat(extra);
    const cookieHeader = cookies ? jar.header(url) : '';
    if (cookieHeader && !overridden.has('cookie')) all.push(['Cookie', cookieHeader]);
    let payload;
    if (body !== undefined) {
      payload = Buffer.isBuffer(body) ? body : Buffer.from(String(body));
      if (!overridden.has('content-length')) all.push(['Content-Length', String(payload.length)]);
    }
    const sent = all.map(([k, v]) => [k, v]);

    const h2 = u.protocol === 'https:' && tls?.protocol === 'h2';
    const exchange = h2
      ? h2Exchange(u, method, all.filter(([k]) => !(k === 'Host' && !overridden.has('host'))), payload, timeoutMs)
      : h1Exchange(u, method, all, payload, timeoutMs);
    return exchange.then((res) => {
      const setCookies = [];
      const headersObj = {};
      for (let i = 0; i < res.rawHeaders.length; i += 2) {
        const k = res.rawHeaders[i].toLowerCase();
        const v = res.rawHeaders[i + 1];
        if (k === 'set-cookie') setCookies.push(v);
        headersObj[k] = k in headersObj ? `${headersObj[k]}, ${v}` : v;
      }
      jar.store(url, setCookies);
      const location = headersObj.location !== undefined ? new URL(headersObj.location, url).href : undefined;
      return {
        url,
        method,
        status: res.statusCode,
        httpVersion: res.httpVersion,
        headers: headersObj,
        rawHeaders: res.rawHeaders,
        setCookies: setCookies.map(parseSetCookie).filter(Boolean),
        location,
        body: res.body.toString('utf8'),
        sentHeaders: sent,
      };
    });
  }

  /**
   * A navigation: request and follow redirects by hand. Returns the final response with `history`
   * (every response, final one included). opts.rewrite(url) may change a redirect target before it is
   * followed (to tamper with a callback, say). opts.headers are sent on the first request only.
   */
  async function navigate(url, opts = {}) {
    const { method = 'GET', headers, body, rewrite, maxRedirects = 20, navigate: nav = true, from } = opts;
    const history = [];
    // Sec-Fetch-Site as a browser computes it: 'none' when typed, else same-origin / same-site over the chain
    // (127.0.0.1 on different ports is same-site).
    const chain = from ? [from] : [];
    const site = (target) => {
      if (!chain.length) return 'none';
      const o = new URL(target).origin;
      return chain.every((c) => new URL(c).origin === o) ? 'same-origin' : 'same-site';
    };
    let res = await request(url, { method, headers, body, navigate: nav, site: site(url) });
    chain.push(url);
    history.push(res);
    let hops = 0;
    while (isRedirect(res.status) && res.location) {
      if (++hops > maxRedirects) throw new Error(`${name}: too many redirects from ${url}`);
      const target = rewrite ? rewrite(res.location) ?? res.location : res.location;
      const keepMethod = (res.status === 307 || res.status === 308) && res.method !== 'GET';
      res = await request(target, keepMethod
        ? { method: res.method, body, navigate: nav, site: site(target) }
        : { method: 'GET', navigate: nav, site: site(target) });
      chain.push(target);
      history.push(res);
    }
    res.history = history;
    return res;
  }

  /** Submit a form of `page` (a response) and follow redirects. fields override the form's values. */
  async function submitForm(page, { form: which, fields = {}, button, rewrite } = {}) {
    const forms = parseForms(page.body, page.url);
    const form = typeof which === 'function' ? forms.find(which) : forms[which ?? 0];
    if (!form) throw new Error(`${name}: no form to submit on ${page.url} (status ${page.status}):\n${page.body.slice(0, 2000)}`);
    const params = new URLSearchParams();
    for (const input of form.inputs) {
      if (['submit', 'button', 'image', 'reset'].includes(input.type)) continue;
      params.append(input.name, input.name in fields ? fields[input.name] : input.value);
    }
    for (const [k, v] of Object.entries(fields)) if (!form.inputs.some((i) => i.name === k)) params.append(k, v);
    const btn = button ? form.buttons.find(button) : undefined;
    if (btn?.name) params.append(btn.name, btn.value ?? '');
    if (form.method === 'GET') {
      const target = new URL(form.action);
      target.search = params.toString();
      return navigate(target.href, { rewrite, from: page.url });
    }
    return navigate(form.action, {
      from: page.url,
      method: 'POST',
      headers: [['Content-Type', 'application/x-www-form-urlencoded'], ['Origin', new URL(page.url).origin]],
      body: params.toString(),
      rewrite,
    });
  }

  /** What a person does on a provider page: the next form to submit, or undefined if this page is not one. */
  function providerStep(page, login, password) {
    if (!/html/.test(page.headers['content-type'] || '')) return undefined;
    const forms = parseForms(page.body, page.url);
    const loginForm = forms.find((f) => f.inputs.some((i) => i.name === 'login') && f.inputs.some((i) => i.name === 'password'));
    if (loginForm) {
      if (!login) return undefined; // not expected here: stop on the login form, the caller's assertions will say
      return { kind: 'login', opts: { form: (f) => f === loginForm || f.action === loginForm.action, fields: { login, password } } };
    }
    const consent = forms.find((f) => f.inputs.some((i) => i.name === 'prompt' && i.value === 'consent'));
    if (consent) return { kind: 'consent', opts: { form: (f) => f.action === consent.action } };
    const logout = forms.find((f) => f.id === 'op.logoutForm');
    if (logout) {
      return {
        kind: 'logout-confirm',
        opts: { form: (f) => f.id === 'op.logoutForm', button: (b) => b.name === 'logout' && b.value === 'yes' },
      };
    }
    const auto = forms.find((f) => f.autoSubmit);
    if (auto) return { kind: 'auto-submit', opts: { form: (f) => f.autoSubmit } };
    return undefined;
  }

  /** Keep doing provider steps (login, consent, logout confirmation, auto-submit) until off the provider's forms. */
  async function throughProvider(res, { login, password = 'any password', rewrite, maxSteps = 6 } = {}) {
    const history = [...(res.history || [res])];
    const steps = [];
    let current = res;
    for (let i = 0; i < maxSteps; i++) {
      const step = providerStep(current, login, password);
      if (!step) break;
      steps.push(step.kind);
      current = await submitForm(current, { ...step.opts, rewrite });
      history.push(...current.history);
    }
    current.history = history;
    current.steps = steps;
    return current;
  }

  return {
    name,
    jar,
    request,
    /** Ends the HTTP/2 connections (a browser closing). */
    close() {
      for (const session of h2Sessions.values()) session.close();
      h2Sessions.clear();
    },
    navigate,
    submitForm,
    throughProvider,
    /** Navigation GET following redirects (opts.follow === false for one hop). */
    get(url, opts = {}) {
      if (opts.follow === false) return request(url, { ...opts, navigate: opts.navigate ?? true });
      return navigate(url, opts);
    },
    /** A non-navigation request (Accept: application/json, Sec-Fetch-Mode: cors), no redirect following. */
    api(url, opts = {}) {
      const extra = toPairs(opts.headers);
      const names = new Set(extra.map(([k]) => k.toLowerCase()));
      return request(url, { ...opts, navigate: false, headers: API_HEADERS.filter(([k]) => !names.has(k.toLowerCase())).concat(extra) });
    },
    /**
     * Navigate to startUrl and complete whatever the provider asks (login form with `login`, consent),
     * ending wherever the redirects end (normally back on the app). Returns the final response with
     * `history` and `steps` (e.g. ['login']).
     */
    async login(startUrl, login, opts = {}) {
      const first = await navigate(startUrl, { rewrite: opts.rewrite, headers: opts.headers });
      return throughProvider(first, { ...opts, login });
    },
    /** Navigate to a logout URL and confirm at the provider. */
    async logout(logoutUrl, opts = {}) {
      const first = await navigate(logoutUrl, { rewrite: opts.rewrite });
      return throughProvider(first, opts);
    },
  };
}
