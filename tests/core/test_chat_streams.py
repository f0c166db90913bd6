"""ResponsesToChat: Responses events in, chat chunks out, independent of how bytes are split."""

from __future__ import annotations

from typing import Any

import openai
import openai._streaming
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletionChunk

from compat_asgi.core.chat_streams import ResponsesToChat, chat_usage, response_to_chat_completion
from compat_asgi.core.ids import CountingIds
from compat_asgi.core.responses import new_response
from compat_asgi.core.sse import DONE_FRAME, encode_chunks, encode_data, encode_event
from compat_asgi.core.streams import ChatToResponses
from compat_asgi.errors import (
    CompatError,
    LineTooLong,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamStatusError,
)
from compat_asgi.validate import assert_valid, validate_chat_completion, validate_chat_sse

# --------------------------------------------------------------------------
# Building upstream Responses streams by hand


class Upstream:
    """Writes a Responses stream: ``event:`` + ``data:`` frames with sequence numbers."""

    def __init__(self) -> None:
        self.seq = 0
        self.frames: list[bytes] = []

    def ev(self, kind: str, *, data_only: bool = False, **fields: Any) -> Upstream:
        payload = {"type": kind, "sequence_number": self.seq, **fields}
        self.seq += 1
        frame = encode_event(payload)
        self.frames.append(frame.split(b"\n", 1)[1] if data_only else frame)
        return self

    def raw(self, data: bytes) -> Upstream:
        self.frames.append(data)
        return self

    def bytes(self) -> bytes:
        return b"".join(self.frames)


def response_obj(status: str, output: list[dict[str, Any]] | None = None, **fields: Any) -> dict[str, Any]:
    return {"id": "resp_1", "object": "response", "created_at": 1, "model": "up", "status": status,
            "output": output or [], "usage": None, **fields}


def fc_item(item_id: str, call_id: str, name: str, arguments: str, status: str = "completed") -> dict[str, Any]:
    return {"id": item_id, "type": "function_call", "status": status, "call_id": call_id, "name": name,
            "arguments": arguments}


RESPONSES_USAGE = {
    "input_tokens": 11,
    "input_tokens_details": {"cached_tokens": 3},
    "output_tokens": 7,
    "output_tokens_details": {"reasoning_tokens": 2},
    "total_tokens": 18,
}
CHAT_USAGE = {
    "prompt_tokens": 11,
    "completion_tokens": 7,
    "total_tokens": 18,
    "prompt_tokens_details": {"cached_tokens": 3},
    "completion_tokens_details": {"reasoning_tokens": 2},
}

FINAL_OUTPUT = [
    {"id": "rs_1", "type": "reasoning", "summary": [], "content": [{"type": "reasoning_text", "text": "Thinking é."}]},
    {"id": "msg_1", "type": "message", "status": "completed", "role": "assistant",
     "content": [{"type": "output_text", "text": "Calling tools ✓", "annotations": [], "logprobs": []}]},
    fc_item("fc_1", "call_a", "get_weather", '{"location":"Paris"}'),
    fc_item("fc_2", "call_b", "get_time", '{"tz":"UTC"}'),
]


def realistic() -> bytes:
    """Reasoning, a message, two interleaved parallel calls, a hosted-tool event, comments, usage."""
    up = Upstream()
    up.ev("response.created", response=response_obj("in_progress"))
    up.ev("response.in_progress", response=response_obj("in_progress"))
    up.raw(b": keepalive\n\n")
    up.ev("response.output_item.added", output_index=0,
          item={"id": "rs_1", "type": "reasoning", "summary": [], "content": []})
    up.ev("response.content_part.added", item_id="rs_1", output_index=0, content_index=0,
          part={"type": "reasoning_text", "text": ""})
    up.ev("response.reasoning_text.delta", item_id="rs_1", output_index=0, content_index=0, delta="Think")
    up.ev("response.reasoning_text.delta", data_only=True, item_id="rs_1", output_index=0, content_index=0,
          delta="ing é.")
    up.ev("response.reasoning_text.done", item_id="rs_1", output_index=0, content_index=0, text="Thinking é.")
    up.ev("response.content_part.done", item_id="rs_1", output_index=0, content_index=0,
          part={"type": "reasoning_text", "text": "Thinking é."})
    up.ev("response.output_item.done", output_index=0, item=FINAL_OUTPUT[0])
    up.ev("response.output_item.added", output_index=1,
          item={"id": "msg_1", "type": "message", "status": "in_progress", "role": "assistant", "content": []})
    up.ev("response.content_part.added", item_id="msg_1", output_index=1, content_index=0,
          part={"type": "output_text", "text": "", "annotations": []})
    up.ev("response.output_text.delta", item_id="msg_1", output_index=1, content_index=0, delta="Calling",
          logprobs=[])
    up.raw(b": still here\n\n")
    up.ev("response.output_text.delta", data_only=True, item_id="msg_1", output_index=1, content_index=0,
          delta=" tools ✓", logprobs=[])
    up.ev("response.output_text.done", item_id="msg_1", output_index=1, content_index=0, text="Calling tools ✓")
    up.ev("response.content_part.done", item_id="msg_1", output_index=1, content_index=0,
          part=FINAL_OUTPUT[1]["content"][0])
    up.ev("response.output_item.done", output_index=1, item=FINAL_OUTPUT[1])
    up.ev("response.output_item.added", output_index=2, item=fc_item("fc_1", "call_a", "get_weather", "", "in_progress"))
    up.ev("response.output_item.added", output_index=3, item=fc_item("fc_2", "call_b", "get_time", "", "in_progress"))
    up.ev("response.function_call_arguments.delta", item_id="fc_1", output_index=2, delta='{"location":')
    up.ev("response.web_search_call.in_progress", item_id="ws_1", output_index=4)  # no chat equivalent
    up.ev("response.function_call_arguments.delta", item_id="fc_2", output_index=3, delta='{"tz":"UTC"}')
    up.ev("response.function_call_arguments.delta", item_id="fc_1", output_index=2, delta='"Paris"}')
    up.ev("response.function_call_arguments.done", item_id="fc_2", output_index=3, arguments='{"tz":"UTC"}')
    up.ev("response.function_call_arguments.done", item_id="fc_1", output_index=2, arguments='{"location":"Paris"}')
    up.ev("response.output_item.done", output_index=2, item=FINAL_OUTPUT[2])
    up.ev("response.output_item.done", output_index=3, item=FINAL_OUTPUT[3])
    up.ev("response.completed", response=response_obj("completed", FINAL_OUTPUT, usage=RESPONSES_USAGE))
    return up.bytes()


REALISTIC = realistic()
BASE = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1700000000, "model": "m"}


def translator(include_usage: bool = True, **kwargs: Any) -> ResponsesToChat:
    return ResponsesToChat(
        completion_id="chatcmpl-1", created=1700000000, model="m", include_usage=include_usage,
        ids=CountingIds(), **kwargs,
    )


def translate(pieces: list[bytes], include_usage: bool = True) -> list[dict[str, Any]]:
    t = translator(include_usage)
    chunks: list[dict[str, Any]] = []
    for piece in pieces:
        chunks += t.feed_bytes(piece)
    chunks += t.close()
    assert t.done
    return chunks


def delta_chunk(delta: dict[str, Any], finish: str | None = None, usage: bool = True) -> dict[str, Any]:
    chunk: dict[str, Any] = {**BASE, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
    if usage:
        chunk["usage"] = None
    return chunk


def encoded(chunks: list[dict[str, Any]]) -> bytes:
    return b"".join(encode_data(c) for c in chunks) + DONE_FRAME


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)])]


def accumulate(chunks: list[dict[str, Any]]) -> dict[str, Any]:
    """What a chat client ends up with: texts, tool calls by index, finish_reason."""
    out: dict[str, Any] = {"content": "", "reasoning": "", "refusal": "", "calls": {}, "finish": None}
    for chunk in chunks:
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            out["content"] += delta.get("content") or ""
            out["reasoning"] += delta.get("reasoning_content") or ""
            out["refusal"] += delta.get("refusal") or ""
            for call in delta.get("tool_calls") or []:
                slot = out["calls"].setdefault(call["index"], {"id": "", "name": "", "arguments": ""})
                function = call.get("function") or {}
                slot["id"] += call.get("id") or ""
                slot["name"] += function.get("name") or ""
                slot["arguments"] += function.get("arguments") or ""
            if choice.get("finish_reason"):
                out["finish"] = choice["finish_reason"]
    out["calls"] = [out["calls"][k] for k in sorted(out["calls"])]
    return out


# --------------------------------------------------------------------------
# The realistic stream


def test_realistic_stream_translates_exactly() -> None:
    assert translate([REALISTIC]) == [
        delta_chunk({"role": "assistant", "content": ""}),
        delta_chunk({"reasoning_content": "Think"}),
        delta_chunk({"reasoning_content": "ing é."}),
        delta_chunk({"content": "Calling"}),
        delta_chunk({"content": " tools ✓"}),
        delta_chunk({"tool_calls": [{"index": 0, "id": "call_a", "type": "function",
                                     "function": {"name": "get_weather", "arguments": ""}}]}),
        delta_chunk({"tool_calls": [{"index": 1, "id": "call_b", "type": "function",
                                     "function": {"name": "get_time", "arguments": ""}}]}),
        delta_chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"location":'}}]}),
        delta_chunk({"tool_calls": [{"index": 1, "function": {"arguments": '{"tz":"UTC"}'}}]}),
        delta_chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]}),
        delta_chunk({}, "tool_calls"),
        {**BASE, "choices": [], "usage": CHAT_USAGE},
    ]


def test_realistic_stream_is_a_valid_chat_stream() -> None:
    assert_valid(validate_chat_sse(encoded(translate([REALISTIC]))))
    assert_valid(validate_chat_sse(encoded(translate([REALISTIC], include_usage=False))))


def test_without_include_usage_there_is_no_usage_anywhere() -> None:
    chunks = translate([REALISTIC], include_usage=False)
    assert all("usage" not in c for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_whole_and_byte_by_byte_give_identical_chunks() -> None:
    whole = translate([REALISTIC])
    assert translate([REALISTIC[i : i + 1] for i in range(len(REALISTIC))]) == whole


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(REALISTIC)), max_size=40))
def test_any_split_gives_identical_chunks(cuts: list[int]) -> None:
    assert translate(split_at(REALISTIC, cuts)) == translate([REALISTIC])


@pytest.mark.parametrize("eol", [b"\r\n", b"\r"])
def test_other_line_endings_are_the_same_stream(eol: bytes) -> None:
    assert translate([REALISTIC.replace(b"\n", eol)]) == translate([REALISTIC])


def test_hosted_tool_events_are_counted_not_translated() -> None:
    t = translator()
    t.feed_bytes(REALISTIC)
    assert t.done and t.ignored_events == 1


def test_each_chunk_is_emitted_as_soon_as_its_event_is_complete() -> None:
    t = translator()
    t.feed_bytes(Upstream().ev("response.created", response=response_obj("in_progress")).bytes())
    frame = Upstream().ev("response.output_text.delta", item_id="m", output_index=0, content_index=0, delta="Hi").bytes()
    assert t.feed_bytes(frame[:-1]) == []
    assert t.feed_bytes(frame[-1:]) == [delta_chunk({"content": "Hi"})]


def test_the_sdk_accumulates_the_chunks() -> None:
    state: ChatCompletionStreamState[Any] = ChatCompletionStreamState()
    for chunk in translate([REALISTIC]):
        state.handle_chunk(ChatCompletionChunk.model_validate(chunk))
    final = state.get_final_completion()
    assert final.id == "chatcmpl-1" and final.model == "m"
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.role == "assistant"
    assert choice.message.content == "Calling tools ✓"
    assert getattr(choice.message, "reasoning_content", None) == "Thinking é."
    assert [(c.id, c.function.name, c.function.arguments) for c in choice.message.tool_calls or []] == [
        ("call_a", "get_weather", '{"location":"Paris"}'),
        ("call_b", "get_time", '{"tz":"UTC"}'),
    ]
    assert final.usage is not None and final.usage.model_dump(exclude_none=True) == CHAT_USAGE


# --------------------------------------------------------------------------
# Framing variants and tolerance


def test_data_only_events_and_event_name_without_type() -> None:
    stream = (
        b'data: {"type":"response.created","response":{}}\n\n'
        b'event: response.output_text.delta\ndata: {"item_id":"m","output_index":0,"content_index":0,"delta":"a"}\n\n'
        b'data: {"type":"response.output_text.delta","item_id":"m","output_index":0,"content_index":0,"delta":"b"}\n\n'
        b'data: {"type":"response.completed","response":{"status":"completed"}}\n\n'
    )
    assert accumulate(translate([stream]))["content"] == "ab"


def test_role_chunk_comes_first_even_without_response_created() -> None:
    stream = Upstream().ev("response.output_text.delta", item_id="m", output_index=0, content_index=0, delta="x")
    stream.ev("response.completed", response=response_obj("completed"))
    chunks = translate([stream.bytes()], include_usage=False)
    assert [c["choices"][0]["delta"] for c in chunks] == [{"role": "assistant", "content": ""}, {"content": "x"}, {}]
    assert_valid(validate_chat_sse(encoded(chunks)))


def test_terminal_only_stream_still_has_role_and_finish() -> None:
    chunks = translate([Upstream().ev("response.completed", response=response_obj("completed")).bytes()])
    assert_valid(validate_chat_sse(encoded(chunks)))
    assert chunks[-1]["usage"] == {**CHAT_USAGE, "prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0,
                                   "prompt_tokens_details": {"cached_tokens": 0},
                                   "completion_tokens_details": {"reasoning_tokens": 0}}


def test_arguments_only_in_done_events_are_still_sent() -> None:
    up = Upstream().ev("response.created", response=response_obj("in_progress"))
    up.ev("response.output_item.added", output_index=0, item=fc_item("fc_1", "call_a", "f", "", "in_progress"))
    up.ev("response.function_call_arguments.done", item_id="fc_1", output_index=0, arguments='{"a":1}')
    up.ev("response.output_item.done", output_index=0, item=fc_item("fc_1", "call_a", "f", '{"a":1}'))
    # A second call that only ever appears in output_item.done.
    up.ev("response.output_item.done", output_index=1, item=fc_item("fc_2", "call_b", "g", '{"b":2}'))
    up.ev("response.completed", response=response_obj("completed", [fc_item("fc_1", "call_a", "f", '{"a":1}'),
                                                                       fc_item("fc_2", "call_b", "g", '{"b":2}')]))
    chunks = translate([up.bytes()])
    assert_valid(validate_chat_sse(encoded(chunks)))
    result = accumulate(chunks)
    assert result["calls"] == [{"id": "call_a", "name": "f", "arguments": '{"a":1}'},
                               {"id": "call_b", "name": "g", "arguments": '{"b":2}'}]
    assert result["finish"] == "tool_calls"


def test_text_missing_from_deltas_is_taken_from_done_events_once() -> None:
    up = Upstream().ev("response.created", response=response_obj("in_progress"))
    up.ev("response.output_text.delta", item_id="msg_1", output_index=0, content_index=0, delta="Hel")
    up.ev("response.output_text.done", item_id="msg_1", output_index=0, content_index=0, text="Hello")
    message = {"id": "msg_1", "type": "message", "role": "assistant", "status": "completed",
               "content": [{"type": "output_text", "text": "Hello"}, {"type": "refusal", "refusal": "No."}]}
    up.ev("response.output_item.done", output_index=0, item=message)
    reasoning = {"id": "rs_1", "type": "reasoning", "summary": [{"type": "summary_text", "text": "A"},
                                                                {"type": "summary_text", "text": "B"}]}
    up.ev("response.completed", response=response_obj("completed", [message, reasoning]))
    result = accumulate(translate([up.bytes()]))
    assert (result["content"], result["refusal"], result["reasoning"]) == ("Hello", "No.", "A\n\nB")


def test_summary_parts_become_paragraphs_of_reasoning_content() -> None:
    up = Upstream()
    for index, text in enumerate(["**Plan**", "**Check**"]):
        up.ev("response.reasoning_summary_part.added", item_id="rs_1", output_index=0, summary_index=index,
              part={"type": "summary_text", "text": ""})
        up.ev("response.reasoning_summary_text.delta", item_id="rs_1", output_index=0, summary_index=index, delta=text)
        up.ev("response.reasoning_summary_text.done", item_id="rs_1", output_index=0, summary_index=index, text=text)
        up.ev("response.reasoning_summary_part.done", item_id="rs_1", output_index=0, summary_index=index,
              part={"type": "summary_text", "text": text})
    up.ev("response.refusal.delta", item_id="msg_1", output_index=1, content_index=0, delta="Sorry")
    up.ev("response.completed", response=response_obj("completed"))
    chunks = translate([up.bytes()], include_usage=False)
    assert [c["choices"][0]["delta"] for c in chunks[1:]] == [
        {"reasoning_content": "**Plan**"},
        {"reasoning_content": "\n\n**Check**"},
        {"refusal": "Sorry"},
        {},
    ]


def test_a_call_whose_name_arrives_late_is_announced_with_its_buffered_arguments() -> None:
    up = Upstream()
    up.ev("response.output_item.added", output_index=0, item={"id": "fc_1", "type": "function_call", "arguments": ""})
    up.ev("response.function_call_arguments.delta", item_id="fc_1", output_index=0, delta="{}")
    up.ev("response.output_item.done", output_index=0, item=fc_item("fc_1", "", "late", "{}"))
    up.ev("response.completed", response=response_obj("completed"))
    chunks = translate([up.bytes()], include_usage=False)
    assert_valid(validate_chat_sse(encoded(chunks)))
    assert chunks[1]["choices"][0]["delta"] == {
        "tool_calls": [{"index": 0, "id": "call_0001", "type": "function", "function": {"name": "late", "arguments": "{}"}}]
    }


def test_logprobs_are_carried_on_the_choice() -> None:
    logprobs = [{"token": "Hi", "bytes": [72, 105], "logprob": -0.1, "top_logprobs": []}]
    up = Upstream().ev("response.output_text.delta", item_id="m", output_index=0, content_index=0, delta="Hi",
                       logprobs=logprobs)
    up.ev("response.completed", response=response_obj("completed"))
    chunks = translate([up.bytes()])
    assert chunks[1]["choices"][0]["logprobs"] == {"content": logprobs, "refusal": None}
    ChatCompletionChunk.model_validate(chunks[1])


def test_events_after_the_terminal_event_are_ignored() -> None:
    up = Upstream().ev("response.completed", response=response_obj("completed"))
    up.ev("response.output_text.delta", item_id="m", output_index=0, content_index=0, delta="late")
    up.raw(b"data: {not json\n\n")
    t = translator(False)
    chunks = t.feed_bytes(up.bytes())
    assert t.done and accumulate(chunks)["content"] == ""
    assert t.feed_bytes(b"data: more garbage\n\n") == [] and t.close() == []


def test_done_sentinel_from_a_lenient_upstream_is_harmless() -> None:
    up = Upstream().ev("response.completed", response=response_obj("completed"))
    assert translate([b"data: [DONE]\n\n" + up.bytes() + b"data: [DONE]\n\n"], include_usage=False)[-1][
        "choices"][0]["finish_reason"] == "stop"


def test_unterminated_final_event_is_delivered_by_close() -> None:
    data = Upstream().ev("response.completed", response=response_obj("completed")).bytes().rstrip(b"\n")
    t = translator(False)
    assert t.feed_bytes(data) == []
    assert t.close()[-1]["choices"][0]["finish_reason"] == "stop"


# --------------------------------------------------------------------------
# finish_reason


@pytest.mark.parametrize(
    ("terminal", "details", "with_call", "finish"),
    [
        ("response.completed", None, False, "stop"),
        ("response.completed", None, True, "tool_calls"),
        ("response.incomplete", {"reason": "max_output_tokens"}, False, "length"),
        ("response.incomplete", {"reason": "content_filter"}, False, "content_filter"),
        ("response.incomplete", {"reason": "something_new"}, False, "length"),
        ("response.incomplete", None, True, "length"),
    ],
)
def test_finish_reason_mapping(terminal: str, details: Any, with_call: bool, finish: str) -> None:
    up = Upstream().ev("response.created", response=response_obj("in_progress"))
    up.ev("response.output_text.delta", item_id="m", output_index=0, content_index=0, delta="x")
    if with_call:
        up.ev("response.output_item.added", output_index=1, item=fc_item("fc", "call", "f", "{}"))
    status = terminal.split(".")[1]
    up.ev(terminal, response=response_obj(status, incomplete_details=details, usage=RESPONSES_USAGE))
    chunks = translate([up.bytes()])
    assert_valid(validate_chat_sse(encoded(chunks)))
    assert chunks[-2]["choices"][0]["finish_reason"] == finish
    assert chunks[-1]["usage"] == CHAT_USAGE


# --------------------------------------------------------------------------
# Failures


def run_until_error(data: bytes, **kwargs: Any) -> tuple[ResponsesToChat, CompatError]:
    t = translator(**kwargs)
    with pytest.raises(CompatError) as caught:
        t.feed_bytes(data)
        t.close()
    return t, caught.value


def test_error_event_raises_with_the_upstream_message_and_code() -> None:
    up = Upstream().ev("response.created", response=response_obj("in_progress"))
    up.ev("error", code="rate_limit_exceeded", message="slow down", param=None)
    t, error = run_until_error(up.bytes())
    assert isinstance(error, UpstreamStatusError)
    assert (error.message, error.code) == ("slow down", "rate_limit_exceeded")
    # The role chunk response.created produced in the same read is not lost to the error.
    role, failure = t.fail(error)
    assert role["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert failure == {
        "error": {"message": "slow down", "type": "server_error", "param": None, "code": "rate_limit_exceeded"}
    }
    assert t.fail(error) == []
    assert t.feed_bytes(b"data: anything\n\n") == [] and t.close() == []


def test_nested_error_event_shape_is_understood() -> None:
    _, error = run_until_error(b'data: {"type":"error","error":{"message":"bad","code":"x"}}\n\n')
    assert (error.message, error.code) == ("bad", "x")


def test_response_failed_raises_with_the_response_error() -> None:
    up = Upstream().ev("response.output_text.delta", item_id="m", output_index=0, content_index=0, delta="par")
    up.ev("response.failed", response=response_obj("failed", error={"code": "server_error", "message": "died"}))
    _, error = run_until_error(up.bytes())
    assert isinstance(error, UpstreamError)
    assert (error.message, error.code) == ("died", "server_error")


@pytest.mark.parametrize(
    "data",
    [
        b"data: {not json\n\n",
        b"data: [1, 2]\n\n",
        b'data: {"no": "type"}\n\n',
        b'data: {"type": "response.output_text.delta", "delta": 5}\n\n',
        b'data: {"type": "response.output_item.added", "item": "x"}\n\n',
    ],
)
def test_malformed_upstream_data_is_a_protocol_error(data: bytes) -> None:
    _, error = run_until_error(data)
    assert isinstance(error, UpstreamProtocolError)
    assert error.code == "upstream_protocol_error"


def test_stream_ending_without_a_terminal_event_raises_on_close() -> None:
    up = Upstream().ev("response.created", response=response_obj("in_progress"))
    up.ev("response.output_text.delta", item_id="m", output_index=0, content_index=0, delta="cut")
    t = translator()
    chunks = t.feed_bytes(up.bytes())
    assert accumulate(chunks)["content"] == "cut"
    with pytest.raises(UpstreamProtocolError):
        t.close()
    assert not t.done


def test_call_that_never_gets_a_name_is_a_protocol_error() -> None:
    up = Upstream().ev("response.function_call_arguments.delta", item_id="fc", output_index=0, delta="{}")
    up.ev("response.completed", response=response_obj("completed"))
    _, error = run_until_error(up.bytes())
    assert isinstance(error, UpstreamProtocolError)


def test_line_over_the_limit_fails_without_buffering_it() -> None:
    t = translator(max_line=1024)
    with pytest.raises(LineTooLong):
        for _ in range(100):
            t.feed_bytes(b"x" * 100)
    assert t.fail(LineTooLong("too long"))[-1]["error"]["code"] == "upstream_line_too_long"


def sdk_stream(raw: bytes) -> openai.Stream[ChatCompletionChunk]:
    # The SDK ships its own httpx fork under some versions; use whatever it uses.
    http: Any = getattr(openai._streaming, "httpx2", None) or getattr(openai._streaming, "httpx")
    response = http.Response(
        200,
        content=raw,
        headers={"content-type": "text/event-stream"},
        request=http.Request("POST", "http://test/v1/chat/completions"),
    )
    client = openai.OpenAI(api_key="k", base_url="http://test/v1")
    return openai.Stream(cast_to=ChatCompletionChunk, response=response, client=client)


def shell(pieces: list[bytes]) -> bytes:
    """What the middleware sends: chunks, then [DONE], or the failure line and no [DONE]."""
    t = translator()
    sent: list[bytes] = []
    try:
        for piece in pieces:
            sent += [encode_data(c) for c in t.feed_bytes(piece)]
        sent += [encode_data(c) for c in t.close()]
    except CompatError as exc:
        return b"".join(sent) + encode_chunks(t.fail(exc))
    return b"".join(sent) + DONE_FRAME


FAILING = (
    Upstream()
    .ev("response.created", response=response_obj("in_progress"))
    .ev("response.output_text.delta", item_id="m", output_index=0, content_index=0, delta="par")
    .ev("error", code="overloaded", message="try later")
    .ev("response.failed", response=response_obj("failed", error={"code": "overloaded", "message": "try later"}))
    .bytes()
)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(FAILING)), max_size=20))
def test_a_failing_stream_fails_the_same_at_any_split(cuts: list[int]) -> None:
    assert shell(split_at(FAILING, cuts)) == shell([FAILING])


def test_sdk_raises_api_error_on_the_failure_line() -> None:
    received: list[ChatCompletionChunk] = []
    with pytest.raises(openai.APIError) as caught:
        for chunk in sdk_stream(shell([FAILING])):
            received.append(chunk)
    assert [c.choices[0].delta.content for c in received] == ["", "par"]
    assert caught.value.message == "try later" and caught.value.code == "overloaded"


def test_sdk_reads_a_normal_stream_to_the_end() -> None:
    chunks = list(sdk_stream(encoded(translate([REALISTIC]))))
    assert len(chunks) == len(translate([REALISTIC]))


# --------------------------------------------------------------------------
# Round trip: chat stream -> ChatToResponses -> ResponsesToChat -> the same chat content


def chat_frame(delta: dict[str, Any] | None = None, finish: str | None = None, **extra: Any) -> bytes:
    payload: dict[str, Any] = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m", **extra}
    if delta is not None or finish is not None:
        payload["choices"] = [{"index": 0, "delta": delta or {}, "finish_reason": finish}]
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def call_delta(index: int, *, id: str | None = None, name: str | None = None, args: str | None = None) -> dict[str, Any]:
    call: dict[str, Any] = {"index": index}
    if id is not None:
        call.update(id=id, type="function")
    function: dict[str, Any] = {}
    if name is not None:
        function["name"] = name
    if args is not None:
        function["arguments"] = args
    call["function"] = function
    return {"tool_calls": [call]}


ORIGINAL_CHAT = [
    chat_frame({"role": "assistant", "content": ""}),
    chat_frame({"reasoning_content": "Think"}),
    chat_frame({"reasoning_content": "ing é."}),
    chat_frame({"content": "Calling"}),
    chat_frame({"content": " tools ✓"}),
    chat_frame(call_delta(0, id="call_a", name="get_weather", args="")),
    chat_frame(call_delta(1, id="call_b", name="get_time", args="")),
    chat_frame(call_delta(0, args='{"location":')),
    chat_frame(call_delta(1, args='{"tz":"UTC"}')),
    chat_frame(call_delta(0, args='"Paris"}')),
    chat_frame(finish="tool_calls"),
    chat_frame(choices=[], usage=CHAT_USAGE),
    b"data: [DONE]\n\n",
]


def forward(frames: list[bytes]) -> tuple[bytes, dict[str, Any]]:
    """Run chat frames through the forward translator: (Responses SSE bytes, final response)."""
    core = ChatToResponses(new_response({"model": "m"}, "resp_1", 1), CountingIds())
    events = core.start()
    for frame in frames:
        events += core.feed_bytes(frame)
    events += core.close()
    return b"".join(encode_event(e) for e in events), core.response


def round_trip(frames: list[bytes], include_usage: bool = True) -> list[dict[str, Any]]:
    responses_sse, _ = forward(frames)
    chunks = translate([responses_sse], include_usage=include_usage)
    assert_valid(validate_chat_sse(encoded(chunks)))
    return chunks


def original(frames: list[bytes]) -> dict[str, Any]:
    return accumulate([orjson.loads(f[6:]) for f in frames if not f.startswith(b"data: [DONE]")])


def test_round_trip_gives_back_the_original_chat_stream() -> None:
    chunks = round_trip(ORIGINAL_CHAT)
    assert accumulate(chunks) == original(ORIGINAL_CHAT)
    assert chunks[-1]["usage"] == CHAT_USAGE


def test_round_trip_through_the_non_streamed_response() -> None:
    _, response = forward(ORIGINAL_CHAT)
    completion = response_to_chat_completion(response, completion_id="chatcmpl-1", created=1, model="m")
    assert_valid(validate_chat_completion(completion))
    message = completion["choices"][0]["message"]
    expected = original(ORIGINAL_CHAT)
    assert message["content"] == expected["content"]
    assert message["reasoning_content"] == expected["reasoning"]
    assert [{"id": c["id"], **c["function"]} for c in message["tool_calls"]] == expected["calls"]
    assert completion["choices"][0]["finish_reason"] == "tool_calls"
    assert completion["usage"] == CHAT_USAGE


# A chat stream as a backend might send it: reasoning and text pieces, then
# parallel calls whose argument pieces interleave in any order.
pieces = st.text(min_size=1, max_size=6)


@st.composite
def chat_streams(draw: st.DrawFn) -> list[bytes]:
    frames = [chat_frame({"role": "assistant", "content": ""})]
    frames += [chat_frame({"reasoning_content": p}) for p in draw(st.lists(pieces, max_size=3))]
    frames += [chat_frame({"content": p}) for p in draw(st.lists(pieces, max_size=4))]
    n_calls = draw(st.integers(0, 3))
    args = [draw(st.lists(pieces, max_size=3)) for _ in range(n_calls)]
    for k in range(n_calls):
        frames.append(chat_frame(call_delta(k, id=f"call_{k}", name=f"f{k}", args="")))
    queue = [(k, p) for k in range(n_calls) for p in args[k]]
    for k, p in draw(st.permutations(queue)):
        frames.append(chat_frame(call_delta(k, args=p)))
    finish = "tool_calls" if n_calls else draw(st.sampled_from(["stop", "length", "content_filter"]))
    frames.append(chat_frame(finish=finish))
    frames.append(b"data: [DONE]\n\n")
    return frames


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chat_streams(), st.lists(st.integers(min_value=0, max_value=10_000), max_size=10))
def test_round_trip_any_stream_at_any_split(frames: list[bytes], cuts: list[int]) -> None:
    responses_sse, _ = forward(frames)
    chunks = translate(split_at(responses_sse, cuts), include_usage=False)
    result = accumulate(chunks)
    expected = original(frames)
    assert (result["content"], result["reasoning"], result["finish"]) == (
        expected["content"], expected["reasoning"], expected["finish"],
    )
    assert result["calls"] == expected["calls"]


# --------------------------------------------------------------------------
# Non-streamed


def test_non_streamed_response_maps_to_a_chat_completion() -> None:
    logprobs = [{"token": "Calling", "bytes": [67], "logprob": -0.5, "top_logprobs": []}]
    output = [
        FINAL_OUTPUT[0],
        {**FINAL_OUTPUT[1], "content": [{**FINAL_OUTPUT[1]["content"][0], "logprobs": logprobs}]},
        {"id": "ws_1", "type": "web_search_call", "status": "completed"},
        *FINAL_OUTPUT[2:],
    ]
    completion = response_to_chat_completion(
        response_obj("completed", output, usage=RESPONSES_USAGE), completion_id="chatcmpl-9", created=5, model="m"
    )
    assert completion == {
        "id": "chatcmpl-9",
        "object": "chat.completion",
        "created": 5,
        "model": "m",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "Calling tools ✓",
                    "refusal": None,
                    "reasoning_content": "Thinking é.",
                    "tool_calls": [
                        {"id": "call_a", "type": "function",
                         "function": {"name": "get_weather", "arguments": '{"location":"Paris"}'}},
                        {"id": "call_b", "type": "function", "function": {"name": "get_time", "arguments": '{"tz":"UTC"}'}},
                    ],
                },
                "logprobs": {"content": logprobs, "refusal": None},
                "finish_reason": "tool_calls",
            }
        ],
        "usage": CHAT_USAGE,
    }
    assert_valid(validate_chat_completion(completion))
    openai.types.chat.ChatCompletion.model_validate(completion)


def test_non_streamed_equals_streamed() -> None:
    streamed = accumulate(translate([REALISTIC]))
    completion = response_to_chat_completion(response_obj("completed", FINAL_OUTPUT), completion_id="c", created=1, model="m")
    message = completion["choices"][0]["message"]
    assert (message["content"], message["reasoning_content"]) == (streamed["content"], streamed["reasoning"])
    assert [{"id": c["id"], **c["function"]} for c in message["tool_calls"]] == streamed["calls"]


@pytest.mark.parametrize(
    ("response", "finish", "content", "refusal"),
    [
        (response_obj("completed", [FINAL_OUTPUT[1]]), "stop", "Calling tools ✓", None),
        (response_obj("incomplete", [FINAL_OUTPUT[1]], incomplete_details={"reason": "max_output_tokens"}),
         "length", "Calling tools ✓", None),
        (response_obj("incomplete", [], incomplete_details={"reason": "content_filter"}), "content_filter", "", None),
        (response_obj("completed", [{"id": "m", "type": "message", "role": "assistant",
                                     "content": [{"type": "refusal", "refusal": "No."}]}]), "stop", None, "No."),
        ({"output": []}, "stop", "", None),
    ],
)
def test_non_streamed_finish_and_content(response: Any, finish: str, content: Any, refusal: Any) -> None:
    completion = response_to_chat_completion(response, completion_id="c", created=1, model="m")
    choice = completion["choices"][0]
    assert (choice["finish_reason"], choice["message"]["content"], choice["message"]["refusal"]) == (
        finish, content, refusal,
    )
    assert choice["logprobs"] is None
    assert_valid(validate_chat_completion(completion))


@pytest.mark.parametrize(
    ("response", "error_type", "message"),
    [
        (response_obj("failed", error={"code": "server_error", "message": "died"}), UpstreamStatusError, "died"),
        (response_obj("cancelled"), UpstreamError, "upstream response was cancelled"),
        (response_obj("in_progress"), UpstreamProtocolError, None),
        ([1], UpstreamProtocolError, None),
        ({"status": "completed"}, UpstreamProtocolError, None),
        (response_obj("completed", [fc_item("fc", "call", "", "{}")]), UpstreamProtocolError, None),
        (response_obj("completed", ["x"]), UpstreamProtocolError, None),
    ],
)
def test_non_streamed_failures_raise(response: Any, error_type: type[CompatError], message: str | None) -> None:
    with pytest.raises(error_type) as caught:
        response_to_chat_completion(response, completion_id="c", created=1, model="m")
    if message is not None:
        assert caught.value.message == message


def test_usage_mapping_fills_zeros_and_keeps_a_larger_total() -> None:
    assert chat_usage(None)["prompt_tokens_details"] == {"cached_tokens": 0}
    assert chat_usage({"input_tokens": 2, "output_tokens": 3})["total_tokens"] == 5
    assert chat_usage({"input_tokens": 2, "output_tokens": 3, "total_tokens": 9})["total_tokens"] == 9
    assert chat_usage({"input_tokens": 2, "output_tokens": 3, "total_tokens": 1})["total_tokens"] == 5
