"""Incremental stream translation: chat-completion chunks in, Responses events out.

:class:`ChatToResponses` owns the item/part state machine of the Responses
stream (the protocol the README describes). Feed it one decoded
``chat.completion.chunk`` at a time; every call returns the events that chunk
produced, with ``sequence_number`` assigned, ready to encode. It never awaits
and never buffers text it could already send.

Events are never lost to a fault: each one goes to an outbox the moment its
``sequence_number`` is assigned, and a call that raises leaves the events it
produced before the fault in that outbox. :meth:`ChatToResponses.fail`
returns them first, then closes every open part and item (status
``incomplete``, the text so far) and ends with ``error`` + ``response.failed``.

:meth:`ChatToResponses.feed_encoded` is for callers that send SSE: the
chunk of almost every token takes a byte-level fast path (see
:class:`_Envelope`) whose events come out already encoded, byte for byte
what :func:`~compat_asgi.core.sse.encode_events` makes of the slow path's.

Tool calls are the exception to "never buffers": a call is announced whole,
once it is known complete (at the choice's ``finish_reason``, or at the end of
a stream that never sent one). Clients execute every call an
``output_item.done`` hands them, whatever its status, and retry a failed
turn: a call closed by a fault would run half-made, and run again on each
retry. A call still open at a fault was never shown, so it is not in
``response.failed``'s output.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from compat_asgi.core.ids import Clock, IdFactory
from compat_asgi.core.options import OutputOptions
from compat_asgi.core.reasoning import ThinkSplitter
from compat_asgi.core.responses import (
    arguments_text,
    custom_tool_call_item,
    custom_tool_input,
    finish_response,
    finish_status,
    function_call_item,
    map_usage,
    message_item,
    output_text_part,
    reasoning_item,
    reasoning_text_part,
    refusal_part,
    shown_call,
    summary_text_part,
    tool_name,
)
from compat_asgi.core.sse import DEFAULT_MAX_LINE, DONE, SSEDecoder, encode_event, encode_events
from compat_asgi.errors import CompatError, UpstreamProtocolError, UpstreamStatusError

__all__ = ["ChatToResponses", "completion_to_chunk", "stream_error", "INTERRUPTED"]

Event = dict[str, Any]
# incomplete_details.reason of a response whose client left mid-stream.
INTERRUPTED = "interrupted"
_DEFAULT_OUTPUT = OutputOptions()


@dataclass(frozen=True, slots=True)
class _Kind:
    """How one kind of streamed text part is announced, streamed and finished."""

    part: Callable[[str], dict[str, Any]]
    field: str  # the text field of the part and of the done event
    delta: str
    done: str
    added: str
    part_done: str
    index_key: str
    slot: str  # where finished parts go in the item: "content" or "summary"


_CONTENT = ("response.content_part.added", "response.content_part.done", "content_index", "content")
_KINDS = {
    "output_text": _Kind(
        output_text_part, "text", "response.output_text.delta", "response.output_text.done", *_CONTENT
    ),
    "refusal": _Kind(
        refusal_part, "refusal", "response.refusal.delta", "response.refusal.done", *_CONTENT
    ),
    "reasoning_text": _Kind(
        reasoning_text_part,
        "text",
        "response.reasoning_text.delta",
        "response.reasoning_text.done",
        *_CONTENT,
    ),
    "summary_text": _Kind(
        summary_text_part,
        "text",
        "response.reasoning_summary_text.delta",
        "response.reasoning_summary_text.done",
        "response.reasoning_summary_part.added",
        "response.reasoning_summary_part.done",
        "summary_index",
        "summary",
    ),
}


_OUTPUT_TEXT = _KINDS["output_text"]
_REFUSAL = _KINDS["refusal"]


class _Deltas(list[str]):
    """The deltas of one text or arguments string, kept compact.

    Each delta is its own small str, ~60 bytes of object for a few characters:
    held one by one, a 100,000-delta answer would take ten times its size.
    Every ``_JOIN_EVERY`` new deltas are joined into one string, each delta
    copied once, so memory stays close to the text itself.
    """

    __slots__ = ("fresh",)

    def __init__(self) -> None:
        super().__init__()
        self.fresh = 0

    def append(self, delta: str, /) -> None:
        list.append(self, delta)
        fresh = self.fresh + 1
        if fresh < _JOIN_EVERY:
            self.fresh = fresh
        else:
            self[-fresh:] = ["".join(self[-fresh:])]
            self.fresh = 0


_JOIN_EVERY = 256


class _TextItem:
    """A message or reasoning item being streamed: finished parts plus the open one."""

    __slots__ = ("id", "type", "index", "content", "summary", "kind", "part_index", "chunks")

    def __init__(self, item_id: str, item_type: str, index: int) -> None:
        self.id = item_id
        self.type = item_type
        self.index = index
        self.content: list[dict[str, Any]] = []
        self.summary: list[dict[str, Any]] = []
        self.kind: _Kind | None = None
        self.part_index = 0  # index of the open part in its slot
        self.chunks: list[str] = _Deltas()

    def slot(self, kind: _Kind) -> list[dict[str, Any]]:
        return self.content if kind.slot == "content" else self.summary

    def build(self, status: str, options: OutputOptions | None = None) -> dict[str, Any]:
        if self.type == "message":
            return message_item(self.id, list(self.content), status)
        seal = options.reasoning_seal if options is not None else None
        return reasoning_item(self.id, list(self.content), status, list(self.summary), seal)


class _Call:
    """One function or custom tool call, buffered under the chat ``index`` it
    streams under until it is known complete."""

    __slots__ = ("slot", "upstream_id", "name", "chunks")

    def __init__(self, slot: int, call_id: str | None) -> None:
        self.slot = slot  # the chat index: calls are announced in this order
        self.upstream_id = call_id
        self.name = ""  # the chat function's name: the first non-empty one sent
        self.chunks: list[str] = _Deltas()


class _Envelope:
    """The bytes around the text of a chunk that carries one text delta and
    nothing else, as this upstream writes it.

    Such chunks make up almost all of a streamed answer, and the upstream
    writes every one in the same envelope (``{"id":...,"choices":[{"index":0,
    "delta":{"content":"`` ... ``"},"finish_reason":null}]}``). Decoding each,
    building its delta event and encoding that again is most of the cost of
    translating; a line that is this envelope around a JSON string instead
    has that string, still escaped, spliced into the encoded delta event.

    Learnt from one such chunk the slow path decoded: ``prefix`` ends with
    the quote that opens the ``content`` string, ``suffix`` starts with the
    quote that closes it. :meth:`ChatToResponses._learn` proves that every
    string between them is that chunk's only delta.
    """

    __slots__ = ("prefix", "suffix", "heads")

    def __init__(self, prefix: bytes, suffix: bytes) -> None:
        self.prefix = prefix
        self.suffix = suffix
        # How a data line holding such a chunk starts: "data:" with or
        # without the one space SSE strips.
        self.heads = (b"data: " + prefix, b"data:" + prefix) if prefix[:1] != b" " else (b"data: " + prefix,)

    def text(self, data: bytes) -> bytes | None:
        """The escaped text of ``data`` (an SSE event's data) if it is this envelope around one."""
        if data.startswith(self.prefix) and data.endswith(self.suffix):
            end = len(data) - len(self.suffix)
            if end >= len(self.prefix):
                return data[len(self.prefix) : end]
        return None


class _Splice:
    """The encoded ``output_text.delta`` event of one open part, cut where its
    delta and its sequence number go."""

    __slots__ = ("item", "part_index", "before", "middle", "after")

    def __init__(self, item: _TextItem, part_index: int, before: bytes, middle: bytes, after: bytes) -> None:
        self.item = item
        self.part_index = part_index
        self.before = before  # up to the delta string's opening quote
        self.middle = middle  # from its closing quote to the sequence number
        self.after = after  # the rest, to the blank line


# Two strings spliced into a learnt envelope to prove where its text goes.
_PROBES = (("probe-1", b"probe-1"), ("probe-\u00a7", "probe-\u00a7".encode()))
# Marks that the delta event template is cut at.
_DELTA_MARK = "\u2063splice\u2063"
_SEQ_MARK = 987_654_321_987_654_321
# Learning an envelope costs a few slow chunks. Some upstreams change it
# now and then (a "created" that is the time of each chunk): it is learnt
# again freely _LEARN_TRIES times, then at most once every _RELEARN_EVERY
# events, which bounds what an envelope that changes every chunk costs.
_LEARN_TRIES = 8
_RELEARN_EVERY = 64
# Strings the fast path leaves to orjson: anything escaped, a quote, a control character.
_SPECIAL = b'"\\' + bytes(range(32))


def _canonical_text(raw: bytes) -> str | None:
    """The text of ``raw``, the inside of a JSON string, if it is valid and
    written exactly as orjson writes that text (so spliced, it is the bytes
    the slow path's encoder would make); else None."""
    if len(raw.translate(None, _SPECIAL)) == len(raw):
        try:
            return raw.decode()
        except UnicodeDecodeError:
            return None
    quoted = b'"' + raw + b'"'
    try:
        text = orjson.loads(quoted)
    except orjson.JSONDecodeError:
        return None
    if isinstance(text, str) and orjson.dumps(text) == quoted:
        return text
    return None


def _text_only(chunk: Any) -> str | None:
    """The text of a chunk that carries one text delta and nothing else the
    translator reads (no error, usage, finish reason, other delta field): what
    :meth:`ChatToResponses._chunk` turns into exactly one text delta."""
    if type(chunk) is not dict or chunk.get("error") is not None or chunk.get("usage"):
        return None
    choices = chunk.get("choices")
    if type(choices) is not list or not choices or type(choices[0]) is not dict:
        return None
    delta = choices[0].get("delta")
    finish_reason = choices[0].get("finish_reason")
    if type(delta) is not dict or len(delta) != 1 or (finish_reason and isinstance(finish_reason, str)):
        return None
    content = delta.get("content")
    return content if type(content) is str else None


def _loads(data: bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return None


# The codes a Response's ``error`` may carry (the SDK's ``ResponseError.code``);
# the ``error`` event before it keeps the precise code, which is free-form there.
RESPONSE_ERROR_CODES = frozenset(
    {
        "server_error", "rate_limit_exceeded", "invalid_prompt", "data_residency_mismatch",
        "bio_policy", "misalignment_policy_violation", "vector_store_timeout", "invalid_image",
        "invalid_image_format", "invalid_base64_image", "invalid_image_url", "image_too_large",
        "image_too_small", "image_parse_error", "image_content_policy_violation",
        "invalid_image_mode", "image_file_too_large", "unsupported_image_media_type",
        "empty_image_file", "failed_to_download_image", "image_file_not_found",
    }
)


def response_error_code(code: str) -> str:
    """``code`` as a Response's ``error.code``: itself when the schema lists it,
    ``rate_limit_exceeded`` for any rate limit, else ``server_error``."""
    if code in RESPONSE_ERROR_CODES:
        return code
    return "rate_limit_exceeded" if "rate_limit" in code else "server_error"


class ChatToResponses:
    """Translate one chat-completions stream into one Responses stream.

    ``response`` is the in-progress Response object (see
    :func:`compat_asgi.core.responses.new_response`); on termination it holds
    the final object, the same one the terminal event carried.
    """

    def __init__(
        self,
        response: dict[str, Any],
        ids: IdFactory,
        *,
        max_line: int = DEFAULT_MAX_LINE,
        options: OutputOptions = _DEFAULT_OUTPUT,
        clock: Clock | None = None,
        fast: bool = True,
    ) -> None:
        """``fast=False`` turns :meth:`feed_encoded`'s fast path off (for the
        tests and benchmarks that compare it with the slow path)."""
        self.response = response
        self._clock = clock
        self.done = False
        self.saw_done = False
        self._decoder = SSEDecoder(max_line)
        self._ids = ids
        self._options = options
        self._reasoning_kind = _KINDS["summary_text" if options.reasoning_summary else "reasoning_text"]
        self._think = ThinkSplitter() if options.think_tags else None
        self._seq = 0
        self._out: list[Event] = []  # produced, not yet returned to the caller
        self._wire: list[bytes] = []  # encoded, produced before _out, not yet returned
        self._max_line = max_line
        self._fast = fast and self._think is None  # think tags need the text decoded
        self._envelope: _Envelope | None = None
        self._learn_tries = _LEARN_TRIES
        self._learnt_at = 0  # self._seq at the last try
        self._splice: _Splice | None = None
        self._output: list[dict[str, Any] | None] = []  # final items by output_index
        self._text: _TextItem | None = None
        self._calls: dict[int, _Call] = {}  # the call each chat index routes to now
        self._pending_calls: list[_Call] = []  # every call not yet announced, in arrival order
        #: Calls the upstream made that the client was not given: nameless, or
        #: cut off mid-arguments (by the token limit, or a fault).
        self.left_out_calls = 0
        self._call_ids: set[str] = set()  # call_ids announced so far
        self._finish_reason: str | None = None
        self._usage: Any = None

    # -- public API ---------------------------------------------------------

    @property
    def pending(self) -> bool:
        """Events were produced but not returned: a call raised after producing them.
        :meth:`fail` returns them before the failure events."""
        return bool(self._out or self._wire)

    def done_items(self) -> list[dict[str, Any]]:
        """The items closed so far, in output order: the output of the response as it is now."""
        return [item for item in self._output if item is not None]

    @property
    def finishing(self) -> bool:
        """A ``finish_reason`` came: every item was closed, and those ``.done``
        events each carry the item's whole text; what is left is the terminal event."""
        return self._finish_reason is not None

    def start(self) -> list[Event]:
        for kind in ("response.created", "response.in_progress"):
            self._emit({"type": kind, "response": {**self.response, "output": []}})
        return self._take()

    def add_item(self, item: dict[str, Any]) -> list[Event]:
        """A finished item the server made itself (a compaction), announced
        and done at once at the next ``output_index``, with the statuses every
        item's lifecycle has; call it after :meth:`start`, before feeding the
        upstream."""
        index = self._announce({**item, "status": "in_progress"})
        done = self._output[index] = {**item, "status": "completed"}
        self._emit({"type": "response.output_item.done", "output_index": index, "item": done})
        return self._take()

    def feed_bytes(self, data: bytes) -> list[Event]:
        """Feed raw upstream SSE bytes, split anywhere; get the events now complete.

        A fault raises :class:`CompatError`; the events of the same bytes
        before it stay pending for :meth:`fail`.
        """
        self._feed_bytes(data, fast=False)
        return self._take()

    def feed_encoded(self, data: bytes) -> tuple[bytes, list[Event]]:
        """:meth:`feed_bytes` for a caller that sends SSE: chunks that only
        carry text take a fast path that skips decoding and re-encoding them.

        Returns the events of ``data`` as ``(encoded, events)``: first those
        already encoded, byte for byte what :func:`encode_events` makes of
        them, then the rest as :meth:`feed_bytes` returns them.

        A fault raises as in :meth:`feed_bytes`; what the same bytes produced
        before it stays pending: :meth:`take_encoded`, then :meth:`fail`.
        """
        self._feed_bytes(data, fast=self._fast)
        return self.take_encoded(), self._take()

    def take_encoded(self) -> bytes:
        """The encoded events a :meth:`feed_encoded` that raised had produced:
        they come before what :meth:`fail` (or ``close`` ...) returns."""
        wire = self._wire
        if not wire:
            return b""
        self._wire = []
        return wire[0] if len(wire) == 1 else b"".join(wire)

    def close(self) -> list[Event]:
        """The upstream body ended: flush an unterminated last event, then :meth:`finish`."""
        if not self.saw_done:
            self._feed_bytes(b"\n\n", fast=False)
        return self.finish(saw_done=self.saw_done)

    def feed(self, chunk: Any) -> list[Event]:
        """Translate one decoded chat chunk. Raises :class:`CompatError` on a bad chunk."""
        self._chunk(chunk)
        return self._take()

    def _chunk(self, chunk: Any) -> None:
        if not isinstance(chunk, dict):
            raise UpstreamProtocolError("upstream stream chunk is not a JSON object")
        error = chunk.get("error")
        if error is not None:
            raise stream_error(error)
        usage = chunk.get("usage")
        if usage:
            self._usage = usage
        choices = chunk.get("choices")
        if not choices:
            return
        choice = choices[0] if isinstance(choices, list) else None
        if not isinstance(choice, dict):
            raise UpstreamProtocolError("upstream stream chunk has a malformed choice")
        delta = choice.get("delta")
        if type(delta) is dict and len(delta) == 1 and type(delta.get("content")) is str:
            # The chunk of almost every token: one piece of text, nothing else.
            if delta["content"]:
                self._content(delta["content"])
        elif isinstance(delta, dict):
            reasoning = delta.get("reasoning_content") or delta.get("reasoning")
            if reasoning and isinstance(reasoning, str):
                self._text_delta("reasoning", self._reasoning_kind, reasoning)
            content = delta.get("content")
            if content and isinstance(content, str):
                self._content(content)
            refusal = delta.get("refusal")
            if refusal and isinstance(refusal, str):
                self._text_delta("message", _REFUSAL, refusal)
            tool_calls = delta.get("tool_calls")
            if isinstance(tool_calls, list):
                for position, tool_call in enumerate(tool_calls):
                    self._tool_delta(tool_call, position)
        finish_reason = choice.get("finish_reason")
        if finish_reason and isinstance(finish_reason, str):
            self._finish_reason = finish_reason
            self._close_all(finish_status(finish_reason)[1] is not None)

    def finish(self, *, saw_done: bool) -> list[Event]:
        """The upstream stream ended (``saw_done``: it said ``[DONE]``).

        A stream that stops with neither ``[DONE]`` nor a ``finish_reason`` was
        cut off: that raises, and the caller reports it with :meth:`fail`.
        """
        if self.done:
            return self._take()
        if self._finish_reason is None and not saw_done:
            raise UpstreamProtocolError("upstream stream ended before it finished")
        status, incomplete = finish_status(self._finish_reason)
        self._close_all(incomplete is not None)
        response = self.response
        finish_response(response, status, incomplete, self._clock() if self._clock else None)
        response["output"] = self.done_items()
        response["usage"] = map_usage(self._usage)
        self._emit({"type": f"response.{status}", "response": response})
        self.done = True
        return self._take()

    def fail(self, error: CompatError) -> list[Event]:
        """End the stream after a fault: a failure closes what is open.

        Returns the events produced before the fault that were not yet
        returned, then ``.done`` events for every open part and item (status
        ``incomplete``, the text so far), then ``error`` and
        ``response.failed``, whose output is exactly the items the client
        was shown. Tool calls not yet complete were never announced: they
        are left out, not closed.
        """
        if self.done:
            return self._take()
        self._close_open()
        code = error.code or "server_error"
        self._emit({"type": "error", "code": code, "message": error.message, "param": error.param})
        response = self.response
        response["status"] = "failed"
        response["error"] = {"code": response_error_code(code), "message": error.message}
        response["output"] = self.done_items()
        response["usage"] = map_usage(self._usage) if self._usage else None
        self._emit({"type": "response.failed", "response": response})
        self.done = True
        return self._take()

    def interrupt(self) -> list[Event]:
        """End the stream because the client went away: open parts and items are
        closed as in :meth:`fail`, and the response ends ``incomplete`` with
        ``incomplete_details.reason = "interrupted"``.

        Nobody reads these events live; they complete the copy kept for a
        ``store: true`` response, so that it can be retrieved, replayed and
        continued with ``previous_response_id``. None of the reasons OpenAI's
        ``Response`` type lists (``max_output_tokens``, ``content_filter``
        ...) is true of a client that left, so the reason says what happened.
        """
        if self.done:
            return self._take()
        self._close_open()
        response = self.response
        response["status"] = "incomplete"
        response["incomplete_details"] = {"reason": INTERRUPTED}
        response["output"] = self.done_items()
        response["usage"] = map_usage(self._usage)
        self._emit({"type": "response.incomplete", "response": response})
        self.done = True
        return self._take()

    def cancel(self) -> list[Event]:
        """Stop here, the response was cancelled: each open part and item gets
        its done event (status ``incomplete``, the text so far) and the response
        ends ``cancelled`` with that output. Responses streams have no terminal
        event for a cancellation; readers see the status."""
        if self.done:
            return self._take()
        self._close_open()
        response = self.response
        response["status"] = "cancelled"
        response["output"] = self.done_items()
        response["usage"] = map_usage(self._usage) if self._usage else None
        self.done = True
        return self._take()

    # -- state machine ------------------------------------------------------

    def _feed_bytes(self, data: bytes, *, fast: bool) -> None:
        if self.saw_done:
            return  # anything after [DONE] is not part of this stream, not even a line too long
        envelope = self._envelope if fast else None
        if envelope is not None and self._decoder.idle:
            # Whole text events at the front of a read skip the decoder too:
            # it holds nothing, so what it would make of them is known.
            pos = self._splice_lines(data, envelope)
            if pos == len(data):
                return
            data = data[pos:]
        self._decode(data, fast=fast)

    def _decode(self, data: bytes, *, fast: bool) -> None:
        for sse in self._decoder.feed(data):
            if self.saw_done:
                return  # anything after [DONE] is not part of this stream
            if sse.data == DONE:
                self.saw_done = True
            elif not fast:
                self._chunk(_parse_chunk(sse.data))
            else:
                envelope = self._envelope
                raw = envelope.text(sse.data) if envelope is not None else None
                if raw is not None and self._splice_text(raw):
                    continue
                chunk = _parse_chunk(sse.data)
                self._chunk(chunk)
                if raw is None:  # not the envelope known, if any: maybe a new one
                    self._learn(sse.data, chunk)
        if not self.saw_done:
            self._decoder.check()

    # -- the fast path (see _Envelope) ----------------------------------------

    def _splice_lines(self, data: bytes, envelope: _Envelope) -> int:
        """Splice the text events ``data`` starts with; where they end."""
        heads, skip, suffix = envelope.heads, len(envelope.prefix), envelope.suffix
        pos = 0
        while data.startswith(heads, pos):
            # "data:" + the one space SSE strips, if there is one.
            start = pos + (6 if data[pos + 5] == 32 else 5) + skip
            # The first LF ends the line: the text has no line break
            # (_splice_text refuses control characters), the suffix none.
            # Then a blank line, and the event is whole.
            line_end = data.find(b"\n", start)
            end = line_end - len(suffix)
            if (
                line_end < 0
                or not data.startswith(b"\n", line_end + 1)
                or line_end - pos > self._max_line  # the decoder reports it
                or end < start
                or not data.startswith(suffix, end)
                or not self._splice_text(data[start:end])
            ):
                break
            pos = line_end + 2
        return pos

    def _splice_text(self, raw: bytes) -> bool:
        """One chunk's text delta, ``raw`` as the upstream escaped it, into
        its encoded event, with the state changes the slow path makes; False
        (nothing done) when the slow path has to take the chunk."""
        if not raw:
            return True  # the slow path ignores an empty delta too
        text = self._text
        if text is None or text.kind is not _OUTPUT_TEXT:
            return False  # the part opens first: the slow path announces it
        splice = self._splice
        if splice is None or splice.item is not text or splice.part_index != text.part_index:
            splice = self._splice = self._splice_for(text)
            if splice is None:
                return False
        delta = _canonical_text(raw)
        if delta is None:
            return False
        if self._out:
            self._wire.append(encode_events(self._take()))  # keep the order of events
        text.chunks.append(delta)
        self._wire.append(splice.before + raw + splice.middle + str(self._seq).encode() + splice.after)
        self._seq += 1
        return True

    def _splice_for(self, text: _TextItem) -> _Splice | None:
        """The delta event of ``text``'s open part, encoded by the slow path's
        own builder and encoder, cut at marks put where the delta and the
        sequence number go."""
        encoded = encode_event(self._delta_event(_OUTPUT_TEXT, text, _DELTA_MARK, _SEQ_MARK))
        pieces = encoded.split(orjson.dumps(_DELTA_MARK)[1:-1])
        if len(pieces) != 2:
            return None
        rest = pieces[1].split(b"%d" % _SEQ_MARK)
        if len(rest) != 2:
            return None
        return _Splice(text, text.part_index, pieces[0], rest[0], rest[1])

    def _learn(self, data: bytes, chunk: Any) -> None:
        """Take the envelope of ``data`` (whose decoded ``chunk`` the slow
        path just translated) for the fast path, if it carries only text.

        Where the text is, is proven, not guessed: two different strings put
        there must each come out of the whole line, decoded, as its only text
        delta. Then the JSON parser is inside that string from the end of the
        prefix to the start of the suffix, so any valid string there is read
        the same way, as that delta, with the rest of the chunk unchanged.
        """
        if self._learn_tries <= 0 and self._seq < self._learnt_at + _RELEARN_EVERY:
            return
        content = _text_only(chunk)
        if not content:
            return
        self._learn_tries -= 1
        self._learnt_at = self._seq
        quoted = orjson.dumps(content)
        at = data.find(quoted)
        for _ in range(4):  # a short text may also occur elsewhere in the line
            if at < 0:
                return
            prefix, suffix = data[: at + 1], data[at + len(quoted) - 1 :]
            if all(_text_only(_loads(prefix + raw + suffix)) == probe for probe, raw in _PROBES):
                self._envelope = _Envelope(prefix, suffix)
                return
            at = data.find(quoted, at + 1)

    def _take(self) -> list[Event]:
        out = self._out
        self._out = []
        return out

    def _close_open(self) -> None:
        """Close every part and item the client was shown, as ``incomplete``.
        Tool calls not yet announced were never shown and may be half-made:
        they are dropped, not closed (a client would run them)."""
        self._flush_think()
        self.left_out_calls += len(self._pending_calls)
        self._pending_calls.clear()
        self._calls.clear()
        self._close_text("incomplete")

    def _emit(self, event: Event) -> None:
        event["sequence_number"] = self._seq
        self._seq += 1
        self._out.append(event)

    def _announce(self, item: dict[str, Any]) -> int:
        index = len(self._output)
        self._output.append(None)
        self._emit({"type": "response.output_item.added", "output_index": index, "item": item})
        return index

    def _content(self, text: str) -> None:
        if self._think is None:
            self._text_delta("message", _OUTPUT_TEXT, text)
            return
        thought, answer = self._think.feed(text)
        if thought:
            self._text_delta("reasoning", self._reasoning_kind, thought)
        if answer:
            self._text_delta("message", _OUTPUT_TEXT, answer)

    def _text_delta(self, item_type: str, kind: _Kind, delta: str) -> None:
        text = self._text
        if text is None or text.kind is not kind:
            text = self._open_part(item_type, kind)
        text.chunks.append(delta)
        self._out.append(self._delta_event(kind, text, delta, self._seq))
        self._seq += 1

    @staticmethod
    def _delta_event(kind: _Kind, text: _TextItem, delta: str, seq: int) -> Event:
        event: Event = {
            "type": kind.delta,
            "item_id": text.id,
            "output_index": text.index,
            kind.index_key: text.part_index,
            "delta": delta,
            "sequence_number": seq,
        }
        if kind.part is output_text_part:
            event["logprobs"] = []
        return event

    def _open_part(self, item_type: str, kind: _Kind) -> _TextItem:
        """Announce the item (closing another kind of item first) and the part
        the next delta belongs to."""
        text = self._text
        if text is None or text.type != item_type:
            self._close_text("completed")
            prefix = "msg" if item_type == "message" else "rs"
            text = _TextItem(self._ids(prefix), item_type, len(self._output))
            self._announce(text.build("in_progress"))
            self._text = text
        self._close_part(text)
        text.kind = kind
        text.part_index = len(text.slot(kind))
        self._emit(
            {
                "type": kind.added,
                "item_id": text.id,
                "output_index": text.index,
                kind.index_key: text.part_index,
                "part": kind.part(""),
            }
        )
        return text

    def _close_part(self, text: _TextItem) -> None:
        kind = text.kind
        if kind is None:
            return
        full = "".join(text.chunks)
        part = kind.part(full)
        slot = text.slot(kind)
        event: Event = {
            "type": kind.done,
            "item_id": text.id,
            "output_index": text.index,
            kind.index_key: len(slot),
            kind.field: full,
        }
        if kind.part is output_text_part:
            event["logprobs"] = []
        self._emit(event)
        self._emit(
            {
                "type": kind.part_done,
                "item_id": text.id,
                "output_index": text.index,
                kind.index_key: len(slot),
                "part": part,
            }
        )
        slot.append(part)
        text.kind = None
        text.chunks = _Deltas()

    def _close_text(self, status: str) -> None:
        text = self._text
        if text is None:
            return
        self._close_part(text)
        item = text.build(status, self._options)
        self._output[text.index] = item
        self._emit({"type": "response.output_item.done", "output_index": text.index, "item": item})
        self._text = None

    def _tool_delta(self, tool_call: Any, position: int) -> None:
        if not isinstance(tool_call, dict):
            raise UpstreamProtocolError("upstream tool call delta is not a JSON object")
        index = tool_call.get("index")
        if not isinstance(index, int) or isinstance(index, bool):
            index = position  # some backends omit index for their only call
        function = tool_call.get("function")
        if not isinstance(function, dict):
            function = {}
        call_id = tool_call.get("id")
        if not (isinstance(call_id, str) and call_id):
            call_id = None
        call = self._calls.get(index)
        if call is not None and call_id and call.upstream_id and call_id != call.upstream_id:
            # A new id under a used index: a backend that numbers every call 0.
            # Keep both calls rather than merging their arguments.
            call = None
        if call is None:
            # The model moved on from its text: that item is finished.
            self._close_text("completed")
            call = self._calls[index] = _Call(index, call_id)
            self._pending_calls.append(call)
        elif call_id and not call.upstream_id:
            call.upstream_id = call_id
        name = function.get("name")
        if not call.name and isinstance(name, str):
            call.name = name
        arguments = function.get("arguments")
        if arguments:
            piece = arguments_text(arguments)
            if piece:
                call.chunks.append(piece)

    def _announce_call(self, call: _Call, arguments: str, status: str) -> None:
        """Send one complete call: ``output_item.added``, its whole arguments
        (or input) as one delta, ``.done`` and ``output_item.done``."""
        call_id = call.upstream_id
        if not call_id or call_id in self._call_ids:
            # A client pairs each output with its call by call_id: two calls
            # under one id (a backend that repeats ids across indices) would
            # get each other's output.
            call_id = self._ids("call")
        self._call_ids.add(call_id)
        name, namespace = tool_name(call.name, self._options)
        if call.name in self._options.custom_tools:
            item_id = self._ids("ctc")
            text = custom_tool_input(arguments)
            item = custom_tool_call_item(item_id, call_id, name, "", "in_progress", namespace)
            final = custom_tool_call_item(item_id, call_id, name, text, status, namespace)
            delta, done = "response.custom_tool_call_input.delta", "response.custom_tool_call_input.done"
            field = "input"
        else:
            item_id = self._ids("fc")
            text = arguments
            item = function_call_item(item_id, call_id, name, "", "in_progress", namespace)
            final = function_call_item(item_id, call_id, name, text, status, namespace)
            delta, done = "response.function_call_arguments.delta", "response.function_call_arguments.done"
            field = "arguments"
        index = self._announce(item)
        if text:
            self._emit({"type": delta, "item_id": item_id, "output_index": index, "delta": text})
        self._emit({"type": done, "item_id": item_id, "output_index": index, field: text})
        self._output[index] = final
        self._emit({"type": "response.output_item.done", "output_index": index, "item": final})

    def _flush_think(self) -> None:
        """Text held back while looking for a ``<think>`` tag goes out as what it was."""
        if self._think is not None:
            thought, answer = self._think.close()
            if thought:
                self._text_delta("reasoning", self._reasoning_kind, thought)
            if answer:
                self._text_delta("message", _OUTPUT_TEXT, answer)

    def _close_all(self, truncated: bool) -> None:
        status = "incomplete" if truncated else "completed"
        self._flush_think()
        self._close_text(status)
        # Stable sort: calls that shared a chat index keep their arrival order.
        for call in sorted(self._pending_calls, key=_slot):
            arguments = "".join(call.chunks)
            if shown_call(call.name, arguments, cut=truncated):
                self._announce_call(call, arguments, status)
            else:
                self.left_out_calls += 1
        self._pending_calls.clear()
        self._calls.clear()


def _slot(call: _Call) -> int:
    return call.slot


def _parse_chunk(data: bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        raise UpstreamProtocolError(
            f"upstream sent a data line that is not JSON: {data[:200]!r}"
        ) from None


def completion_to_chunk(completion: Any) -> dict[str, Any]:
    """A whole chat completion as one stream chunk, for upstreams that ignore ``stream``."""
    if not isinstance(completion, dict):
        raise UpstreamProtocolError("upstream chat completion is not a JSON object")
    choices = completion.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices else None
    if not isinstance(choice, dict) or not isinstance(choice.get("message"), dict):
        raise UpstreamProtocolError("upstream chat completion has no message")
    delta = dict(choice["message"])
    tool_calls = delta.get("tool_calls")
    if isinstance(tool_calls, list):
        delta["tool_calls"] = [
            {**call, "index": i} if isinstance(call, dict) else call
            for i, call in enumerate(tool_calls)
        ]
    return {
        "choices": [{"index": 0, "delta": delta, "finish_reason": choice.get("finish_reason")}],
        "usage": completion.get("usage"),
    }


def stream_error(error: Any) -> CompatError:
    """An ``{"error": ...}`` object sent inside an upstream stream, as a typed error."""
    if isinstance(error, dict):
        message = error.get("message")
        code = error.get("code")
        return UpstreamStatusError(
            502,
            message if isinstance(message, str) and message else "upstream reported an error",
            code=str(code) if code is not None else "upstream_error",
        )
    return UpstreamStatusError(502, str(error) or "upstream reported an error", code="upstream_error")
