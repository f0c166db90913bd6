"""Responses request -> chat request mapping and validation (compat_asgi.core.requests)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compat_asgi.core.options import RequestOptions
from compat_asgi.core.reasoning import ReasoningSeal
from compat_asgi.core.requests import CUSTOM_TOOL_PARAMETERS, TranslatedRequest, responses_to_chat
from compat_asgi.errors import InvalidRequest


def body(**fields: Any) -> dict[str, Any]:
    return {"model": "m", "input": "hi", **fields}


def chat(**fields: Any) -> dict[str, Any]:
    """Expected chat body for ``body(**...)`` with defaults filled."""
    out: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    out.update(fields)
    out.setdefault("stream", False)
    return out


def messages_for(items: Any, **fields: Any) -> list[dict[str, Any]]:
    result = responses_to_chat({"model": "m", "input": items, **fields}).chat["messages"]
    assert isinstance(result, list)
    return result


def reject(req: object, options: RequestOptions | None = None) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as info:
        responses_to_chat(req, options or RequestOptions())
    err = info.value
    assert err.status == 400
    assert err.type == "invalid_request_error"
    return err


# --------------------------------------------------------------------------
# Basics


def test_minimal_request() -> None:
    result = responses_to_chat({"model": "m", "input": "hello"})
    assert isinstance(result, TranslatedRequest)
    assert result.chat == {
        "model": "m",
        "messages": [{"role": "user", "content": "hello"}],
        "stream": False,
    }
    assert result.stream is False


def test_stream_asks_for_usage() -> None:
    result = responses_to_chat(body(stream=True))
    assert result.stream is True
    assert result.chat == chat(stream=True, stream_options={"include_usage": True})


# Echoed the same whatever the request says.
ECHO_CONSTANTS = [
    ("prompt_cache_retention", None),
    ("presence_penalty", 0.0),
    ("frequency_penalty", 0.0),
    ("prompt", None),
    ("access_programs", None),
    ("image", None),
    ("moderation", None),
    ("input_transformations", None),
    ("prompt_cache_options", None),
    ("prompt_cache_diagnostics", None),
    ("tool_usage", None),
]


def test_echo_defaults_in_openai_order() -> None:
    echo = responses_to_chat(body()).echo
    assert list(echo.items()) == [
        ("instructions", None),
        ("max_output_tokens", None),
        ("model", "m"),
        ("parallel_tool_calls", True),
        ("previous_response_id", None),
        ("reasoning", {"effort": None, "summary": None}),
        ("store", True),
        ("temperature", 1.0),
        ("text", {"format": {"type": "text"}}),
        ("tool_choice", "auto"),
        ("tools", []),
        ("top_p", 1.0),
        ("truncation", "disabled"),
        ("user", None),
        ("metadata", {}),
        ("background", False),
        ("service_tier", "default"),
        ("top_logprobs", 0),
        ("max_tool_calls", None),
        ("prompt_cache_key", None),
        ("safety_identifier", None),
        ("conversation", None),
        *ECHO_CONSTANTS,
    ]




def test_echo_carries_request_values() -> None:
    tools = [{"type": "function", "name": "f", "parameters": {"type": "object"}, "strict": True}]
    echo = responses_to_chat(
        body(
            instructions="be brief",
            max_output_tokens=50,
            parallel_tool_calls=False,
            previous_response_id="resp_1",
            reasoning={"effort": "low"},
            store=False,
            temperature=0,
            text={"format": {"type": "json_object"}, "verbosity": "low"},
            tool_choice={"type": "function", "name": "f"},
            tools=tools,
            top_p=0.5,
            truncation="auto",
            user="u1",
            metadata={"a": "b"},
            background=False,
            service_tier="flex",
            top_logprobs=3,
            max_tool_calls=4,
            prompt_cache_key="k",
            safety_identifier="s",
        )
    ).echo
    assert echo == {
        "instructions": "be brief",
        "max_output_tokens": 50,
        "model": "m",
        "parallel_tool_calls": False,
        "previous_response_id": "resp_1",
        "reasoning": {"effort": "low", "summary": None},
        "store": False,
        "temperature": 0.0,
        "text": {"format": {"type": "json_object"}, "verbosity": "low"},
        "tool_choice": {"type": "function", "name": "f"},
        "tools": tools,
        "top_p": 0.5,
        "truncation": "auto",
        "user": "u1",
        "metadata": {"a": "b"},
        "background": False,
        "service_tier": "flex",
        "top_logprobs": 3,
        "max_tool_calls": 4,
        "prompt_cache_key": "k",
        "safety_identifier": "s",
        "conversation": None,
        **dict(ECHO_CONSTANTS),
    }
    assert isinstance(echo["temperature"], float)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("conv_1", {"id": "conv_1"}), ({"id": "conv_2"}, {"id": "conv_2"}), (None, None)],
)
def test_conversation_normalised(value: Any, expected: Any) -> None:
    assert responses_to_chat(body(conversation=value)).echo["conversation"] == expected


def test_null_means_default() -> None:
    nulls = {
        key: None
        for key in (
            "instructions", "tools", "tool_choice", "parallel_tool_calls", "text",
            "max_output_tokens", "temperature", "top_p", "user", "reasoning", "metadata",
            "top_logprobs", "service_tier", "prompt_cache_key", "safety_identifier", "store",
            "include", "truncation", "previous_response_id", "conversation", "stream",
            "stream_options", "max_tool_calls", "prompt", "background", "prompt_cache_retention",
        )
    }
    result = responses_to_chat(body(**nulls))
    assert result.chat == chat()
    assert result.echo == responses_to_chat(body()).echo


def test_input_not_mutated() -> None:
    req = body(
        input=[
            {"type": "reasoning", "summary": [{"type": "summary_text", "text": "t"}]},
            {"role": "assistant", "content": "a"},
            {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c", "output": "o"},
        ],
        tools=[{"type": "function", "name": "f"}],
        text={"format": {"type": "json_schema", "name": "n", "schema": {}}},
    )
    before = copy.deepcopy(req)
    responses_to_chat(req)
    assert req == before


# --------------------------------------------------------------------------
# Scalar parameters


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"max_output_tokens": 7}, {"max_tokens": 7}),
        ({"temperature": 0.2}, {"temperature": 0.2}),
        ({"temperature": 2}, {"temperature": 2}),
        ({"top_p": 0}, {"top_p": 0}),
        ({"user": "u"}, {"user": "u"}),
        ({"reasoning": {"effort": "high", "summary": "auto"}}, {"reasoning_effort": "high"}),
        ({"reasoning": {"effort": "minimal"}}, {"reasoning_effort": "minimal"}),
        ({"reasoning": {"summary": "concise"}}, {}),
        ({"top_logprobs": 5}, {"logprobs": True, "top_logprobs": 5}),
        ({"top_logprobs": 0}, {}),
        ({"metadata": {"k": "v"}}, {}),
        ({"store": False}, {}),
        ({"include": ["reasoning.encrypted_content"]}, {}),
        ({"truncation": "auto"}, {}),
        ({"service_tier": "auto"}, {}),
        ({"prompt_cache_key": "p", "safety_identifier": "s"}, {}),
        ({"previous_response_id": "resp_1"}, {}),
        ({"conversation": {"id": "c"}}, {}),
        ({"max_tool_calls": 3}, {}),
        ({"background": False}, {}),
        ({"prompt_cache_retention": "24h"}, {}),
        ({"text": {"verbosity": "high"}}, {}),
        ({"text": {"format": {"type": "text"}}}, {}),
        ({"parallel_tool_calls": True}, {}),  # no tools: not forwarded
        ({"tool_choice": "none"}, {}),  # no tools: not forwarded
    ],
)
def test_scalar_mapping(fields: dict[str, Any], expected: dict[str, Any]) -> None:
    assert responses_to_chat(body(**fields)).chat == chat(**expected)


def test_stream_options_accepted_with_stream() -> None:
    result = responses_to_chat(body(stream=True, stream_options={"include_obfuscation": False}))
    assert result.chat["stream_options"] == {"include_usage": True}


def test_reasoning_echo_merges_request() -> None:
    echo = responses_to_chat(body(reasoning={"summary": "detailed"})).echo
    assert echo["reasoning"] == {"effort": None, "summary": "detailed"}


def test_instructions_become_leading_system_message() -> None:
    result = responses_to_chat(body(instructions="rules", input=[{"role": "user", "content": "q"}]))
    assert result.chat["messages"] == [
        {"role": "system", "content": "rules"},
        {"role": "user", "content": "q"},
    ]


# --------------------------------------------------------------------------
# Messages


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        ({"role": "user", "content": "hi"}, {"role": "user", "content": "hi"}),
        ({"type": "message", "role": "user", "content": "hi"}, {"role": "user", "content": "hi"}),
        ({"role": "system", "content": "s"}, {"role": "system", "content": "s"}),
        ({"role": "developer", "content": "d"}, {"role": "system", "content": "d"}),
        ({"role": "assistant", "content": "a"}, {"role": "assistant", "content": "a"}),
        (
            {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "a"}, {"type": "input_text", "text": "b"}],
            },
            {"role": "user", "content": "a\nb"},
        ),
        (
            {
                "type": "message",
                "id": "msg_1",
                "status": "completed",
                "role": "assistant",
                "content": [
                    {"type": "output_text", "text": "x", "annotations": []},
                    {"type": "refusal", "refusal": "no"},
                ],
            },
            {"role": "assistant", "content": "x\nno"},
        ),
        (
            {"role": "developer", "content": [{"type": "input_text", "text": "d"}]},
            {"role": "system", "content": "d"},
        ),
        ({"role": "user", "content": []}, {"role": "user", "content": ""}),
        (
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "what is this"},
                    {"type": "input_image", "image_url": "https://x/y.png"},
                    {"type": "input_image", "image_url": "data:image/png;base64,AAAA", "detail": "low"},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is this"},
                    {"type": "image_url", "image_url": {"url": "https://x/y.png"}},
                    {
                        "type": "image_url",
                        "image_url": {"url": "data:image/png;base64,AAAA", "detail": "low"},
                    },
                ],
            },
        ),
        (
            {
                "role": "user",
                "content": [
                    {"type": "input_file", "file_data": "data:application/pdf;base64,AA", "filename": "a.pdf"},
                    {"type": "input_file", "file_data": "data:text/plain;base64,AA"},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "file", "file": {"file_data": "data:application/pdf;base64,AA", "filename": "a.pdf"}},
                    {"type": "file", "file": {"file_data": "data:text/plain;base64,AA"}},
                ],
            },
        ),
    ],
)
def test_message_items(item: dict[str, Any], expected: dict[str, Any]) -> None:
    assert messages_for([item]) == [expected]


# --------------------------------------------------------------------------
# Function calls


def fc(call_id: str, name: str = "f", arguments: str = "{}", **extra: Any) -> dict[str, Any]:
    return {"type": "function_call", "call_id": call_id, "name": name, "arguments": arguments, **extra}


def tc(call_id: str, name: str = "f", arguments: str = "{}") -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def fco(call_id: str, output: Any) -> dict[str, Any]:
    return {"type": "function_call_output", "call_id": call_id, "output": output}


def test_function_call_round_trip() -> None:
    items = [
        {"role": "user", "content": "weather?"},
        fc("call_1", "get_weather", '{"city":"Paris"}', id="fc_1", status="completed"),
        fco("call_1", "sunny"),
    ]
    assert messages_for(items) == [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": None, "tool_calls": [tc("call_1", "get_weather", '{"city":"Paris"}')]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ]


def test_parallel_function_calls_merge_into_one_assistant_message() -> None:
    items = [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "calling"},
        fc("c1", "a"),
        fc("c2", "b"),
        fc("c3", "c"),
        fco("c1", "1"),
        fco("c2", "2"),
        fco("c3", "3"),
        fc("c4", "d"),
        fco("c4", "4"),
    ]
    assert messages_for(items) == [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "calling", "tool_calls": [tc("c1", "a"), tc("c2", "b"), tc("c3", "c")]},
        {"role": "tool", "tool_call_id": "c1", "content": "1"},
        {"role": "tool", "tool_call_id": "c2", "content": "2"},
        {"role": "tool", "tool_call_id": "c3", "content": "3"},
        {"role": "assistant", "content": None, "tool_calls": [tc("c4", "d")]},
        {"role": "tool", "tool_call_id": "c4", "content": "4"},
    ]


def test_function_call_after_user_message_starts_new_assistant_message() -> None:
    items = [{"role": "assistant", "content": "a"}, {"role": "user", "content": "u"}, fc("c1")]
    assert messages_for(items) == [
        {"role": "assistant", "content": "a"},
        {"role": "user", "content": "u"},
        {"role": "assistant", "content": None, "tool_calls": [tc("c1")]},
    ]


def test_unmatched_function_call_output_is_forwarded() -> None:
    assert messages_for([fco("call_from_history", "x")]) == [
        {"role": "tool", "tool_call_id": "call_from_history", "content": "x"}
    ]


def test_function_call_output_parts() -> None:
    items = [
        fc("c1"),
        fc("c2"),
        fco("c1", [{"type": "input_text", "text": "a"}, {"type": "input_text", "text": "b"}]),
        fco("c2", [{"type": "input_image", "image_url": "https://i/1.png"}, {"type": "input_text", "text": "see"}]),
        {"role": "user", "content": "next"},
    ]
    assert messages_for(items) == [
        {"role": "assistant", "content": None, "tool_calls": [tc("c1"), tc("c2")]},
        {"role": "tool", "tool_call_id": "c1", "content": "a\nb"},
        {"role": "tool", "tool_call_id": "c2", "content": "see"},
        # chat tool messages are text-only: images follow the tool run as a user turn
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://i/1.png"}}]},
        {"role": "user", "content": "next"},
    ]


def test_function_call_output_image_at_end_of_input() -> None:
    items = [fc("c1"), fco("c1", [{"type": "input_image", "image_url": "u", "detail": "high"}])]
    assert messages_for(items)[-1] == {
        "role": "user",
        "content": [{"type": "image_url", "image_url": {"url": "u", "detail": "high"}}],
    }


# --------------------------------------------------------------------------
# Reasoning items


def rs(*summary: str, content: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    item: dict[str, Any] = {
        "type": "reasoning",
        "id": "rs_1",
        "summary": [{"type": "summary_text", "text": s} for s in summary],
        **extra,
    }
    if content is not None:
        item["content"] = [{"type": "reasoning_text", "text": c} for c in content]
    return item


def test_reasoning_attached_to_next_assistant_message() -> None:
    items = [{"role": "user", "content": "q"}, rs("s1", "s2"), {"role": "assistant", "content": "a"}]
    assert messages_for(items) == [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "a", "reasoning_content": "s1\ns2"},
    ]


def test_reasoning_content_preferred_over_summary() -> None:
    items = [rs("summary", content=["raw thought"], encrypted_content="gAAA"), fc("c1")]
    assert messages_for(items) == [
        {"role": "assistant", "content": None, "tool_calls": [tc("c1")], "reasoning_content": "raw thought"},
    ]


def test_reasoning_between_merged_calls_joins_the_same_message() -> None:
    items = [rs("r1"), {"role": "assistant", "content": "a"}, rs("r2"), fc("c1")]
    assert messages_for(items) == [
        {"role": "assistant", "content": "a", "reasoning_content": "r1\nr2", "tool_calls": [tc("c1")]},
    ]


@pytest.mark.parametrize(
    "items",
    [
        [rs("lost"), {"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}],
        [{"role": "user", "content": "u"}, rs("lost")],
        [fc("c1"), rs("lost"), fco("c1", "x"), {"role": "assistant", "content": "a"}],
    ],
)
def test_reasoning_without_following_assistant_turn_is_dropped(items: list[Any]) -> None:
    assert all("reasoning_content" not in m for m in messages_for(items))


def test_empty_reasoning_adds_nothing() -> None:
    items = [rs(encrypted_content="opaque"), {"role": "assistant", "content": "a"}]
    assert messages_for(items) == [{"role": "assistant", "content": "a"}]


# --------------------------------------------------------------------------
# Tools, tool_choice, text.format

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    "strict": True,
}
CHAT_WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        "strict": True,
    },
}


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"tools": [WEATHER]}, {"tools": [CHAT_WEATHER]}),
        (
            {"tools": [{"type": "function", "name": "ping", "parameters": None, "strict": None}]},
            {"tools": [{"type": "function", "function": {"name": "ping"}}]},
        ),
        ({"tools": []}, {}),
        (
            {"tools": [WEATHER], "tool_choice": "required", "parallel_tool_calls": False},
            {"tools": [CHAT_WEATHER], "tool_choice": "required", "parallel_tool_calls": False},
        ),
        ({"tools": [WEATHER], "tool_choice": "auto"}, {"tools": [CHAT_WEATHER], "tool_choice": "auto"}),
        ({"tools": [WEATHER], "tool_choice": "none"}, {"tools": [CHAT_WEATHER], "tool_choice": "none"}),
        (
            # A named tool becomes "required" over that tool alone: llama.cpp reads only a
            # string tool_choice and falls back to "auto" for the object form.
            {
                "tools": [{"type": "function", "name": "ping"}, WEATHER],
                "tool_choice": {"type": "function", "name": "get_weather"},
            },
            {"tools": [CHAT_WEATHER], "tool_choice": "required"},
        ),
        (
            {"text": {"format": {"type": "json_schema", "name": "out", "schema": {"type": "object"}}}},
            {"response_format": {"type": "json_schema", "json_schema": {"name": "out", "schema": {"type": "object"}}}},
        ),
        (
            {
                "text": {
                    "format": {
                        "type": "json_schema",
                        "name": "out",
                        "schema": {"type": "object"},
                        "strict": True,
                        "description": "d",
                    },
                    "verbosity": "medium",
                }
            },
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "out", "schema": {"type": "object"}, "description": "d", "strict": True},
                }
            },
        ),
        ({"text": {"format": {"type": "json_object"}}}, {"response_format": {"type": "json_object"}}),
    ],
)
def test_tools_and_formats(fields: dict[str, Any], expected: dict[str, Any]) -> None:
    assert responses_to_chat(body(**fields)).chat == chat(**expected)


# --------------------------------------------------------------------------
# Rejections: exact param


def item_body(*items: Any) -> dict[str, Any]:
    return body(input=list(items))


REJECTIONS: list[tuple[str, object, str | None]] = [
    ("not an object", [1, 2], None),
    ("string body", "x", None),
    ("missing model", {"input": "x"}, "model"),
    ("empty model", body(model=""), "model"),
    ("model type", body(model=3), "model"),
    ("missing input", {"model": "m"}, "input"),
    ("input null", body(input=None), "input"),
    ("input type", body(input={"role": "user"}), "input"),
    ("instructions list", body(instructions=[{"role": "system", "content": "x"}]), "instructions"),
    ("prompt", body(prompt={"id": "pmpt_1"}), "prompt"),
    ("background", body(background=True), "background"),
    ("background type", body(background="yes"), "background"),
    ("context_management", body(context_management=[{"type": "compaction"}]), "context_management"),
    ("stream type", body(stream="true"), "stream"),
    ("temperature type", body(temperature="1"), "temperature"),
    ("temperature bool", body(temperature=True), "temperature"),
    ("temperature range", body(temperature=2.5), "temperature"),
    ("temperature negative", body(temperature=-0.1), "temperature"),
    ("temperature nan", body(temperature=float("nan")), "temperature"),
    ("top_p range", body(top_p=1.5), "top_p"),
    ("max_output_tokens zero", body(max_output_tokens=0), "max_output_tokens"),
    ("max_output_tokens float", body(max_output_tokens=5.0), "max_output_tokens"),
    ("max_output_tokens bool", body(max_output_tokens=True), "max_output_tokens"),
    ("top_logprobs range", body(top_logprobs=21), "top_logprobs"),
    ("top_logprobs negative", body(top_logprobs=-1), "top_logprobs"),
    ("max_tool_calls type", body(max_tool_calls="3"), "max_tool_calls"),
    ("user type", body(user=1), "user"),
    ("store type", body(store="no"), "store"),
    ("parallel_tool_calls type", body(parallel_tool_calls=1), "parallel_tool_calls"),
    ("metadata type", body(metadata=[]), "metadata"),
    ("metadata value", body(metadata={"a": 1}), "metadata.a"),
    ("metadata too many", body(metadata={str(i): "v" for i in range(17)}), "metadata"),
    ("metadata key long", body(metadata={"k" * 65: "v"}), "metadata"),
    ("metadata value long", body(metadata={"k": "v" * 513}), "metadata.k"),
    ("service_tier", body(service_tier="gold"), "service_tier"),
    ("truncation", body(truncation="middle"), "truncation"),
    ("truncation unhashable", body(truncation=["auto"]), "truncation"),
    ("include type", body(include="x"), "include"),
    ("include item", body(include=["ok", 3]), "include[1]"),
    ("previous_response_id type", body(previous_response_id=5), "previous_response_id"),
    ("conversation type", body(conversation=5), "conversation"),
    ("conversation id", body(conversation={}), "conversation.id"),
    ("conversation and previous", body(conversation="c", previous_response_id="r"), "conversation"),
    ("stream_options type", body(stream_options=True), "stream_options"),
    ("stream_options field", body(stream_options={"include_obfuscation": "no"}), "stream_options.include_obfuscation"),
    ("prompt_cache_retention", body(prompt_cache_retention="forever"), "prompt_cache_retention"),
    ("reasoning type", body(reasoning="high"), "reasoning"),
    ("reasoning effort", body(reasoning={"effort": "extreme"}), "reasoning.effort"),
    ("reasoning summary", body(reasoning={"summary": 1}), "reasoning.summary"),
    # text.format
    ("text type", body(text="json"), "text"),
    ("text.format type", body(text={"format": "json"}), "text.format"),
    ("text.format.type", body(text={"format": {"type": "xml"}}), "text.format.type"),
    ("text.format missing type", body(text={"format": {}}), "text.format.type"),
    ("json_schema name", body(text={"format": {"type": "json_schema", "schema": {}}}), "text.format.name"),
    ("json_schema schema", body(text={"format": {"type": "json_schema", "name": "n"}}), "text.format.schema"),
    (
        "json_schema schema type",
        body(text={"format": {"type": "json_schema", "name": "n", "schema": "{}"}}),
        "text.format.schema",
    ),
    (
        "json_schema strict",
        body(text={"format": {"type": "json_schema", "name": "n", "schema": {}, "strict": "yes"}}),
        "text.format.strict",
    ),
    ("verbosity", body(text={"verbosity": "loud"}), "text.verbosity"),
    # tools
    ("tools type", body(tools={"type": "function"}), "tools"),
    ("tool not object", body(tools=["f"]), "tools[0]"),
    ("tool missing type", body(tools=[{"name": "f"}]), "tools[0].type"),
    ("tool missing name", body(tools=[WEATHER, {"type": "function"}]), "tools[1].name"),
    ("tool name type", body(tools=[{"type": "function", "name": 5}]), "tools[0].name"),
    ("tool custom format", body(tools=[{"type": "custom", "name": "p", "format": {"type": "x"}}]), "tools[0].format.type"),
    ("tool custom grammar", body(tools=[{"type": "custom", "name": "p", "format": {"type": "grammar"}}]), "tools[0].format.definition"),
    ("tool duplicate name", body(tools=[WEATHER, WEATHER]), "tools[1].name"),
    ("tool parameters", body(tools=[{"type": "function", "name": "f", "parameters": []}]), "tools[0].parameters"),
    ("tool strict", body(tools=[{"type": "function", "name": "f", "strict": "y"}]), "tools[0].strict"),
    ("tool description", body(tools=[{"type": "function", "name": "f", "description": 1}]), "tools[0].description"),
    # tool_choice
    ("tool_choice value", body(tools=[WEATHER], tool_choice="any"), "tool_choice"),
    ("tool_choice type", body(tools=[WEATHER], tool_choice=1), "tool_choice"),
    (
        "tool_choice allowed_tools",
        body(tools=[WEATHER], tool_choice={"type": "allowed_tools", "mode": "auto", "tools": []}),
        "tool_choice.tools",
    ),
    (
        "tool_choice allowed_tools unknown",
        body(tools=[WEATHER], tool_choice={"type": "allowed_tools", "tools": [{"type": "function", "name": "x"}]}),
        "tool_choice.tools[0].name",
    ),
    ("tool_choice unknown fn", body(tools=[WEATHER], tool_choice={"type": "function", "name": "x"}), "tool_choice.name"),
    ("tool_choice fn without tools", body(tool_choice={"type": "function", "name": "x"}), "tool_choice.name"),
    ("tool_choice required without tools", body(tool_choice="required"), "tool_choice"),
    ("tool_choice missing name", body(tools=[WEATHER], tool_choice={"type": "function"}), "tool_choice.name"),
    # input items
    ("item not object", item_body({"role": "user", "content": "x"}, "hi"), "input[1]"),
    ("item type not string", item_body({"type": 3}), "input[0].type"),
    ("item no type", item_body({"foo": 1}), "input[0].type"),
    ("item custom_tool_call input", item_body({"type": "custom_tool_call", "call_id": "c", "name": "n", "input": 1}), "input[0].input"),
    ("item_reference", item_body({"type": "item_reference", "id": "msg_1"}), "input[0]"),
    ("item_reference shorthand", item_body({"role": "user", "content": "x"}, {"id": "msg_1"}), "input[1]"),
    ("message missing role", item_body({"type": "message", "content": "x"}), "input[0].role"),
    ("message bad role", item_body({"role": "tool", "content": "x"}), "input[0].role"),
    ("message role type", item_body({"role": ["user"], "content": "x"}), "input[0].role"),
    ("message missing content", item_body({"role": "user"}), "input[0].content"),
    ("message content type", item_body({"role": "user", "content": 5}), "input[0].content"),
    ("message content null", item_body({"role": "user", "content": None}), "input[0].content"),
    ("part not object", item_body({"role": "user", "content": ["x"]}), "input[0].content[0]"),
    ("part missing type", item_body({"role": "user", "content": [{"text": "x"}]}), "input[0].content[0].type"),
    ("part unknown type", item_body({"role": "user", "content": [{"type": "input_audio"}]}), "input[0].content[0].type"),
    ("part text type", item_body({"role": "user", "content": [{"type": "input_text", "text": 1}]}), "input[0].content[0].text"),
    ("part text missing", item_body({"role": "user", "content": [{"type": "input_text"}]}), "input[0].content[0].text"),
    (
        "image in assistant",
        item_body({"role": "assistant", "content": [{"type": "input_image", "image_url": "u"}]}),
        "input[0].content[0].type",
    ),
    (
        "file in system",
        item_body({"role": "system", "content": [{"type": "input_file", "file_data": "d"}]}),
        "input[0].content[0].type",
    ),
    ("refusal in user", item_body({"role": "user", "content": [{"type": "refusal", "refusal": "r"}]}), "input[0].content[0].type"),
    (
        "refusal text type",
        item_body({"role": "assistant", "content": [{"type": "refusal", "refusal": None}]}),
        "input[0].content[0].refusal",
    ),
    (
        "image file_id",
        item_body(
            {"role": "user", "content": "a"},
            {"role": "assistant", "content": "b"},
            {"role": "user", "content": [{"type": "input_image", "file_id": "file_1", "detail": "auto"}]},
        ),
        "input[2].content[0].file_id",
    ),
    (
        "image_url type",
        item_body({"role": "user", "content": [{"type": "input_text", "text": "t"}, {"type": "input_image", "image_url": 3}]}),
        "input[0].content[1].image_url",
    ),
    ("image nothing", item_body({"role": "user", "content": [{"type": "input_image"}]}), "input[0].content[0].image_url"),
    (
        "image detail",
        item_body({"role": "user", "content": [{"type": "input_image", "image_url": "u", "detail": "ultra"}]}),
        "input[0].content[0].detail",
    ),
    (
        "file file_url",
        item_body({"role": "user", "content": [{"type": "input_file", "file_url": "https://x/a.pdf"}]}),
        "input[0].content[0].file_url",
    ),
    ("file file_id", item_body({"role": "user", "content": [{"type": "input_file", "file_id": "file_1"}]}), "input[0].content[0].file_id"),
    ("file nothing", item_body({"role": "user", "content": [{"type": "input_file"}]}), "input[0].content[0].file_data"),
    (
        "file filename",
        item_body({"role": "user", "content": [{"type": "input_file", "file_data": "d", "filename": 1}]}),
        "input[0].content[0].filename",
    ),
    ("fc call_id", item_body({"type": "function_call", "name": "f", "arguments": "{}"}), "input[0].call_id"),
    ("fc name", item_body({"type": "function_call", "call_id": "c", "arguments": "{}"}), "input[0].name"),
    ("fc arguments", item_body({"type": "function_call", "call_id": "c", "name": "f", "arguments": {}}), "input[0].arguments"),
    ("fco call_id", item_body({"type": "function_call_output", "output": "x"}), "input[0].call_id"),
    ("fco output missing", item_body({"type": "function_call_output", "call_id": "c"}), "input[0].output"),
    ("fco output type", item_body({"type": "function_call_output", "call_id": "c", "output": 5}), "input[0].output"),
    (
        "fco output part",
        item_body({"type": "function_call_output", "call_id": "c", "output": [{"type": "output_text", "text": "x"}]}),
        "input[0].output[0].type",
    ),
    (
        "fco output image file_id",
        item_body({"type": "function_call_output", "call_id": "c", "output": [{"type": "input_image", "file_id": "f"}]}),
        "input[0].output[0].file_id",
    ),
    ("reasoning summary type", item_body({"type": "reasoning", "summary": "x"}), "input[0].summary"),
    (
        "reasoning summary part",
        item_body({"type": "reasoning", "summary": [{"type": "reasoning_text", "text": "x"}]}),
        "input[0].summary[0].type",
    ),
    (
        "reasoning content text",
        item_body({"type": "reasoning", "summary": [], "content": [{"type": "reasoning_text"}]}),
        "input[0].content[0].text",
    ),
    (
        "reasoning encrypted type",
        item_body({"type": "reasoning", "summary": [], "encrypted_content": 1}),
        "input[0].encrypted_content",
    ),
]


@pytest.mark.parametrize(("req", "param"), [(r, p) for _, r, p in REJECTIONS], ids=[n for n, _, _ in REJECTIONS])
def test_rejections(req: object, param: str | None) -> None:
    err = reject(req)
    assert err.param == param
    assert err.message
    assert err.to_dict()["error"]["param"] == param


USER = {"role": "user", "content": "x"}
# Refused only in strict mode: by default accepted, left unused and reported.
STRICT_REJECTIONS = [
    ("unknown key", body(foo=1), "foo", "foo"),
    ("chat-only key", body(messages=[]), "messages", "messages"),
    ("tool web_search", body(tools=[WEATHER, {"type": "web_search"}]), "tools[1].type", "tools[web_search]"),
    ("tool file_search", body(tools=[{"type": "file_search", "vector_store_ids": []}]), "tools[0].type", "tools[file_search]"),
    ("tool mcp", body(tools=[{"type": "mcp", "server_label": "x"}]), "tools[0].type", "tools[mcp]"),
    ("tool unknown type", body(tools=[{"type": "teleport"}]), "tools[0].type", "tools[teleport]"),
    ("tool unknown field", body(tools=[{**WEATHER, "colour": "red"}]), "tools[0].colour", "tools[function].colour"),
    ("namespace hosted member", body(tools=[{"type": "namespace", "name": "n", "description": "", "tools": [{"type": "web_search"}]}]),
     "tools[0].tools[0].type", "tools[web_search]"),
    ("tool_choice hosted", body(tools=[WEATHER], tool_choice={"type": "web_search_preview"}), "tool_choice", "tool_choice[web_search_preview]"),
    ("allowed hosted", body(tools=[WEATHER], tool_choice={"type": "allowed_tools", "tools": [{"type": "web_search"}, {"type": "function", "name": "get_weather"}]}),
     "tool_choice.tools[0].type", "tool_choice[web_search]"),
    ("item unknown type", item_body({"type": "banana"}, USER), "input[0].type", "input[banana]"),
    ("item hosted type", item_body({"type": "web_search_call", "id": "ws_1", "status": "completed", "action": {}}, USER),
     "input[0].type", "input[web_search_call]"),
    ("item unknown field", item_body({"role": "user", "content": "x", "mood": "good"}), "input[0].mood", "input[message].mood"),
]


@pytest.mark.parametrize(
    ("req", "param", "name"), [(r, p, n) for _, r, p, n in STRICT_REJECTIONS], ids=[i for i, *_ in STRICT_REJECTIONS]
)
def test_strict_mode_refuses_what_is_otherwise_ignored_and_reported(req: dict[str, Any], param: str, name: str) -> None:
    err = reject(req, RequestOptions(strict=True))
    assert err.param == param
    assert err.code in ("unknown_parameter", "unsupported_value")
    out = responses_to_chat(req)
    assert name in out.ignored
    assert out.chat["model"] == "m"


def test_input_left_empty_by_ignored_items_is_a_400_naming_them() -> None:
    err = reject(item_body({"type": "banana"}, {"type": "web_search_call", "id": "ws_1"}))
    assert err.param == "input"
    assert "input[banana]" in err.message and "input[web_search_call]" in err.message


def test_unknown_key_message_matches_openai() -> None:
    err = reject(body(frequency_penalty=0.5), RequestOptions(strict=True))
    assert err.message == "Unrecognized request argument supplied: frequency_penalty"
    assert err.param == "frequency_penalty"


def test_type_error_message_names_expectation() -> None:
    err = reject(body(temperature="hot"))
    assert "expected a number" in err.message
    assert "got a string" in err.message
    assert err.code == "invalid_type"


def test_unsupported_tool_message_names_type() -> None:
    err = reject(body(tools=[{"type": "web_search"}]), RequestOptions(strict=True))
    assert "web_search" in err.message
    assert "not supported" in err.message


def test_item_reference_message() -> None:
    err = reject(item_body({"type": "item_reference", "id": "msg_1"}))
    assert "item_reference requires a response store" in err.message


def test_missing_parameter_code() -> None:
    assert reject({"model": "m"}).code == "missing_required_parameter"


# --------------------------------------------------------------------------
# Fuzz: nothing but InvalidRequest ever escapes

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**64), max_value=2**64)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8)
    | st.sampled_from(
        [
            "message", "function_call", "function_call_output", "reasoning", "item_reference",
            "input_text", "output_text", "refusal", "input_image", "input_file", "summary_text",
            "reasoning_text", "function", "json_schema", "json_object", "text", "user",
            "assistant", "system", "developer", "auto", "none", "required", "f",
        ]
    )
)
KEYS = st.sampled_from(
    [
        "type", "role", "content", "text", "name", "call_id", "arguments", "output", "id",
        "summary", "image_url", "file_id", "file_data", "file_url", "filename", "detail",
        "parameters", "strict", "format", "schema", "effort", "refusal", "description",
    ]
) | st.text(max_size=6)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(KEYS, children, max_size=5),
    max_leaves=25,
)
TOP_KEYS = st.sampled_from(
    [
        "model", "input", "instructions", "tools", "tool_choice", "parallel_tool_calls", "text",
        "max_output_tokens", "temperature", "top_p", "user", "reasoning", "metadata",
        "top_logprobs", "service_tier", "store", "include", "truncation", "previous_response_id",
        "conversation", "stream", "stream_options", "max_tool_calls", "prompt", "background",
        "prompt_cache_key", "safety_identifier", "prompt_cache_retention",
    ]
)


def check(req: object) -> None:
    try:
        result = responses_to_chat(req)
    except InvalidRequest as err:
        assert err.status == 400
        assert err.param is None or isinstance(err.param, str)
        return
    assert isinstance(result.chat["messages"], list)
    assert result.chat["stream"] is result.stream


FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(json_values)
def test_fuzz_whole_body(value: Any) -> None:
    check(value)


@FUZZ
@given(st.dictionaries(TOP_KEYS, json_values, max_size=6))
def test_fuzz_known_keys(fields: dict[str, Any]) -> None:
    check({"model": "m", "input": "x", **fields})


@FUZZ
@given(json_values)
def test_fuzz_input(value: Any) -> None:
    check({"model": "m", "input": value})


@FUZZ
@given(st.lists(json_values, max_size=5))
def test_fuzz_input_items(items: list[Any]) -> None:
    check({"model": "m", "input": items})


@FUZZ
@given(json_values, st.sampled_from(["user", "assistant", "system", "developer"]))
def test_fuzz_message_content(content: Any, role: str) -> None:
    check({"model": "m", "input": [{"type": "message", "role": role, "content": content}]})


@FUZZ
@given(st.lists(st.dictionaries(KEYS, json_values, max_size=5), max_size=4))
def test_fuzz_content_parts(parts: list[Any]) -> None:
    check({"model": "m", "input": [{"role": "user", "content": parts}]})
    check({"model": "m", "input": [{"type": "function_call_output", "call_id": "c", "output": parts}]})


@FUZZ
@given(json_values)
def test_fuzz_tools(value: Any) -> None:
    check({"model": "m", "input": "x", "tools": value})
    check({"model": "m", "input": "x", "tools": [value]})
    check({"model": "m", "input": "x", "tools": [{"type": "function", "name": "f"}], "tool_choice": value})
    check({"model": "m", "input": "x", "text": {"format": value}})


# --------------------------------------------------------------------------
# Agent-client features: custom tools, allowed_tools, hosted tools, sealed reasoning

PATCH = {"type": "custom", "name": "apply_patch", "description": "Apply a patch.",
         "format": {"type": "grammar", "syntax": "lark", "definition": "start: /.+/"}}


def test_custom_tool_becomes_a_one_string_function_and_its_calls_round_trip() -> None:
    out = responses_to_chat(body(
        tools=[PATCH, WEATHER],
        input=[
            {"role": "user", "content": "fix it"},
            {"type": "custom_tool_call", "call_id": "c1", "name": "apply_patch", "input": "*** Begin Patch\n"},
            {"type": "custom_tool_call_output", "call_id": "c1", "output": "done"},
        ],
    ))
    function = out.chat["tools"][0]["function"]
    assert function["name"] == "apply_patch"
    assert function["parameters"] == CUSTOM_TOOL_PARAMETERS
    assert function["description"] == "Apply a patch.\n\nThe input must match this lark grammar:\nstart: /.+/"
    assert out.chat["messages"][1] == {
        "role": "assistant", "content": None,
        "tool_calls": [{"id": "c1", "type": "function",
                        "function": {"name": "apply_patch", "arguments": '{"input":"*** Begin Patch\\n"}'}}],
    }
    assert out.chat["messages"][2] == {"role": "tool", "tool_call_id": "c1", "content": "done"}
    assert out.output.custom_tools == frozenset({"apply_patch"})
    assert out.echo["tools"] == [PATCH, WEATHER]


def test_named_custom_tool_choice_and_allowed_tools_subset() -> None:
    named = responses_to_chat(body(tools=[PATCH, WEATHER], tool_choice={"type": "custom", "name": "apply_patch"}))
    assert named.chat["tool_choice"] == "required"
    assert [t["function"]["name"] for t in named.chat["tools"]] == ["apply_patch"]
    assert named.echo["tool_choice"] == {"type": "custom", "name": "apply_patch"}
    allowed = responses_to_chat(body(
        tools=[PATCH, WEATHER],
        tool_choice={"type": "allowed_tools", "mode": "required", "tools": [{"type": "function", "name": WEATHER["name"]}]},
    ))
    assert allowed.chat["tool_choice"] == "required"
    assert [t["function"]["name"] for t in allowed.chat["tools"]] == [WEATHER["name"]]
    assert allowed.echo["tool_choice"]["type"] == "allowed_tools"


def test_hosted_tools_are_dropped_and_reported_refused_when_strict() -> None:
    request = body(tools=[{"type": "web_search"}, WEATHER])
    with pytest.raises(InvalidRequest) as caught:
        responses_to_chat(request, RequestOptions(strict=True))
    assert caught.value.param == "tools[0].type" and "web_search" in caught.value.message
    for options in (RequestOptions(), RequestOptions(drop_unsupported_tools=True),
                    RequestOptions(strict=True, drop_unsupported_tools=True)):
        dropped = responses_to_chat(request, options)
        assert [t["function"]["name"] for t in dropped.chat["tools"]] == [WEATHER["name"]]
        assert dropped.echo["tools"] == request["tools"]
        assert dropped.ignored == ("tools[web_search]",)


def test_sealed_reasoning_is_restored_and_forgeries_are_refused() -> None:
    seal = ReasoningSeal(b"k" * 32)
    blob = seal.seal("the full private chain of thought")
    options = RequestOptions(reasoning_seal=seal)
    out = responses_to_chat(body(
        include=["reasoning.encrypted_content"],
        input=[
            {"role": "user", "content": "q"},
            {"type": "reasoning", "summary": [{"type": "summary_text", "text": "short"}], "encrypted_content": blob},
            {"role": "assistant", "content": "a"},
            {"role": "user", "content": "q2"},
        ],
    ), options)
    assert out.chat["messages"][1] == {"role": "assistant", "content": "a", "reasoning_content": "the full private chain of thought"}
    assert out.output.reasoning_seal is seal
    assert responses_to_chat(body(), options).output.reasoning_seal is None  # not asked for
    forged = blob[:-3] + ("AAA" if not blob.endswith("AAA") else "BBB")
    with pytest.raises(InvalidRequest) as caught:
        responses_to_chat(item_body({"type": "reasoning", "summary": [], "encrypted_content": forged}), options)
    assert caught.value.param == "input[0].encrypted_content"
    assert caught.value.code == "invalid_encrypted_content"


def test_reasoning_summary_request_sets_summary_output() -> None:
    assert responses_to_chat(body(reasoning={"summary": "auto"})).output.reasoning_summary
    assert not responses_to_chat(body(reasoning={"effort": "low"})).output.reasoning_summary
