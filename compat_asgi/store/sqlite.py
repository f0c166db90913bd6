"""SQLite store: one file, survives restarts, shareable by the workers of one host.

The directories it creates are ``0700`` and the database with its ``-wal``
and ``-shm`` files ``0600``: stored prompts and answers are private to the
user the server runs as.

All SQLite work runs on one dedicated thread that owns the connection, so the
event loop never blocks on disk or locks and the connection is never shared
between threads. Every write is one ``BEGIN IMMEDIATE`` transaction: several
processes on the same file serialize on the write lock (waiting up to
``busy_timeout``) instead of failing half-way.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from os import PathLike
from pathlib import Path
from typing import Any, TypeVar

import orjson

from compat_asgi.store.base import (
    DEFAULT_MAX_ENTRIES,
    DEFAULT_TTL,
    StoredConversation,
    StoredResponse,
    StoreError,
    check_limits,
)

__all__ = ["SQLiteStore", "SCHEMA_VERSION", "DEFAULT_BUSY_TIMEOUT"]

SCHEMA_VERSION = 2
DEFAULT_BUSY_TIMEOUT = 5.0  # seconds to wait for another process's write lock

_T = TypeVar("_T")
_PAGE_SIZE = 16384

# ``accessed`` orders LRU eviction; ``expires_at`` is wall-clock Unix time
# because the file outlives the process (a monotonic clock would not).
_SCHEMA = """
CREATE TABLE responses (
    id TEXT PRIMARY KEY,
    owner TEXT,
    created_at INTEGER NOT NULL,
    expires_at REAL,
    accessed INTEGER NOT NULL,
    response BLOB NOT NULL,
    input_items BLOB NOT NULL,
    events BLOB
);
CREATE INDEX responses_accessed ON responses(accessed);
CREATE INDEX responses_expires ON responses(expires_at) WHERE expires_at IS NOT NULL;
CREATE TABLE conversations (
    pk INTEGER PRIMARY KEY,
    id TEXT NOT NULL,
    owner TEXT,
    expires_at REAL,
    accessed INTEGER NOT NULL
);
CREATE INDEX conversations_id ON conversations(id, owner);
CREATE INDEX conversations_accessed ON conversations(accessed);
CREATE INDEX conversations_expires ON conversations(expires_at) WHERE expires_at IS NOT NULL;
CREATE TABLE conversation_items (
    n INTEGER PRIMARY KEY,
    conversation INTEGER NOT NULL REFERENCES conversations(pk) ON DELETE CASCADE,
    item BLOB NOT NULL
);
CREATE INDEX conversation_items_conversation ON conversation_items(conversation);
"""
# Each step takes the file from version N to N + 1; ``_SCHEMA`` is version 1.
_MIGRATIONS = (
    # 1 -> 2: the Conversations API shows a creation time and metadata.
    """
ALTER TABLE conversations ADD COLUMN created_at INTEGER NOT NULL DEFAULT 0;
ALTER TABLE conversations ADD COLUMN metadata BLOB NOT NULL DEFAULT '{}';
""",
)

_FLAGS = "CREATE TABLE IF NOT EXISTS flags (key TEXT PRIMARY KEY, value BLOB NOT NULL, expires_at REAL NOT NULL)"


class SQLiteStore:
    """Responses and conversations in a WAL-mode SQLite file, LRU-bounded and expiring."""

    def __init__(
        self,
        path: str | PathLike[str],
        *,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        ttl: float | None = DEFAULT_TTL,
        busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
    ) -> None:
        check_limits(max_entries, ttl)
        self.path = Path(path)
        self._max_entries = max_entries
        self._ttl = ttl
        self._closed = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="compat-asgi-sqlite")
        # Opening blocks once, at startup, so a bad path fails there and not on the first request.
        try:
            self._conn = self._executor.submit(_connect, self.path, busy_timeout).result()
            self._last_access = self._executor.submit(self._max_accessed).result()
        except BaseException:
            self._executor.shutdown(wait=False)
            raise

    async def save(self, record: StoredResponse) -> None:
        response = orjson.dumps(record.response)
        input_items = orjson.dumps(record.input_items)
        await self._run(self._save, record, response, input_items)

    async def get(self, response_id: str, *, owner: str | None) -> StoredResponse | None:
        return await self._run(self._get, response_id, owner)

    async def delete(self, response_id: str, *, owner: str | None) -> bool:
        return await self._run(self._delete, response_id, owner)

    async def append_conversation(
        self,
        conversation_id: str,
        items: list[dict[str, Any]],
        *,
        owner: str | None,
        created_at: int | None = None,
    ) -> None:
        encoded = [orjson.dumps(item) for item in items]
        await self._run(self._append, conversation_id, encoded, owner, created_at)

    async def conversation_items(
        self, conversation_id: str, *, owner: str | None
    ) -> list[dict[str, Any]] | None:
        rows = await self._run(self._items, conversation_id, owner)
        return None if rows is None else [orjson.loads(row) for row in rows]

    async def conversation(self, conversation_id: str, *, owner: str | None) -> StoredConversation | None:
        return await self._run(self._conversation, conversation_id, owner, None)

    async def update_conversation(
        self, conversation_id: str, metadata: dict[str, str], *, owner: str | None
    ) -> StoredConversation | None:
        return await self._run(self._conversation, conversation_id, owner, orjson.dumps(metadata))

    async def delete_conversation(self, conversation_id: str, *, owner: str | None) -> bool:
        return await self._run(self._delete_conversation, conversation_id, owner)

    async def delete_conversation_item(self, conversation_id: str, item_id: str, *, owner: str | None) -> bool:
        return await self._run(self._delete_item, conversation_id, item_id, owner)

    async def put_flag(self, key: str, value: bytes, *, ttl: float) -> None:
        await self._run(self._put_flag, key, value, ttl)

    async def get_flag(self, key: str) -> bytes | None:
        return await self._run(self._get_flag, key)

    async def ping(self) -> bool:
        try:
            return await self._run(self._ping)
        except StoreError:
            return False

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        # Queued after any work still pending, so in-flight calls finish first.
        await asyncio.get_running_loop().run_in_executor(self._executor, self._conn.close)
        self._executor.shutdown(wait=False)

    async def _run(self, fn: Callable[..., _T], *args: Any) -> _T:
        if self._closed:
            raise StoreError("the response store is closed")
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite store {self.path} failed: {exc}") from exc

    # Everything below runs on the store's own thread only.

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.rollback()
            raise
        conn.commit()

    def _tick(self) -> int:
        # Strictly increasing within a process, so LRU order never ties; nanosecond
        # wall time keeps other processes sharing the file roughly in order too.
        self._last_access = max(time.time_ns(), self._last_access + 1)
        return self._last_access

    def _expiry(self, now: float) -> float | None:
        return None if self._ttl is None else now + self._ttl

    def _max_accessed(self) -> int:
        row = self._conn.execute(
            "SELECT max(coalesce((SELECT max(accessed) FROM responses), 0),"
            " coalesce((SELECT max(accessed) FROM conversations), 0))"
        ).fetchone()
        return int(row[0])

    def _save(self, record: StoredResponse, response: bytes, input_items: bytes) -> None:
        now = time.time()
        with self._write() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO responses"
                " (id, owner, created_at, expires_at, accessed, response, input_items, events)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    record.id,
                    record.owner,
                    record.created_at,
                    self._expiry(now),
                    self._tick(),
                    response,
                    input_items,
                    record.events,
                ),
            )
            conn.execute("DELETE FROM responses WHERE expires_at <= ?", (now,))
            self._evict(conn, "responses")

    def _get(self, response_id: str, owner: str | None) -> StoredResponse | None:
        with self._write() as conn:
            row = conn.execute(
                "SELECT created_at, response, input_items, events FROM responses"
                " WHERE id = ? AND owner IS ? AND (expires_at IS NULL OR expires_at > ?)",
                (response_id, owner, time.time()),
            ).fetchone()
            if row is None:
                return None
            conn.execute("UPDATE responses SET accessed = ? WHERE id = ?", (self._tick(), response_id))
        created_at, response, input_items, events = row
        return StoredResponse(
            id=response_id,
            owner=owner,
            response=orjson.loads(response),
            input_items=orjson.loads(input_items),
            events=None if events is None else bytes(events),
            created_at=created_at,
        )

    def _delete(self, response_id: str, owner: str | None) -> bool:
        with self._write() as conn:
            cursor = conn.execute(
                "DELETE FROM responses"
                " WHERE id = ? AND owner IS ? AND (expires_at IS NULL OR expires_at > ?)",
                (response_id, owner, time.time()),
            )
            return cursor.rowcount > 0

    def _append(
        self, conversation_id: str, items: list[bytes], owner: str | None, created_at: int | None
    ) -> None:
        now = time.time()
        expires_at = self._expiry(now)
        with self._write() as conn:
            # Expired conversations go first, so an append after expiry starts afresh.
            conn.execute("DELETE FROM conversations WHERE expires_at <= ?", (now,))
            row = conn.execute(
                "SELECT pk FROM conversations WHERE id = ? AND owner IS ?", (conversation_id, owner)
            ).fetchone()
            if row is None:
                cursor = conn.execute(
                    "INSERT INTO conversations (id, owner, expires_at, accessed, created_at)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (conversation_id, owner, expires_at, self._tick(), int(now) if created_at is None else created_at),
                )
                pk = cursor.lastrowid
            else:
                pk = row[0]
                conn.execute(
                    "UPDATE conversations SET expires_at = ?, accessed = ? WHERE pk = ?",
                    (expires_at, self._tick(), pk),
                )
            conn.executemany(
                "INSERT INTO conversation_items (conversation, item) VALUES (?, ?)",
                [(pk, item) for item in items],
            )
            self._evict(conn, "conversations")

    def _items(self, conversation_id: str, owner: str | None) -> list[bytes] | None:
        with self._write() as conn:
            row = conn.execute(
                "SELECT pk FROM conversations"
                " WHERE id = ? AND owner IS ? AND (expires_at IS NULL OR expires_at > ?)",
                (conversation_id, owner, time.time()),
            ).fetchone()
            if row is None:
                return None
            conn.execute("UPDATE conversations SET accessed = ? WHERE pk = ?", (self._tick(), row[0]))
            rows = conn.execute(
                "SELECT item FROM conversation_items WHERE conversation = ? ORDER BY n", (row[0],)
            ).fetchall()
        return [bytes(item) for (item,) in rows]

    def _live_conversation(self, conn: sqlite3.Connection, conversation_id: str, owner: str | None) -> Any:
        return conn.execute(
            "SELECT pk, created_at, metadata FROM conversations"
            " WHERE id = ? AND owner IS ? AND (expires_at IS NULL OR expires_at > ?)",
            (conversation_id, owner, time.time()),
        ).fetchone()

    def _conversation(
        self, conversation_id: str, owner: str | None, metadata: bytes | None
    ) -> StoredConversation | None:
        """The conversation, after replacing its metadata when ``metadata`` is given."""
        with self._write() as conn:
            row = self._live_conversation(conn, conversation_id, owner)
            if row is None:
                return None
            pk, created_at, stored = row
            if metadata is None:
                conn.execute("UPDATE conversations SET accessed = ? WHERE pk = ?", (self._tick(), pk))
            else:
                stored = metadata
                conn.execute(
                    "UPDATE conversations SET metadata = ?, expires_at = ?, accessed = ? WHERE pk = ?",
                    (metadata, self._expiry(time.time()), self._tick(), pk),
                )
        return StoredConversation(conversation_id, created_at, orjson.loads(stored))

    def _delete_conversation(self, conversation_id: str, owner: str | None) -> bool:
        with self._write() as conn:
            row = self._live_conversation(conn, conversation_id, owner)
            if row is None:
                return False
            conn.execute("DELETE FROM conversations WHERE pk = ?", (row[0],))
        return True

    def _delete_item(self, conversation_id: str, item_id: str, owner: str | None) -> bool:
        with self._write() as conn:
            row = self._live_conversation(conn, conversation_id, owner)
            if row is None:
                return False
            # Items are opaque blobs here; ids are compared after decoding, as every backend does.
            for n, item in conn.execute(
                "SELECT n, item FROM conversation_items WHERE conversation = ? ORDER BY n", (row[0],)
            ):
                if orjson.loads(item).get("id") == item_id:
                    conn.execute("DELETE FROM conversation_items WHERE n = ?", (n,))
                    return True
        return False

    def _evict(self, conn: sqlite3.Connection, table: str) -> None:
        (count,) = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
        if count > self._max_entries:
            key = "id" if table == "responses" else "pk"
            conn.execute(
                f"DELETE FROM {table} WHERE {key} IN"
                f" (SELECT {key} FROM {table} ORDER BY accessed LIMIT ?)",
                (count - self._max_entries,),
            )

    def _put_flag(self, key: str, value: bytes, ttl: float) -> None:
        now = time.time()
        with self._write() as conn:
            conn.execute("DELETE FROM flags WHERE expires_at <= ?", (now,))
            conn.execute("INSERT OR REPLACE INTO flags (key, value, expires_at) VALUES (?, ?, ?)", (key, value, now + ttl))

    def _get_flag(self, key: str) -> bytes | None:
        row = self._conn.execute(
            "SELECT value FROM flags WHERE key = ? AND expires_at > ?", (key, time.time())
        ).fetchone()
        return None if row is None else bytes(row[0])

    def _ping(self) -> bool:
        self._conn.execute("SELECT 1").fetchone()
        return True


def _private(path: Path) -> None:
    """Create the directories (0700) and the database file (0600) that are missing.

    SQLite gives the ``-wal`` and ``-shm`` files the database file's mode, so
    a private database keeps its journal private too. Files already there
    from an older version are tightened; directories that already exist are
    the operator's and stay as they are.
    """
    missing: list[Path] = []
    parent = path.parent
    while not parent.exists():
        missing.append(parent)
        parent = parent.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=0o700)
        except FileExistsError:  # another worker won the race
            pass
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    for name in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        try:
            if name.stat().st_mode & 0o077:
                name.chmod(0o600)
        except FileNotFoundError:
            pass


def _connect(path: Path, busy_timeout: float) -> sqlite3.Connection:
    try:
        _private(path)
        # Autocommit mode: transactions are opened explicitly with BEGIN IMMEDIATE.
        conn = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None)
    except (OSError, sqlite3.Error) as exc:
        raise StoreError(f"cannot open SQLite store at {path}: {exc}") from exc
    try:
        # Before the first table exists (after, it changes nothing): a stored
        # stream is a blob of hundreds of KiB, which 16 KiB pages write with
        # about half the CPU of SQLite's default 4 KiB pages.
        conn.execute(f"PRAGMA page_size={_PAGE_SIZE}")
        (mode,) = _retry_locked(lambda: conn.execute("PRAGMA journal_mode=WAL").fetchone(), busy_timeout)
        if mode != "wal":
            raise StoreError(f"SQLite store at {path} cannot use WAL mode (journal_mode={mode})")
        # WAL + NORMAL never corrupts; a power cut may lose the last commits, fine for this data.
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        _migrate(conn, path)
        # Short-lived keys only: a table older versions never read, so no schema version of its own.
        # Created under BEGIN IMMEDIATE (which waits for the lock): a write in an implicit
        # transaction can fail at once in WAL mode when another worker just wrote.
        if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'flags'").fetchone() is None:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute(_FLAGS)
            except BaseException:
                conn.rollback()
                raise
            conn.commit()
    except sqlite3.Error as exc:
        conn.close()
        raise StoreError(f"cannot open SQLite store at {path}: {exc}") from exc
    except BaseException:
        conn.close()
        raise
    return conn


def _retry_locked(run: Callable[[], Any], busy_timeout: float) -> Any:
    """``run()``, again while SQLite says the database is locked, for up to
    ``busy_timeout`` seconds: switching a new file to WAL takes an exclusive
    lock that other workers opening it at the same moment may hold, and that
    wait is not covered by SQLite's own busy handler."""
    deadline = time.monotonic() + busy_timeout
    while True:
        try:
            return run()
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.01)


def _migrate(conn: sqlite3.Connection, path: Path) -> None:
    # Steady state needs no write lock, so a worker can open the file while another writes.
    if _schema_version(conn) == SCHEMA_VERSION:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        # Re-read under the lock: another worker starting at the same time may have won.
        version = _schema_version(conn)
        if 0 <= version < SCHEMA_VERSION:
            steps = (_SCHEMA, *_MIGRATIONS) if version == 0 else _MIGRATIONS[version - 1 :]
            for step in steps:
                for statement in step.split(";"):
                    if statement.strip():
                        conn.execute(statement)
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        elif version != SCHEMA_VERSION:
            raise StoreError(
                f"SQLite store at {path} has schema version {version};"
                f" this compat_asgi reads version {SCHEMA_VERSION}"
            )
    except BaseException:
        conn.rollback()
        raise
    conn.commit()


def _schema_version(conn: sqlite3.Connection) -> int:
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    return int(version)
