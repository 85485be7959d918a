// A newcomer's first hour: the demo of README's first command (config.example.toml, moved to free ports), as a
// person and an operator see it.
//
// - one start line says where to go: "open http://127.0.0.1:PORT/";
// - the echo application shows each identity header decoded next to its raw value, and which encoding is in use;
//   it offers "Se déconnecter" only to someone signed in;
// - clients that open a connection and leave (a browser's preconnect, a half-sent request) put no ERROR or WARN line
//   in the log: only what needs an operator's action does.
//
// Real parts: the binary with its built-in development provider and echo application, a scripted person.

import assert from 'node:assert/strict';
import net from 'node:net';
import { test } from 'node:test';

import { pause } from '../support/http.mjs';
import { createPerson, decodeEntities } from '../support/person.mjs';
import { demoConfig, launchPasserelle } from '../support/passerelle.mjs';

/** Opens a TCP connection, writes `bytes` (maybe none) and closes it once they are sent. */
function leave(port, bytes) {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1', () => s.end(bytes));
    s.on('close', resolve);
    s.on('error', resolve);
  });
}

test('(demo1) the demo: one line to open, the echo page decodes the identity, and signs out only who is signed in', async (t) => {
  const { toml, ports, base } = await demoConfig();
  const p = await launchPasserelle(t, toml, { adminPort: ports.admin });
  const opens = p.logs().split('\n').filter((l) => l.includes('"open ') || l.includes(' open '));
  assert.equal(opens.length, 1, p.logs());
  assert.match(opens[0], new RegExp(`open http://127\\.0\\.0\\.1:${ports.proxy}/`));

  const person = createPerson();
  // Not signed in: the public page says so and offers to sign in, not to sign out.
  const pub = await person.get(`${base}/public`);
  assert.equal(pub.status, 200);
  assert.doesNotMatch(pub.body, /Se déconnecter/);
  assert.match(pub.body, /Se connecter/);

  // Signed in as Hélène (born in Nouméa): her name reaches the app percent-encoded, and the page shows it decoded.
  const chooser = await person.get(`${base}/`);
  assert.equal(chooser.status, 200, chooser.body.slice(0, 500));
  const page = await person.submitForm(chooser, { form: (f) => f.inputs.some((i) => i.name === 'identity' && i.value === 'helene') });
  assert.equal(page.status, 200, page.body.slice(0, 800));
  const text = decodeEntities(page.body);
  assert.match(text, /<th>x-auth-given-name<\/th><td><code>H%C3%A9l%C3%A8ne<\/code><br><span class="en">lu par l'application : <strong>Hélène<\/strong>/);
  assert.match(text, /encodée en pourcent/);
  assert.match(page.body, /Se déconnecter/);
  assert.match(page.body, /th\{white-space:nowrap/, 'header names never break inside a word');
});

test('(demo2) clients that leave: preconnects and half-sent requests to every listener write no ERROR or WARN line', async (t) => {
  const { toml, ports } = await demoConfig();
  // pingora's records at DEBUG too: the demoted lines are then the sign that every closed connection was handled.
  const p = await launchPasserelle(t, toml, { adminPort: ports.admin, env: { PASSERELLE_LOG: 'info,pingora_core::apps=debug,pingora_proxy=debug' } });
  const before = p.logs().length;
  for (const port of [ports.proxy, ports.dev, ports.echo, ports.admin]) {
    for (const bytes of ['', 'G', 'GET / HTTP/1.1\r\nHost: x\r\n']) await leave(port, bytes);
  }
  // Two half-sent requests on each of the four listeners: eight records, each now at DEBUG.
  const closed = () => p.logs().slice(before).split('\n').filter((l) => /fails to read from downstream|downstream session type/.test(l));
  const deadline = Date.now() + 10_000;
  while (closed().length < 8) {
    assert.ok(Date.now() < deadline, `eight closed connections logged:\n${p.logs().slice(before)}`);
    await pause(20); // polling the log for the eighth record
  }
  assert.ok(closed().every((l) => /"level":"DEBUG"/.test(l)), closed().join('\n'));
  const loud = p.logs().slice(before).split('\n').filter((l) => /"level":"(ERROR|WARN)"/.test(l));
  assert.deepEqual(loud, [], 'nothing for an operator to act on');
});
