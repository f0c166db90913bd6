"""Responses WebSocket mode: ``{prefix}/responses`` as a long-lived socket.

Each ``response.create`` message carries a create body (no ``stream``, no
``background``); the answer is the same event sequence the SSE endpoint
streams, one JSON text frame per event, produced by the same translator
(:meth:`ResponsesOverChat.events`). Responses run one after another on a
socket. The connection remembers its last response, so a turn that names it
in ``previous_response_id`` continues from memory even with ``store: false``,
as OpenAI's server does; a failed turn forgets it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from compat_asgi.asgi import JSON_HEADERS, Slots, route_path
from compat_asgi.core.sse import event_data
from compat_asgi.endpoints import Call, Target
from compat_asgi.endpoints.responses import ResponsesOverChat, Turn
from compat_asgi.errors import CompatError, InvalidRequest, RequestTooLarge, ServerBusy, UpstreamError
from compat_asgi.observability import RequestRecord
from compat_asgi.types import Message, Receive, Scope, Send

__all__ = ["ResponsesWebSocket", "DEFAULT_MAX_SOCKETS_PER_KEY", "DEFAULT_SOCKET_LIFETIME"]

logger = logging.getLogger("compat_asgi")

DEFAULT_MAX_SOCKETS_PER_KEY = 16  # open sockets per API key (all callers share one count without keys)
DEFAULT_SOCKET_LIFETIME = 60 * 60.0  # seconds; then new turns are refused, as OpenAI's server does
_PENDING_MESSAGES = 8  # messages read ahead while a response runs; then the socket waits
# Client messages that need no answer: Codex acknowledges each response it processed.
_ACKNOWLEDGEMENTS = frozenset({"response.processed"})
# Handshake headers that belong to the socket, not to the upstream requests made for it.
_SOCKET_HEADERS = frozenset(
    {
        b"sec-websocket-key",
        b"sec-websocket-version",
        b"sec-websocket-extensions",
        b"sec-websocket-protocol",
        b"sec-websocket-accept",
        b"upgrade",
        b"connection",
    }
)

Authenticate = Callable[[Scope], "str | None | CompatError"]
Observe = Callable[[RequestRecord], None]


@dataclass(slots=True)
class _Memory:
    """The connection's last response, for ``previous_response_id``."""

    response_id: str
    context: list[dict[str, Any]]


class ResponsesWebSocket:
    """Serves websocket scopes on ``{prefix}/responses``."""

    def __init__(
        self,
        responses: ResponsesOverChat,
        *,
        authenticate: Authenticate,
        resolve: Callable[[Call], Target],
        max_sockets_per_key: int = DEFAULT_MAX_SOCKETS_PER_KEY,
        lifetime: float = DEFAULT_SOCKET_LIFETIME,
        slots: Slots | None = None,
    ) -> None:
        """``slots``: shared with the HTTP requests; a turn takes one while it runs."""
        if max_sockets_per_key <= 0:
            raise ValueError(f"max_sockets_per_key must be positive, got {max_sockets_per_key!r}")
        self._responses = responses
        self._authenticate = authenticate
        self._resolve = resolve
        self._max_message = responses.settings.max_body_size
        self._max_sockets = max_sockets_per_key
        self._lifetime = lifetime
        self._slots = slots
        self._open: dict[str | None, int] = {}
        self._started: Observe | None = None
        self._report: Observe | None = None

    def observe(self, started: Observe | None, report: Observe) -> None:
        """Report each turn (``response.create``, answered or refused) as a
        request: ``started`` as it begins, ``report`` once it ended (the access
        log line and the metrics of method ``WS``)."""
        self._started, self._report = started, report

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        owner = self._authenticate(scope)
        if isinstance(owner, CompatError):
            await _refuse(scope, send, owner)
            return
        if self._open.get(owner, 0) >= self._max_sockets:
            await _refuse(
                scope,
                send,
                ServerBusy(
                    f"This API key already has {self._max_sockets} open Responses WebSockets; "
                    "close one or use HTTP.",
                    status=429,
                    code="websocket_connection_limit_reached",
                    headers=[(b"retry-after", b"1")],
                ),
            )
            return
        self._open[owner] = self._open.get(owner, 0) + 1
        try:
            await send({"type": "websocket.accept"})
            await _Connection(self, scope, owner, send).run(receive)
        finally:
            left = self._open[owner] - 1
            if left:
                self._open[owner] = left
            else:
                del self._open[owner]


class _Gone(Exception):
    """The client closed the socket."""


class _Connection:
    __slots__ = ("_mode", "_scope", "_owner", "_send", "_memory", "_opened", "_record")

    def __init__(self, mode: ResponsesWebSocket, scope: Scope, owner: str | None, send: Send) -> None:
        self._mode = mode
        # Upstream requests see what an HTTP client would have sent them.
        headers = [(k, v) for k, v in scope.get("headers", ()) if k.lower() not in _SOCKET_HEADERS]
        self._scope: Scope = {**scope, "type": "http", "method": "POST", "headers": headers}
        self._owner = owner
        self._send = send
        self._memory: _Memory | None = None
        self._opened = time.monotonic()
        self._record: RequestRecord | None = None  # the turn in progress, when turns are reported

    async def run(self, receive: Receive) -> None:
        inbox: asyncio.Queue[Message | None] = asyncio.Queue(_PENDING_MESSAGES)
        reader = asyncio.create_task(_read(receive, inbox))
        turn: asyncio.Task[None] | None = None
        try:
            while True:
                message = await inbox.get()
                if message is None:
                    return
                turn = asyncio.create_task(self._handle(message))
                # The client leaving cancels the turn, and with it the upstream request.
                await asyncio.wait({turn, reader}, return_when=asyncio.FIRST_COMPLETED)
                if not turn.done():
                    turn.cancel()
                    with contextlib.suppress(asyncio.CancelledError, _Gone):
                        await turn
                    return
                if isinstance(turn.exception(), _Gone):
                    return
                turn.result()
        finally:
            reader.cancel()
            if turn is not None:
                turn.cancel()  # the server is cancelling us (shutdown): the turn goes too

    async def _handle(self, message: Message) -> None:
        parsed = self._parse(message)
        if isinstance(parsed, dict) and parsed.get("type") in _ACKNOWLEDGEMENTS:
            return  # no answer, and no request to report
        mode = self._mode
        if mode._report is not None:
            ids = mode._responses.settings.ids
            self._record = RequestRecord(
                ids("req"), "WS", route_path(self._scope), stream=True, started=time.perf_counter()
            )
            if mode._started is not None:
                mode._started(self._record)
        try:
            if isinstance(parsed, CompatError):
                await self._error(parsed)
            else:
                await self._create(parsed)
        finally:
            record, self._record = self._record, None
            if record is not None and mode._report is not None:
                mode._report(record)

    def _parse(self, message: Message) -> dict[str, Any] | CompatError:
        """A ``response.create`` or acknowledgement message, or why it is refused."""
        raw: bytes | str | None = message.get("text")
        if raw is None:
            raw = message.get("bytes") or b""
        size = len(raw) if isinstance(raw, bytes) else len(raw.encode())
        if size > self._mode._max_message:
            return RequestTooLarge(f"Message of {size} bytes exceeds the limit of {self._mode._max_message} bytes.")
        try:
            payload = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return InvalidRequest("The message is not valid JSON.", code="invalid_json")
        kind = payload.get("type") if isinstance(payload, dict) else None
        if kind in _ACKNOWLEDGEMENTS or kind == "response.create":
            assert isinstance(payload, dict)
            return payload
        return InvalidRequest(
            f"Invalid message type {kind!r}; supported: 'response.create'."
            if isinstance(kind, str)
            else "Each message must be a JSON object with a 'type'.",
            param="type",
            code="invalid_value" if isinstance(kind, str) else "missing_required_parameter",
        )

    async def _create(self, payload: dict[str, Any]) -> None:
        slots = self._mode._slots
        if slots is None:
            await self._turn(payload)
            return
        try:
            slots.take()
        except ServerBusy as exc:  # transient: the connection keeps its last response
            await self._error(exc)
            return
        try:
            await self._turn(payload)
        finally:
            slots.give()

    async def _turn(self, payload: dict[str, Any]) -> None:
        body = {k: v for k, v in payload.items() if k not in ("type", "stream")}
        memory, self._memory = self._memory, None  # a failed turn must not leave it behind
        try:
            if time.monotonic() - self._opened > self._mode._lifetime:
                raise InvalidRequest(
                    f"Responses websocket connection limit reached ({self._mode._lifetime / 60:g} minutes). "
                    "Create a new websocket connection to continue.",
                    code="websocket_connection_limit_reached",
                )
            if body.get("background") is True:
                raise InvalidRequest("background is not supported in WebSocket mode.", param="background")
            generate = body.pop("generate", True)
            if not isinstance(generate, bool):
                raise InvalidRequest("'generate' must be a boolean.", param="generate")
            history = None
            previous = body.get("previous_response_id")
            if previous is not None and memory is not None and previous == memory.response_id:
                history = memory.context
            elif previous is not None and (self._mode._responses.store is None or not isinstance(previous, str)):
                raise _not_found(previous)
            call = Call(self._scope, b"", self._owner, self._mode._resolve, _payload=body)
            record = self._record
            if record is not None:
                model = body.get("model")
                record.model = model if isinstance(model, str) else None
                record.mode = "translated"
                record.upstream = call.target.name
            if call.target.api != "chat":
                raise InvalidRequest(
                    "WebSocket mode needs a chat-completions upstream for this model.", param="model"
                )
            turn = Turn()
            stream = self._mode._responses.events(call, body, turn, history=history, generate=generate)
            try:
                async with contextlib.aclosing(stream):
                    async for events in stream:
                        await self._frames(events, turn.encoded)
            except CompatError as exc:
                if exc.code == "previous_response_not_found":
                    raise _not_found(previous) from exc  # WebSocket mode reports it as a 400
                raise
            finally:
                if record is not None:
                    record.ignored = call.ignored
        except CompatError as exc:
            await self._error(exc)
            return
        except (_Gone, asyncio.CancelledError):
            raise
        except Exception:
            logger.exception("unhandled error in a Responses WebSocket turn")
            await self._error(UpstreamError("internal error", status=500))
            return
        response = turn.response
        if response is not None and response.get("status") in ("completed", "incomplete"):
            self._memory = _Memory(response["id"], turn.context)

    async def _frames(self, events: list[dict[str, Any]], encoded: bytes | None) -> None:
        """One text frame per event; from the SSE bytes made for the stored
        record when there are some (the same JSON), else encoded here."""
        if events and self._record is not None and not self._record.status:
            self._record.status, self._record.first_byte = 200, time.perf_counter()
        data = event_data(encoded) if encoded is not None else [orjson.dumps(event) for event in events]
        for text in data:
            await self._text(text.decode())

    async def _error(self, error: CompatError) -> None:
        """An ``error`` event for a turn refused before it started; the socket stays open."""
        record = self._record
        if record is not None:
            record.error = error.code
            if not record.status:
                record.status, record.first_byte = error.status, time.perf_counter()
        event = {"type": "error", "status": error.status, **error.to_dict()}
        await self._text(orjson.dumps(event).decode())

    async def _text(self, text: str) -> None:
        try:
            await self._send({"type": "websocket.send", "text": text})
        except OSError as exc:  # servers raise their own OSError subclass once the client left
            raise _Gone from exc


def _not_found(previous: Any) -> InvalidRequest:
    return InvalidRequest(
        f"Previous response with id '{previous}' not found.",
        param="previous_response_id",
        code="previous_response_not_found",
    )


async def _read(receive: Receive, inbox: asyncio.Queue[Message | None]) -> None:
    """Move client messages to ``inbox``; ``None`` once the client disconnected."""
    try:
        while True:
            message = await receive()
            if message["type"] == "websocket.receive":
                await inbox.put(message)
            elif message["type"] == "websocket.disconnect":
                return
    finally:
        with contextlib.suppress(asyncio.QueueFull):
            inbox.put_nowait(None)


async def _refuse(scope: Scope, send: Send, error: CompatError) -> None:
    """Turn the handshake down with ``error`` as an HTTP response where the
    server supports that, else with a plain refusal (servers answer 403)."""
    if "websocket.http.response" in scope.get("extensions", {}):
        body = error.to_json()
        headers = [*JSON_HEADERS, (b"content-length", str(len(body)).encode()), *error.headers]
        await send({"type": "websocket.http.response.start", "status": error.status, "headers": headers})
        await send({"type": "websocket.http.response.body", "body": body, "more_body": False})
    else:
        await send({"type": "websocket.close", "code": 1008})
