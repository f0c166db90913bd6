"""Chat request -> Responses request mapping and validation (compat_asgi.core.chat_requests)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compat_asgi.core.chat_requests import TranslatedChatRequest, chat_to_responses
from compat_asgi.core.options import RequestOptions
from compat_asgi.errors import InvalidRequest

HI = [{"role": "user", "content": "hi"}]
HI_ITEMS = [{"type": "message", "role": "user", "content": "hi"}]


def body(**fields: Any) -> dict[str, Any]:
    return {"model": "m", "messages": HI, **fields}


def expected(**fields: Any) -> dict[str, Any]:
    """Expected Responses body for ``body(**...)``: defaults, then ``fields``, store/stream last."""
    out: dict[str, Any] = {"model": "m", "input": HI_ITEMS, **fields}
    out["store"] = out.pop("store", False)
    out["stream"] = out.pop("stream", False)
    return out


def items_for(messages: Any) -> list[dict[str, Any]]:
    result = chat_to_responses({"model": "m", "messages": messages}).responses["input"]
    assert isinstance(result, list)
    return result


def reject(req: object, options: RequestOptions | None = None) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as info:
        chat_to_responses(req, options or RequestOptions())
    err = info.value
    assert err.status == 400
    assert err.type == "invalid_request_error"
    return err


# --------------------------------------------------------------------------
# Basics


def test_minimal_request() -> None:
    result = chat_to_responses({"model": "m", "messages": HI})
    assert result == TranslatedChatRequest(
        responses={"model": "m", "input": HI_ITEMS, "store": False, "stream": False},
        stream=False,
        include_usage=False,
        model="m",
    )


def test_stream_and_include_usage() -> None:
    result = chat_to_responses(body(stream=True, stream_options={"include_usage": True}))
    assert result.stream is True and result.include_usage is True
    assert result.responses == expected(stream=True)
    assert chat_to_responses(body(stream=True)).include_usage is False


def test_store_is_forwarded_when_asked_and_off_otherwise() -> None:
    assert chat_to_responses(body()).responses["store"] is False
    assert chat_to_responses(body(store=True)).responses["store"] is True
    assert chat_to_responses(body(store=None)).responses["store"] is False


def test_every_mapped_parameter() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    result = chat_to_responses(
        body(
            tools=[
                {"type": "function", "function": {"name": "f", "description": "d", "parameters": schema, "strict": True}},
                {"type": "function", "function": {"name": "g"}},
            ],
            tool_choice={"type": "function", "function": {"name": "g"}},
            parallel_tool_calls=False,
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "out", "schema": schema, "strict": True, "description": "dd"},
            },
            verbosity="low",
            reasoning_effort="high",
            max_completion_tokens=99,
            temperature=0.5,
            top_p=0.9,
            logprobs=True,
            top_logprobs=3,
            user="u",
            metadata={"k": "v"},
            service_tier="flex",
            prompt_cache_key="pk",
            prompt_cache_retention="24h",
            safety_identifier="s",
            stream=True,
            stream_options={"include_usage": False},
            n=1,
            stop=None,
            seed=None,
            presence_penalty=0,
            frequency_penalty=0.0,
            logit_bias={},
            modalities=["text"],
        )
    )
    assert result.responses == expected(
        tools=[
            {"type": "function", "name": "f", "description": "d", "parameters": schema, "strict": True},
            {"type": "function", "name": "g", "parameters": {"type": "object", "properties": {}}, "strict": False},
        ],
        tool_choice={"type": "function", "name": "g"},
        parallel_tool_calls=False,
        text={
            "format": {"type": "json_schema", "name": "out", "schema": schema, "description": "dd", "strict": True},
            "verbosity": "low",
        },
        reasoning={"effort": "high"},
        max_output_tokens=99,
        temperature=0.5,
        top_p=0.9,
        top_logprobs=3,
        include=["message.output_text.logprobs"],
        user="u",
        prompt_cache_key="pk",
        safety_identifier="s",
        metadata={"k": "v"},
        service_tier="flex",
        prompt_cache_retention="24h",
        stream=True,
    )
    assert list(result.responses)[-2:] == ["store", "stream"]


@pytest.mark.parametrize(
    ("fields", "expected_fields"),
    [
        ({"max_tokens": 10}, {"max_output_tokens": 10}),
        ({"max_tokens": 10, "max_completion_tokens": 20}, {"max_output_tokens": 20}),
        ({"response_format": {"type": "text"}}, {}),
        ({"response_format": {"type": "json_object"}}, {"text": {"format": {"type": "json_object"}}}),
        ({"logprobs": True}, {"include": ["message.output_text.logprobs"]}),
        ({"logprobs": False, "top_logprobs": 0}, {}),
        ({"tool_choice": "none"}, {}),  # meaningless without tools, as in requests.py
        ({"tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": "required"},
         {"tools": [{"type": "function", "name": "f", "parameters": {"type": "object", "properties": {}}, "strict": False}],
          "tool_choice": "required"}),
        ({"moderation": {"model": "omni"}}, {"moderation": {"model": "omni"}}),
        ({"stop": "", "logit_bias": {"50256": 0}}, {}),
        ({"stop": []}, {}),
    ],
)
def test_parameter_table(fields: dict[str, Any], expected_fields: dict[str, Any]) -> None:
    assert chat_to_responses(body(**fields)).responses == expected(**expected_fields)


# --------------------------------------------------------------------------
# Messages


def test_system_developer_user_and_tool_messages() -> None:
    items = items_for(
        [
            {"role": "system", "content": "sys"},
            {"role": "developer", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
            {"role": "user", "content": "q", "name": "alice"},
            {"role": "tool", "tool_call_id": "call_1", "content": "42"},
            {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "x"}]},
        ]
    )
    assert items == [
        {"type": "message", "role": "system", "content": "sys"},
        {"type": "message", "role": "developer", "content": "a\nb"},
        {"type": "message", "role": "user", "content": "q"},
        {"type": "function_call_output", "call_id": "call_1", "output": "42"},
        {"type": "function_call_output", "call_id": "call_2", "output": "x"},
    ]


def test_user_parts_map_to_input_parts() -> None:
    items = items_for(
        [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "look"},
                    {"type": "image_url", "image_url": {"url": "https://x/i.png", "detail": "low"}},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}},
                    {"type": "file", "file": {"file_data": "data:application/pdf;base64,AA", "filename": "a.pdf"}},
                    {"type": "file", "file": {"file_id": "file-1"}},
                ],
            }
        ]
    )
    assert items == [
        {
            "type": "message",
            "role": "user",
            "content": [
                {"type": "input_text", "text": "look"},
                {"type": "input_image", "image_url": "https://x/i.png", "detail": "low"},
                {"type": "input_image", "image_url": "data:image/png;base64,AA", "detail": "auto"},
                {"type": "input_file", "file_data": "data:application/pdf;base64,AA", "filename": "a.pdf"},
                {"type": "input_file", "file_id": "file-1"},
            ],
        }
    ]


def test_assistant_text_and_tool_calls() -> None:
    items = items_for(
        [
            {"role": "user", "content": "q"},
            {
                "role": "assistant",
                "content": "Let me check.",
                "tool_calls": [
                    {"id": "call_a", "type": "function", "function": {"name": "f", "arguments": '{"x":1}'}},
                    {"id": "call_b", "type": "function", "function": {"name": "g", "arguments": "{}"}},
                ],
            },
            {"role": "tool", "tool_call_id": "call_a", "content": "1"},
            {"role": "tool", "tool_call_id": "call_b", "content": "2"},
            {"role": "assistant", "content": [{"type": "text", "text": "done"}, {"type": "refusal", "refusal": "no"}]},
        ]
    )
    assert items == [
        {"type": "message", "role": "user", "content": "q"},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Let me check."}]},
        {"type": "function_call", "call_id": "call_a", "name": "f", "arguments": '{"x":1}'},
        {"type": "function_call", "call_id": "call_b", "name": "g", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_a", "output": "1"},
        {"type": "function_call_output", "call_id": "call_b", "output": "2"},
        {
            "type": "message",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "done"}, {"type": "refusal", "refusal": "no"}],
        },
    ]


@pytest.mark.parametrize("content", [None, ""])
def test_tool_call_turn_without_text_has_no_empty_message(content: Any) -> None:
    call = {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    items = items_for([{"role": "user", "content": "q"}, {"role": "assistant", "content": content, "tool_calls": [call]}])
    assert items[1:] == [{"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"}]


def test_assistant_refusal_field_and_empty_content() -> None:
    assert items_for([{"role": "assistant", "content": None, "refusal": "nope"}]) == [
        {"type": "message", "role": "assistant", "content": [{"type": "refusal", "refusal": "nope"}]}
    ]
    assert items_for([{"role": "assistant", "content": ""}]) == [
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": ""}]}
    ]


# --------------------------------------------------------------------------
# Rejections: each names its param and code


@pytest.mark.parametrize(
    ("req", "param", "code"),
    [
        ([], None, "invalid_type"),
        ({"messages": HI}, "model", "missing_required_parameter"),
        ({"model": "", "messages": HI}, "model", "invalid_value"),
        ({"model": 3, "messages": HI}, "model", "invalid_type"),
        ({"model": "m"}, "messages", "missing_required_parameter"),
        ({"model": "m", "messages": []}, "messages", "empty_array"),
        ({"model": "m", "messages": "hi"}, "messages", "invalid_type"),
        ({"model": "m", "messages": [1]}, "messages[0]", "invalid_type"),
        ({"model": "m", "messages": [{"content": "x"}]}, "messages[0].role", "missing_required_parameter"),
        ({"model": "m", "messages": [{"role": "boss", "content": "x"}]}, "messages[0].role", "invalid_value"),
        ({"model": "m", "messages": [{"role": "function", "name": "f", "content": "x"}]},
         "messages[0].role", "unsupported_value"),
        ({"model": "m", "messages": [{"role": "user"}]}, "messages[0].content", "missing_required_parameter"),
        ({"model": "m", "messages": [{"role": "user", "content": 5}]}, "messages[0].content", "invalid_type"),
        ({"model": "m", "messages": [{"role": "user", "content": [{"type": "input_text", "text": "x"}]}]},
         "messages[0].content[0].type", "invalid_value"),
        ({"model": "m", "messages": [{"role": "user", "content": [{"type": "text"}]}]},
         "messages[0].content[0].text", "missing_required_parameter"),
        ({"model": "m", "messages": HI + [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "image_url"}]}]},
         "messages[1].content[1].image_url", "missing_required_parameter"),
        ({"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": "http://x"}]}]},
         "messages[0].content[0].image_url", "invalid_type"),
        ({"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "u", "detail": "max"}}]}]},
         "messages[0].content[0].image_url.detail", "invalid_value"),
        ({"model": "m", "messages": [{"role": "user", "content": [{"type": "file", "file": {"filename": "a"}}]}]},
         "messages[0].content[0].file.file_data", "missing_required_parameter"),
        ({"model": "m", "messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]},
         "messages[0].content[0].type", "unsupported_value"),
        ({"model": "m", "messages": [{"role": "system", "content": [{"type": "image_url", "image_url": {"url": "u"}}]}]},
         "messages[0].content[0].type", "invalid_value"),
        ({"model": "m", "messages": [{"role": "tool", "content": "x"}]},
         "messages[0].tool_call_id", "missing_required_parameter"),
        ({"model": "m", "messages": [{"role": "assistant"}]}, "messages[0].content", "missing_required_parameter"),
        ({"model": "m", "messages": [{"role": "assistant", "content": None, "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": "{}"}}]}]},
         "messages[0].tool_calls[0].id", "missing_required_parameter"),
        ({"model": "m", "messages": [{"role": "assistant", "content": None, "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f"}}]}]},
         "messages[0].tool_calls[0].function.arguments", "missing_required_parameter"),
        ({"model": "m", "messages": [{"role": "assistant", "content": "x", "audio": {"id": "a"}}]},
         "messages[0].audio", "unsupported_parameter"),
        ({"model": "m", "messages": [{"role": "user", "content": "x", "name": 3}]}, "messages[0].name", "invalid_type"),
        (body(n=2), "n", "unsupported_value"),
        (body(n=0), "n", "integer_below_min_value"),
        (body(stop="END"), "stop", "unsupported_parameter"),
        (body(stop=["a"]), "stop", "unsupported_parameter"),
        (body(stop=[1]), "stop[0]", "invalid_type"),
        (body(seed=0), "seed", "unsupported_parameter"),
        (body(seed="1"), "seed", "invalid_type"),
        (body(presence_penalty=0.5), "presence_penalty", "unsupported_parameter"),
        (body(frequency_penalty=-1), "frequency_penalty", "unsupported_parameter"),
        (body(frequency_penalty=3), "frequency_penalty", "invalid_value"),
        (body(logit_bias={"1": 5}), "logit_bias", "unsupported_parameter"),
        (body(logit_bias={"1": "x"}), "logit_bias.1", "invalid_type"),
        (body(logit_bias={"1": 500}), "logit_bias.1", "invalid_value"),
        (body(audio={"voice": "alloy"}), "audio", "unsupported_parameter"),
        (body(functions=[{"name": "f"}]), "functions", "unsupported_parameter"),
        (body(function_call="auto"), "function_call", "unsupported_parameter"),
        (body(modalities=["text", "audio"]), "modalities[1]", "unsupported_value"),
        (body(top_logprobs=2), "top_logprobs", "invalid_value"),
        (body(logprobs=True, top_logprobs=21), "top_logprobs", "integer_above_max_value"),
        (body(temperature=3), "temperature", "invalid_value"),
        (body(max_tokens=0), "max_tokens", "integer_below_min_value"),
        (body(max_completion_tokens="9"), "max_completion_tokens", "invalid_type"),
        (body(reasoning_effort="huge"), "reasoning_effort", "invalid_value"),
        (body(stream="yes"), "stream", "invalid_type"),
        (body(stream_options={"include_usage": 1}), "stream_options.include_usage", "invalid_type"),
        (body(tools={}), "tools", "invalid_type"),
        (body(tools=[{"type": "function"}]), "tools[0].function", "missing_required_parameter"),
        (body(tools=[{"type": "function", "function": {"name": ""}}]), "tools[0].function.name", "invalid_value"),
        (body(tools=[{"type": "custom", "custom": {"name": "c"}}]), "tools[0].type", "unsupported_value"),
        (body(tools=[{"type": "web_search"}]), "tools[0].type", "invalid_value"),
        (body(tool_choice="required"), "tool_choice", "invalid_value"),
        (body(tool_choice="any"), "tool_choice", "invalid_value"),
        (body(tools=[{"type": "function", "function": {"name": "f"}}], tool_choice={"type": "function", "function": {"name": "g"}}),
         "tool_choice.function.name", "invalid_value"),
        (body(tool_choice={"type": "allowed_tools"}), "tool_choice", "unsupported_value"),
        (body(response_format={"type": "yaml"}), "response_format.type", "invalid_value"),
        (body(response_format={"type": "json_schema"}), "response_format.json_schema", "missing_required_parameter"),
        (body(response_format={"type": "json_schema", "json_schema": {"name": "x"}}),
         "response_format.json_schema.schema", "missing_required_parameter"),
        (body(metadata={"k": 1}), "metadata.k", "invalid_type"),
    ],
)
def test_rejections_name_their_param(req: Any, param: str | None, code: str) -> None:
    err = reject(req)
    assert (err.param, err.code) == (param, code)


def test_unknown_argument_message_matches_openai() -> None:
    err = reject(body(frobnicate=True), RequestOptions(strict=True))
    assert err.message == "Unrecognized request argument supplied: frobnicate"
    assert (err.param, err.code) == ("frobnicate", "unknown_parameter")


def test_unknown_arguments_are_left_out_and_reported_unless_strict() -> None:
    out = chat_to_responses(body(bogus=1, client_metadata={"a": "b"}))
    assert out.ignored == ("bogus", "client_metadata")
    assert "bogus" not in out.responses and "client_metadata" not in out.responses
    assert chat_to_responses(body()).ignored == ()


def test_unsupported_parameter_message_names_the_field_and_the_upstream() -> None:
    message = reject(body(stop="x")).message
    assert "'stop'" in message and "upstream" in message


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
            "system", "developer", "user", "assistant", "tool", "function", "text", "image_url",
            "file", "input_audio", "refusal", "json_schema", "json_object", "auto", "none",
            "required", "f", "low", "high", "custom", "allowed_tools",
        ]
    )
)
KEYS = st.sampled_from(
    [
        "type", "role", "content", "text", "name", "tool_call_id", "tool_calls", "id", "function",
        "arguments", "image_url", "url", "detail", "file", "file_data", "file_id", "filename",
        "refusal", "audio", "parameters", "strict", "description", "json_schema", "schema",
        "include_usage",
    ]
) | st.text(max_size=6)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(KEYS, children, max_size=5),
    max_leaves=25,
)
TOP_KEYS = st.sampled_from(
    [
        "model", "messages", "audio", "frequency_penalty", "function_call", "functions", "logit_bias",
        "logprobs", "max_completion_tokens", "max_tokens", "metadata", "modalities", "moderation", "n",
        "parallel_tool_calls", "prediction", "presence_penalty", "prompt_cache_key",
        "prompt_cache_retention", "reasoning_effort", "response_format", "safety_identifier", "seed",
        "service_tier", "stop", "store", "stream", "stream_options", "temperature", "tool_choice",
        "tools", "top_logprobs", "top_p", "user", "verbosity", "web_search_options",
    ]
)
ROLES = st.sampled_from(["system", "developer", "user", "assistant", "tool", "function"])


def check(req: object) -> None:
    try:
        result = chat_to_responses(req)
    except InvalidRequest as err:
        assert err.status == 400
        assert err.param is None or isinstance(err.param, str)
        return
    assert isinstance(result.responses["input"], list) and result.responses["input"]
    assert result.responses["stream"] is result.stream
    assert isinstance(result.include_usage, bool)


FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(json_values)
def test_fuzz_whole_body(value: Any) -> None:
    check(value)


@FUZZ
@given(st.dictionaries(TOP_KEYS, json_values, max_size=6))
def test_fuzz_known_keys(fields: dict[str, Any]) -> None:
    check({"model": "m", "messages": HI, **fields})


@FUZZ
@given(json_values)
def test_fuzz_messages(value: Any) -> None:
    check({"model": "m", "messages": value})
    check({"model": "m", "messages": [value]})


@FUZZ
@given(ROLES, st.dictionaries(KEYS, json_values, max_size=5))
def test_fuzz_message_fields(role: str, fields: dict[str, Any]) -> None:
    check({"model": "m", "messages": [{**fields, "role": role}]})


@FUZZ
@given(ROLES, st.lists(st.dictionaries(KEYS, json_values, max_size=5), max_size=4))
def test_fuzz_content_parts(role: str, parts: list[Any]) -> None:
    check({"model": "m", "messages": [{"role": role, "content": parts, "tool_call_id": "c"}]})


@FUZZ
@given(json_values)
def test_fuzz_tools_and_formats(value: Any) -> None:
    check(body(tools=value))
    check(body(tools=[value]))
    check(body(tools=[{"type": "function", "function": value}]))
    check(body(tools=[{"type": "function", "function": {"name": "f"}}], tool_choice=value))
    check(body(response_format=value))
    check(body(response_format={"type": "json_schema", "json_schema": value}))
    check({"model": "m", "messages": [{"role": "assistant", "content": None, "tool_calls": value}]})
    check({"model": "m", "messages": [{"role": "assistant", "content": None, "tool_calls": [value]}]})
