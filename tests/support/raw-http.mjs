// Raw HTTP/1.1 over a TCP socket, for requests no HTTP client would send (conflicting framing, bad chunking,
// duplicated Host, absolute-form targets, huge header blocks, slow clients) and for reading exactly what comes
// back on that connection: each response, in order, and whether the server closed the connection.
//
//   const c = await openRaw(port);                  // 127.0.0.1
//   c.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n');
//   const res = await c.response();                  // { status, headers, rawHeaders, body, text } or null if the
//                                                    // server closed the connection before answering
//   c.isClosed()                                     // the server (or we) closed it
//   c.destroy();
//
//   http1('POST', '/p', [['Host', h], ['Content-Length', '5']], 'hello')   // the bytes of one request

import net from 'node:net';

const CRLF = '\r\n';

/** The bytes of one HTTP/1.x request: request line, header lines exactly as given (duplicates, odd spacing), body. */
export function http1(method, target, headers = [], body = '', version = 'HTTP/1.1') {
  const head = [`${method} ${target} ${version}`, ...headers.map((h) => (Array.isArray(h) ? `${h[0]}: ${h[1]}` : h))];
  return Buffer.concat([Buffer.from(head.join(CRLF) + CRLF + CRLF, 'latin1'), Buffer.from(body, 'latin1')]);
}

/** The first response complete in `buf` and the bytes it took, or undefined when more bytes are needed. */
function parseResponse(buf, { closed, head }) {
  const end = buf.indexOf('\r\n\r\n');
  if (end < 0) return undefined;
  const lines = buf.subarray(0, end).toString('latin1').split(CRLF);
  const m = lines[0].match(/^HTTP\/(\d\.\d) (\d{3})(?: (.*))?$/);
  if (!m) throw new Error(`not an HTTP response: ${JSON.stringify(buf.subarray(0, 200).toString('latin1'))}`);
  const status = Number(m[2]);
  const rawHeaders = [];
  const headers = {};
  for (const line of lines.slice(1)) {
    const i = line.indexOf(':');
    const name = line.slice(0, i).trim();
    const value = line.slice(i + 1).trim();
    rawHeaders.push([name, value]);
    const k = name.toLowerCase();
    headers[k] = k in headers ? `${headers[k]}, ${value}` : value;
  }
  let offset = end + 4;
  let body;
  if ((status >= 100 && status < 200) || status === 204 || status === 304 || head) {
    body = Buffer.alloc(0);
  } else if (/chunked/i.test(headers['transfer-encoding'] || '')) {
    const parts = [];
    for (;;) {
      const lineEnd = buf.indexOf(CRLF, offset);
      if (lineEnd < 0) return undefined;
      const size = parseInt(buf.subarray(offset, lineEnd).toString('latin1').split(';')[0], 16);
      if (Number.isNaN(size)) throw new Error('bad chunk size in a response');
      if (size === 0) {
        const after = lineEnd + 2;
        if (buf.length < after + 2) return undefined;
        if (buf.subarray(after, after + 2).toString('latin1') === CRLF) {
          offset = after + 2;
        } else {
          const trailerEnd = buf.indexOf('\r\n\r\n', after);
          if (trailerEnd < 0) return undefined;
          offset = trailerEnd + 4;
        }
        break;
      }
      if (buf.length < lineEnd + 2 + size + 2) return undefined;
      parts.push(buf.subarray(lineEnd + 2, lineEnd + 2 + size));
      offset = lineEnd + 2 + size + 2;
    }
    body = Buffer.concat(parts);
  } else if (headers['content-length'] !== undefined) {
    const n = Number(headers['content-length']);
    if (buf.length < offset + n) return undefined;
    body = buf.subarray(offset, offset + n);
    offset += n;
  } else {
    // Delimited by the end of the connection.
    if (!closed) return undefined;
    body = buf.subarray(offset);
    offset = buf.length;
  }
  return {
    consumed: offset,
    response: {
      version: m[1], status, statusText: m[3] || '', headers, rawHeaders, body, text: body.toString('utf8'),
    },
  };
}

/**
 * A raw connection to 127.0.0.1:port. Resolves once connected.
 * @returns {Promise<RawConnection>}
 */
export function openRaw(port, { host = '127.0.0.1' } = {}) {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ port, host });
    socket.once('error', reject);
    socket.once('connect', () => {
      socket.off('error', reject);
      resolve(new RawConnection(socket));
    });
  });
}

export class RawConnection {
  constructor(socket) {
    this.socket = socket;
    this.buf = Buffer.alloc(0);
    this.closed = false;
    this.error = undefined;
    this.received = [];
    this.waiters = new Set();
    socket.setNoDelay(true);
    socket.on('data', (d) => {
      this.buf = Buffer.concat([this.buf, d]);
      this.#wake();
    });
    socket.on('error', (e) => {
      this.error = e; // ECONNRESET, EPIPE: the server closed on us; `closed` says so
    });
    socket.on('close', () => {
      this.closed = true;
      this.#wake();
    });
  }

  #wake() {
    for (const w of this.waiters) w();
  }

  isClosed() {
    return this.closed;
  }

  /** Write bytes (string as latin1, or Buffer); false when the connection is already closed. */
  write(data) {
    if (this.closed || this.socket.destroyed || this.socket.writableEnded) return false;
    this.socket.write(typeof data === 'string' ? Buffer.from(data, 'latin1') : data);
    return true;
  }

  /**
   * The next complete response on this connection; null when the connection closes first (bytes of an incomplete
   * response, if any, are in `partial`). Rejects after `timeoutMs` without either: a server that neither answers
   * nor closes (the test says what it sent).
   */
  response({ timeoutMs = 30_000, head = false } = {}) {
    return new Promise((resolve, reject) => {
      let timer;
      const check = () => {
        let parsed;
        try {
          parsed = parseResponse(this.buf, { closed: this.closed, head });
        } catch (e) {
          done();
          reject(e);
          return;
        }
        if (parsed) {
          this.buf = this.buf.subarray(parsed.consumed);
          if (parsed.response.status >= 100 && parsed.response.status < 200) {
            check(); // interim response (100 Continue): wait for the final one
            return;
          }
          done();
          this.received.push(parsed.response);
          resolve(parsed.response);
        } else if (this.closed) {
          done();
          this.partial = this.buf.toString('latin1');
          resolve(null);
        }
      };
      const done = () => {
        clearTimeout(timer);
        this.waiters.delete(check);
      };
      timer = setTimeout(() => {
        done();
        reject(new Error(`no response and no close within ${timeoutMs} ms; received so far: ${JSON.stringify(this.buf.subarray(0, 300).toString('latin1'))}`));
      }, timeoutMs);
      this.waiters.add(check);
      check();
    });
  }

  destroy() {
    this.socket.destroy();
  }
}

