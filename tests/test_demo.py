"""The demo chat-completions backend, driven as raw ASGI and through the OpenAI SDK.

Most tests call the app with their own receive/send so every
``http.response.body`` message is seen separately (``httpx.ASGITransport``
would buffer the stream and hide whether it is incremental).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import jsonschema
import openai
import orjson
import pytest
import uvicorn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openai.types.chat import ChatCompletionFunctionToolParam

from compat_asgi.demo import DemoChatApp, create_demo_app

PLAIN = "Hello! You said: {}. This is the compat-asgi demo model answering deterministically."

WEATHER: ChatCompletionFunctionToolParam = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather.",
        "parameters": {
            "type": "object",
            "properties": {
                "location": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer", "minimum": 3},
                "detailed": {"type": "boolean"},
            },
            "required": ["location"],
        },
    },
}
TIME: ChatCompletionFunctionToolParam = {
    "type": "function",
    "function": {
        "name": "get_time",
        "parameters": {
            "type": "object",
            "properties": {"timezone": {"type": "string"}, "offsets": {"type": "array", "items": {"type": "number"}}},
        },
    },
}
# Only the required keys: a model leaves optional parameters out unless it needs them.
WEATHER_ARGS = {"location": "Paris"}
# No "required": every property. A whole number where a number fits.
TIME_ARGS = {"timezone": "example", "offsets": [1]}


@dataclass
class Result:
    status: int
    headers: dict[bytes, bytes]
    bodies: list[bytes]
    more_body: list[bool]
    sent_at: list[float] = field(default_factory=list)

    @property
    def json(self) -> Any:
        return orjson.loads(b"".join(self.bodies))

    @property
    def events(self) -> list[Any]:
        """Decoded SSE payloads; asserts each body message is exactly one event."""
        out: list[Any] = []
        for body in self.bodies:
            assert body.startswith(b"data: ") and body.endswith(b"\n\n") and body.count(b"\n\n") == 1, body
            payload = body[len(b"data: ") : -2]
            out.append("[DONE]" if payload == b"[DONE]" else orjson.loads(payload))
        return out


def user(text: Any) -> dict[str, Any]:
    return {"role": "user", "content": text}


def chat(text: Any = "hi there", **extra: Any) -> dict[str, Any]:
    return {"model": "demo", "messages": [user(text)], **extra}


async def call_async(
    app: DemoChatApp,
    body: Any = None,
    *,
    method: str = "POST",
    path: str = "/v1/chat/completions",
    disconnect_after: int | None = None,
) -> Result:
    raw = body if isinstance(body, bytes) else orjson.dumps(body) if body is not None else b""
    messages: list[dict[str, Any]] = []
    stamps: list[float] = []
    enough = asyncio.Event()
    pending = [{"type": "http.request", "body": raw, "more_body": False}]

    async def receive() -> dict[str, Any]:
        if pending:
            return pending.pop(0)
        if disconnect_after is None:
            await asyncio.Event().wait()  # a client that stays connected
        await enough.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)
        stamps.append(time.monotonic())
        bodies = sum(m["type"] == "http.response.body" for m in messages)
        if disconnect_after is not None and bodies >= disconnect_after:
            enough.set()

    scope = {"type": "http", "method": method, "path": path, "root_path": "", "headers": []}
    await app(scope, receive, send)  # type: ignore[arg-type]
    start, *rest = messages
    assert start["type"] == "http.response.start"
    assert all(m["type"] == "http.response.body" for m in rest)
    return Result(
        status=start["status"],
        headers=dict(start["headers"]),
        bodies=[m["body"] for m in rest],
        more_body=[m.get("more_body", False) for m in rest],
        sent_at=stamps[1:],
    )


def call(app: DemoChatApp, body: Any = None, **kwargs: Any) -> Result:
    return asyncio.run(call_async(app, body, **kwargs))


def message_of(result: Result) -> dict[str, Any]:
    assert result.status == 200
    message: dict[str, Any] = result.json["choices"][0]["message"]
    return message


def deltas(events: list[Any]) -> list[dict[str, Any]]:
    return [e["choices"][0]["delta"] for e in events if e != "[DONE]" and e["choices"]]


def joined(events: list[Any], key: str) -> str:
    return "".join(d.get(key) or "" for d in deltas(events))


def arguments_by_index(events: list[Any]) -> dict[int, str]:
    out: dict[int, str] = {}
    for delta in deltas(events):
        for call_delta in delta.get("tool_calls") or ():
            index = call_delta["index"]
            out[index] = out.get(index, "") + call_delta["function"].get("arguments", "")
    return out


# --------------------------------------------------------------------------
# plain answers


def test_plain_answer_non_stream() -> None:
    result = call(DemoChatApp(), chat("  hi   there "))
    body = result.json
    assert result.headers[b"content-type"] == b"application/json"
    assert body["id"] == "chatcmpl-demo-1"
    assert body["object"] == "chat.completion"
    assert body["created"] == 1700000000
    assert body["model"] == "demo"
    [choice] = body["choices"]
    assert choice["message"] == {"role": "assistant", "content": PLAIN.format("hi there"), "refusal": None}
    assert choice["finish_reason"] == "stop"
    assert choice["logprobs"] is None
    assert body["usage"] == {
        "prompt_tokens": 2,
        "completion_tokens": 13,
        "total_tokens": 15,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }


def test_ids_count_per_app() -> None:
    app = DemoChatApp()
    first, second = (call(app, chat()).json["id"] for _ in range(2))
    assert (first, second) == ("chatcmpl-demo-1", "chatcmpl-demo-2")


def test_content_parts_and_prompt_tokens() -> None:
    parts = [{"type": "text", "text": "look at"}, {"type": "image_url", "image_url": {"url": "data:,"}}]
    request = {
        "model": "demo",
        "messages": [{"role": "system", "content": "be brief"}, user(parts)],
    }
    body = call(DemoChatApp(), request).json
    assert body["choices"][0]["message"]["content"] == PLAIN.format("look at [image]")
    assert body["usage"]["prompt_tokens"] == 5


def test_empty_prompt_still_counts_one_token() -> None:
    body = call(DemoChatApp(), chat("")).json
    assert body["choices"][0]["message"]["content"] == PLAIN.format("nothing")
    assert body["usage"]["prompt_tokens"] == 1


@pytest.mark.parametrize("include_usage", [False, True])
def test_plain_answer_stream(include_usage: bool) -> None:
    app = DemoChatApp()
    request = chat(stream=True, stream_options={"include_usage": include_usage})
    result = call(app, request)
    assert result.status == 200
    assert result.headers[b"content-type"].startswith(b"text/event-stream")
    assert b"content-length" not in result.headers
    assert result.more_body == [True] * (len(result.bodies) - 1) + [False]
    events = result.events
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert {c["id"] for c in chunks} == {"chatcmpl-demo-1"}
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text_deltas = [d["content"] for d in deltas(chunks)[1:] if "content" in d]
    assert len(text_deltas) == 13  # one word each
    assert "".join(text_deltas) == PLAIN.format("hi there")

    choice_chunks = [c for c in chunks if c["choices"]]
    assert [c["choices"][0]["finish_reason"] for c in choice_chunks] == [None] * (len(choice_chunks) - 1) + ["stop"]
    assert choice_chunks[-1]["choices"][0]["delta"] == {}
    usage_chunks = [c for c in chunks if not c["choices"]]
    if include_usage:
        assert usage_chunks == [chunks[-1]]
        assert chunks[-1]["usage"] == call(app, chat()).json["usage"]
        assert all(c["usage"] is None for c in choice_chunks)
    else:
        assert usage_chunks == []
        assert all("usage" not in c for c in chunks)


def test_stream_paces_chunks_with_word_delay() -> None:
    delay = 0.02
    result = call(create_demo_app(word_delay=delay), chat(stream=True))
    gaps = [b - a for a, b in zip(result.sent_at, result.sent_at[1:])]
    # Each chunk left the app on its own, a delay apart: nothing was batched.
    assert len(gaps) == len(result.bodies) - 1 > 10
    assert min(gaps) >= delay * 0.8


def test_client_disconnect_stops_generation_without_leaking_tasks() -> None:
    async def scenario() -> Result:
        result = await call_async(DemoChatApp(word_delay=0.01), chat(stream=True), disconnect_after=3)
        assert asyncio.all_tasks() == {asyncio.current_task()}
        return result

    result = asyncio.run(scenario())
    assert 3 <= len(result.bodies) <= 4
    assert b"data: [DONE]\n\n" not in result.bodies


@pytest.mark.parametrize("key", ["max_tokens", "max_completion_tokens"])
def test_max_tokens_cuts_with_length(key: str) -> None:
    app = DemoChatApp()
    body = call(app, chat(**{key: 4})).json
    assert body["choices"][0]["message"]["content"] == "Hello! You said: hi"
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 4
    events = call(app, chat(stream=True, **{key: 4})).events
    assert joined(events, "content") == "Hello! You said: hi"
    assert events[-2]["choices"][0]["finish_reason"] == "length"


def test_max_tokens_at_answer_length_is_stop() -> None:
    body = call(DemoChatApp(), chat(max_tokens=13)).json
    assert body["choices"][0]["finish_reason"] == "stop"


# --------------------------------------------------------------------------
# tool calls


def test_single_tool_call_named_in_prompt() -> None:
    request = chat("What is the weather in paris? Use get_weather.", tools=[WEATHER, TIME])
    body = call(DemoChatApp(), request).json
    [choice] = body["choices"]
    assert choice["finish_reason"] == "tool_calls"
    message = choice["message"]
    assert message["content"] is None
    [tool_call] = message["tool_calls"]
    assert tool_call["id"] == "call_demo_0"
    assert tool_call["type"] == "function"
    assert tool_call["function"]["name"] == "get_weather"
    assert orjson.loads(tool_call["function"]["arguments"]) == WEATHER_ARGS


def test_tool_name_must_match_whole_identifier() -> None:
    short = {"type": "function", "function": {"name": "get"}}
    body = call(DemoChatApp(), chat("call get_weather", tools=[short])).json
    assert body["choices"][0]["finish_reason"] == "stop"


def test_parallel_tool_calls_stream_interleaved_by_index() -> None:
    app = DemoChatApp()
    request = chat("get_time and get_weather in Paris please", tools=[WEATHER, TIME])
    events = call(app, {**request, "stream": True}).events
    call_deltas = [tc for d in deltas(events) for tc in d.get("tool_calls") or ()]
    headers = [tc for tc in call_deltas if "id" in tc]
    assert headers == [
        {"index": 0, "id": "call_demo_0", "type": "function", "function": {"name": "get_weather", "arguments": ""}},
        {"index": 1, "id": "call_demo_1", "type": "function", "function": {"name": "get_time", "arguments": ""}},
    ]
    pieces = [tc for tc in call_deltas if "id" not in tc]
    assert all(set(tc) == {"index", "function"} and set(tc["function"]) == {"arguments"} for tc in pieces)
    order = [tc["index"] for tc in pieces]
    assert order[:4] == [0, 1, 0, 1]  # interleaved, so routing by arrival order would break
    by_index = arguments_by_index(events)
    assert {i: orjson.loads(text) for i, text in by_index.items()} == {0: WEATHER_ARGS, 1: TIME_ARGS}
    assert events[-2]["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "tool_calls"}

    non_stream = call(app, request).json["choices"][0]["message"]["tool_calls"]
    assert [c["function"]["arguments"] for c in non_stream] == [by_index[0], by_index[1]]


def test_parallel_tool_calls_false_makes_one_call() -> None:
    request = chat("get_time and get_weather", tools=[WEATHER, TIME], parallel_tool_calls=False)
    calls = call(DemoChatApp(), request).json["choices"][0]["message"]["tool_calls"]
    assert [c["function"]["name"] for c in calls] == ["get_weather"]


@pytest.mark.parametrize(
    ("prompt", "tool_choice", "expected"),
    [
        ("hello", "required", ["get_weather"]),
        ("use get_time", "required", ["get_time"]),
        ("use get_time", {"type": "function", "function": {"name": "get_weather"}}, ["get_weather"]),
        ("use get_time", "none", None),
        ("hello", "auto", None),
        ("hello", None, None),
    ],
)
def test_tool_choice(prompt: str, tool_choice: Any, expected: list[str] | None) -> None:
    request = chat(prompt, tools=[WEATHER, TIME])
    if tool_choice is not None:
        request["tool_choice"] = tool_choice
    message = message_of(call(DemoChatApp(), request))
    if expected is None:
        assert "tool_calls" not in message
        assert message["content"] == PLAIN.format(prompt)
    else:
        assert [c["function"]["name"] for c in message["tool_calls"]] == expected


def test_tool_without_parameters_gets_empty_object() -> None:
    bare = {"type": "function", "function": {"name": "ping"}}
    message = message_of(call(DemoChatApp(), chat("ping", tools=[bare])))
    assert message["tool_calls"][0]["function"]["arguments"] == "{}"


def test_arguments_follow_refs_unions_and_bounds() -> None:
    parameters = {
        "type": "object",
        "$defs": {"Point": {"type": "object", "properties": {"x": {"type": "number", "exclusiveMinimum": 2}}}},
        "properties": {
            "city": {"anyOf": [{"type": "null"}, {"type": "string"}]},
            "point": {"$ref": "#/$defs/Point"},
            "when": {"type": "string", "format": "date"},
            "count": {"type": ["integer", "null"], "maximum": 0},
            "tags": {"type": "array", "items": {"type": "string", "minLength": 9}, "minItems": 2},
            "mode": {"const": "fast"},
        },
    }
    tool = {"type": "function", "function": {"name": "plan", "parameters": parameters}}
    message = message_of(call(DemoChatApp(), chat("plan a trip in rome", tools=[tool])))
    assert orjson.loads(message["tool_calls"][0]["function"]["arguments"]) == {
        "city": "Rome",
        "point": {"x": 3},
        "when": "2023-11-14",
        "count": 0,
        "tags": ["examplexx", "examplexx"],
        "mode": "fast",
    }


def test_answer_after_tool_results() -> None:
    app = DemoChatApp()
    messages = [
        user("weather in Paris and the time? get_weather get_time"),
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "call_demo_0", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}},
                {"id": "call_demo_1", "type": "function", "function": {"name": "get_time", "arguments": "{}"}},
            ],
        },
        {"role": "tool", "tool_call_id": "call_demo_0", "content": "sunny, 21C"},
        {"role": "tool", "tool_call_id": "call_demo_1", "content": [{"type": "text", "text": "noon"}]},
    ]
    # tool_choice "required" must not loop an agent forever: results get an answer.
    request = {"model": "demo", "messages": messages, "tools": [WEATHER, TIME], "tool_choice": "required"}
    expected = "The tool get_weather returned: sunny, 21C. The tool get_time returned: noon."
    body = call(app, request).json
    assert body["choices"][0]["message"]["content"] == expected
    assert body["choices"][0]["finish_reason"] == "stop"
    events = call(app, {**request, "stream": True}).events
    assert joined(events, "content") == expected
    assert all(" " not in d["content"].strip() for d in deltas(events) if d.get("content"))


# --------------------------------------------------------------------------
# structured output and reasoning


def test_json_schema_output_fits_schema() -> None:
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "age": {"type": "integer", "minimum": 18},
            "tags": {"type": "array", "items": {"type": "string", "enum": ["a", "b"]}},
        },
        "required": ["name", "age", "tags"],
        "additionalProperties": False,
    }
    fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": schema, "strict": True}}
    app = DemoChatApp()
    content = message_of(call(app, chat(response_format=fmt)))["content"]
    document = orjson.loads(content)
    assert set(document) == set(schema["required"])
    assert document == {"name": "example", "age": 18, "tags": ["a"]}
    events = call(app, chat(response_format=fmt, stream=True)).events
    content_deltas = [d["content"] for d in deltas(events)[1:] if "content" in d]
    assert len(content_deltas) > 1
    assert "".join(content_deltas) == content


def test_json_object_output_wraps_plain_answer() -> None:
    content = message_of(call(DemoChatApp(), chat(response_format={"type": "json_object"})))["content"]
    assert orjson.loads(content) == {"answer": PLAIN.format("hi there")}


def test_reasoning_model() -> None:
    app = DemoChatApp()
    request = {**chat("one two three"), "model": "my-reasoning-model"}
    reasoning = "The user said 3 words; I will answer politely."
    body = call(app, request).json
    message = body["choices"][0]["message"]
    assert message["reasoning_content"] == reasoning
    assert message["content"] == PLAIN.format("one two three")
    assert body["usage"]["completion_tokens_details"] == {"reasoning_tokens": 9}
    assert body["usage"]["completion_tokens"] == 9 + 14

    events = call(app, {**request, "stream": True, "stream_options": {"include_usage": True}}).events
    kinds = [next(iter(d)) for d in deltas(events)[1:-1]]
    assert kinds == ["reasoning_content"] * 9 + ["content"] * 14
    assert joined(events, "reasoning_content") == reasoning
    assert events[-2]["usage"] == body["usage"]


def test_plain_model_has_no_reasoning() -> None:
    assert "reasoning_content" not in message_of(call(DemoChatApp(), chat()))


# --------------------------------------------------------------------------
# errors, other routes, other scopes


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b"{not json", None),
        (b"[1, 2]", None),
        ({"model": "demo"}, "messages"),
        ({"model": "demo", "messages": []}, "messages"),
        ({"model": "demo", "messages": "hi"}, "messages"),
        ({"messages": [user("hi")]}, "model"),
        ({"model": "demo", "messages": [user("hi"), {"content": "x"}]}, "messages[1].role"),
        ({"model": "demo", "messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
        ({**chat(), "max_tokens": 0}, "max_tokens"),
        ({**chat(), "tools": [{"type": "function", "name": "flat"}]}, "tools[0].function"),
        ({**chat(), "tool_choice": "required"}, "tool_choice"),
        ({**chat(), "tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "x"}}}, "tool_choice"),
        ({**chat(), "response_format": {"type": "yaml"}}, "response_format.type"),
    ],
)
def test_bad_requests_get_400_envelope(body: Any, param: str | None) -> None:
    result = call(DemoChatApp(), body)
    assert result.status == 400
    assert result.headers[b"content-type"] == b"application/json"
    error = result.json["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert error["message"]


@pytest.mark.parametrize(("method", "path"), [("POST", "/v1/responses"), ("GET", "/"), ("POST", "/chat/completions")])
def test_unknown_path_is_404(method: str, path: str) -> None:
    result = call(DemoChatApp(), chat(), method=method, path=path)
    assert result.status == 404
    assert result.json == {
        "error": {
            "message": f"Invalid URL ({method} {path})",
            "type": "invalid_request_error",
            "param": None,
            "code": "not_found",
        }
    }


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [("GET", "/v1/chat/completions", b"POST"), ("POST", "/v1/models", b"GET"), ("DELETE", "/v1/models/demo", b"GET")],
)
def test_wrong_method_is_405(method: str, path: str, allow: bytes) -> None:
    result = call(DemoChatApp(), method=method, path=path)
    assert result.status == 405
    assert result.headers[b"allow"] == allow
    error = result.json["error"]
    assert (error["type"], error["param"], error["code"]) == ("invalid_request_error", None, "method_not_allowed")


def test_models() -> None:
    app = DemoChatApp()
    listing = call(app, method="GET", path="/v1/models").json
    assert listing == {
        "object": "list",
        "data": [
            {"id": "demo", "object": "model", "created": 0, "owned_by": "compat-asgi"},
            {"id": "demo-reasoning", "object": "model", "created": 0, "owned_by": "compat-asgi"},
        ],
    }
    one = call(app, method="GET", path="/v1/models/org/any-model").json
    assert one == {"id": "org/any-model", "object": "model", "created": 0, "owned_by": "compat-asgi"}


def test_lifespan_and_websocket() -> None:
    async def scenario() -> tuple[list[Any], list[Any]]:
        app = DemoChatApp()
        incoming = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])
        lifespan_sent: list[Any] = []

        async def lifespan_receive() -> Any:
            return next(incoming)

        async def lifespan_send(message: Any) -> None:
            lifespan_sent.append(message)

        await app({"type": "lifespan"}, lifespan_receive, lifespan_send)

        ws_sent: list[Any] = []

        async def ws_receive() -> Any:
            return {"type": "websocket.connect"}

        async def ws_send(message: Any) -> None:
            ws_sent.append(message)

        await app({"type": "websocket", "path": "/v1/chat/completions"}, ws_receive, ws_send)
        return lifespan_sent, ws_sent

    lifespan_sent, ws_sent = asyncio.run(scenario())
    assert [m["type"] for m in lifespan_sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert [m["type"] for m in ws_sent] == ["websocket.close"]


def test_mounted_under_root_path() -> None:
    async def scenario() -> list[Any]:
        sent: list[Any] = []

        async def receive() -> Any:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: Any) -> None:
            sent.append(message)

        scope = {"type": "http", "method": "GET", "path": "/api/v1/models", "root_path": "/api", "headers": []}
        await DemoChatApp()(scope, receive, send)
        return sent

    assert asyncio.run(scenario())[0]["status"] == 200


def test_same_request_same_bytes() -> None:
    tools_request = chat("get_weather and get_time in Oslo", tools=[WEATHER, TIME], stream=True)
    for request in (chat(stream=True, stream_options={"include_usage": True}), tools_request, chat()):
        first, second = (call(DemoChatApp(), request).bodies for _ in range(2))
        assert first == second
    app = DemoChatApp()
    one, two = (b"".join(call(app, tools_request).bodies) for _ in range(2))
    assert one.replace(b"chatcmpl-demo-1", b"ID") == two.replace(b"chatcmpl-demo-2", b"ID")


# --------------------------------------------------------------------------
# end to end: real uvicorn, real OpenAI SDK


WORD_DELAY = 0.02


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    config = uvicorn.Config(
        create_demo_app(word_delay=WORD_DELAY), host="127.0.0.1", port=0, log_level="warning", lifespan="on"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
def client(base_url: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=base_url, api_key="x", max_retries=0) as sdk:
        yield sdk


def test_sdk_non_stream(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(model="demo", messages=[{"role": "user", "content": "hi there"}])
    assert completion.choices[0].message.content == PLAIN.format("hi there")
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.total_tokens == 15
    assert [m.id for m in client.models.list()] == ["demo", "demo-reasoning"]


def test_sdk_stream_arrives_incrementally(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="demo",
        messages=[{"role": "user", "content": "hi there"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    arrivals: list[float] = []
    text = ""
    finish_reasons = []
    usage = None
    for chunk in stream:
        arrivals.append(time.monotonic())
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            text += choice.delta.content or ""
            finish_reasons.append(choice.finish_reason)
    assert text == PLAIN.format("hi there")
    assert finish_reasons[-1] == "stop"
    assert usage is not None and usage.completion_tokens == 13
    # A buffering server would deliver every chunk at once.
    assert arrivals[-1] - arrivals[0] >= (len(arrivals) - 1) * WORD_DELAY * 0.5


def test_sdk_stream_parallel_tool_calls(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="demo",
        messages=[{"role": "user", "content": "get_weather in Paris and get_time"}],
        tools=[WEATHER, TIME],
        stream=True,
    )
    names: dict[int, str] = {}
    arguments: dict[int, str] = {}
    for chunk in stream:
        for choice in chunk.choices:
            for tool_call in choice.delta.tool_calls or ():
                assert tool_call.function is not None
                if tool_call.function.name:
                    names[tool_call.index] = tool_call.function.name
                arguments[tool_call.index] = arguments.get(tool_call.index, "") + (tool_call.function.arguments or "")
    assert names == {0: "get_weather", 1: "get_time"}
    assert {i: orjson.loads(a) for i, a in arguments.items()} == {0: WEATHER_ARGS, 1: TIME_ARGS}


# --------------------------------------------------------------------------
# Tool arguments that validate against the tool's schema, for any schema


def _bounds(draw: st.DrawFn, *, integer: bool) -> dict[str, Any]:
    """Numeric keywords with room between them (a schema with no valid value
    is the schema's fault, not the demo's)."""
    schema: dict[str, Any] = {}
    low = draw(st.none() | st.integers(-50, 50))
    width = draw(st.integers(2, 30))
    step = draw(st.none() | (st.integers(1, 4) if integer else st.sampled_from([0.25, 0.5, 1, 2])))
    if step is not None:
        schema["multipleOf"] = step
        width += 12
    if low is not None:
        schema["exclusiveMinimum" if draw(st.booleans()) else "minimum"] = low
    if draw(st.booleans()):
        high = (low if low is not None else draw(st.integers(-50, 50))) + width
        schema["exclusiveMaximum" if draw(st.booleans()) else "maximum"] = high
    if not integer and low is not None and "multipleOf" not in schema and draw(st.booleans()):
        # A range with no whole number in it: the demo must find a fraction.
        schema = {"exclusiveMinimum": low + 0.25, "exclusiveMaximum": low + 0.75}
    return schema


@st.composite
def number_schemas(draw: st.DrawFn) -> dict[str, Any]:
    integer = draw(st.booleans())
    return {"type": "integer" if integer else "number", **_bounds(draw, integer=integer)}


FORMATS = ["date-time", "date", "time", "email", "uri", "uuid", "ipv4", "ipv6", "hostname", "duration", "regex", "json-pointer"]


@st.composite
def string_schemas(draw: st.DrawFn) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    fmt = draw(st.none() | st.sampled_from(FORMATS))
    if fmt is not None:
        return {**schema, "format": fmt}
    low = draw(st.none() | st.integers(0, 12))
    if low is not None:
        schema["minLength"] = low
    if draw(st.booleans()):
        schema["maxLength"] = (low or 0) + draw(st.integers(1, 5))
    return schema


scalars = st.none() | st.booleans() | st.integers(-5, 5) | st.text(max_size=5)
leaves = (
    number_schemas()
    | string_schemas()
    | st.just({"type": "boolean"})
    | st.just({"type": "null"})
    | st.lists(scalars, min_size=1, max_size=4, unique_by=lambda v: (type(v), v)).map(lambda e: {"enum": e})
    | scalars.map(lambda v: {"const": v})
)
names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=8)


@st.composite
def object_schemas(draw: st.DrawFn, children: st.SearchStrategy[dict[str, Any]]) -> dict[str, Any]:
    properties = draw(st.dictionaries(names, children, max_size=5))
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if draw(st.booleans()):
        schema["required"] = draw(st.lists(st.sampled_from(sorted(properties)), unique=True)) if properties else []
    if draw(st.booleans()):
        schema["additionalProperties"] = False
    elif draw(st.booleans()):
        schema["minProperties"] = len(properties) + draw(st.integers(0, 2))
    return schema


@st.composite
def array_schemas(draw: st.DrawFn, children: st.SearchStrategy[dict[str, Any]]) -> dict[str, Any]:
    low = draw(st.integers(0, 3))
    schema: dict[str, Any] = {"type": "array", "minItems": low, "maxItems": low + draw(st.integers(0, 2))}
    if draw(st.booleans()):
        # Distinct items need room for distinct values.
        items = draw(st.sampled_from([{"type": "string"}, {"type": "integer", "minimum": 0}, {"type": "boolean"}]))
        if items["type"] == "boolean":
            schema["maxItems"] = schema["minItems"] = min(low, 2)
        return {**schema, "items": items, "uniqueItems": True}
    return {**schema, "items": draw(children)}


def _composite(children: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    return (
        object_schemas(children)
        | array_schemas(children)
        | st.lists(children, min_size=1, max_size=3).map(lambda options: {"anyOf": options})
        | children.map(lambda s: {**s, "type": [s["type"], "null"]} if isinstance(s.get("type"), str) else s)
    )


tool_schemas = object_schemas(st.recursive(leaves, _composite, max_leaves=12))


def assert_valid(arguments: Any, schema: dict[str, Any]) -> None:
    jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker()).validate(arguments)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(schema=tool_schemas, prompt=st.sampled_from(["call tool_x", "call tool_x in Rome", "tool_x: make notes.md"]))
def test_arguments_validate_against_any_schema(schema: dict[str, Any], prompt: str) -> None:
    tool = {"type": "function", "function": {"name": "tool_x", "parameters": schema}}
    message = message_of(call(DemoChatApp(), chat(prompt, tools=[tool])))
    assert_valid(orjson.loads(message["tool_calls"][0]["function"]["arguments"]), schema)


@settings(max_examples=60, deadline=None)
@given(schema=tool_schemas)
def test_json_schema_answers_validate_against_any_schema(schema: dict[str, Any]) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}
    assert_valid(orjson.loads(message_of(call(DemoChatApp(), chat(response_format=fmt)))["content"]), schema)


def test_numbers_are_whole_when_a_whole_number_fits() -> None:
    # Codex declares usize parameters as "number": 1.5 cannot be parsed there.
    schema = {
        "type": "object",
        "properties": {
            "n": {"type": "number"},
            "above_two": {"type": "number", "exclusiveMinimum": 2},
            "fraction": {"type": "number", "minimum": 0.1, "maximum": 0.2},
            "even": {"type": "integer", "minimum": 3, "multipleOf": 2},
        },
    }
    tool = {"type": "function", "function": {"name": "measure", "parameters": schema}}
    arguments = message_of(call(DemoChatApp(), chat("measure", tools=[tool])))["tool_calls"][0]["function"]["arguments"]
    assert arguments == '{"n":1,"above_two":3,"fraction":0.15000000000000002,"even":4}'
    assert_valid(orjson.loads(arguments), schema)


# The shapes Codex offers (exec_command, apply_patch as a freeform tool that
# the translator turns into a function with one string parameter, and the
# older argv-style shell tool); test_codex.py drives the real thing.
EXEC_COMMAND = {
    "type": "object",
    "properties": {
        "cmd": {"type": "string"},
        "justification": {"type": "string"},
        "login": {"type": "boolean"},
        "max_output_tokens": {"type": "number"},
        "sandbox_permissions": {"type": "string", "enum": ["use_default", "require_escalated"]},
        "shell": {"type": "string"},
        "workdir": {"type": "string"},
        "yield_time_ms": {"type": "number"},
    },
    "required": ["cmd"],
    "additionalProperties": False,
}
FREEFORM = {
    "type": "object",
    "properties": {"input": {"type": "string"}},
    "required": ["input"],
    "additionalProperties": False,
}
SHELL = {
    "type": "object",
    "properties": {"command": {"type": "array", "items": {"type": "string"}}, "timeout_ms": {"type": "number"}},
    "required": ["command"],
}


def called(name: str, parameters: dict[str, Any], prompt: str) -> Any:
    tool = {"type": "function", "function": {"name": name, "parameters": parameters}}
    message = message_of(call(DemoChatApp(), chat(prompt, tools=[tool])))
    return orjson.loads(message["tool_calls"][0]["function"]["arguments"])


def test_shell_tools_get_a_harmless_command() -> None:
    # Only the required key: a made-up "shell" or "workdir" would break the run.
    assert called("exec_command", EXEC_COMMAND, "run exec_command") == {"cmd": "echo hello-from-compat-asgi"}
    assert called("shell", SHELL, "use shell") == {"command": ["echo", "hello-from-compat-asgi"]}


def test_apply_patch_gets_a_patch_that_adds_a_file() -> None:
    assert called("apply_patch", FREEFORM, "apply_patch please") == {
        "input": "*** Begin Patch\n*** Add File: hello.txt\n+hello from compat-asgi\n*** End Patch\n"
    }
    # A relative file named in the prompt is the one added; absolute paths
    # and parent directories are not file names to the demo.
    assert called("apply_patch", FREEFORM, "apply_patch to create docs/notes.md now")["input"].startswith(
        "*** Begin Patch\n*** Add File: docs/notes.md\n"
    )
    for prompt in ("apply_patch /etc/passwd.txt", "apply_patch ../up.txt"):
        assert "*** Add File: hello.txt\n" in called("apply_patch", FREEFORM, prompt)["input"]
    # Other tools with an "input" parameter keep the plain example string.
    assert called("transform", FREEFORM, "transform it") == {"input": "example"}


def test_a_namespaced_function_is_called_by_its_own_name() -> None:
    # Responses namespaces reach a chat backend flattened as "namespace__name".
    assert called("multi_agent_v1__close_agent", FREEFORM, "please close_agent") == {"input": "example"}
    tool = {"type": "function", "function": {"name": "tools__get", "parameters": FREEFORM}}
    assert "tool_calls" not in message_of(call(DemoChatApp(), chat("get_weather", tools=[tool])))


def test_a_javascript_exec_tool_gets_a_script() -> None:
    # Codex's code mode: a freeform "exec" tool described as running JavaScript.
    tool = {
        "type": "function",
        "function": {"name": "functions__exec", "description": "Run JavaScript code", "parameters": FREEFORM},
    }
    message = message_of(call(DemoChatApp(), chat("please run exec", tools=[tool])))
    assert orjson.loads(message["tool_calls"][0]["function"]["arguments"]) == {
        "input": "text(await tools.exec_command({cmd: 'echo hello-from-compat-asgi'}));"
    }
    # Any other "exec" keeps the plain example.
    assert called("exec", FREEFORM, "please run exec") == {"input": "example"}
