// The upstream app behind Passerelle: records every request and answers 200 with a JSON echo of it.
//
//   const up = await startUpstream();
//   up.requests   // [{ method, url, rawHeaders: ['Name', 'value', ...], headers }]
//   await up.stop();

import http from 'node:http';

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

export async function startUpstream() {
  const requests = [];
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const record = {
        method: req.method,
        url: req.url,
        rawHeaders: [...req.rawHeaders],
        headers: { ...req.headers },
        body: Buffer.concat(chunks).toString('utf8'),
      };
      requests.push(record);
      const body = JSON.stringify({ method: record.method, url: record.url, rawHeaders: record.rawHeaders });
      res.writeHead(200, {
        'content-type': 'application/json; charset=utf-8',
        'content-length': Buffer.byteLength(body),
      });
      res.end(body);
    });
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const { port } = server.address();
  let stopped = false;
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    requests,
    /** the last request received, or undefined */
    last() {
      return requests[requests.length - 1];
    },
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
