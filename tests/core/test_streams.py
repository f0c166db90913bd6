"""ChatToResponses: chat chunks in, Responses events out, independent of how bytes are split."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compat_asgi.core.ids import CountingIds
from compat_asgi.core.options import OutputOptions
from compat_asgi.core.reasoning import ReasoningSeal
from compat_asgi.core.responses import chat_completion_to_response, new_response
from compat_asgi.core.sse import encode_event
from compat_asgi.core.streams import ChatToResponses
from compat_asgi.errors import CompatError, UpstreamProtocolError
from compat_asgi.validate import assert_valid, validate_responses_sse

ECHO = {"model": "m", "tools": [], "tool_choice": "auto", "parallel_tool_calls": True}


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None, **extra: Any) -> bytes:
    body: dict[str, Any] = {"id": "c1", "object": "chat.completion.chunk", **extra}
    if delta is not None or finish is not None:
        body["choices"] = [{"index": 0, "delta": delta or {}, "finish_reason": finish}]
    return b"data: " + orjson.dumps(body) + b"\n\n"


def call_delta(index: int, *, id: str | None = None, name: str | None = None, args: Any = None) -> dict[str, Any]:
    call: dict[str, Any] = {"index": index}
    if id is not None:
        call["id"] = id
        call["type"] = "function"
    function: dict[str, Any] = {}
    if name is not None:
        function["name"] = name
    if args is not None:
        function["arguments"] = args
    call["function"] = function
    return {"tool_calls": [call]}


USAGE = {
    "prompt_tokens": 11,
    "completion_tokens": 7,
    "total_tokens": 18,
    "prompt_tokens_details": {"cached_tokens": 3},
    "completion_tokens_details": {"reasoning_tokens": 2},
}

# A realistic stream: role, reasoning, text, two parallel calls with interleaved
# argument deltas, finish, usage chunk, [DONE].
REALISTIC = b"".join(
    [
        chunk({"role": "assistant", "content": ""}),
        chunk({"reasoning_content": "Think"}),
        chunk({"reasoning_content": "ing é."}),
        chunk({"content": "Calling"}),
        chunk({"content": " tools ✓"}),
        chunk(call_delta(0, id="call_a", name="get_weather", args="")),
        chunk(call_delta(1, id="call_b", name="get_time", args="")),
        chunk(call_delta(0, args='{"location":')),
        chunk(call_delta(1, args='{"tz":"UTC"}')),
        chunk(call_delta(0, args='"Paris"}')),
        chunk(finish="tool_calls"),
        chunk(choices=[], usage=USAGE),
        b"data: [DONE]\n\n",
    ]
)


def translate(pieces: list[bytes]) -> list[dict[str, Any]]:
    translator = ChatToResponses(new_response(ECHO, "resp_1", 1700000000), CountingIds())
    events = translator.start()
    try:
        for piece in pieces:
            events += translator.feed_bytes(piece)
        events += translator.close()
    except CompatError as exc:
        events += translator.fail(exc)
    return events


def encoded(events: list[dict[str, Any]]) -> bytes:
    return b"".join(encode_event(e) for e in events)


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)])]


def test_realistic_stream_translates_to_a_valid_stream() -> None:
    events = translate([REALISTIC])
    assert_valid(validate_responses_sse(encoded(events)))
    final = events[-1]
    assert final["type"] == "response.completed"
    output = final["response"]["output"]
    assert [item["type"] for item in output] == ["reasoning", "message", "function_call", "function_call"]
    assert output[0]["content"] == [{"type": "reasoning_text", "text": "Thinking é."}]
    assert output[1]["content"][0]["text"] == "Calling tools ✓"
    assert [(c["call_id"], c["name"], c["arguments"]) for c in output[2:]] == [
        ("call_a", "get_weather", '{"location":"Paris"}'),
        ("call_b", "get_time", '{"tz":"UTC"}'),
    ]
    assert final["response"]["usage"] == {
        "input_tokens": 11,
        "input_tokens_details": {"cached_tokens": 3, "cache_write_tokens": 0},
        "output_tokens": 7,
        "output_tokens_details": {"reasoning_tokens": 2},
        "total_tokens": 18,
    }


def test_whole_and_byte_by_byte_give_identical_events() -> None:
    whole = translate([REALISTIC])
    assert translate([REALISTIC[i : i + 1] for i in range(len(REALISTIC))]) == whole


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(REALISTIC)), max_size=40))
def test_any_split_gives_identical_events(cuts: list[int]) -> None:
    assert translate(split_at(REALISTIC, cuts)) == translate([REALISTIC])


def test_crlf_framing_is_the_same_stream() -> None:
    assert translate([REALISTIC.replace(b"\n", b"\r\n")]) == translate([REALISTIC])


def test_each_event_is_emitted_as_soon_as_its_chunk_is_complete() -> None:
    translator = ChatToResponses(new_response(ECHO, "resp_1", 0), CountingIds())
    translator.start()
    line = chunk({"content": "Hi"})
    assert translator.feed_bytes(line[:-1]) == []
    kinds = [e["type"] for e in translator.feed_bytes(line[-1:])]
    assert kinds[-1] == "response.output_text.delta"


@pytest.mark.parametrize(
    ("finish", "status", "reason"),
    [("length", "incomplete", "max_output_tokens"), ("content_filter", "incomplete", "content_filter"),
     ("stop", "completed", None)],
)
def test_finish_reason_maps_to_terminal_status(finish: str, status: str, reason: str | None) -> None:
    events = translate([chunk({"content": "cut"}), chunk(finish=finish), b"data: [DONE]\n\n"])
    assert_valid(validate_responses_sse(encoded(events)))
    final = events[-1]
    assert final["type"] == f"response.{status}"
    assert final["response"]["status"] == status
    assert final["response"]["incomplete_details"] == (reason and {"reason": reason})
    item_status = "completed" if status == "completed" else "incomplete"
    assert final["response"]["output"][0]["status"] == item_status


def test_upstream_error_mid_stream_fails_with_partial_output() -> None:
    events = translate(
        [chunk({"content": "partial"}), b'data: {"error": {"message": "boom", "code": "overloaded"}}\n\n']
    )
    assert_valid(validate_responses_sse(encoded(events)))
    assert [e["type"] for e in events[-2:]] == ["error", "response.failed"]
    assert events[-2]["message"] == "boom" and events[-2]["code"] == "overloaded"
    failed = events[-1]["response"]
    assert failed["status"] == "failed"
    # The Response's error carries a code its schema lists; the event kept the upstream's.
    assert failed["error"] == {"code": "server_error", "message": "boom"}
    assert failed["output"][0]["content"][0]["text"] == "partial"
    assert failed["output"][0]["status"] == "incomplete"


@pytest.mark.parametrize(
    ("pieces", "code"),
    [
        ([chunk({"content": "cut off"})], "upstream_protocol_error"),  # no finish, no [DONE]
        ([chunk({"content": "x"}), b"data: {not json\n\n"], "upstream_protocol_error"),
        ([chunk({"content": "x"}), b'data: {"choices": [{"index": 0, "delt'], "upstream_protocol_error"),
        ([b"data: [1, 2]\n\n"], "upstream_protocol_error"),
    ],
)
def test_broken_upstream_streams_fail_cleanly(pieces: list[bytes], code: str) -> None:
    events = translate(pieces)
    assert_valid(validate_responses_sse(encoded(events)))
    assert events[-2]["type"] == "error" and events[-2]["code"] == code
    assert events[-1]["type"] == "response.failed"


def test_line_over_the_limit_fails_without_buffering_it() -> None:
    translator = ChatToResponses(new_response(ECHO, "resp_1", 0), CountingIds(), max_line=1024)
    events = translator.start()
    with pytest.raises(CompatError) as caught:
        for _ in range(100):
            translator.feed_bytes(b"x" * 100)
    assert caught.value.code == "upstream_line_too_long"
    events += translator.fail(caught.value)
    assert events[-1]["type"] == "response.failed"


def test_finish_without_done_completes_and_done_without_finish_completes() -> None:
    assert translate([chunk({"content": "a"}), chunk(finish="stop")])[-1]["type"] == "response.completed"
    assert translate([chunk({"content": "a"}), b"data: [DONE]\n\n"])[-1]["type"] == "response.completed"


def test_calls_are_routed_by_index_not_arrival_order() -> None:
    events = translate(
        [
            chunk(call_delta(1, id="call_b", name="b", args="{")),
            chunk(call_delta(0, id="call_a", name="a", args="[")),
            chunk(call_delta(1, args="}")),
            chunk(call_delta(0, args="]")),
            chunk(finish="tool_calls"),
        ]
    )
    assert_valid(validate_responses_sse(encoded(events)))
    output = events[-1]["response"]["output"]
    # Announced at the finish, in chat index order (the order of message.tool_calls).
    assert [(c["call_id"], c["arguments"]) for c in output] == [("call_a", "[]"), ("call_b", "{}")]


def test_a_reused_index_with_a_new_id_is_a_new_call() -> None:
    events = translate(
        [
            chunk(call_delta(0, id="call_a", name="a", args="{}")),
            chunk(call_delta(0, id="call_b", name="b", args='{"x":1}')),
            chunk(finish="tool_calls"),
        ]
    )
    assert_valid(validate_responses_sse(encoded(events)))
    output = events[-1]["response"]["output"]
    assert [(c["call_id"], c["name"], c["arguments"]) for c in output] == [
        ("call_a", "a", "{}"),
        ("call_b", "b", '{"x":1}'),
    ]


def test_missing_index_id_and_object_arguments_are_tolerated() -> None:
    no_index = b'data: {"choices":[{"index":0,"delta":{"tool_calls":[{"function":{"name":"f","arguments":{"k":1}}}]},"finish_reason":"tool_calls"}]}\n\n'
    events = translate([no_index])
    assert_valid(validate_responses_sse(encoded(events)))
    (item,) = events[-1]["response"]["output"]
    assert item["name"] == "f" and item["arguments"] == '{"k":1}'
    assert item["call_id"].startswith("call_")


def test_name_arriving_after_arguments_still_announces_a_named_item() -> None:
    events = translate(
        [
            chunk(call_delta(0, id="call_a", args='{"a":')),
            chunk(call_delta(0, name="late")),
            chunk(call_delta(0, args="1}")),
            chunk(finish="tool_calls"),
        ]
    )
    assert_valid(validate_responses_sse(encoded(events)))
    added = next(e for e in events if e["type"] == "response.output_item.added")
    assert added["item"]["name"] == "late"
    assert events[-1]["response"]["output"][0]["arguments"] == '{"a":1}'


def test_refusal_becomes_a_refusal_part() -> None:
    events = translate([chunk({"refusal": "I can't"}), chunk({"refusal": " help."}), chunk(finish="stop")])
    assert_valid(validate_responses_sse(encoded(events)))
    assert events[-1]["response"]["output"][0]["content"] == [{"type": "refusal", "refusal": "I can't help."}]


def test_missing_usage_reports_zeros_with_detail_objects() -> None:
    usage = translate([chunk({"content": "a"}), chunk(finish="stop")])[-1]["response"]["usage"]
    assert usage == {
        "input_tokens": 0,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": 0,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 0,
    }


def test_events_after_done_are_ignored_and_terminal_is_emitted_once() -> None:
    events = translate([chunk({"content": "a"}), b"data: [DONE]\n\n", chunk({"content": "late"})])
    assert [e["type"] for e in events].count("response.completed") == 1
    assert events[-1]["response"]["output"][0]["content"][0]["text"] == "a"


# -- agent-client features ------------------------------------------------------


def translate_with(pieces: list[bytes], options: OutputOptions) -> list[dict[str, Any]]:
    translator = ChatToResponses(new_response(ECHO, "resp_1", 0), CountingIds(), options=options)
    events = translator.start()
    for piece in pieces:
        events += translator.feed_bytes(piece)
    return events + translator.close()


PATCH_INPUT = '*** Begin Patch\n*** Add File: a.txt\n+héllo "quoted" \\ back\U0001f600\n*** End Patch'
CUSTOM_STREAM = b"".join(
    [chunk(call_delta(0, id="call_p", name="apply_patch", args=""))]
    + [chunk(call_delta(0, args=piece)) for piece in
       (lambda s: [s[i : i + 5] for i in range(0, len(s), 5)])(orjson.dumps({"input": PATCH_INPUT}).decode().replace("\U0001f600", "\\ud83d\\ude00"))]
    + [chunk(finish="tool_calls"), b"data: [DONE]\n\n"]
)


def test_custom_tool_calls_are_announced_whole_with_their_decoded_input() -> None:
    options = OutputOptions(custom_tools=frozenset({"apply_patch"}))
    events = translate_with([CUSTOM_STREAM], options)
    assert_valid(validate_responses_sse(encoded(events)))
    kinds = [e["type"] for e in events]
    # Nothing of the call before the finish, then the whole call at once.
    assert kinds[2:] == [
        "response.output_item.added",
        "response.custom_tool_call_input.delta",
        "response.custom_tool_call_input.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert events[3]["delta"] == events[4]["input"] == PATCH_INPUT
    (item,) = events[-1]["response"]["output"]
    assert item["type"] == "custom_tool_call" and item["id"].startswith("ctc_")
    assert (item["call_id"], item["name"], item["input"]) == ("call_p", "apply_patch", PATCH_INPUT)
    byte_by_byte = translate_with([CUSTOM_STREAM[i : i + 1] for i in range(len(CUSTOM_STREAM))], options)
    assert byte_by_byte == events


def test_custom_tool_with_unexpected_arguments_keeps_them_as_input() -> None:
    options = OutputOptions(custom_tools=frozenset({"apply_patch"}))
    stream = chunk(call_delta(0, id="c", name="apply_patch", args="raw patch text")) + chunk(finish="tool_calls")
    events = translate_with([stream], options)
    assert_valid(validate_responses_sse(encoded(events)))
    assert events[-1]["response"]["output"][0]["input"] == "raw patch text"


THINK = b"".join(chunk({"content": piece}) for piece in ["<thi", "nk>Let me", " think.</th", "ink>\n\nThe answer", " is 4."]) + chunk(finish="stop")


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(THINK)), max_size=20))
def test_think_tags_become_a_reasoning_item_at_any_split(cuts: list[int]) -> None:
    options = OutputOptions(think_tags=True)
    events = translate_with(split_at(THINK, cuts), options)
    assert_valid(validate_responses_sse(encoded(events)))
    reasoning, message = events[-1]["response"]["output"]
    assert reasoning["content"] == [{"type": "reasoning_text", "text": "Let me think."}]
    assert message["content"][0]["text"] == "The answer is 4."


def test_reasoning_summary_and_sealed_reasoning() -> None:
    seal = ReasoningSeal(b"s" * 32)
    options = OutputOptions(reasoning_summary=True, reasoning_seal=seal)
    events = translate_with([chunk({"reasoning_content": "Deep "}), chunk({"reasoning_content": "thought."}),
                             chunk({"content": "Hi"}), chunk(finish="stop")], options)
    assert_valid(validate_responses_sse(encoded(events)))
    kinds = [e["type"] for e in events]
    assert "response.reasoning_summary_part.added" in kinds
    assert "response.reasoning_summary_text.delta" in kinds and "response.reasoning_text.delta" not in kinds
    reasoning = events[-1]["response"]["output"][0]
    assert reasoning["summary"] == [{"type": "summary_text", "text": "Deep thought."}]
    assert seal.open(reasoning["encrypted_content"]) == "Deep thought."


def test_a_fault_in_the_same_read_as_good_chunks_loses_none_of_them() -> None:
    """The shape of issue 16: valid chunks, then a non-JSON line, all in one read.

    The chunks' events were produced (sequence numbers assigned) when the fault
    was found; fail() returns them first, so sequence numbers stay contiguous
    and the text is in the .done events and the failed output."""
    translator = ChatToResponses(new_response(ECHO, "resp_1", 0), CountingIds())
    events = translator.start()
    read = chunk({"role": "assistant", "content": ""}) + chunk({"content": "Hello"}) + chunk({"content": " world"})
    with pytest.raises(CompatError) as caught:
        translator.feed_bytes(read + b"data: {not json}\n\n")
    assert translator.pending
    events += translator.fail(caught.value)
    assert_valid(validate_responses_sse(encoded(events)))
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert [e["type"] for e in events[2:]] == [
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "error",
        "response.failed",
    ]
    assert events[-3]["item"]["status"] == "incomplete"
    assert events[-1]["response"]["output"] == [events[-3]["item"]]
    assert events[-1]["response"]["output"][0]["content"][0]["text"] == "Hello world"
    assert translator.fail(caught.value) == []  # the stream ended once


def test_an_over_long_line_is_reported_with_the_read_that_carried_it() -> None:
    translator = ChatToResponses(new_response(ECHO, "resp_1", 0), CountingIds(), max_line=256)
    translator.start()
    with pytest.raises(CompatError) as caught:
        translator.feed_bytes(chunk({"content": "kept"}) + b"data: " + b"x" * 400 + b"\n\n")
    assert caught.value.code == "upstream_line_too_long"
    events = translator.fail(caught.value)
    assert events[0]["type"] == "response.output_item.added"
    assert events[-1]["response"]["output"][0]["content"][0]["text"] == "kept"


def test_calls_are_announced_whole_at_the_finish_and_never_on_a_fault() -> None:
    """A client runs every call an output_item.done gives it: a call the
    upstream was still writing when it failed must not reach the client."""
    head = (
        chunk({"content": "Let me look."})
        + chunk(call_delta(0, id="call_a", name="exec_command", args='{"cmd":'))
        + chunk(call_delta(1, id="call_b", name="get_time", args='{"tz":"UTC"}'))
        + chunk(call_delta(0, args='"echo hi"}'))
    )
    translator = ChatToResponses(new_response(ECHO, "resp_1", 0), CountingIds())
    events = translator.start() + translator.feed_bytes(head)
    # The text item was closed when the calls began; nothing of the calls yet.
    assert [e["type"] for e in events][-1] == "response.output_item.done"
    assert not any(e["type"].startswith("response.function_call") or "item" in e and e["item"]["type"] == "function_call" for e in events)
    failed = events + translator.fail(CompatError("upstream went away", code="upstream_error"))
    assert_valid(validate_responses_sse(encoded(failed)))
    assert [(i["type"], i["status"]) for i in failed[-1]["response"]["output"]] == [("message", "completed")]
    assert not [e for e in failed if e["type"].startswith("response.function_call")]

    finished = translate([head, chunk(finish="tool_calls")])
    assert_valid(validate_responses_sse(encoded(finished)))
    calls = [e for e in finished if e["type"].startswith("response.function_call_arguments.")]
    assert [(e["type"].rsplit(".", 1)[1], e.get("delta") or e.get("arguments")) for e in calls] == [
        ("delta", '{"cmd":"echo hi"}'), ("done", '{"cmd":"echo hi"}'), ("delta", '{"tz":"UTC"}'), ("done", '{"tz":"UTC"}'),
    ]
    output = finished[-1]["response"]["output"]
    assert [(i["type"], i.get("call_id"), i["status"]) for i in output] == [
        ("message", None, "completed"), ("function_call", "call_a", "completed"), ("function_call", "call_b", "completed"),
    ]


def test_a_call_cut_by_the_token_limit_is_announced_only_if_its_arguments_are_whole() -> None:
    events = translate(
        [
            chunk(call_delta(0, id="call_a", name="get_time", args='{"tz":"UTC"}')),
            chunk(call_delta(1, id="call_b", name="exec_command", args='{"cmd":"rm -rf bu')),
            chunk(finish="length"),
        ]
    )
    assert_valid(validate_responses_sse(encoded(events)))
    final = events[-1]["response"]
    assert final["status"] == "incomplete" and final["incomplete_details"] == {"reason": "max_output_tokens"}
    assert [(i["call_id"], i["status"]) for i in final["output"]] == [("call_a", "incomplete")]
    assert b"rm -rf" not in encoded(events)


def test_interrupt_keeps_what_was_produced_as_incomplete() -> None:
    translator = ChatToResponses(new_response(ECHO, "resp_1", 0), CountingIds())
    events = translator.start()
    events += translator.feed_bytes(chunk({"reasoning_content": "Hm."}) + chunk({"content": "Half an ans"}))
    events += translator.interrupt()
    assert_valid(validate_responses_sse(encoded(events)))
    final = events[-1]["response"]
    assert events[-1]["type"] == "response.incomplete"
    assert final["status"] == "incomplete" and final["incomplete_details"] == {"reason": "interrupted"}
    assert [(i["type"], i["status"]) for i in final["output"]] == [("reasoning", "completed"), ("message", "incomplete")]
    assert final["output"][1]["content"][0]["text"] == "Half an ans"
    assert translator.interrupt() == [] and translator.fail(CompatError("late")) == []


THINKING = [
    chunk({"role": "assistant", "content": ""}),
    chunk({"content": "<thi"}),
    chunk({"content": "nk>plan"}),
    chunk({"content": " it</th"}),
    chunk({"content": "ink>Answer"}),
    chunk({"content": " text <"}),
    chunk(call_delta(0, id="call_p", name="apply_patch", args='{"input": "*** Be')),
    chunk(call_delta(0, args='gin Patch\\n')),
    chunk(call_delta(1, id="call_w", name="get_weather", args='{"city":')),
]


@settings(max_examples=150, deadline=None)
@given(
    good=st.integers(0, len(THINKING)),
    cuts=st.lists(st.integers(0, 4096), max_size=5),
    summary=st.booleans(),
    bad_line=st.booleans(),
)
def test_a_fault_anywhere_closes_think_text_custom_and_function_calls(good: int, cuts: list[int], summary: bool, bad_line: bool) -> None:
    """Held-back think-tag text, custom tool input and function arguments: a
    fault at any point leaves a valid stream whose failed output is what the
    .done events said."""
    options = OutputOptions(custom_tools=frozenset({"apply_patch"}), reasoning_summary=summary, think_tags=True)
    translator = ChatToResponses(new_response(ECHO, "resp_1", 0), CountingIds(), options=options)
    data = b"".join(THINKING[:good]) + (b"data: {oops\n\n" + chunk(finish="stop") if bad_line else b"")
    events = translator.start()
    try:
        for piece in split_at(data, cuts):
            events += translator.feed_bytes(piece)
        raise CompatError("upstream went away", code="upstream_error")
    except CompatError as exc:
        events += translator.fail(exc)
    assert_valid(validate_responses_sse(encoded(events)))
    assert events[-1]["type"] == "response.failed"
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    # Every byte of answer text the upstream sent is in the output, whatever was held back for tags.
    sent = "".join(orjson.loads(c[6:])["choices"][0]["delta"].get("content") or "" for c in THINKING[:good])
    output = events[-1]["response"]["output"]
    texts = [p["text"] for item in output for p in item.get("content") or item.get("summary") or [] if "text" in p]
    assert "".join(texts) == sent.replace("<think>", "").replace("</think>", "")


@pytest.mark.parametrize(
    ("calls", "finish"),
    [
        ([("call_a", "get_time", '{"tz":"UTC"}'), ("call_b", "exec_command", '{"cmd":"rm -rf bu')], "length"),
        ([("call_a", "get_time", "{}"), ("call_a", "get_date", "{}"), (None, "", "{}")], "tool_calls"),
    ],
)
def test_the_calls_shown_streamed_and_not_are_the_same(calls: list[tuple[str | None, str, str]], finish: str) -> None:
    """A cut call, a nameless one and a repeated call id get the same treatment
    in a non-streamed answer as in the stream."""
    message = {"role": "assistant", "content": None, "tool_calls": [
        {"type": "function", "function": {"name": name, "arguments": args}, **({"id": id} if id else {})}
        for id, name, args in calls
    ]}
    completion = {"choices": [{"index": 0, "message": message, "finish_reason": finish}]}
    left_out: list[str] = []
    whole = chat_completion_to_response(
        completion, new_response(ECHO, "resp_1", 1700000000), CountingIds(), left_out=left_out
    )
    pieces = [chunk(call_delta(i, id=id, name=name, args=args[:5])) + chunk(call_delta(i, args=args[5:]))
              for i, (id, name, args) in enumerate(calls)]
    translator = ChatToResponses(new_response(ECHO, "resp_1", 1700000000), CountingIds())
    streamed = translator.start()
    for piece in [*pieces, chunk(finish=finish), b"data: [DONE]\n\n"]:
        streamed += translator.feed_bytes(piece)
    streamed += translator.close()
    assert_valid(validate_responses_sse(encoded(streamed)))
    assert streamed[-1]["response"] == whole
    call_ids = [item["call_id"] for item in whole["output"]]
    assert len(call_ids) == len(set(call_ids)) == (1 if finish == "length" else 2)
    # The call left out (cut, or nameless) is counted the same way, both ways.
    assert left_out == (["exec_command"] if finish == "length" else [""])
    assert translator.left_out_calls == 1


def test_calls_left_out_by_a_fault_are_counted() -> None:
    translator = ChatToResponses(new_response(ECHO, "resp_1", 1700000000), CountingIds())
    translator.start()
    translator.feed_bytes(chunk(call_delta(0, id="call_a", name="exec_command", args='{"cmd":')))
    translator.fail(UpstreamProtocolError("cut"))
    assert translator.left_out_calls == 1


# -- calls are announced only when complete, whatever the chunks and the fault --

call_piece = st.fixed_dictionaries(
    {"index": st.integers(0, 2)},
    optional={
        "id": st.sampled_from(["call_x", "call_y", "call_z"]),
        "name": st.sampled_from(["exec_command", "apply_patch", "get_time"]),
        "args": st.sampled_from(['{"cmd":', '"echo hi"', "}", '{"input":"*** Be', "gin", '"}', ""]),
    },
)
delta_chunk = st.one_of(
    st.builds(lambda text: chunk({"content": text}), st.sampled_from(["Hi", " there", "<think>", "</think>"])),
    st.builds(lambda text: chunk({"reasoning_content": text}), st.sampled_from(["Hm", "."])),
    st.builds(lambda piece: chunk(call_delta(piece["index"], id=piece.get("id"), name=piece.get("name"), args=piece.get("args"))), call_piece),
)


@settings(max_examples=200, deadline=None)
@given(
    before=st.lists(delta_chunk, max_size=8),
    finish=st.sampled_from([None, "tool_calls", "stop", "length"]),
    after=st.lists(delta_chunk, max_size=3),
    fault=st.sampled_from(["bad-line", "raise", "error-chunk", "cut"]),
    cuts=st.lists(st.integers(0, 4096), max_size=4),
    think=st.booleans(),
)
def test_no_call_is_announced_before_its_finish_whatever_the_fault(
    before: list[bytes], finish: str | None, after: list[bytes], fault: str, cuts: list[int], think: bool
) -> None:
    """Any mix of text, reasoning and tool call deltas (indices reused, names
    and ids late or missing), a fault anywhere after them: no call item is
    announced unless the finish came before the fault."""
    options = OutputOptions(custom_tools=frozenset({"apply_patch"}), think_tags=think)
    translator = ChatToResponses(new_response(ECHO, "resp_1", 0), CountingIds(), options=options)
    data = b"".join(before) + (chunk(finish=finish) if finish else b"") + b"".join(after)
    data += {"bad-line": b"data: {oops\n\n", "error-chunk": b'data: {"error": {"message": "boom"}}\n\n',
             "cut": b'data: {"choices": [{"ind', "raise": b""}[fault]
    events = translator.start()
    try:
        for piece in split_at(data, cuts):
            events += translator.feed_bytes(piece)
        if fault == "raise":
            raise CompatError("upstream went away", code="upstream_error")
        events += translator.close()
    except CompatError as exc:
        events += translator.fail(exc)
    assert_valid(validate_responses_sse(encoded(events)))
    assert events[-1]["type"] == "response.failed"
    call_types = ("function_call", "custom_tool_call")
    announced = [e for e in events if e["type"].startswith("response.output_item.") and e["item"]["type"] in call_types]
    if finish is None:
        assert announced == []
        assert not [i for i in events[-1]["response"]["output"] if i["type"] in call_types]
    else:
        # Every call event comes after the finish chunk's own events: each call is added and done together.
        kinds = [e["type"] for e in announced]
        assert kinds == ["response.output_item.added", "response.output_item.done"] * (len(kinds) // 2)
        for done in announced[1::2]:
            assert done["item"]["status"] == ("incomplete" if finish == "length" else "completed")
