// The upstream app behind Passerelle: records every request and answers 200 with a JSON echo of it (or what
// `answer` writes: browser.mjs's HTML page).
//
//   const up = await startUpstream();
//   up.requests   // [{ method, url, rawHeaders: ['Name', 'value', ...], headers }]
//   await up.stop();

import http from 'node:http';

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
 */
export async function startUpstream({ answer = jsonEcho } = {}) {
  const requests = [];
  const server = http.createServer((req, res) => {
    readBody(req).then((body) => {
      const record = {
        method: req.method,
        url: req.url,
        /** the client port of the connection it came on: which pooled connection Passerelle used */
        remotePort: req.socket.remotePort,
        rawHeaders: [...req.rawHeaders],
        headers: { ...req.headers },
        body,
      };
      requests.push(record);
      answer(req, res, record);
    }, () => res.destroy());
  });
  const port = await listen(server);
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    requests,
    /** the last request received, or undefined */
    last() {
      return requests[requests.length - 1];
    },
    stop: stopper(server),
  };
}
