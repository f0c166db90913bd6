"""The Responses <-> chat-completions translation as a library, without a server.

Everything here is the pure core that :class:`~compat_asgi.CompatMiddleware`
runs: it never awaits and never does I/O, so any framework or client can drive
it with the transport it already has. The flow for one request:

1. :func:`responses_to_chat` validates a Responses ``POST /responses`` body and
   gives the chat body to send (``.chat``), the fields the Response object
   echoes (``.echo``), whether the client asked to stream (``.stream``) and how
   the answer becomes output items (``.output``, an :class:`OutputOptions`).
   Server-side choices go in a :class:`RequestOptions`.
   A bad body raises :class:`InvalidRequest`; its ``status``, ``param`` and
   ``to_dict()`` are OpenAI's 400 envelope.
2. :func:`new_response` builds the in-progress Response object.
3. Not streaming: :func:`chat_completion_to_response` fills it from the chat
   completion. Streaming: a :class:`ChatToResponses` is fed the upstream SSE
   bytes exactly as they arrive (split anywhere) and returns Responses events,
   ``sequence_number`` already assigned; :func:`encode_event` frames one as
   SSE. Both take ``request.output``, so custom tools and reasoning come out
   as the request asked.

With ``httpx.AsyncClient`` against a chat server::

    from compat_asgi import translate

    async def responses_events(client, body):  # body has "stream": true
        request = translate.responses_to_chat(body)
        ids = translate.RandomIds()
        response = translate.new_response(request.echo, ids("resp"), translate.system_clock())
        stream = translate.ChatToResponses(response, ids, options=request.output)
        for event in stream.start():
            yield event
        async with client.stream("POST", "/v1/chat/completions", json=request.chat) as upstream:
            try:
                async for data in upstream.aiter_bytes():
                    for event in stream.feed_bytes(data):
                        yield event
                    if stream.saw_done:
                        break
                tail = stream.close()  # raises if the upstream stopped mid-answer
            except translate.CompatError as exc:
                tail = stream.fail(exc)  # ``error`` + ``response.failed``
        for event in tail:
            yield event
        # stream.response now holds the final Response object.

``examples/translate_library.py`` is this, runnable, with the non-streamed
path and HTTP errors too. Ids and timestamps are injectable
(:class:`CountingIds`, :class:`FixedClock`) so that output can be exact in tests.
"""

from __future__ import annotations

from compat_asgi.core.ids import (
    Clock,
    CountingIds,
    FixedClock,
    IdFactory,
    RandomIds,
    system_clock,
)
from compat_asgi.core.options import OutputOptions, RequestOptions
from compat_asgi.core.requests import TranslatedRequest, responses_to_chat
from compat_asgi.core.responses import (
    chat_completion_to_response,
    map_usage,
    new_response,
)
from compat_asgi.core.sse import (
    DEFAULT_MAX_LINE,
    ServerSentEvent,
    SSEDecoder,
    encode_data,
    encode_event,
    encode_events,
)
from compat_asgi.core.streams import ChatToResponses, completion_to_chunk
from compat_asgi.errors import (
    CompatError,
    InvalidRequest,
    LineTooLong,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamStatusError,
)

__all__ = [
    # request: Responses body -> chat body
    "responses_to_chat",
    "TranslatedRequest",
    "RequestOptions",
    "OutputOptions",
    # response objects (not streamed)
    "new_response",
    "chat_completion_to_response",
    "map_usage",
    # streams
    "ChatToResponses",
    "completion_to_chunk",
    "SSEDecoder",
    "ServerSentEvent",
    "encode_event",
    "encode_events",
    "encode_data",
    "DEFAULT_MAX_LINE",
    # ids and time
    "IdFactory",
    "RandomIds",
    "CountingIds",
    "Clock",
    "system_clock",
    "FixedClock",
    # errors
    "CompatError",
    "InvalidRequest",
    "UpstreamError",
    "UpstreamStatusError",
    "UpstreamProtocolError",
    "LineTooLong",
]
