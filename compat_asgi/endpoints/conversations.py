"""The Conversations API: ``/conversations`` and ``/conversations/{id}/items``.

A conversation is the same stored thread the ``conversation`` parameter of
``POST /responses`` reads and appends to, so items added here are history
for the next response, and a response's input and output show up here.
Everything is scoped by API key like stored responses.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from compat_asgi.asgi import Responder
from compat_asgi.core.ids import Clock, IdFactory
from compat_asgi.core.options import RequestOptions
from compat_asgi.core.requests import responses_to_chat
from compat_asgi.core.validation import check_keys, checked_metadata, missing, type_error
from compat_asgi.endpoints import Call
from compat_asgi.endpoints.history import input_items, resolve_references
from compat_asgi.endpoints.routes import Route
from compat_asgi.endpoints.stored import list_options, list_page, query_params
from compat_asgi.errors import InvalidRequest, NotFound
from compat_asgi.store import Store, StoredConversation

__all__ = ["Conversations", "MAX_ITEMS_PER_REQUEST"]

MAX_ITEMS_PER_REQUEST = 20  # OpenAI's limit on items added by one create call
_CREATE_KEYS = frozenset({"items", "metadata"})
_UPDATE_KEYS = frozenset({"metadata"})
_ADD_KEYS = frozenset({"items"})
# Item types whose SDK models require a status; stored input items have none.
_WITH_STATUS = frozenset({"message", "function_call", "function_call_output", "custom_tool_call"})


def _conversation(found: StoredConversation) -> dict[str, Any]:
    return {"id": found.id, "object": "conversation", "created_at": found.created_at, "metadata": found.metadata}


def _shown(item: dict[str, Any]) -> dict[str, Any]:
    """An item as the API returns it: the status a stored input item lacks is filled in."""
    if item.get("type") in _WITH_STATUS and "status" not in item:
        return {**item, "status": "completed"}
    return item


class Conversations:
    """``store`` None: every route answers 400, as ``conversation`` on create does."""

    def __init__(self, store: Store | None, options: RequestOptions, ids: IdFactory, clock: Clock) -> None:
        self.store = store
        self.options = options
        self.ids = ids
        self.clock = clock

    def routes(self) -> list[Route]:
        return [
            Route("POST", "/conversations", self.create),
            Route("GET", "/conversations/{conversation_id}", self.retrieve),
            Route("POST", "/conversations/{conversation_id}", self.update),
            Route("DELETE", "/conversations/{conversation_id}", self.delete),
            Route("POST", "/conversations/{conversation_id}/items", self.add_items),
            Route("GET", "/conversations/{conversation_id}/items", self.list_items),
            Route("GET", "/conversations/{conversation_id}/items/{item_id}", self.retrieve_item),
            Route("DELETE", "/conversations/{conversation_id}/items/{item_id}", self.delete_item),
        ]

    def _store(self) -> Store:
        if self.store is None:
            raise InvalidRequest(
                "The Conversations API needs a response store, and this server has none configured.",
                param=None,
                code="store_required",
            )
        return self.store

    def _items(self, body: dict[str, Any], *, required: bool) -> list[dict[str, Any]]:
        """The body's ``items`` as stored items (typed, with ids), validated like ``input``."""
        value = body.get("items")
        if value is None:
            if required:
                missing("items")
            return []
        if not isinstance(value, list):
            type_error("items", "an array of items", value)
        if len(value) > MAX_ITEMS_PER_REQUEST:
            raise InvalidRequest(
                f"Invalid 'items': array too long. Expected an array with maximum length "
                f"{MAX_ITEMS_PER_REQUEST}, but got an array with length {len(value)} instead.",
                param="items",
                code="array_above_max_length",
            )
        items = input_items(value, self.ids)
        if items is None:
            type_error("items", "an array of items", value)
        try:
            # The same checks a create request's input gets, so nothing stored
            # here can fail the response that later reads it.
            responses_to_chat({"model": "conversation", "input": resolve_references(items, [])}, self.options)
        except InvalidRequest as exc:
            if exc.param is not None and exc.param.startswith("input"):
                exc.param = "items" + exc.param[len("input") :]
                exc.message = exc.message.replace("'input", "'items")
            raise
        return items

    async def _found(self, call: Call) -> StoredConversation:
        conversation_id = call.params["conversation_id"]
        found = await self._store().conversation(conversation_id, owner=call.owner)
        if found is None:
            raise NotFound(f"Conversation with id '{conversation_id}' not found.", param="conversation_id")
        return found

    async def create(self, call: Call, responder: Responder) -> None:
        store = self._store()
        # Every field is optional, so an empty body (curl -X POST) is an empty conversation.
        body = check_keys(call.json() if call.body.strip() else {}, _CREATE_KEYS, {})
        metadata = checked_metadata(body)
        items = self._items(body, required=False)
        conversation_id = self.ids("conv")
        created_at = self.clock()
        await store.append_conversation(conversation_id, items, owner=call.owner, created_at=created_at)
        found = StoredConversation(conversation_id, created_at, {})
        if metadata:
            found = await store.update_conversation(conversation_id, metadata, owner=call.owner) or found
        await responder.send_json(200, _conversation(found))

    async def retrieve(self, call: Call, responder: Responder) -> None:
        await responder.send_json(200, _conversation(await self._found(call)))

    async def update(self, call: Call, responder: Responder) -> None:
        store = self._store()
        body = check_keys(call.json(), _UPDATE_KEYS, {})
        if body.get("metadata") is None:
            missing("metadata")
        metadata = checked_metadata(body)
        conversation_id = call.params["conversation_id"]
        found = await store.update_conversation(conversation_id, metadata, owner=call.owner)
        if found is None:
            raise NotFound(f"Conversation with id '{conversation_id}' not found.", param="conversation_id")
        await responder.send_json(200, _conversation(found))

    async def delete(self, call: Call, responder: Responder) -> None:
        conversation_id = call.params["conversation_id"]
        if not await self._store().delete_conversation(conversation_id, owner=call.owner):
            raise NotFound(f"Conversation with id '{conversation_id}' not found.", param="conversation_id")
        await responder.send_json(200, {"id": conversation_id, "object": "conversation.deleted", "deleted": True})

    async def add_items(self, call: Call, responder: Responder) -> None:
        store = self._store()
        body = check_keys(call.json(), _ADD_KEYS, {})
        _includes(call)
        items = self._items(body, required=True)
        found = await self._found(call)
        await store.append_conversation(found.id, items, owner=call.owner)
        shown = [_shown(item) for item in items]
        await responder.send_json(
            200,
            {
                "object": "list",
                "data": shown,
                "first_id": shown[0]["id"] if shown else None,
                "last_id": shown[-1]["id"] if shown else None,
                "has_more": False,
            },
        )

    async def _all_items(self, call: Call) -> list[dict[str, Any]]:
        conversation_id = call.params["conversation_id"]
        items = await self._store().conversation_items(conversation_id, owner=call.owner)
        if items is None:
            raise NotFound(f"Conversation with id '{conversation_id}' not found.", param="conversation_id")
        return items

    async def list_items(self, call: Call, responder: Responder) -> None:
        query = query_params(call)
        limit, order = list_options(query)
        _includes(call)
        items = [_shown(item) for item in await self._all_items(call)]
        await responder.send_json(200, list_page(items, query, limit, order))

    async def retrieve_item(self, call: Call, responder: Responder) -> None:
        _includes(call)
        item_id = call.params["item_id"]
        for item in await self._all_items(call):
            if item.get("id") == item_id:
                await responder.send_json(200, _shown(item))
                return
        raise NotFound(f"Item with id '{item_id}' not found.", param="item_id")

    async def delete_item(self, call: Call, responder: Responder) -> None:
        store = self._store()
        conversation_id, item_id = call.params["conversation_id"], call.params["item_id"]
        if not await store.delete_conversation_item(conversation_id, item_id, owner=call.owner):
            # Which of the two is missing, so the error names the right parameter.
            await self._found(call)
            raise NotFound(f"Item with id '{item_id}' not found.", param="item_id")
        await responder.send_json(200, _conversation(await self._found(call)))


def _includes(call: Call) -> list[str]:
    """``include`` from the query (``include[]=...`` as the SDK sends it, or
    ``include=...``). Items are returned as they were stored, so every
    includable is already present when it exists at all."""
    raw: bytes = call.scope.get("query_string", b"")
    query = parse_qs(raw.decode("latin-1"))
    values = query.get("include[]", []) + query.get("include", [])
    for index, value in enumerate(values):
        if not value:
            raise InvalidRequest(f"Invalid 'include[{index}]': empty string.", param="include", code="invalid_value")
    return values
