"""Streams in the shapes real chat backends send, where the backend cannot run here.

Each fixture is rebuilt from a stream published in the backend's issue tracker
(the source is named above it; ids, names and text shortened): the quirks are
the backend's, not ours. llama.cpp itself runs for real in test_real_llama.py.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from compat_asgi.core.ids import CountingIds
from compat_asgi.core.responses import new_response
from compat_asgi.core.sse import encode_event
from compat_asgi.core.streams import ChatToResponses
from compat_asgi.validate import assert_valid, validate_responses_sse

ECHO = {"model": "m", "tools": [], "tool_choice": "auto", "parallel_tool_calls": True}


def sse(*chunks: dict[str, Any], done: bool = True) -> bytes:
    body = b"".join(b"data: " + orjson.dumps(c) + b"\n\n" for c in chunks)
    return body + (b"data: [DONE]\n\n" if done else b"")


def translate(raw: bytes) -> dict[str, Any]:
    translator = ChatToResponses(new_response(ECHO, "resp_1", 1700000000), CountingIds())
    events = translator.start() + translator.feed_bytes(raw) + translator.close()
    assert_valid(validate_responses_sse(b"".join(encode_event(e) for e in events)))
    final: dict[str, Any] = events[-1]["response"]
    return final


def summary(response: dict[str, Any]) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    for item in response["output"]:
        if item["type"] == "function_call":
            out.append(("call", item["call_id"], item["name"], item["arguments"], item["status"]))
        elif item["type"] == "reasoning":
            out.append(("reasoning", item["content"][0]["text"], item["status"]))
        else:
            out.append(("message", item["content"][0]["text"], item["status"]))
    return out


# --- Ollama (OpenAI endpoint) -------------------------------------------------


def ollama(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"id": "chatcmpl-934", "object": "chat.completion.chunk", "created": 1721826100,
            "model": "llama3.1:8b", "system_fingerprint": "fp_ollama",
            "choices": [{"index": 0, "delta": {"role": "assistant", "content": "", **delta}, "finish_reason": finish}]}


def test_ollama_whole_calls_in_one_chunk_each_with_index() -> None:
    # github.com/sgl-project/sglang/issues/3387 (an Ollama capture): every call
    # arrives whole in one chunk, role and empty content repeated on each.
    raw = sse(
        ollama({"tool_calls": [{"id": "call_5fts6lp0", "index": 0, "type": "function",
                                "function": {"name": "listEvents", "arguments": "{}"}}]}),
        ollama({"tool_calls": [{"id": "call_hxhex5ur", "index": 1, "type": "function",
                                "function": {"name": "createEvent", "arguments": '{"name":"AGI Party"}'}}]}),
        ollama({}, "tool_calls"),
    )
    assert summary(translate(raw)) == [
        ("call", "call_5fts6lp0", "listEvents", "{}", "completed"),
        ("call", "call_hxhex5ur", "createEvent", '{"name":"AGI Party"}', "completed"),
    ]


def test_ollama_calls_without_index() -> None:
    # github.com/ollama/ollama/issues/7881: before v0.4.7 the tool call deltas had no index.
    raw = sse(
        ollama({"tool_calls": [{"id": "call_ywcd0lhx", "type": "function",
                                "function": {"name": "get_current_weather", "arguments": '{"location":"Boston, MA"}'}}]}),
        ollama({}, "tool_calls"),
    )
    assert summary(translate(raw)) == [
        ("call", "call_ywcd0lhx", "get_current_weather", '{"location":"Boston, MA"}', "completed"),
    ]


def test_ollama_every_call_at_index_zero() -> None:
    # github.com/ollama/ollama/issues/15457 (Ollama 0.20): parallel calls all say index 0,
    # each with its own id; merging them by index would corrupt both.
    raw = sse(
        ollama({"tool_calls": [{"id": "abc123", "index": 0, "type": "function",
                                "function": {"name": "file_write", "arguments": '{"filePath":"hello.py"}'}}]}),
        ollama({"tool_calls": [{"id": "def456", "index": 0, "type": "function",
                                "function": {"name": "file_write", "arguments": '{"filePath":"world.py"}'}}]}),
        ollama({}, "tool_calls"),
    )
    assert summary(translate(raw)) == [
        ("call", "abc123", "file_write", '{"filePath":"hello.py"}', "completed"),
        ("call", "def456", "file_write", '{"filePath":"world.py"}', "completed"),
    ]


# --- vLLM -------------------------------------------------------------------


def vllm(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"id": "chatcmpl-95f70ae00614b063", "object": "chat.completion.chunk", "created": 1782114956,
            "model": "Qwen/Qwen3-8B", "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
def test_vllm_reasoning_under_either_name(field: str) -> None:
    # vLLM sent reasoning_content, newer releases send reasoning (as SGLang can):
    # github.com/BerriAI/litellm/pull/22568 describes both on the wire.
    raw = sse(
        vllm({"role": "assistant", "content": ""}),
        vllm({field: "Let me"}), vllm({field: " think."}),
        vllm({"content": "Hi"}), vllm({"content": "!"}),
        vllm({}, "stop"),
        {"id": "chatcmpl-95f70ae00614b063", "object": "chat.completion.chunk", "choices": [],
         "usage": {"prompt_tokens": 16, "total_tokens": 22, "completion_tokens": 6}},
    )
    response = translate(raw)
    assert summary(response) == [("reasoning", "Let me think.", "completed"), ("message", "Hi!", "completed")]
    assert response["usage"]["input_tokens"] == 16 and response["usage"]["output_tokens"] == 6


def test_vllm_tool_call_deltas_with_empty_ids_after_the_first() -> None:
    # github.com/InternLM/lmdeploy/issues/3412 (a vLLM capture): the name and id come
    # first with empty arguments, then argument pieces with id "" and no name.
    raw = sse(
        vllm({"role": "assistant", "content": ""}),
        vllm({"tool_calls": [{"index": 0, "id": "chatcmpl-tool-c9ZCzB9b9", "type": "function",
                              "function": {"name": "func_name", "arguments": ""}}]}),
        vllm({"tool_calls": [{"index": 0, "id": "", "type": "function", "function": {"arguments": '{"a": '}}]}),
        vllm({"tool_calls": [{"index": 0, "id": "", "type": "function", "function": {"arguments": "1}"}}]}),
        vllm({"tool_calls": [{"index": 1, "id": "chatcmpl-tool-HfzZPEVfQ", "type": "function",
                              "function": {"name": "func_name", "arguments": ""}}]}),
        vllm({"tool_calls": [{"index": 1, "id": "", "type": "function", "function": {"arguments": '{"a": 2}'}}]}),
        vllm({}, "tool_calls"),
    )
    assert summary(translate(raw)) == [
        ("call", "chatcmpl-tool-c9ZCzB9b9", "func_name", '{"a": 1}', "completed"),
        ("call", "chatcmpl-tool-HfzZPEVfQ", "func_name", '{"a": 2}', "completed"),
    ]


# --- SGLang -----------------------------------------------------------------


def sglang(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    full = {"role": None, "content": None, "reasoning_content": None, "tool_calls": None, **delta}
    return {"id": "fe1d2314cd94482a8820a506a5361d72", "object": "chat.completion.chunk", "created": 1747281101,
            "model": "Qwen/Qwen3", "choices": [{"index": 0, "delta": full, "logprobs": None,
                                                "finish_reason": finish, "matched_stop": None}], "usage": None}


def test_sglang_nulls_reasoning_and_repeated_ids_under_index_zero() -> None:
    # github.com/sgl-project/sglang/issues/6310 and github.com/InternLM/lmdeploy/issues/3412:
    # every delta field present as null, reasoning_content, calls numbered by id
    # ("0", "1") repeated on every argument delta, all under index 0.
    raw = sse(
        sglang({"reasoning_content": "Add both"}),
        sglang({"reasoning_content": " integers."}),
        sglang({"tool_calls": [{"index": 0, "id": "0", "type": "function", "function": {"name": "add", "arguments": ""}}]}),
        sglang({"tool_calls": [{"index": 0, "id": "0", "type": "function", "function": {"name": None, "arguments": '{"a": 1, "b": 2}'}}]}),
        sglang({"tool_calls": [{"index": 0, "id": "1", "type": "function", "function": {"name": "add", "arguments": ""}}]}),
        sglang({"tool_calls": [{"index": 0, "id": "1", "type": "function", "function": {"name": None, "arguments": '{"a": 3, "b": 4}'}}]}),
        sglang({}, "tool_calls"),
    )
    assert summary(translate(raw)) == [
        ("reasoning", "Add both integers.", "completed"),
        ("call", "0", "add", '{"a": 1, "b": 2}', "completed"),
        ("call", "1", "add", '{"a": 3, "b": 4}', "completed"),
    ]


# --- llama.cpp, the shapes the real-server tests cannot force -----------------


def test_llama_cpp_timings_and_usage_only_when_asked() -> None:
    # github.com/openai-php/client/issues/780 (a llama-server capture): every chunk
    # carries "timings"; usage comes in the final chunk only with include_usage.
    timings = {"cache_n": 7, "prompt_n": 10, "prompt_ms": 251.5, "predicted_n": 2, "predicted_ms": 40.1}

    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
        return {"choices": [{"finish_reason": finish, "index": 0, "delta": delta}], "created": 1781492230,
                "id": "chatcmpl-qC6laQHb", "model": "gemma.gguf", "system_fingerprint": "b9554-d403f00ec",
                "object": "chat.completion.chunk", "timings": timings, **extra}

    raw = sse(chunk({"role": "assistant", "content": None}), chunk({"reasoning_content": " it"}),
              chunk({"content": "Yes"}), chunk({}, "stop"))
    response = translate(raw)
    assert summary(response) == [("reasoning", " it", "completed"), ("message", "Yes", "completed")]
    assert response["usage"]["input_tokens"] == 0  # none sent: zeros, detail objects present
    assert response["usage"]["input_tokens_details"]["cached_tokens"] == 0
