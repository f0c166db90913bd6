"""Store fixtures: every contract test runs on memory, SQLite in tmp_path, and a real redis-server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from store_support import Opener, redis_command, redis_server

from compat_asgi.store import DEFAULT_MAX_ENTRIES, DEFAULT_TTL, Store, open_store


@pytest.fixture(scope="session")
def redis_port() -> Iterator[int]:
    """A throwaway redis-server on 127.0.0.1 shared by the session; each test flushes it."""
    with redis_server() as port:
        yield port


@pytest.fixture
def redis_url(redis_port: int) -> str:
    redis_command(redis_port, "FLUSHALL")
    return f"redis://127.0.0.1:{redis_port}/0"


@pytest.fixture(params=["memory", "sqlite", "redis"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "redis":
        url: str = request.getfixturevalue("redis_url")
        return url
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return "memory"


@pytest.fixture
def opener(backend: str) -> Opener:
    def open_(*, max_entries: int = DEFAULT_MAX_ENTRIES, ttl: float | None = DEFAULT_TTL) -> Store:
        return open_store(backend, max_entries=max_entries, ttl=ttl)

    return open_
