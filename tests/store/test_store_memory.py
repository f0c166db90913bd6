"""Memory store specifics: bounded by bytes as well as by count, LRU across responses and conversations."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from compat_asgi.store import DEFAULT_MAX_BYTES, MemoryStore, StoredResponse, StoreError, open_store
from compat_asgi.store.codec import encode_parts

KiB = 1 << 10


def record(rid: str, size: int = 100 * KiB) -> StoredResponse:
    return StoredResponse(
        id=rid,
        owner=None,
        response={"id": rid, "output": [{"text": "x" * size}]},
        input_items=[],
        events=None,
        created_at=1,
    )


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_default_bound_is_256_mib() -> None:
    assert DEFAULT_MAX_BYTES == 256 << 20


def test_total_bytes_bound_evicts_least_recently_used() -> None:
    header, _ = encode_parts(record("resp_00"))
    size = len(header)

    async def scenario() -> list[bool]:
        store = open_store(f"memory://?max_bytes={10 * size}")  # room for exactly ten
        for n in range(10):
            await store.save(record(f"resp_{n:02}"))
        await store.get("resp_00", owner=None)  # now resp_01 is the least recently used
        for n in range(10, 13):
            await store.save(record(f"resp_{n:02}"))
        return [await store.get(f"resp_{n:02}", owner=None) is not None for n in range(13)]

    kept = run(scenario())
    assert kept == [True, False, False, False] + [True] * 9


def test_bytes_bound_spans_responses_and_conversations() -> None:
    async def scenario() -> tuple[bool, bool, bool]:
        store = MemoryStore(max_bytes=400 * KiB)
        await store.append_conversation("conv_1", [{"text": "y" * (150 * KiB)}], owner=None)
        await store.save(record("resp_1", 150 * KiB))
        # The conversation grows past the bound: the older response goes, not the conversation.
        await store.conversation_items("conv_1", owner=None)
        await store.append_conversation("conv_1", [{"text": "z" * (150 * KiB)}], owner=None)
        items = await store.conversation_items("conv_1", owner=None)
        return (
            await store.get("resp_1", owner=None) is None,
            items is not None and len(items) == 2,
            store._bytes <= 400 * KiB,
        )

    assert run(scenario()) == (True, True, True)


def test_a_value_larger_than_the_whole_store_is_refused_and_evicts_nothing() -> None:
    async def scenario() -> tuple[str, bool]:
        store = MemoryStore(max_bytes=300 * KiB)
        await store.save(record("resp_small", 10 * KiB))
        with pytest.raises(StoreError) as info:
            await store.save(record("resp_huge", 400 * KiB))
        with pytest.raises(StoreError):
            await store.append_conversation("conv_huge", [{"text": "z" * (400 * KiB)}], owner=None)
        return str(info.value), await store.get("resp_small", owner=None) is not None

    message, kept = run(scenario())
    assert "resp_huge" in message and "max_bytes=307200" in message
    assert kept


def test_replacing_deleting_and_expiring_keep_the_byte_count_exact() -> None:
    now = [0.0]

    async def scenario() -> int:
        store = MemoryStore(max_bytes=1 << 20, ttl=10, clock=lambda: now[0])
        await store.save(record("resp_1", 200 * KiB))
        await store.save(record("resp_1", 10 * KiB))  # replaced: the old bytes are gone
        await store.save(record("resp_2", 200 * KiB))
        await store.delete("resp_2", owner=None)
        await store.append_conversation("conv_1", [{"text": "a"}], owner=None)
        await store.append_conversation("conv_2", [{"id": "x", "text": "b" * 1000}, {"id": "y"}], owner=None)
        await store.delete_conversation_item("conv_2", "x", owner=None)
        await store.append_conversation("conv_3", [{"id": "z", "text": "c" * 1000}], owner=None)
        await store.delete_conversation("conv_3", owner=None)
        await store.save(record("resp_3", 300 * KiB))
        now[0] = 11.0
        await store.get("resp_3", owner=None)  # expired: dropped on sight
        return store._bytes

    remaining = run(scenario())
    expected = len(encode_parts(record("resp_1", 10 * KiB))[0]) + len(b'{"text":"a"}') + len(b'{"id":"y"}')
    assert remaining == expected


def test_max_bytes_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_bytes"):
        MemoryStore(max_bytes=0)
    with pytest.raises(ValueError, match="max_bytes"):
        open_store("memory", max_bytes=-1)
