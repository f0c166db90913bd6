"""CompatMiddleware at the ASGI level: routing, streaming, errors, disconnects.

Driven with hand-made receive/send (tests/support.py), which sees every
``send`` as it happens; httpx.ASGITransport would buffer the body.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import httpx
import orjson
import pytest
import respx
from support import Recorded, call, http_scope, serve

from compat_asgi import CompatMiddleware
from compat_asgi.demo import DemoChatApp
from compat_asgi.types import Message, Receive, Scope, Send
from compat_asgi.validate import assert_valid, validate_responses_sse


def sse_events(body: bytes) -> list[dict[str, Any]]:
    return [orjson.loads(line[6:]) for line in body.split(b"\n") if line.startswith(b"data: ")]


class Recorder:
    """An upstream chat app that records what it receives and answers from a script."""

    def __init__(self, status: int = 200, body: bytes = b"", content_type: bytes = b"application/json",
                 headers: list[tuple[bytes, bytes]] | None = None) -> None:
        self.status, self.body, self.content_type = status, body, content_type
        self.extra_headers = headers or []
        self.scopes: list[Scope] = []
        self.requests: list[bytes] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.scopes.append(scope)
        if scope["type"] != "http":
            return
        message = await receive()
        self.requests.append(message.get("body", b""))
        await send({"type": "http.response.start", "status": self.status,
                    "headers": [(b"content-type", self.content_type), *self.extra_headers]})
        await send({"type": "http.response.body", "body": self.body})


def chat_completion(content: str = "hello", finish: str = "stop") -> bytes:
    return orjson.dumps({
        "id": "c", "object": "chat.completion", "created": 0, "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": finish}],
        "usage": {"prompt_tokens": 2, "completion_tokens": 1, "total_tokens": 3},
    })


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_other_paths_and_methods_reach_the_wrapped_app_untouched() -> None:
    inner = Recorder(body=b"inner")
    app = CompatMiddleware(inner)
    for method, path in [("GET", "/"), ("POST", "/v1/chat/completions"), ("GET", "/v1/embeddings"), ("GET", "/v1/responsesX")]:
        result = run(call(app, method, path, b"raw body"))
        assert result.status == 200 and result.body == b"inner"
        assert inner.scopes[-1]["path"] == path
        assert inner.requests[-1] == b"raw body"


def test_websocket_and_lifespan_scopes_pass_through() -> None:
    seen: list[str] = []
    shutdown = []

    async def inner(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope["type"])
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                kind = message["type"].split(".")[1]
                await send({"type": f"lifespan.{kind}.complete"})
                if kind == "shutdown":
                    shutdown.append(True)
                    return

    app = CompatMiddleware(inner)

    async def lifespan() -> list[str]:
        incoming = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
        sent: list[str] = []

        async def receive() -> Message:
            return incoming.pop(0)

        async def send(message: Message) -> None:
            sent.append(message["type"])

        await app({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send)
        return sent

    assert run(lifespan()) == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    # /v1/responses sockets are WebSocket mode (tests/endpoints/test_websocket.py); others are the app's.
    run(app({"type": "websocket", "path": "/v1/realtime"}, None, None))  # type: ignore[arg-type]
    assert seen == ["lifespan", "websocket"] and shutdown == [True]


def test_prefix_is_configurable() -> None:
    app = CompatMiddleware(DemoChatApp(), prefix="/openai/v1")
    translated = run(call(app, "POST", "/openai/v1/responses", {"model": "demo", "input": "hi"}))
    assert translated.status == 200 and translated.json()["object"] == "response"
    passed = run(call(app, "POST", "/v1/responses", {"model": "demo", "input": "hi"}))
    assert passed.status == 404  # the demo has no such route: it reached the app


def test_chat_request_sent_upstream() -> None:
    inner = Recorder(body=chat_completion())
    app = CompatMiddleware(inner)
    scope = http_scope("POST", "/v1/responses", [(b"authorization", b"Bearer k"), (b"content-type", b"application/json")])
    result = run(call(app, "POST", "/v1/responses", {"model": "m", "input": "hi", "instructions": "sys", "stream": True}, scope=scope))
    sent = orjson.loads(inner.requests[0])
    assert inner.scopes[0]["path"] == "/v1/chat/completions"
    assert sent["messages"] == [{"role": "system", "content": "sys"}, {"role": "user", "content": "hi"}]
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    assert (b"authorization", b"Bearer k") in inner.scopes[0]["headers"]
    # The upstream ignored stream=true and answered whole: the client still gets a stream.
    assert result.header(b"content-type").startswith(b"text/event-stream")
    assert_valid(validate_responses_sse(result.body))
    assert sse_events(result.body)[-1]["response"]["output"][0]["content"][0]["text"] == "hello"


def test_non_stream_response_has_content_length_and_stream_has_none() -> None:
    app = CompatMiddleware(DemoChatApp())
    plain = run(call(app, "POST", "/v1/responses", {"model": "demo", "input": "hi"}))
    assert plain.header(b"content-length") == str(len(plain.body)).encode()
    streamed = run(call(app, "POST", "/v1/responses", {"model": "demo", "input": "hi", "stream": True}))
    assert streamed.header(b"content-length") is None
    assert len(streamed.bodies) > 5  # sent as it was produced, not in one piece
    assert_valid(validate_responses_sse(streamed.body))


def test_first_delta_reaches_the_client_while_the_upstream_is_still_generating() -> None:
    gate = asyncio.Event()
    observed: list[bool] = []

    async def slow_chat(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        await send({"type": "http.response.body", "body": b'data: {"choices":[{"index":0,"delta":{"content":"first"}}]}\n\n', "more_body": True})
        try:
            await asyncio.wait_for(gate.wait(), 5)
            observed.append(True)
        except asyncio.TimeoutError:
            observed.append(False)
        await send({"type": "http.response.body", "body": b'data: {"choices":[{"index":0,"delta":{"content":" second"},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n'})

    async def on_body(recorded: Recorded) -> None:
        if b"response.output_text.delta" in recorded.body:
            gate.set()

    app = CompatMiddleware(slow_chat)
    result = run(call(app, "POST", "/v1/responses", {"model": "m", "input": "x", "stream": True}, on_body=on_body))
    assert observed == [True]
    assert_valid(validate_responses_sse(result.body))


@pytest.mark.parametrize(
    ("status", "body", "expect_status", "expect"),
    [
        (400, b'{"error": {"message": "bad model", "type": "invalid_request_error", "param": "model", "code": "model_not_found"}}', 400,
         {"message": "bad model", "type": "invalid_request_error", "param": "model", "code": "model_not_found"}),
        (404, b'{"detail": "Not Found"}', 404, {"message": "Not Found", "type": "invalid_request_error", "param": None, "code": None}),
        (500, b"<html>oops</html>", 502, {"message": "upstream returned HTTP 500: <html>oops</html>", "type": "server_error", "param": None, "code": "upstream_error"}),
        (503, b"", 503, {"message": "upstream returned HTTP 503", "type": "server_error", "param": None, "code": "upstream_error"}),
    ],
)
def test_upstream_http_errors_are_translated(status: int, body: bytes, expect_status: int, expect: dict[str, Any]) -> None:
    inner = Recorder(status=status, body=body, headers=[(b"retry-after", b"7")])
    app = CompatMiddleware(inner)
    for stream in (False, True):
        result = run(call(app, "POST", "/v1/responses", {"model": "m", "input": "x", "stream": stream}))
        assert result.status == expect_status
        assert result.json() == {"error": expect}
        assert result.header(b"retry-after") == b"7"


def test_request_body_limit_is_413() -> None:
    app = CompatMiddleware(DemoChatApp(), max_body_size=100)
    result = run(call(app, "POST", "/v1/responses", {"model": "demo", "input": "x" * 200}))
    assert result.status == 413
    assert result.json()["error"]["code"] == "request_too_large"


def test_upstream_app_crash_is_502_before_start_and_failed_after() -> None:
    async def crash(scope: Scope, receive: Receive, send: Send) -> None:
        raise RuntimeError("kaput")

    result = run(call(CompatMiddleware(crash), "POST", "/v1/responses", {"model": "m", "input": "x"}))
    assert result.status == 502 and result.json()["error"]["type"] == "server_error"

    async def crash_mid_stream(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        await send({"type": "http.response.body", "body": b'data: {"choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n', "more_body": True})
        raise RuntimeError("kaput")

    result = run(call(CompatMiddleware(crash_mid_stream), "POST", "/v1/responses", {"model": "m", "input": "x", "stream": True}))
    assert result.status == 200
    assert_valid(validate_responses_sse(result.body))
    assert [e["type"] for e in sse_events(result.body)[-2:]] == ["error", "response.failed"]


def test_client_disconnect_cancels_the_upstream() -> None:
    cancelled = asyncio.Event()

    async def endless(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        try:
            while True:
                await send({"type": "http.response.body", "body": b'data: {"choices":[{"index":0,"delta":{"content":"x "}}]}\n\n', "more_body": True})
                await asyncio.sleep(0.01)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async def scenario() -> float:
        app = CompatMiddleware(endless)
        disconnect = asyncio.Event()
        sent = False

        async def receive() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": orjson.dumps({"model": "m", "input": "x", "stream": True})}
            await disconnect.wait()
            return {"type": "http.disconnect"}

        bodies = 0

        async def send(message: Message) -> None:
            nonlocal bodies
            bodies += message["type"] == "http.response.body"
            if bodies == 3:
                disconnect.set()

        task = asyncio.create_task(app(http_scope("POST", "/v1/responses"), receive, send))
        await disconnect.wait()
        loop = asyncio.get_running_loop()
        start = loop.time()
        await asyncio.wait_for(cancelled.wait(), 1)
        await asyncio.wait_for(task, 1)
        return loop.time() - start

    assert run(scenario()) < 1


@respx.mock
def test_http_upstream_refused_and_timeout() -> None:
    respx.post("http://127.0.0.1:9/v1/chat/completions").mock(side_effect=httpx.ConnectError("refused"))
    respx.post("http://127.0.0.1:10/v1/chat/completions").mock(side_effect=httpx.ReadTimeout("slow"))
    for port, status, code in [(9, 502, "upstream_error"), (10, 504, "upstream_timeout")]:
        app = CompatMiddleware(upstream=f"http://127.0.0.1:{port}/v1")
        result = run(call(app, "POST", "/v1/responses", {"model": "m", "input": "x"}))
        assert result.status == status
        assert result.json()["error"]["code"] == code


def test_http_upstream_streams_end_to_end_through_uvicorn() -> None:
    gate = threading.Event()
    released: list[bool] = []

    async def gated_chat(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        await send({"type": "http.response.body", "body": b'data: {"choices":[{"index":0,"delta":{"content":"first"}}]}\n\n', "more_body": True})
        released.append(await asyncio.to_thread(gate.wait, 5))
        await send({"type": "http.response.body", "body": b'data: {"choices":[{"index":0,"delta":{"content":" last"},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n'})

    with serve(gated_chat) as upstream, serve(CompatMiddleware(upstream=upstream)) as url:
        with httpx.stream("POST", url + "/v1/responses", json={"model": "m", "input": "x", "stream": True}, timeout=10) as response:
            raw = b""
            for chunk in response.iter_raw():
                raw += chunk
                if b"response.output_text.delta" in raw:
                    gate.set()
    assert released == [True]
    assert_valid(validate_responses_sse(raw))


def test_compressed_answers_of_the_wrapped_app_are_decoded_or_declined() -> None:
    import gzip

    stream = b'data: {"choices":[{"index":0,"delta":{"content":"zipped"},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n'

    def compressing(coding: bytes, body: bytes) -> Any:
        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            await receive()
            headers = [(b"content-type", b"text/event-stream"), (b"content-encoding", coding)]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            for i in range(0, len(body), 7):  # compressed bytes split anywhere
                await send({"type": "http.response.body", "body": body[i : i + 7], "more_body": True})
            await send({"type": "http.response.body", "body": b""})

        return app

    request = {"model": "m", "input": "x", "stream": True}
    result = run(call(CompatMiddleware(compressing(b"gzip", gzip.compress(stream))), "POST", "/v1/responses", request))
    assert_valid(validate_responses_sse(result.body))
    assert sse_events(result.body)[-1]["response"]["output"][0]["content"][0]["text"] == "zipped"

    declined = run(call(CompatMiddleware(compressing(b"br", b"\x00\x01")), "POST", "/v1/responses", request))
    assert declined.status == 502
    assert "outside CompatMiddleware" in declined.json()["error"]["message"]
