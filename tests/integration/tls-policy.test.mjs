// The TLS front door's policy, as a client sees it (issue 13, part 3; SECURITY.md "TLS policy"): with `server.tls`,
// Passerelle speaks TLS 1.2 and 1.3 only, with ECDHE key exchange and AEAD suites only (ANSSI's recommendations).
// rustls (ring provider) offers nothing else; this test pins it with a real client, the openssl CLI.

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { test } from 'node:test';

import { stopAfter } from '../support/http.mjs';
import { launchPasserelle } from '../support/passerelle.mjs';
import { makePki } from '../support/pki.mjs';
import { addresses, configToml, tv } from '../support/stack.mjs';
import { startUpstream } from '../support/upstream.mjs';

/** `openssl s_client` against 127.0.0.1:port with `args`: { ok, protocol, cipher, output }. */
function sClient(port, args) {
  return new Promise((resolve) => {
    const child = execFile('openssl', ['s_client', '-connect', `127.0.0.1:${port}`, '-servername', '127.0.0.1', ...args],
      { timeout: 10_000 }, (e, stdout, stderr) => {
        const output = `${stdout}${stderr}`;
        // "New, TLSv1.3, Cipher is TLS_AES_256_GCM_SHA384": printed as soon as the handshake ends (the SSL-Session
        // block may not be, when the connection closes before a TLS 1.3 session ticket arrives).
        const handshake = output.match(/^New, (\S+), Cipher is (\S+)/m);
        const protocol = handshake?.[1];
        const cipher = handshake?.[2];
        resolve({ ok: Boolean(cipher && cipher !== '(NONE)' && cipher !== '0000'), protocol, cipher, output });
      });
    child.stdin.end('Q\n');
  });
}

test('(tls-policy) TLS 1.2 and 1.3 only, ECDHE with AEAD only: TLS 1.1, TLS 1.0, CBC, RSA key exchange and DHE are refused', { timeout: 60_000 }, async (t) => {
  const pki = await makePki(t);
  assert.ok(pki, 'openssl is installed by the test script');
  const a = await addresses();
  const up = await stopAfter(t, startUpstream());
  const toml = configToml({
    writtenBy: 'tests/integration/tls-policy.test.mjs',
    port: a.port,
    adminPort: a.adminPort,
    publicUrl: `https://127.0.0.1:${a.port}`,
    extraServer: `tls = ${tv({ cert: `${pki.dir}/server.pem`, key: `${pki.dir}/server.key` })}\n`,
    routes: `[[route]]\nupstream = ${tv(up.url)}\nauth = "public"\n`,
  });
  await launchPasserelle(t, toml, { adminPort: a.adminPort });

  const tls13 = await sClient(a.port, ['-tls1_3', '-CAfile', pki.caFile]);
  assert.ok(tls13.ok, tls13.output);
  assert.equal(tls13.protocol, 'TLSv1.3');
  assert.match(tls13.cipher, /^TLS_(AES_(128|256)_GCM_SHA(256|384)|CHACHA20_POLY1305_SHA256)$/);
  const tls12 = await sClient(a.port, ['-tls1_2', '-CAfile', pki.caFile]);
  assert.ok(tls12.ok, tls12.output);
  assert.equal(tls12.protocol, 'TLSv1.2');
  assert.match(tls12.cipher, /^ECDHE-ECDSA-(AES(128|256)-GCM-SHA(256|384)|CHACHA20-POLY1305)$/, 'ECDHE and AEAD');

  // Each refused: the handshake ends without a cipher.
  for (const [what, args] of [
    ['TLS 1.1', ['-tls1_1', '-cipher', 'DEFAULT@SECLEVEL=0']],
    ['TLS 1.0', ['-tls1', '-cipher', 'DEFAULT@SECLEVEL=0']],
    ['a CBC suite over TLS 1.2', ['-tls1_2', '-cipher', 'ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA384:ECDHE-ECDSA-AES128-SHA256']],
    ['RSA key exchange', ['-tls1_2', '-cipher', 'AES128-GCM-SHA256:AES256-GCM-SHA384']],
    ['DHE', ['-tls1_2', '-cipher', 'DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384']],
  ]) {
    const r = await sClient(a.port, args);
    assert.equal(r.ok, false, `${what} must be refused:\n${r.output}`);
  }
});
