"""A realistic chat-completions stream, pre-encoded, and a tiny fast ASGI app serving it.

The stream has the shape OpenAI's server sends: a role chunk, text deltas,
two tool calls (a header delta with id and name, then argument pieces), the
finish chunk, a usage chunk (``choices: []``) and ``data: [DONE]``. Every
chunk carries the usual ``id``/``object``/``created``/``model`` envelope and
``"usage": null``, as OpenAI does when usage is requested.

The app (``app``) answers ``POST /v1/chat/completions`` with that stream;
the number of events comes from the model name (``bench-1000``: 1000 data
events before ``[DONE]``). Chunks are built from a handful of pre-encoded
byte strings, so the app costs one ``send`` per event and holds nothing per
event: a 100,000-event stream needs no more memory than a 10-event one.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson

__all__ = ["MIN_EVENTS", "app", "chat_events", "events_for_model"]

MIN_EVENTS = 12  # role + 1 text delta + 2 tool calls (4 events each) + finish + usage
_WORDS = (
    "The",
    " quick",
    " brown",
    " fox",
    " jumps",
    " over",
    " the",
    " lazy",
    " dog",
    ".",
    " Café",
    " naïve",
    " 東京",
    " → ",
    " done",
    "\n",
)
_HEAD = {
    "id": "chatcmpl-bench",
    "object": "chat.completion.chunk",
    "created": 1_700_000_000,
    "model": "bench",
    "system_fingerprint": "fp_bench",
}
_ARGS = ('{"location": ', '"Paris", "unit"', ': "celsius"}')


def _chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
    choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
    return b"data: " + orjson.dumps({**_HEAD, "choices": [choice], "usage": None}) + b"\n\n"


_ROLE = _chunk({"role": "assistant", "content": ""})
_TEXT = tuple(_chunk({"content": word}) for word in _WORDS)
_CALLS = tuple(
    piece
    for index, name in enumerate(("get_weather", "get_time"))
    for piece in (
        _chunk(
            {
                "tool_calls": [
                    {
                        "index": index,
                        "id": f"call_bench_{index}",
                        "type": "function",
                        "function": {"name": name, "arguments": ""},
                    }
                ]
            }
        ),
        *(_chunk({"tool_calls": [{"index": index, "function": {"arguments": a}}]}) for a in _ARGS),
    )
)
_FINISH = _chunk({}, "tool_calls")
_DONE = b"data: [DONE]\n\n"


def _usage(n: int) -> bytes:
    usage = {
        "prompt_tokens": 12,
        "completion_tokens": n,
        "total_tokens": 12 + n,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }
    return b"data: " + orjson.dumps({**_HEAD, "choices": [], "usage": usage}) + b"\n\n"


def chat_events(n: int, *, done: bool = True) -> Iterator[bytes]:
    """``n`` encoded ``data:`` events (at least :data:`MIN_EVENTS`), then ``[DONE]``."""
    n = max(n, MIN_EVENTS)
    yield _ROLE
    texts = n - 3 - len(_CALLS)
    for i in range(texts):
        yield _TEXT[i % len(_TEXT)]
    yield from _CALLS
    yield _FINISH
    yield _usage(n)
    if done:
        yield _DONE


def events_for_model(model: Any) -> int:
    if isinstance(model, str) and model.startswith("bench-"):
        try:
            return max(int(model[6:]), MIN_EVENTS)
        except ValueError:
            pass
    return 100


_SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]


async def app(scope: Any, receive: Any, send: Any) -> None:
    """``POST /v1/chat/completions`` streams :func:`chat_events`; ``GET /health`` says ok."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    if scope["path"] != "/v1/chat/completions" or scope["method"] != "POST":
        await send(
            {
                "type": "http.response.start",
                "status": 200 if scope["path"] == "/health" else 404,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", b"2")],
            }
        )
        await send({"type": "http.response.body", "body": b"ok"})
        return
    body = b""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        body += message.get("body", b"")
        if not message.get("more_body", False):
            break
    request = orjson.loads(body)
    await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
    # One send per event and no sleeps: the app yields only when its server
    # applies back-pressure (uvicorn does inside send), like a fast backend.
    for event in chat_events(events_for_model(request.get("model"))):
        await send({"type": "http.response.body", "body": event, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})
