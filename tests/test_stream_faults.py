"""A fault anywhere in an upstream stream loses nothing the translator produced.

For every fault kind (non-JSON data line, over-long line, upstream error
chunk, connection cut, read timeout, transport error), hypothesis picks where
the fault comes (after how many good chunks) and how the bytes are split into
upstream reads, so the fault lands at every position of a batch. The
middleware runs over a respx-mocked HTTP upstream whose body is an async
stream of exactly those reads; the client is our own receive/send, so every
body message is seen as it is sent. Every stream must pass
:mod:`compat_asgi.validate` (which requires a failure to close what is open)
and its failed response must hold all the text of the chunks before the
fault, and none of the tool calls (never complete, so never announced).

The reverse direction (a chat client over a Responses upstream) gets the same
treatment: every chunk before the fault, then the error object, no ``[DONE]``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import orjson
import pytest
import respx
from faulty_upstream import FaultyUpstream, chunk, tool
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openai.types.responses import Response
from support import Recorded, call, serve

from compat_asgi import CompatMiddleware
from compat_asgi.core.streams import response_error_code
from compat_asgi.validate import (
    assert_valid,
    parse_sse,
    validate_chat_sse,
    validate_responses_sse,
)

UPSTREAM = "http://127.0.0.1:9/v1"
MAX_LINE = 1024

# The good part of the upstream stream: reasoning, text, then two parallel
# calls whose argument deltas interleave.
GOOD = [
    chunk({"role": "assistant", "content": ""}),
    chunk({"reasoning_content": "Let me "}),
    chunk({"reasoning_content": "think."}),
    chunk({"content": "Hel"}),
    chunk({"content": "lo, "}),
    chunk({"content": "world"}),
    tool(0, "call_a", "get_weather", '{"city":'),
    tool(1, "call_b", "get_time", '{"tz":'),
    tool(0, None, None, '"Paris"}'),
    tool(1, None, None, '"UTC"}'),
]

# fault kind -> (bytes sent after the good chunks, exception raised after them, error code)
FAULTS: dict[str, tuple[bytes, Exception | None, str]] = {
    "bad-json": (b"data: {this is not json}\n\n" + chunk(finish="stop"), None, "upstream_protocol_error"),
    "long-line": (b"data: " + b"x" * (2 * MAX_LINE) + b"\n\n" + chunk(finish="stop"), None, "upstream_line_too_long"),
    "error-chunk": (b'data: {"error": {"message": "model crashed", "code": "crash"}}\n\n', None, "crash"),
    "cut": (b'data: {"choices": [{"index": 0, "del', None, "upstream_protocol_error"),
    "timeout": (b"", httpx.ReadTimeout("read timed out"), "upstream_timeout"),
    "transport": (b"", httpx.RemoteProtocolError("peer closed connection"), "upstream_error"),
}


class Reads(httpx.AsyncByteStream):
    """An upstream body delivered as exactly these reads, then ``error`` if given.

    Before raising, it waits until the client has been sent every delta of
    the reads before: a middleware that held events back would make it wait
    in vain, and the test fail.
    """

    def __init__(self, reads: list[bytes], error: Exception | None, seen: asyncio.Event | None) -> None:
        self.reads = reads
        self.error = error
        self.seen = seen

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for piece in self.reads:
            yield piece
            await asyncio.sleep(0)
        if self.error is not None:
            if self.seen is not None:
                await asyncio.wait_for(self.seen.wait(), 5)
            raise self.error


@dataclass
class Expected:
    reasoning: str
    text: str
    deltas: int  # delta events the good chunks produce
    open: bool  # an item was still open at the fault


def expected(good: int) -> Expected:
    """What the client must get of ``GOOD[:good]``: all the text, and none of
    the calls (no finish came, so none was complete and none was announced)."""
    reasoning = text = ""
    deltas = 0
    calls = False
    for raw in GOOD[:good]:
        delta = orjson.loads(raw[6:])["choices"][0]["delta"]
        for field in ("reasoning_content", "content"):
            piece = delta.get(field) or ""
            deltas += bool(piece)
            if field == "content":
                text += piece
            else:
                reasoning += piece
        calls = calls or bool(delta.get("tool_calls"))
    # A call starting closes the message; the calls themselves are never shown.
    return Expected(reasoning, text, deltas, bool(deltas) and not calls)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:]) if b > a]


def events_of(body: bytes) -> list[dict[str, Any]]:
    return [orjson.loads(data) for _, data in parse_sse(body)]


async def drive(body: dict[str, Any], reads: list[bytes], error: Exception | None, wanted_deltas: int, *, path: str, upstream_api: str = "chat") -> Recorded:
    seen = asyncio.Event()
    if wanted_deltas == 0:
        seen.set()

    async def on_body(recorded: Recorded) -> None:
        sent = recorded.body
        if sent.count(b'.delta"') >= wanted_deltas:
            seen.set()

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=Reads(reads, error, seen))

    target = "/responses" if upstream_api == "responses" else "/chat/completions"
    app = CompatMiddleware(upstream=UPSTREAM, upstream_api=upstream_api, max_line_size=MAX_LINE, keepalive_interval=5)
    try:
        with respx.mock(assert_all_called=True) as mock:
            mock.post(UPSTREAM + target).mock(side_effect=answer)
            return await call(app, "POST", path, body, on_body=on_body)
    finally:
        await app.aclose()


fault_settings = settings(max_examples=120, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


@fault_settings
@given(
    kind=st.sampled_from(sorted(FAULTS)),
    good=st.integers(0, len(GOOD)),
    cuts=st.lists(st.integers(0, 1 << 16), max_size=6),
)
def test_a_fault_anywhere_in_a_batch_keeps_everything_before_it(kind: str, good: int, cuts: list[int]) -> None:
    tail, error, code = FAULTS[kind]
    want = expected(good)
    head = b"".join(GOOD[:good])
    # A transport fault comes between reads, so the reads end where the good chunks do.
    reads = split(head, cuts) if error is not None else split(head + tail, cuts)
    body = {"model": "m", "input": "x", "stream": True}
    result = asyncio.run(drive(body, reads, error, want.deltas if error is not None else 0, path="/v1/responses"))

    if result.status != 200:
        # Only when the fault came in the first read, before anything a client could see.
        assert want.deltas == 0 and result.status in (502, 504), result.body[:300]
        assert result.json()["error"]["code"] == code
        return
    assert result.ended
    assert_valid(validate_responses_sse(result.body))
    events = events_of(result.body)
    assert [e["type"] for e in events[-2:]] == ["error", "response.failed"]
    assert events[-2]["code"] == code
    failed = events[-1]["response"]
    # The event keeps the precise code; the Response's error uses one its schema lists.
    assert failed["status"] == "failed" and failed["error"]["code"] == response_error_code(code)
    Response.model_validate(failed)

    by_type: dict[str, list[dict[str, Any]]] = {}
    for item in failed["output"]:
        by_type.setdefault(item["type"], []).append(item)
    reasoning = "".join(p["text"] for item in by_type.get("reasoning", ()) for p in item["content"])
    text = "".join(p["text"] for item in by_type.get("message", ()) for p in item["content"])
    assert (reasoning, text) == (want.reasoning, want.text)
    # No call was complete: none was announced, so a client ran none of them.
    assert "function_call" not in by_type
    assert not [e for e in events if e["type"].startswith("response.function_call")]
    # Items the fault cut short say so; the fault closed every one of them.
    open_at_fault = [item for item in failed["output"] if item["status"] == "incomplete"]
    assert bool(open_at_fault) == want.open


# -- the reverse direction: a chat client over a Responses upstream ----------------


def ev(kind: str, **fields: Any) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps({"type": kind, **fields}) + b"\n\n"


RESPONSE = {"id": "resp_1", "object": "response", "created_at": 1, "status": "in_progress", "model": "m", "output": []}
MSG = {"item_id": "msg_1", "output_index": 0, "content_index": 0}
FC = {"item_id": "fc_1", "output_index": 1}
GOOD_EVENTS = [
    ev("response.created", response=RESPONSE),
    ev("response.in_progress", response=RESPONSE),
    ev("response.output_item.added", output_index=0, item={"id": "msg_1", "type": "message", "role": "assistant", "status": "in_progress", "content": []}),
    ev("response.content_part.added", **MSG, part={"type": "output_text", "text": "", "annotations": []}),
    ev("response.output_text.delta", **MSG, delta="Hel"),
    ev("response.output_text.delta", **MSG, delta="lo"),
    ev("response.output_text.delta", **MSG, delta=", world"),
    ev("response.output_item.added", output_index=1, item={"id": "fc_1", "type": "function_call", "call_id": "call_a", "name": "get_weather", "arguments": "", "status": "in_progress"}),
    ev("response.function_call_arguments.delta", **FC, delta='{"city":'),
    ev("response.function_call_arguments.delta", **FC, delta='"Paris"}'),
]
TEXTS = {4: "Hel", 5: "lo", 6: ", world"}
ARGUMENTS = {8: '{"city":', 9: '"Paris"}'}

REVERSE_FAULTS: dict[str, tuple[bytes, Exception | None, str]] = {
    "bad-json": (b"data: {this is not json}\n\n", None, "upstream_protocol_error"),
    "long-line": (b"data: " + b"x" * (2 * MAX_LINE) + b"\n\n", None, "upstream_line_too_long"),
    "error-event": (ev("error", code="crash", message="model crashed"), None, "crash"),
    "cut": (b"event: response.output_text.delta\ndata: {\"type\": \"resp", None, "upstream_protocol_error"),
    "timeout": (b"", httpx.ReadTimeout("read timed out"), "upstream_timeout"),
    "transport": (b"", httpx.RemoteProtocolError("peer closed connection"), "upstream_error"),
}


@fault_settings
@given(
    kind=st.sampled_from(sorted(REVERSE_FAULTS)),
    good=st.integers(0, len(GOOD_EVENTS)),
    cuts=st.lists(st.integers(0, 1 << 16), max_size=6),
)
def test_a_chat_stream_keeps_every_chunk_before_the_fault_and_ends_with_the_error(kind: str, good: int, cuts: list[int]) -> None:
    tail, error, code = REVERSE_FAULTS[kind]
    head = b"".join(GOOD_EVENTS[:good])
    text = "".join(piece for at, piece in TEXTS.items() if at < good)
    arguments = "".join(piece for at, piece in ARGUMENTS.items() if at < good)
    reads = split(head, cuts) if error is not None else split(head + tail, cuts)
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": True}
    # Chat chunks carry no event names to count, so no streaming gate here: the
    # Responses direction above proves the pump streams; this proves nothing is lost.
    result = asyncio.run(drive(body, reads, error, 0, path="/v1/chat/completions", upstream_api="responses"))

    if result.status != 200:
        assert not text and not arguments and result.status in (502, 504), result.body[:300]
        assert result.json()["error"]["code"] == code
        return
    found = validate_chat_sse(result.body)
    # The failure itself is the one thing reported: nothing after the error, no [DONE].
    assert [v.rule for v in found] == ["chat-error"], "\n".join(map(str, found))
    payloads = events_of(result.body)
    assert payloads[-1]["error"]["code"] == code
    chunks = payloads[:-1]
    deltas = [c["choices"][0]["delta"] for c in chunks if c.get("choices")]
    assert "".join(d.get("content") or "" for d in deltas) == text
    assert "".join(t["function"].get("arguments") or "" for d in deltas for t in d.get("tool_calls") or ()) == arguments


# -- a client that abandons a stored stream -------------------------------------


def test_an_abandoned_stored_stream_is_kept_incomplete_and_can_be_continued() -> None:
    """A real client (the OpenAI SDK over a real socket) reads a few events of a
    ``store: true`` stream and closes the connection: the upstream is cancelled
    and the response is kept, incomplete, with the text produced; it can be
    retrieved and continued with ``previous_response_id``."""
    faulty = FaultyUpstream()
    with serve(faulty) as upstream, serve(CompatMiddleware(upstream=upstream, store="memory")) as url:
        client = openai.OpenAI(api_key="k", base_url=url + "/v1", max_retries=0)
        seen = ""
        response_id = ""
        with client.responses.create(model="endless", input="go on", stream=True, store=True) as stream:
            for event in stream:
                if event.type == "response.created":
                    response_id = event.response.id
                elif event.type == "response.output_text.delta":
                    seen += event.delta
                    if len(seen) >= 6:
                        break  # leaving the block closes the socket mid-stream
        assert response_id and seen
        assert asyncio.run(asyncio.wait_for(_wait(faulty.cancelled), 5)) is None

        deadline = time.monotonic() + 5
        while True:
            try:
                kept = client.responses.retrieve(response_id)
                break
            except openai.NotFoundError:
                assert time.monotonic() < deadline, "the abandoned response was not stored"
                time.sleep(0.05)
        assert kept.status == "incomplete"
        assert kept.incomplete_details is not None and kept.incomplete_details.reason == "interrupted"
        [message] = kept.output
        assert message.type == "message" and message.status == "incomplete"
        text = kept.output_text
        assert text.startswith(seen) and set(text) <= {"x", " "}  # everything the client saw, and what came after
        replayed = httpx.get(f"{url}/v1/responses/{response_id}", params={"stream": "true"}, timeout=10)
        assert_valid(validate_responses_sse(replayed.content))
        assert events_of(replayed.content)[-1]["response"] == httpx.get(f"{url}/v1/responses/{response_id}").json()

        follow = client.responses.create(model="no-done", input="and now?", previous_response_id=response_id, stream=True)
        final = [event for event in follow][-1]
        assert final.type == "response.completed"
        history = faulty.requests[-1]["messages"]
        assert [m["role"] for m in history] == ["user", "assistant", "user"]
        assert history[1]["content"] == text and history[2]["content"] == "and now?"


async def _wait(event: threading.Event) -> None:
    while not event.is_set():
        await asyncio.sleep(0.01)


class NamelessCall:
    """A chat upstream whose one tool call never gets a name."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        request = orjson.loads((await receive())["body"])
        call = {"index": 0, "id": "call_x", "type": "function", "function": {"arguments": "{}"}}
        head = {"id": "chatcmpl-x", "created": 1, "model": "m"}
        if not request.get("stream"):
            message = {"role": "assistant", "content": "ok", "tool_calls": [call]}
            choice = {"index": 0, "message": message, "finish_reason": "tool_calls"}
            body = orjson.dumps({**head, "object": "chat.completion", "choices": [choice]})
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": body})
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        body = b""
        for delta, finish in (({"content": "ok"}, None), ({"tool_calls": [call]}, None), ({}, "tool_calls")):
            choice = {"index": 0, "delta": delta, "finish_reason": finish}
            body += b"data: " + orjson.dumps({**head, "object": "chat.completion.chunk", "choices": [choice]}) + b"\n\n"
        await send({"type": "http.response.body", "body": body + b"data: [DONE]\n\n"})


@pytest.mark.parametrize("stream", [False, True])
def test_a_call_left_out_of_the_response_is_logged(stream: bool, caplog: pytest.LogCaptureFixture) -> None:
    """A call no client could route (no name) is left out, and an operator is told."""
    app = CompatMiddleware(NamelessCall())
    answer = asyncio.run(call(app, "POST", "/v1/responses", {"model": "m", "input": "hi", "stream": stream}))
    assert answer.status == 200
    final = (
        orjson.loads([data for _, data in parse_sse(answer.body)][-1])["response"] if stream else answer.json()
    )
    assert [item["type"] for item in final["output"]] == ["message"]
    assert f"{final['id']}: 1 tool call(s) from the upstream left out" in caplog.text
