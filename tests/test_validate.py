"""The protocol validator: a hand-built good stream passes, each broken rule is reported.

The good fixtures are cross-checked with the real OpenAI SDK accumulators, so
"valid" here means what the SDK (and so Codex / the Agents SDK) can consume.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import httpx
import openai
import orjson
import pydantic
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.lib.streaming.responses._responses import ResponseStreamState
from openai.types.chat import ChatCompletionChunk
from openai.types.responses import ResponseStreamEvent

from compat_asgi.validate import (
    Violation,
    assert_valid,
    parse_sse,
    validate_chat_completion,
    validate_chat_sse,
    validate_response_object,
    validate_responses_events,
    validate_responses_sse,
)

Event = dict[str, Any]

# --- Responses fixtures -----------------------------------------------------

RID = "resp_0001"
USAGE = {
    "input_tokens": 12,
    "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
    "output_tokens": 20,
    "output_tokens_details": {"reasoning_tokens": 0},
    "total_tokens": 32,
}
TOOLS = [
    {"type": "function", "name": n, "parameters": {"type": "object"}, "strict": False}
    for n in ("get_weather", "get_time")
]


def response(status: str = "in_progress", output: list[Event] | None = None, **extra: Any) -> Event:
    obj: Event = {
        "id": RID,
        "object": "response",
        "created_at": 1_700_000_000,
        "status": status,
        "model": "demo",
        "output": output or [],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": TOOLS,
        "usage": None,
        "incomplete_details": None,
        "error": None,
    }
    return obj | extra


def msg(status: str, text: str | None) -> Event:
    content = [] if text is None else [{"type": "output_text", "text": text, "annotations": []}]
    return {"id": "msg_1", "type": "message", "status": status, "role": "assistant", "content": content}


def call(n: int, status: str, arguments: str) -> Event:
    name = ("get_weather", "get_time")[n - 1]
    return {"id": f"fc_{n}", "type": "function_call", "status": status, "call_id": f"call_{n}", "name": name, "arguments": arguments}


ARGS = {1: ['{"city":', '"Paris"}'], 2: ['{"tz":', '"UTC"}']}


def good_events() -> list[Event]:
    """created, in_progress, a two-delta message, two parallel (interleaved) calls, completed."""
    m = {"item_id": "msg_1", "output_index": 0}
    part = {"type": "output_text", "text": "", "annotations": []}
    f1, f2 = {"item_id": "fc_1", "output_index": 1}, {"item_id": "fc_2", "output_index": 2}
    args1, args2 = "".join(ARGS[1]), "".join(ARGS[2])
    final = [msg("completed", "Hello, world"), call(1, "completed", args1), call(2, "completed", args2)]
    return [
        {"type": "response.created", "response": response()},
        {"type": "response.in_progress", "response": response()},
        {"type": "response.output_item.added", "output_index": 0, "item": msg("in_progress", None)},
        {"type": "response.content_part.added", **m, "content_index": 0, "part": part},
        {"type": "response.output_text.delta", **m, "content_index": 0, "delta": "Hello", "logprobs": []},
        {"type": "response.output_text.delta", **m, "content_index": 0, "delta": ", world", "logprobs": []},
        {"type": "response.output_text.done", **m, "content_index": 0, "text": "Hello, world", "logprobs": []},
        {"type": "response.content_part.done", **m, "content_index": 0, "part": part | {"text": "Hello, world"}},
        {"type": "response.output_item.done", "output_index": 0, "item": final[0]},
        {"type": "response.output_item.added", "output_index": 1, "item": call(1, "in_progress", "")},
        {"type": "response.output_item.added", "output_index": 2, "item": call(2, "in_progress", "")},
        {"type": "response.function_call_arguments.delta", **f1, "delta": ARGS[1][0]},
        {"type": "response.function_call_arguments.delta", **f2, "delta": ARGS[2][0]},
        {"type": "response.function_call_arguments.delta", **f1, "delta": ARGS[1][1]},
        {"type": "response.function_call_arguments.delta", **f2, "delta": ARGS[2][1]},
        {"type": "response.function_call_arguments.done", **f1, "arguments": args1},
        {"type": "response.function_call_arguments.done", **f2, "arguments": args2},
        {"type": "response.output_item.done", "output_index": 1, "item": final[1]},
        {"type": "response.output_item.done", "output_index": 2, "item": final[2]},
        {"type": "response.completed", "response": response("completed", final, usage=USAGE)},
    ]


def numbered(events: list[Event]) -> list[Event]:
    return [{**copy.deepcopy(ev), "sequence_number": i} for i, ev in enumerate(events)]


def encode(events: list[Event], *, number: bool = True) -> bytes:
    """``event:``/``data:`` framing; sequence numbers added unless ``number=False``."""
    evs = numbered(events) if number else events
    return b"".join(b"event: %s\ndata: %s\n\n" % (str(ev.get("type")).encode(), orjson.dumps(ev)) for ev in evs)


def rules(violations: list[Violation]) -> set[str]:
    return {v.rule for v in violations}


def find(events: list[Event], type_: str, **match: Any) -> int:
    return next(i for i, ev in enumerate(events) if ev["type"] == type_ and all(ev.get(k) == v for k, v in match.items()))


def test_good_stream_is_valid() -> None:
    assert_valid(validate_responses_sse(encode(good_events())))
    assert_valid(validate_responses_events(numbered(good_events())))


def test_good_stream_with_crlf_comments_and_keepalives() -> None:
    raw = b": keepalive\n\n" + encode(good_events()).replace(b"\n\n", b"\n\n: ping\n\n\n").replace(b"\n", b"\r\n")
    assert_valid(validate_responses_sse(raw))


def test_good_stream_satisfies_sdk_accumulator() -> None:
    adapter: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(ResponseStreamEvent)
    state: ResponseStreamState[Any] = ResponseStreamState(input_tools=openai.omit, text_format=openai.omit)
    seen = []
    for raw_event in numbered(good_events()):
        seen += state.handle_event(adapter.validate_python(raw_event))
    final = seen[-1].response
    assert seen[-1].type == "response.completed"
    assert final.output_text == "Hello, world"
    assert [(o.call_id, o.arguments) for o in final.output if o.type == "function_call"] == [
        ("call_1", '{"city":"Paris"}'),
        ("call_2", '{"tz":"UTC"}'),
    ]


def sdk_client(body: bytes) -> openai.OpenAI:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body)

    transport = httpx.MockTransport(handler)
    return openai.OpenAI(api_key="sk-test", base_url="http://test/v1", http_client=httpx.Client(transport=transport))


def test_good_stream_through_real_sdk_client() -> None:
    with sdk_client(encode(good_events())).responses.stream(model="demo", input="hi") as stream:
        types = [ev.type for ev in stream]
        final = stream.get_final_response()
    assert types[0] == "response.created" and types[-1] == "response.completed"
    assert final.id == RID and final.output_text == "Hello, world"
    assert [o.id for o in final.output] == ["msg_1", "fc_1", "fc_2"]


# --- one mutation per rule --------------------------------------------------

Mutation = Callable[[list[Event]], bytes]


def renumbered(edit: Callable[[list[Event]], None]) -> Mutation:
    """Edit the un-numbered events, then frame them with fresh sequence numbers."""

    def mutate(events: list[Event]) -> bytes:
        edit(events)
        return encode(events)

    return mutate


def as_numbered(edit: Callable[[list[Event]], None]) -> Mutation:
    """Edit the events after sequence numbers were assigned."""

    def mutate(events: list[Event]) -> bytes:
        evs = numbered(events)
        edit(evs)
        return encode(evs, number=False)

    return mutate


def on_bytes(edit: Callable[[bytes], bytes]) -> Mutation:
    return lambda events: edit(encode(events))


def _drop_seq(evs: list[Event]) -> None:
    del evs[5]["sequence_number"]


def _seq_gap(evs: list[Event]) -> None:
    for ev in evs[5:]:
        ev["sequence_number"] += 1


def _reuse_index(evs: list[Event]) -> None:
    for ev in evs:
        if ev.get("output_index") == 2:
            ev["output_index"] = 1


def _index_gap(evs: list[Event]) -> None:
    for ev in evs:
        if ev.get("output_index") == 2:
            ev["output_index"] = 3


def _wrong_item_id(evs: list[Event]) -> None:
    evs[4]["item_id"] = "msg_other"


def _delta_after_done(evs: list[Event]) -> None:
    evs.insert(9, evs[4] | {"delta": "!"})


def _drop_item_done(evs: list[Event]) -> None:
    del evs[find(evs, "response.output_item.done", output_index=2)]


def _text_done_mismatch(evs: list[Event]) -> None:
    evs[find(evs, "response.output_text.done")]["text"] = "Hello world"


def _args_done_mismatch(evs: list[Event]) -> None:
    evs[find(evs, "response.function_call_arguments.done", output_index=1)]["arguments"] = '{"city":"Rome"}'


def _two_terminals(evs: list[Event]) -> None:
    evs.append(copy.deepcopy(evs[-1]))


def _incomplete_without_reason(evs: list[Event]) -> None:
    evs[-1]["type"] = "response.incomplete"
    evs[-1]["response"]["status"] = "incomplete"


def _item_still_open(evs: list[Event]) -> None:
    # the second call never finishes, and the terminal output (consistently) lacks it
    del evs[find(evs, "response.output_item.done", output_index=2)]
    del evs[find(evs, "response.function_call_arguments.done", output_index=2)]
    evs[-1]["response"]["output"].pop()


def _dropped_parallel_call(evs: list[Event]) -> None:
    evs[-1]["response"]["output"].pop()


def _bad_item_prefix(evs: list[Event]) -> None:
    for ev in evs:
        for item in [ev.get("item"), *ev.get("response", {}).get("output", [])]:
            if item and item["id"] == "msg_1":
                item["id"] = "item_1"
        if ev.get("item_id") == "msg_1":
            ev["item_id"] = "item_1"


def _usage_total(evs: list[Event]) -> None:
    evs[-1]["response"]["usage"] = USAGE | {"total_tokens": 33}


def _start_order(evs: list[Event]) -> None:
    evs[0], evs[1] = evs[1], evs[0]


def _response_id_changes(evs: list[Event]) -> None:
    evs[1]["response"]["id"] = "resp_other"


def _part_done_before_text_done(evs: list[Event]) -> None:
    evs[6], evs[7] = evs[7], evs[6]


def _duplicate_call_id(evs: list[Event]) -> None:
    for ev in evs:
        for item in [ev.get("item"), *ev.get("response", {}).get("output", [])]:
            if item and item["id"] == "fc_2":
                item["call_id"] = "call_1"


def _failed_without_error(evs: list[Event]) -> None:
    evs[-1] = {"type": "response.failed", "response": response("failed", evs[-1]["response"]["output"], error={"code": "server_error", "message": "boom"})}


def _event_after_error(evs: list[Event]) -> None:
    evs.insert(-1, {"type": "error", "code": "server_error", "message": "boom", "param": None})


MUTATIONS: list[tuple[str, Mutation, set[str]]] = [
    ("missing sequence_number", as_numbered(_drop_seq), {"sequence"}),
    ("sequence gap", as_numbered(_seq_gap), {"sequence"}),
    # once two items share an index, everything routed by it is ambiguous: the rest cascades
    ("reused output_index", renumbered(_reuse_index), {"output-index", "item-id", "function-call", "item-lifecycle", "terminal"}),
    ("gap in output_index", renumbered(_index_gap), {"output-index"}),
    ("wrong item_id", renumbered(_wrong_item_id), {"item-id"}),
    ("delta after item done", renumbered(_delta_after_done), {"item-lifecycle"}),
    ("missing output_item.done", renumbered(_drop_item_done), {"item-lifecycle", "terminal"}),
    ("text.done != deltas", renumbered(_text_done_mismatch), {"text-parts"}),
    ("arguments.done mismatch", renumbered(_args_done_mismatch), {"function-call"}),
    ("missing terminal event", renumbered(lambda evs: evs.__delitem__(-1)), {"terminal"}),
    ("two terminal events", renumbered(_two_terminals), {"terminal"}),
    ("event name != type", on_bytes(lambda b: b.replace(b"event: response.output_text.delta", b"event: response.text.delta", 1)), {"framing"}),
    ("[DONE] present", on_bytes(lambda b: b + b"data: [DONE]\n\n"), {"framing"}),
    ("truncated last event", on_bytes(lambda b: b[:-2]), {"framing", "terminal"}),  # SDKs drop it too
    ("incomplete without reason", renumbered(_incomplete_without_reason), {"terminal"}),
    ("completed with an item still open", renumbered(_item_still_open), {"item-lifecycle"}),
    ("terminal output drops a parallel call", renumbered(_dropped_parallel_call), {"terminal"}),
    ("bad item id prefix", renumbered(_bad_item_prefix), {"ids"}),
    ("usage total mismatch", renumbered(_usage_total), {"usage"}),
    ("created not first", renumbered(_start_order), {"start"}),
    ("response id changes", renumbered(_response_id_changes), {"ids"}),
    ("part done before text done", renumbered(_part_done_before_text_done), {"text-parts"}),
    ("duplicate call_id", renumbered(_duplicate_call_id), {"function-call"}),
    ("failed without error event", renumbered(_failed_without_error), {"terminal"}),
    ("event between error and failed", renumbered(_event_after_error), {"terminal"}),
]


@pytest.mark.parametrize(("mutate", "expected"), [m[1:] for m in MUTATIONS], ids=[m[0] for m in MUTATIONS])
def test_mutation_is_reported(mutate: Mutation, expected: set[str]) -> None:
    found = validate_responses_sse(mutate(good_events()))
    # the broken rule is reported, and nothing unrelated fires
    assert found and rules(found) == expected, "\n".join(map(str, found))
    assert all(v.message for v in found)


def test_missing_output_item_done_also_breaks_terminal_output() -> None:
    events = good_events()
    _drop_item_done(events)
    lifecycle, terminal = validate_responses_sse(encode(events))
    assert lifecycle.rule == "item-lifecycle" and "'fc_2' at output_index 2 still open at response.completed" in lifecycle.message
    assert terminal.rule == "terminal" and "fc_2" in terminal.message and terminal.index == len(events) - 1


def test_violation_points_at_the_offending_event() -> None:
    events = good_events()
    _wrong_item_id(events)
    [v] = validate_responses_sse(encode(events))
    assert v.index == 4 and "msg_other" in v.message and str(v).startswith("[item-id] at event 4")


def test_incomplete_with_reason_and_error_then_failed_are_valid() -> None:
    events = good_events()
    events[-1] = {
        "type": "response.incomplete",
        "response": response("incomplete", events[-1]["response"]["output"], usage=USAGE, incomplete_details={"reason": "max_output_tokens"}),
    }
    assert_valid(validate_responses_sse(encode(events)))

    assert_valid(validate_responses_sse(encode(failed_mid_message())))


GONE = {"code": "server_error", "message": "upstream went away"}


def failed_mid_message() -> list[Event]:
    """A fault after the message's text and the first call's first delta: rule 11
    closes the part, the message and the call (incomplete) before error + failed."""
    events = good_events()[:8]
    cut = msg("incomplete", "Hello, world")
    f1 = {"item_id": "fc_1", "output_index": 1}
    partial_call = call(1, "incomplete", ARGS[1][0])
    events += [
        {"type": "response.output_item.done", "output_index": 0, "item": cut},
        {"type": "response.output_item.added", "output_index": 1, "item": call(1, "in_progress", "")},
        {"type": "response.function_call_arguments.delta", **f1, "delta": ARGS[1][0]},
        {"type": "response.function_call_arguments.done", **f1, "arguments": ARGS[1][0]},
        {"type": "response.output_item.done", "output_index": 1, "item": partial_call},
        {"type": "error", **GONE, "param": None},
        {"type": "response.failed", "response": response("failed", [cut, partial_call], error=GONE)},
    ]
    return events


def _without(*types: str) -> Callable[[list[Event]], list[Event]]:
    """Drop the last event of each type that comes before the error event."""

    def edit(events: list[Event]) -> list[Event]:
        events = list(events)
        for etype in types:
            at = max(i for i, ev in enumerate(events[:-2]) if ev["type"] == etype)
            del events[at]
        return events

    return edit


def _failed_output(edit: Callable[[list[Event]], list[Event]]) -> Callable[[list[Event]], list[Event]]:
    def change(events: list[Event]) -> list[Event]:
        events = copy.deepcopy(events)
        # Its own copy: the fixture shares item objects between events.
        events[-1]["response"]["output"] = edit(copy.deepcopy(events[-1]["response"]["output"]))
        return events

    return change


def _retext(items: list[Event]) -> list[Event]:
    items[0]["content"][0]["text"] = "Hello, world and more"
    return items


RULE_11_VIOLATIONS: list[tuple[str, Callable[[list[Event]], list[Event]], set[str]]] = [
    # The old behaviour: error + failed with the message and call left open.
    ("items left open at error", lambda evs: [*evs[:8], *evs[9:11], *evs[-2:]], {"failure-close", "terminal"}),
    ("call left open at error", _without("response.function_call_arguments.done", "response.output_item.done"), {"failure-close", "terminal"}),
    ("failed output lists an item never closed", lambda evs: [*evs[:-3], *evs[-2:]], {"failure-close", "terminal"}),
    ("failed output drops a closed item", _failed_output(lambda items: items[:1]), {"terminal"}),
    ("failed output says more than the .done events", _failed_output(_retext), {"terminal"}),
    ("part left open at error", lambda evs: [*evs[:6], *evs[-2:]], {"failure-close", "terminal"}),
    ("failed without error, items open", lambda evs: [*evs[:6], evs[-1]], {"failure-close", "terminal"}),
]


@pytest.mark.parametrize(("edit", "expected"), [v[1:] for v in RULE_11_VIOLATIONS], ids=[v[0] for v in RULE_11_VIOLATIONS])
def test_failure_that_leaves_items_open_or_output_unmatched_is_reported(
    edit: Callable[[list[Event]], list[Event]], expected: set[str]
) -> None:
    found = validate_responses_sse(encode(edit(failed_mid_message())))
    assert rules(found) == expected, "\n".join(map(str, found))


def test_closed_failure_satisfies_sdk_types_and_accumulator() -> None:
    """Every event of a rule-11 failure is a valid SDK event, the accumulator takes
    them all, and the items it saw done are the failed response's output."""
    adapter: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(ResponseStreamEvent)
    state: ResponseStreamState[Any] = ResponseStreamState(input_tools=openai.omit, text_format=openai.omit)
    seen = []
    for raw_event in numbered(failed_mid_message()):
        seen += state.handle_event(adapter.validate_python(raw_event))
    done = [ev.item for ev in seen if ev.type == "response.output_item.done"]
    assert seen[-1].type == "response.failed"
    assert seen[-1].response.output == done
    assert [(item.id, item.status) for item in done] == [("msg_1", "incomplete"), ("fc_1", "incomplete")]


def test_reasoning_and_refusal_items_are_understood() -> None:
    r = {"item_id": "rs_1", "output_index": 0}
    m = {"item_id": "msg_1", "output_index": 1}
    think, summary = "Let me think.", "Thought briefly."
    rs_done = {
        "id": "rs_1",
        "type": "reasoning",
        "status": "completed",
        "summary": [{"type": "summary_text", "text": summary}],
        "content": [{"type": "reasoning_text", "text": think}],
    }
    refusal = {"type": "refusal", "refusal": ""}
    msg_done = msg("completed", None) | {"content": [{"type": "refusal", "refusal": "No."}]}
    events: list[Event] = [
        {"type": "response.created", "response": response()},
        {"type": "response.in_progress", "response": response()},
        {"type": "response.output_item.added", "output_index": 0, "item": {"id": "rs_1", "type": "reasoning", "status": "in_progress", "summary": []}},
        {"type": "response.content_part.added", **r, "content_index": 0, "part": {"type": "reasoning_text", "text": ""}},
        {"type": "response.reasoning_text.delta", **r, "content_index": 0, "delta": "Let me "},
        {"type": "response.reasoning_text.delta", **r, "content_index": 0, "delta": "think."},
        {"type": "response.reasoning_text.done", **r, "content_index": 0, "text": think},
        {"type": "response.content_part.done", **r, "content_index": 0, "part": {"type": "reasoning_text", "text": think}},
        {"type": "response.reasoning_summary_part.added", **r, "summary_index": 0, "part": {"type": "summary_text", "text": ""}},
        {"type": "response.reasoning_summary_text.delta", **r, "summary_index": 0, "delta": summary},
        {"type": "response.reasoning_summary_text.done", **r, "summary_index": 0, "text": summary},
        {"type": "response.reasoning_summary_part.done", **r, "summary_index": 0, "part": {"type": "summary_text", "text": summary}},
        {"type": "response.output_item.done", "output_index": 0, "item": rs_done},
        {"type": "response.output_item.added", "output_index": 1, "item": msg("in_progress", None)},
        {"type": "response.content_part.added", **m, "content_index": 0, "part": refusal},
        {"type": "response.refusal.delta", **m, "content_index": 0, "delta": "No."},
        {"type": "response.refusal.done", **m, "content_index": 0, "refusal": "No."},
        {"type": "response.content_part.done", **m, "content_index": 0, "part": refusal | {"refusal": "No."}},
        {"type": "response.output_item.done", "output_index": 1, "item": msg_done},
        {"type": "response.completed", "response": response("completed", [rs_done, msg_done], usage=USAGE)},
    ]
    assert_valid(validate_responses_sse(encode(events)))
    # the SDK agrees
    adapter: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(ResponseStreamEvent)
    state: ResponseStreamState[Any] = ResponseStreamState(input_tools=openai.omit, text_format=openai.omit)
    for ev in numbered(events):
        state.handle_event(adapter.validate_python(ev))

    events[9]["delta"] = "Thought"  # summary deltas no longer add up
    assert rules(validate_responses_sse(encode(events))) == {"text-parts"}


def test_events_api_reports_non_objects() -> None:
    found = validate_responses_events([*numbered(good_events())[:3], "nope", *numbered(good_events())[3:]])  # type: ignore[list-item]
    assert "object" in rules(found) and "internal" not in rules(found)


# --- parse_sse --------------------------------------------------------------


def test_parse_sse() -> None:
    raw = b": hello\r\n\r\nevent: a\r\ndata: {\"x\":\r\ndata: 1}\r\n\r\n\n\ndata:plain\rid: 7\r\r:comment\nevent: b\ndata:\n\nevent: lonely\n\n"
    assert parse_sse(raw) == [("a", '{"x":\n1}'), (None, "plain"), ("b", "")]
    assert parse_sse(b"data: cut off") == []
    assert parse_sse(b"\xef\xbb\xbfdata: x\n\n") == [(None, "x")]


def test_framing_problems() -> None:
    assert rules(validate_responses_sse(b"data: {}\n\n")) >= {"framing"}
    assert rules(validate_responses_sse(b"event: x\n\n")) >= {"framing"}
    assert "framing" in rules(validate_responses_sse(b"\xff\xfe"))
    assert rules(validate_responses_sse(b"")) == {"start", "terminal"}


# --- response objects -------------------------------------------------------


def test_validate_response_object() -> None:
    final = good_events()[-1]["response"]
    assert validate_response_object(final, expect_status="completed") == []
    assert rules(validate_response_object(final, expect_status="incomplete")) == {"object"}
    assert rules(validate_response_object(final | {"usage": None})) == {"usage"}
    assert rules(validate_response_object(final | {"status": "incomplete"})) == {"object"}  # no reason
    assert rules(validate_response_object(final | {"id": "r_1"})) == {"ids"}
    bad_call = call(1, "completed", "{}") | {"id": "call_1"}
    assert rules(validate_response_object(final | {"output": [bad_call]})) == {"ids"}
    assert rules(validate_response_object(final | {"output": [call(1, "completed", "{}")] * 2})) == {"function-call"}
    assert rules(validate_response_object([])) == {"object"}


# --- chat streams -----------------------------------------------------------


def chunk(choices: list[Event], **extra: Any) -> Event:
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1_700_000_000, "model": "demo", "choices": choices} | extra


def delta(d: Event, finish: str | None = None) -> list[Event]:
    return [{"index": 0, "delta": d, "finish_reason": finish, "logprobs": None}]


def tool(index: int, args: str, first: bool = False) -> Event:
    tc: Event = {"index": index, "function": {"arguments": args}}
    if first:
        tc |= {"id": f"call_{index}", "type": "function"}
        tc["function"]["name"] = ("get_weather", "get_time")[index]
    return tc


USAGE_CHUNK = {"prompt_tokens": 9, "completion_tokens": 11, "total_tokens": 20}


def good_chunks() -> list[Event]:
    return [
        chunk(delta({"role": "assistant", "content": ""})),
        chunk(delta({"content": "Let me check."})),
        chunk(delta({"tool_calls": [tool(0, "", first=True)]})),
        chunk(delta({"tool_calls": [tool(1, '{"tz":', first=True)]})),
        chunk(delta({"tool_calls": [tool(0, '{"city":"Paris"}')]})),
        chunk(delta({"tool_calls": [tool(1, '"UTC"}')]})),
        chunk(delta({}, "tool_calls")),
        chunk([], usage=USAGE_CHUNK),
    ]


def encode_chat(chunks: list[Event], *, done: bool = True) -> bytes:
    return b"".join(b"data: %s\n\n" % orjson.dumps(c) for c in chunks) + (b"data: [DONE]\n\n" if done else b"")


def test_good_chat_stream_is_valid_and_sdk_agrees() -> None:
    assert_valid(validate_chat_sse(encode_chat(good_chunks())))
    state: ChatCompletionStreamState[Any] = ChatCompletionStreamState()
    for c in good_chunks():
        state.handle_chunk(ChatCompletionChunk.model_validate(c))
    message = state.get_final_completion().choices[0].message
    assert message.content == "Let me check."
    assert [(t.id, t.function.arguments) for t in message.tool_calls or []] == [("call_0", '{"city":"Paris"}'), ("call_1", '{"tz":"UTC"}')]


def test_good_chat_stream_through_real_sdk_client() -> None:
    stream = sdk_client(encode_chat(good_chunks())).chat.completions.create(model="demo", messages=[{"role": "user", "content": "hi"}], stream=True)
    chunks = list(stream)
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 20


def edited(edit: Callable[[list[Event]], Any]) -> Callable[[list[Event]], bytes]:
    def mutate(chunks: list[Event]) -> bytes:
        edit(chunks)
        return encode_chat(chunks)

    return mutate


def _chat_role_late(cs: list[Event]) -> None:
    cs[0]["choices"][0]["delta"] = {"content": ""}
    cs[1]["choices"][0]["delta"]["role"] = "assistant"


def _first_tool_delta(cs: list[Event]) -> Event:
    tc: Event = cs[2]["choices"][0]["delta"]["tool_calls"][0]
    return tc


CHAT_MUTATIONS: list[tuple[str, Callable[[list[Event]], bytes], set[str]]] = [
    ("missing [DONE]", lambda cs: encode_chat(cs, done=False), {"chat-done"}),
    ("chunk after [DONE]", lambda cs: encode_chat(cs) + encode_chat(cs[-1:], done=False), {"chat-done"}),
    ("tool call without index", edited(lambda cs: _first_tool_delta(cs).pop("index")), {"chat-tool-index"}),
    ("first tool delta without name", edited(lambda cs: _first_tool_delta(cs)["function"].pop("name")), {"chat-tool-index"}),
    ("arguments not JSON", lambda cs: encode_chat([*cs[:5], *cs[6:]]), {"chat-tool-index"}),
    ("role not first", edited(_chat_role_late), {"chat-role"}),
    ("two finish_reasons", lambda cs: encode_chat([*cs[:7], chunk(delta({}, "stop")), cs[7]]), {"chat-finish"}),
    ("no finish_reason", lambda cs: encode_chat([*cs[:6], cs[7]]), {"chat-finish"}),
    ("usage chunk with choices", lambda cs: encode_chat([*cs[:6], chunk(delta({}, "tool_calls"), usage=USAGE_CHUNK)]), {"chat-usage"}),
    ("usage total mismatch", lambda cs: encode_chat([*cs[:7], chunk([], usage=USAGE_CHUNK | {"total_tokens": 21})]), {"chat-usage"}),
    ("id changes", lambda cs: encode_chat([*cs[:3], cs[3] | {"id": "chatcmpl-2"}, *cs[4:]]), {"chat-framing"}),
    ("error object", lambda cs: encode_chat([*cs, {"error": {"message": "boom", "type": "server_error"}}]), {"chat-error"}),
    ("event: lines", lambda cs: b"event: chunk\n" + encode_chat(cs), {"chat-framing"}),
]


@pytest.mark.parametrize(("mutate", "expected"), [m[1:] for m in CHAT_MUTATIONS], ids=[m[0] for m in CHAT_MUTATIONS])
def test_chat_mutation_is_reported(mutate: Callable[[list[Event]], bytes], expected: set[str]) -> None:
    found = validate_chat_sse(mutate(good_chunks()))
    assert found and rules(found) == expected, "\n".join(map(str, found))


def test_a_failed_chat_stream_is_one_violation_and_must_end_at_the_error() -> None:
    """The reverse direction's rule 11: chunks so far, then the error object, nothing after."""
    error = {"error": {"message": "boom", "type": "server_error", "code": "upstream_error"}}
    sent = good_chunks()[:5]  # cut off inside the tool calls: no finish_reason, arguments partial
    found = validate_chat_sse(encode_chat([*sent, error], done=False))
    assert [v.rule for v in found] == ["chat-error"] and found[0].index == 5
    # [DONE] after the error claims a normal end: a second violation.
    found = validate_chat_sse(encode_chat([*sent, error]))
    assert [v.rule for v in found] == ["chat-error", "chat-error"] and "[DONE] after the error" in found[1].message
    # So does a chunk after it.
    found = validate_chat_sse(encode_chat([*sent, error, sent[-1]], done=False))
    assert [v.rule for v in found] == ["chat-error", "chat-error"] and "after the error object" in found[1].message
    # Without the error object the same cut is a stream that just stops.
    assert {"chat-done", "chat-finish"} <= rules(validate_chat_sse(encode_chat(sent, done=False)))


def test_validate_chat_completion() -> None:
    good = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": "demo",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": None, "tool_calls": [{"id": "call_0", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
    }
    assert validate_chat_completion(good) == []
    assert rules(validate_chat_completion(good | {"choices": [good["choices"][0] | {"finish_reason": "done"}]})) == {"chat-finish"}  # type: ignore[index]
    assert rules(validate_chat_completion({"error": {"message": "boom"}})) == {"chat-error"}
    assert rules(validate_chat_completion(good | {"usage": None})) == {"chat-usage"}
    assert rules(validate_chat_completion("garbage")) == {"object"}


def test_assert_valid_lists_everything() -> None:
    assert_valid([])
    with pytest.raises(AssertionError, match=r"2 protocol violation\(s\)") as info:
        assert_valid([Violation("sequence", "gap", 3), Violation("terminal", "none", None)])
    assert "[sequence] at event 3: gap" in str(info.value) and "[terminal]: none" in str(info.value)


# --- never raises -----------------------------------------------------------

GOOD_LINES = (encode(good_events()) + encode_chat(good_chunks())).split(b"\n")
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
stream_bytes = st.binary(max_size=2000) | st.lists(st.sampled_from(GOOD_LINES) | st.binary(max_size=20), max_size=60).map(b"\n".join)
fuzz = settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


@fuzz
@given(stream_bytes)
def test_arbitrary_bytes_never_raise(raw: bytes) -> None:
    for check in (validate_responses_sse, validate_chat_sse):
        found = check(raw)
        assert all(isinstance(v, Violation) for v in found) and "internal" not in rules(found)
    parse_sse(raw)


@fuzz
@given(st.data())
def test_corrupted_events_never_raise(data: st.DataObject) -> None:
    """Replace random fields of the good events with random JSON: reported, never raised."""
    events = numbered(good_events())
    for _ in range(data.draw(st.integers(1, 4))):
        ev = data.draw(st.sampled_from(events))
        target = ev
        while True:
            key = data.draw(st.sampled_from(sorted(target)))
            if isinstance(target[key], dict) and target[key] and data.draw(st.booleans()):
                target = target[key]
                continue
            target[key] = data.draw(json_values)
            break
    for found in (validate_responses_events(events), validate_responses_sse(encode(events, number=False))):
        assert "internal" not in rules(found)
    assert "internal" not in rules(validate_response_object(events[-1].get("response")))


@fuzz
@given(json_values)
def test_arbitrary_json_never_raises(value: Any) -> None:
    for found in (
        validate_responses_events([value, value]),
        validate_response_object(value),
        validate_chat_completion(value),
        validate_chat_sse(b"data: %s\n\n" % orjson.dumps(value)),
    ):
        assert "internal" not in rules(found)
