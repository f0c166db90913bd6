"""ASGI plumbing shared by the endpoints: the responder, body reading, errors
as HTTP responses, upstream error translation and the streaming pump."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, Final, Protocol

import orjson

from compat_asgi.core.sse import encode_comment
from compat_asgi.errors import (
    CompatError,
    InvalidRequest,
    MethodNotAllowed,
    ServerBusy,
    UpstreamProtocolError,
    UpstreamStatusError,
)
from compat_asgi.types import Headers, Receive, Scope, Send
from compat_asgi.upstream import UpstreamResponse, connection_tokens

__all__ = [
    "ClientGone",
    "Slots",
    "Responder",
    "StreamTranslator",
    "JSON_HEADERS",
    "SSE_HEADERS",
    "KEEPALIVE",
    "send_error",
    "method_not_allowed",
    "route_path",
    "parse_json",
    "parse_upstream_json",
    "is_event_stream",
    "upstream_headers",
    "response_headers",
    "raise_for_status",
    "pump",
    "watch_disconnect",
    "serve_lifespan",
]

JSON_HEADERS: Headers = [(b"content-type", b"application/json")]
SSE_HEADERS: Headers = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-store"),
    # nginx and similar proxies buffer responses unless told not to.
    (b"x-accel-buffering", b"no"),
]
KEEPALIVE = encode_comment(b"keepalive")
_MAX_ERROR_BODY = 64 << 10
# Framing, hop-by-hop (RFC 9110 section 7.6.1) and encoding headers belong to
# each hop; the body we send is never the upstream's encoded body.
_HOP_BY_HOP = frozenset(
    {
        b"host",
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authorization",
        b"transfer-encoding",
        b"te",
        b"trailer",
        b"upgrade",
        b"content-length",
        b"content-encoding",
        b"accept-encoding",
    }
)
_KEEP_ERROR_HEADERS = frozenset({b"retry-after", b"x-request-id"})
# Backend error types OpenAI names differently; clients (Codex, the SDKs) key on
# OpenAI's. llama.cpp: a prompt longer than the context is its own error type.
_BACKEND_ERRORS = {"exceed_context_size_error": ("invalid_request_error", "context_length_exceeded", "input")}


class Slots:
    """Work in progress, up to a limit (``max_concurrent_requests``): HTTP
    requests once their body is in, and WebSocket turns."""

    __slots__ = ("limit", "active")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.active = 0

    def take(self) -> None:
        """Take a slot, or raise the 503 that says there is none."""
        if self.active >= self.limit:
            raise ServerBusy(
                f"The server is handling {self.limit} requests; retry shortly.",
                headers=[(b"retry-after", b"1")],
            )
        self.active += 1

    def give(self) -> None:
        self.active -= 1


class ClientGone(Exception):
    """The client disconnected before its request body was complete."""


BODY_SLICE: Final = 256 << 10  # bytes: larger bodies go to the server in slices of this size


class Responder:
    """Wraps ``send`` for one request: knows whether the response started,
    whether the client left, and when a body was last sent (for keepalives)."""

    __slots__ = ("_send", "_lock", "started", "finished", "disconnected", "last_sent", "headers")

    def __init__(self, send: Send) -> None:
        self._send = send
        # Added to a successful response's headers (errors go out without them).
        self.headers: Headers = []
        self._lock = asyncio.Lock()
        self.started = False
        self.finished = False  # the last body message went out
        self.disconnected = False
        self.last_sent = 0.0

    async def start(self, status: int, headers: Headers) -> None:
        self.started = True
        if self.headers:
            headers = [*headers, *self.headers]
        await self._send({"type": "http.response.start", "status": status, "headers": headers})

    async def body(self, body: bytes, *, more_body: bool = True) -> None:
        # The keepalive ticker sends from another task; one send at a time.
        async with self._lock:
            if len(body) > BODY_SLICE:
                body = await self._send_slices(body)
            await self._send({"type": "http.response.body", "body": body, "more_body": more_body})
        self.last_sent = asyncio.get_running_loop().time()
        if not more_body:
            self.finished = True

    async def _send_slices(self, body: bytes) -> bytes:
        """Send all of a large body but its last slice, which is returned.

        The server frames each message (a chunk header: a copy) and buffers
        what the socket does not take at once (another copy): sent whole, a
        long answer would be copied twice over at once; sliced, a slice at a
        time, while the server's flow control paces us."""
        view = memoryview(body)
        end = len(body) - BODY_SLICE
        for start in range(0, end, BODY_SLICE):
            piece = bytes(view[start : min(start + BODY_SLICE, end)])
            await self._send({"type": "http.response.body", "body": piece, "more_body": True})
        return bytes(view[max(end, 0) :])

    async def send_json(self, status: int, payload: Any) -> None:
        body = orjson.dumps(payload)
        await self.start(status, [*JSON_HEADERS, (b"content-length", str(len(body)).encode())])
        await self.body(body, more_body=False)

    async def send_error(self, error: CompatError) -> None:
        await send_error(self._send, error)
        self.started = self.finished = True

    async def keepalive(self, interval: float) -> None:
        """Send an SSE comment whenever nothing was sent for ``interval`` seconds,
        so proxies do not cut a stream while the upstream is silent."""
        loop = asyncio.get_running_loop()
        while True:
            idle = loop.time() - self.last_sent
            if idle < interval:
                await asyncio.sleep(interval - idle)
                continue
            await self.body(KEEPALIVE)


async def send_error(send: Send, error: CompatError) -> None:
    body = error.to_json()
    headers = [*JSON_HEADERS, (b"content-length", str(len(body)).encode()), *error.headers]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def method_not_allowed(method: str, path: str, allow: bytes) -> MethodNotAllowed:
    return MethodNotAllowed(
        f"Method {method} is not allowed on {path}; use {allow.decode()}.",
        headers=[(b"allow", allow)],
    )


def route_path(scope: Scope) -> str:
    """The path below ``root_path`` (servers differ in whether ``path`` includes it)."""
    path: str = scope["path"]
    root_path: str = scope.get("root_path", "")
    if root_path and path.startswith(root_path):
        return path[len(root_path) :] or "/"
    return path


async def watch_disconnect(receive: Receive, task: asyncio.Task[Any], responder: Responder) -> None:
    """Cancel ``task`` when the client disconnects, which cancels the upstream request.

    Servers also report a disconnect once the response is complete; by then
    the handler is only releasing its upstream connection, and cancelling
    that would leak the connection from the pool.
    """
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            if not responder.finished:
                responder.disconnected = True
                task.cancel()
            return


async def serve_lifespan(receive: Receive, send: Send, on_shutdown: Callable[[], Awaitable[None]]) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await on_shutdown()
            await send({"type": "lifespan.shutdown.complete"})
            return


def parse_json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise InvalidRequest(
            "We could not parse the JSON body of your request. The body must be a JSON object.",
            code="invalid_json",
        ) from None


def parse_upstream_json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise UpstreamProtocolError(f"upstream answered with non-JSON: {body[:200]!r}") from None


def is_event_stream(headers: Headers) -> bool:
    for name, value in headers:
        if name.lower() == b"content-type":
            return value.split(b";", 1)[0].strip().lower() == b"text/event-stream"
    return False


def upstream_headers(scope: Scope, *, keep_authorization: bool, json_body: bool) -> Headers:
    """Client headers as forwarded upstream: minus hop-by-hop and framing headers,
    minus ``Authorization`` when it was the key for this server, not the upstream's."""
    client = scope.get("headers", ())
    drop = _HOP_BY_HOP if keep_authorization else _HOP_BY_HOP | {b"authorization"}
    named = connection_tokens(client)
    if named:
        drop = drop | named
    if json_body:
        drop = drop | {b"content-type", b"accept"}
    headers = [(k, v) for k, v in client if k not in drop]
    if json_body:
        headers += [
            (b"content-type", b"application/json"),
            (b"accept", b"text/event-stream, application/json"),
        ]
    return headers


def response_headers(headers: Headers) -> Headers:
    """Upstream response headers as passed on to the client (minus those the
    upstream's ``Connection`` header names)."""
    named = connection_tokens(headers)
    return [(k, v) for k, v in headers if k.lower() not in _HOP_BY_HOP and k.lower() not in named]


async def raise_for_status(upstream: UpstreamResponse) -> None:
    """An upstream HTTP error becomes the same error in OpenAI's envelope (5xx -> 502)."""
    status = upstream.status
    if status < 400:
        return
    try:
        body = await upstream.read(_MAX_ERROR_BODY)
    except CompatError:
        body = b""
    keep = [(k.lower(), v) for k, v in upstream.headers if k.lower() in _KEEP_ERROR_HEADERS]
    message = f"upstream returned HTTP {status}"
    kind = code = param = None
    try:
        payload = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        payload = None
        text = body[:200].decode("utf-8", "replace").strip()
        if text:
            message += f": {text}"
    error = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(error, dict):
        message = str(error.get("message") or message)
        kind = error.get("type") if isinstance(error.get("type"), str) else None
        param = error.get("param") if isinstance(error.get("param"), str) else None
        code = str(error["code"]) if error.get("code") is not None else None
        if code == str(status):
            code = None  # llama.cpp repeats the HTTP status as the code: no information
        if kind in _BACKEND_ERRORS:
            kind, code, param = _BACKEND_ERRORS[kind]
    elif isinstance(error, str):
        message = error
    elif isinstance(payload, dict) and isinstance(payload.get("detail"), str):
        message = payload["detail"]  # FastAPI-style backends
    raise UpstreamStatusError(status, message, type=kind, param=param, code=code, headers=keep)


class StreamTranslator(Protocol):
    """An incremental translator seen from the shell: bytes in, encoded bytes out."""

    @property
    def finished(self) -> bool:
        """The upstream said it is done; stop reading."""
        ...

    def start(self) -> bytes: ...

    def feed(self, data: bytes) -> bytes: ...

    @property
    def pending(self) -> bool:
        """A ``feed`` or ``close`` that raised had produced output first; ``fail`` returns it."""
        ...

    def close(self) -> Iterable[bytes]:
        """The upstream body ended: the last bytes, in pieces the client is sent
        one body message each (so that final events which each carry a whole
        long answer are never joined into one body). Raises
        :class:`CompatError` if it ended too early."""
        ...

    def fail(self, error: CompatError) -> Iterable[bytes]:
        """The output still pending, what closes the open structure, then the error, in pieces."""
        ...

    def interrupt(self) -> bytes:
        """The client left: end the stream for the record (what is stored), not for the client."""
        ...


async def _send_last(responder: Responder, pieces: Iterable[bytes]) -> None:
    """Each piece its own body message, none joined to another (nor kept for
    a look-ahead: each may be made only as it is taken), then the body's end."""
    for piece in pieces:
        if piece:
            await responder.body(piece)
    await responder.body(b"", more_body=False)


_DRAIN_BYTES = 64 << 10
_DRAIN_SECONDS = 1.0


async def _drain(chunks: AsyncIterator[bytes]) -> None:
    """Read what little the upstream sends after its end marker (the chunked
    terminator), so its connection goes back to the pool instead of being
    closed; an upstream that keeps talking is cut off soon."""
    left = _DRAIN_BYTES
    try:
        async with asyncio.timeout(_DRAIN_SECONDS):
            async for chunk in chunks:
                left -= len(chunk)
                if left < 0:
                    return
    except (TimeoutError, CompatError):
        return


async def pump(
    upstream: UpstreamResponse,
    translator: StreamTranslator,
    responder: Responder,
    *,
    keepalive: float,
    on_end: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Stream ``upstream`` through ``translator`` to the client, one send per upstream read.

    The response starts once the first upstream chunk is in, so a backend that
    fails at once still gets a real HTTP status; if it stays silent longer than
    ``keepalive`` the response starts anyway and keepalive comments flow. A
    fault inside the first read after output the client should see (text
    before a bad line) starts the stream too, so that output is not lost.
    ``on_end`` runs once the outcome is known, before the last bytes are sent,
    so a client that acts on the terminal event finds it already stored; when
    the client disconnects it runs too, after :meth:`StreamTranslator.interrupt`.
    """
    chunks = upstream.chunks()
    head = translator.start()
    first_read = asyncio.ensure_future(anext(chunks, b""))
    ticker: asyncio.Task[None] | None = None
    ended = False
    try:
        ready, _ = await asyncio.wait({first_read}, timeout=keepalive)
        fault: CompatError | None = None
        if ready:
            try:
                head += translator.feed(first_read.result())
            except CompatError as exc:
                if not translator.pending:
                    raise  # nothing to show yet: an HTTP error status says it best
                fault = exc
        await responder.start(200, SSE_HEADERS)
        ticker = asyncio.create_task(responder.keepalive(keepalive))
        try:
            if fault is not None:
                raise fault
            if not ready:
                await responder.body(head)
                head = b""  # sent: a fault in the feed below must not send it twice
                head = translator.feed(await first_read)
            if not translator.finished:
                if head:
                    await responder.body(head)
                    head = b""
                async for chunk in chunks:
                    out = translator.feed(chunk)
                    if out:
                        await responder.body(out)
                    if translator.finished:
                        break
            tail = translator.close()
        except CompatError as exc:
            tail = translator.fail(exc)
        ticker.cancel()
        ended = True  # on_end runs once: a disconnect now must not store a second copy
        if on_end is not None:
            await on_end()
        await _send_last(responder, itertools.chain((head,), tail))
        if translator.finished:
            await _drain(chunks)
    except asyncio.CancelledError:
        if responder.disconnected and not ended and on_end is not None:
            # The client left mid-stream (its watcher cancelled us, and with us
            # the upstream read): what was produced is still kept.
            translator.interrupt()
            await on_end()
        raise
    finally:
        if ticker is not None:
            ticker.cancel()
        first_read.cancel()
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(Exception):
                await aclose()

