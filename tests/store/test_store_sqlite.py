"""SQLite specifics: persistence across reopen, WAL, paths, schema version, a loop that never blocks."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import stat
import threading
import time
from pathlib import Path

import pytest

from compat_asgi.store import SQLiteStore, StoredResponse, StoreError, open_store


def record(rid: str, *, events: bytes | None = b"data: 1\n\n") -> StoredResponse:
    return StoredResponse(
        id=rid,
        owner="owner-a",
        response={"id": rid, "object": "response", "output": []},
        input_items=[{"id": "msg_0", "type": "message", "role": "user", "content": "hi"}],
        events=events,
        created_at=1_700_000_000,
    )


def test_data_survives_close_and_reopen(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"

    async def write() -> None:
        store = open_store(url)
        await store.save(record("resp_1"))
        await store.append_conversation("conv_1", [{"id": "a"}], owner="owner-a")
        await store.aclose()

    async def read() -> tuple[object, object]:
        store = open_store(url)
        try:
            await store.append_conversation("conv_1", [{"id": "b"}], owner="owner-a")
            return (
                await store.get("resp_1", owner="owner-a"),
                await store.conversation_items("conv_1", owner="owner-a"),
            )
        finally:
            await store.aclose()

    asyncio.run(write())
    # A fresh event loop, as after a process restart.
    assert asyncio.run(read()) == (record("resp_1"), [{"id": "a"}, {"id": "b"}])


def test_lru_order_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "store.db"

    async def first() -> None:
        store = SQLiteStore(path, max_entries=2)
        await store.save(record("resp_1"))
        await store.save(record("resp_2"))
        await store.get("resp_1", owner="owner-a")
        await store.aclose()

    async def second() -> list[bool]:
        store = SQLiteStore(path, max_entries=2)
        await store.save(record("resp_3"))
        found = [await store.get(f"resp_{n}", owner="owner-a") is not None for n in (1, 2, 3)]
        await store.aclose()
        return found

    asyncio.run(first())
    assert asyncio.run(second()) == [True, False, True]


def test_wal_mode_is_on_with_large_pages(tmp_path: Path) -> None:
    path = tmp_path / "store.db"

    async def scenario() -> None:
        store = open_store(f"sqlite:///{path}")
        await store.save(record("resp_1"))
        await store.aclose()

    asyncio.run(scenario())
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert conn.execute("PRAGMA page_size").fetchone() == (16384,)  # a stored stream's blob is large
    finally:
        conn.close()


def test_relative_path_and_missing_directories(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)

    async def scenario() -> None:
        store = open_store("sqlite:///data/nested/store.db")
        assert isinstance(store, SQLiteStore)
        await store.save(record("resp_1"))
        await store.aclose()

    asyncio.run(scenario())
    assert (tmp_path / "data" / "nested" / "store.db").is_file()


def test_created_files_are_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The usual umask would leave everything world-readable (0644 files, 0755 directories).
    old = os.umask(0o022)
    try:
        path = tmp_path / "state" / "compat-asgi" / "store.db"

        async def scenario() -> None:
            store = open_store(f"sqlite:///{path}")
            await store.save(record("resp_1"))
            await store.append_conversation("conv_1", [{"id": "a"}], owner=None)
            # Both journal files exist while a connection is open.
            modes = {name: stat.S_IMODE(os.stat(f"{path}{name}").st_mode) for name in ("", "-wal", "-shm")}
            assert modes == {"": 0o600, "-wal": 0o600, "-shm": 0o600}
            await store.aclose()

        asyncio.run(scenario())
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "state").stat().st_mode) == 0o700
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_existing_world_readable_files_are_tightened(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t (x)")
    wal = Path(f"{path}-wal")
    for name in (path, wal):
        name.chmod(0o644)
    tmp_path.chmod(0o755)
    store = SQLiteStore(path)
    try:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(wal.stat().st_mode) == 0o600
        # The operator's own directory keeps its mode.
        assert stat.S_IMODE(tmp_path.stat().st_mode) == 0o755
    finally:
        asyncio.run(store.aclose())
        conn.close()


def test_two_stores_on_one_file_share_data(tmp_path: Path) -> None:
    """What two workers of one host see when they point at the same file."""
    url = f"sqlite:///{tmp_path / 'store.db'}"

    async def scenario() -> object:
        one, two = open_store(url), open_store(url)
        try:
            await asyncio.gather(*(one.save(record(f"resp_{n}")) for n in range(20)))
            await asyncio.gather(*(two.save(record(f"resp_{n}")) for n in range(20, 40)))
            return [await one.get(f"resp_{n}", owner="owner-a") is not None for n in range(40)]
        finally:
            await one.aclose()
            await two.aclose()

    assert asyncio.run(scenario()) == [True] * 40


def test_event_loop_keeps_running_while_sqlite_waits(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    SQLiteStore(path)  # create the schema
    blocker = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    blocker.execute("BEGIN IMMEDIATE")  # another process holding the write lock

    async def scenario() -> tuple[int, float]:
        store = SQLiteStore(path, busy_timeout=0.5)
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        task = asyncio.create_task(ticker())
        started = time.monotonic()
        try:
            with pytest.raises(StoreError, match="locked"):
                await store.save(record("resp_1"))
        finally:
            task.cancel()
            await store.aclose()
        return ticks, time.monotonic() - started

    try:
        ticks, elapsed = asyncio.run(scenario())
    finally:
        blocker.rollback()
        blocker.close()
    assert elapsed >= 0.4
    assert ticks >= 20  # the loop ran all the while SQLite waited on the lock


def test_work_runs_on_one_thread_off_the_loop(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "store.db")
    seen: set[str] = set()
    original = store._ping

    def spy() -> bool:
        seen.add(threading.current_thread().name)
        return original()

    store._ping = spy  # type: ignore[method-assign]

    async def scenario() -> None:
        await asyncio.gather(*(store.ping() for _ in range(20)))
        await store.aclose()

    asyncio.run(scenario())
    assert len(seen) == 1
    assert seen != {threading.current_thread().name}


def test_open_failures_are_clear(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="cannot open SQLite store"):
        SQLiteStore(garbage)

    newer = tmp_path / "newer.db"
    conn = sqlite3.connect(newer)
    conn.execute("PRAGMA user_version=99")
    conn.close()
    with pytest.raises(StoreError, match="schema version 99"):
        SQLiteStore(newer)

    a_file = tmp_path / "file"
    a_file.write_text("")
    with pytest.raises(StoreError, match="cannot open SQLite store"):
        SQLiteStore(a_file / "store.db")


def test_first_open_by_many_workers_at_once(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    errors: list[BaseException] = []
    stores: list[SQLiteStore] = []
    start = threading.Barrier(6)

    def open_one() -> None:
        start.wait()
        try:
            stores.append(SQLiteStore(path))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    async def close_all() -> None:
        for store in stores:
            await store.aclose()

    asyncio.run(close_all())
    assert errors == []
    assert len(stores) == 6
