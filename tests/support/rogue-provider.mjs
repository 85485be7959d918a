// A minimal OpenID Provider for the authorization-code flow, written with node:http and `jose`, that can misbehave
// case by case (the OpenID Foundation's RP conformance tests, tests/integration/conformance.test.mjs).
//
//   const op = await startRogueProvider({ redirectUris: [`${base}/.passerelle/callback`] });
//   op.issuer, op.clientId, op.clientSecret, op.discovery   // what Passerelle is configured with / discovers
//   op.setCase({ idToken: { claims: (c) => ({ ...c, iss: `${c.iss}x` }) } });   // misbehave from now on
//   op.setCase();                                             // behave again (the start-up case only)
//   op.calls      // every request: { at, method, path, query, headers, body, backChannel, status, held, closed }
//   op.issued     // every code, access_token and id_token handed out: [{ type, value }]
//   op.errors     // every request it refused (a well-behaved Passerelle causes none): [{ path, error, detail }]
//   await op.waitFor((call) => call.path === '/token' && call.held);   // resolves on a matching call, or throws
//   await op.stop();
//
// By default it is a correct provider: discovery (RFC 9207 `iss` advertised), JWKS, /authorize (no login form: it
// checks client_id, redirect_uri, response_type, scope, state, nonce and the PKCE S256 challenge, then 302s straight
// back with code, state and iss), /token (client_secret_basic or client_secret_post as registered, one-time codes
// bound to the client, redirect_uri and PKCE challenge), /userinfo (Bearer access token; JSON), /logout. Its id_token:
// iss, sub, aud = [client_id], exp, iat, auth_time, nonce; RS256 with a kid published in the JWKS. The identity
// claims (email, names) are only in userinfo.
//
// A case (setCase; `misbehave` at start-up is the base every later case is merged onto) may set:
//   discovery(doc) → doc                       the discovery document
//   jwks(publicJwks, ring) → publicJwks        the published keys (default: ring.main and ring.ec)
//   authorizationResponse(params, ctx)         edit the URLSearchParams of the redirect back (code, state, iss)
//   idToken: { claims(c, ctx) → c, alg, key, kid, header(h) → h, tamper(jwt) → jwt }
//   tokenResponse(body, ctx) → body            the JSON of a good token response
//   tokenAnswer: 'hang' | { status, contentType, body }   instead of any token processing
//   userinfoClaims(c, ctx) → c                 the userinfo claims
//   userinfoSigned: { alg, key, kid, tamper }  answer userinfo as application/jwt (iss and aud added)
// A signature spec: alg 'RS256' | 'ES256' | 'HS256' | 'none'; key a name of the key ring ('main', 'ec', 'second',
// 'next', 'rogue': never published, 'rogueEc': never published), 'secret' (the client secret: the default for HS256), or raw
// bytes / a KeyObject; kid: the key's own by default (none for HS256 and none), a string, or null for no kid;
// tamper: applied to the compact JWS after signing (see `alterSignature`).
//
// The key ring is made once per process (RSA generation is slow) and shared by every provider started.

import { createHash, createPublicKey, randomBytes, timingSafeEqual } from 'node:crypto';
import { EventEmitter } from 'node:events';
import http from 'node:http';

import { importJWK, SignJWT } from 'jose';

import { listen, readBody, stopper } from './http.mjs';
import { privateJwk } from './provider-kit.mjs';

export const ROGUE_ACCOUNT = Object.freeze({
  sub: 'rogue-5e1f-helene-0001',
  email: 'helene.wamytan@example.nc',
  email_verified: true,
  given_name: 'Hélène',
  family_name: 'Wamytan-Noël',
});

const PRIVATE_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi'];

let ringPromise;

/**
 * The key ring: { main, ec, second, next, rogue, rogueEc }, each { kid, alg, privateKey (KeyObject), publicJwk }.
 * `main` and `ec` are published by default; `second` and `next` are there for cases to publish; `rogue` and
 * `rogueEc` never are.
 */
export function keyRing() {
  ringPromise ??= (async () => {
    const tag = randomBytes(3).toString('hex');
    const make = async (name, type, alg) => {
      const jwk = privateJwk(type, type === 'rsa' ? { modulusLength: 2048 } : { namedCurve: 'P-256' });
      const kid = `${name}-${tag}`;
      const publicJwk = Object.fromEntries(Object.entries(jwk).filter(([k]) => !PRIVATE_MEMBERS.includes(k)));
      return { kid, alg, privateKey: await importJWK({ ...jwk, alg }, alg), publicJwk: { ...publicJwk, kid, use: 'sig', alg } };
    };
    return {
      main: await make('rsa-main', 'rsa', 'RS256'),
      ec: await make('ec-main', 'ec', 'ES256'),
      second: await make('rsa-second', 'rsa', 'RS256'),
      next: await make('rsa-next', 'rsa', 'RS256'),
      rogue: await make('rsa-rogue', 'rsa', 'RS256'),
      rogueEc: await make('ec-rogue', 'ec', 'ES256'),
    };
  })();
  return ringPromise;
}

/** The PEM (SPKI) of a ring key's public half: what an alg-confusion attacker would use as an HMAC secret. */
export function publicPem(entry) {
  return createPublicKey(entry.privateKey).export({ type: 'spki', format: 'pem' });
}

/** A compact JWS with one byte of its signature flipped (the header and payload unchanged). */
export function alterSignature(jwt) {
  const [h, p, s] = jwt.split('.');
  const sig = Buffer.from(s, 'base64url');
  if (sig.length === 0) throw new Error('alterSignature: no signature to alter');
  sig[Math.floor(sig.length / 2)] ^= 0x5a;
  return `${h}.${p}.${sig.toString('base64url')}`;
}

const b64json = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
const nowSeconds = () => Math.floor(Date.now() / 1000);

function sendJson(res, status, body, headers = {}) {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(text),
    'cache-control': 'no-store',
    ...headers,
  });
  res.end(text);
}

function sendText(res, status, contentType, text) {
  res.writeHead(status, { 'content-type': contentType, 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store' });
  res.end(text);
}

function safeEqual(a, b) {
  const x = Buffer.from(String(a));
  const y = Buffer.from(String(b));
  return x.length === y.length && timingSafeEqual(x, y);
}

/** RFC 6749 §2.3.1: client id and secret are form-urlencoded before the Basic encoding. */
function formDecode(s) {
  return decodeURIComponent(s.replace(/\+/g, ' '));
}

/**
 * @param {object} opts
 * @param {string[]} opts.redirectUris
 * @param {string} [opts.clientId]
 * @param {string} [opts.clientSecret]
 * @param {'client_secret_basic'|'client_secret_post'} [opts.authMethod] the one registered (the other is refused)
 * @param {object} [opts.account] the person /authorize signs in, without asking (claims, sub included)
 * @param {string} [opts.jwksPath] where the JWKS is served (discovery's jwks_uri)
 * @param {object} [opts.misbehave] the base case (see above): every setCase is merged onto it
 */
export async function startRogueProvider({
  redirectUris,
  clientId = `rogue-client-${randomBytes(3).toString('hex')}`,
  clientSecret = randomBytes(32).toString('base64url'),
  authMethod = 'client_secret_basic',
  account = ROGUE_ACCOUNT,
  jwksPath = '/jwks',
  misbehave = {},
} = {}) {
  if (!Array.isArray(redirectUris) || redirectUris.length === 0) throw new TypeError('startRogueProvider: redirectUris is required');
  const ring = await keyRing();
  const calls = [];
  const issued = [];
  const errors = [];
  const codes = new Map(); // code -> grant
  const accessTokens = new Map(); // access token -> grant
  const events = new EventEmitter();
  events.setMaxListeners(0);
  let current = { ...misbehave };

  const server = http.createServer();
  const port = await listen(server);
  const issuer = `http://127.0.0.1:${port}`;

  function discoveryDocument() {
    const doc = {
      issuer,
      authorization_endpoint: `${issuer}/authorize`,
      token_endpoint: `${issuer}/token`,
      userinfo_endpoint: `${issuer}/userinfo`,
      jwks_uri: `${issuer}${jwksPath}`,
      end_session_endpoint: `${issuer}/logout`,
      response_types_supported: ['code'],
      response_modes_supported: ['query'],
      grant_types_supported: ['authorization_code'],
      subject_types_supported: ['public'],
      id_token_signing_alg_values_supported: ['RS256', 'ES256', 'HS256'],
      userinfo_signing_alg_values_supported: ['RS256', 'ES256', 'HS256'],
      token_endpoint_auth_methods_supported: ['client_secret_basic', 'client_secret_post'],
      code_challenge_methods_supported: ['S256'],
      scopes_supported: ['openid', 'email', 'profile'],
      claims_supported: ['sub', 'email', 'email_verified', 'given_name', 'family_name'],
      authorization_response_iss_parameter_supported: true,
    };
    return current.discovery ? current.discovery(doc) : doc;
  }

  function publishedKeys() {
    const keys = [ring.main.publicJwk, ring.ec.publicJwk];
    return current.jwks ? current.jwks(keys, ring) : keys;
  }

  /** Sign `payload` per `spec` ({ alg, key, kid, header, tamper }): a compact JWS. */
  async function sign(payload, spec = {}) {
    const alg = spec.alg ?? 'RS256';
    let entry;
    let key;
    if (alg === 'none') {
      key = undefined;
    } else if (spec.key === undefined || spec.key === 'secret') {
      if (alg === 'HS256') key = new TextEncoder().encode(clientSecret);
      else entry = alg === 'ES256' ? ring.ec : ring.main;
    } else if (typeof spec.key === 'string') {
      entry = ring[spec.key];
      if (!entry) throw new Error(`rogue provider: no key named ${spec.key}`);
    } else {
      key = spec.key;
    }
    if (entry) key = entry.privateKey;
    let header = { alg, typ: 'JWT' };
    const kid = spec.kid === undefined ? entry?.kid : spec.kid;
    if (kid) header.kid = kid;
    if (spec.header) header = spec.header(header);
    const jwt = alg === 'none'
      ? `${b64json(header)}.${b64json(payload)}.`
      : await new SignJWT(payload).setProtectedHeader(header).sign(key);
    return spec.tamper ? spec.tamper(jwt) : jwt;
  }

  function fail(res, call, status, error, detail) {
    errors.push({ path: call.path, error, detail });
    sendJson(res, status, { error, error_description: detail });
  }

  // --- /authorize ------------------------------------------------------------------------------------------------
  function authorize(req, res, call) {
    const q = call.query;
    const refuse = (error, detail) => { errors.push({ path: call.path, error, detail }); };
    if (q.client_id !== clientId) {
      refuse('invalid_client', `unknown client_id ${q.client_id}`);
      return sendText(res, 400, 'text/plain; charset=utf-8', 'unknown client');
    }
    if (!redirectUris.includes(q.redirect_uri)) {
      refuse('invalid_redirect_uri', `unregistered redirect_uri ${q.redirect_uri}`);
      return sendText(res, 400, 'text/plain; charset=utf-8', 'unregistered redirect_uri');
    }
    const back = new URL(q.redirect_uri);
    const problem = (() => {
      if (q.response_type !== 'code') return ['unsupported_response_type', `response_type ${q.response_type}`];
      if (!String(q.scope || '').split(' ').includes('openid')) return ['invalid_scope', `scope without openid: ${q.scope}`];
      if (!q.state) return ['invalid_request', 'no state'];
      if (!q.nonce) return ['invalid_request', 'no nonce'];
      if (q.code_challenge_method !== 'S256') return ['invalid_request', `code_challenge_method ${q.code_challenge_method}`];
      if (!/^[A-Za-z0-9_-]{43}$/.test(q.code_challenge || '')) return ['invalid_request', `code_challenge ${q.code_challenge}`];
      return undefined;
    })();
    const params = new URLSearchParams();
    if (problem) {
      refuse(...problem);
      params.set('error', problem[0]);
      params.set('error_description', problem[1]);
      if (q.state) params.set('state', q.state);
      params.set('iss', issuer);
    } else {
      const code = randomBytes(24).toString('base64url');
      codes.set(code, {
        clientId, redirectUri: q.redirect_uri, challenge: q.code_challenge, nonce: q.nonce, scope: q.scope,
        at: Date.now(), used: false,
      });
      issued.push({ type: 'code', value: code });
      params.set('code', code);
      params.set('state', q.state);
      params.set('iss', issuer);
    }
    if (current.authorizationResponse) current.authorizationResponse(params, { issuer, query: q });
    for (const [k, v] of params) back.searchParams.append(k, v);
    res.writeHead(302, { location: back.href, 'cache-control': 'no-store', 'content-length': 0 });
    res.end();
  }

  // --- /token ----------------------------------------------------------------------------------------------------
  async function token(req, res, call) {
    const answer = current.tokenAnswer;
    if (answer === 'hang') {
      call.held = true; // never answered: the connection stays open until the client gives up (or stop())
      events.emit('call', call);
      return;
    }
    if (answer) {
      sendText(res, answer.status, answer.contentType ?? 'application/json', answer.body ?? '');
      return;
    }
    if (req.method !== 'POST') return fail(res, call, 405, 'invalid_request', 'token endpoint needs POST');
    if (!/^application\/x-www-form-urlencoded/.test(req.headers['content-type'] || '')) {
      return fail(res, call, 400, 'invalid_request', `content-type ${req.headers['content-type']}`);
    }
    const form = Object.fromEntries(new URLSearchParams(call.body));
    call.form = form;
    // Client authentication: the registered method only.
    const basic = /^Basic\s+(.+)$/i.exec(req.headers.authorization || '');
    let id;
    let secret;
    if (basic) {
      const decoded = Buffer.from(basic[1], 'base64').toString('utf8');
      const i = decoded.indexOf(':');
      id = formDecode(decoded.slice(0, i));
      secret = formDecode(decoded.slice(i + 1));
      if (authMethod !== 'client_secret_basic') return fail(res, call, 401, 'invalid_client', 'client_secret_basic used, client_secret_post registered');
      if ('client_secret' in form) return fail(res, call, 400, 'invalid_request', 'two client authentication methods');
    } else {
      id = form.client_id;
      secret = form.client_secret;
      if (authMethod !== 'client_secret_post') return fail(res, call, 401, 'invalid_client', 'client_secret_post used, client_secret_basic registered');
    }
    if (id !== clientId || !safeEqual(secret ?? '', clientSecret)) return fail(res, call, 401, 'invalid_client', 'bad client credentials');
    if (form.grant_type !== 'authorization_code') return fail(res, call, 400, 'unsupported_grant_type', form.grant_type);
    const grant = codes.get(form.code);
    if (!grant) return fail(res, call, 400, 'invalid_grant', 'unknown code');
    if (grant.used) return fail(res, call, 400, 'invalid_grant', 'code already redeemed');
    grant.used = true;
    if (Date.now() - grant.at > 60_000) return fail(res, call, 400, 'invalid_grant', 'code expired');
    if (form.client_id !== undefined && form.client_id !== clientId) return fail(res, call, 400, 'invalid_grant', 'client_id of another client');
    if (form.redirect_uri !== grant.redirectUri) return fail(res, call, 400, 'invalid_grant', `redirect_uri ${form.redirect_uri}`);
    const verifier = form.code_verifier || '';
    if (!/^[A-Za-z0-9._~-]{43,128}$/.test(verifier)) return fail(res, call, 400, 'invalid_grant', 'code_verifier malformed');
    if (createHash('sha256').update(verifier).digest('base64url') !== grant.challenge) {
      return fail(res, call, 400, 'invalid_grant', 'PKCE verification failed');
    }

    const accessToken = randomBytes(32).toString('base64url');
    accessTokens.set(accessToken, { ...grant });
    const now = nowSeconds();
    const spec = current.idToken || {};
    const ctx = { issuer, clientId, nonce: grant.nonce, now, account };
    let claims = {
      iss: issuer, sub: account.sub, aud: [clientId], exp: now + 600, iat: now, auth_time: now, nonce: grant.nonce,
    };
    if (spec.claims) claims = spec.claims(claims, ctx);
    const idToken = await sign(claims, spec);
    let body = { access_token: accessToken, token_type: 'Bearer', expires_in: 600, scope: grant.scope, id_token: idToken };
    if (current.tokenResponse) body = current.tokenResponse(body, ctx);
    issued.push({ type: 'access_token', value: accessToken }, { type: 'id_token', value: idToken });
    sendJson(res, 200, body);
  }

  // --- /userinfo -------------------------------------------------------------------------------------------------
  async function userinfo(req, res, call) {
    const m = /^Bearer\s+(\S+)$/i.exec(req.headers.authorization || '');
    const grant = m && accessTokens.get(m[1]);
    if (!grant) {
      errors.push({ path: call.path, error: 'invalid_token', detail: 'no or unknown Bearer token' });
      res.writeHead(401, { 'www-authenticate': 'Bearer error="invalid_token"', 'content-length': 0 });
      res.end();
      return;
    }
    const ctx = { issuer, clientId, account };
    let claims = {
      sub: account.sub, email: account.email, email_verified: account.email_verified,
      given_name: account.given_name, family_name: account.family_name,
    };
    if (current.userinfoClaims) claims = current.userinfoClaims(claims, ctx);
    if (current.userinfoSigned) {
      const jwt = await sign({ iss: issuer, aud: clientId, ...claims }, current.userinfoSigned);
      issued.push({ type: 'userinfo_jwt', value: jwt });
      sendText(res, 200, 'application/jwt', jwt);
      return;
    }
    sendJson(res, 200, claims);
  }

  server.on('request', (req, res) => {
    const url = new URL(req.url, issuer);
    const call = {
      at: Date.now(),
      method: req.method,
      path: url.pathname,
      query: Object.fromEntries(url.searchParams),
      headers: { ...req.headers },
      backChannel: /^passerelle\//.test(req.headers['user-agent'] || ''),
      body: '',
      status: undefined,
      held: false,
      closed: false,
    };
    calls.push(call);
    res.on('finish', () => {
      call.status = res.statusCode;
      events.emit('call', call);
    });
    // A request the client abandoned before it was answered (a held token request, say).
    res.on('close', () => {
      if (!res.writableFinished) {
        call.closed = true;
        events.emit('call', call);
      }
    });
    readBody(req).then(async (body) => {
      call.body = body;
      events.emit('call', call);
      switch (url.pathname) {
        case '/.well-known/openid-configuration': return sendJson(res, 200, discoveryDocument());
        case jwksPath: return sendJson(res, 200, { keys: publishedKeys() });
        case '/authorize': return authorize(req, res, call);
        case '/token': return token(req, res, call);
        case '/userinfo': return userinfo(req, res, call);
        case '/logout': return sendText(res, 200, 'text/html; charset=utf-8', '<!DOCTYPE html><p>logged out</p>');
        default: return sendText(res, 404, 'text/plain', 'not found');
      }
    }).catch((e) => {
      errors.push({ path: call.path, error: 'server_error', detail: e.stack || String(e) });
      if (!res.headersSent) sendText(res, 500, 'text/plain', 'rogue provider error');
      else res.destroy();
    });
  });

  const stopServer = stopper(server);
  return {
    issuer,
    port,
    clientId,
    clientSecret,
    authMethod,
    account,
    ring,
    calls,
    issued,
    errors,
    get discovery() { return discoveryDocument(); },
    /** Misbehave from now on as `misbehaviour` says (merged onto the start-up case); no argument: behave. */
    setCase(misbehaviour = {}) {
      current = { ...misbehave, ...misbehaviour };
    },
    /** Requests to `path` (e.g. '/token'), optionally only those after index `since` of `calls`. */
    callsTo(path, since = 0) {
      return calls.slice(since).filter((c) => c.path === path);
    },
    /** Resolves the first call (past or future) matching `predicate`; rejects after timeoutMs. */
    waitFor(predicate, timeoutMs = 20_000) {
      const found = calls.find(predicate);
      if (found) return Promise.resolve(found);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          events.off('call', onCall);
          reject(new Error(`rogue provider: no matching call within ${timeoutMs} ms; calls: ${calls.map((c) => `${c.method} ${c.path} ${c.status}`).join(', ')}`));
        }, timeoutMs);
        function onCall(call) {
          if (!predicate(call)) return;
          clearTimeout(timer);
          events.off('call', onCall);
          resolve(call);
        }
        events.on('call', onCall);
      });
    },
    /** Sign a payload as the provider would (tests that forge tokens by hand). */
    sign,
    stop: stopServer,
  };
}
