"""``compat-asgi serve`` in front of a real llama.cpp ``llama-server``.

The model is tiny and generated (tests/tiny_gguf.py): its answers are known in
advance, so every assertion is exact, while everything between the client and
the weights is the real thing: llama-server's Jinja chat templates, its
tool-call and reasoning parsers, grammar-constrained sampling, slots, errors.
Each scenario is asked streamed and non-streamed, and the two must agree.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest

from compat_asgi.validate import assert_valid, parse_sse, validate_responses_sse
from llama_support import CONTEXT, compat_server, llama_server
from tiny_gguf import ANSWER_AFTER_TOOL, JSON_ANSWER, JSON_SCHEMA, TEXT, THOUGHT, TIME_ARGS, WEATHER_ARGS

pytestmark = pytest.mark.real_backend

TIME_TOOL = {"type": "function", "name": "get_time", "description": "Current time in a zone.",
             "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}, "required": ["tz"]}}
WEATHER_TOOL = {"type": "function", "name": "get_weather", "description": "Weather for a city.",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


class Backend:
    def __init__(self, llama: str, base_url: str) -> None:
        self.llama = llama
        self.base_url = base_url
        self.client = openai.OpenAI(base_url=base_url, api_key="x", max_retries=0, timeout=60)

    def create(self, **body: Any) -> dict[str, Any]:
        """The non-streamed Response as JSON."""
        response = httpx.post(self.base_url + "/responses", json={"model": "tiny", **body}, timeout=60)
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    def stream(self, **body: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """(events, final Response) of the streamed answer, checked against the protocol rules."""
        with httpx.stream("POST", self.base_url + "/responses", json={"model": "tiny", "stream": True, **body},
                          timeout=60) as response:
            assert response.status_code == 200, response.read()
            raw = response.read()
        assert_valid(validate_responses_sse(raw))
        events = [orjson.loads(data) for _, data in parse_sse(raw)]
        return events, events[-1]["response"]

    def both(self, **body: Any) -> dict[str, Any]:
        """Ask streamed and non-streamed; assert they agree item by item; return the non-streamed one."""
        whole = self.create(**body)
        _, final = self.stream(**body)
        assert comparable(whole) == comparable(final)
        return whole


def comparable(response: dict[str, Any]) -> dict[str, Any]:
    """What must be equal between two answers: everything but ids and clocks."""
    skip = {"id", "created_at", "completed_at"}
    out = {k: v for k, v in response.items() if k not in skip}
    # llama.cpp makes up a new call id per request; every other field must match.
    out["output"] = [{k: v for k, v in item.items() if k not in ("id", "call_id")} for item in response["output"]]
    # The second of two equal prompts is served from llama's prompt cache.
    out["usage"] = {**response["usage"], "input_tokens_details": None}
    return out


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("llama")


@pytest.fixture(scope="module")
def hermes(workdir: Path) -> Iterator[Backend]:
    with llama_server(workdir, thinking=False) as llama, compat_server(llama, workdir) as base_url:
        yield Backend(llama, base_url)


@pytest.fixture(scope="module")
def qwen3(workdir: Path) -> Iterator[Backend]:
    with llama_server(workdir, thinking=True) as llama, compat_server(llama, workdir) as base_url:
        yield Backend(llama, base_url)


def items(response: dict[str, Any]) -> list[tuple[str, str]]:
    return [(item["type"], item["status"]) for item in response["output"]]


def calls(response: dict[str, Any]) -> list[tuple[str, Any]]:
    return [(i["name"], orjson.loads(i["arguments"])) for i in response["output"] if i["type"] == "function_call"]


# --------------------------------------------------------------------------- text


def test_text_with_the_sdk_streamed_and_not(hermes: Backend) -> None:
    response = hermes.client.responses.create(model="tiny", input="Say hello.")
    assert response.output_text == TEXT
    assert response.status == "completed"
    assert response.usage is not None and response.usage.input_tokens > 0 and response.usage.output_tokens > 0
    deltas = []
    with hermes.client.responses.stream(model="tiny", input="Say hello.") as stream:
        for event in stream:
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
        final = stream.get_final_response()
    assert len(deltas) > 1 and "".join(deltas) == TEXT == final.output_text
    # Usage comes only when asked for with include_usage, which the translation does.
    assert final.usage is not None and final.usage.output_tokens == response.usage.output_tokens
    hermes.both(input="Say hello.")


def test_max_output_tokens_cuts_the_text_the_same_way_streamed_and_not(hermes: Backend) -> None:
    response = hermes.both(input="Say hello.", max_output_tokens=3)
    assert response["status"] == "incomplete"
    assert response["incomplete_details"] == {"reason": "max_output_tokens"}
    assert items(response) == [("message", "incomplete")]
    assert response["output"][0]["content"][0]["text"] == "Hello from a"
    assert response["usage"]["output_tokens"] == 3


def test_chaining_with_previous_response_id_sends_the_history(hermes: Backend) -> None:
    first = hermes.client.responses.create(model="tiny", input="Say hello.")
    second = hermes.client.responses.create(model="tiny", input="Again.", previous_response_id=first.id)
    assert second.output_text == TEXT
    assert second.usage is not None and first.usage is not None
    # The earlier turn (question and answer) reached llama-server's prompt.
    assert second.usage.input_tokens > first.usage.input_tokens + len("Again.")


# --------------------------------------------------------------------------- tools


def test_tool_choice_required_calls_a_tool_with_llama_ids(hermes: Backend) -> None:
    response = hermes.both(input="What time is it?", tools=[TIME_TOOL, WEATHER_TOOL], tool_choice="required")
    assert items(response) == [("function_call", "completed")]
    assert calls(response) == [("get_time", TIME_ARGS)]
    # llama.cpp's call ids have no call_ prefix; they are passed through as they are.
    assert response["output"][0]["call_id"] and response["output"][0]["id"].startswith("fc_")


def test_named_tool_choice_is_honoured(hermes: Backend) -> None:
    # llama.cpp ignores an object tool_choice (falls back to "auto", where this
    # model calls get_time): only "required" over the named tool makes it call get_weather.
    named = {"type": "function", "name": "get_weather"}
    response = hermes.both(input="Weather?", tools=[TIME_TOOL, WEATHER_TOOL], tool_choice=named)
    assert calls(response) == [("get_weather", WEATHER_ARGS)]
    assert response["tool_choice"] == named


def test_allowed_tools_limits_what_llama_can_call(hermes: Backend) -> None:
    choice = {"type": "allowed_tools", "mode": "required", "tools": [{"type": "function", "name": "get_weather"}]}
    response = hermes.both(input="Weather?", tools=[TIME_TOOL, WEATHER_TOOL], tool_choice=choice)
    assert calls(response) == [("get_weather", WEATHER_ARGS)]


def test_parallel_calls_are_separate_items(hermes: Backend) -> None:
    response = hermes.both(input="Both, in parallel please.", tools=[TIME_TOOL, WEATHER_TOOL],
                           tool_choice="required", parallel_tool_calls=True)
    assert calls(response) == [("get_time", TIME_ARGS), ("get_weather", WEATHER_ARGS)]
    assert len({i["call_id"] for i in response["output"]}) == 2


def test_a_call_cut_by_max_output_tokens_is_the_incomplete_item(hermes: Backend) -> None:
    response = hermes.both(input="What time is it?", tools=[TIME_TOOL], tool_choice="required", max_output_tokens=1)
    assert response["status"] == "incomplete"
    assert all(status == "incomplete" for _, status in items(response))


def test_tool_round_trip_then_an_answer(hermes: Backend) -> None:
    first = hermes.client.responses.create(model="tiny", input="What time is it?", tools=[TIME_TOOL],
                                           tool_choice="required")
    call = first.output[0]
    assert call.type == "function_call"
    second = hermes.client.responses.create(
        model="tiny", previous_response_id=first.id, tools=[TIME_TOOL],
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "12:00"}],
    )
    assert second.output_text == ANSWER_AFTER_TOOL
    # The same round trip without the store: the whole history sent back.
    hermes.both(input=[
        {"role": "user", "content": "What time is it?"},
        {"type": "function_call", "call_id": call.call_id, "name": "get_time", "arguments": call.arguments},
        {"type": "function_call_output", "call_id": call.call_id, "output": "12:00"},
    ], tools=[TIME_TOOL], store=False)


# --------------------------------------------------------------------------- formats and reasoning


def test_json_schema_answer_is_grammar_constrained(hermes: Backend) -> None:
    fmt = {"type": "json_schema", "name": "answer", "schema": JSON_SCHEMA, "strict": True}
    response = hermes.both(input="Answer in JSON.", text={"format": fmt})
    assert orjson.loads(response["output"][0]["content"][0]["text"]) == JSON_ANSWER


def test_reasoning_becomes_a_reasoning_item(qwen3: Backend) -> None:
    response = qwen3.both(input="Say hello.")
    assert items(response) == [("reasoning", "completed"), ("message", "completed")]
    # llama.cpp keeps the newline before </think> (and drops the one after <think>).
    assert response["output"][0]["content"] == [{"type": "reasoning_text", "text": THOUGHT + "\n"}]
    assert response["output"][1]["content"][0]["text"] == TEXT
    events, _ = qwen3.stream(input="Say hello.")
    assert "".join(e["delta"] for e in events if e["type"] == "response.reasoning_text.delta") == THOUGHT + "\n"


def test_qwen3_template_tool_calls_and_round_trip(qwen3: Backend) -> None:
    # The Qwen3 template's own tool-call rendering and llama.cpp's parser for it.
    first = qwen3.both(input="What time is it?", tools=[TIME_TOOL], tool_choice="required")
    assert calls(first) == [("get_time", TIME_ARGS)]
    call = first["output"][0]
    second = qwen3.both(input=[
        {"role": "user", "content": "What time is it?"},
        {"type": "function_call", "call_id": call["call_id"], "name": "get_time", "arguments": call["arguments"]},
        {"type": "function_call_output", "call_id": call["call_id"], "output": "12:00"},
    ], tools=[TIME_TOOL], store=False)
    assert second["output"][-1]["content"][0]["text"] == ANSWER_AFTER_TOOL


def test_reasoning_cut_by_max_output_tokens_is_incomplete(qwen3: Backend) -> None:
    response = qwen3.both(input="Say hello.", max_output_tokens=2)
    assert response["status"] == "incomplete"
    assert items(response) == [("reasoning", "incomplete")]


# --------------------------------------------------------------------------- faults


def test_context_overflow_is_a_400_in_the_envelope(hermes: Backend) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        hermes.client.responses.create(model="tiny", input="word " * CONTEXT)
    assert caught.value.status_code == 400
    error = caught.value.body
    assert isinstance(error, dict)
    # llama.cpp's own exceed_context_size_error, as OpenAI names it.
    assert error.get("type") == "invalid_request_error"
    assert error.get("code") == "context_length_exceeded"
    assert error.get("param") == "input"
    assert "context" in str(error.get("message"))


def _metric(llama: str, name: str) -> float:
    metrics = httpx.get(llama + "/metrics", timeout=5).text
    return float(next(m for m in metrics.splitlines() if m.startswith(name + " ")).split()[-1])


def _wait_idle(llama: str) -> None:
    deadline = time.monotonic() + 120
    while _metric(llama, "llamacpp:requests_processing"):
        assert time.monotonic() < deadline, "llama-server is still generating"
        time.sleep(0.05)


def test_client_disconnect_frees_the_llama_slot(hermes: Backend) -> None:
    # "lalala" makes the model sing " la" until its context (4096 tokens) is full,
    # which takes about a minute; tokens_predicted_total counts what the slots generated.
    predicted = "llamacpp:tokens_predicted_total"
    _wait_idle(hermes.llama)
    before = _metric(hermes.llama, predicted)
    hermes.create(input="lalala", max_output_tokens=100)
    assert _metric(hermes.llama, predicted) - before == 100
    before += 100
    with httpx.stream("POST", hermes.base_url + "/responses", timeout=60,
                      json={"model": "tiny", "input": "lalala", "stream": True}) as response:
        # Keep the iterator referenced: dropping it closes the response, which is the disconnect.
        lines = response.iter_lines()
        deltas = 0
        while deltas < 200:
            deltas += '"response.output_text.delta"' in next(lines)
        assert _metric(hermes.llama, "llamacpp:requests_processing") == 1
    # The client is gone now (the response closed mid-stream).
    _wait_idle(hermes.llama)
    # Left alone the slot would have sung about 4000 tokens into the void.
    assert 200 <= _metric(hermes.llama, predicted) - before < 1000


# A 1x1 PNG: llama-server without a multimodal projector refuses any image.
PIXEL = ("data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQ"
         "AAAABJRU5ErkJggg==")


def test_image_input_without_a_projector_is_llamas_error_in_the_envelope(hermes: Backend) -> None:
    content = [{"type": "input_text", "text": "What is this?"}, {"type": "input_image", "image_url": PIXEL}]
    response = httpx.post(hermes.base_url + "/responses", timeout=30,
                          json={"model": "tiny", "input": [{"role": "user", "content": content}]})
    assert response.status_code == 502
    error = response.json()["error"]
    assert error["code"] == "upstream_error"
    assert "image" in error["message"].lower()
