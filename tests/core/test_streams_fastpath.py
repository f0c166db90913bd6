"""ChatToResponses.feed_encoded: the byte-level fast path sends exactly the
bytes the slow path (decode, build the event, encode) sends, for any stream
split anywhere, and ends in the same Response."""

from __future__ import annotations

import itertools
import json
import random
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import compat_asgi.core.streams as streams
from compat_asgi.core.ids import CountingIds, FixedClock
from compat_asgi.core.options import OutputOptions
from compat_asgi.core.responses import new_response
from compat_asgi.core.sse import DEFAULT_MAX_LINE, encode_events
from compat_asgi.core.streams import ChatToResponses
from compat_asgi.errors import CompatError, UpstreamProtocolError
from compat_asgi.validate import assert_valid, validate_responses_sse

ECHO = {"model": "m", "tools": [], "tool_choice": "auto", "parallel_tool_calls": True}
MARK = "\u2063text\u2063"  # where a chunk's text goes in its encoded line

Outcome = tuple[list[Any], dict[str, Any]]


def translator(options: OutputOptions, *, fast: bool, max_line: int = DEFAULT_MAX_LINE) -> ChatToResponses:
    response = new_response(ECHO, "resp_1", 1_700_000_000)
    return ChatToResponses(
        response, CountingIds(), options=options, clock=FixedClock(1_700_000_001), fast=fast, max_line=max_line
    )


def slow(pieces: list[bytes], options: OutputOptions, max_line: int = DEFAULT_MAX_LINE) -> Outcome:
    """The reference: the event dicts of the slow path, encoded, per call."""
    core = translator(options, fast=False, max_line=max_line)
    out: list[Any] = [encode_events(core.start())]
    try:
        for piece in pieces:
            out.append(encode_events(core.feed_bytes(piece)))
        out.append(encode_events(core.close()))
    except CompatError as exc:
        out.append((type(exc), exc.message, exc.code))
        out.append(encode_events(core.fail(exc)))
    return out, core.response


def fast(pieces: list[bytes], options: OutputOptions, max_line: int = DEFAULT_MAX_LINE) -> Outcome:
    core = translator(options, fast=True, max_line=max_line)
    out: list[Any] = [encode_events(core.start())]
    try:
        for piece in pieces:
            spliced, events = core.feed_encoded(piece)
            out.append(spliced + encode_events(events))
        out.append(core.take_encoded() + encode_events(core.close()))
    except CompatError as exc:
        out.append((type(exc), exc.message, exc.code))
        out.append(core.take_encoded() + encode_events(core.fail(exc)))
    return out, core.response


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)])]


# -- generating streams --------------------------------------------------------

# Text that is hard to escape: quotes, backslashes, control characters, line
# separators, DEL, astral characters, "/" (which some encoders escape).
TRICKY = st.text(alphabet='"\\/\n\r\t\b\f\x00\x01\x1f\x7f\u2028\u2029é€😀 ab', max_size=8)
# ... and text that also occurs elsewhere in the chunk around it.
ELSEWHERE = st.sampled_from(["chatcmpl-1", "m/1", "fp", "default", "no", "assistant", "content", "0", "stop"])
TEXT = st.one_of(
    st.text(max_size=12), TRICKY, ELSEWHERE, st.sampled_from(["", " ", "a", "Hello", " world"]), st.text(min_size=40)
)
# Bytes put inside a text's JSON string as sent: valid escapes written
# differently from orjson, and things that make the line invalid.
RAW_TEXT = st.sampled_from(
    [
        b"\\u0041", b"\\u00e9", b"\\u001F", b"\\/", b"\\ud83d\\ude00", b"\\u2028",  # valid, not orjson's way
        b"\\ud800", b"\\udc00x", b"\\x", b"\\u12", b"\\", b"\xff", b"\xc3", b"\xed\xa0\x80",  # invalid
        b"\x01", b"\t", b'"', b"\r", b"\n",  # raw control characters, an unescaped quote, line breaks
    ]
)


@st.composite
def style(draw: st.DrawFn) -> dict[str, Any]:
    """How one upstream writes its chunks."""
    envelope = ["id", "object", "created", "model", "system_fingerprint", "choices", "usage"]
    choice = ["index", "delta", "logprobs", "finish_reason"]
    return {
        "envelope": draw(st.permutations(envelope)),
        "choice": draw(st.permutations(choice)),
        "drop": draw(st.sets(st.sampled_from(["system_fingerprint", "usage", "logprobs", "finish_reason", "index"]))),
        "extra": draw(st.sampled_from([{}, {"service_tier": "default"}, {"x": [1, {"content": "no"}]}])),
        "ensure_ascii": draw(st.booleans()),
        "spaced": draw(st.booleans()),
        "escape_slash": draw(st.booleans()),
        "pad": draw(st.sampled_from(["", " ", "\t"])),  # before the JSON, after "data: "
        "data": draw(st.sampled_from(["data: ", "data:"])),
        "eol": draw(st.sampled_from(["\n", "\n", "\r\n", "\r"])),
        "logprobs": draw(st.sampled_from([None, {"content": [{"token": "a", "logprob": -0.1}]}])),
    }


def dumps(value: Any, s: dict[str, Any]) -> str:
    text = json.dumps(value, ensure_ascii=s["ensure_ascii"], separators=(", ", ": ") if s["spaced"] else (",", ":"))
    return text.replace("/", "\\/") if s["escape_slash"] else text


KINDS = ["text"] * 24 + [
    "raw_text", "role", "role_text", "reasoning", "refusal", "tool", "finish", "usage", "text_usage",
    "text_finish", "text_extra", "other_id", "comment", "multiline", "unended", "event",
]
ENDS = ["done", "error", "broken"]  # after these, nothing more is translated


@st.composite
def chunk_line(draw: st.DrawFn, s: dict[str, Any], kinds: list[str] = KINDS) -> bytes:
    """One SSE event: mostly a chunk in the stream's style carrying text."""
    kind = draw(st.sampled_from(kinds))
    eol = s["eol"]
    if kind == "done":
        return f"{s['data']}[DONE]{eol}{eol}".encode()
    if kind == "comment":
        return f": keepalive{eol}".encode()
    if kind == "event":
        return f"event: message{eol}".encode()
    if kind == "broken":
        return f"{s['data']}{{\"choices\": [{{\"delta\"{eol}{eol}".encode()
    if kind == "error":
        return f"{s['data']}{dumps({'error': {'message': 'boom', 'code': 'overloaded'}}, s)}{eol}{eol}".encode()
    delta: dict[str, Any] = {"content": MARK}
    finish: str | None = None
    usage: Any = None
    raw = b""
    if kind == "raw_text":
        raw = draw(RAW_TEXT)
    elif kind == "role":
        delta = draw(st.sampled_from([{"role": "assistant"}, {"role": "assistant", "content": ""}]))
    elif kind == "role_text":
        delta = {"role": "assistant", "content": MARK}
    elif kind == "reasoning":
        delta = {draw(st.sampled_from(["reasoning_content", "reasoning"])): MARK}
    elif kind == "refusal":
        delta = {"refusal": MARK}
    elif kind == "tool":
        call: dict[str, Any] = {"index": draw(st.integers(0, 1))}
        if draw(st.booleans()):
            call.update(id=f"call_{call['index']}", type="function")
        call["function"] = {"name": draw(st.sampled_from(["get_weather", "lookup"])), "arguments": MARK}
        delta = {"tool_calls": [call]}
    elif kind == "finish":
        delta, finish = {}, draw(st.sampled_from(["stop", "length", "tool_calls", "content_filter"]))
    elif kind == "text_finish":
        finish = draw(st.sampled_from(["stop", "length"]))
    elif kind == "text_extra":
        delta = {"content": MARK, draw(st.sampled_from(["tool_calls", "function_call", "x"])): None}
    if kind in ("usage", "text_usage"):
        usage = {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}
    choice_values = {"index": 0, "delta": delta, "logprobs": s["logprobs"], "finish_reason": finish}
    choice = {key: choice_values[key] for key in s["choice"] if key not in s["drop"] or key == "delta"}
    values = {
        "id": "chatcmpl-2" if kind == "other_id" else "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": "m/1",
        "system_fingerprint": "fp",
        "choices": [] if kind == "usage" else [choice],
        "usage": usage,
    }
    body = {key: values[key] for key in s["envelope"] if key not in s["drop"] or usage is not None}
    body.update(s["extra"])
    encoded = dumps(body, s).encode()
    text = draw(TEXT)
    inside = dumps(text, s).encode()[1:-1] + raw
    encoded = encoded.replace(dumps(MARK, s).encode()[1:-1], inside)
    if kind == "multiline":  # the JSON over two data lines, joined with "\n" by SSE
        return f"{s['data']}{{{eol}{s['data']}".encode() + encoded[1:] + f"{eol}{eol}".encode()
    # "unended": no blank line after it, so the next data line joins its event.
    end: str = eol if kind == "unended" else eol + eol
    head: str = s["data"] + s["pad"]
    return head.encode() + encoded + end.encode()


@st.composite
def chat_stream(draw: st.DrawFn) -> list[bytes]:
    """A stream as its events (and lines that are not whole events)."""
    s = draw(style())
    lines = draw(st.lists(chunk_line(s), min_size=4, max_size=40))
    if draw(st.booleans()):
        lines.insert(draw(st.integers(0, len(lines))), draw(chunk_line(s, ENDS)))
    return lines


OPTIONS = st.builds(OutputOptions, reasoning_summary=st.booleans(), think_tags=st.sampled_from([False, False, True]))


def event_ends(events: list[bytes]) -> list[int]:
    """Where each event ends: upstream reads often end there."""
    return list(itertools.accumulate(len(event) for event in events))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    chat_stream(),
    st.lists(st.integers(min_value=0), max_size=12),
    st.booleans(),
    OPTIONS,
    st.one_of(st.none(), st.integers(min_value=0)),
)
def test_the_fast_path_sends_the_slow_paths_bytes(
    events: list[bytes], cuts: list[int], at_events: bool, options: OutputOptions, limit: int | None
) -> None:
    stream = b"".join(events)
    pieces = split_at(stream, cuts + event_ends(events) if at_events else cuts)
    # A line limit some of these lines are just over, or none.
    sizes = sorted(len(event) for event in events)
    max_line = DEFAULT_MAX_LINE if limit is None or not sizes else max(sizes[limit % len(sizes)] - 4, 1)
    assert fast(pieces, options, max_line) == slow(pieces, options, max_line)


# -- the fast path is taken, and the slow path is still right ------------------


def text_stream(words: list[str], *, finish: str = "stop") -> bytes:
    def line(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        body = {
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "created": 1_700_000_000,
            "model": "m",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
        }
        return b"data: " + orjson.dumps(body) + b"\n\n"

    return b"".join(
        [line({"role": "assistant", "content": ""})]
        + [line({"content": word}) for word in words]
        + [line({}, finish), b"data: [DONE]\n\n"]
    )


WORDS = ["Hello", ",", " wor", "ld", ' "quoted"', " back\\slash", "\n", " é", " 😀", " \u2028", " \x01"]


def parsed_lines(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every data line the translator decodes from now on."""
    seen: list[bytes] = []
    parse = streams._parse_chunk

    def counting(data: bytes) -> Any:
        seen.append(data)
        return parse(data)

    monkeypatch.setattr(streams, "_parse_chunk", counting)
    return seen


@pytest.mark.parametrize("split", ["whole", "per event", "bytewise"])
def test_text_chunks_are_spliced_without_being_decoded(monkeypatch: pytest.MonkeyPatch, split: str) -> None:
    data = text_stream(WORDS * 10)
    events = [event + b"\n\n" for event in data.split(b"\n\n")[:-1]]
    pieces = {"whole": [data], "per event": events, "bytewise": [data[i : i + 1] for i in range(len(data))]}[split]
    assert fast(pieces, OutputOptions()) == slow(pieces, OutputOptions())
    decoded = parsed_lines(monkeypatch)
    out, response = fast(pieces, OutputOptions())
    assert_valid(validate_responses_sse(b"".join(out)))
    assert response["output"][0]["content"][0]["text"] == "".join(WORDS * 10)
    # The role chunk, the first text chunk (it opens the part, and its
    # envelope is learnt) and the finish chunk; the rest are spliced.
    assert [orjson.loads(line)["choices"][0]["delta"] for line in decoded] == [
        {"role": "assistant", "content": ""},
        {"content": "Hello"},
        {},
    ]


def test_a_new_envelope_is_learnt_again() -> None:
    """An upstream whose ``created`` moves on mid-stream keeps the fast path."""
    first, second = text_stream(["a"] * 20, finish="stop").split(b"\n\n")[1:3]
    later = first.replace(b"1700000000", b"1700000001")
    lines = [first, first, later, later, later]
    stream = b"".join(line + b"\n\n" for line in lines)
    core = translator(OutputOptions(), fast=True)
    core.start()
    core.feed_encoded(stream)
    assert core._envelope is not None and core._envelope.prefix.startswith(later[6:40])
    assert fast([stream], OutputOptions()) == slow([stream], OutputOptions())


def test_where_the_text_goes_is_proven_not_guessed() -> None:
    """The learnt envelope splits a line where its delta's text is, even when
    the same text occurs before it (a field that varies) or the key is there
    twice (the last one counts)."""
    streams_ = [
        [
            b'{"id":"same","choices":[{"delta":{"content":"same"}}]}',
            b'{"id":"same","choices":[{"delta":{"content":"same"}}]}',
            b'{"id":"other","choices":[{"delta":{"content":"same"}}]}',
        ],
        [
            b'{"choices":[{"delta":{"content":"b","content":"b"}}]}',
            b'{"choices":[{"delta":{"content":"b","content":"b"}}]}',
            b'{"choices":[{"delta":{"content":"c","content":"b"}}]}',
            b'{"choices":[{"delta":{"content":"b","content":"c"}}]}',
        ],
        [  # a line that is the envelope's prefix and suffix overlapping: no text in it
            b'{"choices":[{"delta":{"content":"a"}}]}',
            b'{"choices":[{"delta":{"content":"a"}}]}',
            b'{"choices":[{"delta":{"content":"}}]}',
        ],
    ]
    for lines in streams_:
        data = b"".join(b"data: " + line + b"\n\n" for line in lines)
        for pieces in ([data], [b"data: " + line + b"\n\n" for line in lines]):
            assert fast(pieces, OutputOptions()) == slow(pieces, OutputOptions())


def test_a_line_that_continues_an_event_is_not_spliced() -> None:
    """The decoder holds an unended event: the next data line belongs to it,
    even when that line alone would be a text chunk."""
    data = text_stream(["one", " two", " three"])
    lines = [line + b"\n\n" for line in data.split(b"\n\n")[:-1]]
    unended = lines[2][:-1]  # " two" without its blank line: " three" joins it
    for pieces in ([lines[0], lines[1], unended, lines[3]], [lines[0] + lines[1] + unended, lines[3]]):
        assert fast(pieces, OutputOptions()) == slow(pieces, OutputOptions())
        assert fast(pieces, OutputOptions())[0][-2][0] is UpstreamProtocolError


def test_nothing_after_done_counts_however_the_reads_are_cut() -> None:
    """Not text, and not a line over the limit either: the stream ended."""
    data = text_stream(["one", " two"]) + text_stream(["x" * 300])
    done = data.index(b"[DONE]")
    for cuts in ([done + 3], [done + 8], [done + 8, done + 20], [done + 3, done + 8, done + 220]):
        pieces = split_at(data, cuts)
        out, response = fast(pieces, OutputOptions(), 256)
        assert (out, response) == slow(pieces, OutputOptions(), 256)
        assert response["status"] == "completed" and response["output"][0]["content"][0]["text"] == "one two"


def test_a_fault_after_spliced_events_in_the_same_read_loses_none_of_them() -> None:
    data = text_stream(["one", " two", " three"]).split(b"data: [DONE]")[0]
    data = data.rsplit(b"data: ", 1)[0] + b'data: {"error": {"message": "boom"}}\n\n'
    core = translator(OutputOptions(), fast=True)
    core.start()
    with pytest.raises(CompatError) as caught:
        core.feed_encoded(data)
    assert core.pending
    out = core.take_encoded() + encode_events(core.fail(caught.value))
    assert out.count(b"event: response.output_text.delta\n") == 3
    assert out == slow([data], OutputOptions())[0][-1]


def test_a_text_line_over_the_limit_still_fails() -> None:
    data = text_stream(["short", "short", "x" * 300])
    events = [event + b"\n\n" for event in data.split(b"\n\n")[:-1]]
    for pieces in (events, [b"".join(events[:2]), b"".join(events[2:])], [data[:300], data[300:]]):
        assert fast(pieces, OutputOptions(), 256) == slow(pieces, OutputOptions(), 256)
        core = translator(OutputOptions(), fast=True, max_line=256)
        core.start()
        with pytest.raises(CompatError) as caught:
            for piece in pieces:
                core.feed_encoded(piece)
        assert caught.value.code == "upstream_line_too_long"


def test_an_item_id_that_cannot_be_cut_falls_back() -> None:
    """Ids come from a configurable factory: one containing the template's
    own mark only costs the fast path, never the output."""

    def ids(prefix: str) -> str:
        return f"{prefix}_{streams._DELTA_MARK}"

    data = text_stream(WORDS)
    outs = []
    for is_fast in (True, False):
        core = ChatToResponses(new_response(ECHO, "resp_1", 0), ids, fast=is_fast)
        start = encode_events(core.start())
        spliced, events = core.feed_encoded(data)
        assert spliced == b""  # no event could be spliced
        outs.append(start + encode_events(events) + encode_events(core.close()))
    assert outs[0] == outs[1]


def test_random_byte_splits_of_a_long_answer() -> None:
    data = text_stream([random.Random(i).choice(WORDS) for i in range(300)])
    rng = random.Random(7)
    for _ in range(20):
        pieces = split_at(data, [rng.randrange(len(data)) for _ in range(rng.randrange(1, 60))])
        assert fast(pieces, OutputOptions()) == slow(pieces, OutputOptions())
