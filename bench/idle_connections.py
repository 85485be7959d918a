#!/usr/bin/env python3
"""Holds many idle keep-alive connections open against one HTTP/1.1 server (bench/run.sh, memory per idle
connection).

    idle_connections.py HOST PORT PATH COUNT [HEADER ...]

Opens COUNT connections (at most 200 connecting at a time), sends one `GET PATH` on each with the given extra
headers (`Name: value`), reads the whole answer (Content-Length or chunked) and keeps the connection open and
silent. It then prints `open N` (N = connections whose answer was a 2xx) and waits for a line on stdin; any
line closes every connection, prints `closed` and exits. A connection the server closes while idle is counted
and reported (`dropped N`) when the connections are closed.

Nothing here is timed: the caller reads the server's memory between `open` and the line it sends.
"""

import asyncio
import sys


async def one_request(host, port, request):
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(request)
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    status = int(status_line.split(" ")[1])
    headers = {}
    for line in lines:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    return status, reader, writer


async def main():
    if len(sys.argv) < 5:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    host, port, path, count = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    extra = "".join(f"{h}\r\n" for h in sys.argv[5:])
    request = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n{extra}\r\n".encode()
    gate = asyncio.Semaphore(200)

    async def guarded():
        async with gate:
            return await one_request(host, port, request)

    results = await asyncio.gather(*(guarded() for _ in range(count)), return_exceptions=True)
    conns = [r for r in results if not isinstance(r, BaseException)]
    failures = [r for r in results if isinstance(r, BaseException)]
    ok = sum(1 for status, _, _ in conns if 200 <= status < 300)
    if failures:
        print(f"failed {len(failures)}: {failures[0]!r}", file=sys.stderr)
    print(f"open {ok}", flush=True)

    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    dropped = sum(1 for _, reader, _ in conns if reader.at_eof())
    for _, _, writer in conns:
        writer.close()
    print(f"dropped {dropped}", flush=True)
    print("closed", flush=True)


asyncio.run(main())
