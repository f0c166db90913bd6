"""The SSE endpoint's stream wrapper sends, with the core's fast path, the
bytes it sends without it, however the upstream's reads are cut and wherever
a fault or the finish falls (the wrapper holds the closing events back and
must keep spliced text in its place)."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compat_asgi.core.ids import CountingIds, FixedClock
from compat_asgi.core.responses import new_response
from compat_asgi.core.streams import ChatToResponses
from compat_asgi.endpoints.responses import _EncodedStream
from compat_asgi.errors import CompatError
from tests.core.test_streams_fastpath import ECHO, chat_stream, chunk_line, event_ends, split_at, style


@st.composite
def finished_stream(draw: st.DrawFn) -> list[bytes]:
    """A stream that gets to its finish: text, then the finish, usage, [DONE]."""
    s = draw(style())
    body = draw(st.lists(chunk_line(s, ["text"] * 8 + ["role", "reasoning", "tool", "comment"]), max_size=25))
    finish = draw(chunk_line(s, ["finish", "text_finish"]))
    after = draw(st.lists(chunk_line(s, ["usage", "text", "comment"]), max_size=2))
    return [*body, finish, *after, draw(chunk_line(s, ["done"]))]


def sent(pieces: list[bytes], *, fast: bool, record: bool) -> tuple[list[bytes], bytes | None]:
    """Each body the wrapper gives the shell to send, and what it recorded."""
    core = ChatToResponses(
        new_response(ECHO, "resp_1", 1_700_000_000), CountingIds(), clock=FixedClock(1_700_000_001), fast=fast
    )
    stream = _EncodedStream(core, record=record, max_recorded=1 << 20)
    out = [stream.start()]
    try:
        for piece in pieces:
            out.append(stream.feed(piece))
            if stream.finished:
                break
        out += stream.close()
    except CompatError as exc:
        out += stream.fail(exc)
    return out, stream.events()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(chat_stream(), finished_stream()), st.lists(st.integers(min_value=0), max_size=8), st.booleans(), st.booleans())
def test_the_wrapper_sends_the_same_bytes_with_the_fast_path(
    events: list[bytes], cuts: list[int], at_events: bool, record: bool
) -> None:
    pieces = split_at(b"".join(events), cuts + event_ends(events) if at_events else cuts)
    fast, fast_recorded = sent(pieces, fast=True, record=record)
    slow, slow_recorded = sent(pieces, fast=False, record=record)
    # Spliced text before a finish in the same read goes out at once, not
    # held with the closing events: the same bytes, in other bodies.
    assert b"".join(fast) == b"".join(slow)
    assert fast_recorded == slow_recorded
    assert fast[-1] == slow[-1]  # the terminal event alone


def test_interrupt_keeps_spliced_text_pending_after_a_fault() -> None:
    line = b'data: {"choices":[{"index":0,"delta":{"content":"%s"},"finish_reason":null}]}\n\n'
    data = b"".join(line % word for word in (b"a", b"b", b"c")) + b"data: {broken\n\n"
    outs = []
    for fast in (True, False):
        core = ChatToResponses(new_response(ECHO, "resp_1", 0), CountingIds(), fast=fast)
        stream = _EncodedStream(core, record=True, max_recorded=1 << 20)
        stream.start()
        stream.feed(line % b"first")  # opens the part, and the fast path learns the envelope
        try:
            stream.feed(data)
        except CompatError:
            assert stream.pending
        outs.append((stream.interrupt(), stream.events()))
    assert outs[0] == outs[1]
    assert outs[0][0].count(b"event: response.output_text.delta\n") == 3


def test_a_read_that_carries_a_whole_answer_is_one_body_then_the_closing_events() -> None:
    """An upstream that outpaces us hands over a whole answer in one read:
    its deltas go out as one body, only the closing events one body each."""
    line = b'data: {"choices":[{"index":0,"delta":{"content":"%s"},"finish_reason":%s}]}\n\n'
    words = [b"w%d " % i for i in range(300)]
    data = b"".join(line % (word, b"null") for word in words) + line % (b"", b'"stop"') + b"data: [DONE]\n\n"
    for fast in (True, False):
        bodies, _ = sent([data], fast=fast, record=False)
        assert len(bodies) == 1 + 1 + 4  # start; the deltas; text, part and item done, completed
        assert bodies[1].count(b"event: response.output_text.delta\n") == 300
