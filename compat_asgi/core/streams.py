"""Incremental stream translation: chat-completion chunks in, Responses events out.

:class:`ChatToResponses` owns the item/part state machine of the Responses
stream (DESIGN.md section 3). Feed it one decoded ``chat.completion.chunk``
at a time; every call returns the events that chunk produced, with
``sequence_number`` assigned, ready to encode. It never awaits and never
buffers text it could already send.
"""

from __future__ import annotations

from typing import Any

import orjson

from compat_asgi.core.ids import IdFactory
from compat_asgi.core.responses import (
    arguments_text,
    finish_status,
    function_call_item,
    map_usage,
    message_item,
    output_text_part,
    reasoning_item,
    reasoning_text_part,
    refusal_part,
)
from compat_asgi.core.sse import DEFAULT_MAX_LINE, DONE, SSEDecoder
from compat_asgi.errors import CompatError, UpstreamProtocolError, UpstreamStatusError

__all__ = ["ChatToResponses", "completion_to_chunk", "stream_error"]

Event = dict[str, Any]

# part type -> (delta event, done event, text field of the part and the done event)
_PART_EVENTS = {
    "output_text": ("response.output_text.delta", "response.output_text.done", "text"),
    "refusal": ("response.refusal.delta", "response.refusal.done", "refusal"),
    "reasoning_text": ("response.reasoning_text.delta", "response.reasoning_text.done", "text"),
}
_EMPTY_PART = {
    "output_text": lambda: output_text_part(""),
    "refusal": lambda: refusal_part(""),
    "reasoning_text": lambda: reasoning_text_part(""),
}
_FULL_PART = {
    "output_text": output_text_part,
    "refusal": refusal_part,
    "reasoning_text": reasoning_text_part,
}


class _TextItem:
    """A message or reasoning item being streamed: finished parts plus the open one."""

    __slots__ = ("id", "type", "index", "parts", "kind", "chunks")

    def __init__(self, item_id: str, item_type: str, index: int) -> None:
        self.id = item_id
        self.type = item_type
        self.index = index
        self.parts: list[dict[str, Any]] = []
        self.kind: str | None = None
        self.chunks: list[str] = []

    def build(self, status: str, parts: list[dict[str, Any]]) -> dict[str, Any]:
        if self.type == "message":
            return message_item(self.id, parts, status)
        return reasoning_item(self.id, parts, status)

    def partial(self) -> dict[str, Any]:
        parts = list(self.parts)
        if self.kind is not None:
            parts.append(_FULL_PART[self.kind]("".join(self.chunks)))
        return self.build("incomplete", parts)


class _Call:
    """One function call, keyed by the chat ``index`` it streams under."""

    __slots__ = ("id", "index", "call_id", "name", "chunks", "upstream_id")

    def __init__(self, item_id: str, call_id: str | None) -> None:
        self.id = item_id
        self.index = -1  # output_index, assigned when the item is announced
        self.upstream_id = call_id
        self.call_id = call_id or ""
        self.name = ""
        self.chunks: list[str] = []

    def build(self, status: str) -> dict[str, Any]:
        return function_call_item(self.id, self.call_id, self.name, "".join(self.chunks), status)


class ChatToResponses:
    """Translate one chat-completions stream into one Responses stream.

    ``response`` is the in-progress Response object (see
    :func:`compat_asgi.core.responses.new_response`); on termination it holds
    the final object, the same one the terminal event carried.
    """

    def __init__(
        self, response: dict[str, Any], ids: IdFactory, *, max_line: int = DEFAULT_MAX_LINE
    ) -> None:
        self.response = response
        self.done = False
        self.saw_done = False
        self._decoder = SSEDecoder(max_line)
        self._ids = ids
        self._seq = 0
        self._out: list[Event] = []
        self._output: list[dict[str, Any] | None] = []  # final items by output_index
        self._text: _TextItem | None = None
        self._calls: dict[int, _Call] = {}
        self._finish_reason: str | None = None
        self._usage: Any = None

    # -- public API ---------------------------------------------------------

    def start(self) -> list[Event]:
        out = self._begin()
        for kind in ("response.created", "response.in_progress"):
            self._emit({"type": kind, "response": {**self.response, "output": []}})
        return out

    def feed_bytes(self, data: bytes) -> list[Event]:
        """Feed raw upstream SSE bytes, split anywhere; get the events now complete."""
        events: list[Event] = []
        for sse in self._decoder.feed(data):
            if self.saw_done:
                break  # anything after [DONE] is not part of this stream
            if sse.data == DONE:
                self.saw_done = True
            else:
                events += self.feed(_parse_chunk(sse.data))
        return events

    def close(self) -> list[Event]:
        """The upstream body ended: flush an unterminated last event, then :meth:`finish`."""
        events = [] if self.saw_done else self.feed_bytes(b"\n\n")
        return events + self.finish(saw_done=self.saw_done)

    def feed(self, chunk: Any) -> list[Event]:
        """Translate one decoded chat chunk. Raises :class:`CompatError` on a bad chunk."""
        out = self._begin()
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
            return out
        choice = choices[0] if isinstance(choices, list) else None
        if not isinstance(choice, dict):
            raise UpstreamProtocolError("upstream stream chunk has a malformed choice")
        delta = choice.get("delta")
        if isinstance(delta, dict):
            reasoning = delta.get("reasoning_content") or delta.get("reasoning")
            if reasoning and isinstance(reasoning, str):
                self._text_delta("reasoning", "reasoning_text", reasoning)
            content = delta.get("content")
            if content and isinstance(content, str):
                self._text_delta("message", "output_text", content)
            refusal = delta.get("refusal")
            if refusal and isinstance(refusal, str):
                self._text_delta("message", "refusal", refusal)
            tool_calls = delta.get("tool_calls")
            if isinstance(tool_calls, list):
                for position, tool_call in enumerate(tool_calls):
                    self._tool_delta(tool_call, position)
        finish_reason = choice.get("finish_reason")
        if finish_reason and isinstance(finish_reason, str):
            self._finish_reason = finish_reason
            self._close_all(finish_status(finish_reason)[1] is not None)
        return out

    def finish(self, *, saw_done: bool) -> list[Event]:
        """The upstream stream ended (``saw_done``: it said ``[DONE]``).

        A stream that stops with neither ``[DONE]`` nor a ``finish_reason`` was
        cut off: that raises, and the caller reports it with :meth:`fail`.
        """
        out = self._begin()
        if self.done:
            return out
        if self._finish_reason is None and not saw_done:
            raise UpstreamProtocolError("upstream stream ended before it finished")
        status, incomplete = finish_status(self._finish_reason)
        self._close_all(incomplete is not None)
        response = self.response
        response["status"] = status
        response["incomplete_details"] = incomplete
        response["output"] = [item for item in self._output if item is not None]
        response["usage"] = map_usage(self._usage)
        self._emit({"type": f"response.{status}", "response": response})
        self.done = True
        return out

    def fail(self, error: CompatError) -> list[Event]:
        """End the stream after a fault: ``error`` then ``response.failed``.

        The failed response keeps everything produced so far; items still
        open are included with status ``incomplete``.
        """
        out = self._begin()
        if self.done:
            return out
        code = error.code or "server_error"
        self._emit({"type": "error", "code": code, "message": error.message, "param": error.param})
        output = list(self._output)
        if self._text is not None:
            output[self._text.index] = self._text.partial()
        for call in self._calls.values():
            if call.index >= 0 and output[call.index] is None:
                output[call.index] = call.build("incomplete")
        response = self.response
        response["status"] = "failed"
        response["error"] = {"code": code, "message": error.message}
        response["output"] = [item for item in output if item is not None]
        response["usage"] = map_usage(self._usage) if self._usage else None
        self._emit({"type": "response.failed", "response": response})
        self.done = True
        return out

    # -- state machine ------------------------------------------------------

    def _begin(self) -> list[Event]:
        self._out = []
        return self._out

    def _emit(self, event: Event) -> None:
        event["sequence_number"] = self._seq
        self._seq += 1
        self._out.append(event)

    def _announce(self, item: dict[str, Any]) -> int:
        index = len(self._output)
        self._output.append(None)
        self._emit({"type": "response.output_item.added", "output_index": index, "item": item})
        return index

    def _text_delta(self, item_type: str, kind: str, delta: str) -> None:
        text = self._text
        if text is None or text.type != item_type:
            self._close_text("completed")
            prefix = "msg" if item_type == "message" else "rs"
            text = _TextItem(self._ids(prefix), item_type, len(self._output))
            self._announce(text.build("in_progress", []))
            self._text = text
        if text.kind != kind:
            self._close_part(text)
            text.kind = kind
            self._emit(
                {
                    "type": "response.content_part.added",
                    "item_id": text.id,
                    "output_index": text.index,
                    "content_index": len(text.parts),
                    "part": _EMPTY_PART[kind](),
                }
            )
        text.chunks.append(delta)
        event: Event = {
            "type": _PART_EVENTS[kind][0],
            "item_id": text.id,
            "output_index": text.index,
            "content_index": len(text.parts),
            "delta": delta,
        }
        if kind == "output_text":
            event["logprobs"] = []
        self._emit(event)

    def _close_part(self, text: _TextItem) -> None:
        kind = text.kind
        if kind is None:
            return
        _, done_type, field = _PART_EVENTS[kind]
        full = "".join(text.chunks)
        part = _FULL_PART[kind](full)
        content_index = len(text.parts)
        event: Event = {
            "type": done_type,
            "item_id": text.id,
            "output_index": text.index,
            "content_index": content_index,
            field: full,
        }
        if kind == "output_text":
            event["logprobs"] = []
        self._emit(event)
        self._emit(
            {
                "type": "response.content_part.done",
                "item_id": text.id,
                "output_index": text.index,
                "content_index": content_index,
                "part": part,
            }
        )
        text.parts.append(part)
        text.kind = None
        text.chunks = []

    def _close_text(self, status: str) -> None:
        text = self._text
        if text is None:
            return
        self._close_part(text)
        item = text.build(status, text.parts)
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
            self._close_call(call, "completed")
            call = None
        if call is None:
            self._close_text("completed")
            call = self._calls[index] = _Call(self._ids("fc"), call_id)
        elif call_id and not call.upstream_id:
            call.upstream_id = call_id
            if call.index < 0:
                call.call_id = call_id
        name = function.get("name")
        if call.index < 0 and isinstance(name, str):
            call.name += name
        arguments = function.get("arguments")
        piece = arguments_text(arguments) if arguments else ""
        if call.index < 0:
            if piece:
                call.chunks.append(piece)
            if call.name:
                self._open_call(call)
        elif piece:
            call.chunks.append(piece)
            self._emit_arguments(call, piece)

    def _open_call(self, call: _Call) -> None:
        if not call.call_id:
            call.call_id = self._ids("call")
        call.index = self._announce(
            function_call_item(call.id, call.call_id, call.name, "", "in_progress")
        )
        if call.chunks:
            self._emit_arguments(call, "".join(call.chunks))

    def _emit_arguments(self, call: _Call, piece: str) -> None:
        self._emit(
            {
                "type": "response.function_call_arguments.delta",
                "item_id": call.id,
                "output_index": call.index,
                "delta": piece,
            }
        )

    def _close_call(self, call: _Call, status: str) -> None:
        if call.index < 0:
            self._open_call(call)
        elif self._output[call.index] is not None:
            return
        item = call.build(status)
        self._output[call.index] = item
        self._emit(
            {
                "type": "response.function_call_arguments.done",
                "item_id": call.id,
                "output_index": call.index,
                "arguments": item["arguments"],
            }
        )
        self._emit({"type": "response.output_item.done", "output_index": call.index, "item": item})

    def _close_all(self, truncated: bool) -> None:
        status = "incomplete" if truncated else "completed"
        self._close_text(status)
        calls = sorted(self._calls.values(), key=lambda c: c.index if c.index >= 0 else 1 << 62)
        for call in calls:
            self._close_call(call, status)
        self._calls.clear()


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
