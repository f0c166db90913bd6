"""``GET``/``DELETE /responses/{id}``, ``GET /responses/{id}/input_items`` and
``?stream=true`` replay, from the response store."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from compat_asgi.asgi import SSE_HEADERS, Responder
from compat_asgi.core.sse import event_offset
from compat_asgi.endpoints import Call
from compat_asgi.endpoints.routes import Route
from compat_asgi.errors import InvalidRequest, NotFound
from compat_asgi.store import Store, StoredResponse

__all__ = ["StoredResponses", "list_options", "list_page", "not_recorded", "query_params"]

_DEFAULT_LIMIT = 20
_REPLAY_CHUNK = 64 << 10  # bytes of stored events per body message on replay
_MAX_LIMIT = 100


def query_params(call: Call) -> dict[str, str]:
    raw: bytes = call.scope.get("query_string", b"")
    return {key: values[-1] for key, values in parse_qs(raw.decode("latin-1")).items()}


def _int_param(query: dict[str, str], name: str, default: int, low: int, high: int) -> int:
    value = query.get(name)
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        number = low - 1
    if not low <= number <= high:
        raise InvalidRequest(
            f"Invalid '{name}': expected an integer from {low} to {high}, got {value!r}.",
            param=name,
            code="invalid_value",
        )
    return number


def _bool_param(query: dict[str, str], name: str) -> bool:
    value = query.get(name, "false").lower()
    if value not in ("true", "false", "1", "0"):
        raise InvalidRequest(f"Invalid '{name}': expected true or false.", param=name, code="invalid_value")
    return value in ("true", "1")


def list_options(query: dict[str, str]) -> tuple[int, str]:
    """``limit`` and ``order`` of a list request, checked before any lookup."""
    limit = _int_param(query, "limit", _DEFAULT_LIMIT, 1, _MAX_LIMIT)
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise InvalidRequest("Invalid 'order': expected 'asc' or 'desc'.", param="order", code="invalid_value")
    return limit, order


def list_page(items: list[dict[str, Any]], query: dict[str, str], limit: int, order: str) -> dict[str, Any]:
    """One page of ``items`` (oldest first) as OpenAI's cursor list object."""
    if order == "desc":
        items.reverse()
    after = query.get("after")
    if after is not None:
        ids = [item.get("id") for item in items]
        if after not in ids:
            raise InvalidRequest(f"Item '{after}' is not in this list.", param="after", code="invalid_value")
        items = items[ids.index(after) + 1 :]
    page = items[:limit]
    return {
        "object": "list",
        "data": page,
        "first_id": page[0].get("id") if page else None,
        "last_id": page[-1].get("id") if page else None,
        "has_more": len(items) > limit,
    }


def not_recorded(response_id: str) -> InvalidRequest:
    """A replay asked for events past the recording cap (``max_recorded_events``)."""
    return InvalidRequest(
        f"Response '{response_id}' streamed more events than this server records for replay, "
        "so it was stored without them; retrieve it without stream=true.",
        param="stream",
        code="invalid_value",
    )


class StoredResponses:
    def __init__(self, store: Store) -> None:
        self.store = store

    def routes(self) -> list[Route]:
        return [
            Route("GET", "/responses/{response_id}", self.retrieve),
            Route("DELETE", "/responses/{response_id}", self.delete),
            Route("GET", "/responses/{response_id}/input_items", self.input_items),
        ]

    async def _record(self, call: Call, response_id: str) -> StoredResponse:
        record = await self.store.get(response_id, owner=call.owner)
        if record is None:
            raise NotFound(f"Response with id '{response_id}' not found.", param="response_id")
        return record

    async def retrieve(self, call: Call, responder: Responder) -> None:
        response_id = call.params["response_id"]
        query = query_params(call)
        stream = _bool_param(query, "stream")
        starting_after = _int_param(query, "starting_after", -1, -1, 1 << 31)
        record = await self._record(call, response_id)
        if not stream:
            await responder.send_json(200, record.response)
            return
        events = record.events
        if events is None:
            raise InvalidRequest(
                f"Response '{response_id}' was not streamed, so it has no events to replay; "
                "retrieve it without stream=true.",
                param="stream",
                code="invalid_value",
            )
        if not events:
            raise not_recorded(response_id)
        # Events are stored as sent, numbered 0, 1, 2 ...: resuming is skipping
        # that many, replaying is sending slices of the stored bytes, never a
        # second copy of them whole.
        start = event_offset(events, starting_after + 1)
        view = memoryview(events)
        await responder.start(200, SSE_HEADERS)
        while True:
            stop = min(start + _REPLAY_CHUNK, len(events))
            await responder.body(bytes(view[start:stop]), more_body=stop < len(events))
            if stop >= len(events):
                break
            start = stop

    async def delete(self, call: Call, responder: Responder) -> None:
        response_id = call.params["response_id"]
        if not await self.store.delete(response_id, owner=call.owner):
            raise NotFound(f"Response with id '{response_id}' not found.", param="response_id")
        await responder.send_json(200, {"id": response_id, "object": "response", "deleted": True})

    async def input_items(self, call: Call, responder: Responder) -> None:
        response_id = call.params["response_id"]
        query = query_params(call)
        limit, order = list_options(query)
        record = await self._record(call, response_id)
        await responder.send_json(200, list_page(list(record.input_items), query, limit, order))
