"""Redis store: shared by every worker and host that points at the same database.

Keys are ``compat_asgi:resp:<id>`` (one encoded record),
``compat_asgi:conv:<id>`` (a list of items) and ``compat_asgi:convmeta:<id>``
(a hash: owner -> creation time and metadata). The owner lives inside each value and is
checked on every read, so one owner never sees another's data even though
the key space is shared.

Bounding is Redis's job here: every key carries the TTL (whole seconds,
rounded up), and ``max_entries`` is not enforced, because counting and
evicting from the client would cost a write on every read and race between
workers. Give the server a ``maxmemory`` with ``maxmemory-policy volatile-lru``
for an LRU bound.
"""

from __future__ import annotations

import math
import time
from typing import Any

import orjson

from compat_asgi.store.base import (
    DEFAULT_MAX_ENTRIES,
    DEFAULT_TTL,
    StoredConversation,
    StoredResponse,
    StoreError,
    check_limits,
)
from compat_asgi.store.codec import decode_record, encode_record
from compat_asgi.store.resp import (
    DEFAULT_POOL_SIZE,
    DEFAULT_REDIS_TIMEOUT,
    Arg,
    RedisAddress,
    RedisClient,
)

__all__ = ["RedisStore", "RESPONSE_PREFIX", "CONVERSATION_PREFIX", "CONVERSATION_META_PREFIX"]

RESPONSE_PREFIX = "compat_asgi:resp:"
CONVERSATION_PREFIX = "compat_asgi:conv:"
FLAG_PREFIX = "compat_asgi:flag:"
CONVERSATION_META_PREFIX = "compat_asgi:convmeta:"


class RedisStore:
    def __init__(
        self,
        url: str,
        *,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        ttl: float | None = DEFAULT_TTL,
        timeout: float = DEFAULT_REDIS_TIMEOUT,
        pool_size: int = DEFAULT_POOL_SIZE,
    ) -> None:
        check_limits(max_entries, ttl)
        # Connections open on first use, so constructing the store never blocks or fails on I/O.
        self._client = RedisClient(RedisAddress.from_url(url), timeout=timeout, pool_size=pool_size)
        self._expire: tuple[Arg, ...] = () if ttl is None else ("EX", math.ceil(ttl))

    async def save(self, record: StoredResponse) -> None:
        await self._client.execute("SET", RESPONSE_PREFIX + record.id, encode_record(record), *self._expire)

    async def get(self, response_id: str, *, owner: str | None) -> StoredResponse | None:
        data = await self._client.execute("GET", RESPONSE_PREFIX + response_id)
        if data is None:
            return None
        if not isinstance(data, bytes):
            raise StoreError(f"redis answered GET with {type(data).__name__}, expected a string")
        record = decode_record(data)
        return record if record.owner == owner else None

    async def delete(self, response_id: str, *, owner: str | None) -> bool:
        # Check then delete is not atomic, but ids are random and never reused
        # by another owner, so nothing can slip in between.
        if await self.get(response_id, owner=owner) is None:
            return False
        deleted = await self._client.execute("DEL", RESPONSE_PREFIX + response_id)
        return deleted == 1

    async def append_conversation(
        self,
        conversation_id: str,
        items: list[dict[str, Any]],
        *,
        owner: str | None,
        created_at: int | None = None,
    ) -> None:
        # Every element carries its owner: appends need no read-check-write and
        # a list shared by two owners (same client-chosen id) still never mixes.
        # ``[owner]`` alone marks the conversation as existing when nothing is appended.
        elements = [orjson.dumps([owner, item]) for item in items] or [orjson.dumps([owner])]
        key = CONVERSATION_PREFIX + conversation_id
        meta_key = CONVERSATION_META_PREFIX + conversation_id
        meta = orjson.dumps({"created_at": int(time.time()) if created_at is None else created_at, "metadata": {}})
        # HSETNX: only the append that creates the conversation sets its creation time.
        commands: list[tuple[Arg, ...]] = [("RPUSH", key, *elements), ("HSETNX", meta_key, _field(owner), meta)]
        if self._expire:
            # One transaction: a list must never be left behind without its TTL.
            commands += [("EXPIRE", key, self._expire[1]), ("EXPIRE", meta_key, self._expire[1])]
        await self._client.transaction(*commands)

    async def conversation_items(
        self, conversation_id: str, *, owner: str | None
    ) -> list[dict[str, Any]] | None:
        elements = await self._client.execute("LRANGE", CONVERSATION_PREFIX + conversation_id, 0, -1)
        if not isinstance(elements, list):
            raise StoreError(f"redis answered LRANGE with {type(elements).__name__}, expected a list")
        found = False
        items: list[dict[str, Any]] = []
        for element in elements:
            try:
                entry = orjson.loads(element) if isinstance(element, bytes) else None
            except orjson.JSONDecodeError:
                entry = None
            if not isinstance(entry, list) or not entry:
                raise StoreError(f"redis conversation {conversation_id!r} holds an element of an unknown format")
            if entry[0] != owner:
                continue
            found = True
            if len(entry) > 1:
                items.append(entry[1])
        return items if found else None

    async def conversation(self, conversation_id: str, *, owner: str | None) -> StoredConversation | None:
        meta = await self._client.execute("HGET", CONVERSATION_META_PREFIX + conversation_id, _field(owner))
        if isinstance(meta, bytes):
            try:
                fields = orjson.loads(meta)
                return StoredConversation(conversation_id, int(fields["created_at"]), dict(fields["metadata"]))
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                raise StoreError(f"redis conversation {conversation_id!r} has metadata of an unknown format") from None
        # Lists written before conversations had metadata (or whose hash expired first).
        if await self.conversation_items(conversation_id, owner=owner) is None:
            return None
        return StoredConversation(conversation_id, 0, {})

    async def update_conversation(
        self, conversation_id: str, metadata: dict[str, str], *, owner: str | None
    ) -> StoredConversation | None:
        current = await self.conversation(conversation_id, owner=owner)
        if current is None:
            return None
        meta_key = CONVERSATION_META_PREFIX + conversation_id
        meta = orjson.dumps({"created_at": current.created_at, "metadata": metadata})
        commands: list[tuple[Arg, ...]] = [("HSET", meta_key, _field(owner), meta)]
        if self._expire:
            key = CONVERSATION_PREFIX + conversation_id
            commands += [("EXPIRE", key, self._expire[1]), ("EXPIRE", meta_key, self._expire[1])]
        await self._client.transaction(*commands)
        return StoredConversation(conversation_id, current.created_at, dict(metadata))

    async def delete_conversation(self, conversation_id: str, *, owner: str | None) -> bool:
        mine = await self._own_elements(conversation_id, owner)
        if mine is None:
            return False
        # LREM of this owner's elements only: another owner's conversation of the
        # same id, and anything appended meanwhile by anyone else, stays.
        key = CONVERSATION_PREFIX + conversation_id
        await self._client.transaction(
            *(("LREM", key, 0, element) for element in dict.fromkeys(element for element, _ in mine)),
            ("HDEL", CONVERSATION_META_PREFIX + conversation_id, _field(owner)),
        )
        return True

    async def delete_conversation_item(self, conversation_id: str, item_id: str, *, owner: str | None) -> bool:
        mine = await self._own_elements(conversation_id, owner) or []
        for element, item in mine:
            if item is not None and item.get("id") == item_id:
                key = CONVERSATION_PREFIX + conversation_id
                commands: list[tuple[Arg, ...]] = [("LREM", key, 1, element)]
                if len(mine) == 1:
                    # The last item goes, the conversation stays: keep its marker.
                    commands.append(("RPUSH", key, orjson.dumps([owner])))
                removed = await self._client.transaction(*commands)
                return removed[0] == 1
        return False

    async def _own_elements(
        self, conversation_id: str, owner: str | None
    ) -> list[tuple[bytes, dict[str, Any] | None]] | None:
        """This owner's raw list elements with their items (None for the marker); None: no such conversation."""
        elements = await self._client.execute("LRANGE", CONVERSATION_PREFIX + conversation_id, 0, -1)
        if not isinstance(elements, list):
            raise StoreError(f"redis answered LRANGE with {type(elements).__name__}, expected a list")
        mine: list[tuple[bytes, dict[str, Any] | None]] = []
        for element in elements:
            try:
                entry = orjson.loads(element) if isinstance(element, bytes) else None
            except orjson.JSONDecodeError:
                entry = None
            if not isinstance(entry, list) or not entry or not isinstance(element, bytes):
                raise StoreError(f"redis conversation {conversation_id!r} holds an element of an unknown format")
            if entry[0] == owner:
                mine.append((element, entry[1] if len(entry) > 1 else None))
        return mine or None

    async def put_flag(self, key: str, value: bytes, *, ttl: float) -> None:
        await self._client.execute("SET", FLAG_PREFIX + key, value, "PX", max(1, math.ceil(ttl * 1000)))

    async def get_flag(self, key: str) -> bytes | None:
        value = await self._client.execute("GET", FLAG_PREFIX + key)
        return value if isinstance(value, bytes) else None

    async def ping(self) -> bool:
        try:
            return await self._client.execute("PING") == "PONG"
        except StoreError:
            return False

    async def aclose(self) -> None:
        await self._client.aclose()


def _field(owner: str | None) -> bytes:
    """The meta hash field of an owner: JSON, so None and every string stay distinct."""
    return orjson.dumps(owner)
