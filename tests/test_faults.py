"""Upstream faults over a real socket: each ends in a clean, typed outcome.

Before the stream starts: an HTTP status with OpenAI's error envelope.
After: an ``error`` event then ``response.failed``. Nothing hangs.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
import respx
from faulty_upstream import FaultyUpstream
from support import TRANSPORTS, call, serve

from compat_asgi import CompatMiddleware
from compat_asgi.core.streams import response_error_code
from compat_asgi.validate import assert_valid, validate_responses_sse

TIMEOUT = 0.5


@pytest.fixture(scope="module")
def faulty() -> Iterator[tuple[FaultyUpstream, str]]:
    app = FaultyUpstream()
    with serve(app) as url:
        yield app, url


@pytest.fixture(scope="module", params=TRANSPORTS)
def compat(faulty: tuple[FaultyUpstream, str], request: pytest.FixtureRequest) -> Iterator[str]:
    app = CompatMiddleware(
        upstream=faulty[1],
        upstream_timeout=TIMEOUT,
        max_line_size=1 << 20,
        keepalive_interval=5,
        upstream_http_client=request.param,
    )
    with serve(app) as url:
        yield url + "/v1/responses"


def post(url: str, model: str, stream: bool = True) -> httpx.Response:
    return httpx.post(url, json={"model": model, "input": "x", "stream": stream}, timeout=10)


def events(response: httpx.Response) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.text
    assert_valid(validate_responses_sse(response.content))
    return [orjson.loads(line[6:]) for line in response.content.split(b"\n") if line.startswith(b"data: ")]


@pytest.mark.parametrize(
    ("model", "status", "code"),
    [
        ("slow-headers", 504, "upstream_timeout"),
        ("slow-first-byte", 504, "upstream_timeout"),
        ("error-first", 502, "overloaded"),
        ("status-500", 502, "upstream_error"),
        ("status-503", 503, "upstream_error"),
        ("status-429", 429, None),
    ],
)
def test_faults_before_the_stream_get_an_http_status(compat: str, model: str, status: int, code: str | None) -> None:
    # An SSE error answer only makes sense to a streamed request.
    for stream in (True,) if model == "error-first" else (True, False):
        started = time.monotonic()
        response = post(compat, model, stream)
        assert time.monotonic() - started < 1.4  # the configured timeout, not the upstream's sleep
        assert response.status_code == status
        error = response.json()["error"]
        assert error["code"] == code and error["message"]
        if status in (503, 429):
            assert response.headers["retry-after"] == "3"


@pytest.mark.parametrize(
    ("model", "code"),
    [
        ("slow-mid", "upstream_timeout"),
        ("long-line", "upstream_line_too_long"),
        ("bad-json", "upstream_protocol_error"),
        ("close-mid-event", "upstream_protocol_error"),
        ("no-finish", "upstream_protocol_error"),
        ("error-mid", "crash"),
    ],
)
def test_faults_mid_stream_end_in_error_then_failed(compat: str, model: str, code: str) -> None:
    started = time.monotonic()
    got = events(post(compat, model))
    assert time.monotonic() - started < 1.4
    assert [e["type"] for e in got[-2:]] == ["error", "response.failed"]
    assert got[-2]["code"] == code
    failed = got[-1]["response"]
    assert failed["status"] == "failed" and failed["error"]["code"] == response_error_code(code)
    # What was produced before the fault is kept.
    assert failed["output"][0]["content"][0]["text"] == "Hello world"


@pytest.mark.parametrize("model", ["no-done", "trickle"])
def test_tolerable_upstream_quirks_still_complete(compat: str, model: str) -> None:
    got = events(post(compat, model))
    assert got[-1]["type"] == "response.completed"
    assert got[-1]["response"]["output"][0]["content"][0]["text"] == "Hello world"


def test_reused_and_out_of_order_tool_indices_keep_every_call(compat: str) -> None:
    dup = events(post(compat, "dup-index"))[-1]["response"]["output"]
    assert [(c["call_id"], c["arguments"]) for c in dup] == [("call_a", '{"x":1}'), ("call_b", '{"y":2}')]
    ooo = events(post(compat, "out-of-order"))[-1]["response"]["output"]
    # Calls are announced at the finish, in chat index order (call_a has index 0).
    assert [(c["call_id"], c["arguments"]) for c in ooo] == [("call_a", "{}"), ("call_b", "{}")]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_refused_connection_is_502(transport: str) -> None:
    with serve(CompatMiddleware(upstream="http://127.0.0.1:1/v1", upstream_http_client=transport)) as url:
        response = post(url + "/v1/responses", "m")
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_error"


@respx.mock
def test_connect_timeout_is_504() -> None:
    respx.post("http://127.0.0.1:2/v1/chat/completions").mock(side_effect=httpx.ConnectTimeout("slow"))
    result = asyncio.run(call(CompatMiddleware(upstream="http://127.0.0.1:2/v1"), "POST", "/v1/responses", {"model": "m", "input": "x"}))
    assert result.status == 504 and result.json()["error"]["code"] == "upstream_timeout"


@respx.mock
def test_non_json_success_body_is_502() -> None:
    respx.post("http://127.0.0.1:3/v1/chat/completions").mock(return_value=httpx.Response(200, text="<html>"))
    result = asyncio.run(call(CompatMiddleware(upstream="http://127.0.0.1:3/v1"), "POST", "/v1/responses", {"model": "m", "input": "x"}))
    assert result.status == 502 and result.json()["error"]["code"] == "upstream_protocol_error"


@respx.mock
@pytest.mark.parametrize("stream", [False, True])
def test_llama_cpp_context_overflow_becomes_openais_context_length_exceeded(stream: bool) -> None:
    # llama-server's body for a prompt longer than its context (its own error
    # type, the HTTP status repeated as the code); clients look for OpenAI's code.
    body = {"error": {"code": 400, "message": "request (1500 tokens) exceeds the available context size (1024 tokens)",
                      "type": "exceed_context_size_error", "n_prompt_tokens": 1500, "n_ctx": 1024}}
    respx.post("http://127.0.0.1:4/v1/chat/completions").mock(return_value=httpx.Response(400, json=body))
    result = asyncio.run(call(CompatMiddleware(upstream="http://127.0.0.1:4/v1"), "POST", "/v1/responses",
                              {"model": "m", "input": "x", "stream": stream}))
    assert result.status == 400
    assert result.json()["error"] == {
        "message": body["error"]["message"], "type": "invalid_request_error",
        "param": "input", "code": "context_length_exceeded",
    }


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_client_disconnect_cancels_the_upstream_promptly_and_leaks_nothing(
    faulty: tuple[FaultyUpstream, str], compat: str
) -> None:
    upstream, _ = faulty

    def disconnect_once() -> None:
        with httpx.stream("POST", compat, json={"model": "endless", "input": "x", "stream": True}, timeout=10) as response:
            for line in response.iter_lines():
                if "output_text.delta" in line:
                    break  # leaving the block closes the connection mid-stream

    disconnect_once()  # warm up pools and lazily created state
    time.sleep(0.3)
    fds = open_fds()
    threads = threading.active_count()
    for _ in range(10):
        upstream.cancelled.clear()
        left = time.monotonic()
        disconnect_once()
        deadline = time.monotonic() + 1
        while not upstream.cancelled.is_set():
            assert time.monotonic() < deadline, "upstream still generating 1 s after the client left"
            time.sleep(0.01)
        assert time.monotonic() - left < 1
    time.sleep(0.3)
    assert open_fds() <= fds + 2
    assert threading.active_count() == threads


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_streams_return_their_upstream_connection_and_cookies_stay_per_caller(transport: str) -> None:
    ports: list[int] = []
    cookies: list[bytes | None] = []

    async def chat(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        ports.append(scope["client"][1])
        cookies.append(dict(scope["headers"]).get(b"cookie"))
        await receive()
        headers = [(b"content-type", b"text/event-stream"), (b"set-cookie", b"session=first-caller; Path=/")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b'data: {"choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n'})

    with serve(chat) as upstream, serve(CompatMiddleware(upstream=upstream, upstream_http_client=transport)) as url:
        for _ in range(20):
            with httpx.Client() as client:  # a new caller each time
                assert client.post(url + "/v1/responses", json={"model": "m", "input": "x", "stream": True}).status_code == 200
    # Pooled: the finished streams' connections were reused, not leaked.
    assert len(set(ports)) <= 2
    # The upstream's cookie for the first caller never reached the others.
    assert cookies == [None] * 20
