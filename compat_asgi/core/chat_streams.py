"""Incremental stream translation: Responses events in, chat-completion chunks out.

The reverse of :mod:`compat_asgi.core.streams`, for chat clients in front of a
Responses upstream. :class:`ResponsesToChat` takes the upstream's raw SSE
bytes, split anywhere, and returns the ``chat.completion.chunk`` objects that
became complete; the shell encodes them with
:func:`~compat_asgi.core.sse.encode_data` and ends a normal stream with
``data: [DONE]``.

Chat chunks are flat where Responses events are nested in items and parts, so
the state kept here is small: which chat tool-call index each function-call
item got, and how much of each text part was already sent (so text or
arguments that arrive only in ``.done`` events, or only in the final
response, still reach the client exactly once).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Union

import orjson

from compat_asgi.core.ids import IdFactory
from compat_asgi.core.sse import DEFAULT_MAX_LINE, DONE, ServerSentEvent, SSEDecoder
from compat_asgi.errors import CompatError, UpstreamError, UpstreamProtocolError, UpstreamStatusError

__all__ = ["ResponsesToChat", "response_to_chat_completion", "chat_usage", "completion_chunks"]

Chunk = dict[str, Any]
# An item's handle: its output_index, or its id when the upstream gave no index.
_Key = Union[int, str]
# (item, channel, content_index or summary_index)
_PartKey = tuple[_Key, str, int]

# Text delta events -> (channel, field holding the part's index)
_TEXT_DELTAS = {
    "response.output_text.delta": ("content", "content_index"),
    "response.refusal.delta": ("refusal", "content_index"),
    "response.reasoning_text.delta": ("reasoning", "content_index"),
    "response.reasoning_summary_text.delta": ("summary", "summary_index"),
}
# Text done events -> (channel, index field, field holding the full text)
_TEXT_DONES = {
    "response.output_text.done": ("content", "content_index", "text"),
    "response.refusal.done": ("refusal", "content_index", "refusal"),
    "response.reasoning_text.done": ("reasoning", "content_index", "text"),
    "response.reasoning_summary_text.done": ("summary", "summary_index", "text"),
}
# Content part type -> (channel, field holding its text)
_PART_CHANNELS = {
    "output_text": ("content", "text"),
    "refusal": ("refusal", "refusal"),
    "reasoning_text": ("reasoning", "text"),
    "summary_text": ("summary", "text"),
}
# Reasoning goes out as reasoning_content, the llama.cpp / vLLM convention
# chat clients already read.
_CHAT_FIELD = {
    "content": "content",
    "refusal": "refusal",
    "reasoning": "reasoning_content",
    "summary": "reasoning_content",
}
# Summary parts are separate paragraphs; run together they would read as one.
_SUMMARY_SEPARATOR = "\n\n"
# Responses incomplete_details.reason -> chat finish_reason
_FINISH_REASONS = {"max_output_tokens": "length", "content_filter": "content_filter"}
# Known events that carry nothing a chat chunk needs (not counted as ignored).
_NO_OP_EVENTS = frozenset(
    {
        "response.in_progress",
        "response.queued",
        "response.content_part.added",
        "response.reasoning_summary_part.added",
    }
)


class _Call:
    """One function-call item and the chat tool-call index it streams under."""

    __slots__ = ("index", "call_id", "name", "sent", "pending")

    def __init__(self) -> None:
        self.index = -1  # chat tool-call index, assigned once the name is known
        self.call_id = ""
        self.name = ""
        self.sent = 0  # characters of arguments taken from the upstream so far
        self.pending: list[str] = []  # arguments that arrived before the name


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _nonempty_str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


class ResponsesToChat:
    """Translate one Responses stream into one chat-completions stream.

    Errors are raised as :class:`~compat_asgi.errors.CompatError`; the shell
    then sends what :meth:`fail` returns and closes without ``[DONE]``, which
    the OpenAI SDK reports as an ``APIError``. A fault never takes back what it
    follows: the chunks of the events before it in the same read stay pending
    and :meth:`fail` returns them first, then the ``{"error": ...}`` object.
    Chat chunks have no open/close structure, so nothing else needs closing.
    """

    def __init__(
        self,
        *,
        completion_id: str,
        created: int,
        model: str,
        include_usage: bool,
        ids: IdFactory,
        max_line: int = DEFAULT_MAX_LINE,
    ) -> None:
        self.done = False
        self.ignored_events = 0
        """Events with no chat equivalent (hosted tools, annotations ...), for the shell to log."""
        self._id = completion_id
        self._created = created
        self._model = model
        self._include_usage = include_usage
        self._ids = ids
        self._decoder = SSEDecoder(max_line)
        self._failed = False
        self._started = False
        self._out: list[Chunk] = []  # produced, not yet returned to the caller
        self._keys: dict[str, _Key] = {}
        self._calls: dict[_Key, _Call] = {}
        self._next_call = 0
        self._sent: dict[_PartKey, int] = {}

    # -- public API ---------------------------------------------------------

    @property
    def pending(self) -> bool:
        """Chunks were produced but not returned: a call raised after producing them."""
        return bool(self._out)

    def feed_bytes(self, data: bytes) -> list[Chunk]:
        """Feed raw upstream SSE bytes, split anywhere; get the chunks now complete.

        A fault raises; the chunks of the same bytes before it stay pending for :meth:`fail`.
        """
        if self.done or self._failed:
            return []  # anything after the terminal event is not part of this stream
        self._run(self._decoder.feed(data))
        if not self.done:
            self._decoder.check()
        return self._take()

    def close(self) -> list[Chunk]:
        """The upstream body ended. Raises if it never sent a terminal event."""
        if self.done or self._failed:
            return self._take()
        self._run(self._decoder.close())
        if not self.done:
            raise UpstreamProtocolError("upstream stream ended before its terminal event")
        return self._take()

    def fail(self, error: CompatError) -> list[dict[str, Any]]:
        """The stream's last ``data:`` payloads: the chunks produced before the
        fault that were not yet returned, then the ``{"error": ...}`` object."""
        if self.done or self._failed:
            return self._take()
        self._failed = True
        return [*self._take(), error.to_dict()]

    # -- dispatch -----------------------------------------------------------

    def _run(self, events: list[ServerSentEvent]) -> None:
        for sse in events:
            self._event(sse)
            if self.done:
                return

    def _take(self) -> list[Chunk]:
        out = self._out
        self._out = []
        return out

    def _event(self, sse: ServerSentEvent) -> None:
        if sse.data == DONE:
            return  # not part of the Responses protocol, but some servers end with it anyway
        try:
            event = orjson.loads(sse.data)
        except orjson.JSONDecodeError:
            raise UpstreamProtocolError(
                f"upstream sent a data line that is not JSON: {sse.data[:200]!r}"
            ) from None
        if not isinstance(event, dict):
            raise UpstreamProtocolError("upstream event data is not a JSON object")
        kind = event.get("type")
        if not isinstance(kind, str):
            if sse.event is None:
                raise UpstreamProtocolError("upstream event has neither a type nor an event: name")
            kind = sse.event.decode(errors="replace")
        handler = _HANDLERS.get(kind)
        if handler is not None:
            handler(self, event)
        elif kind in _TEXT_DELTAS:
            self._on_text_delta(event, *_TEXT_DELTAS[kind])
        elif kind in _TEXT_DONES:
            channel, index_field, text_field = _TEXT_DONES[kind]
            self._catch_up(self._key(event), channel, _index(event, index_field), event.get(text_field))
        elif kind not in _NO_OP_EVENTS:
            self.ignored_events += 1

    # -- chunks -------------------------------------------------------------

    def _chunk(self, delta: dict[str, Any], finish_reason: str | None = None, logprobs: Any = None) -> None:
        chunk: Chunk = {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
            "choices": [{"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish_reason}],
        }
        if self._include_usage:
            # OpenAI marks every non-usage chunk so when usage was asked for.
            chunk["usage"] = None
        self._out.append(chunk)

    def _start(self) -> None:
        if not self._started:
            self._started = True
            self._chunk({"role": "assistant", "content": ""})

    # -- items and text -----------------------------------------------------

    def _bind(self, output_index: object, item_id: object) -> _Key:
        """The item's key: the first handle seen for an id stays its key for good."""
        if isinstance(item_id, str) and item_id:
            key = self._keys.get(item_id)
            if key is None:
                key = output_index if isinstance(output_index, int) and not isinstance(output_index, bool) else item_id
                self._keys[item_id] = key
            return key
        if isinstance(output_index, int) and not isinstance(output_index, bool):
            return output_index
        return ""

    def _key(self, event: dict[str, Any]) -> _Key:
        return self._bind(event.get("output_index"), event.get("item_id"))

    def _on_text_delta(self, event: dict[str, Any], channel: str, index_field: str) -> None:
        delta = event.get("delta")
        if not isinstance(delta, str):
            raise UpstreamProtocolError(f"upstream {event.get('type')} event has no string delta")
        logprobs = event.get("logprobs")
        self._text(
            self._key(event),
            channel,
            _index(event, index_field),
            delta,
            {"content": logprobs, "refusal": None} if logprobs and isinstance(logprobs, list) else None,
        )

    def _text(self, key: _Key, channel: str, index: int, text: str, logprobs: Any = None) -> None:
        if not text:
            return
        part = (key, channel, index)
        sent = self._sent.get(part, 0)
        self._sent[part] = sent + len(text)
        if channel == "summary" and index > 0 and sent == 0:
            text = _SUMMARY_SEPARATOR + text
        self._start()
        self._chunk({_CHAT_FIELD[channel]: text}, logprobs=logprobs)

    def _catch_up(self, key: _Key, channel: str, index: int, full: object) -> None:
        """Send whatever of a finished part's text the deltas did not carry."""
        if isinstance(full, str):
            sent = self._sent.get((key, channel, index), 0)
            if len(full) > sent:
                self._text(key, channel, index, full[sent:])

    def _parts_done(self, key: _Key, parts: object, channel: str | None = None) -> None:
        if not isinstance(parts, list):
            return
        for index, part in enumerate(parts):
            if isinstance(part, dict):
                mapped = _part_channel(part)
                if mapped is not None and (channel is None or mapped[0] == channel):
                    self._catch_up(key, mapped[0], index, part.get(mapped[1]))

    def _item_done(self, key: _Key, item: dict[str, Any]) -> bool:
        """Catch up on a finished item; False if chat has no equivalent of its type."""
        kind = item.get("type")
        if kind == "function_call":
            call = self._call(key, item)
            self._call_arguments_done(call, item.get("arguments"))
            if call.index < 0:
                raise UpstreamProtocolError("upstream function call item has no name")
        elif kind == "message":
            self._parts_done(key, item.get("content"))
        elif kind == "reasoning":
            self._parts_done(key, item.get("content"), "reasoning")
            self._parts_done(key, item.get("summary"), "summary")
        else:
            return False
        return True

    # -- function calls -----------------------------------------------------

    def _call(self, key: _Key, source: dict[str, Any] | None = None) -> _Call:
        """The call for ``key``, updated from an item or event that may name it."""
        call = self._calls.get(key)
        if call is None:
            call = self._calls[key] = _Call()
        if source is not None and call.index < 0:
            call.name = call.name or _nonempty_str(source.get("name")) or ""
            call.call_id = call.call_id or _nonempty_str(source.get("call_id")) or ""
            if call.name:
                self._announce(call)
        return call

    def _announce(self, call: _Call) -> None:
        # Indexes follow announcement order: the SDK's accumulator inserts a new
        # tool call at its index, so a gap would land it in the wrong slot.
        call.index = self._next_call
        self._next_call += 1
        if not call.call_id:
            call.call_id = self._ids("call")
        arguments = "".join(call.pending)
        call.pending = []
        self._start()
        self._chunk(
            {
                "tool_calls": [
                    {
                        "index": call.index,
                        "id": call.call_id,
                        "type": "function",
                        "function": {"name": call.name, "arguments": arguments},
                    }
                ]
            }
        )

    def _call_arguments(self, call: _Call, piece: str) -> None:
        if not piece:
            return
        call.sent += len(piece)
        if call.index < 0:
            call.pending.append(piece)
        else:
            self._chunk({"tool_calls": [{"index": call.index, "function": {"arguments": piece}}]})

    def _call_arguments_done(self, call: _Call, full: object) -> None:
        if isinstance(full, str) and len(full) > call.sent:
            self._call_arguments(call, full[call.sent :])

    # -- event handlers -----------------------------------------------------

    def _on_created(self, event: dict[str, Any]) -> None:
        self._start()

    def _on_item_added(self, event: dict[str, Any]) -> None:
        item = _item(event)
        kind = item.get("type")
        if kind == "function_call":
            call = self._call(self._bind(event.get("output_index"), item.get("id")), item)
            arguments = item.get("arguments")
            if isinstance(arguments, str):
                self._call_arguments(call, arguments)
        elif kind not in ("message", "reasoning"):
            self.ignored_events += 1

    def _on_item_done(self, event: dict[str, Any]) -> None:
        item = _item(event)
        if not self._item_done(self._bind(event.get("output_index"), item.get("id")), item):
            self.ignored_events += 1

    def _on_arguments_delta(self, event: dict[str, Any]) -> None:
        delta = event.get("delta")
        if not isinstance(delta, str):
            raise UpstreamProtocolError("upstream function_call_arguments.delta has no string delta")
        self._call_arguments(self._call(self._key(event)), delta)

    def _on_arguments_done(self, event: dict[str, Any]) -> None:
        call = self._call(self._key(event), event)
        self._call_arguments_done(call, event.get("arguments"))

    def _on_part_done(self, event: dict[str, Any]) -> None:
        part = event.get("part")
        if isinstance(part, dict):
            mapped = _part_channel(part)
            if mapped is not None:
                index_field = "summary_index" if mapped[0] == "summary" else "content_index"
                self._catch_up(self._key(event), mapped[0], _index(event, index_field), part.get(mapped[1]))

    def _on_terminal(self, event: dict[str, Any]) -> None:
        response = event.get("response")
        if not isinstance(response, dict):
            response = {}
        # The final object is the last word: anything the deltas missed is sent now.
        output = response.get("output")
        if isinstance(output, list):
            for position, item in enumerate(output):
                if isinstance(item, dict):
                    self._item_done(self._bind(position, item.get("id")), item)
        for call in self._calls.values():
            if call.index < 0:
                raise UpstreamProtocolError("upstream function call never got a name")
        if event.get("type") == "response.incomplete":
            finish = _incomplete_finish(response)
        else:
            finish = "tool_calls" if self._next_call else "stop"
        self._start()
        self._chunk({}, finish)
        if self._include_usage:
            self._out.append(
                {
                    "id": self._id,
                    "object": "chat.completion.chunk",
                    "created": self._created,
                    "model": self._model,
                    "choices": [],
                    "usage": chat_usage(response.get("usage")),
                }
            )
        self.done = True

    def _on_error(self, event: dict[str, Any]) -> None:
        # OpenAI puts message/code on the event itself; some servers nest them.
        error = event.get("error")
        raise _upstream_error(error if isinstance(error, dict) else event)

    def _on_failed(self, event: dict[str, Any]) -> None:
        response = event.get("response")
        error = response.get("error") if isinstance(response, dict) else None
        raise _upstream_error(error if isinstance(error, dict) else {})


_HANDLERS: dict[str, Callable[[ResponsesToChat, dict[str, Any]], None]] = {
    "response.created": ResponsesToChat._on_created,
    "response.output_item.added": ResponsesToChat._on_item_added,
    "response.output_item.done": ResponsesToChat._on_item_done,
    "response.function_call_arguments.delta": ResponsesToChat._on_arguments_delta,
    "response.function_call_arguments.done": ResponsesToChat._on_arguments_done,
    "response.content_part.done": ResponsesToChat._on_part_done,
    "response.reasoning_summary_part.done": ResponsesToChat._on_part_done,
    "response.completed": ResponsesToChat._on_terminal,
    "response.incomplete": ResponsesToChat._on_terminal,
    "response.failed": ResponsesToChat._on_failed,
    "error": ResponsesToChat._on_error,
}


def _index(event: dict[str, Any], field: str) -> int:
    value = event.get(field)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _part_channel(part: dict[str, Any]) -> tuple[str, str] | None:
    kind = part.get("type")
    return _PART_CHANNELS.get(kind) if isinstance(kind, str) else None


def _item(event: dict[str, Any]) -> dict[str, Any]:
    item = event.get("item")
    if not isinstance(item, dict):
        raise UpstreamProtocolError(f"upstream {event.get('type')} event has no item object")
    return item


def _incomplete_finish(response: dict[str, Any]) -> str:
    details = response.get("incomplete_details")
    reason = details.get("reason") if isinstance(details, dict) else None
    # Any other reason still means the output was cut short.
    return _FINISH_REASONS.get(reason, "length") if isinstance(reason, str) else "length"


def _upstream_error(error: dict[str, Any]) -> UpstreamStatusError:
    message = _nonempty_str(error.get("message")) or "upstream reported an error"
    code = error.get("code")
    param = error.get("param")
    return UpstreamStatusError(
        502,
        message,
        code=str(code) if code is not None else "upstream_error",
        param=param if isinstance(param, str) else None,
    )


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def chat_usage(usage: Any) -> dict[str, Any]:
    """Responses ``usage`` -> chat ``usage``; detail objects always present (zeros if unknown)."""
    if not isinstance(usage, dict):
        usage = {}
    prompt = _count(usage.get("input_tokens"))
    completion = _count(usage.get("output_tokens"))
    total = usage.get("total_tokens")
    input_details = usage.get("input_tokens_details")
    output_details = usage.get("output_tokens_details")
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": total if _is_int(total) and total >= prompt + completion else prompt + completion,
        "prompt_tokens_details": {
            "cached_tokens": _count(input_details.get("cached_tokens")) if isinstance(input_details, dict) else 0
        },
        "completion_tokens_details": {
            "reasoning_tokens": _count(output_details.get("reasoning_tokens"))
            if isinstance(output_details, dict)
            else 0
        },
    }


def _texts(parts: object, kind: str, field: str) -> list[str]:
    if not isinstance(parts, list):
        return []
    return [
        part[field]
        for part in parts
        if isinstance(part, dict) and part.get("type") == kind and isinstance(part.get(field), str)
    ]


def response_to_chat_completion(response: Any, *, completion_id: str, created: int, model: str) -> dict[str, Any]:
    """A non-streamed Response object as a ``chat.completion``.

    Text is joined the way :class:`ResponsesToChat` streams it, so a client
    sees the same message whether it streamed or not.
    """
    if not isinstance(response, dict):
        raise UpstreamProtocolError("upstream response is not a JSON object")
    status = response.get("status")
    if status == "failed":
        error = response.get("error")
        raise _upstream_error(error if isinstance(error, dict) else {})
    if status == "cancelled":
        raise UpstreamError("upstream response was cancelled")
    if status in ("queued", "in_progress"):
        raise UpstreamProtocolError(f"upstream returned an unfinished response (status {status!r})")
    output = response.get("output")
    if not isinstance(output, list):
        raise UpstreamProtocolError("upstream response has no output array")

    content: list[str] = []
    refusal: list[str] = []
    reasoning: list[str] = []
    logprobs: list[Any] = []
    tool_calls: list[dict[str, Any]] = []
    for item in output:
        if not isinstance(item, dict):
            raise UpstreamProtocolError("upstream response output item is not a JSON object")
        kind = item.get("type")
        if kind == "message":
            parts = item.get("content")
            content += _texts(parts, "output_text", "text")
            refusal += _texts(parts, "refusal", "refusal")
            for part in parts if isinstance(parts, list) else ():
                if isinstance(part, dict) and isinstance(part.get("logprobs"), list):
                    logprobs += part["logprobs"]
        elif kind == "reasoning":
            reasoning += _texts(item.get("content"), "reasoning_text", "text")
            summary = item.get("summary")
            for index, part in enumerate(summary if isinstance(summary, list) else ()):
                piece = part.get("text") if isinstance(part, dict) and part.get("type") == "summary_text" else None
                if isinstance(piece, str) and piece:
                    # Same separator rule as the stream: before every part but the first.
                    reasoning.append(_SUMMARY_SEPARATOR + piece if index else piece)
        elif kind == "function_call":
            name = _nonempty_str(item.get("name"))
            call_id = _nonempty_str(item.get("call_id")) or _nonempty_str(item.get("id"))
            if name is None or call_id is None:
                raise UpstreamProtocolError("upstream function call item lacks a name or call_id")
            arguments = item.get("arguments")
            tool_calls.append(
                {
                    "id": call_id,
                    "type": "function",
                    "function": {"name": name, "arguments": arguments if isinstance(arguments, str) else ""},
                }
            )

    if status == "incomplete":
        finish = _incomplete_finish(response)
    else:
        finish = "tool_calls" if tool_calls else "stop"
    text = "".join(content)
    message: dict[str, Any] = {
        "role": "assistant",
        # OpenAI sends null content beside tool calls or a refusal, "" never otherwise.
        "content": text if text or not (tool_calls or refusal) else None,
        "refusal": "".join(refusal) or None,
    }
    reasoning_text = "".join(reasoning)
    if reasoning_text:
        message["reasoning_content"] = reasoning_text
    if tool_calls:
        message["tool_calls"] = tool_calls
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": {"content": logprobs, "refusal": None} if logprobs else None,
                "finish_reason": finish,
            }
        ],
        "usage": chat_usage(response.get("usage")),
    }


def completion_chunks(completion: dict[str, Any], *, include_usage: bool) -> list[Chunk]:
    """A whole ``chat.completion`` as the chunks of a stream, for upstreams that
    answered a streamed request in one piece."""
    base = {
        "id": completion["id"],
        "object": "chat.completion.chunk",
        "created": completion["created"],
        "model": completion["model"],
    }
    if include_usage:
        base["usage"] = None
    choice = completion["choices"][0]
    message = choice["message"]
    delta: dict[str, Any] = {"role": "assistant", "content": message.get("content") or ""}
    for key in ("refusal", "reasoning_content"):
        if message.get(key):
            delta[key] = message[key]
    if message.get("tool_calls"):
        delta["tool_calls"] = [{"index": i, **call} for i, call in enumerate(message["tool_calls"])]
    chunks: list[Chunk] = [
        {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}]},
        {**base, "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": choice["finish_reason"]}]},
    ]
    if include_usage:
        chunks.append({**base, "choices": [], "usage": completion.get("usage")})
    return chunks
