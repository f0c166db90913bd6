"""CompatMiddleware: the raw ASGI shell around the sans-io core.

Routing and I/O only: the protocol work happens in :mod:`compat_asgi.core`.
Shaped like Starlette's GZipMiddleware: non-matching scopes pass through in
one line, a matching request gets a small per-request responder, and the
response start is held until the status and headers are known.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Literal

import orjson

from compat_asgi.core.ids import Clock, IdFactory, RandomIds, system_clock
from compat_asgi.core.requests import responses_to_chat
from compat_asgi.core.responses import chat_completion_to_response, new_response
from compat_asgi.core.sse import DEFAULT_MAX_LINE, encode_event
from compat_asgi.core.streams import ChatToResponses, completion_to_chunk
from compat_asgi.errors import (
    CompatError,
    InvalidRequest,
    MethodNotAllowed,
    NotFound,
    RequestTooLarge,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamStatusError,
)
from compat_asgi.types import ASGIApp, Headers, Message, Receive, Scope, Send
from compat_asgi.upstream import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_TIMEOUT,
    AppUpstream,
    HTTPUpstream,
    Upstream,
    UpstreamResponse,
)

__all__ = ["CompatMiddleware", "DEFAULT_MAX_BODY", "DEFAULT_MAX_UPSTREAM_BODY"]

logger = logging.getLogger("compat_asgi")

DEFAULT_MAX_BODY = 1 << 20  # client request body
DEFAULT_MAX_UPSTREAM_BODY = 32 << 20  # a non-streamed upstream answer or error body
_MAX_ERROR_BODY = 64 << 10

_JSON_HEADERS: Headers = [(b"content-type", b"application/json")]
_SSE_HEADERS: Headers = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    # nginx and similar proxies buffer responses unless told not to.
    (b"x-accel-buffering", b"no"),
]
_KEEP_UPSTREAM_HEADERS = frozenset({b"retry-after", b"x-request-id"})


class CompatMiddleware:
    """Serve ``POST {prefix}/responses`` over a chat-completions backend.

    ``CompatMiddleware(app)`` translates for the wrapped ASGI app itself;
    ``CompatMiddleware(app, upstream="http://host:port")`` or
    ``CompatMiddleware(upstream=...)`` sends translated requests to an HTTP
    server instead. Every other path and every non-HTTP scope goes to
    ``app`` untouched (without an app, other ``{prefix}`` paths are proxied to
    the HTTP upstream as they are).
    """

    def __init__(
        self,
        app: ASGIApp | None = None,
        *,
        upstream: str | Upstream | None = None,
        upstream_api: Literal["chat"] = "chat",
        upstream_key: str | None = None,
        upstream_timeout: float = DEFAULT_TIMEOUT,
        upstream_connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        prefix: str = "/v1",
        max_body_size: int = DEFAULT_MAX_BODY,
        max_line_size: int = DEFAULT_MAX_LINE,
        max_upstream_body_size: int = DEFAULT_MAX_UPSTREAM_BODY,
        ids: IdFactory | None = None,
        clock: Clock | None = None,
    ) -> None:
        if upstream_api != "chat":
            raise ValueError(f"unsupported upstream_api {upstream_api!r}")
        if app is None and upstream is None:
            raise ValueError("CompatMiddleware needs an app to wrap, an upstream, or both")
        self.app = app
        if isinstance(upstream, str):
            self.upstream: Upstream = HTTPUpstream(
                upstream,
                api_key=upstream_key,
                timeout=upstream_timeout,
                connect_timeout=upstream_connect_timeout,
            )
        elif upstream is not None:
            self.upstream = upstream
        else:
            assert app is not None
            self.upstream = AppUpstream(app)
        self.prefix = "/" + prefix.strip("/") if prefix.strip("/") else ""
        self._responses_path = self.prefix + "/responses"
        self._chat_path = "/v1/chat/completions"
        self._max_body = max_body_size
        self._max_line = max_line_size
        self._max_upstream_body = max_upstream_body_size
        self._ids: IdFactory = ids or RandomIds()
        self._clock: Clock = clock or system_clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._other_scope(scope, receive, send)
            return
        path = _route_path(scope)
        if path == self._responses_path:
            if scope["method"] != "POST":
                await _send_error(send, _method_not_allowed(scope["method"], path, b"POST"))
                return
            await self._respond(self._create_response, scope, receive, send)
        elif self.app is not None:
            await self.app(scope, receive, send)
        elif path.startswith(self.prefix + "/"):
            await self._respond(self._proxy, scope, receive, send)
        else:
            await _send_error(send, NotFound(f"No route for {scope['method']} {path}"))

    async def aclose(self) -> None:
        await self.upstream.aclose()

    # -- scopes that are not ours --------------------------------------------

    async def _other_scope(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.app is not None and scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return
        if scope["type"] != "lifespan":
            return
        if self.app is None:
            await _serve_lifespan(receive, send, self.aclose)
            return

        async def lifespan_send(message: Message) -> None:
            if message["type"] == "lifespan.shutdown.complete":
                await self.aclose()
            await send(message)

        await self.app(scope, receive, lifespan_send)

    # -- per request ---------------------------------------------------------

    async def _respond(self, handler: Any, scope: Scope, receive: Receive, send: Send) -> None:
        """Run ``handler`` with the client's disconnect cancelling it, errors enveloped."""
        responder = _Responder(send)
        try:
            body = await _read_body(scope, receive, self._max_body)
            task = asyncio.current_task()
            assert task is not None
            watcher = asyncio.create_task(_watch_disconnect(receive, task, responder))
            try:
                await handler(scope, body, responder)
            finally:
                watcher.cancel()
        except _ClientGone:
            return
        except asyncio.CancelledError:
            if not responder.disconnected:
                raise
            # The client left: our own watcher cancelled us, and with us the
            # upstream request. Nothing to report to anyone.
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
        except CompatError as exc:
            if responder.started:
                logger.warning("error after response start: %s", exc.message)
                return
            await _send_error(responder.send, exc)
        except Exception:
            logger.exception("unhandled error while serving %s", scope.get("path"))
            if not responder.started:
                await _send_error(responder.send, UpstreamError("internal error", status=500))

    async def _create_response(self, scope: Scope, body: bytes, responder: _Responder) -> None:
        payload = _parse_json(body)
        translated = responses_to_chat(payload)
        echo = translated.echo
        for field in ("previous_response_id", "conversation"):
            if echo.get(field) is not None:
                raise InvalidRequest(
                    f"'{field}' needs a response store, and this server has none configured.",
                    param=field,
                )
        upstream = await self.upstream.request(
            "POST",
            self._chat_path,
            _forward_headers(scope),
            orjson.dumps(translated.chat),
            scope=scope,
        )
        try:
            await _raise_for_status(upstream)
            response = new_response(echo, self._ids("resp"), self._clock())
            if not translated.stream:
                completion = _parse_upstream_json(await upstream.read(self._max_upstream_body))
                await responder.send_json(
                    200, chat_completion_to_response(completion, response, self._ids)
                )
                return
            translator = ChatToResponses(response, self._ids, max_line=self._max_line)
            if _is_event_stream(upstream.headers):
                await self._stream(upstream, translator, responder)
            else:
                # The upstream ignored stream=true and answered whole: replay it as a stream.
                completion = _parse_upstream_json(await upstream.read(self._max_upstream_body))
                events = translator.start()
                events += translator.feed(completion_to_chunk(completion))
                events += translator.finish(saw_done=True)
                await responder.start(200, _SSE_HEADERS)
                await responder.body(_encode(events), more_body=False)
        finally:
            await upstream.aclose()

    async def _stream(
        self, upstream: UpstreamResponse, translator: ChatToResponses, responder: _Responder
    ) -> None:
        chunks = upstream.chunks()
        events = translator.start()
        # The first upstream chunk is awaited before the response starts, so a
        # backend that fails or times out at once still gets a proper HTTP status.
        first = await anext(chunks, b"")
        events += translator.feed_bytes(first)
        await responder.start(200, _SSE_HEADERS)
        try:
            if first and not translator.saw_done:
                await responder.body(_encode(events))
                events = []
                async for chunk in chunks:
                    translated = translator.feed_bytes(chunk)
                    if translated:
                        await responder.body(_encode(translated))
                    if translator.saw_done:
                        break
            events += translator.close()
        except CompatError as exc:
            events += translator.fail(exc)
        await responder.body(_encode(events), more_body=False)

    async def _proxy(self, scope: Scope, body: bytes, responder: _Responder) -> None:
        """Any other ``{prefix}`` path without a wrapped app: forwarded as is, streamed."""
        upstream = await self.upstream.request(
            scope["method"],
            _route_path(scope),
            list(scope.get("headers", [])),
            body,
            scope.get("query_string", b""),
            scope=scope,
        )
        try:
            headers = [(k, v) for k, v in upstream.headers if k.lower() not in _HOP_BY_HOP]
            await responder.start(upstream.status, headers)
            async for chunk in upstream.chunks():
                await responder.body(chunk)
            await responder.body(b"", more_body=False)
        finally:
            await upstream.aclose()


# -- helpers -------------------------------------------------------------------

_HOP_BY_HOP = frozenset(
    {b"connection", b"keep-alive", b"transfer-encoding", b"content-length", b"te", b"trailer", b"upgrade"}
)


class _ClientGone(Exception):
    """The client disconnected before its request body was complete."""


class _Responder:
    """Wraps ``send``: remembers whether the response started and whether the client left."""

    __slots__ = ("_send", "started", "disconnected")

    def __init__(self, send: Send) -> None:
        self._send = send
        self.started = False
        self.disconnected = False

    async def send(self, message: Message) -> None:
        await self._send(message)

    async def start(self, status: int, headers: Headers) -> None:
        self.started = True
        await self._send({"type": "http.response.start", "status": status, "headers": headers})

    async def body(self, body: bytes, *, more_body: bool = True) -> None:
        await self._send({"type": "http.response.body", "body": body, "more_body": more_body})

    async def send_json(self, status: int, payload: Any) -> None:
        body = orjson.dumps(payload)
        await self.start(status, _JSON_HEADERS + [(b"content-length", str(len(body)).encode())])
        await self.body(body, more_body=False)


def _method_not_allowed(method: str, path: str, allow: bytes) -> MethodNotAllowed:
    return MethodNotAllowed(
        f"Method {method} is not allowed on {path}; use {allow.decode()}.",
        headers=[(b"allow", allow)],
    )


async def _send_error(send: Send, error: CompatError) -> None:
    body = error.to_json()
    headers = _JSON_HEADERS + [(b"content-length", str(len(body)).encode())] + error.headers
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def _encode(events: list[dict[str, Any]]) -> bytes:
    return b"".join([encode_event(event) for event in events])


def _route_path(scope: Scope) -> str:
    path: str = scope["path"]
    root_path: str = scope.get("root_path", "")
    if root_path and path.startswith(root_path):
        return path[len(root_path) :] or "/"
    return path


async def _read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed ``limit``."""
    for name, value in scope.get("headers", ()):
        if name == b"content-length" and value.isdigit() and int(value) > limit:
            raise RequestTooLarge(f"Request body exceeds the limit of {limit} bytes.")
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGone()
        body += message.get("body", b"")
        if len(body) > limit:
            raise RequestTooLarge(f"Request body exceeds the limit of {limit} bytes.")
        if not message.get("more_body", False):
            return bytes(body)


async def _watch_disconnect(receive: Receive, task: asyncio.Task[Any], responder: _Responder) -> None:
    """Cancel ``task`` when the client disconnects, which cancels the upstream request."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            responder.disconnected = True
            task.cancel()
            return


async def _serve_lifespan(receive: Receive, send: Send, on_shutdown: Any) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await on_shutdown()
            await send({"type": "lifespan.shutdown.complete"})
            return


def _parse_json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise InvalidRequest(
            "We could not parse the JSON body of your request. The body must be a JSON object.",
            code="invalid_json",
        ) from None


def _parse_upstream_json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise UpstreamProtocolError(f"upstream answered with non-JSON: {body[:200]!r}") from None


def _is_event_stream(headers: Headers) -> bool:
    for name, value in headers:
        if name.lower() == b"content-type":
            return value.split(b";", 1)[0].strip().lower() == b"text/event-stream"
    return False


def _forward_headers(scope: Scope) -> Headers:
    """Client headers for the upstream chat request: everything but the body framing."""
    headers = [
        (name, value)
        for name, value in scope.get("headers", ())
        if name not in (b"content-type", b"content-length", b"accept", b"transfer-encoding")
    ]
    headers += [(b"content-type", b"application/json"), (b"accept", b"text/event-stream, application/json")]
    return headers


async def _raise_for_status(upstream: UpstreamResponse) -> None:
    """An upstream HTTP error becomes the same error in OpenAI's envelope (5xx -> 502)."""
    status = upstream.status
    if status < 400:
        return
    try:
        body = await upstream.read(_MAX_ERROR_BODY)
    except CompatError:
        body = b""
    keep = [(k.lower(), v) for k, v in upstream.headers if k.lower() in _KEEP_UPSTREAM_HEADERS]
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
    elif isinstance(error, str):
        message = error
    elif isinstance(payload, dict) and isinstance(payload.get("detail"), str):
        message = payload["detail"]  # FastAPI-style backends
    raise UpstreamStatusError(status, message, type=kind, param=param, code=code, headers=keep)
