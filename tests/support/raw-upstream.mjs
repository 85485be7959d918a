// An upstream written on node:net instead of node:http: it records every request exactly as the bytes arrived
// (header values as Buffers, so a byte >= 0x80 is compared as that byte, not as whatever a decoder made of it),
// which connection carried it and how many requests that connection had carried before; and it can drop a
// connection instead of answering (a stale keep-alive connection, which makes pingora retry on a fresh one).
//
//   const up = await startRawUpstream({ answer: (rec) => rec.index === 0 ? { status: 200 } : 'drop' });
//   up.url, up.port
//   up.requests    // [{ conn, index, method, target, version, head (Buffer), headers: [[name, Buffer]], dropped }]
//   headerBytes(rec, 'cookie')   // the values of every `Cookie` line, as Buffers, in order
//   await up.stop();
//
// `answer(record)` returns 'drop' (the socket is destroyed without a byte of answer) or { status, headers:
// [[name, value]], body } (Content-Length is added; the connection is kept alive). The default answers 200 with
// a short body. Requests with a body are read by Content-Length (chunked bodies are not supported: the tests
// using this upstream send GETs).

import net from 'node:net';

const CRLF = Buffer.from('\r\n\r\n');

/** The values of every header line named `name` (case-insensitive), as Buffers, in arrival order. */
export function headerBytes(record, name) {
  const wanted = name.toLowerCase();
  return record.headers.filter(([n]) => n.toLowerCase() === wanted).map(([, v]) => v);
}

/** The same, as latin1 text (one character per byte). */
export function headerText(record, name) {
  return headerBytes(record, name).map((v) => v.toString('latin1'));
}

function parseHead(head) {
  const lines = head.toString('latin1').split('\r\n');
  const [method, target, version] = lines[0].split(' ');
  const headers = [];
  let offset = Buffer.byteLength(lines[0], 'latin1') + 2;
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(':');
    const name = line.slice(0, colon);
    // The value's bytes, taken from the buffer itself (latin1 round-trips every byte, but be literal).
    const raw = head.subarray(offset + colon + 1, offset + Buffer.byteLength(line, 'latin1'));
    let start = 0;
    let end = raw.length;
    while (start < end && (raw[start] === 0x20 || raw[start] === 0x09)) start++;
    while (end > start && (raw[end - 1] === 0x20 || raw[end - 1] === 0x09)) end--;
    headers.push([name, Buffer.from(raw.subarray(start, end))]);
    offset += Buffer.byteLength(line, 'latin1') + 2;
  }
  return { method, target, version, headers };
}

function defaultAnswer() {
  return { status: 200, headers: [['Content-Type', 'text/plain']], body: 'ok' };
}

export async function startRawUpstream({ answer = defaultAnswer } = {}) {
  const requests = [];
  const sockets = new Set();
  let connections = 0;
  const server = net.createServer((socket) => {
    const conn = ++connections;
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => {});
    let buf = Buffer.alloc(0);
    let index = 0;
    socket.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      for (;;) {
        const end = buf.indexOf(CRLF);
        if (end < 0) return;
        const head = buf.subarray(0, end);
        const parsed = parseHead(head);
        const length = Number(parsed.headers.find(([n]) => n.toLowerCase() === 'content-length')?.[1].toString('latin1') ?? 0);
        if (buf.length < end + 4 + length) return;
        const body = Buffer.from(buf.subarray(end + 4, end + 4 + length));
        buf = buf.subarray(end + 4 + length);
        const record = { conn, index: index++, ...parsed, head: Buffer.from(head), body, dropped: false };
        requests.push(record);
        const a = answer(record);
        if (a === 'drop') {
          record.dropped = true;
          socket.destroy();
          return;
        }
        const payload = Buffer.from(a.body ?? '');
        const lines = [`HTTP/1.1 ${a.status ?? 200} X`, ...(a.headers ?? []).map(([n, v]) => `${n}: ${v}`),
          `Content-Length: ${payload.length}`, 'Connection: keep-alive'];
        socket.write(Buffer.concat([Buffer.from(`${lines.join('\r\n')}\r\n\r\n`, 'latin1'), payload]));
      }
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
    async stop() {
      if (stopped) return;
      stopped = true;
      for (const s of sockets) s.destroy();
      await new Promise((resolve) => server.close(() => resolve()));
    },
  };
}
