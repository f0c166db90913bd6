"""API keys, header forwarding, CORS, the loopback guard and request limits."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import openai
import orjson
import pytest
import respx
from support import Recorded, call, http_scope, serve

from compat_asgi import CompatMiddleware
from compat_asgi.cli import create_app, main
from compat_asgi.demo import DemoChatApp
from compat_asgi.types import Message, Receive, Scope, Send
from compat_asgi.validate import assert_valid, validate_responses_sse

BODY = {"model": "demo", "input": "hi"}
COMPLETION = orjson.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}]})


def scope_with(*headers: tuple[bytes, bytes]) -> dict[str, Any]:
    return http_scope("POST", "/v1/responses", [(b"content-type", b"application/json"), *headers])


def test_api_keys_are_required_and_checked() -> None:
    app = CompatMiddleware(DemoChatApp(), api_keys=["key-one", "key-two"])
    for headers in [(), ((b"authorization", b"Bearer wrong"),), ((b"authorization", b"Basic key-one"),)]:
        result = asyncio.run(call(app, "POST", "/v1/responses", BODY, scope=scope_with(*headers)))
        assert result.status == 401
        assert result.json()["error"]["code"] == "invalid_api_key"
        assert result.header(b"www-authenticate") == b"Bearer"
    # Every path under the prefix is guarded, also those the wrapped app serves.
    models = asyncio.run(call(app, "GET", "/v1/models", scope={**http_scope("GET", "/v1/models")}))
    assert models.status == 401
    with serve(app) as url:
        for key in ("key-one", "key-two"):
            client = openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0)
            assert client.responses.create(model="demo", input="hi").status == "completed"
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=url + "/v1", api_key="nope", max_retries=0).responses.create(model="demo", input="hi")


class HeaderRecorder:
    def __init__(self) -> None:
        self.headers: list[tuple[bytes, bytes]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.headers = list(scope["headers"])
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": COMPLETION})


def test_client_key_is_not_forwarded_when_it_is_ours_and_hop_by_hop_headers_are_dropped() -> None:
    inner = HeaderRecorder()
    app = CompatMiddleware(inner, api_keys=["ours"])
    headers = [(b"authorization", b"Bearer ours"), (b"connection", b"keep-alive"), (b"te", b"trailers"),
               (b"proxy-authorization", b"x"), (b"x-trace", b"1")]
    result = asyncio.run(call(app, "POST", "/v1/responses", BODY, scope=scope_with(*headers)))
    assert result.status == 200
    names = {k for k, _ in inner.headers}
    assert b"authorization" not in names and b"connection" not in names and b"te" not in names
    assert b"proxy-authorization" not in names
    assert (b"x-trace", b"1") in inner.headers


@respx.mock
def test_upstream_key_replaces_the_client_authorization() -> None:
    route = respx.post("http://127.0.0.1:4/v1/chat/completions").mock(return_value=httpx.Response(200, content=COMPLETION))
    app = CompatMiddleware(upstream="http://127.0.0.1:4/v1", upstream_key="upstream-secret")
    result = asyncio.run(call(app, "POST", "/v1/responses", BODY, scope=scope_with((b"authorization", b"Bearer client"))))
    assert result.status == 200
    assert route.calls.last.request.headers.get_list("authorization") == ["Bearer upstream-secret"]


def test_cors_allow_list() -> None:
    app = create_app(cors_origins=["http://app.example"])
    with serve(app) as url:
        preflight = httpx.options(url + "/v1/responses", headers={"origin": "http://app.example", "access-control-request-method": "POST"})
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == "http://app.example"
        other = httpx.options(url + "/v1/responses", headers={"origin": "http://evil.example", "access-control-request-method": "POST"})
        assert "access-control-allow-origin" not in other.headers
        streamed = httpx.post(url + "/v1/responses", json={**BODY, "stream": True}, headers={"origin": "http://app.example"})
        assert streamed.headers["access-control-allow-origin"] == "http://app.example"
        assert_valid(validate_responses_sse(streamed.content))


def test_serve_refuses_a_public_address_without_a_key(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--host", "0.0.0.0"]) == 2
    assert "--api-key" in capsys.readouterr().err


def test_concurrency_limit_answers_503_with_retry_after() -> None:
    release = asyncio.Event()

    async def slow(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": COMPLETION})

    async def scenario() -> tuple[Recorded, Recorded]:
        app = CompatMiddleware(slow, max_concurrent_requests=1)
        first = asyncio.create_task(call(app, "POST", "/v1/responses", BODY))
        await asyncio.sleep(0.05)
        second = await call(app, "POST", "/v1/responses", BODY)
        release.set()
        return await first, second

    first, second = asyncio.run(scenario())
    assert first.status == 200
    assert second.status == 503
    assert second.header(b"retry-after") == b"1"
    assert second.json()["error"]["code"] == "server_busy"


def test_keepalive_comments_flow_while_the_upstream_is_silent() -> None:
    async def thinker(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        await asyncio.sleep(0.35)  # silent before the first byte
        await send({"type": "http.response.body", "body": b'data: {"choices":[{"index":0,"delta":{"content":"a"}}]}\n\n', "more_body": True})
        await asyncio.sleep(0.35)  # and again mid-stream
        await send({"type": "http.response.body", "body": b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n'})

    app = CompatMiddleware(thinker, keepalive_interval=0.1)
    result = asyncio.run(call(app, "POST", "/v1/responses", {**BODY, "stream": True}))
    assert result.body.count(b": keepalive\n\n") >= 4
    assert result.bodies[0].startswith(b"event: response.created")  # started before the first byte
    assert_valid(validate_responses_sse(result.body))


def test_chunked_body_over_the_limit_is_413_without_reading_it_all() -> None:
    received = 0

    async def scenario() -> Recorded:
        nonlocal received
        app = CompatMiddleware(DemoChatApp(), max_body_size=1000)
        recorded = Recorded()

        async def receive() -> Message:
            nonlocal received
            received += 1
            return {"type": "http.request", "body": b"x" * 400, "more_body": True}

        async def send(message: Message) -> None:
            if message["type"] == "http.response.start":
                recorded.status = message["status"]
            else:
                recorded.bodies.append(message["body"])

        await app(http_scope("POST", "/v1/responses"), receive, send)
        return recorded

    result = asyncio.run(scenario())
    assert result.status == 413 and received == 3
