"""Chat-completions clients over a Responses upstream; same-format passthrough; /v1/models."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from support import serve

from compat_asgi import CompatMiddleware
from compat_asgi.demo import DemoChatApp
from compat_asgi.types import Receive, Scope, Send
from compat_asgi.validate import assert_valid, validate_chat_sse

WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}}}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {
    "type": "object", "properties": {"tz": {"type": "string"}}, "required": ["tz"]}}}
USER = [{"role": "user", "content": "In Paris: call get_weather and get_time"}]


@pytest.fixture(scope="module")
def responses_upstream() -> Iterator[str]:
    """A Responses API server: the demo behind the forward middleware."""
    with serve(CompatMiddleware(DemoChatApp(), store="memory")) as url:
        yield url


@pytest.fixture(scope="module", params=["in-process", "http"])
def chat_url(request: pytest.FixtureRequest, responses_upstream: str) -> Iterator[str]:
    if request.param == "in-process":
        app = CompatMiddleware(CompatMiddleware(DemoChatApp()), upstream_api="responses")
    else:
        app = CompatMiddleware(upstream=responses_upstream, upstream_api="responses")
    with serve(app) as url:
        yield url + "/v1"


@pytest.fixture(scope="module")
def direct_url() -> Iterator[str]:
    with serve(DemoChatApp()) as url:
        yield url + "/v1"


def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url, api_key="x", max_retries=0, timeout=20)


def raw_chat(url: str, **body: Any) -> bytes:
    response = httpx.post(url + "/chat/completions", json={**body, "stream": True}, timeout=20)
    assert response.status_code == 200, response.text
    assert_valid(validate_chat_sse(response.content))
    return response.content


def essentials(completion: Any) -> tuple[Any, ...]:
    message = completion.choices[0].message
    calls = [(c.function.name, json.loads(c.function.arguments)) for c in message.tool_calls or []]
    return message.content, calls, completion.choices[0].finish_reason


def stream_essentials(raw: bytes) -> tuple[Any, ...]:
    """(content, tool calls, finish_reason) put together from raw chunks, by index."""
    content: list[str] = []
    calls: dict[int, list[str]] = {}
    names: dict[int, str] = {}
    finish = None
    for line in raw.split(b"\n"):
        if not line.startswith(b"data: {"):
            continue
        for choice in json.loads(line[6:])["choices"]:
            delta = choice["delta"]
            content.append(delta.get("content") or "")
            for call in delta.get("tool_calls", []):
                names.setdefault(call["index"], call.get("function", {}).get("name", ""))
                calls.setdefault(call["index"], []).append(call.get("function", {}).get("arguments", ""))
            finish = choice["finish_reason"] or finish
    text = "".join(content)
    return (text or None), [(names[i], json.loads("".join(calls[i]))) for i in sorted(calls)], finish


@pytest.mark.parametrize(
    "request_body",
    [
        {"messages": [{"role": "user", "content": "hello there"}]},
        {"messages": USER, "tools": [WEATHER, TIME]},
        {"messages": [{"role": "user", "content": "a long " * 20}], "max_tokens": 5},
        {"messages": [{"role": "system", "content": "sys"}, {"role": "user", "content": "x"},
                      {"role": "assistant", "content": None, "tool_calls": [
                          {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]},
                      {"role": "tool", "tool_call_id": "c1", "content": "sunny"}], "tools": [WEATHER]},
    ],
)
def test_round_trip_equals_the_direct_chat_answer(chat_url: str, direct_url: str, request_body: dict[str, Any]) -> None:
    direct = client(direct_url).chat.completions.create(model="demo", **request_body)
    via = client(chat_url).chat.completions.create(model="demo", **request_body)
    assert essentials(via) == essentials(direct)
    assert via.usage is not None and direct.usage is not None
    assert via.usage.completion_tokens == direct.usage.completion_tokens
    assert stream_essentials(raw_chat(chat_url, model="demo", **request_body)) == essentials(direct)
    if request_body.get("max_tokens") is None:  # the SDK helper refuses truncated answers
        with client(chat_url).chat.completions.stream(model="demo", **request_body) as stream:
            assert essentials(stream.get_final_completion())[1:] == essentials(via)[1:]


def test_streamed_parallel_calls_keep_stable_indices_and_usage(chat_url: str) -> None:
    raw = raw_chat(chat_url, model="demo", messages=USER, tools=[WEATHER, TIME], stream_options={"include_usage": True})
    chunks = [json.loads(line[6:]) for line in raw.split(b"\n") if line.startswith(b"data: {")]
    firsts = [c for chunk in chunks for choice in chunk["choices"] for c in choice["delta"].get("tool_calls", []) if "id" in c]
    assert [(c["index"], c["function"]["name"]) for c in firsts] == [(0, "get_weather"), (1, "get_time")]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0
    assert raw.endswith(b"data: [DONE]\n\n")


def test_upstream_failure_mid_stream_raises_in_the_sdk() -> None:
    async def failing(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        created = {"type": "response.created", "sequence_number": 0, "response": {"id": "resp_1", "object": "response", "status": "in_progress", "output": []}}
        await send({"type": "http.response.body", "more_body": True, "body": b"event: response.created\ndata: " + json.dumps(created).encode() + b"\n\n"})
        failed = {"type": "response.failed", "sequence_number": 1, "response": {"id": "resp_1", "status": "failed", "error": {"code": "server_error", "message": "model crashed"}}}
        await send({"type": "http.response.body", "body": b"event: response.failed\ndata: " + json.dumps(failed).encode() + b"\n\n"})

    with serve(CompatMiddleware(failing, upstream_api="responses")) as url:
        stream = client(url + "/v1").chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}], stream=True)
        with pytest.raises(openai.APIError, match="model crashed"):
            for _ in stream:
                pass


FIXED_STREAM = b"".join(b'data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"%d "}}]}\n\n' % i for i in range(50)) + b"data: [DONE]\n\n"


def test_same_format_requests_pass_through_byte_for_byte_and_streamed() -> None:
    gate = threading.Event()
    released: list[bool] = []

    async def upstream(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream"), (b"x-upstream", b"yes")]})
        await send({"type": "http.response.body", "body": FIXED_STREAM[:100], "more_body": True})
        released.append(await asyncio.to_thread(gate.wait, 5))
        await send({"type": "http.response.body", "body": FIXED_STREAM[100:]})

    with serve(upstream) as origin, serve(CompatMiddleware(upstream=origin)) as proxy:
        received = b""
        with httpx.stream("POST", proxy + "/v1/chat/completions", json={"model": "m", "messages": [], "stream": True}) as response:
            assert response.headers["x-upstream"] == "yes"
            for chunk in response.iter_raw():
                received += chunk
                if len(received) >= 100:
                    gate.set()  # only reachable if the first bytes were forwarded at once
    assert released == [True]
    assert received == FIXED_STREAM


def test_models_say_which_apis_reach_them(chat_url: str) -> None:
    models = client(chat_url).models.list()
    assert [m.id for m in models.data] == ["demo", "demo-reasoning"]
    assert all(getattr(m, "apis") == ["chat.completions", "responses"] for m in models.data)
    assert client(chat_url).models.retrieve("demo-reasoning").id == "demo-reasoning"


def test_models_fall_back_to_configuration() -> None:
    async def no_models(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    with serve(CompatMiddleware(no_models, models=["local-llama"])) as url:
        listed = client(url + "/v1").models.list()
        assert [(m.id, getattr(m, "apis")) for m in listed.data] == [("local-llama", ["chat.completions", "responses"])]
        with pytest.raises(openai.NotFoundError) as caught:
            client(url + "/v1").models.retrieve("gpt-unknown")
        assert caught.value.body["code"] == "model_not_found"  # type: ignore[index]
