// Signing keys of the provider: Passerelle caches the discovery document and the JWKS; an id_token whose `kid` it
// does not know makes it refetch the JWKS once (OIDC Core §10.1.1), at most once per 30 s per provider.
//
//   (k1) key rotation: provider restarted on the same port, same issuer/client/accounts, new key set B
//        → the next login succeeds after exactly one JWKS request to the new provider
//   (k2) rate limit: rotated again within 30 s (key set C) → the login fails (400 "Connexion impossible", the
//        correlation id on the page is in the log), no session, and the JWKS endpoint is not requested
//   (k3) an id_token without `kid`, a JWKS with a single key → the login succeeds
//
// The provider is the real npm `oidc-provider`, built here rather than with support/provider.mjs, because the
// test needs to choose its port (restart on the same one) and its keys.
//
// (k3): oidc-provider always puts a `kid` in the JWS header of an id_token: keys given in `jwks` get one computed
// (RFC 7638 thumbprint) when they have none, and the header takes the signing key's `kid`. Its public
// `ExternalSigningKey` (feature `externalSigningSupport`, the HSM/KMS hook: oidc-provider builds the header and the
// payload, the key object computes the signature) reads `kid` from the key object when it signs; the key object here
// reports its kid while the provider registers it (so the published JWKS still lists it, with a kid) and none after
// that, so oidc-provider writes no `kid` in the header. The RS256 signature is a real one, made with node:crypto.

import assert from 'node:assert/strict';
import { createPrivateKey, createPublicKey, generateKeyPairSync, randomBytes, sign as cryptoSign } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import http from 'node:http';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

import Provider, { ExternalSigningKey } from 'oidc-provider';

import { grantWhatIsAsked } from '../support/provider-kit.mjs';
import { binaryExists, freePort, startPasserelle } from '../support/passerelle.mjs';
import { createPerson } from '../support/person.mjs';
import { headerValues, startUpstream } from '../support/upstream.mjs';

const PREFIX = '/.passerelle';
const OUTPUT_DIR = fileURLToPath(new URL('../output/', import.meta.url));
const PERSON_UA = 'passerelle-integration-tests (scripted person)'; // what support/person.mjs sends
const REFETCHED = 'signing keys refetched';

const ACCOUNTS = Object.freeze({
  alice: Object.freeze({ sub: 'k-alice-0001', email: 'alice.martin@example.gouv.fr', email_verified: true, given_name: 'Alice', family_name: 'Martin' }),
  helene: Object.freeze({ sub: 'k-helene-0002', email: 'helene.wamytan@example.nc', email_verified: true, given_name: 'Hélène', family_name: 'Wamytan-Noël' }),
  bruno: Object.freeze({ sub: 'k-bruno-0003', email: 'bruno.leroy@example.gouv.fr', email_verified: true, given_name: 'Bruno', family_name: 'Leroy' }),
});
const SCOPE_CLAIMS = Object.freeze({
  openid: ['sub'],
  email: ['email', 'email_verified'],
  profile: ['given_name', 'family_name'],
});

// oidc-provider's development notices ("oidc-provider WARNING: …") only clutter the output.
for (const level of ['warn', 'info']) {
  const original = console[level].bind(console);
  console[level] = (...args) => {
    if (typeof args[0] === 'string' && args[0].startsWith('oidc-provider ')) return;
    original(...args);
  };
}

// ---------------------------------------------------------------------------------------------------------------
// Keys

/**
 * A fresh key pair as KeyObjects { privateKey, publicKey }. Not `generateKeyPairSync(…).privateKey.export(…)`:
 * on Node 20.20 that can deadlock (seen here about once in 20 runs: the main thread blocked for good in
 * KeyObjectHandle::ExportJWK → a GC inside it → ~KeyGenJob → uv_mutex_lock on the mutex the export holds). The pair
 * is PEM-encoded inside the generation job and re-imported, so the KeyObjects share nothing with the job.
 */
function keyPair(type, options) {
  const { privateKey, publicKey } = generateKeyPairSync(type, {
    ...options,
    privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
    publicKeyEncoding: { type: 'spki', format: 'pem' },
  });
  return { privateKey: createPrivateKey(privateKey), publicKey: createPublicKey(publicKey) };
}

/** A key set: one RSA (RS256) and one EC P-256 (ES256) private JWK, each with a kid naming the set. */
function keySet(label) {
  const tag = `${label}-${randomBytes(4).toString('hex')}`;
  const rsa = keyPair('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'jwk' });
  const ec = keyPair('ec', { namedCurve: 'P-256' }).privateKey.export({ format: 'jwk' });
  return [
    { ...rsa, kid: `rsa-${tag}`, use: 'sig', alg: 'RS256' },
    { ...ec, kid: `ec-${tag}`, use: 'sig', alg: 'ES256' },
  ];
}

/**
 * An RSA key oidc-provider signs with through its ExternalSigningKey hook. It has a kid while the provider
 * registers it (the published JWKS lists that kid); after `hideKid()` it reports none, so the id_tokens it signs
 * carry no `kid` header.
 */
class KidlessRsaKey extends ExternalSigningKey {
  #privateKey;

  #publicKey;

  #hidden = false;

  constructor() {
    super();
    const { privateKey, publicKey } = keyPair('rsa', { modulusLength: 2048 });
    this.#privateKey = privateKey;
    this.#publicKey = publicKey;
    this.alg = 'RS256';
    this.kid = `only-${randomBytes(4).toString('hex')}`;
  }

  get kid() {
    return this.#hidden ? undefined : super.kid;
  }

  set kid(value) {
    super.kid = value;
  }

  hideKid() {
    this.#hidden = true;
  }

  keyObject() {
    return this.#publicKey;
  }

  async sign(data) {
    return cryptoSign('sha256', data, this.#privateKey); // RSASSA-PKCS1-v1_5 with SHA-256 = RS256
  }
}

function jwtHeader(jwt) {
  return JSON.parse(Buffer.from(jwt.split('.')[0], 'base64url').toString('utf8'));
}

// ---------------------------------------------------------------------------------------------------------------
// The provider

function listen(server, port) {
  return new Promise((resolve, reject) => {
    const onError = (e) => { server.off('listening', onListening); reject(e); };
    const onListening = () => { server.off('error', onError); resolve(); };
    server.once('error', onError);
    server.once('listening', onListening);
    server.listen(port, '127.0.0.1');
  });
}

/** Listen on `port` (0: any free one); a port just released may take a moment to be free again: poll. */
async function listenOn(server, port) {
  const deadline = Date.now() + 5000;
  for (;;) {
    try {
      await listen(server, port);
      return;
    } catch (e) {
      if (e.code !== 'EADDRINUSE' || port === 0 || Date.now() > deadline) throw e;
      await new Promise((r) => setTimeout(r, 25));
    }
  }
}

/**
 * oidc-provider on 127.0.0.1:`port` with the signing keys `keys` (private JWKs, or ExternalSigningKey objects).
 * calls: every request { at, method, path, ua, status }; idTokens: every id_token issued.
 */
async function startKeyedProvider({ port = 0, keys, idTokenAlg, clientId, clientSecret, redirectUris }) {
  const calls = [];
  const idTokens = [];
  const errors = [];
  const server = http.createServer();
  await listenOn(server, port);
  const actualPort = server.address().port;
  const issuer = `http://127.0.0.1:${actualPort}`;
  const external = keys.some((k) => k instanceof ExternalSigningKey);

  const provider = new Provider(issuer, {
    clients: [{
      client_id: clientId,
      client_secret: clientSecret,
      redirect_uris: redirectUris,
      response_types: ['code'],
      grant_types: ['authorization_code'],
      token_endpoint_auth_method: 'client_secret_basic',
      id_token_signed_response_alg: idTokenAlg,
    }],
    jwks: { keys },
    cookies: { keys: [randomBytes(32).toString('hex')] },
    claims: SCOPE_CLAIMS,
    async findAccount(_ctx, id) {
      const claims = Object.values(ACCOUNTS).find((a) => a.sub === id);
      if (!claims) return undefined;
      return { accountId: claims.sub, async claims() { return { ...claims }; } };
    },
    // Auto-consent: grant what the client asks for.
    loadExistingGrant: grantWhatIsAsked,
    pkce: { required: () => true },
    enabledJWA: { idTokenSigningAlgValues: ['RS256', 'ES256'] },
    features: {
      devInteractions: { enabled: true },
      ...(external ? { externalSigningSupport: { enabled: true, ack: 'experimental-01' } } : {}),
    },
  });
  for (const event of ['server_error', 'grant.error', 'authorization.error', 'userinfo.error', 'jwks.error',
    'discovery.error', 'interaction.error']) {
    provider.on(event, (_ctx, err) => errors.push({ event, message: err?.message, detail: err?.error_description }));
  }
  provider.on('grant.success', (ctx) => {
    if (ctx.body?.id_token) idTokens.push(ctx.body.id_token);
  });

  const callback = provider.callback();
  server.on('request', (req, res) => {
    const url = new URL(req.url, issuer);
    const call = { at: Date.now(), method: req.method, path: url.pathname, ua: req.headers['user-agent'], status: undefined };
    calls.push(call);
    res.on('finish', () => { call.status = res.statusCode; });
    // devInteractions takes the typed login as the account id: map the login to the account's sub.
    if (req.method === 'POST' && /^\/interaction\/[^/]+$/.test(url.pathname)) {
      const chunks = [];
      req.on('data', (c) => chunks.push(c));
      req.on('end', () => {
        const form = Object.fromEntries(new URLSearchParams(Buffer.concat(chunks).toString('utf8')));
        if (form.login && ACCOUNTS[form.login]) form.login = ACCOUNTS[form.login].sub;
        req.body = form;
        callback(req, res);
      });
      return;
    }
    callback(req, res);
  });

  let stopped = false;
  return {
    issuer,
    port: actualPort,
    calls,
    idTokens,
    errors,
    callsTo: (p) => calls.filter((c) => c.path === p),
    /** Requests that did not come from the scripted person: Passerelle's back channel. */
    backChannel: () => calls.filter((c) => c.ua !== PERSON_UA).map((c) => `${c.method} ${c.path}`),
    async stop() {
      if (stopped) return;
      stopped = true;
      await new Promise((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
    },
  };
}

// ---------------------------------------------------------------------------------------------------------------
// Passerelle

function passerelleToml({ port, adminPort, issuer, clientId, clientSecret, upstream }) {
  const q = (s) => JSON.stringify(String(s));
  return `# written by tests/integration/keys.test.mjs
[server]
listen = [${q(`127.0.0.1:${port}`)}]
public_url = ${q(`http://127.0.0.1:${port}`)}
admin_listen = ${q(`127.0.0.1:${adminPort}`)}
prefix = ${q(PREFIX)}
log_format = "json"

[session]
keys = ["env:PASSERELLE_KEY"]
cookie_name = "passerelle"

[providers.op]
kind = "oidc"
issuer = ${q(issuer)}
client_id = ${q(clientId)}
client_secret = ${q(clientSecret)}
auth_method = "client_secret_basic"
scopes = ["openid", "email", "profile"]

[[route]]
path = "/"
upstream = ${q(upstream)}
auth = "required"
providers = ["op"]
scopes = ["email", "profile"]
[route.headers]
"X-Auth-Sub" = "sub"
"X-Auth-Email" = "email"
`;
}

function logLines(text) {
  return text.split('\n').filter(Boolean).map((line) => {
    try {
      return JSON.parse(line);
    } catch {
      return { message: line };
    }
  });
}

function count(text, needle) {
  return text.split(needle).length - 1;
}

/**
 * A world for one scenario: an upstream, a provider (the first one on a free port, restarted on the same one by
 * `restartProvider`), Passerelle in front. Stopped by t.after; Passerelle's output kept in tests/output/keys-<test>.log.
 */
async function startWorld(t, firstKeys, { idTokenAlg }) {
  const port = await freePort();
  const adminPort = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const clientId = 'passerelle-keys-test';
  const clientSecret = randomBytes(32).toString('base64url');
  const redirectUris = [`${base}${PREFIX}/callback`];
  const world = { base, op: undefined, upstream: undefined, passerelle: undefined };
  t.after(async () => {
    if (world.passerelle) {
      await world.passerelle.stop();
      const name = `keys-${(t.name || 'scenario').replace(/[^A-Za-z0-9._-]+/g, '_').slice(0, 100)}`;
      await mkdir(OUTPUT_DIR, { recursive: true });
      await writeFile(path.join(OUTPUT_DIR, `${name}.log`), `${world.toml}\n----- passerelle output -----\n${world.passerelle.logs()}`);
    }
    if (world.op) await world.op.stop();
    if (world.upstream) await world.upstream.stop();
  });

  /** Stop the current provider (if any) and start one with `keys` on the same port (the first time: any port). */
  world.restartProvider = async (keys) => {
    const samePort = world.op?.port ?? 0;
    if (world.op) await world.op.stop();
    world.op = undefined;
    world.op = await startKeyedProvider({ port: samePort, keys, idTokenAlg, clientId, clientSecret, redirectUris });
    return world.op;
  };

  await world.restartProvider(firstKeys);
  world.upstream = await startUpstream();
  world.toml = passerelleToml({
    port, adminPort, issuer: world.op.issuer, clientId, clientSecret, upstream: world.upstream.url,
  });
  world.passerelle = await startPasserelle(world.toml);
  return world;
}

/** Assert a login that ended on the upstream as `login`. */
function assertLoggedIn(world, res, login, what) {
  const diag = () => `${what}: final ${res.status} ${res.url}\n${res.body.slice(0, 800)}\n--- passerelle ---\n${world.passerelle.logs().slice(-3000)}\n--- provider errors ---\n${JSON.stringify(world.op.errors)}`;
  assert.equal(res.status, 200, diag());
  assert.equal(new URL(res.url).origin, world.base, diag());
  assert.deepEqual(res.steps, ['login'], diag());
  assert.deepEqual(headerValues(world.upstream.last().rawHeaders, 'X-Auth-Sub'), [ACCOUNTS[login].sub], diag());
}

const skip = binaryExists() ? false : 'Passerelle binary not built (cargo build --release)';

// ---------------------------------------------------------------------------------------------------------------

test('(k1, k2) key rotation: unknown kid → one JWKS refetch; rotated again within 30 s → refused, no refetch', { skip, timeout: 60000 }, async (t) => {
  const keysA = keySet('A');
  const keysB = keySet('B');
  const keysC = keySet('C');
  const kids = (keys) => keys.map((k) => k.kid);
  const world = await startWorld(t, keysA, { idTokenAlg: 'ES256' });
  const { base, passerelle } = world;
  const issuer = world.op.issuer;
  const P = world.op.port;

  // Passerelle's start: discovery (and JWKS, fetched along with it).
  const atStart = world.op.backChannel();
  t.diagnostic(`provider A, Passerelle's start: ${JSON.stringify(atStart)}`);
  assert.ok(atStart.includes('GET /.well-known/openid-configuration'), JSON.stringify(atStart));

  // --- first login, key set A
  const opA = world.op;
  const before = opA.backChannel().length;
  const r1 = await createPerson({ name: 'person1' }).login(`${base}/app/one`, 'alice');
  assertLoggedIn(world, r1, 'alice', 'login 1 (key set A)');
  assert.equal(opA.idTokens.length, 1);
  assert.ok(kids(keysA).includes(jwtHeader(opA.idTokens[0]).kid), `id_token kid ${jwtHeader(opA.idTokens[0]).kid} is one of A's`);
  const login1 = opA.backChannel().slice(before);
  t.diagnostic(`provider A, login 1 back channel: ${JSON.stringify(login1)}`);
  assert.ok(opA.callsTo('/jwks').length >= 1, 'the JWKS of A was fetched');
  assert.equal(count(passerelle.logs(), REFETCHED), 0, 'no refetch while the kid is known');

  await t.test('(k1) provider restarted on the same port with key set B: the next login works after one JWKS request', async () => {
    const opB = await world.restartProvider(keysB);
    assert.equal(opB.port, P);
    assert.equal(opB.issuer, issuer);

    const r2 = await createPerson({ name: 'person2' }).login(`${base}/app/two`, 'helene');
    assertLoggedIn(world, r2, 'helene', 'login 2 (key set B, unknown kid)');
    assert.equal(opB.idTokens.length, 1);
    const kid = jwtHeader(opB.idTokens[0]).kid;
    assert.ok(kids(keysB).includes(kid) && !kids(keysA).includes(kid), `id_token kid ${kid} is B's, unknown to A`);

    // Everything Passerelle asked the new provider during that login, in order: the code exchange, the JWKS
    // (once: the unknown kid), userinfo. No discovery: the document is cached.
    t.diagnostic(`provider B, every request: ${JSON.stringify(opB.calls.map((c) => `${c.method} ${c.path} ${c.status}${c.ua === PERSON_UA ? ' (person)' : ''}`))}`);
    assert.deepEqual(opB.backChannel(), ['POST /token', 'GET /jwks', 'GET /me']);
    assert.equal(opB.callsTo('/jwks').length, 1);
    assert.equal(opB.callsTo('/jwks')[0].status, 200);
    assert.equal(opB.callsTo('/.well-known/openid-configuration').length, 0);

    const logs = passerelle.logs();
    assert.equal(count(logs, REFETCHED), 1, `"${REFETCHED}" once in:\n${logs}`);
    const line = logLines(logs).find((l) => String(l.message).includes(REFETCHED));
    assert.equal(line.provider, 'op');
  });

  await t.test('(k2) rotated again to key set C within 30 s: the login is refused, the JWKS is not requested', async () => {
    const refetchAt = world.op.callsTo('/jwks')[0]?.at;
    assert.ok(refetchAt, 'k1 left a JWKS refetch to rate-limit against');
    const opC = await world.restartProvider(keysC);
    assert.equal(opC.port, P);
    const upstreamBefore = world.upstream.requests.length;

    const person3 = createPerson({ name: 'person3' });
    const r3 = await person3.login(`${base}/app/three`, 'bruno');
    const diag = `final ${r3.status} ${r3.url}\n${r3.body.slice(0, 1500)}\n--- passerelle ---\n${passerelle.logs().slice(-3000)}`;

    // The provider did its part: login, code, id_token signed with C's key.
    assert.deepEqual(r3.steps, ['login'], diag);
    assert.equal(opC.idTokens.length, 1, diag);
    assert.ok(kids(keysC).includes(jwtHeader(opC.idTokens[0]).kid));
    const tokenAt = opC.callsTo('/token')[0]?.at;
    assert.ok(tokenAt - refetchAt < 30000,
      `inconclusive: the third code exchange came ${tokenAt - refetchAt} ms after the refetch, not within 30 s`);

    // Passerelle refuses: the French error page at the callback, 400, with a correlation id.
    assert.equal(new URL(r3.url).pathname, `${PREFIX}/callback`, diag);
    assert.equal(r3.status, 400, diag);
    assert.match(r3.headers['content-type'] || '', /text\/html/);
    assert.match(r3.body, /<h1>Connexion impossible<\/h1>/, diag);
    assert.match(r3.body, /<html lang="fr"/);
    const m = r3.body.match(/communiquez cet identifiant à l'assistance : <strong>([A-Za-z0-9_-]+)<\/strong>/);
    assert.ok(m, `a correlation id on the page:\n${r3.body}`);
    const correlationId = m[1];
    const logs = passerelle.logs();
    const failed = logLines(logs).filter((l) => l.request_id === correlationId && l.message === 'login failed');
    assert.equal(failed.length, 1, `one "login failed" line with request_id ${correlationId} in:\n${logs}`);
    assert.match(String(failed[0].error), /id_token rejected: .*No matching key/, JSON.stringify(failed[0]));
    t.diagnostic(`log: ${JSON.stringify(failed[0])}`);

    // No session: no session cookie set on the way, none in the jar; the upstream never saw the request.
    const sessionSet = r3.history.flatMap((h) => h.setCookies)
      .filter((c) => /^passerelle(\.\d+|_idt)?$/.test(c.name) && c.value !== '');
    assert.deepEqual(sessionSet.map((c) => c.raw), []);
    assert.equal(person3.jar.get(base, 'passerelle'), undefined);
    assert.equal(world.upstream.requests.length, upstreamBefore);

    // Rate-limited: the new JWKS was not requested (nor discovery, nor userinfo for a rejected id_token).
    t.diagnostic(`provider C, every request: ${JSON.stringify(opC.calls.map((c) => `${c.method} ${c.path} ${c.status}${c.ua === PERSON_UA ? ' (person)' : ''}`))}`);
    assert.deepEqual(opC.backChannel(), ['POST /token']);
    assert.equal(opC.callsTo('/jwks').length, 0);
    assert.equal(count(logs, REFETCHED), 1, 'still a single refetch');
  });
});

test('(k3) id_token without kid, JWKS with a single key: the login works', { skip, timeout: 60000 }, async (t) => {
  const key = new KidlessRsaKey();
  const world = await startWorld(t, [key], { idTokenAlg: 'RS256' });
  key.hideKid(); // registered (and published) with its kid; from now on it signs without one

  // The provider's JWKS, as Passerelle reads it: a single key.
  const jwks = await new Promise((resolve, reject) => {
    http.get(`${world.op.issuer}/jwks`, { agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c) => { body += c; });
      res.on('end', () => resolve(JSON.parse(body)));
    }).on('error', reject);
  });
  assert.equal(jwks.keys.length, 1, JSON.stringify(jwks));
  assert.equal(jwks.keys[0].kty, 'RSA');

  const res = await createPerson({ name: 'person' }).login(`${world.base}/app`, 'helene');
  assert.equal(world.op.idTokens.length, 1, `no id_token issued: ${JSON.stringify(world.op.errors)}`);
  const header = jwtHeader(world.op.idTokens[0]);
  t.diagnostic(`id_token header: ${JSON.stringify(header)}; JWKS kid: ${jwks.keys[0].kid}`);
  assert.deepEqual(header, { alg: 'RS256' }, 'the id_token has no kid header');
  assertLoggedIn(world, res, 'helene', 'login with a kid-less id_token');
  const logs = world.passerelle.logs();
  assert.equal(count(logs, REFETCHED), 0, 'no refetch needed');
  assert.equal(count(logs, 'login failed'), 0);
});
