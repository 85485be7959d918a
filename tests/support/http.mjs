// Small HTTP helpers shared by the test servers (providers, upstreams, proxies) and the scenarios.
//
//   const port = await listen(server);            // 127.0.0.1, any free port (or listen(server, port))
//   const stop = stopper(server);                 // idempotent: closes the listener and every connection
//   const up = await stopAfter(t, startUpstream());   // stopped by t.after
//   await httpGetStatus(url);                     // the status code, or undefined when nothing answers
//   const body = await readBody(req);             // a request's body as UTF-8 text
//   const json = await getJson(url, ca);          // GET, 200 expected (http or https with a private CA)

import http from 'node:http';
import https from 'node:https';

/** For polling loops: resolves after `ms` milliseconds. */
export const pause = (ms) => new Promise((r) => setTimeout(r, ms));

/** Listen on 127.0.0.1 (`port` 0: any free one; `host` another loopback address); resolves the port listened on. */
export async function listen(server, port = 0, host = '127.0.0.1') {
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, resolve);
  });
  return server.address().port;
}

/** Close the listener and every connection it holds (keep-alive ones included). */
export function closeServer(server) {
  return new Promise((resolve) => {
    server.close(() => resolve());
    server.closeAllConnections();
  });
}

/** An idempotent `stop()` that closes these servers (see closeServer). */
export function stopper(...servers) {
  let stopped = false;
  return async function stop() {
    if (stopped) return;
    stopped = true;
    await Promise.all(servers.map(closeServer));
  };
}

/** Await a test server being started (anything with a stop()) and have t.after stop it. */
export async function stopAfter(t, starting) {
  const server = await starting;
  t.after(() => server.stop());
  return server;
}

/** GET `url`: its status code, or undefined when nothing answers within `timeoutMs`. */
export function httpGetStatus(url, timeoutMs = 1000) {
  return new Promise((resolve) => {
    const req = http.get(url, { agent: false, timeout: timeoutMs }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode));
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(undefined));
  });
}

/** A request's whole body, as UTF-8 text. */
export function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

/** GET a JSON document (http, or https trusting `ca`); rejects unless the answer is 200. */
export function getJson(url, ca) {
  return new Promise((resolve, reject) => {
    (url.startsWith('https:') ? https : http).get(url, { agent: false, ca }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk) => { body += chunk; });
      res.on('end', () => {
        if (res.statusCode !== 200) reject(new Error(`GET ${url} answered ${res.statusCode}: ${body}`));
        else resolve(JSON.parse(body));
      });
    }).on('error', reject);
  });
}

export function escapeHtml(s) {
  return String(s).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]);
}
