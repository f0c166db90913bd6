"""In-process store: LRU bounded by count and by bytes, with TTL; lost on restart, not shared between workers."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from compat_asgi.store.base import (
    DEFAULT_MAX_ENTRIES,
    DEFAULT_TTL,
    StoredConversation,
    StoredResponse,
    StoreError,
    check_limits,
)
from compat_asgi.store.codec import decode_item, decode_parts, encode_item, encode_parts

__all__ = ["MemoryStore", "DEFAULT_MAX_BYTES"]


DEFAULT_MAX_BYTES = 256 << 20  # encoded bytes kept by one memory store, responses and conversations together


class _Entry:
    __slots__ = ("owner", "data", "expires_at", "size", "used")

    def __init__(self, owner: str | None, data: Any, expires_at: float | None, size: int) -> None:
        self.owner = owner
        self.data = data
        self.expires_at = expires_at
        self.size = size
        self.used = 0  # when it was last saved or read, for LRU order across both tables


class _Thread:
    __slots__ = ("created_at", "metadata", "items")

    def __init__(self, created_at: int) -> None:
        self.created_at = created_at
        self.metadata: dict[str, str] = {}
        self.items: list[bytes] = []


class MemoryStore:
    """Responses and conversations in two ``OrderedDict`` LRUs, each bounded by
    ``max_entries``, and together by ``max_bytes`` of encoded values: past
    either bound the least recently used entries go, whichever table they
    are in. One value larger than ``max_bytes`` is refused (``StoreError``).

    Values are kept encoded, as the other backends keep them: a caller that
    mutates a dict after saving cannot change what was stored, and whatever
    fails to serialize here fails the same way on SQLite or Redis.
    """

    def __init__(
        self,
        *,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        ttl: float | None = DEFAULT_TTL,
        max_bytes: int = DEFAULT_MAX_BYTES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        check_limits(max_entries, ttl)
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1:
            raise ValueError(f"max_bytes must be a positive integer, got {max_bytes!r}")
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._bytes = 0
        self._tick = 0
        self._ttl = ttl
        self._clock = clock
        self._responses: OrderedDict[str, _Entry] = OrderedDict()
        # Conversation ids may come from clients, so each owner has its own namespace.
        self._conversations: OrderedDict[tuple[str | None, str], _Entry] = OrderedDict()
        self._flags: dict[str, tuple[bytes, float]] = {}  # key -> (value, expires at)
        self._closed = False

    async def save(self, record: StoredResponse) -> None:
        self._check_open()
        # Header and events apart: the events bytes are immutable, so they are
        # kept as they came, never copied into one value.
        header, events = encode_parts(record)
        size = len(header) + len(events or b"")
        self._check_size(size, record.id)
        self._put(self._responses, record.id, _Entry(record.owner, (header, events), self._expiry(), size))

    async def get(self, response_id: str, *, owner: str | None) -> StoredResponse | None:
        self._check_open()
        entry = self._lookup(self._responses, response_id, owner)
        return None if entry is None else decode_parts(*entry.data)

    async def delete(self, response_id: str, *, owner: str | None) -> bool:
        self._check_open()
        if self._lookup(self._responses, response_id, owner) is None:
            return False
        self._remove(self._responses, response_id)
        return True

    async def append_conversation(
        self,
        conversation_id: str,
        items: list[dict[str, Any]],
        *,
        owner: str | None,
        created_at: int | None = None,
    ) -> None:
        self._check_open()
        encoded = [encode_item(item) for item in items]
        added = sum(map(len, encoded))
        key = (owner, conversation_id)
        entry = self._lookup(self._conversations, key, owner)
        self._check_size(added + (0 if entry is None else entry.size), conversation_id)
        if entry is None:
            entry = _Entry(owner, _Thread(int(time.time()) if created_at is None else created_at), None, 0)
        else:
            # Out while it grows, back in through _put, so the byte count stays exact.
            self._remove(self._conversations, key)
        entry.data.items.extend(encoded)
        entry.size += added
        # Expiry counts from the last append: a conversation in use stays alive.
        entry.expires_at = self._expiry()
        self._put(self._conversations, key, entry)

    async def conversation_items(
        self, conversation_id: str, *, owner: str | None
    ) -> list[dict[str, Any]] | None:
        self._check_open()
        entry = self._lookup(self._conversations, (owner, conversation_id), owner)
        return None if entry is None else [decode_item(item) for item in entry.data.items]

    async def conversation(self, conversation_id: str, *, owner: str | None) -> StoredConversation | None:
        self._check_open()
        entry = self._lookup(self._conversations, (owner, conversation_id), owner)
        if entry is None:
            return None
        return StoredConversation(conversation_id, entry.data.created_at, dict(entry.data.metadata))

    async def update_conversation(
        self, conversation_id: str, metadata: dict[str, str], *, owner: str | None
    ) -> StoredConversation | None:
        self._check_open()
        entry = self._lookup(self._conversations, (owner, conversation_id), owner)
        if entry is None:
            return None
        entry.data.metadata = dict(metadata)
        entry.expires_at = self._expiry()
        return StoredConversation(conversation_id, entry.data.created_at, dict(metadata))

    async def delete_conversation(self, conversation_id: str, *, owner: str | None) -> bool:
        self._check_open()
        key = (owner, conversation_id)
        if self._lookup(self._conversations, key, owner) is None:
            return False
        self._remove(self._conversations, key)
        return True

    async def delete_conversation_item(self, conversation_id: str, item_id: str, *, owner: str | None) -> bool:
        self._check_open()
        entry = self._lookup(self._conversations, (owner, conversation_id), owner)
        if entry is None:
            return False
        items: list[bytes] = entry.data.items
        for index, data in enumerate(items):
            if decode_item(data).get("id") == item_id:
                del items[index]
                entry.size -= len(data)
                self._bytes -= len(data)
                return True
        return False

    async def put_flag(self, key: str, value: bytes, *, ttl: float) -> None:
        self._check_open()
        now = self._clock()
        # Few flags live at once (one lease per running response); expired ones go on every write.
        for name in [name for name, (_, until) in self._flags.items() if until <= now]:
            del self._flags[name]
        self._flags[key] = (value, now + ttl)

    async def get_flag(self, key: str) -> bytes | None:
        self._check_open()
        flag = self._flags.get(key)
        return flag[0] if flag is not None and flag[1] > self._clock() else None

    async def ping(self) -> bool:
        return not self._closed

    async def aclose(self) -> None:
        self._closed = True
        self._responses.clear()
        self._conversations.clear()
        self._bytes = 0

    def _expiry(self) -> float | None:
        return None if self._ttl is None else self._clock() + self._ttl

    def _lookup(self, table: OrderedDict[Any, _Entry], key: Any, owner: str | None) -> _Entry | None:
        entry = table.get(key)
        if entry is None:
            return None
        if entry.expires_at is not None and entry.expires_at <= self._clock():
            self._remove(table, key)
            return None
        if entry.owner != owner:
            return None
        table.move_to_end(key)
        entry.used = self._next_tick()
        return entry

    def _next_tick(self) -> int:
        self._tick += 1
        return self._tick

    def _remove(self, table: OrderedDict[Any, _Entry], key: Any) -> None:
        self._bytes -= table.pop(key).size

    def _put(self, table: OrderedDict[Any, _Entry], key: Any, entry: _Entry) -> None:
        if key in table:
            self._remove(table, key)
        table[key] = entry
        entry.used = self._next_tick()
        self._bytes += entry.size
        while len(table) > self._max_entries:
            self._remove(table, next(iter(table)))
        while self._bytes > self._max_bytes:
            # The older of the two tables' least recently used entries goes first.
            tables: tuple[OrderedDict[Any, _Entry], ...] = (self._responses, self._conversations)
            heads = [t for t in tables if t]
            oldest = min(heads, key=lambda t: t[next(iter(t))].used)
            self._remove(oldest, next(iter(oldest)))

    def _check_size(self, size: int, name: str) -> None:
        if size > self._max_bytes:
            raise StoreError(
                f"{name!r} needs {size} bytes, more than this memory store holds in all"
                f" (max_bytes={self._max_bytes})"
            )

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError("the response store is closed")
