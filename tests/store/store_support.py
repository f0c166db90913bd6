"""Helpers for the store tests: the opener type, and the redis-server harness."""

from __future__ import annotations

from typing import Protocol

from redis_support import redis_command, redis_server, redis_server_binary
from support import free_port

from compat_asgi.store import DEFAULT_MAX_ENTRIES, DEFAULT_TTL, Store


class Opener(Protocol):
    """Opens a fresh store on the backend under test (same data for the same test)."""

    def __call__(self, *, max_entries: int = DEFAULT_MAX_ENTRIES, ttl: float | None = DEFAULT_TTL) -> Store: ...


__all__ = ["Opener", "free_port", "redis_command", "redis_server", "redis_server_binary"]
