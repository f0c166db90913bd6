"""``compat-asgi serve`` in front of a real llama.cpp ``llama-server``.

The model is tiny and generated (tests/tiny_gguf.py): its answers are known in
advance, so every assertion is exact, while everything between the client and
the weights is the real thing: llama-server's Jinja chat templates, its
tool-call and reasoning parsers, grammar-constrained sampling, slots, errors.
Each scenario is asked streamed and non-streamed, and the two must agree.
The real clients run against it too: the Codex CLI (over HTTP and over one
WebSocket, with a plain and a thinking model), the Agents SDK (tools,
WebSocket mode, a Conversations session), the Agents SDK for JavaScript,
and through the OpenAI SDK background responses, token counts, compaction
and the public conformance suite.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest

from agents_js_support import run_agents_js
from codex_support import Recorder, Workspace, codex_binary
from compat_asgi.cli import create_app
from compat_asgi.validate import assert_valid, parse_sse, validate_responses_sse
from llama_support import CONTEXT, compat_server, llama_server
from support import Scopes, serve
from tiny_gguf import (
    ANSWER_AFTER_TOOL,
    COMMAND,
    JSON_ANSWER,
    JSON_SCHEMA,
    TEXT,
    THOUGHT,
    TIME_ARGS,
    WEATHER_ARGS,
)

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


# Codex's first request is about 38,000 tokens here (one per byte: its instructions
# and tool schemas), so it needs a larger context.
ROOMY_CONTEXT = 65536


@pytest.fixture(scope="module")
def roomy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    """The Hermes model with ROOMY_CONTEXT tokens per slot."""
    workdir = tmp_path_factory.mktemp("roomy")
    with llama_server(workdir, thinking=False, context=ROOMY_CONTEXT) as llama, compat_server(llama, workdir) as base_url:
        yield Backend(llama, base_url)


@pytest.fixture(scope="module")
def roomy_qwen3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """llama-server with the Qwen3 (thinking) model and ROOMY_CONTEXT tokens per slot; its base URL."""
    with llama_server(tmp_path_factory.mktemp("roomy-qwen3"), thinking=True, context=ROOMY_CONTEXT) as llama:
        yield llama


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


def test_client_disconnect_frees_the_llama_slot(roomy: Backend) -> None:
    # "lalala" makes the model sing " la" until its context (65,536 tokens) is full;
    # tokens_predicted_total counts what the slots generated.
    predicted = "llamacpp:tokens_predicted_total"
    _wait_idle(roomy.llama)
    before = _metric(roomy.llama, predicted)
    roomy.create(input="lalala", max_output_tokens=100)
    assert _metric(roomy.llama, predicted) - before == 100
    before += 100
    with httpx.stream("POST", roomy.base_url + "/responses", timeout=60,
                      json={"model": "tiny", "input": "lalala", "stream": True}) as response:
        # Keep the iterator referenced: dropping it closes the response, which is the disconnect.
        lines = response.iter_lines()
        deltas = 0
        while deltas < 200:
            deltas += '"response.output_text.delta"' in next(lines)
        assert _metric(roomy.llama, "llamacpp:requests_processing") == 1
    # The client is gone now (the response closed mid-stream).
    _wait_idle(roomy.llama)
    # Left alone the slot would have sung 65,000 tokens into the void. What it made
    # past the 200 read is what the socket buffers between it and the client held
    # (600-1,100 tokens seen) and what it made while the cancel travelled.
    generated = _metric(roomy.llama, predicted) - before
    assert 200 <= generated < 8000, generated


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


# -- real clients ------------------------------------------------------------------------

@pytest.mark.parametrize("transport", ["http", "websocket"])
def test_codex_runs_the_command_llama_chose_and_answers_from_its_output(
    roomy: Backend, tmp_path: Path, transport: str
) -> None:
    """Codex unchanged (default tools and settings) with llama.cpp deciding: the
    model calls Codex's own exec_command, Codex runs it, sends the output back,
    and the model's answer to that ends the turn."""
    codex_binary()  # skipped (failed under CI) when the Codex CLI is missing
    app = Scopes(create_app(store="memory", upstream=roomy.llama + "/v1"))
    with serve(app) as url:
        ws = Workspace(tmp_path, url, model="tiny-hermes", websockets=transport == "websocket")
        run = ws.exec("Run something, then tell me about it.")
    run.assert_ok()
    [command] = run.items("command_execution")
    assert COMMAND in command["command"] and command["exit_code"] == 0
    assert command["aggregated_output"] == "run by a tiny model\n"
    assert (ws.repo / "tiny.txt").read_text() == "run by a tiny model\n"
    assert run.answer == ANSWER_AFTER_TOOL
    # The second request repeats the first's prefix: llama's prompt cache, reported through us.
    [done] = [e for e in run.events if e["type"] == "turn.completed"]
    assert done["usage"]["cached_input_tokens"] > 0
    if transport == "websocket":
        assert ("WS", "/v1/responses") in app.seen and ("POST", "/v1/responses") not in app.seen, app.seen
    else:
        assert app.seen.count(("POST", "/v1/responses")) == 2 and ("WS", "/v1/responses") not in app.seen


def test_codex_with_a_thinking_model_keeps_its_reasoning_across_requests(roomy_qwen3: str, tmp_path: Path) -> None:
    """Qwen3's <think> before the call becomes a reasoning item Codex shows; with
    store false Codex sends it back sealed, and the server accepts its own seal."""
    codex_binary()
    recorder = Recorder(create_app(store="memory", upstream=roomy_qwen3 + "/v1"))
    with serve(recorder) as url:
        run = Workspace(tmp_path, url, model="tiny-qwen3").exec("Think, then run something.")
    run.assert_ok()
    assert [item["text"] for item in run.items("reasoning")] == [THOUGHT + "\n"]  # llama keeps that newline
    [command] = run.items("command_execution")
    assert COMMAND in command["command"] and command["exit_code"] == 0
    assert run.answer == ANSWER_AFTER_TOOL
    first, second = (x.json() for x in recorder.responses())
    assert first["store"] is False and "reasoning.encrypted_content" in first["include"]
    [reasoning] = [item for item in second["input"] if item.get("type") == "reasoning"]
    assert reasoning["encrypted_content"]
    assert [x.status for x in recorder.responses()] == [200, 200]


def _agent(base_url: str, calls: list[str], *, websocket: bool = False) -> Any:
    agents = pytest.importorskip("agents")
    from agents.models.openai_responses import OpenAIResponsesModel, OpenAIResponsesWSModel
    from openai import AsyncOpenAI

    @agents.function_tool
    def get_time(tz: str) -> str:
        """Current time in a zone."""
        calls.append(tz)
        return f"12:00 in {tz}"

    agents.set_tracing_disabled(True)
    client = AsyncOpenAI(base_url=base_url, api_key="x", max_retries=0)
    kind = OpenAIResponsesWSModel if websocket else OpenAIResponsesModel
    model = kind(model="tiny", openai_client=client)
    return agents.Agent(name="clock", instructions="Answer with the tools.", model=model, tools=[get_time])


@pytest.mark.parametrize("mode", ["run", "streamed", "websocket"])
def test_agents_sdk_tool_loop(hermes: Backend, mode: str) -> None:
    """The Agents SDK's loop over llama: the model calls the Python tool, the
    SDK runs it and sends its output, the model answers from it."""
    agents = pytest.importorskip("agents")
    calls: list[str] = []
    agent = _agent(hermes.base_url, calls, websocket=mode == "websocket")

    async def run() -> Any:
        try:
            if mode == "streamed":
                result = agents.Runner.run_streamed(agent, "What time is it?")
                kinds = [e.item.type async for e in result.stream_events() if e.type == "run_item_stream_event"]
                assert kinds == ["tool_call_item", "tool_call_output_item", "message_output_item"]
                return result
            return await agents.Runner.run(agent, "What time is it?")
        finally:
            close = getattr(agent.model, "close", None)
            if close is not None:
                await close()

    result = asyncio.run(run())
    assert result.final_output == ANSWER_AFTER_TOOL
    assert calls == [TIME_ARGS["tz"]]


@pytest.mark.parametrize("mode", ["run", "websocket"])
def test_agents_sdk_for_javascript_tool_loop(hermes: Backend, mode: str) -> None:
    result = run_agents_js(mode, hermes.base_url, model="tiny", tool="get_time", prompt="What time is it?")
    assert result["final"] == ANSWER_AFTER_TOOL and result["calls"] == [TIME_ARGS["tz"]]


QUESTIONS = ("My name is Ada.", "And yours?")


def test_agents_sdk_conversations_session_sends_the_history(hermes: Backend) -> None:
    agents = pytest.importorskip("agents")
    from agents.memory import OpenAIConversationsSession
    from agents.models.openai_responses import OpenAIResponsesModel
    from openai import AsyncOpenAI

    agents.set_tracing_disabled(True)

    async def scenario() -> tuple[list[Any], list[Any]]:
        client = AsyncOpenAI(base_url=hermes.base_url, api_key="x", max_retries=0)
        agent = agents.Agent(name="helper", instructions="Be brief.", model=OpenAIResponsesModel(model="tiny", openai_client=client))
        session = OpenAIConversationsSession(openai_client=client)
        results = [await agents.Runner.run(agent, text, session=session) for text in QUESTIONS]
        return results, await session.get_items()

    results, items = asyncio.run(scenario())
    assert [r.final_output for r in results] == [TEXT, TEXT]
    assert [(i.get("role"), i.get("type", "message")) for i in items] == [
        ("user", "message"), ("assistant", "message"), ("user", "message"), ("assistant", "message")
    ]
    # One token per byte: alone, the second prompt would be the first with the
    # other question; llama counted the first turn in it too, so the history reached it.
    first, second = (r.raw_responses[0].usage.input_tokens for r in results)
    alone = first - len(QUESTIONS[0]) + len(QUESTIONS[1])
    assert second >= alone + len(QUESTIONS[0]), (first, second)


def test_background_response_polled_and_followed(hermes: Backend) -> None:
    started = hermes.client.responses.create(model="tiny", input="hi", background=True)
    assert started.status in ("queued", "in_progress") and started.background is True
    deadline = time.monotonic() + 60
    response = started
    while response.status in ("queued", "in_progress"):
        assert time.monotonic() < deadline, response.status
        time.sleep(0.05)
        response = hermes.client.responses.retrieve(started.id)
    assert response.status == "completed" and response.output_text == TEXT
    # Its events, replayed from after the third, as the SDK follows a run.
    events = list(hermes.client.responses.retrieve(started.id, stream=True, starting_after=2))
    assert [e.sequence_number for e in events] == list(range(3, 3 + len(events)))
    assert events[-1].type == "response.completed" and events[-1].response.output_text == TEXT


def test_public_suite_and_codex_profile_over_llama(roomy: Backend) -> None:
    """The README's conformance row for llama-server: every public case and every
    Codex request shape passes but the two inputs llama.cpp itself refuses."""
    from compat_asgi.conformance import run_conformance

    report = run_conformance(roomy.base_url, model="tiny", api="responses", suite="openresponses",
                             clients=("codex",), timeout=60)
    failed = {r.scenario: r.rule for r in report.results if r.status == "fail"}
    assert failed == {"image-input": "http-status", "file-input": "http-status"}, failed
    passed = {r.scenario for r in report.results if r.status == "pass"}
    assert {"tool-calling", "tool-calling-streaming", "function-call-roundtrip", "websocket-response"} <= passed
    assert sum(r.scenario.startswith("codex-") for r in report.results if r.status == "pass") == 6
    assert report.profile == "both"


def test_input_token_count_is_what_llama_then_counts(hermes: Backend) -> None:
    """``client.responses.input_tokens.count`` asks llama.cpp itself (its chat
    template, then its tokenizer): the count is the prompt_tokens the same
    request then costs."""
    request: dict[str, Any] = {"model": "tiny", "instructions": "Be brief.", "input": "What time is it?",
                               "tools": [TIME_TOOL]}
    counted = hermes.client.responses.input_tokens.count(**request)
    # The same prompt once more: tokens served from llama's cache still count as input.
    created = hermes.client.responses.create(**request, max_output_tokens=16)
    assert counted.input_tokens == created.usage.input_tokens > 0


def test_compaction_summary_by_llama_stands_in_for_the_history(hermes: Backend) -> None:
    conversation: list[Any] = [
        {"role": "user", "content": "My name is Ada."},
        {"role": "assistant", "content": "Nice to meet you, Ada."},
        {"role": "user", "content": "I like tea."},
    ]
    compacted = hermes.client.responses.compact(model="tiny", input=conversation)
    kinds = [item.type for item in compacted.output]
    assert kinds[-1] == "compaction" and compacted.output[-1].encrypted_content
    # The user's messages are kept; the rest became llama's summary, sealed.
    assert [item.role for item in compacted.output if item.type == "message"] == ["user", "user"]
    assert compacted.usage.input_tokens > 0 and compacted.usage.output_tokens > 0
    # The next turn goes on from the compacted context. (The SDK types the kept user
    # messages as output messages, so dumping them would warn about input_text.)
    follow_up = hermes.client.responses.create(
        model="tiny", input=[*(item.model_dump(exclude_none=True, warnings=False) for item in compacted.output),
                             {"role": "user", "content": "Say hello."}])
    assert follow_up.status == "completed" and follow_up.output_text == TEXT
