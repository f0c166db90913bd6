"""Coding-agent and agent-framework clients end to end: the OpenAI Agents SDK,
and a recorded Codex request, against the middleware over the demo backend."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from support import serve
from test_stored import RecordingDemo

from compat_asgi import CompatMiddleware
from compat_asgi.validate import assert_valid, validate_responses_sse

agents = pytest.importorskip("agents")
CODEX_REQUEST = json.loads((Path(__file__).parent / "fixtures" / "codex_request.json").read_text())


@pytest.fixture(scope="module")
def backend() -> Iterator[tuple[RecordingDemo, str]]:
    demo = RecordingDemo()
    with serve(CompatMiddleware(demo, store="memory")) as url:
        yield demo, url + "/v1"


def weather_agent(base_url: str) -> Any:
    from agents import Agent, function_tool
    from agents.models.openai_responses import OpenAIResponsesModel
    from openai import AsyncOpenAI

    @function_tool
    def get_weather(city: str) -> str:
        """Weather for a city."""
        return f"sunny in {city}"

    @function_tool
    def get_time(city: str) -> str:
        """Local time in a city."""
        return f"noon in {city}"

    agents.set_tracing_disabled(True)
    model = OpenAIResponsesModel(model="demo", openai_client=AsyncOpenAI(base_url=base_url, api_key="x", max_retries=0))
    return Agent(name="planner", instructions="Use the tools.", model=model, tools=[get_weather, get_time])


EXPECTED = "The tool get_weather returned: sunny in Paris. The tool get_time returned: noon in Paris."


def test_agents_sdk_multi_step_tool_run(backend: tuple[RecordingDemo, str]) -> None:
    demo, url = backend
    before = len(demo.messages)
    result = agents.Runner.run_sync(weather_agent(url), "In Paris: call get_weather and get_time.")
    assert result.final_output == EXPECTED
    assert len(demo.messages) - before == 2  # tool calls, then the answer from both results
    assert [m["role"] for m in demo.messages[-1]][-2:] == ["tool", "tool"]


def test_agents_sdk_streamed_run(backend: tuple[RecordingDemo, str]) -> None:
    _, url = backend

    async def run() -> tuple[str, list[str]]:
        result = agents.Runner.run_streamed(weather_agent(url), "In Paris: call get_weather and get_time.")
        kinds = []
        async for event in result.stream_events():
            if event.type == "run_item_stream_event":
                kinds.append(event.item.type)
        return str(result.final_output), kinds

    final, kinds = asyncio.run(run())
    assert final == EXPECTED
    assert kinds.count("tool_call_item") == 2 and kinds.count("tool_call_output_item") == 2
    assert kinds[-1] == "message_output_item"


def sse_events(raw: bytes) -> list[dict[str, Any]]:
    return [json.loads(line[6:]) for line in raw.split(b"\n") if line.startswith(b"data: ")]


def test_recorded_codex_request_gets_the_stream_codex_needs(backend: tuple[RecordingDemo, str]) -> None:
    demo, url = backend
    response = httpx.post(url + "/responses", json=CODEX_REQUEST, timeout=20)
    assert response.status_code == 200
    assert_valid(validate_responses_sse(response.content))
    events = sse_events(response.content)
    final = events[-1]
    assert final["type"] == "response.completed"
    done = final["response"]
    assert done["id"].startswith("resp_") and done["store"] is False
    usage = done["usage"]
    assert usage["input_tokens"] > 0 and usage["output_tokens"] > 0
    assert usage["output_tokens_details"]["reasoning_tokens"] > 0
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    reasoning, *calls = done["output"]
    assert reasoning["type"] == "reasoning" and reasoning["summary"][0]["text"]
    assert reasoning["encrypted_content"]
    assert [(c["type"], c["name"]) for c in calls] == [("function_call", "shell"), ("custom_tool_call", "apply_patch")]
    assert json.loads(calls[0]["arguments"])["command"]
    assert calls[1]["input"]  # the one string argument, decoded
    kinds = [e["type"] for e in events]
    assert "response.reasoning_summary_text.delta" in kinds
    assert "response.custom_tool_call_input.done" in kinds
    # What the backend was offered: both tools as functions, the custom one with a string input.
    sent = demo.messages[-1]
    assert sent[0]["role"] == "system" and sent[1]["role"] == "system"  # instructions, developer

    # Next turn, stateless (store: false): Codex sends everything back, reasoning sealed.
    follow_up = {
        **CODEX_REQUEST,
        "input": CODEX_REQUEST["input"] + [reasoning, *calls,
            {"type": "function_call_output", "call_id": calls[0]["call_id"], "output": "README.md"},
            {"type": "custom_tool_call_output", "call_id": calls[1]["call_id"], "output": "Done!"}],
    }
    second = httpx.post(url + "/responses", json=follow_up, timeout=20)
    assert_valid(validate_responses_sse(second.content))
    history = demo.messages[-1]
    assistant = next(m for m in history if m["role"] == "assistant")
    assert assistant["reasoning_content"] == reasoning["summary"][0]["text"]  # restored from the seal
    assert [c["function"]["name"] for c in assistant["tool_calls"]] == ["shell", "apply_patch"]
    answer = sse_events(second.content)[-1]["response"]["output"][-1]["content"][0]["text"]
    assert answer == "The tool shell returned: README.md. The tool apply_patch returned: Done!."

    forged = {**follow_up, "input": [*follow_up["input"]]}
    forged["input"][3] = {**reasoning, "encrypted_content": reasoning["encrypted_content"][:-4] + "AAAA"}
    rejected = httpx.post(url + "/responses", json=forged, timeout=20)
    assert rejected.status_code == 400
    assert rejected.json()["error"]["param"] == "input[3].encrypted_content"
