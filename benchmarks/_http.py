"""The benchmarks' load generator: a minimal HTTP/1.1 keep-alive connection to a node's API.

The load generator shares the two cores with the server, so it must cost far less per request
than the server does: aiohttp costs about a third of a core at 1,000 requests/s here, httpx's
async client more than a whole one (and added ~20 ms per request under load).
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit


class RawHTTP:
    """One keep-alive connection; each request is written in one piece and passes the API's
    defaults (docs/security.md): ``Host`` is the address connected to, the body is JSON, and the
    token is sent as a bearer token."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, headers: str
    ) -> None:
        self.reader, self.writer = reader, writer
        self._headers = headers  # the same on every request: built once

    @classmethod
    async def connect(cls, url: str, token: str) -> RawHTTP:
        """Connect to ``url`` (``http://host:port``); every request sends ``token``."""
        address = urlsplit(url)
        assert address.hostname is not None and address.port is not None, url
        headers = (
            f"Host: {address.netloc}\r\nAuthorization: Bearer {token}\r\n"
            "Content-Type: application/json\r\n"
        )
        reader, writer = await asyncio.open_connection(address.hostname, address.port)
        return cls(reader, writer, headers)

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        """The status and body of the answer to one request."""
        head = f"{method} {path} HTTP/1.1\r\n{self._headers}Content-Length: {len(body)}\r\n\r\n"
        self.writer.write(head.encode() + body)
        status = int((await self.reader.readline()).split()[1])
        length = 0
        while (line := await self.reader.readline()) != b"\r\n":
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.close()
