"""CompatMiddleware: the raw ASGI shell around the sans-io core.

Routing, authentication and limits only; each endpoint lives in
:mod:`compat_asgi.endpoints` and the protocol work in :mod:`compat_asgi.core`.
Shaped like Starlette's GZipMiddleware: non-matching scopes pass through in
one line, a matching request gets a small per-request responder.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Literal

from compat_asgi.asgi import (
    ClientGone,
    Responder,
    Slots,
    method_not_allowed,
    route_path,
    send_error,
    serve_lifespan,
    watch_disconnect,
)
from compat_asgi.bodies import check_json_depth, read_decoded_body
from compat_asgi.config import RoutingConfig, parse_config
from compat_asgi.core.ids import Clock, IdFactory, RandomIds, system_clock
from compat_asgi.core.options import RequestOptions
from compat_asgi.core.reasoning import ReasoningSeal
from compat_asgi.core.sse import DEFAULT_MAX_LINE
from compat_asgi.endpoints import Call, Target
from compat_asgi.endpoints.background import DEFAULT_LEASE, DEFAULT_MAX_BACKGROUND, BackgroundRuns
from compat_asgi.endpoints.chat import ChatOverResponses
from compat_asgi.endpoints.compact import Compaction
from compat_asgi.endpoints.conversations import Conversations
from compat_asgi.endpoints.input_tokens import InputTokens
from compat_asgi.endpoints.models import Models
from compat_asgi.endpoints.proxy import Passthrough
from compat_asgi.endpoints.responses import ResponsesOverChat
from compat_asgi.endpoints.routes import Handler, Route, RouteTable
from compat_asgi.endpoints.stored import StoredResponses
from compat_asgi.endpoints.websocket import DEFAULT_MAX_SOCKETS_PER_KEY, ResponsesWebSocket
from compat_asgi.errors import (
    CompatError,
    InternalError,
    InvalidRequest,
    NotFound,
    RequestTimeout,
    Unauthorized,
)
from compat_asgi.idempotency import DEFAULT_MAX_BYTES, MAX_KEY_BYTES, IdempotencyCache
from compat_asgi.observability import AccessLog, Metrics, RequestRecord, log_safe
from compat_asgi.paths import api_path
from compat_asgi.routing import Router
from compat_asgi.settings import (
    DEFAULT_BODY_TIMEOUT,
    DEFAULT_KEEPALIVE,
    DEFAULT_MAX_BODY,
    DEFAULT_MAX_CONCURRENT,
    DEFAULT_MAX_HISTORY_BYTES,
    DEFAULT_MAX_JSON_DEPTH,
    DEFAULT_MAX_RECORDED_EVENTS,
    DEFAULT_MAX_UPSTREAM_BODY,
    Settings,
)
from compat_asgi.store import Store, open_store
from compat_asgi.types import ASGIApp, Headers, Message, Receive, Scope, Send
from compat_asgi.upstream import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_POOL_TIMEOUT,
    DEFAULT_TIMEOUT,
    AppUpstream,
    HTTPClientName,
    HTTPUpstream,
    Upstream,
)

__all__ = ["CompatMiddleware"]

logger = logging.getLogger("compat_asgi")

class CompatMiddleware:
    """Make one backend speak both OpenAI APIs.

    ``CompatMiddleware(app)`` serves ``POST {prefix}/responses`` by
    translating onto the wrapped app's own ``/chat/completions``
    (``upstream_api="responses"``: the other way round);
    ``upstream="http://host:port/v1"`` sends translated requests to an HTTP
    server instead, and ``config={...}`` routes by model across several.
    Every other path and every non-HTTP scope goes to ``app`` untouched
    (without an app, other ``{prefix}`` paths are proxied to the upstream as
    they are). Options are documented in the README; all are computed here,
    once.
    """

    def __init__(
        self,
        app: ASGIApp | None = None,
        *,
        upstream: str | Upstream | None = None,
        upstream_api: Literal["chat", "responses"] = "chat",
        config: RoutingConfig | Mapping[str, Any] | None = None,
        store: Store | str | None = None,
        models: Sequence[str] = (),
        upstream_key: str | None = None,
        upstream_timeout: float = DEFAULT_TIMEOUT,
        upstream_connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        upstream_pool_timeout: float = DEFAULT_POOL_TIMEOUT,
        upstream_http_client: HTTPClientName = "auto",
        prefix: str = "/v1",
        api_keys: Sequence[str] = (),
        max_body_size: int = DEFAULT_MAX_BODY,
        max_line_size: int = DEFAULT_MAX_LINE,
        max_upstream_body_size: int = DEFAULT_MAX_UPSTREAM_BODY,
        max_recorded_events: int = DEFAULT_MAX_RECORDED_EVENTS,
        max_concurrent_requests: int = DEFAULT_MAX_CONCURRENT,
        body_timeout: float = DEFAULT_BODY_TIMEOUT,
        max_json_depth: int = DEFAULT_MAX_JSON_DEPTH,
        max_history_bytes: int = DEFAULT_MAX_HISTORY_BYTES,
        max_websockets_per_key: int = DEFAULT_MAX_SOCKETS_PER_KEY,
        max_background_runs: int = DEFAULT_MAX_BACKGROUND,
        background_lease: float = DEFAULT_LEASE,
        keepalive_interval: float = DEFAULT_KEEPALIVE,
        drop_unsupported_tools: bool = False,
        strict: bool = False,
        think_tags: bool = False,
        reasoning_key: bytes | str | None = None,
        health: bool = False,
        access_log: Literal["json", "text"] | None = None,
        metrics: bool = False,
        idempotency_window: float = 0.0,
        idempotency_max_bytes: int = DEFAULT_MAX_BYTES,
        ids: IdFactory | None = None,
        clock: Clock | None = None,
    ) -> None:
        if upstream_api not in ("chat", "responses"):
            raise ValueError(f"upstream_api must be 'chat' or 'responses', not {upstream_api!r}")
        if app is None and upstream is None and config is None:
            raise ValueError("CompatMiddleware needs an app to wrap, an upstream, a config, or a mix")
        if config is not None and upstream is not None:
            raise ValueError("give either upstream= or config=, not both")
        for name, value in (
            ("max_body_size", max_body_size),
            ("max_line_size", max_line_size),
            ("max_upstream_body_size", max_upstream_body_size),
            ("max_recorded_events", max_recorded_events),
            ("max_concurrent_requests", max_concurrent_requests),
            ("keepalive_interval", keepalive_interval),
            ("body_timeout", body_timeout),
            ("max_json_depth", max_json_depth),
            ("max_history_bytes", max_history_bytes),
            ("idempotency_max_bytes", idempotency_max_bytes),
            ("upstream_pool_timeout", upstream_pool_timeout),
        ):
            if value <= 0:
                raise ValueError(f"{name} must be positive, got {value!r}")
        if any(not key for key in api_keys):
            raise ValueError("api_keys must not contain empty keys")
        self.app = app
        self.prefix = "/" + prefix.strip("/") if prefix.strip("/") else ""
        translation = RequestOptions(
            strict=strict,
            drop_unsupported_tools=drop_unsupported_tools,
            reasoning_seal=ReasoningSeal(
                reasoning_key.encode() if isinstance(reasoning_key, str) else reasoning_key
            ),
            think_tags=think_tags,
        )
        self.settings = Settings(
            prefix=self.prefix,
            max_body_size=max_body_size,
            max_line_size=max_line_size,
            max_upstream_body_size=max_upstream_body_size,
            keepalive_interval=keepalive_interval,
            ids=ids or RandomIds(),
            clock=clock or system_clock,
            strip_authorization=bool(api_keys),
            max_history_bytes=max_history_bytes,
            max_recorded_events=max_recorded_events,
        )
        self._api_keys = [key.encode() for key in api_keys]
        self._slots = Slots(max_concurrent_requests)
        self._body_timeout = body_timeout
        self._max_json_depth = max_json_depth
        self.store: Store | None = open_store(store) if isinstance(store, str) else store

        if config is not None:
            routing = config if isinstance(config, RoutingConfig) else parse_config(config)
            self.router = Router.from_config(routing, translation, app)
            self._models = Models(None, self.settings, list(routing.models))
            translates = {"chat", "responses"}
            native = False
        else:
            if isinstance(upstream, str):
                only: Upstream = HTTPUpstream(
                    upstream,
                    api_key=upstream_key,
                    timeout=upstream_timeout,
                    connect_timeout=upstream_connect_timeout,
                    pool_timeout=upstream_pool_timeout,
                    http_client=upstream_http_client,
                    # As many connections as requests may be in flight: a request
                    # admitted is never left queueing for a connection.
                    max_connections=max_concurrent_requests,
                )
            elif upstream is not None:
                only = upstream
            else:
                assert app is not None
                only = AppUpstream(app)
            self.router = Router(Target("default", only, upstream_api, translation))
            self._models = Models(only, self.settings, models)
            # The other API is translated; the upstream's own goes to the app when there is one.
            translates = {"responses" if upstream_api == "chat" else "chat"}
            native = app is not None

        self._passthrough = Passthrough(self.settings).handle
        responses = ResponsesOverChat(self.settings, self.store)
        chat = ChatOverResponses(self.settings)

        self._background: BackgroundRuns | None = None

        compaction = Compaction(self.settings, self.store, self._passthrough)

        async def create_response(call: Call, responder: Responder) -> None:
            translate = call.target.api == "chat"
            call.mode = "translated" if translate else "passthrough"
            first = await compaction.prepare_create(call) if translate else []
            if translate and self._background is not None and call.field("background") is True:
                await self._background.create(call, responder)
                return
            if translate:
                await responses.handle(call, responder, first_output=first)
            else:
                await self._passthrough(call, responder)

        async def create_chat_completion(call: Call, responder: Responder) -> None:
            translate = call.target.api == "responses"
            call.mode = "translated" if translate else "passthrough"
            await (chat.handle if translate else self._passthrough)(call, responder)

        # Every path this server answers itself, below the prefix.
        routes = self._models.routes()
        self._websocket: ResponsesWebSocket | None = None
        if "responses" in translates or not native:
            routes.append(Route("POST", "/responses", create_response))
            self._websocket = ResponsesWebSocket(
                responses,
                authenticate=self._authenticate,
                resolve=self.router.resolve,
                max_sockets_per_key=max_websockets_per_key,
                slots=self._slots,
            )
        if "chat" in translates or not native:
            routes.append(Route("POST", "/chat/completions", create_chat_completion))
        if self.store is not None:
            stored = StoredResponses(self.store)
            self._background = BackgroundRuns(
                self.settings, self.store, responses, stored, max_running=max_background_runs, lease=background_lease
            )
            routes += self._background.routes()  # the stored-response routes, retrieve knowing runs
        if "responses" in translates:
            ids, clock = self.settings.ids, self.settings.clock
            routes += Conversations(self.store, translation, ids, clock).routes()
        # Always routed, never left to fall through: the stored-response route
        # /responses/{id} would take them. A Responses upstream gets them passed on.
        routes += InputTokens(self.settings, responses, self._passthrough).routes()
        routes += compaction.routes()
        self.routes = RouteTable(routes)
        self._native = native
        self._access_log = AccessLog(access_log) if access_log is not None else None
        self._metrics = Metrics(prefix=self.prefix) if metrics else None
        self._observe = self._access_log is not None or self._metrics is not None
        if self._observe and self._websocket is not None:
            self._websocket.observe(self._metrics.started if self._metrics is not None else None, self._report)
        self._idempotency = (
            IdempotencyCache(idempotency_window, max_bytes=idempotency_max_bytes)
            if idempotency_window > 0
            else None
        )
        self._ops: dict[str, Callable[[Send], Awaitable[None]]] = {}
        if health:
            self._ops["/healthz"] = self._healthz
            self._ops["/readyz"] = self._readyz
        if self._metrics is not None:
            self._ops["/metrics"] = self._render_metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._other_scope(scope, receive, send)
            return
        path = route_path(scope)
        operation = self._ops.get(path)
        if not path.startswith(self.prefix + "/") and operation is None:
            if self.app is not None:
                await self.app(scope, receive, send)
            else:
                await send_error(send, NotFound(f"No route for {scope['method']} {path}"))
            return
        request_id, accepted = _request_id(scope)
        if not accepted:
            # The upstream (and the app) see the id the client is given, not a refused one.
            headers = [(k, v) for k, v in scope.get("headers", ()) if k != b"x-request-id"]
            scope = {**scope, "headers": [*headers, (b"x-request-id", request_id)]}
        record = None
        if self._observe:
            record = RequestRecord(request_id.decode(), scope["method"], path, started=time.perf_counter())
            if self._metrics is not None:
                self._metrics.started(record)
        observed = _ObservedSend(send, request_id, record)
        try:
            if operation is not None:
                await operation(observed)
                return
            try:
                # Checked before routing: what is routed and what may be
                # forwarded are the same bytes, whichever handler takes it.
                api_path(scope, self.prefix)
            except CompatError as exc:
                if record is not None:
                    record.error = exc.code
                await send_error(observed, exc)
                return
            await self._dispatch(scope, receive, observed, path, record)
        finally:
            if record is not None:
                self._report(record)

    async def _dispatch(
        self, scope: Scope, receive: Receive, send: Send, path: str, record: RequestRecord | None
    ) -> None:
        owner = self._authenticate(scope)
        if isinstance(owner, CompatError):
            await send_error(send, owner)
            return
        routes = self.routes.match(path[len(self.prefix) :])
        if routes is None:
            if self._native:
                assert self.app is not None
                if record is not None:
                    record.mode = "app"
                await self.app(scope, receive, send)
            else:
                if record is not None:
                    record.mode = "passthrough"
                await self._serve(self._passthrough, scope, receive, send, owner, record)
            return
        matched = routes.get(scope["method"])
        if matched is None:
            allow = ", ".join(routes).encode()
            await send_error(send, method_not_allowed(scope["method"], path, allow))
            return
        handler, params = matched
        if params:
            scope = {**scope, "path_params": params}
        await self._serve(handler, scope, receive, send, owner, record)

    def _report(self, record: RequestRecord) -> None:
        record.finished = time.perf_counter()
        if self._access_log is not None:
            self._access_log.emit(record)
        if self._metrics is not None:
            self._metrics.finished(record)

    async def aclose(self) -> None:
        if self._background is not None:
            await self._background.aclose()
        for _, upstream in self.router.all_upstreams:
            await upstream.aclose()
        if self.store is not None:
            await self.store.aclose()

    def _authenticate(self, scope: Scope) -> str | None | CompatError:
        """The caller's owner digest, or the 401 to answer (when API keys are configured)."""
        if not self._api_keys:
            return None
        presented = b""
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                scheme, _, token = value.partition(b" ")
                if scheme.lower() == b"bearer":
                    presented = token.strip()
                break
        # Compare against every key, so timing does not tell which key was near.
        matched = False
        for key in self._api_keys:
            matched |= hmac.compare_digest(presented, key)
        if not matched:
            return Unauthorized(
                "Incorrect API key provided." if presented else "Missing bearer API key.",
                headers=[(b"www-authenticate", b"Bearer")],
            )
        return hashlib.sha256(presented).hexdigest()[:32]

    # -- scopes that are not ours --------------------------------------------

    async def _other_scope(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "websocket"
            and self._websocket is not None
            and route_path(scope) == self.prefix + "/responses"
        ):
            await self._websocket(scope, receive, send)
            return
        if scope["type"] != "lifespan":
            if self.app is not None:
                await self.app(scope, receive, send)
            elif scope["type"] == "websocket":
                # Nobody to hand the connection to: refuse the handshake (servers
                # answer 403) rather than return silently, which they turn into a 500.
                await receive()
                await send({"type": "websocket.close", "code": 1008})
            return
        if self.app is None:
            await serve_lifespan(receive, send, self.aclose)
            return

        async def lifespan_send(message: Message) -> None:
            if message["type"] == "lifespan.shutdown.complete":
                await self.aclose()
            await send(message)

        await self.app(scope, receive, lifespan_send)

    # -- per request ---------------------------------------------------------

    async def _serve(
        self,
        handler: Handler,
        scope: Scope,
        receive: Receive,
        send: Send,
        owner: str | None,
        record: RequestRecord | None,
    ) -> None:
        """Run ``handler`` with limits applied, the client's disconnect cancelling
        it, and every error turned into OpenAI's envelope or stream events."""
        call: Call | None = None
        key: str | None = None
        responder = Responder(send)
        working = False
        try:
            key = _idempotency_key(scope) if self._idempotency is not None else None
            try:
                async with asyncio.timeout(self._body_timeout):
                    body = await read_decoded_body(
                        receive, scope.get("headers", ()), self.settings.max_body_size
                    )
            except TimeoutError:
                raise RequestTimeout(
                    f"The request body did not arrive within {self._body_timeout:g} seconds."
                ) from None
            call = Call(scope, body, owner, self.router.resolve)
            # Parses (once, shared with the handler) only bodies with many brackets.
            check_json_depth(body, self._max_json_depth, call.json)
            # Only work in progress holds a slot: a client still sending its
            # body (or stalling) costs no more than its connection.
            self._slots.take()
            working = True
            # Streams are not replayed: they are the client's to resume.
            if key is not None and self._idempotency is not None and call.field("stream") is not True:
                recording = await self._idempotency.replay(owner, key, route_path(scope), body, send)
                if recording is None:
                    return
                responder = Responder(recording)
            task = asyncio.current_task()
            assert task is not None
            watcher = asyncio.create_task(watch_disconnect(receive, task, responder))
            try:
                await handler(call, responder)
            finally:
                watcher.cancel()
        except ClientGone:
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
            if record is not None:
                record.error = exc.code
            if responder.started:
                logger.warning("error after the response started: %s", log_safe(exc.message))
            else:
                await responder.send_error(exc)
        except Exception:
            logger.exception("unhandled error while serving %s", log_safe(str(scope.get("path"))))
            if record is not None:
                record.error = "internal_error"
            if not responder.started:
                await responder.send_error(InternalError("The server had an error while processing your request."))
        finally:
            if working:
                self._slots.give()
            if key is not None and self._idempotency is not None:
                self._idempotency.abandon(owner, key)
            if record is not None and call is not None:
                record.mode = call.mode or record.mode
                model = call.field("model")
                record.model = model if isinstance(model, str) else None
                record.ignored = call.ignored
                if call.resolved is not None:
                    record.upstream = call.resolved.name

    # -- operations ----------------------------------------------------------

    async def _healthz(self, send: Send) -> None:
        await Responder(send).send_json(200, {"status": "ok"})

    async def _readyz(self, send: Send) -> None:
        checks = {f"upstream:{name}": await _reachable(upstream) for name, upstream in self.router.all_upstreams}
        if self.store is not None:
            checks["store"] = await self.store.ping()
        ready = all(checks.values())
        await Responder(send).send_json(
            200 if ready else 503, {"status": "ready" if ready else "not_ready", "checks": checks}
        )

    async def _render_metrics(self, send: Send) -> None:
        assert self._metrics is not None
        content_type, body = self._metrics.render()
        headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
        responder = Responder(send)
        await responder.start(200, headers)
        await responder.body(body, more_body=False)


_READY_TIMEOUT = 3.0
_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:-]{1,128}")
_SECURITY_HEADERS: Headers = [(b"x-content-type-options", b"nosniff")]


async def _reachable(upstream: Upstream) -> bool:
    """Whether the upstream answers HTTP at all (any status counts)."""
    try:
        async with asyncio.timeout(_READY_TIMEOUT):
            response = await upstream.request("GET", "/v1/models", [], b"")
    except (CompatError, TimeoutError):
        return False
    await response.aclose()
    return True


def _request_id(scope: Scope) -> tuple[bytes, bool]:
    """The client's ``x-request-id`` when it is a sane token (True), else a new one."""
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id" and _REQUEST_ID.fullmatch(value):
            return bytes(value), True
    return b"req_" + os.urandom(12).hex().encode(), False


def _idempotency_key(scope: Scope) -> str | None:
    if scope["method"] != "POST":
        return None
    for name, value in scope.get("headers", ()):
        if name == b"idempotency-key" and value:
            if len(value) > MAX_KEY_BYTES:
                raise InvalidRequest(
                    f"The Idempotency-Key header is longer than {MAX_KEY_BYTES} bytes.",
                    param="Idempotency-Key",
                    code="invalid_idempotency_key",
                )
            return bytes(value).decode("latin-1")
    return None


class _ObservedSend:
    """Adds the request id and security headers to every response start, and
    notes status and first-byte time for the access log and metrics."""

    __slots__ = ("_send", "_headers", "_record")

    def __init__(self, send: Send, request_id: bytes, record: RequestRecord | None) -> None:
        self._send = send
        self._headers: Headers = [(b"x-request-id", request_id), *_SECURITY_HEADERS]
        self._record = record

    async def __call__(self, message: Message) -> None:
        record = self._record
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", ()))
            present = {name.lower() for name, _ in headers}
            headers += [(k, v) for k, v in self._headers if k not in present]
            message = {**message, "headers": headers}
            if record is not None:
                record.status = message["status"]
                record.stream = any(
                    name.lower() == b"content-type" and value.startswith(b"text/event-stream")
                    for name, value in headers
                )
        elif record is not None and record.first_byte is None and message.get("body"):
            record.first_byte = time.perf_counter()
        await self._send(message)
