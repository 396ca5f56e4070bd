"""Exactly N keep-alive POSTs of one body over C connections (raw sockets), each answer read whole
(Content-Length or chunked) and required to be 200: a live server's instructions per request are
its count over N (bench/callgrind/count_live.sh).

    python bench/callgrind/client.py HOST PORT PATH BODY_FILE CONTENT_TYPE N C [ACCEPT]
"""

from __future__ import annotations

import asyncio
import sys


async def one_connection(host: str, port: int, request: bytes, count: int) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    for _ in range(count):
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"not a 200: {head[:200]!r}")
        lengths = [int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")]
        if lengths:
            await reader.readexactly(lengths[0])
        else:  # chunked
            await reader.readuntil(b"0\r\n\r\n")
    writer.close()


def main() -> None:
    host, port, path, body_file, content_type = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
    n, connections = int(sys.argv[6]), int(sys.argv[7])
    accept = sys.argv[8] if len(sys.argv) > 8 else "application/json"
    with open(body_file, "rb") as handle:
        body = handle.read()
    request = (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\nAccept: {accept}\r\n"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body

    async def run() -> None:
        await asyncio.gather(*(one_connection(host, port, request, n // connections) for _ in range(connections)))

    asyncio.run(run())


if __name__ == "__main__":
    main()
