"""``POST /responses`` over a chat-completions upstream, with stored state."""

from __future__ import annotations

import itertools
import logging
from collections.abc import AsyncGenerator, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from compat_asgi.asgi import (
    SSE_HEADERS,
    Responder,
    is_event_stream,
    parse_upstream_json,
    pump,
    raise_for_status,
)
from compat_asgi.core.requests import TranslatedRequest, responses_to_chat
from compat_asgi.core.responses import chat_completion_to_response, new_response
from compat_asgi.core.sse import encode_event, encode_events
from compat_asgi.core.streams import ChatToResponses, Event, completion_to_chunk
from compat_asgi.endpoints import Call, post_json, report_ignored
from compat_asgi.endpoints.history import (
    conversation_id,
    input_items,
    load_history,
    resolve_references,
)
from compat_asgi.errors import CompatError, InvalidRequest
from compat_asgi.settings import Settings
from compat_asgi.store import Store, StoredResponse

__all__ = ["ResponsesOverChat", "Turn", "CHAT_PATH"]

logger = logging.getLogger("compat_asgi")

CHAT_PATH = "/v1/chat/completions"


class _Recording:
    """The encoded events of a response to be stored for replay, up to
    ``limit`` bytes: past that it keeps none (``dropped``), as a replay
    missing events would be wrong."""

    __slots__ = ("pieces", "size", "limit", "dropped")

    def __init__(self, limit: int) -> None:
        self.pieces: list[bytes] | None = []
        self.size = 0
        self.limit = limit
        self.dropped = False

    def keep(self, data: bytes) -> None:
        if self.pieces is not None and data:
            self.size += len(data)
            if self.size > self.limit:
                self.drop()
            else:
                self.pieces.append(data)

    def fits(self, size: int) -> bool:
        """Whether ``size`` more bytes would fit; if not, the recording is dropped now."""
        if self.pieces is not None and self.size + size > self.limit:
            self.drop()
        return self.pieces is not None

    def drop(self) -> None:
        self.pieces = None
        self.dropped = True

    def events(self) -> bytes:
        """What to store as the events (``b""``: over the cap), releasing the pieces."""
        events = b"".join(self.pieces) if self.pieces is not None else b""
        self.pieces = None
        return events


class _EncodedStream:
    """:class:`ChatToResponses` as the shell's byte-level StreamTranslator,
    keeping what it sent when the response is to be stored for replay."""

    __slots__ = ("core", "recording", "first", "held")

    def __init__(
        self,
        core: ChatToResponses,
        *,
        record: bool,
        max_recorded: int,
        first: Sequence[dict[str, Any]] = (),
    ) -> None:
        self.core = core
        self.recording = _Recording(max_recorded) if record else None
        self.first = first  # finished items that open the output (a compaction)
        self.held: list[Event] = []  # the closing events, sent with the terminal one

    def events(self) -> bytes | None:
        """What to store as the events (None: none recorded), releasing them."""
        return None if self.recording is None else self.recording.events()

    @property
    def finished(self) -> bool:
        return self.core.saw_done

    @property
    def pending(self) -> bool:
        return self.core.pending or bool(self.held)

    def keep(self, data: bytes) -> bytes:
        if self.recording is not None:
            self.recording.keep(data)
        return data

    def start(self) -> bytes:
        events = self.core.start()
        for item in self.first:
            events += self.core.add_item(item)
        return self.keep(encode_events(events))

    def feed(self, data: bytes) -> bytes:
        if self.core.finishing:
            # Events are held from the finish on: what follows goes after them.
            self.held += self.core.feed_bytes(data)
            return b""
        spliced, events = self.core.feed_encoded(data)
        if self.core.finishing:
            # The items' closing events, after the last text delta: each
            # carries its item's whole text. They go out with the terminal
            # event, one body message each; the rest of the read goes now.
            cut = len(events)
            while cut and events[cut - 1]["type"] not in _TEXT_DELTAS:
                cut -= 1
            self.held += events[cut:]
            events = events[:cut]
        return self.keep(spliced + encode_events(events) if events else spliced)

    def close(self) -> Iterable[bytes]:
        return self._pieces(self.core.close())

    def fail(self, error: CompatError) -> Iterable[bytes]:
        return self._pieces(self.core.fail(error))

    def _pieces(self, events: list[Event]) -> Iterable[bytes]:
        """The last events, one piece each: of a long answer, four of them
        carry the whole text. Unless they are to be recorded, each is encoded
        only as it is sent, so that one at a time is alive as bytes."""
        # Text a feed that raised had spliced comes first; nothing was held
        # then (a finishing stream is fed without the fast path).
        spliced = self.core.take_encoded()
        head = (self.keep(spliced),) if spliced else ()
        events, self.held = self.held + events, []
        # Known before encoding them (their text alone is that long): they would not fit the recording.
        if self.recording is None or not self.recording.fits(_text_size(events)):
            return itertools.chain(head, map(encode_event, events))
        return [*head, *(self.keep(encode_event(event)) for event in events)]

    def interrupt(self) -> bytes:
        return self.keep(self.core.take_encoded() + encode_events(self.core.interrupt()))


_TEXT_DELTAS = frozenset(
    {
        "response.output_text.delta",
        "response.refusal.delta",
        "response.reasoning_text.delta",
        "response.reasoning_summary_text.delta",
    }
)


def _warn_left_out(response_id: str, calls: int) -> None:
    if calls:
        logger.warning(
            "%s: %d tool call(s) from the upstream left out of the response: without a name,"
            " or cut off mid-arguments (by the token limit or a fault)",
            response_id,
            calls,
        )


def _text_size(value: Any) -> int:
    """The characters of every string in ``value``: a lower bound, cheap to
    take, of the bytes its JSON takes."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, dict):
        return sum(_text_size(item) for item in value.values())
    if isinstance(value, list):
        return sum(_text_size(item) for item in value)
    return 0


@dataclass(slots=True)
class Turn:
    """What :meth:`ResponsesOverChat.events` is producing: the Response (in
    progress, then final), the request's input items, the translator, and the
    whole context the response ends (history, input and output items), which
    is what a later ``previous_response_id`` pointing at it stands for.
    ``encoded``: the batch last yielded as SSE bytes, when it was encoded to be
    stored, so a caller that needs those bytes too does not encode it again."""

    response: dict[str, Any] | None = None
    items: list[dict[str, Any]] = field(default_factory=list)
    core: ChatToResponses | None = None
    context: list[dict[str, Any]] = field(default_factory=list)
    encoded: bytes | None = None


class ResponsesOverChat:
    def __init__(self, settings: Settings, store: Store | None) -> None:
        self.settings = settings
        self.store = store

    async def _translate(
        self, body: Any, call: Call, history: list[dict[str, Any]] | None = None
    ) -> tuple[TranslatedRequest, list[dict[str, Any]] | None]:
        """The chat request, and the input items to store (None: nothing to store).
        What it reports ignored is what the client sent, not its stored history.

        ``history``: what ``previous_response_id`` stands for, when the caller
        already holds it (a WebSocket connection's last response); else it is
        loaded from the store."""
        options = call.target.options
        owner = call.owner
        if not isinstance(body, dict):
            return responses_to_chat(body, options), None
        if self.store is None:
            for field in ("previous_response_id", "conversation"):
                if body.get(field) is not None and (history is None or field == "conversation"):
                    raise InvalidRequest(
                        f"'{field}' needs a response store, and this server has none configured.",
                        param=field,
                    )
            if history is None:
                return responses_to_chat(body, options), None
        items = input_items(body.get("input"), self.settings.ids)
        if items is None:
            return responses_to_chat(body, options), None  # raises: input is malformed
        if history is None:
            assert self.store is not None
            history = await load_history(
                self.store, body, owner, max_bytes=self.settings.max_history_bytes
            )
        items = resolve_references(items, history)
        # Validate what the client sent first, so that error params index its own input.
        translated = responses_to_chat({**body, "input": items}, options)
        if history:
            ignored = translated.ignored
            translated = responses_to_chat({**body, "input": history + items}, options)
            translated = replace(translated, ignored=ignored)
        return translated, items

    async def _save(
        self, call: Call, body: Any, items: list[dict[str, Any]], response: dict[str, Any], events: bytes | None
    ) -> None:
        """Keep the response (``store: true``) and thread its items into the
        request's conversation, if it names one."""
        assert self.store is not None
        if response["store"]:
            await self.store.save(
                StoredResponse(
                    id=response["id"],
                    owner=call.owner,
                    response=response,
                    input_items=items,
                    events=events,
                    created_at=response["created_at"],
                )
            )
        conversation = conversation_id(body)
        if conversation is not None:
            output = list(response.get("output") or ())
            await self.store.append_conversation(conversation, items + output, owner=call.owner)

    async def _save_streamed(
        self, call: Call, body: Any, items: list[dict[str, Any]], response: dict[str, Any], recording: _Recording
    ) -> None:
        """Store a streamed response with the events recorded of it; when that
        fails, the client still has its stream and the failure is logged."""
        if recording.dropped:
            logger.warning(
                "%s streamed more than %d bytes of events: stored without them (no replay)",
                response["id"],
                recording.limit,
            )
        try:
            await self._save(call, body, items, response, recording.events())
        except CompatError as exc:
            logger.warning("could not store %s: %s", response["id"], exc.message)

    async def handle(
        self, call: Call, responder: Responder, *, first_output: Sequence[dict[str, Any]] = ()
    ) -> None:
        """``first_output``: finished items the output starts with (the
        compaction that ``context_management`` made of this request's context)."""
        settings = self.settings
        body = call.json()
        translated, items = await self._translate(body, call)
        report_ignored(call, responder, translated.ignored)
        echo = translated.echo
        target = call.target
        target.adapt(translated.chat, "max_tokens")
        keep = self.store is not None and items is not None and (echo["store"] or echo["conversation"] is not None)
        kept_items = items or []
        upstream = await post_json(call, settings, CHAT_PATH, translated.chat)
        try:
            await raise_for_status(upstream)
            response = new_response(echo, settings.ids("resp"), settings.clock())
            if not translated.stream:
                completion = parse_upstream_json(
                    await upstream.read(settings.max_upstream_body_size)
                )
                left_out: list[str] = []
                chat_completion_to_response(
                    completion, response, settings.ids, translated.output, settings.clock, left_out
                )
                _warn_left_out(response["id"], len(left_out))
                response["output"][:0] = [{**item, "status": "completed"} for item in first_output]
                if keep:
                    await self._save(call, body, kept_items, response, None)
                await responder.send_json(200, response)
                return
            core = ChatToResponses(
                response,
                settings.ids,
                max_line=settings.max_line_size,
                options=translated.output,
                clock=settings.clock,
            )
            stream = _EncodedStream(
                core, record=keep, max_recorded=settings.max_recorded_events, first=first_output
            )

            async def save() -> None:
                _warn_left_out(core.response["id"], core.left_out_calls)
                if stream.recording is not None:  # kept
                    await self._save_streamed(call, body, kept_items, core.response, stream.recording)

            if is_event_stream(upstream.headers):
                await pump(
                    upstream, stream, responder, keepalive=settings.keepalive_interval, on_end=save
                )
                return
            # The upstream ignored stream=true and answered whole: replay it as a stream.
            completion = parse_upstream_json(await upstream.read(settings.max_upstream_body_size))
            events = core.start()
            for item in first_output:
                events += core.add_item(item)
            events += core.feed(completion_to_chunk(completion))
            events += core.finish(saw_done=True)
            data = stream.keep(encode_events(events))
            await save()
            await responder.start(200, SSE_HEADERS)
            await responder.body(data, more_body=False)
        finally:
            await upstream.aclose()

    async def events(
        self,
        call: Call,
        body: dict[str, Any],
        turn: Turn,
        *,
        history: list[dict[str, Any]] | None = None,
        generate: bool = True,
        response_id: str | None = None,
        background: bool = False,
    ) -> AsyncGenerator[list[Event], None]:
        """The response to a create ``body`` as batches of stream events, the
        same :class:`ChatToResponses` events the SSE endpoint encodes, for
        transports that frame them otherwise (WebSocket mode, background runs).

        The first batch is empty: the request was valid and is going upstream.
        Errors before it raise :class:`CompatError` (the request was refused),
        and so do upstream refusals before the stream started; after that, the
        stream ends with ``error`` + ``response.failed`` like an SSE stream.
        ``generate=False`` answers without asking the upstream: an empty
        completed response whose id later turns can continue from (WebSocket
        warm-up)."""
        settings = self.settings
        if history is None and self.store is None:
            history = []  # the caller remembers this turn itself, so it needs its items
        translated, items = await self._translate({**body, "stream": True}, call, history)
        call.ignored = translated.ignored  # for the caller's report (no response headers here)
        echo = translated.echo
        keep = self.store is not None and items is not None and (
            echo["store"] or echo["conversation"] is not None
        )
        context = list(history or ()) + list(items or ())
        recording = _Recording(settings.max_recorded_events)
        response = new_response(echo, response_id or settings.ids("resp"), settings.clock())
        response["background"] = background
        core = ChatToResponses(response, settings.ids, max_line=settings.max_line_size, options=translated.output)
        turn.response, turn.items, turn.core = response, list(items or ()), core

        async def finish(events: list[Event]) -> list[Event]:
            turn.context = context + list(core.response.get("output") or ())
            _warn_left_out(core.response["id"], core.left_out_calls)
            turn.encoded = None
            if keep:
                turn.encoded = data = encode_events(events)
                recording.keep(data)
                await self._save_streamed(call, body, items or [], core.response, recording)
            return events

        def note(events: list[Event]) -> list[Event]:
            turn.encoded = None
            if keep and events:
                turn.encoded = data = encode_events(events)
                recording.keep(data)
            return events

        yield []
        if not generate:
            yield note(core.start())
            yield await finish(core.finish(saw_done=True))
            return
        call.target.adapt(translated.chat, "max_tokens")
        upstream = await post_json(call, settings, CHAT_PATH, translated.chat)
        try:
            await raise_for_status(upstream)
            yield note(core.start())
            try:
                if is_event_stream(upstream.headers):
                    async for chunk in upstream.chunks():
                        events = core.feed_bytes(chunk)
                        if events:
                            yield note(events)
                        if core.saw_done:
                            break
                    tail = core.close()
                else:
                    completion = parse_upstream_json(await upstream.read(settings.max_upstream_body_size))
                    tail = core.feed(completion_to_chunk(completion)) + core.finish(saw_done=True)
            except CompatError as exc:
                tail = core.fail(exc)
            yield await finish(tail)
        finally:
            await upstream.aclose()
