"""LineBuffer and SSEDecoder: bounded, and blind to how the bytes were split."""

from __future__ import annotations

import ast
from pathlib import Path

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

import compat_asgi
from compat_asgi.core.sse import (
    LineBuffer,
    ServerSentEvent,
    SSEDecoder,
    encode_data,
    encode_event,
    encode_events,
    event_data,
    event_offset,
)
from compat_asgi.errors import LineTooLong


def lines_of(pieces: list[bytes], max_line: int = 1 << 20) -> list[bytes]:
    buffer = LineBuffer(max_line)
    out: list[bytes] = []
    for piece in pieces:
        out += buffer.feed(piece)
    return out


@pytest.mark.parametrize("eol", [b"\n", b"\r\n", b"\r"])
def test_every_line_ending_splits_lines(eol: bytes) -> None:
    data = eol.join([b"a", b"", b"bc", b""])
    assert lines_of([data]) == [b"a", b"", b"bc"]
    assert lines_of([data[i : i + 1] for i in range(len(data))]) == [b"a", b"", b"bc"]


def test_crlf_split_across_feeds_is_one_line_end() -> None:
    assert lines_of([b"a\r", b"\nb\r", b"\n"]) == [b"a", b"b"]


@given(st.binary(max_size=300), st.lists(st.integers(0, 300), max_size=20))
def test_lines_do_not_depend_on_splits(data: bytes, cuts: list[int]) -> None:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces = [data[a:b] for a, b in zip([0, *points], [*points, len(data)])]
    assert lines_of(pieces) == lines_of([data])


@pytest.mark.parametrize("split", [1, 7, 4096])
def test_line_limit_holds_however_the_line_arrives(split: int) -> None:
    data = b"data: " + b"x" * 5000 + b"\n"
    with pytest.raises(LineTooLong):
        lines_of([data[i : i + split] for i in range(0, len(data), split)], max_line=4096)


def test_buffer_holds_only_the_partial_line() -> None:
    buffer = LineBuffer(100)
    buffer.feed(b"complete line\npartial")
    assert buffer.pending == len(b"partial")


def test_decoder_handles_fields_comments_and_multiline_data() -> None:
    decoder = SSEDecoder()
    stream = b": keepalive\n\nevent: x\ndata: {\"a\":\ndata:1}\nid: 7\nretry: 10\n\ndata: [DONE]\n\n"
    assert decoder.feed(stream) == [
        ServerSentEvent(b"x", b'{"a":\n1}'),
        ServerSentEvent(None, b"[DONE]"),
    ]


def test_decoder_close_delivers_an_unterminated_event() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: tail") == []
    assert decoder.close() == [ServerSentEvent(None, b"tail")]


def test_encoders_frame_events() -> None:
    assert encode_event({"type": "response.created", "n": 1}) == (
        b'event: response.created\ndata: {"type":"response.created","n":1}\n\n'
    )
    assert encode_data({"a": 1}) == b'data: {"a":1}\n\n'


IO_MODULES = {"asyncio", "httpx", "starlette", "uvicorn", "anyio", "socket", "h11", "trio", "compat_asgi.middleware", "compat_asgi.upstream"}


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_core_imports_nothing_from_the_io_stack() -> None:
    package = Path(compat_asgi.__file__).parent
    pure = sorted(package.glob("core/*.py")) + [package / "errors.py", package / "validate.py"]
    for path in pure:
        for name in imported_modules(path):
            root = name.split(".")[0]
            assert root not in IO_MODULES and name not in IO_MODULES, f"{path.name} imports {name}"
            if root == "compat_asgi":
                assert name.startswith("compat_asgi.core") or name == "compat_asgi.errors", (
                    f"{path.name} imports {name}"
                )


def test_lines_before_an_over_long_line_are_delivered_first() -> None:
    buffer = LineBuffer(10)
    assert buffer.feed(b"ok\n" + b"x" * 20 + b"\nlater\n") == [b"ok"]
    with pytest.raises(LineTooLong):
        buffer.feed(b"")


def test_check_reports_the_over_long_line_after_the_lines_before_it_without_more_input() -> None:
    buffer = LineBuffer(10)
    buffer.check()  # nothing wrong yet
    assert buffer.feed(b"ok\n" + b"x" * 20 + b"\n") == [b"ok"]
    with pytest.raises(LineTooLong):
        buffer.check()


EVENTS = st.lists(
    st.fixed_dictionaries(
        {"type": st.sampled_from(["response.output_text.delta", "response.completed"])},
        # Text that looks like SSE framing, raw line breaks included: JSON escapes them.
        optional={"delta": st.text(alphabet=st.sampled_from("ab\n\r:data event\u2028"), max_size=30),
                  "sequence_number": st.integers(0, 10**6)},
    ),
    max_size=8,
)


@given(EVENTS, st.integers(0, 10))
def test_encoded_events_are_found_again_without_decoding(events: list[dict[str, object]], count: int) -> None:
    encoded = encode_events(events)
    assert event_data(encoded) == [orjson.dumps(event) for event in events]
    assert encoded[event_offset(encoded, count) :] == encode_events(events[count:])
