"""Redis store: shared by every worker and host that points at the same database.

Keys are ``compat_asgi:resp:<id>`` (one encoded record) and
``compat_asgi:conv:<id>`` (a list). The owner lives inside each value and is
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
from typing import Any

import orjson

from compat_asgi.store.base import (
    DEFAULT_MAX_ENTRIES,
    DEFAULT_TTL,
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

__all__ = ["RedisStore", "RESPONSE_PREFIX", "CONVERSATION_PREFIX"]

RESPONSE_PREFIX = "compat_asgi:resp:"
CONVERSATION_PREFIX = "compat_asgi:conv:"


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
        self, conversation_id: str, items: list[dict[str, Any]], *, owner: str | None
    ) -> None:
        # Every element carries its owner: appends need no read-check-write and
        # a list shared by two owners (same client-chosen id) still never mixes.
        # ``[owner]`` alone marks the conversation as existing when nothing is appended.
        elements = [orjson.dumps([owner, item]) for item in items] or [orjson.dumps([owner])]
        key = CONVERSATION_PREFIX + conversation_id
        if self._expire:
            # One transaction: a list must never be left behind without its TTL.
            await self._client.transaction(("RPUSH", key, *elements), ("EXPIRE", key, self._expire[1]))
        else:
            await self._client.execute("RPUSH", key, *elements)

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

    async def ping(self) -> bool:
        try:
            return await self._client.execute("PING") == "PONG"
        except StoreError:
            return False

    async def aclose(self) -> None:
        await self._client.aclose()
