"""The official OpenAI SDK against CompatMiddleware on a real uvicorn server.

Every test runs twice: the demo backend in-process, and over HTTP.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest

from compat_asgi.validate import assert_valid, validate_response_object, validate_responses_sse

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather for a city",
    "parameters": {
        "type": "object",
        "properties": {"location": {"type": "string"}},
        "required": ["location"],
    },
}
LONG = "please tell me a long story about " + "and then " * 12 + "the end"
TIME = {
    "type": "function",
    "name": "get_time",
    "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}, "required": ["tz"]},
}


@pytest.fixture
def client(compat_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=compat_url, api_key="test-key", max_retries=0, timeout=20)


def raw_stream(compat_url: str, **body: Any) -> bytes:
    """The exact bytes a client receives for a streamed request, validated."""
    with httpx.stream(
        "POST", compat_url + "/responses", json={**body, "stream": True}, timeout=20
    ) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        raw = response.read()
    assert_valid(validate_responses_sse(raw))
    return raw


def events_of(raw: bytes) -> list[dict[str, Any]]:
    return [json.loads(line[6:]) for line in raw.split(b"\n") if line.startswith(b"data: ")]


def test_create_plain_text(client: openai.OpenAI) -> None:
    raw = client.responses.with_raw_response.create(model="demo", input="hi there")
    assert_valid(validate_response_object(raw.http_response.json(), expect_status="completed"))
    response = raw.parse()
    assert response.status == "completed"
    assert response.id.startswith("resp_")
    assert response.output_text.startswith("Hello! You said: hi there.")
    usage = response.usage
    assert usage is not None
    assert usage.input_tokens > 0 and usage.output_tokens == len(response.output_text.split())
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    assert usage.input_tokens_details.cached_tokens == 0
    assert usage.output_tokens_details.reasoning_tokens == 0


def test_stream_matches_final_response(client: openai.OpenAI, compat_url: str) -> None:
    deltas = []
    with client.responses.stream(model="demo", input="stream me") as stream:
        for event in stream:
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
        final = stream.get_final_response()
    assert len(deltas) > 3  # word by word, not one lump
    assert "".join(deltas) == final.output_text
    assert final.output_text.startswith("Hello! You said: stream me.")
    assert final.status == "completed"
    raw_stream(compat_url, model="demo", input="stream me")


@pytest.mark.parametrize("stream", [False, True])
def test_function_call_round_trip(client: openai.OpenAI, compat_url: str, stream: bool) -> None:
    prompt = "What is the weather in Paris? Use get_weather."
    if stream:
        with client.responses.stream(model="demo", input=prompt, tools=[WEATHER]) as s:
            first = s.get_final_response()
        raw_stream(compat_url, model="demo", input=prompt, tools=[WEATHER])
    else:
        first = client.responses.create(model="demo", input=prompt, tools=[WEATHER])
    calls = [item for item in first.output if item.type == "function_call"]
    assert len(calls) == 1
    call = calls[0]
    assert call.id is not None and call.id.startswith("fc_")
    assert call.name == "get_weather"
    assert json.loads(call.arguments) == {"location": "Paris"}

    second = client.responses.create(
        model="demo",
        tools=[WEATHER],
        input=[
            {"role": "user", "content": prompt},
            {
                "type": "function_call",
                "call_id": call.call_id,
                "name": call.name,
                "arguments": call.arguments,
            },
            {"type": "function_call_output", "call_id": call.call_id, "output": "18C and sunny"},
        ],
    )
    assert second.status == "completed"
    assert second.output_text == "The tool get_weather returned: 18C and sunny."


def test_parallel_tool_calls_all_present(client: openai.OpenAI, compat_url: str) -> None:
    prompt = "In Paris: call get_weather and get_time please"
    with client.responses.stream(model="demo", input=prompt, tools=[WEATHER, TIME]) as s:
        final = s.get_final_response()
    calls = [item for item in final.output if item.type == "function_call"]
    assert [c.name for c in calls] == ["get_weather", "get_time"]
    assert len({c.call_id for c in calls}) == 2
    assert json.loads(calls[0].arguments) == {"location": "Paris"}
    assert json.loads(calls[1].arguments) == {"tz": "example"}
    events = events_of(raw_stream(compat_url, model="demo", input=prompt, tools=[WEATHER, TIME]))
    added = [e for e in events if e["type"] == "response.output_item.added"]
    assert [e["output_index"] for e in added] == [0, 1]

    one = client.responses.create(
        model="demo", input=prompt, tools=[WEATHER, TIME], parallel_tool_calls=False
    )
    assert [item.type for item in one.output] == ["function_call"]
    assert one.parallel_tool_calls is False


def test_tool_choice_required_and_named(client: openai.OpenAI) -> None:
    required = client.responses.create(
        model="demo", input="no tool named here", tools=[WEATHER, TIME], tool_choice="required"
    )
    assert [item.name for item in required.output if item.type == "function_call"] == [
        "get_weather"
    ]
    named = client.responses.create(
        model="demo",
        input="no tool named here",
        tools=[WEATHER, TIME],
        tool_choice={"type": "function", "name": "get_time"},
    )
    assert [item.name for item in named.output if item.type == "function_call"] == ["get_time"]
    none = client.responses.create(
        model="demo", input="use get_weather", tools=[WEATHER], tool_choice="none"
    )
    assert [item.type for item in none.output] == ["message"]


@pytest.mark.parametrize("stream", [False, True])
def test_max_output_tokens_is_incomplete(
    client: openai.OpenAI, compat_url: str, stream: bool
) -> None:
    if stream:
        events = events_of(
            raw_stream(compat_url, model="demo", input=LONG, max_output_tokens=16)
        )
        assert events[-1]["type"] == "response.incomplete"
        response = events[-1]["response"]
    else:
        response = client.responses.create(
            model="demo", input=LONG, max_output_tokens=16
        ).model_dump()
    assert response["status"] == "incomplete"
    assert response["incomplete_details"] == {"reason": "max_output_tokens"}
    assert response["max_output_tokens"] == 16
    assert response["output"][0]["status"] == "incomplete"
    assert len(response["output"][0]["content"][0]["text"].split()) == 16


def test_structured_output_json_schema(client: openai.OpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
        "required": ["city", "population"],
        "additionalProperties": False,
    }
    response = client.responses.create(
        model="demo",
        input="Describe Paris",
        text={"format": {"type": "json_schema", "name": "city", "schema": schema, "strict": True}},
    )
    data = json.loads(response.output_text)
    assert set(data) == {"city", "population"}
    assert isinstance(data["population"], int)
    assert response.text.format.type == "json_schema"


def test_item_list_instructions_and_echo(client: openai.OpenAI) -> None:
    response = client.responses.create(
        model="demo",
        instructions="Be terse.",
        input=[
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "one"}]},
            {"role": "assistant", "content": "ok"},
            {
                "type": "message",
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "two"},
                    {"type": "input_image", "image_url": "data:image/png;base64,AAAA"},
                ],
            },
        ],
        temperature=0.5,
        top_p=0.9,
        metadata={"k": "v"},
        user="someone",
    )
    assert response.output_text.startswith("Hello! You said: two [image].")
    assert response.instructions == "Be terse."
    assert response.temperature == 0.5 and response.top_p == 0.9
    assert response.metadata == {"k": "v"}
    assert response.user == "someone"


def test_reasoning_model_streams_reasoning_first(client: openai.OpenAI, compat_url: str) -> None:
    response = client.responses.create(model="demo-reasoning", input="think")
    assert [item.type for item in response.output] == ["reasoning", "message"]
    assert response.output[0].id.startswith("rs_")
    assert response.usage is not None and response.usage.output_tokens_details.reasoning_tokens > 0
    events = events_of(raw_stream(compat_url, model="demo-reasoning", input="think"))
    kinds = [e["type"] for e in events]
    assert kinds.index("response.reasoning_text.delta") < kinds.index("response.output_text.delta")


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "demo"}, "input"),
        ({"input": "hi"}, "model"),
        ({"model": "demo", "input": 5}, "input"),
        ({"model": "demo", "input": [{"type": 3}]}, "input[0].type"),
        ({"model": "demo", "input": [{"type": "nonsense"}]}, "input"),
        ({"model": "demo", "input": "hi", "temperature": "hot"}, "temperature"),
    ],
)
def test_invalid_requests_get_400_with_param(
    client: openai.OpenAI, body: dict[str, Any], param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.post("/responses", body=body, cast_to=httpx.Response)
    error = caught.value.body
    assert isinstance(error, dict)
    assert error["param"] == param
    assert error["type"] == "invalid_request_error"
    assert error["message"]


def test_bad_json_and_wrong_method(compat_url: str) -> None:
    bad = httpx.post(compat_url + "/responses", content=b"{not json", timeout=10)
    assert bad.status_code == 400
    assert bad.json()["error"]["type"] == "invalid_request_error"
    wrong = httpx.get(compat_url + "/responses", timeout=10)
    assert wrong.status_code == 405
    assert wrong.json()["error"]["code"] == "method_not_allowed"
    assert "POST" in wrong.headers["allow"]
