// Client certificates at the TLS front door (issue 13, part 4): with `server.tls.client_ca`, the listener asks for a
// certificate, which the client may withhold; one it shows must chain to that CA and be meant for client
// authentication, or the handshake fails. Its subject, issuer, serial and fingerprint become the claims
// `tls_client_*`, forwarded by the routes that map them, and `client_certificate = "required"` refuses requests
// without one. Over HTTP/2 and HTTP/1.1, each with real TLS clients (node:http2, node:https) and certificates made by
// openssl; the certificate's values are read back with node:crypto's X509Certificate, independently of Passerelle.

import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import http2 from 'node:http2';
import { writeFile } from 'node:fs/promises';
import https from 'node:https';
import path from 'node:path';
import { test } from 'node:test';

import { stopAfter } from '../support/http.mjs';
import { launchPasserelle, runPasserelle } from '../support/passerelle.mjs';
import { makePki } from '../support/pki.mjs';
import { addresses, configToml, q, tv } from '../support/stack.mjs';
import { headerValues, startUpstream } from '../support/upstream.mjs';

const TIMEOUT = { timeout: 120_000 };
const HEADERS = `[route.headers]
"X-Client-Subject" = "tls_client_subject"
"X-Client-Issuer" = "tls_client_issuer"
"X-Client-Serial" = "tls_client_serial"
"X-Client-Fingerprint" = "tls_client_fingerprint"
`;

/** One request with an optional client certificate: { status, body } or { error }. */
function request(base, path, { protocol, ca, cert, headers = {} }) {
  const client = cert ? { cert: cert.cert, key: cert.key } : {};
  if (protocol === 'h2') {
    return new Promise((resolve) => {
      const session = http2.connect(base, { ca, ...client });
      session.on('error', (e) => resolve({ error: e.code || e.message }));
      const stream = session.request({ ':path': path, ...headers });
      let status;
      const chunks = [];
      stream.on('response', (h) => { status = h[':status']; });
      stream.on('data', (c) => chunks.push(c));
      stream.on('error', (e) => resolve({ error: e.code || e.message }));
      stream.on('close', () => {
        session.close();
        resolve(status ? { status, body: Buffer.concat(chunks).toString() } : { error: `closed (${stream.rstCode})` });
      });
    });
  }
  return new Promise((resolve) => {
    const req = https.request(`${base}${path}`, { agent: false, ca, ...client, headers, ALPNProtocols: ['http/1.1'] }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode, body: Buffer.concat(chunks).toString() }));
    });
    req.on('error', (e) => resolve({ error: e.code || e.message }));
    req.end();
  });
}

/** What Passerelle must say of `pem`, computed here from the certificate itself. */
function expectedClaims(pem) {
  const x = new X509Certificate(pem);
  // node prints a DN one attribute per line, least specific first: RFC 4514 writes them the other way, with commas.
  const dn = (text) => text.split('\n').filter(Boolean).reverse().join(',');
  return {
    'x-client-subject': dn(x.subject),
    'x-client-issuer': dn(x.issuer),
    'x-client-serial': x.serialNumber.replace(/^(00)+/, '').toUpperCase(),
    'x-client-fingerprint': x.fingerprint256.replaceAll(':', '').toLowerCase(),
  };
}

for (const protocol of ['h2', 'http/1.1']) {
  test(`(client-cert) over ${protocol}: an agent's certificate gives its claims to the routes that map them; "required" refuses requests without one; a wrong CA or usage fails the handshake; spoofed claims never pass`, TIMEOUT, async (t) => {
    const pki = await makePki(t, { client: true });
    assert.ok(pki, 'openssl is installed by the test script');
    const agent = await pki.client.issue('agent', '/C=FR/O=Ministere des essais/OU=Bureau 4/CN=Alice Martin, agent');
    const wrongCa = await pki.client.issue('stranger', '/CN=Someone else', { ca: 'other-ca' });
    const serverOnly = await pki.client.issue('server-usage', '/CN=Not for clients', { usage: 'serverAuth' });
    const a = await addresses();
    const base = `https://127.0.0.1:${a.port}`;
    const up = await stopAfter(t, startUpstream());
    const toml = configToml({
      writtenBy: 'tests/integration/client-certificates.test.mjs',
      port: a.port,
      adminPort: a.adminPort,
      publicUrl: base,
      extraServer: `tls = ${tv({ cert: `${pki.dir}/server.pem`, key: `${pki.dir}/server.key`, client_ca: pki.client.caFile })}\n`,
      routes: `[[route]]
path = "/rie"
upstream = ${q(up.url)}
auth = "public"
client_certificate = "required"
${HEADERS}
[[route]]
path = "/open"
upstream = ${q(up.url)}
auth = "public"
${HEADERS}
[[route]]
path = "/plain"
upstream = ${q(up.url)}
auth = "public"
`,
    });
    await launchPasserelle(t, toml, { adminPort: a.adminPort });
    const ask = (path, cert, headers) => request(base, path, { protocol, ca: pki.ca, cert, headers });
    const spoof = {
      'x-client-subject': 'CN=Spoofed', 'x-client-serial': '01', 'x-client-fingerprint': 'ff', 'x-client-issuer': 'CN=Spoofed',
    };
    const claimsAt = (record) => Object.fromEntries(Object.keys(spoof).map((h) => [h, headerValues(record.rawHeaders, h)]));

    // Without a certificate: the optional route is served without the claims, the required one refused.
    const open = await ask('/open/x', undefined, spoof);
    assert.equal(open.status, 200, JSON.stringify(open));
    assert.deepEqual(claimsAt(up.last()), Object.fromEntries(Object.keys(spoof).map((h) => [h, []])), 'spoofed claims are stripped');
    const before = up.requests.length;
    const refused = await ask('/rie/x', undefined, spoof);
    assert.equal(refused.status, 403, JSON.stringify(refused));
    assert.match(refused.body, /Certificat requis/);
    assert.equal(up.requests.length, before, 'a refused request never reaches the app');

    // With the agent's certificate: its claims, exactly, on both mapped routes; the spoofed values gone.
    const expected = expectedClaims(agent.cert);
    assert.match(expected['x-client-subject'], /^CN=Alice Martin\\, agent,OU=Bureau 4,O=Ministere des essais,C=FR$/);
    for (const path of ['/rie/x', '/open/x']) {
      const res = await ask(path, agent, spoof);
      assert.equal(res.status, 200, `${path}: ${JSON.stringify(res)}`);
      assert.equal(up.last().url, path);
      assert.deepEqual(claimsAt(up.last()), Object.fromEntries(Object.entries(expected).map(([h, v]) => [h, [v]])), `${path}: claims`);
    }
    // A route that maps none of them forwards none, and the client's copies are stripped there too.
    const plain = await ask('/plain/x', agent, spoof);
    assert.equal(plain.status, 200);
    assert.deepEqual(claimsAt(up.last()), Object.fromEntries(Object.keys(spoof).map((h) => [h, []])), '/plain: nothing');

    // Certificates the CA did not issue, or not for client authentication: no handshake, nothing proxied.
    const count = up.requests.length;
    for (const [what, cert] of [['another CA', wrongCa], ['a server-only certificate', serverOnly]]) {
      const res = await ask('/open/x', cert);
      assert.ok(res.error, `${what}: the handshake must fail, got ${JSON.stringify(res)}`);
    }
    assert.equal(up.requests.length, count, 'no request on a refused handshake reached the app');
  });
}

test('(client-cert) check: the claims and "required" need server.tls.client_ca; client_ca must be a CA file; one CA per listener', TIMEOUT, async (t) => {
  const pki = await makePki(t, { client: true, servers: { other: ['DNS:other.test'] } });
  const tls = (extra = {}) => `tls = ${tv({ cert: `${pki.dir}/server.pem`, key: `${pki.dir}/server.key`, ...extra })}\n`;
  const cases = [
    ['claim without client_ca', tls(), `[route.headers]\n"X-Client-Subject" = "tls_client_subject"\n`, /route\[0\]\.headers\."X-Client-Subject".*needs `server\.tls\.client_ca`/],
    ['required without client_ca', tls(), 'client_certificate = "required"\n', /route\[0\]\.client_certificate.*needs `server\.tls\.client_ca`/],
    ['a misspelt policy', tls({ client_ca: pki.client.caFile }), 'client_certificate = "mandatory"\n', /route\[0\]\.client_certificate.*"optional", "required"/],
    ['client_ca not a certificate', tls({ client_ca: `${pki.dir}/server.key` }), '', /server\.tls\.client_ca/],
    ['client_ca missing', tls({ client_ca: `${pki.dir}/nowhere.pem` }), '', /server\.tls\.client_ca.*cannot read/],
    ['two CAs for one listener', `[[server.tls]]\ncert = ${q(`${pki.dir}/server.pem`)}\nkey = ${q(`${pki.dir}/server.key`)}\nclient_ca = ${q(pki.client.caFile)}\n[[server.tls]]\ncert = ${q(pki.servers.other.certFile)}\nkey = ${q(pki.servers.other.keyFile)}\nhosts = ["other.test"]\nclient_ca = ${q(pki.caFile)}\n`, '', /server\.tls\[1\]\.client_ca.*one CA/],
  ];
  for (const [what, server, route, message] of cases) {
    const text = `[server]\nlisten = ["127.0.0.1:0"]\n${server.startsWith('[[') ? '' : server}[session]\nkeys = ["ZGVtby1rZXktbmV2ZXItdXNlLWluLXByb2R1Y3Rpb24="]\n${server.startsWith('[[') ? server : ''}[[route]]\nupstream = "http://127.0.0.1:9"\nauth = "public"\n${route}`;
    const file = path.join(pki.dir, 'check.toml');
    await writeFile(file, text);
    const r = await runPasserelle(['check', '--config', file]);
    const out = `${r.stdout ?? ''}${r.stderr ?? ''}`;
    assert.notEqual(r.code, 0, `${what}: check must refuse:\n${out}`);
    assert.match(out, message, `${what}:\n${out}`);
  }
});
