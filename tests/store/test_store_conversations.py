"""The conversation part of the Store contract the Conversations API needs
(creation time, metadata, deleting items and whole conversations), run
unchanged against every backend (memory, SQLite, Redis)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from store_support import Opener

from compat_asgi.store import SQLiteStore, Store, StoredConversation


def item(n: int) -> dict[str, Any]:
    return {"id": f"msg_{n}", "type": "message", "role": "user", "content": [{"type": "input_text", "text": str(n)}]}


def run(opener: Opener, scenario: Any, **limits: Any) -> Any:
    async def main() -> Any:
        store = opener(**limits)
        try:
            return await scenario(store)
        finally:
            await store.aclose()

    return asyncio.run(main())


def test_created_at_and_metadata(opener: Opener) -> None:
    async def scenario(store: Store) -> list[Any]:
        await store.append_conversation("conv_1", [item(1)], owner="a", created_at=1_700_000_000)
        # A later append does not move the creation time.
        await store.append_conversation("conv_1", [item(2)], owner="a", created_at=1_800_000_000)
        first = await store.conversation("conv_1", owner="a")
        updated = await store.update_conversation("conv_1", {"topic": "é ✓"}, owner="a")
        return [
            first,
            updated,
            await store.conversation("conv_1", owner="a"),
            await store.conversation("conv_1", owner="b"),
            await store.update_conversation("conv_1", {"x": "y"}, owner="b"),
            await store.update_conversation("conv_missing", {}, owner="a"),
            await store.conversation_items("conv_1", owner="a"),
        ]

    first, updated, again, other, other_update, missing, items = run(opener, scenario)
    assert first == StoredConversation("conv_1", 1_700_000_000, {})
    assert updated == again == StoredConversation("conv_1", 1_700_000_000, {"topic": "é ✓"})
    assert (other, other_update, missing) == (None, None, None)
    assert items == [item(1), item(2)]


def test_created_at_defaults_to_now(opener: Opener) -> None:
    async def scenario(store: Store) -> StoredConversation | None:
        await store.append_conversation("conv_1", [], owner=None)
        return await store.conversation("conv_1", owner=None)

    import time

    before = int(time.time())
    found = run(opener, scenario)
    assert found is not None and before <= found.created_at <= int(time.time()) + 1
    assert found.metadata == {}


def test_delete_item_and_conversation_stay_within_owner(opener: Opener) -> None:
    async def scenario(store: Store) -> list[Any]:
        # Two owners using the same (client-chosen) id never touch each other.
        await store.append_conversation("conv_1", [item(1), item(2), item(3)], owner="a")
        await store.append_conversation("conv_1", [item(2)], owner="b")
        results: list[Any] = [
            await store.delete_conversation_item("conv_1", "msg_2", owner="a"),
            await store.delete_conversation_item("conv_1", "msg_2", owner="a"),
            await store.delete_conversation_item("conv_1", "msg_9", owner="a"),
            await store.delete_conversation_item("conv_9", "msg_1", owner="a"),
            await store.conversation_items("conv_1", owner="a"),
            await store.conversation_items("conv_1", owner="b"),
            await store.delete_conversation("conv_1", owner="a"),
            await store.delete_conversation("conv_1", owner="a"),
            await store.conversation("conv_1", owner="a"),
            await store.conversation_items("conv_1", owner="a"),
            await store.conversation_items("conv_1", owner="b"),
            await store.conversation("conv_1", owner="b") is not None,
        ]
        # An append after deletion starts a new conversation.
        await store.append_conversation("conv_1", [item(4)], owner="a", created_at=5)
        results.append(await store.conversation_items("conv_1", owner="a"))
        results.append(await store.conversation("conv_1", owner="a"))
        return results

    (
        deleted, again, unknown_item, unknown_conv, left_a, left_b,
        dropped, dropped_again, gone, gone_items, kept_b, kept_b_meta, fresh, fresh_meta,
    ) = run(opener, scenario)
    assert (deleted, again, unknown_item, unknown_conv) == (True, False, False, False)
    assert left_a == [item(1), item(3)] and left_b == [item(2)]
    assert (dropped, dropped_again, gone, gone_items) == (True, False, None, None)
    assert kept_b == [item(2)] and kept_b_meta
    assert fresh == [item(4)] and fresh_meta == StoredConversation("conv_1", 5, {})


def test_deleting_every_item_keeps_the_conversation(opener: Opener) -> None:
    async def scenario(store: Store) -> list[Any]:
        await store.append_conversation("conv_1", [item(1)], owner="a", created_at=7)
        await store.update_conversation("conv_1", {"k": "v"}, owner="a")
        await store.delete_conversation_item("conv_1", "msg_1", owner="a")
        items = await store.conversation_items("conv_1", owner="a")
        await store.append_conversation("conv_1", [item(2)], owner="a")
        return [items, await store.conversation("conv_1", owner="a"), await store.conversation_items("conv_1", owner="a")]

    items, meta, later = run(opener, scenario)
    assert items == [] and meta == StoredConversation("conv_1", 7, {"k": "v"}) and later == [item(2)]


def test_sqlite_schema_1_file_is_migrated(tmp_path: Path) -> None:
    """A file written by the previous schema keeps its conversations, with created_at 0."""
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.executescript(
        """
        CREATE TABLE responses (id TEXT PRIMARY KEY, owner TEXT, created_at INTEGER NOT NULL, expires_at REAL,
            accessed INTEGER NOT NULL, response BLOB NOT NULL, input_items BLOB NOT NULL, events BLOB);
        CREATE TABLE conversations (pk INTEGER PRIMARY KEY, id TEXT NOT NULL, owner TEXT, expires_at REAL,
            accessed INTEGER NOT NULL);
        CREATE TABLE conversation_items (n INTEGER PRIMARY KEY,
            conversation INTEGER NOT NULL REFERENCES conversations(pk) ON DELETE CASCADE, item BLOB NOT NULL);
        PRAGMA user_version=1;
        """
    )
    conn.execute("INSERT INTO conversations (pk, id, owner, expires_at, accessed) VALUES (1, 'conv_old', 'a', NULL, 1)")
    conn.execute("INSERT INTO conversation_items (conversation, item) VALUES (1, ?)", (orjson.dumps(item(1)),))
    conn.close()

    async def scenario() -> list[Any]:
        store = SQLiteStore(path)
        try:
            return [await store.conversation("conv_old", owner="a"), await store.conversation_items("conv_old", owner="a")]
        finally:
            await store.aclose()

    meta, items = asyncio.run(scenario())
    assert meta == StoredConversation("conv_old", 0, {}) and items == [item(1)]


_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.integers(0, 3)),
        st.tuples(st.just("delete"), st.integers(0, 12)),
        st.tuples(st.just("update"), st.dictionaries(st.sampled_from("abc"), st.text(max_size=3), max_size=2)),
    ),
    max_size=12,
)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=_OPS)
def test_random_operations_match_a_list(opener: Opener, ops: list[tuple[str, Any]]) -> None:
    """Appends, item deletions and metadata updates, in any order, leave exactly
    what a plain list and dict would hold, on every backend."""

    async def scenario(store: Store) -> tuple[list[Any], list[Any]]:
        await store.delete_conversation("conv_p", owner="a")  # the store is shared across examples
        await store.append_conversation("conv_p", [], owner="a", created_at=1)
        model: list[dict[str, Any]] = []
        metadata: dict[str, str] = {}
        n = 0
        for op, arg in ops:
            if op == "append":
                batch = [item(n + i) for i in range(arg)]
                n += arg
                await store.append_conversation("conv_p", batch, owner="a")
                model += batch
            elif op == "delete":
                expected = any(entry["id"] == f"msg_{arg}" for entry in model)
                assert await store.delete_conversation_item("conv_p", f"msg_{arg}", owner="a") is expected
                model = [entry for entry in model if entry["id"] != f"msg_{arg}"]
            else:
                metadata = dict(arg)
                await store.update_conversation("conv_p", metadata, owner="a")
        found = await store.conversation("conv_p", owner="a")
        assert found == StoredConversation("conv_p", 1, metadata)
        return [await store.conversation_items("conv_p", owner="a")], [model]

    stored, expected = run(opener, scenario)
    assert stored == expected
