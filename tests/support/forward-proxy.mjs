// A small HTTP forward proxy on 127.0.0.1, like the egress proxy of a RIE network, that records every request.
//
//   const proxy = await startForwardProxy();
//   proxy.url        // "http://127.0.0.1:PORT"
//   proxy.requests   // [{ method, url, target, headers, status, tunnelPort (CONNECT: the tunnel's local port) }]
//   await proxy.stop();   // closes the listener and every connection, tunnels included
//
// It speaks both forms a client uses through a proxy:
// - absolute-form requests (`GET http://127.0.0.1:9000/path HTTP/1.1`), what reqwest sends for http:// targets:
//   forwarded to the target with a `Via: 1.1 test-forward-proxy` header added, so the target can tell proxied
//   requests from direct ones;
// - CONNECT host:port (what a client sends for https:// targets): a raw TCP tunnel.
// It refuses origin-form requests (`GET /path`): a client that talks to it as if it were the target is wrong.

import http from 'node:http';
import net from 'node:net';

import { closeServer, listen } from './http.mjs';

export const VIA = '1.1 test-forward-proxy';

// Hop-by-hop headers (RFC 9110 §7.6.1) are not forwarded.
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'proxy-authorization', 'proxy-authenticate',
  'te', 'trailer', 'transfer-encoding', 'upgrade']);

/** The end-to-end header lines of a rawHeaders array, as { Name: value or [values] } (names as sent). */
function endToEnd(rawHeaders) {
  const headers = {};
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const name = rawHeaders[i];
    if (HOP_BY_HOP.has(name.toLowerCase())) continue;
    const prev = headers[name];
    headers[name] = prev === undefined ? rawHeaders[i + 1] : [].concat(prev, rawHeaders[i + 1]);
  }
  return headers;
}

/** @param {object} [opts] @param {number} [opts.port] listen on this port (default: any free one) */
export async function startForwardProxy({ port: wantedPort = 0 } = {}) {
  const requests = [];
  const sockets = new Set();

  const server = http.createServer((req, res) => {
    const record = {
      method: req.method,
      url: req.url,
      target: undefined,
      headers: { ...req.headers },
      status: undefined,
    };
    requests.push(record);
    let target;
    try {
      target = new URL(req.url);
    } catch {
      target = undefined;
    }
    if (!target || target.protocol !== 'http:') {
      record.status = 400;
      res.writeHead(400, { 'content-type': 'text/plain' });
      res.end(`forward proxy: absolute-form http:// request expected, got ${req.method} ${req.url}\n`);
      return;
    }
    record.target = `${target.host}`;
    const headers = endToEnd(req.rawHeaders);
    headers.Via = VIA;
    if (req.headers['transfer-encoding'] && !req.headers['content-length']) headers['Transfer-Encoding'] = 'chunked';
    const upstream = http.request({
      host: target.hostname,
      port: target.port || 80,
      method: req.method,
      path: `${target.pathname}${target.search}`,
      headers,
      agent: false,
    }, (upRes) => {
      record.status = upRes.statusCode;
      res.writeHead(upRes.statusCode, upRes.statusMessage, endToEnd(upRes.rawHeaders));
      upRes.pipe(res);
    });
    upstream.on('error', (e) => {
      record.status = 502;
      record.error = e.message;
      if (!res.headersSent) {
        res.writeHead(502, { 'content-type': 'text/plain' });
        res.end(`forward proxy: ${e.message}\n`);
      } else {
        res.destroy();
      }
    });
    req.pipe(upstream);
  });

  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });

  server.on('connect', (req, client, head) => {
    const record = { method: 'CONNECT', url: req.url, target: req.url, headers: { ...req.headers }, status: undefined };
    requests.push(record);
    const m = /^([^:]+|\[[^\]]+\]):(\d+)$/.exec(req.url);
    if (!m) {
      record.status = 400;
      client.end('HTTP/1.1 400 Bad Request\r\n\r\n');
      return;
    }
    const upstream = net.connect(Number(m[2]), m[1].replace(/^\[|\]$/g, ''), () => {
      record.status = 200;
      record.tunnelPort = upstream.localPort; // the target sees the tunnel coming from this port
      client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
      if (head?.length) upstream.write(head);
      upstream.pipe(client);
      client.pipe(upstream);
    });
    sockets.add(upstream);
    upstream.on('close', () => sockets.delete(upstream));
    upstream.on('error', () => {
      if (record.status === undefined) {
        record.status = 502;
        client.end('HTTP/1.1 502 Bad Gateway\r\n\r\n');
      } else {
        client.destroy();
      }
    });
    client.on('error', () => upstream.destroy());
  });

  const port = await listen(server, wantedPort);

  let stopped = false;
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    requests,
    get stopped() {
      return stopped;
    },
    /** Requests whose absolute URL (or CONNECT target) starts with `prefix`. */
    requestsTo(prefix) {
      return requests.filter((r) => r.url.startsWith(prefix));
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      const closed = closeServer(server);
      for (const s of sockets) s.destroy(); // tunnels included
      await closed;
    },
  };
}
