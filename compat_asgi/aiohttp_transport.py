"""The fast upstream transport: aiohttp's C HTTP parser under the httpx API.

httpx stays the interface (``httpx.AsyncClient``, its timeouts, limits and
errors), only the bytes on the wire are handled by aiohttp, through the
``httpx-aiohttp`` package (installed with ``compat-asgi[fast]``). httpx's own
transport parses every HTTP chunk in pure Python (h11 + httpcore), and a
streaming server sends one chunk per event; aiohttp hands over whatever one
socket read brought, already de-chunked in C.

:class:`FastTransport` keeps the semantics :mod:`compat_asgi.upstream` relies
on, where the stock ``AiohttpTransport`` differs:

- the path is sent exactly as built (no re-quoting or dot-segment folding);
- a refused connection is ``httpx.ConnectError`` (502), not a timeout;
- waiting for a free connection is bounded by the pool timeout and raises
  ``httpx.PoolTimeout`` (the 503 server_busy), separately from the connect timeout;
- no cookie jar and no header the client did not build (one session serves
  every caller);
- a body is released on close: the connection goes back to the pool once
  its body was read to the end, and is closed otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator

import aiohttp
import httpx
import yarl
from httpx_aiohttp import AiohttpTransport

__all__ = ["FastTransport"]


@contextlib.contextmanager
def _mapped_errors() -> Iterator[None]:
    """aiohttp's errors as the httpx errors the httpx transport raises for the same fault."""
    try:
        yield
    except aiohttp.ConnectionTimeoutError as exc:
        raise httpx.ConnectTimeout(str(exc) or "connect timed out") from exc
    except (aiohttp.SocketTimeoutError, aiohttp.ServerTimeoutError, asyncio.TimeoutError) as exc:
        raise httpx.ReadTimeout(str(exc) or "read timed out") from exc
    except aiohttp.ClientConnectorError as exc:
        raise httpx.ConnectError(str(exc)) from exc
    except aiohttp.ClientPayloadError as exc:
        raise httpx.RemoteProtocolError(str(exc)) from exc
    except aiohttp.ClientResponseError as exc:  # a malformed status line or headers
        raise httpx.RemoteProtocolError(exc.message or str(exc)) from exc
    except (aiohttp.ClientError, OSError) as exc:
        raise httpx.ReadError(str(exc) or type(exc).__name__) from exc


class _Body(httpx.AsyncByteStream):
    def __init__(self, response: aiohttp.ClientResponse, slot: asyncio.Semaphore) -> None:
        self._response = response
        self._slot: asyncio.Semaphore | None = slot

    async def __aiter__(self) -> AsyncIterator[bytes]:
        content = self._response.content
        with _mapped_errors():
            # Whatever is buffered, however many HTTP chunks it spans: one
            # piece per socket read instead of one per chunk.
            while piece := await content.readany():
                yield piece

    async def aclose(self) -> None:
        slot, self._slot = self._slot, None
        try:
            # Back to the pool if the body was read to its end, else closed.
            self._response.release()
        finally:
            if slot is not None:
                slot.release()


# Subclassing an untyped base when httpx-aiohttp is absent at type-check time.
class FastTransport(AiohttpTransport):  # type: ignore[misc,unused-ignore]
    """``httpx_aiohttp.AiohttpTransport`` with the semantics of httpx's own transport."""

    def __init__(self, *, limits: httpx.Limits) -> None:
        super().__init__(limits=limits, trust_env=False)
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # httpx's pool timeout is about waiting for a free connection; aiohttp's
        # connector cannot tell that wait from connecting, so the wait is ours:
        # one slot per connection the pool may hold.
        self._slots = asyncio.Semaphore(limits.max_connections or 1 << 30)

    def get_client(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=self.limits.max_connections or 0,
            keepalive_timeout=self.limits.keepalive_expiry or 0,
            ssl=self.ssl_context,
        )
        return aiohttp.ClientSession(
            connector=connector,
            # One session for every caller: a cookie one answer sets must not
            # travel with another caller's request.
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
            trust_env=False,
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        loop = asyncio.get_running_loop()
        session = self._session
        if session is None or self._loop is not loop:
            # A session and its connections belong to one event loop: an app
            # driven by several asyncio.run() calls gets a fresh pool in each.
            self._loop = loop
            session = self._session = self.client = self.get_client()
            self._slots = asyncio.Semaphore(self.limits.max_connections or 1 << 30)
        timeout = request.extensions.get("timeout", {})
        try:
            async with asyncio.timeout(timeout.get("pool")):
                await self._slots.acquire()
        except TimeoutError:
            raise httpx.PoolTimeout("no connection came free in the pool timeout") from None
        try:
            body = await request.aread()
            with _mapped_errors():
                response = await session.request(
                    request.method,
                    yarl.URL(str(request.url), encoded=True),
                    headers=[(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers.raw],
                    data=body or None,
                    allow_redirects=False,
                    compress=None,
                    # Only what httpx built goes out (no default content type).
                    skip_auto_headers=("Content-Type", "User-Agent", "Accept-Encoding"),
                    timeout=aiohttp.ClientTimeout(
                        total=None, sock_connect=timeout.get("connect"), sock_read=timeout.get("read")
                    ),
                    server_hostname=request.extensions.get("sni_hostname"),
                )
        except BaseException:
            self._slots.release()
            raise
        extensions: dict[str, object] = {"http_version": b"HTTP/1.1"}
        if response.reason:
            extensions["reason_phrase"] = response.reason.encode("latin-1", "replace")
        return httpx.Response(
            status_code=response.status,
            headers=list(response.raw_headers),
            stream=_Body(response, self._slots),
            request=request,
            extensions=extensions,
        )
