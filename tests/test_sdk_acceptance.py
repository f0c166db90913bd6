"""The OpenAI SDK against a real uvicorn server: what Codex-style clients send
is accepted and reported (``x-compat-ignored``), refused only in strict mode,
namespaced calls come back under their namespace, and the Response object
carries every key of the SDK's model wherever it appears."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai.types.responses import Response
from support import serve

from compat_asgi import CompatMiddleware
from compat_asgi.demo import DemoChatApp
from compat_asgi.validate import assert_valid, validate_responses_sse

CODEX_FIXTURES = Path(__file__).parent / "fixtures" / "codex"
WAIT = {
    "type": "function",
    "name": "wait_agent",
    "description": "Wait for agents.",
    "parameters": {
        "type": "object",
        "properties": {"timeout_ms": {"type": "integer"}},
        "required": ["timeout_ms"],
        "additionalProperties": False,
    },
}
AGENTS = {"type": "namespace", "name": "multi_agent_v1", "description": "Sub-agents.", "tools": [WAIT]}
CLIENT_METADATA = {"session_id": "s-1", "x-codex-window-id": "w:0"}
# Required by the OpenResponses schema's Response object (openresponses.org),
# on top of the SDK model's fields.
OPENRESPONSES_REQUIRED = {
    "id", "object", "created_at", "completed_at", "status", "incomplete_details", "model",
    "previous_response_id", "instructions", "output", "error", "tools", "tool_choice", "truncation",
    "parallel_tool_calls", "text", "top_p", "presence_penalty", "frequency_penalty", "top_logprobs",
    "temperature", "reasoning", "usage", "max_output_tokens", "max_tool_calls", "store", "background",
    "service_tier", "metadata", "safety_identifier", "prompt_cache_key",
}
RESPONSE_KEYS = {field.alias or name for name, field in Response.model_fields.items()} | OPENRESPONSES_REQUIRED


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    with serve(CompatMiddleware(DemoChatApp(), store="memory")) as url:
        yield url + "/v1"


@pytest.fixture(scope="module")
def strict_url() -> Iterator[str]:
    with serve(CompatMiddleware(DemoChatApp(), strict=True)) as url:
        yield url + "/v1"


def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url, api_key="k", max_retries=0, timeout=20)


def missing_keys(response: dict[str, Any]) -> set[str]:
    return RESPONSE_KEYS - set(response)


def test_codex_fields_are_accepted_and_reported_streamed_and_not(base_url: str) -> None:
    sdk = client(base_url)
    request: dict[str, Any] = {
        "model": "demo",
        "input": "hello",
        "tools": [AGENTS, {"type": "web_search", "external_web_access": False}],
        "extra_body": {"client_metadata": CLIENT_METADATA},
    }
    raw = sdk.responses.with_raw_response.create(**request)
    assert raw.headers["x-compat-ignored"] == "client_metadata,tools[web_search]"
    response = raw.parse()
    assert response.status == "completed" and response.output_text
    with sdk.responses.with_streaming_response.create(**request, stream=True) as streamed:
        assert streamed.headers["x-compat-ignored"] == "client_metadata,tools[web_search]"
        kinds = [event.type for event in streamed.parse()]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    # Nothing to report: no header.
    plain = sdk.responses.with_raw_response.create(model="demo", input="hello")
    assert "x-compat-ignored" not in plain.headers


def test_strict_server_refuses_unknown_fields_and_hosted_tools(strict_url: str) -> None:
    sdk = client(strict_url)
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.responses.create(model="demo", input="hi", extra_body={"client_metadata": CLIENT_METADATA})
    assert caught.value.code == "unknown_parameter" and caught.value.param == "client_metadata"
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.responses.create(model="demo", input="hi", tools=[{"type": "web_search"}])
    assert caught.value.param == "tools[0].type"


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_namespaced_tool_call_comes_back_under_its_namespace(base_url: str, stream: bool) -> None:
    sdk = client(base_url)
    request: dict[str, Any] = {"model": "demo", "input": "wait for the agents", "tools": [AGENTS], "tool_choice": "required"}
    if stream:
        with sdk.responses.stream(**request) as events:
            added = [e.item for e in events if e.type == "response.output_item.added"]
            response = events.get_final_response()
        assert [(item.type, item.name, item.namespace) for item in added] == [("function_call", "wait_agent", "multi_agent_v1")]
    else:
        response = sdk.responses.create(**request)
    (call,) = response.output
    assert call.type == "function_call"
    assert (call.name, call.namespace) == ("wait_agent", "multi_agent_v1")
    assert isinstance(json.loads(call.arguments)["timeout_ms"], int)
    # Codex sends the call back, and an output matched by name + namespace only.
    follow = sdk.responses.create(
        model="demo",
        tools=[AGENTS],
        input=[
            {"role": "user", "content": "wait for the agents"},
            call.model_dump(exclude_none=True),
            {"type": "function_call_output", "call_id": call.call_id, "output": "agent 1 finished"},
            {"type": "function_call_output", "name": "goal_objective", "namespace": "agent", "output": "ship it"},  # type: ignore[list-item]
        ],
    )
    assert follow.status == "completed" and follow.output_text


def test_response_object_has_every_key_everywhere(base_url: str) -> None:
    sdk = client(base_url)
    whole = sdk.responses.with_raw_response.create(model="demo", input="hi").http_response.json()
    assert missing_keys(whole) == set()
    assert whole["completed_at"] >= whole["created_at"]
    with httpx.stream("POST", base_url + "/responses", json={"model": "demo", "input": "hi", "stream": True}, timeout=20) as r:
        raw = r.read()
    assert_valid(validate_responses_sse(raw))
    events = [json.loads(line[6:]) for line in raw.split(b"\n") if line.startswith(b"data: ")]
    lifecycle = [e for e in events if e["type"] in ("response.created", "response.in_progress", "response.completed")]
    assert [e["type"] for e in lifecycle] == ["response.created", "response.in_progress", "response.completed"]
    for event in lifecycle:
        assert missing_keys(event["response"]) == set(), event["type"]
    assert lifecycle[0]["response"]["completed_at"] is None
    assert lifecycle[-1]["response"]["completed_at"] is not None
    stored = httpx.get(f"{base_url}/responses/{whole['id']}", timeout=20).json()
    assert missing_keys(stored) == set()
    incomplete = sdk.responses.with_raw_response.create(model="demo", input="a long story", max_output_tokens=2)
    body = incomplete.http_response.json()
    assert body["status"] == "incomplete" and missing_keys(body) == set() and body["completed_at"] is None
    # The SDK parses all of them.
    for obj in (whole, stored, body, *(e["response"] for e in lifecycle)):
        Response.model_validate(obj)


@pytest.mark.parametrize("path", sorted(CODEX_FIXTURES.glob("*.json")), ids=lambda p: p.name.split(".")[0])
def test_captured_codex_requests_get_a_valid_stream(base_url: str, path: Path) -> None:
    request = json.loads(path.read_text())
    with httpx.stream("POST", base_url + "/responses", json=request, timeout=30) as r:
        raw = r.read()
        assert r.status_code == 200, raw[:500]
        assert "client_metadata" in r.headers["x-compat-ignored"].split(",")
    assert_valid(validate_responses_sse(raw))
    assert b"event: response.completed" in raw


def test_chat_completions_over_a_responses_upstream_report_unknown_fields() -> None:
    with serve(CompatMiddleware(CompatMiddleware(DemoChatApp()), upstream_api="responses")) as url:
        sdk = client(url + "/v1")
        raw = sdk.chat.completions.with_raw_response.create(
            model="demo", messages=[{"role": "user", "content": "hi"}], extra_body={"client_metadata": CLIENT_METADATA}
        )
        assert raw.headers["x-compat-ignored"] == "client_metadata"
        assert raw.parse().choices[0].message.content
