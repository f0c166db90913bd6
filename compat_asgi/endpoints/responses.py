"""``POST /responses`` over a chat-completions upstream."""

from __future__ import annotations

from typing import Any

import orjson

from compat_asgi.asgi import (
    SSE_HEADERS,
    Responder,
    is_event_stream,
    parse_json,
    parse_upstream_json,
    pump,
    raise_for_status,
    upstream_headers,
)
from compat_asgi.core.requests import responses_to_chat
from compat_asgi.core.responses import chat_completion_to_response, new_response
from compat_asgi.core.sse import encode_event
from compat_asgi.core.streams import ChatToResponses, completion_to_chunk
from compat_asgi.endpoints import Call
from compat_asgi.errors import CompatError, InvalidRequest
from compat_asgi.settings import Settings
from compat_asgi.upstream import Upstream

__all__ = ["ResponsesOverChat"]

CHAT_PATH = "/v1/chat/completions"


class _EncodedStream:
    """:class:`ChatToResponses` as the shell's byte-level StreamTranslator."""

    __slots__ = ("core",)

    def __init__(self, core: ChatToResponses) -> None:
        self.core = core

    @property
    def finished(self) -> bool:
        return self.core.saw_done

    def start(self) -> bytes:
        return _encode(self.core.start())

    def feed(self, data: bytes) -> bytes:
        return _encode(self.core.feed_bytes(data))

    def close(self) -> bytes:
        return _encode(self.core.close())

    def fail(self, error: CompatError) -> bytes:
        return _encode(self.core.fail(error))


def _encode(events: list[dict[str, Any]]) -> bytes:
    return b"".join([encode_event(event) for event in events])


class ResponsesOverChat:
    def __init__(self, upstream: Upstream, settings: Settings) -> None:
        self.upstream = upstream
        self.settings = settings

    async def handle(self, call: Call, responder: Responder) -> None:
        settings = self.settings
        translated = responses_to_chat(parse_json(call.body), settings.translation)
        echo = translated.echo
        for field in ("previous_response_id", "conversation"):
            if echo.get(field) is not None:
                raise InvalidRequest(
                    f"'{field}' needs a response store, and this server has none configured.",
                    param=field,
                )
        upstream = await self.upstream.request(
            "POST",
            CHAT_PATH,
            upstream_headers(
                call.scope, keep_authorization=not settings.strip_authorization, json_body=True
            ),
            orjson.dumps(translated.chat),
            scope=call.scope,
        )
        try:
            await raise_for_status(upstream)
            response = new_response(echo, settings.ids("resp"), settings.clock())
            if not translated.stream:
                completion = parse_upstream_json(
                    await upstream.read(settings.max_upstream_body_size)
                )
                await responder.send_json(
                    200,
                    chat_completion_to_response(
                        completion, response, settings.ids, translated.output
                    ),
                )
                return
            core = ChatToResponses(
                response, settings.ids, max_line=settings.max_line_size, options=translated.output
            )
            if is_event_stream(upstream.headers):
                await pump(
                    upstream, _EncodedStream(core), responder, keepalive=settings.keepalive_interval
                )
                return
            # The upstream ignored stream=true and answered whole: replay it as a stream.
            completion = parse_upstream_json(await upstream.read(settings.max_upstream_body_size))
            events = core.start()
            events += core.feed(completion_to_chunk(completion))
            events += core.finish(saw_done=True)
            await responder.start(200, SSE_HEADERS)
            await responder.body(_encode(events), more_body=False)
        finally:
            await upstream.aclose()
