"""``POST /chat/completions`` over a Responses upstream."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from compat_asgi.asgi import (
    SSE_HEADERS,
    Responder,
    is_event_stream,
    parse_upstream_json,
    pump,
    raise_for_status,
)
from compat_asgi.core.chat_requests import chat_to_responses
from compat_asgi.core.chat_streams import (
    ResponsesToChat,
    completion_chunks,
    response_to_chat_completion,
)
from compat_asgi.core.sse import DONE_FRAME, encode_chunks
from compat_asgi.endpoints import Call, post_json, report_ignored
from compat_asgi.errors import CompatError
from compat_asgi.settings import Settings

__all__ = ["ChatOverResponses", "RESPONSES_PATH"]

logger = logging.getLogger("compat_asgi")

RESPONSES_PATH = "/v1/responses"


class _EncodedChat:
    """:class:`ResponsesToChat` as the shell's byte-level StreamTranslator."""

    __slots__ = ("core",)

    def __init__(self, core: ResponsesToChat) -> None:
        self.core = core

    @property
    def finished(self) -> bool:
        return self.core.done

    @property
    def pending(self) -> bool:
        return self.core.pending

    def start(self) -> bytes:
        return b""  # a chat stream has no preamble: the role chunk comes with the first event

    def feed(self, data: bytes) -> bytes:
        return encode_chunks(self.core.feed_bytes(data))

    def close(self) -> Iterable[bytes]:
        tail = encode_chunks(self.core.close()) + DONE_FRAME
        if self.core.ignored_events:
            # Hosted-tool progress, annotations ...: no chat equivalent, but not silently lost.
            logger.info("%d upstream Responses events have no chat equivalent", self.core.ignored_events)
        return (tail,)

    def fail(self, error: CompatError) -> Iterable[bytes]:
        # The chunks before the fault, then the error object and no [DONE]:
        # the OpenAI SDK raises APIError on it, after the text it already yielded.
        return (encode_chunks(self.core.fail(error)),)

    def interrupt(self) -> bytes:
        return b""  # nothing of a chat completion is kept


class ChatOverResponses:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def handle(self, call: Call, responder: Responder) -> None:
        settings = self.settings
        target = call.target
        translated = chat_to_responses(call.json(), target.options)
        report_ignored(call, responder, translated.ignored)
        target.adapt(translated.responses, "max_output_tokens")
        upstream = await post_json(call, settings, RESPONSES_PATH, translated.responses)
        try:
            await raise_for_status(upstream)
            completion_id = "chatcmpl-" + settings.ids("chatcmpl").partition("_")[2]
            created = settings.clock()
            if translated.stream and is_event_stream(upstream.headers):
                core = ResponsesToChat(
                    completion_id=completion_id,
                    created=created,
                    model=translated.model,
                    include_usage=translated.include_usage,
                    ids=settings.ids,
                    max_line=settings.max_line_size,
                )
                await pump(upstream, _EncodedChat(core), responder, keepalive=settings.keepalive_interval)
                return
            completion = response_to_chat_completion(
                parse_upstream_json(await upstream.read(settings.max_upstream_body_size)),
                completion_id=completion_id,
                created=created,
                model=translated.model,
            )
            if not translated.stream:
                await responder.send_json(200, completion)
                return
            # The upstream answered a streamed request whole: send it as a stream.
            chunks = completion_chunks(completion, include_usage=translated.include_usage)
            await responder.start(200, SSE_HEADERS)
            await responder.body(encode_chunks(chunks) + DONE_FRAME, more_body=False)
        finally:
            await upstream.aclose()
