"""Server-sent events: a bounded line buffer, an incremental decoder, encoders.

Sans-io in the style of h11: ``feed()`` bytes as they arrive, get back the
events that became complete. A line longer than ``max_line`` raises
:class:`~compat_asgi.errors.LineTooLong` instead of growing without bound.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple

import orjson

from compat_asgi.errors import LineTooLong

__all__ = [
    "DEFAULT_MAX_LINE",
    "DONE",
    "LineBuffer",
    "ServerSentEvent",
    "SSEDecoder",
    "encode_event",
    "encode_events",
    "encode_chunks",
    "encode_data",
    "encode_comment",
    "event_offset",
    "event_data",
    "DONE_FRAME",
]

DEFAULT_MAX_LINE = 1 << 20  # 1 MiB per SSE line
DONE = b"[DONE]"
DONE_FRAME = b"data: [DONE]\n\n"


class LineBuffer:
    """Splits a byte stream into lines (``\\n``, ``\\r\\n`` or ``\\r``), bounded per line.

    The result never depends on how the stream was split into chunks: a line
    over ``max_line`` bytes raises whether it arrived whole or in pieces, and
    the complete lines before it are always delivered first (when they came in
    the same chunk, the error is kept: :meth:`check` raises it at once, and so
    does the next ``feed``).
    """

    __slots__ = ("_buf", "_max_line", "_skip_lf", "_error")

    def __init__(self, max_line: int = DEFAULT_MAX_LINE) -> None:
        self._buf = bytearray()
        self._max_line = max_line
        self._skip_lf = False
        self._error: LineTooLong | None = None

    def _too_long(self) -> LineTooLong:
        self._buf = bytearray()
        return LineTooLong(f"upstream sent an SSE line longer than {self._max_line} bytes")

    def feed(self, data: bytes) -> list[bytes]:
        if self._error is not None:
            raise self._error
        if self._skip_lf and data:
            # The previous chunk ended in CR; an LF right after it is the same line end.
            self._skip_lf = False
            if data[0] == 10:
                data = data[1:]
        if b"\n" not in data and b"\r" not in data:
            # No line end: append in place, so a trickling upstream costs O(n), not O(n^2).
            self._buf += data
            if len(self._buf) > self._max_line:
                raise self._too_long()
            return []
        buf = bytes(self._buf) + data if self._buf else data
        if b"\r" in buf:
            self._skip_lf = buf.endswith(b"\r")
            buf = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        lines = buf.split(b"\n")
        rest = lines.pop()
        if len(buf) > self._max_line:
            lines.append(rest)
            for count, line in enumerate(lines):
                if len(line) > self._max_line:
                    error = self._too_long()
                    if not count:
                        raise error
                    self._error = error
                    return lines[:count]
            lines.pop()
        self._buf = bytearray(rest)
        return lines

    def check(self) -> None:
        """Raise the error found after the lines the last ``feed`` returned, if any.

        A caller handles those lines first, then calls this, so the fault is
        reported as soon as the read that carried it is translated, not when
        (or if) the upstream sends more.
        """
        if self._error is not None:
            raise self._error

    @property
    def pending(self) -> int:
        """Bytes held for an incomplete line."""
        return len(self._buf)

    @property
    def idle(self) -> bool:
        """Nothing held: the next byte fed starts a new line."""
        return not self._buf and not self._skip_lf and self._error is None


class ServerSentEvent(NamedTuple):
    event: bytes | None
    data: bytes


class SSEDecoder:
    """Incremental SSE decoder (WHATWG rules: ``event``/``data`` fields, comments, blank line dispatch)."""

    __slots__ = ("_lines", "_event", "_data")

    def __init__(self, max_line: int = DEFAULT_MAX_LINE) -> None:
        self._lines = LineBuffer(max_line)
        self._event: bytes | None = None
        self._data: list[bytes] = []

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        out: list[ServerSentEvent] = []
        for line in self._lines.feed(chunk):
            if not line:
                if self._data:
                    out.append(ServerSentEvent(self._event, b"\n".join(self._data)))
                self._event = None
                self._data = []
                continue
            if line[0] == 58:  # b":" comment / keepalive
                continue
            field, _, value = line.partition(b":")
            if value[:1] == b" ":
                value = value[1:]
            if field == b"data":
                self._data.append(value)
            elif field == b"event":
                self._event = value
        return out

    @property
    def idle(self) -> bool:
        """Nothing held (no partial line, field or error): the next byte fed
        starts a new event, so a caller may read whole events from the front
        of a chunk itself and feed only the rest."""
        return self._lines.idle and not self._data and self._event is None

    def check(self) -> None:
        """Raise a fault found after the events the last :meth:`feed` returned (see :meth:`LineBuffer.check`)."""
        self._lines.check()

    def close(self) -> list[ServerSentEvent]:
        """End of stream: an event not terminated by a blank line is still delivered."""
        out = self.feed(b"\n\n") if (self._lines.pending or self._data) else []
        return out


def encode_event(payload: dict[str, Any]) -> bytes:
    """A Responses-style event: ``event: <type>`` + ``data: <json>``."""
    name: str = payload["type"]
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


def encode_events(events: Iterable[dict[str, Any]]) -> bytes:
    """Several Responses events as one SSE byte string (one write, not one per event)."""
    return b"".join([encode_event(event) for event in events])


def encode_data(payload: dict[str, Any]) -> bytes:
    """A chat-completions-style event: ``data: <json>`` only."""
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def encode_chunks(chunks: Iterable[dict[str, Any]]) -> bytes:
    """Several chat chunks as one SSE byte string."""
    return b"".join([encode_data(chunk) for chunk in chunks])


def event_data(encoded: bytes) -> list[bytes]:
    """The JSON data of each event :func:`encode_events` made into ``encoded``
    (what a transport that frames events otherwise sends), without encoding
    them again: each is ``event: <type>\ndata: <json>\n\n``."""
    return [piece[piece.index(b"\ndata: ") + 7 :] for piece in encoded.split(b"\n\n")[:-1]]


def event_offset(encoded: bytes, count: int) -> int:
    """Where the events that :func:`encode_events` made into ``encoded`` go on
    after the first ``count`` of them (its length, if it holds fewer): each
    ends with the one blank line, as JSON data holds no raw line break."""
    start = 0
    for _ in range(count):
        end = encoded.find(b"\n\n", start)
        if end < 0:
            return len(encoded)
        start = end + 2
    return start


def encode_comment(text: bytes = b"") -> bytes:
    return b": " + text + b"\n\n"
