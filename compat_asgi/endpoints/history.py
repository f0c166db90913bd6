"""Stored state a Responses request builds on: ``previous_response_id`` chains,
``conversation`` threads and ``item_reference`` items."""

from __future__ import annotations

from typing import Any

import orjson

from compat_asgi.core.ids import IdFactory
from compat_asgi.errors import InvalidRequest, NotFound
from compat_asgi.settings import DEFAULT_MAX_HISTORY_BYTES
from compat_asgi.store import Store

__all__ = ["MAX_CHAIN", "input_items", "load_history", "resolve_references", "conversation_id"]

MAX_CHAIN = 1000  # previous_response_id links followed before giving up
# Ids for input items the client sent without one, by item type.
_PREFIXES = {
    "message": "msg",
    "function_call": "fc",
    "function_call_output": "fco",
    "custom_tool_call": "ctc",
    "custom_tool_call_output": "ctco",
    "reasoning": "rs",
    "compaction": "cmp",
}


def input_items(value: Any, ids: IdFactory) -> list[dict[str, Any]] | None:
    """The request's ``input`` as the item list OpenAI stores: every item an
    object with a ``type`` and an ``id``, string content as parts. None when
    ``input`` is not a string or list (the request mapping reports that)."""
    if isinstance(value, str):
        value = [{"role": "user", "content": value}]
    if not isinstance(value, list):
        return None
    items: list[dict[str, Any]] = []
    for raw in value:
        if not isinstance(raw, dict):
            return None
        item = dict(raw)
        kind = item.get("type")
        if kind is None and ("role" in item or "content" in item):
            kind = item["type"] = "message"
        elif kind is None and "id" in item:
            kind = item["type"] = "item_reference"  # the SDK's {"id": ...} shorthand
        if kind == "message" and isinstance(item.get("content"), str):
            part = "output_text" if item.get("role") == "assistant" else "input_text"
            item["content"] = [{"type": part, "text": item["content"]}]
        if isinstance(kind, str) and kind in _PREFIXES and not isinstance(item.get("id"), str):
            item["id"] = ids(_PREFIXES[kind])
        items.append(item)
    return items


def conversation_id(body: dict[str, Any]) -> str | None:
    value = body.get("conversation")
    if isinstance(value, dict):
        value = value.get("id")
    return value if isinstance(value, str) and value else None


def _history_too_large(param: str, limit: int) -> InvalidRequest:
    return InvalidRequest(
        f"The stored history this request continues is larger than {limit} bytes; "
        "start a new chain, or send the items you need as input.",
        param=param,
        code="history_too_large",
    )


async def load_history(
    store: Store, body: dict[str, Any], owner: str | None, *, max_bytes: int = DEFAULT_MAX_HISTORY_BYTES
) -> list[dict[str, Any]]:
    """Input and output items of everything the request continues, oldest
    first; :class:`InvalidRequest` once they exceed ``max_bytes`` as JSON (a
    few bytes of request must not pull gigabytes from the store and upstream)."""
    previous = body.get("previous_response_id")
    if isinstance(previous, str) and previous:
        turns: list[list[dict[str, Any]]] = []
        seen: set[str] = set()
        size = 0
        while previous and previous not in seen and len(seen) < MAX_CHAIN:
            seen.add(previous)
            record = await store.get(previous, owner=owner)
            if record is None:
                if not turns:
                    raise NotFound(
                        f"Previous response with id '{previous}' not found.",
                        param="previous_response_id",
                        code="previous_response_not_found",
                    )
                break  # an older link expired: continue from what is left
            # An output item that is also an input item (the compaction a create
            # made of its own context) stands once, where the input has it.
            inputs = {item.get("id") for item in record.input_items}
            output = [item for item in record.response.get("output") or () if item.get("id") not in inputs]
            turn = record.input_items + output
            # Counted turn by turn, so loading stops at the first turn past the limit.
            size += len(orjson.dumps(turn))
            if size > max_bytes:
                raise _history_too_large("previous_response_id", max_bytes)
            turns.append(turn)
            link = record.response.get("previous_response_id")
            previous = link if isinstance(link, str) else None
        return [item for turn in reversed(turns) for item in turn]
    conversation = conversation_id(body)
    if conversation is not None:
        items = await store.conversation_items(conversation, owner=owner) or []
        if len(orjson.dumps(items)) > max_bytes:
            raise _history_too_large("conversation", max_bytes)
        return items
    return []


def resolve_references(items: list[dict[str, Any]], history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Replace ``item_reference`` items by the items they name in ``history``."""
    known = {item["id"]: item for item in history if isinstance(item.get("id"), str)}
    resolved = []
    for index, item in enumerate(items):
        if item.get("type") != "item_reference":
            resolved.append(item)
            continue
        target = known.get(str(item.get("id")))
        if target is None:
            raise InvalidRequest(
                f"Item with id '{item.get('id')}' not found in this response's history "
                "(previous_response_id chain or conversation).",
                param=f"input[{index}].id",
                code="item_not_found",
            )
        resolved.append(target)
    return resolved
