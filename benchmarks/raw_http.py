"""A lean HTTP/1.1 client for the benchmarks: asyncio streams, keep-alive connections, pre-encoded requests.

The client shares the 2-core machine with the server it measures, so what it spends is taken from the
server: httpx costs ~0.9 ms of CPU per /predict (measured: 0.87 ms against 0.33 ms for this client at
concurrency 8), a third of the server's own cost per answer. ``RawClient`` parses only the status line and
the headers; a caller that checks the answer decodes the body itself, outside the timed call.
"""

from __future__ import annotations

import asyncio
import json


class _Stale(Exception):
    """No byte of an answer came back on a connection (closed by the server, or reset)."""


class RawClient:
    """POST of pre-encoded JSON bodies to one route over a pool of keep-alive connections.

    A connection the server closes (``Connection: close``, e.g. to rebalance its workers) is closed here and
    the next request opens a new one; an idle connection found closed is retried once on a new one.

    Parameters
    ----------
    host, port : str, int
        The server.
    bodies : list of bytes
        The request bodies; ``post(i)`` sends ``bodies[i % len(bodies)]``.
    path : str, default "/predict"
        The route.
    """

    def __init__(self, host: str, port: int, bodies: list[bytes], path: str = "/predict"):
        self.host, self.port = host, port
        self.requests = [b"POST %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (path.encode(), host.encode(), port, len(b), b)
                         for b in bodies]
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.opened = 0  # connections opened (a measure of the server's rebalancing)

    @classmethod
    def for_url(cls, url: str, bodies: list[bytes], path: str = "/predict") -> RawClient:
        host, port = url.removeprefix("http://").split(":")
        return cls(host, int(port), bodies, path)

    async def post(self, i: int) -> tuple[int, dict[str, str], bytes]:
        """Send request ``i``: (status, headers with lower-case names, body)."""
        if self.idle:
            try:
                return await self._post(self.idle.pop(), i)
            except _Stale:  # the server closed an idle keep-alive connection: retry once on a new one
                pass
        self.opened += 1
        return await self._post(await asyncio.open_connection(self.host, self.port), i)

    async def _post(self, conn, i: int) -> tuple[int, dict[str, str], bytes]:
        reader, writer = conn
        try:
            writer.write(self.requests[i % len(self.requests)])
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError) as err:
            writer.close()
            if isinstance(err, asyncio.IncompleteReadError) and err.partial:
                raise  # part of an answer arrived: a real failure
            raise _Stale from err
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:] if h)}
        body = await reader.readexactly(int(headers.get("content-length", 0)))
        if headers.get("connection", "").lower() == "close":
            writer.close()
        else:
            self.idle.append(conn)
        return status, headers, body

    def close(self) -> None:
        for _, writer in self.idle:
            writer.close()
        self.idle = []


def json_bodies(key: str, values: list) -> list[bytes]:
    """``{key: value}`` encoded once per value (the client does not encode while it is timed)."""
    return [json.dumps({key: v}).encode() for v in values]
