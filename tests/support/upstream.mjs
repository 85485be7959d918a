// The upstream app behind Passerelle: records every request and answers 200 with a JSON echo of it (or what
// `answer` writes: browser.mjs's HTML page).
//
//   const up = await startUpstream();
//   up.requests   // [{ method, url, rawHeaders: ['Name', 'value', ...], headers }]
//   await up.stop();

import http from 'node:http';
import https from 'node:https';

import { listen, readBody, stopper } from './http.mjs';

/** Values of every header line named `name` (case-insensitive), in arrival order, from a rawHeaders array. */
export function headerValues(rawHeaders, name) {
  const wanted = name.toLowerCase();
  const out = [];
  for (let i = 0; i < rawHeaders.length; i += 2) {
    if (rawHeaders[i].toLowerCase() === wanted) out.push(rawHeaders[i + 1]);
  }
  return out;
}

/** Header lines (name, value) whose name matches `re`. */
export function headersMatching(rawHeaders, re) {
  const out = [];
  for (let i = 0; i < rawHeaders.length; i += 2) {
    if (re.test(rawHeaders[i])) out.push([rawHeaders[i], rawHeaders[i + 1]]);
  }
  return out;
}

/** The default answer: 200 with a JSON echo of the request (method, url, raw header lines). */
function jsonEcho(req, res, record) {
  const body = JSON.stringify({ method: record.method, url: record.url, rawHeaders: record.rawHeaders });
  res.writeHead(200, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(body),
  });
  res.end(body);
}

/**
 * @param {object} [opts]
 * @param {(req, res, record) => void} [opts.answer] writes the answer once the request is recorded (default: JSON echo)
 * @param {object} [opts.tls] https: node's TLS server options (key, cert, and for mTLS ca + requestCert)
 * @param {string} [opts.host] a loopback address other than 127.0.0.1
 * @param {number} [opts.port] a given port (default: any free one)
 */
export async function startUpstream({ answer = jsonEcho, tls, host = '127.0.0.1', port: wanted = 0 } = {}) {
  const requests = [];
  const handler = (req, res) => {
    readBody(req).then((body) => {
      const record = {
        method: req.method,
        url: req.url,
        /** the client port of the connection it came on: which pooled connection Passerelle used */
        remotePort: req.socket.remotePort,
        rawHeaders: [...req.rawHeaders],
        headers: { ...req.headers },
        body,
        /** over TLS: the client certificate's subject CN, when one was shown */
        clientCertificate: req.socket.getPeerCertificate?.()?.subject?.CN,
      };
      requests.push(record);
      answer(req, res, record);
    }, () => res.destroy());
  };
  const server = tls ? https.createServer(tls, handler) : http.createServer(handler);
  /** TLS handshakes the server refused (no or wrong client certificate) */
  const refusedHandshakes = [];
  server.on('tlsClientError', (e) => refusedHandshakes.push(e.code || e.message));
  const port = await listen(server, wanted, host);
  return {
    url: `${tls ? 'https' : 'http'}://${host}:${port}`,
    host,
    refusedHandshakes,
    port,
    requests,
    /** the last request received, or undefined */
    last() {
      return requests[requests.length - 1];
    },
    stop: stopper(server),
  };
}
