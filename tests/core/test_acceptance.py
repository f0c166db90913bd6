"""What the server accepts: every input item and tool type of the installed
OpenAI SDK decided on purpose, unknown fields reported instead of refused,
namespaces flattened for the chat backend and restored on the way back, and
real Codex request bodies translated whole."""

from __future__ import annotations

import json
import typing
from pathlib import Path
from typing import Any

import orjson
import pytest
from openai.types.responses import (
    ResponseInputFileParam,
    ResponseInputImageParam,
    ResponseInputItemParam,
    ResponseInputTextParam,
    ResponseOutputRefusalParam,
    ResponseOutputTextParam,
    ToolParam,
)

from compat_asgi.core.ids import CountingIds
from compat_asgi.core.options import RequestOptions
from compat_asgi.core.requests import (
    _PART_FIELDS,
    HOSTED_ITEM_TYPES,
    HOSTED_TOOL_TYPES,
    INPUT_ITEM_TYPES,
    TOOL_TYPES,
    namespaced_name,
    responses_to_chat,
)
from compat_asgi.core.responses import chat_completion_to_response, new_response
from compat_asgi.core.streams import ChatToResponses
from compat_asgi.core.validation import IGNORED_MAX_NAME, IGNORED_MAX_NAMES, Ignored
from compat_asgi.errors import InvalidRequest
from compat_asgi.validate import assert_valid, validate_responses_sse

FIXTURES = Path(__file__).parent.parent / "fixtures" / "codex"
USER = {"role": "user", "content": "hi"}
STRICT = RequestOptions(strict=True)

WAIT = {
    "type": "function",
    "name": "wait_agent",
    "description": "Wait for agents.",
    "strict": False,
    "parameters": {"type": "object", "properties": {"timeout_ms": {"type": "integer"}}},
}
EXEC = {"type": "custom", "name": "exec", "description": "Run code."}
AGENTS = {"type": "namespace", "name": "multi_agent_v1", "description": "Sub-agents.", "tools": [WAIT]}


def body(**fields: Any) -> dict[str, Any]:
    return {"model": "m", "input": [USER], **fields}


def rejected(request: dict[str, Any], options: RequestOptions = STRICT) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as caught:
        responses_to_chat(request, options)
    return caught.value


# --------------------------------------------------------------------------
# Every member of the SDK unions is decided


def _type_literals(union: Any) -> list[str]:
    """The ``type`` literal of each TypedDict in an SDK union."""
    found: list[str] = []
    for member in typing.get_args(union):
        if typing.get_origin(member) is typing.Union:
            found += _type_literals(member)
            continue
        hint = typing.get_type_hints(member)["type"]
        while typing.get_origin(hint) is not typing.Literal:
            hint = typing.get_args(hint)[0]
        found += typing.get_args(hint)
    return found


SDK_ITEM_TYPES = _type_literals(ResponseInputItemParam)
SDK_TOOL_TYPES = _type_literals(ToolParam)


def test_every_sdk_input_item_and_tool_type_is_decided() -> None:
    # A new SDK type fails here until it is mapped or listed as hosted (and in the README).
    assert set(SDK_ITEM_TYPES) - (INPUT_ITEM_TYPES | HOSTED_ITEM_TYPES) == set()
    assert set(SDK_TOOL_TYPES) - (TOOL_TYPES | HOSTED_TOOL_TYPES) == set()
    assert not INPUT_ITEM_TYPES & HOSTED_ITEM_TYPES and not TOOL_TYPES & HOSTED_TOOL_TYPES


def test_readme_lists_the_decision_for_every_type() -> None:
    readme = (Path(__file__).parent.parent.parent / "README.md").read_text()
    section = readme.split("## What the server accepts", 1)[1].split("\n## ", 1)[0]
    for kind in sorted({*SDK_ITEM_TYPES, *SDK_TOOL_TYPES}):
        assert f"`{kind}`" in section, kind


@pytest.mark.parametrize("kind", sorted(set(SDK_ITEM_TYPES) & HOSTED_ITEM_TYPES))
def test_hosted_item_types_are_left_out_and_reported(kind: str) -> None:
    request = body(input=[USER, {"type": kind, "id": "x_1"}, {"role": "assistant", "content": "ok"}])
    out = responses_to_chat(request)
    assert out.chat["messages"] == [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok"}]
    assert out.ignored == (f"input[{kind}]",)
    err = rejected(request)
    assert err.param == "input[1].type" and err.code == "unsupported_value"


@pytest.mark.parametrize("kind", sorted(set(SDK_TOOL_TYPES) & HOSTED_TOOL_TYPES))
def test_hosted_tool_types_are_dropped_and_reported(kind: str) -> None:
    request = body(tools=[{"type": kind}, WAIT])
    out = responses_to_chat(request)
    assert [t["function"]["name"] for t in out.chat["tools"]] == ["wait_agent"]
    assert out.ignored == (f"tools[{kind}]",)
    assert out.echo["tools"][0] == {"type": kind}
    err = rejected(request)
    assert err.param == "tools[0].type" and kind in err.message


# --------------------------------------------------------------------------
# Unknown fields: accepted, reported, refused only when strict


def test_unknown_top_level_and_item_fields_are_reported_in_order() -> None:
    out = responses_to_chat(
        body(
            client_metadata={"session_id": "s"},
            input=[{**USER, "type": "message", "tone": "x"}],
            tools=[{**WAIT, "color": 1}],
        )
    )
    assert out.ignored == ("client_metadata", "tools[function].color", "input[message].tone")
    assert "client_metadata" not in out.chat
    err = rejected(body(client_metadata={}))
    assert (err.param, err.code) == ("client_metadata", "unknown_parameter")


def test_known_fields_with_wrong_values_are_still_refused_precisely() -> None:
    err = rejected(body(client_metadata={}, temperature="hot"), RequestOptions())
    assert (err.param, err.code) == ("temperature", "invalid_type")
    err = rejected(body(input=[{"role": "assistant", "content": "a", "phase": "middle"}]), RequestOptions())
    assert (err.param, err.code) == ("input[0].phase", "invalid_value")
    err = rejected(body(tools=[{"type": "namespace", "name": "n", "description": "", "tools": 3}]), RequestOptions())
    assert (err.param, err.code) == ("tools[0].tools", "invalid_type")


def test_ignored_names_are_bounded_and_escaped() -> None:
    ignored = Ignored()
    ignored.add("bad\r\nname: x" + "y" * 500)
    for i in range(IGNORED_MAX_NAMES + 5):
        ignored.add(f"k{i}")
    names = ignored.names
    assert len(names) == IGNORED_MAX_NAMES + 1 and names[-1] == "+6"
    assert names[0].startswith("bad__name__x") and len(names[0]) == IGNORED_MAX_NAME
    assert all(name.isascii() and "," not in name and " " not in name for name in names)
    out = responses_to_chat({"model": "m", "input": "x", **{f"f{i}\n": 1 for i in range(100)}})
    assert len(out.ignored) == IGNORED_MAX_NAMES + 1 and out.ignored[-1] == f"+{100 - IGNORED_MAX_NAMES}"


# --------------------------------------------------------------------------
# Items Codex sends


def test_client_made_ids_and_phase_are_accepted() -> None:
    out = responses_to_chat(
        body(
            input=[
                {"type": "message", "id": "msg_5f0b3a4c-1d2e-4f50-8a9b-0c1d2e3f4a5b", "role": "user", "content": "q"},
                {"type": "message", "role": "assistant", "phase": "commentary", "content": [{"type": "output_text", "text": "a"}]},
                {"type": "function_call", "id": "fc_1", "call_id": "c1", "name": "f", "arguments": "{}"},
                {"type": "function_call_output", "id": "fco_01a2-3b", "call_id": "c1", "output": "r"},
            ]
        ),
        STRICT,
    )
    assert out.ignored == ()
    assert [m["role"] for m in out.chat["messages"]] == ["user", "assistant", "tool"]
    assert out.chat["messages"][1]["tool_calls"][0]["id"] == "c1"


def test_namespace_tools_are_flattened_for_the_chat_backend() -> None:
    out = responses_to_chat(body(tools=[AGENTS, {**AGENTS, "name": "tools", "tools": [EXEC]}]), STRICT)
    names = [t["function"]["name"] for t in out.chat["tools"]]
    assert names == ["multi_agent_v1__wait_agent", "tools__exec"]
    assert out.chat["tools"][0]["function"]["parameters"] == WAIT["parameters"]
    assert out.output.namespaced == {
        "multi_agent_v1__wait_agent": ("multi_agent_v1", "wait_agent"),
        "tools__exec": ("tools", "exec"),
    }
    assert out.output.custom_tools == frozenset({"tools__exec"})
    # Echoed as sent, function tools with every key of OpenAI's FunctionTool.
    assert out.echo["tools"][0]["tools"][0] == WAIT
    named = responses_to_chat(body(tools=[AGENTS], tool_choice={"type": "function", "name": "wait_agent", "namespace": "multi_agent_v1"}))
    # Named as "required" over that tool alone (llama.cpp ignores an object tool_choice).
    assert named.chat["tool_choice"] == "required"
    assert [t["function"]["name"] for t in named.chat["tools"]] == ["multi_agent_v1__wait_agent"]


def test_namespaced_names_fit_chat_rules_and_are_stable() -> None:
    assert namespaced_name("crm", "lookup") == "crm__lookup"
    long = namespaced_name("mcp.server-with a very long name" * 2, "tool")
    assert len(long) <= 64 and long == namespaced_name("mcp.server-with a very long name" * 2, "tool")
    assert all(c.isalnum() or c in "_-" for c in long)
    assert long != namespaced_name("mcp.server-with a very long name" * 2, "tool2")


def test_namespaced_calls_in_history_reach_the_backend_under_the_flat_name() -> None:
    out = responses_to_chat(
        body(
            tools=[AGENTS],
            input=[
                USER,
                {"type": "function_call", "call_id": "c1", "name": "wait_agent", "namespace": "multi_agent_v1", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c1", "output": "done"},
            ],
        )
    )
    assert out.chat["messages"][1]["tool_calls"][0]["function"]["name"] == "multi_agent_v1__wait_agent"


def test_output_without_call_id_answers_the_latest_call_of_that_tool() -> None:
    out = responses_to_chat(
        body(
            input=[
                USER,
                {"type": "function_call", "call_id": "c1", "name": "wait_agent", "namespace": "multi_agent_v1", "arguments": "{}"},
                {"type": "function_call", "call_id": "c2", "name": "wait_agent", "arguments": "{}"},
                {"type": "function_call_output", "name": "wait_agent", "namespace": "multi_agent_v1", "output": "ns"},
                {"type": "custom_tool_call_output", "name": "wait_agent", "output": "plain"},
            ]
        ),
        STRICT,
    )
    tools = [(m["tool_call_id"], m["content"]) for m in out.chat["messages"] if m["role"] == "tool"]
    assert tools == [("c1", "ns"), ("c2", "plain")]


def test_output_of_a_call_not_in_history_gets_a_call_made_for_it() -> None:
    # Codex's goal flow: {"name": "goal_objective", "namespace": "agent"} and no call_id.
    out = responses_to_chat(
        body(input=[USER, {"type": "function_call_output", "name": "goal_objective", "namespace": "agent", "output": "say hi"}])
    )
    call, result = out.chat["messages"][1:]
    assert call["role"] == "assistant" and call["tool_calls"][0]["function"] == {"name": "agent__goal_objective", "arguments": "{}"}
    assert result == {"role": "tool", "tool_call_id": call["tool_calls"][0]["id"], "content": "say hi"}
    err = rejected(body(input=[USER, {"type": "function_call_output", "output": "x"}]), RequestOptions())
    assert (err.param, err.code) == ("input[1].call_id", "missing_required_parameter")


def test_additional_tools_items_offer_their_tools() -> None:
    extra = {"type": "additional_tools", "id": "at_1", "role": "developer", "tools": [AGENTS, {"type": "web_search"}]}
    out = responses_to_chat(body(tools=[{**WAIT, "name": "own"}], input=[extra, USER, extra]))
    assert [t["function"]["name"] for t in out.chat["tools"]] == ["own", "multi_agent_v1__wait_agent"]
    assert out.chat["messages"] == [{"role": "user", "content": "hi"}]
    assert out.ignored == ("tools[web_search]",)
    assert out.echo["tools"] == [{**WAIT, "name": "own"}]
    err = rejected({**body(input=[{**extra, "role": "user"}])}, RequestOptions())
    assert err.param == "input[0].role"


# --------------------------------------------------------------------------
# Calls of namespaced tools go back under their namespace


def _chunks(*deltas: dict[str, Any]) -> bytes:
    out = b""
    for i, delta in enumerate(deltas):
        finish = "tool_calls" if i == len(deltas) - 1 else None
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        out += b"data: " + orjson.dumps({"id": "c", "object": "chat.completion.chunk", "choices": [choice]}) + b"\n\n"
    return out + b"data: [DONE]\n\n"


def test_namespace_restored_on_streamed_and_whole_calls() -> None:
    translated = responses_to_chat(body(tools=[AGENTS, {**AGENTS, "name": "tools", "tools": [EXEC]}, WAIT], stream=True))
    calls = [
        ("call_1", "multi_agent_v1__wait_agent", '{"timeout_ms": 5}'),
        ("call_2", "tools__exec", '{"input": "ls"}'),
        ("call_3", "wait_agent", "{}"),
    ]
    deltas = [
        {"tool_calls": [{"index": i, "id": cid, "type": "function", "function": {"name": name, "arguments": args}}]}
        for i, (cid, name, args) in enumerate(calls)
    ]
    stream = ChatToResponses(new_response(translated.echo, "resp_1", 1), CountingIds(), options=translated.output)
    events = stream.start() + stream.feed_bytes(_chunks(*deltas)) + stream.close()
    wire = b"".join(b"event: %s\ndata: %s\n\n" % (e["type"].encode(), orjson.dumps(e)) for e in events)
    assert_valid(validate_responses_sse(wire))
    added = [e["item"] for e in events if e["type"] == "response.output_item.added"]
    done = [e["item"] for e in events if e["type"] == "response.output_item.done"]
    completion = {
        "choices": [
            {
                "finish_reason": "tool_calls",
                "message": {
                    "role": "assistant",
                    "tool_calls": [{"id": c, "type": "function", "function": {"name": n, "arguments": a}} for c, n, a in calls],
                },
            }
        ]
    }
    whole = chat_completion_to_response(completion, new_response(translated.echo, "resp_2", 1), CountingIds(), translated.output)
    for items in (added, done, stream.response["output"], whole["output"]):
        assert [(i["type"], i["name"], i.get("namespace")) for i in items] == [
            ("function_call", "wait_agent", "multi_agent_v1"),
            ("custom_tool_call", "exec", "tools"),
            ("function_call", "wait_agent", None),
        ]
    assert done[1]["input"] == "ls" and whole["output"][1]["input"] == "ls"
    assert "namespace" not in done[2]


# --------------------------------------------------------------------------
# What Codex 0.169.0 really sent


CAPTURED = sorted(FIXTURES.glob("*.codex-0.169.0.json"))


def test_fixtures_are_present() -> None:
    assert {p.name.split(".")[0] for p in CAPTURED} >= {
        "first_turn", "tool_output", "namespaced_call", "output_without_call_id", "additional_tools", "tool_search",
    }


@pytest.mark.parametrize("path", CAPTURED, ids=[p.name.split(".")[0] for p in CAPTURED])
def test_captured_codex_bodies_translate(path: Path) -> None:
    request = json.loads(path.read_text())
    out = responses_to_chat(request)
    assert out.chat["messages"] and out.stream
    names = [t["function"]["name"] for t in out.chat.get("tools", ())]
    assert len(names) == len(set(names)) and names
    assert all(len(n) <= 64 for n in names)
    assert "client_metadata" in out.ignored and "client_metadata" not in out.chat
    err = rejected(request)
    assert err.param == "client_metadata"
    offered = list(request.get("tools", ()))
    for item in request["input"]:
        if item.get("type") == "additional_tools":
            offered += item["tools"]
    expected_ignored = {"client_metadata"}
    for tool in offered:
        if tool["type"] == "namespace":
            for member in tool["tools"]:
                assert namespaced_name(tool["name"], member["name"]) in names
        elif tool["type"] in ("function", "custom"):
            assert tool["name"] in names
        else:
            expected_ignored.add(f"tools[{tool['type']}]")
    assert set(out.ignored) == expected_ignored
    messages = out.chat["messages"]
    if path.name.startswith("output_without_call_id"):
        assert messages[-2]["tool_calls"][0]["function"]["name"] == "agent__goal_objective"
        assert messages[-1]["role"] == "tool" and messages[-1]["content"] == "say hi"
    if path.name.startswith("namespaced_call"):
        assert messages[-2]["tool_calls"][0]["function"]["name"] == "multi_agent_v1__wait_agent"


# --------------------------------------------------------------------------
# Every key of the Response model, in every state


def test_response_object_has_every_sdk_key_in_every_state() -> None:
    from openai.types.responses import Response

    from compat_asgi.core.ids import FixedClock
    from compat_asgi.errors import UpstreamError

    keys = {field.alias or name for name, field in Response.model_fields.items()}
    unstated = {key: value for key, value in WAIT.items() if key != "strict"}
    translated = responses_to_chat(body(stream=True, tools=[unstated]))
    for outcome in ("completed", "incomplete", "failed"):
        stream = ChatToResponses(
            new_response(translated.echo, "resp_1", 100), CountingIds(), options=translated.output, clock=FixedClock(160)
        )
        events = stream.start()
        if outcome == "failed":
            events += stream.fail(UpstreamError("upstream went away"))
        else:
            finish = "stop" if outcome == "completed" else "length"
            chunk = {"id": "c", "choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": finish}]}
            events += stream.feed_bytes(b"data: " + orjson.dumps(chunk) + b"\n\ndata: [DONE]\n\n") + stream.close()
        objects = [e["response"] for e in events if "response" in e]
        assert [o["status"] for o in objects][-1] == outcome
        for obj in objects:
            assert keys - set(obj) == set()
            if obj["status"] != "failed":  # error.code is this server's own (upstream_error, ...)
                Response.model_validate(obj)
        assert objects[-1]["completed_at"] == (160 if outcome == "completed" else None)
        assert objects[0]["completed_at"] is None
        assert objects[-1]["tools"][0]["strict"] is None


# --------------------------------------------------------------------------
# Content parts: the SDK's fields, the rest reported


@pytest.mark.parametrize(
    ("kind", "typed"),
    [
        ("input_text", ResponseInputTextParam),
        ("output_text", ResponseOutputTextParam),
        ("refusal", ResponseOutputRefusalParam),
        ("input_image", ResponseInputImageParam),
        ("input_file", ResponseInputFileParam),
    ],
)
def test_content_part_fields_are_the_sdks(kind: str, typed: Any) -> None:
    # A field the SDK adds fails here until it is known (and used, or knowingly not).
    assert _PART_FIELDS[kind] == set(typing.get_type_hints(typed))


def test_unknown_content_part_fields_are_reported_or_refused() -> None:
    cached = {"type": "input_text", "text": "hi", "cache_control": {"type": "ephemeral"}}
    request = body(input=[{"role": "user", "content": [cached]}])
    out = responses_to_chat(request)
    assert out.chat["messages"] == [{"role": "user", "content": "hi"}]
    assert out.ignored == ("content[input_text].cache_control",)
    err = rejected(request)
    assert err.param == "input[0].content[0].cache_control" and err.code == "unknown_parameter"
    call = {"type": "function_call", "call_id": "c1", "name": "wait_agent", "arguments": "{}"}
    output = {"type": "function_call_output", "call_id": "c1", "output": [{**cached, "text": "done"}]}
    out = responses_to_chat(body(input=[USER, call, output], tools=[WAIT]))
    assert out.chat["messages"][-1] == {"role": "tool", "tool_call_id": "c1", "content": "done"}
    assert out.ignored == ("content[input_text].cache_control",)
    known = {"type": "input_text", "text": "hi", "prompt_cache_breakpoint": True}
    assert responses_to_chat(body(input=[{"role": "user", "content": [known]}])).ignored == ()
