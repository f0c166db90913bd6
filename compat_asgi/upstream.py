"""The backend behind the middleware: an in-process ASGI app or an HTTP server.

Both sit behind one small interface: :meth:`Upstream.request` returns an
:class:`UpstreamResponse` once the status and headers are known; its body is
then read chunk by chunk, never buffered whole unless asked with ``read()``.
Transport failures become :mod:`compat_asgi.errors` types here and nowhere else.
"""

from __future__ import annotations

import asyncio
import http.cookiejar
import contextlib
import importlib.util
import os
import zlib
from collections.abc import AsyncIterator
from typing import Any, Literal, Protocol
from urllib.parse import unquote, urlsplit

import httpx

from compat_asgi.errors import (
    InvalidRequest,
    ServerBusy,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamTimeout,
)
from compat_asgi.paths import app_path, checked_path
from compat_asgi.types import ASGIApp, Headers, Message, Scope

__all__ = [
    "Upstream",
    "UpstreamResponse",
    "AppUpstream",
    "HTTPUpstream",
    "DEFAULT_TIMEOUT",
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_POOL_TIMEOUT",
    "DEFAULT_MAX_CONNECTIONS",
    "HTTP_CLIENT_ENV",
    "HTTPClientName",
    "connection_tokens",
    "resolve_http_client",
]

DEFAULT_TIMEOUT = 600.0  # seconds of upstream silence tolerated (models can think for long)
DEFAULT_CONNECT_TIMEOUT = 10.0
# Seconds a request waits for a free pooled upstream connection before it is
# answered 503 server_busy: queueing longer only hides an overload from clients.
DEFAULT_POOL_TIMEOUT = 5.0
DEFAULT_MAX_CONNECTIONS = 256
# Content codings httpx decodes here (br and zstd only with their optional
# packages); a body in any other coding is passed on as it came, or refused.
try:
    from httpx._decoders import SUPPORTED_DECODERS as _HTTPX_DECODERS

    _DECODABLE = frozenset(name.encode() for name in _HTTPX_DECODERS)
except ImportError:  # pragma: no cover - httpx moved its private module
    _DECODABLE = frozenset({b"identity", b"gzip", b"deflate"})
HTTPClientName = Literal["auto", "httpx", "aiohttp"]
#: Overrides what ``http_client="auto"`` picks (``httpx`` or ``aiohttp``), in
#: every process: how a whole test run or deployment is pinned to one transport.
HTTP_CLIENT_ENV = "COMPAT_ASGI_HTTP_CLIENT"
_APP_QUEUE_SIZE = 64  # body messages buffered from an in-process app before it is paused
_READ_AHEAD = 64 << 10  # bytes of an HTTP body read ahead of its consumer, at most
# Hop-by-hop and framing headers are the proxy's own business (RFC 9110 section 7.6.1).
_DROP_REQUEST_HEADERS = frozenset(
    {
        b"host",
        b"content-length",
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"transfer-encoding",
        b"te",
        b"trailer",
        b"upgrade",
        b"accept-encoding",
        b"proxy-authorization",
    }
)


class UpstreamResponse(Protocol):
    status: int
    headers: Headers
    # A Content-Encoding this server cannot decode (then kept in ``headers``).
    undecodable: str | None

    def chunks(self, *, undecoded: bool = False) -> AsyncIterator[bytes]: ...

    async def read(self, limit: int) -> bytes: ...

    async def aclose(self) -> None: ...


class Upstream(Protocol):
    async def request(
        self,
        method: str,
        path: str,
        headers: Headers,
        body: bytes,
        query: bytes = b"",
        scope: Scope | None = None,
    ) -> UpstreamResponse:
        """Send the request; return once the status line and headers are in.

        ``scope`` is the client's ASGI scope, for in-process upstreams that
        should see the same client, server and root path.
        """
        ...

    async def aclose(self) -> None: ...


def connection_tokens(headers: Headers) -> frozenset[bytes]:
    """Header names listed in ``Connection``: hop-by-hop for this one
    connection, never forwarded (RFC 9110 section 7.6.1)."""
    names: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            names.update(token.strip().lower() for token in value.split(b",") if token.strip())
    return frozenset(names)


def forward_headers(headers: Headers, authorization: bytes | None) -> Headers:
    """Client request headers as sent on to the upstream."""
    named = connection_tokens(headers)
    out = [
        (k, v)
        for k, v in headers
        if k not in _DROP_REQUEST_HEADERS
        and k not in named
        and not (authorization and k == b"authorization")
    ]
    if authorization:
        out.append((b"authorization", authorization))
    return out


async def _read_limited(chunks: AsyncIterator[bytes], limit: int) -> bytes:
    body = bytearray()
    async for chunk in chunks:
        body += chunk
        if len(body) > limit:
            raise UpstreamError(f"upstream response body exceeds {limit} bytes")
    return bytes(body)


# -- in-process ASGI app --------------------------------------------------------


class _Channel:
    """The wrapped app's messages on their way to the reader, in batches.

    What ``asyncio.Queue`` would do, for less per message: ``put`` appends
    and wakes the reader only if it waits; ``take`` hands over everything
    sent since it last looked. The app waits only when ``limit`` messages
    are pending (back-pressure). Single reader; any number of senders.
    """

    __slots__ = ("_items", "_limit", "_reader", "_writers")

    def __init__(self, limit: int) -> None:
        self._items: list[Message | BaseException] = []
        self._limit = limit
        self._reader: asyncio.Future[None] | None = None
        self._writers: list[asyncio.Future[None]] = []

    async def put(self, item: Message | BaseException) -> None:
        while len(self._items) >= self._limit:
            waiter = asyncio.get_running_loop().create_future()
            self._writers.append(waiter)
            try:
                await waiter
            finally:
                if waiter in self._writers:
                    self._writers.remove(waiter)
        self._items.append(item)
        reader = self._reader
        if reader is not None:
            self._reader = None
            if not reader.done():
                reader.set_result(None)

    async def take(self) -> list[Message | BaseException]:
        while not self._items:
            self._reader = waiter = asyncio.get_running_loop().create_future()
            try:
                await waiter
            finally:
                self._reader = None
        items, self._items = self._items, []
        writers, self._writers = self._writers, []
        for writer in writers:
            if not writer.done():
                writer.set_result(None)
        return items

    def put_back(self, items: list[Message | BaseException]) -> None:
        """Return what ``take`` handed over but the reader did not use, ahead of the rest."""
        self._items[:0] = items


class _AppResponse:
    def __init__(
        self,
        status: int,
        headers: Headers,
        channel: _Channel,
        task: asyncio.Task[None],
        disconnected: asyncio.Event,
    ) -> None:
        self.status = status
        self._channel = channel
        self._task = task
        self._disconnected = disconnected
        # We ask for identity encoding, but an app may compress regardless
        # (a GZip middleware inside the wrapped app): undo what we can.
        self._decoder: Any = None
        self.undecodable: str | None = None
        self.headers: Headers = []
        for name, value in headers:
            if name.lower() != b"content-encoding":
                self.headers.append((name, value))
                continue
            coding = value.strip().lower()
            if coding in (b"gzip", b"x-gzip", b"deflate"):
                self._decoder = zlib.decompressobj(47)  # 32 + 15: auto-detect gzip or zlib header
                self.headers = [(k, v) for k, v in self.headers if k.lower() != b"content-length"]
            elif coding != b"identity":
                self.headers.append((name, value))
                self.undecodable = coding.decode("latin-1")

    async def chunks(self, *, undecoded: bool = False) -> AsyncIterator[bytes]:
        if self.undecodable is not None and not undecoded:
            raise UpstreamProtocolError(
                f"the wrapped app compressed its response with {self.undecodable!r}; "
                "put compression middleware outside CompatMiddleware, not inside"
            )
        channel = self._channel
        while True:
            # Take every message already sent as one chunk: an app that runs
            # ahead of us costs one translation and one send per batch, not
            # per message. Nothing waits for a batch to fill.
            batch: list[bytes] = []
            failure: BaseException | None = None
            ended = False
            for message in await channel.take():
                if isinstance(message, BaseException):
                    failure = UpstreamError(f"upstream app failed mid-response: {message!r}")
                    failure.__cause__ = message
                    break
                if message["type"] == "http.response.body":  # not e.g. http.response.trailers
                    body = message.get("body", b"")
                    if self._decoder is not None:
                        try:
                            body = self._decoder.decompress(body)
                        except zlib.error as exc:
                            failure = UpstreamProtocolError(
                                f"the wrapped app sent a corrupt compressed body: {exc}"
                            )
                            break
                    if body:
                        batch.append(body)
                    if not message.get("more_body", False):
                        ended = True
                        break
            if batch:
                yield b"".join(batch)
            if failure is not None:
                raise failure
            if ended:
                return

    async def read(self, limit: int) -> bytes:
        return await _read_limited(self.chunks(), limit)

    async def aclose(self) -> None:
        self._disconnected.set()
        if not self._task.done():
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task


class AppUpstream:
    """Calls a wrapped ASGI app directly with its own receive/send.

    Not through httpx's ASGITransport: that buffers the whole body, which
    would defeat streaming. A bounded queue gives the app back-pressure.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def request(
        self,
        method: str,
        path: str,
        headers: Headers,
        body: bytes,
        query: bytes = b"",
        scope: Scope | None = None,
    ) -> UpstreamResponse:
        # Callers pass checked paths; this is the last line of defence for all of them.
        path = checked_path(path.encode("utf-8"), encoded_slash=True)
        base = dict(scope) if scope is not None else {}
        child: Scope = {
            **base,
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": base.get("http_version", "1.1"),
            "method": method,
            "scheme": base.get("scheme", "http"),
            "path": base.get("root_path", "") + app_path(path),
            "raw_path": (base.get("root_path", "") + path).encode(),
            "query_string": query,
            "root_path": base.get("root_path", ""),
            "headers": headers + [(b"content-length", str(len(body)).encode())],
        }
        channel = _Channel(_APP_QUEUE_SIZE)
        disconnected = asyncio.Event()
        sent_body = False

        async def receive() -> Message:
            nonlocal sent_body
            if not sent_body:
                sent_body = True
                return {"type": "http.request", "body": body, "more_body": False}
            await disconnected.wait()
            return {"type": "http.disconnect"}

        async def run() -> None:
            try:
                await self.app(child, receive, channel.put)
            except Exception as exc:  # reported to the reader, which owns the outcome
                await channel.put(exc)
            else:
                await channel.put({"type": "http.response.body", "body": b"", "more_body": False})

        task = asyncio.create_task(run())
        first = await channel.take()
        start = first[0]
        if len(first) > 1:  # what came with the start is the body's beginning: give it back
            channel.put_back(first[1:])
        if isinstance(start, BaseException):
            raise UpstreamError(f"upstream app failed: {start!r}") from start
        if start.get("type") != "http.response.start":
            task.cancel()
            raise UpstreamError("upstream app ended without a response")
        return _AppResponse(start["status"], list(start.get("headers", [])), channel, task, disconnected)

    async def aclose(self) -> None:
        return None


# -- HTTP server over httpx -----------------------------------------------------


class _HTTPResponse:
    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self.status = response.status_code
        self._reader: asyncio.Task[None] | None = None
        codings = [
            token.strip().lower()
            for name, value in response.headers.raw
            if name.lower() == b"content-encoding"
            for token in value.split(b",")
            if token.strip()
        ]
        self._decoded = any(coding != b"identity" for coding in codings)
        # A coding httpx cannot decode: it would silently hand over the encoded
        # bytes as if plain. Passthrough sends them on with their header;
        # everything that parses the body refuses them (chunks()).
        unknown = [coding for coding in codings if coding not in _DECODABLE]
        self.undecodable = b", ".join(unknown).decode("latin-1") if unknown else None
        if self._decoded and self.undecodable is None:
            # httpx hands over decoded bytes: the encoding headers no longer apply.
            self.headers: Headers = [
                (k, v)
                for k, v in response.headers.raw
                if k.lower() not in (b"content-encoding", b"content-length")
            ]
        else:
            self.headers = list(response.headers.raw)

    async def _pieces(self, *, undecoded: bool = False) -> AsyncIterator[bytes]:
        """The body as httpx yields it: one piece per HTTP chunk, which from
        most servers means one per SSE event, however many a socket read brought."""
        if self.undecodable is not None and not undecoded:
            raise UpstreamProtocolError(
                f"the upstream answered with Content-Encoding {self.undecodable!r}, "
                "which this server cannot decode"
            )
        # Undecoded bytes need no decoder and chunker layer per piece.
        decode = self._decoded and self.undecodable is None
        # A response some transports hand over already read (httpx.MockTransport,
        # respx) has no raw stream left, only its content.
        read = self._response.is_stream_consumed
        pieces = self._response.aiter_bytes() if decode or read else self._response.aiter_raw()
        try:
            async for piece in pieces:
                yield piece
        except httpx.TimeoutException as exc:
            raise UpstreamTimeout("upstream timed out while streaming its response") from exc
        except httpx.HTTPError as exc:
            raise UpstreamError(f"upstream connection failed mid-response: {exc!r}") from exc

    async def chunks(self, *, undecoded: bool = False) -> AsyncIterator[bytes]:
        """The body as it arrives; pieces that arrived while the consumer was
        busy come joined as one chunk.

        A body in a Content-Encoding this server cannot decode raises
        :class:`UpstreamProtocolError`, unless ``undecoded`` asks for its bytes
        as they are (``headers`` then still carry the coding).

        Translating and sending once per batch instead of once per event halves
        the CPU per event under load. The first piece is read directly, so the
        first byte is not delayed; then a reader task gathers pieces while the
        consumer works. It never waits to fill a batch and stays at most
        ``_READ_AHEAD`` bytes ahead.
        """
        pieces = self._pieces(undecoded=undecoded)
        first = await anext(pieces, None)
        if first is None:
            return
        yield first
        batch: list[bytes] = []
        size = 0
        arrived = asyncio.Event()
        drained = asyncio.Event()
        end: list[Exception | None] = []  # [None] once the body ended, [error] if it failed

        async def read_ahead() -> None:
            nonlocal size
            try:
                async for piece in pieces:
                    batch.append(piece)
                    size += len(piece)
                    arrived.set()
                    if size >= _READ_AHEAD:
                        drained.clear()
                        await drained.wait()
                end.append(None)
            except Exception as exc:  # the consumer raises it, after the data before it
                end.append(exc)
            finally:
                if not end:  # cancelled: never leave a consumer waiting for nothing
                    end.append(UpstreamError("reading the upstream response was interrupted"))
                arrived.set()

        self._reader = asyncio.create_task(read_ahead())
        try:
            while True:
                if batch:
                    chunk = b"".join(batch)
                    batch.clear()
                    size = 0
                    drained.set()
                    yield chunk
                elif end:
                    if end[0] is not None:
                        raise end[0]
                    return
                else:
                    arrived.clear()
                    await arrived.wait()
        finally:
            await self._stop_reader()

    async def _stop_reader(self) -> None:
        reader = self._reader
        if reader is not None and not reader.done():
            # Once the body is all in, httpx is handing the connection back to
            # its pool: let that finish, as a cancellation there leaks the slot.
            if not self._response.is_closed:
                reader.cancel()
            # asyncio.wait never raises the reader's CancelledError, so a
            # cancellation of the calling task itself still propagates.
            await asyncio.wait([reader])

    async def read(self, limit: int) -> bytes:
        return await _read_limited(self._pieces(), limit)

    async def aclose(self) -> None:
        try:
            await self._stop_reader()
        finally:
            await self._response.aclose()


def resolve_http_client(choice: HTTPClientName = "auto") -> Literal["httpx", "aiohttp"]:
    """The transport ``choice`` stands for: ``auto`` is ``$COMPAT_ASGI_HTTP_CLIENT``
    if set, else aiohttp when ``httpx-aiohttp`` is installed (``compat-asgi[fast]``),
    else httpx. Asking for aiohttp without it installed raises ImportError."""
    if choice == "auto":
        forced = os.environ.get(HTTP_CLIENT_ENV, "").strip().lower()
        if forced in ("httpx", "aiohttp"):
            choice = "httpx" if forced == "httpx" else "aiohttp"
        elif forced not in ("", "auto"):
            raise ValueError(f"{HTTP_CLIENT_ENV} must be httpx, aiohttp or auto, got {forced!r}")
        else:
            return "aiohttp" if importlib.util.find_spec("httpx_aiohttp") is not None else "httpx"
    if choice == "aiohttp" and importlib.util.find_spec("httpx_aiohttp") is None:
        raise ImportError("the aiohttp upstream client needs httpx-aiohttp: pip install 'compat-asgi[fast]'")
    if choice not in ("httpx", "aiohttp"):
        raise ValueError(f"http_client must be httpx, aiohttp or auto, got {choice!r}")
    return choice


class HTTPUpstream:
    """An OpenAI-style server at ``base_url`` (``http://host:port`` or ``.../v1``).

    One shared :class:`httpx.AsyncClient` (connection pool, HTTP/1.1); bodies
    are streamed both ways. Unless ``client`` is given, its transport is
    ``http_client``: httpx's own, or aiohttp's C parser under the httpx API
    (see :func:`resolve_http_client`), which costs about half the CPU per
    streamed event.
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        pool_timeout: float = DEFAULT_POOL_TIMEOUT,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        client: httpx.AsyncClient | None = None,
        http_client: HTTPClientName = "auto",
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"upstream must be an http(s) URL, got {base_url!r}")
        self.origin = f"{parts.scheme}://{parts.netloc}"
        # OpenAI-style base URLs end in /v1; a bare origin means the same.
        self.path_prefix = parts.path.rstrip("/").removesuffix("/v1")
        self.pool_timeout = pool_timeout
        self._authorization = f"Bearer {api_key}".encode() if api_key else None
        self._limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        self._timeout = httpx.Timeout(timeout, connect=connect_timeout, pool=pool_timeout)
        #: The transport in use: ``httpx``, ``aiohttp``, or ``custom`` (the caller's client).
        self.http_client = "custom" if client is not None else resolve_http_client(http_client)
        self._client = client or self._new_client()
        # The event loop our own client's connections belong to (None: not used yet).
        self._loop: asyncio.AbstractEventLoop | None = None

    def _new_client(self) -> httpx.AsyncClient:
        transport: httpx.AsyncBaseTransport | None = None
        if self.http_client == "aiohttp":
            from compat_asgi.aiohttp_transport import FastTransport

            transport = FastTransport(limits=self._limits)
        return httpx.AsyncClient(
            timeout=self._timeout,
            limits=self._limits,
            transport=transport,
            follow_redirects=False,
            # One client serves every caller: a cookie one upstream answer set
            # must not be sent along with another caller's request.
            cookies=http.cookiejar.CookieJar(http.cookiejar.DefaultCookiePolicy(allowed_domains=[])),
        )

    def _client_here(self) -> httpx.AsyncClient:
        """Our client, with a fresh pool when the app is now driven by another
        event loop (e.g. a test suite calling ``asyncio.run`` once per test):
        pooled connections belong to the loop they were opened on. A client
        the caller gave is theirs to manage."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop and self.http_client != "custom":
            if self._loop is not None:
                self._client = self._new_client()
            self._loop = loop
        return self._client

    async def request(
        self,
        method: str,
        path: str,
        headers: Headers,
        body: bytes,
        query: bytes = b"",
        scope: Scope | None = None,
    ) -> UpstreamResponse:
        # Callers pass checked paths; this is the last line of defence for all
        # of them, as httpx would resolve a dot-segment out of the base path.
        url = self.origin + self.path_prefix + checked_path(path.encode("utf-8"), encoded_slash=True)
        if query:
            url += "?" + query.decode("latin-1")
        client = self._client_here()
        try:
            request = client.build_request(
                method,
                url,
                headers=forward_headers(headers, self._authorization),
                content=body,
            )
        except (httpx.InvalidURL, UnicodeError) as exc:
            raise InvalidRequest(f"The request cannot be forwarded: {exc}.", code="invalid_url") from None
        try:
            response = await client.send(request, stream=True)
        except httpx.PoolTimeout as exc:
            raise ServerBusy(
                f"No upstream connection came free within {self.pool_timeout:g} s; retry shortly.",
                headers=[(b"retry-after", b"1")],
            ) from exc
        except httpx.TimeoutException as exc:
            raise UpstreamTimeout(f"upstream {self.origin} timed out") from exc
        except httpx.HTTPError as exc:
            raise UpstreamError(f"upstream {self.origin} is unreachable: {exc!r}") from exc
        return _HTTPResponse(response)

    def client_location(self, location: bytes, client_base: bytes) -> bytes | None:
        """A redirect ``Location`` from the upstream as the client may see it:
        under the upstream's ``/v1`` it becomes the same place under
        ``client_base`` (this server's prefix); anywhere else on the upstream,
        None (the upstream's internal address is not the client's business).
        Locations on other hosts and relative references pass unchanged."""
        text = location.decode("latin-1").strip()
        base = self.path_prefix + "/v1"
        lowered = text.lower()
        authority = "//" + self.origin.split("://", 1)[1].lower()  # scheme-relative form
        if lowered.startswith(self.origin.lower() + "/") or lowered == self.origin.lower():
            path = text[len(self.origin) :] or "/"
        elif lowered.startswith(authority + "/") or lowered == authority:
            path = text[len(authority) :] or "/"
        elif text.startswith("/") and not text.startswith("//"):
            path = text
        else:
            return location
        inside = path == base or path.startswith((base + "/", base + "?"))
        segments = unquote(path.partition("?")[0]).split("/")
        if inside and ".." not in segments and "." not in segments:
            return client_base + path[len(base) :].encode("latin-1")
        return None

    async def aclose(self) -> None:
        await self._client.aclose()
