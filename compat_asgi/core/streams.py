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
from compat_asgi.core.sse import DEFAULT_MAX_LINE, DONE, SSEDecoder
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
    ) -> None:
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
        self._output: list[dict[str, Any] | None] = []  # final items by output_index
        self._text: _TextItem | None = None
        self._calls: dict[int, _Call] = {}  # the call each chat index routes to now
        self._pending_calls: list[_Call] = []  # every call not yet announced, in arrival order
        self._call_ids: set[str] = set()  # call_ids announced so far
        self._finish_reason: str | None = None
        self._usage: Any = None

    # -- public API ---------------------------------------------------------

    @property
    def pending(self) -> bool:
        """Events were produced but not returned: a call raised after producing them.
        :meth:`fail` returns them before the failure events."""
        return bool(self._out)

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
        self._feed_bytes(data)
        return self._take()

    def close(self) -> list[Event]:
        """The upstream body ended: flush an unterminated last event, then :meth:`finish`."""
        if not self.saw_done:
            self._feed_bytes(b"\n\n")
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

    def _feed_bytes(self, data: bytes) -> None:
        for sse in self._decoder.feed(data):
            if self.saw_done:
                return  # anything after [DONE] is not part of this stream
            if sse.data == DONE:
                self.saw_done = True
            else:
                self._chunk(_parse_chunk(sse.data))
        if not self.saw_done:
            self._decoder.check()

    def _take(self) -> list[Event]:
        out = self._out
        self._out = []
        return out

    def _close_open(self) -> None:
        """Close every part and item the client was shown, as ``incomplete``.
        Tool calls not yet announced were never shown and may be half-made:
        they are dropped, not closed (a client would run them)."""
        self._flush_think()
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
        event: Event = {
            "type": kind.delta,
            "item_id": text.id,
            "output_index": text.index,
            kind.index_key: text.part_index,
            "delta": delta,
            "sequence_number": self._seq,
        }
        if kind.part is output_text_part:
            event["logprobs"] = []
        self._seq += 1
        self._out.append(event)

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
