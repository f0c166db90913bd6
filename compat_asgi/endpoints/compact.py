"""``POST /responses/compact``, and ``context_management`` compaction on create.

Compacting asks the chat backend to summarise the conversation (the request's
history and input, translated as a create would translate them) and returns
every user message followed by one ``compaction`` item whose
``encrypted_content`` seals the summary (see :mod:`compat_asgi.core.compaction`).

On create, ``context_management: [{"type": "compaction", "compact_threshold":
N}]`` compacts the context before the request's last user message when its
size passes ``N`` tokens. The size is estimated, not counted (chat message
JSON bytes / 4): an exact count would cost the backend a second request on
every create. The compacted context then replaces the history for this and,
through the stored input items, every later turn.
"""

from __future__ import annotations

from typing import Any

from compat_asgi.asgi import Responder, parse_upstream_json, raise_for_status
from compat_asgi.core.compaction import (
    compacted_output,
    estimate_tokens,
    seal_summary,
    summary_request,
)
from compat_asgi.core.reasoning import split_think
from compat_asgi.core.requests import responses_to_chat
from compat_asgi.core.responses import map_usage
from compat_asgi.core.validation import as_dict, check_keys, opt_int, type_error, unsupported
from compat_asgi.endpoints import Call, post_json
from compat_asgi.endpoints.history import conversation_id, input_items, load_history, resolve_references
from compat_asgi.endpoints.responses import CHAT_PATH
from compat_asgi.endpoints.routes import Handler, Route
from compat_asgi.errors import InvalidRequest, UpstreamProtocolError
from compat_asgi.settings import Settings
from compat_asgi.store import Store

__all__ = ["Compaction"]

_KNOWN_KEYS = frozenset(
    {
        "model",
        "input",
        "instructions",
        "previous_response_id",
        # Caching and service hints no chat backend has: accepted, not forwarded.
        "prompt_cache_key",
        "prompt_cache_options",
        "prompt_cache_retention",
        "service_tier",
        "image",
    }
)
_SUMMARISED = ("model", "input", "instructions", "previous_response_id")


class Compaction:
    def __init__(self, settings: Settings, store: Store | None, passthrough: Handler) -> None:
        self.settings = settings
        self.store = store
        self.passthrough = passthrough

    def routes(self) -> list[Route]:
        return [Route("POST", "/responses/compact", self.compact)]

    async def compact(self, call: Call, responder: Responder) -> None:
        if call.target.api != "chat":
            call.mode = "passthrough"  # a Responses upstream compacts for itself
            await self.passthrough(call, responder)
            return
        call.mode = "translated"
        body = check_keys(call.json(), _KNOWN_KEYS, {})
        request = {key: body[key] for key in _SUMMARISED if body.get(key) is not None}
        request.setdefault("input", [])
        items = await self._items(call, request)
        output, usage = await self._summarise(call, request, items)
        await responder.send_json(
            200,
            {
                "id": self.settings.ids("resp"),
                "object": "response.compaction",
                "created_at": self.settings.clock(),
                "output": output,
                "usage": usage,
            },
        )

    async def prepare_create(self, call: Call) -> list[dict[str, Any]]:
        """Apply ``context_management`` to a create body before it is served:
        validated and taken out (the rest of the server does not know it), and
        the context compacted in the body when it is past the threshold.
        Returns the items the response's output starts with: the compaction
        item when there was one, as OpenAI's server puts it in the output."""
        body = call.json()
        if not isinstance(body, dict) or body.get("context_management") is None:
            return []
        threshold = _threshold(body.pop("context_management"))
        if threshold is None or conversation_id(body) is not None:
            # A conversation keeps its own items; compacting would duplicate them there.
            return []
        items = await self._items(call, body)
        last_user = max(
            (i for i, item in enumerate(items) if item.get("type") == "message" and item.get("role") == "user"),
            default=0,
        )
        before, after = items[:last_user], items[last_user:]
        if not before:
            return []
        chat = responses_to_chat({**body, "input": items}, call.target.options).chat
        if estimate_tokens(chat["messages"]) <= threshold:
            return []
        compacted, _ = await self._summarise(call, {**body, "input": before, "previous_response_id": None}, before)
        # The compacted context stands in for the history from now on.
        body["input"] = compacted + after
        body.pop("previous_response_id", None)
        return compacted[-1:]

    async def _items(self, call: Call, body: dict[str, Any]) -> list[dict[str, Any]]:
        """The conversation to compact: stored history, then the request's input items."""
        items = input_items(body.get("input"), self.settings.ids)
        if items is None:
            responses_to_chat(body, call.target.options)  # raises the precise error
            raise InvalidRequest("Invalid 'input'.", param="input")
        history: list[dict[str, Any]] = []
        if body.get("previous_response_id") is not None:
            if self.store is None:
                raise InvalidRequest(
                    "'previous_response_id' needs a response store, and this server has none configured.",
                    param="previous_response_id",
                )
            history = await load_history(self.store, body, call.owner)
        return history + resolve_references(items, history)

    async def _summarise(
        self, call: Call, body: dict[str, Any], items: list[dict[str, Any]]
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """The compacted output items for ``items``, and the usage of the summary request."""
        target = call.target
        seal = target.options.reasoning_seal
        if seal is None:
            raise InvalidRequest("Compaction needs a reasoning key to seal its summary.", param=None)
        request = {key: value for key, value in body.items() if key in _SUMMARISED and value is not None}
        translated = responses_to_chat({**request, "input": items}, target.options)
        chat = target.adapt(summary_request(translated.chat), "max_tokens")
        upstream = await post_json(call, self.settings, CHAT_PATH, chat)
        try:
            await raise_for_status(upstream)
            completion = parse_upstream_json(await upstream.read(self.settings.max_upstream_body_size))
        finally:
            await upstream.aclose()
        summary = _summary_text(completion, think_tags=target.options.think_tags)
        compaction = {
            "id": self.settings.ids("cmp"),
            "type": "compaction",
            "encrypted_content": seal_summary(seal, summary),
        }
        usage = completion.get("usage") if isinstance(completion, dict) else None
        return compacted_output(items, compaction), map_usage(usage)


def _summary_text(completion: Any, *, think_tags: bool) -> str:
    choices = completion.get("choices") if isinstance(completion, dict) else None
    message = choices[0].get("message") if isinstance(choices, list) and choices and isinstance(choices[0], dict) else None
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, str) and think_tags:
        content = split_think(content)[1]
    if not isinstance(content, str) or not content.strip():
        raise UpstreamProtocolError("the upstream answered the summary request without text")
    return content.strip()


def _threshold(value: object) -> int | None:
    """The ``compact_threshold`` of a ``context_management`` list; None: no compaction asked for."""
    if not isinstance(value, list):
        type_error("context_management", "an array of objects", value)
    threshold = None
    for index, raw in enumerate(value):
        param = f"context_management[{index}]"
        entry = as_dict(raw, param)
        if entry.get("type") != "compaction":
            unsupported(f"{param}.type", f"'{param}.type': only 'compaction' context management is supported.")
        limit = opt_int(entry, "compact_threshold", f"{param}.compact_threshold", 1)
        if limit is not None:
            threshold = limit
    return threshold
