"""``Idempotency-Key``: a retried non-streamed POST gets the first answer again.

Kept per process, for a configurable window. A retry that arrives while the
first attempt is still running waits for it instead of calling the upstream
twice. Only successes and client errors are kept: after a server error the
retry runs again.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from compat_asgi.errors import Conflict
from compat_asgi.types import Headers, Message, Send

__all__ = ["IdempotencyCache", "DEFAULT_WINDOW", "DEFAULT_MAX_BYTES", "MAX_KEY_BYTES", "REPLAYED_HEADER"]

DEFAULT_WINDOW = 24 * 3600.0
DEFAULT_MAX_BYTES = 64 << 20  # answers kept in all, oldest dropped first
MAX_KEY_BYTES = 256  # longer keys are refused, never cut (cut keys would collide)
_MAX_ENTRIES = 10_000
_MAX_BODY = 8 << 20  # larger answers are not kept
REPLAYED_HEADER = (b"idempotent-replayed", b"true")


@dataclass(slots=True)
class _Entry:
    digest: bytes
    created: float
    done: asyncio.Event = field(default_factory=asyncio.Event)
    status: int = 0
    headers: Headers = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)
    keep: bool = False
    size: int = 0  # bytes counted against the cache's limit


class IdempotencyCache:
    def __init__(
        self, window: float = DEFAULT_WINDOW, *, max_entries: int = _MAX_ENTRIES,
        max_bytes: int = DEFAULT_MAX_BYTES, clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.window = window
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._bytes = 0  # body and header bytes of the entries held
        self._clock = clock
        self._entries: OrderedDict[tuple[str | None, str], _Entry] = OrderedDict()

    @property
    def size(self) -> int:
        """Bytes of answers held now."""
        return self._bytes

    def _drop(self, slot: tuple[str | None, str]) -> None:
        entry = self._entries.pop(slot, None)
        if entry is not None:
            self._bytes -= entry.size

    def _expire(self) -> None:
        horizon = self._clock() - self.window
        while self._entries:
            slot, entry = next(iter(self._entries.items()))
            if (
                entry.created >= horizon
                and len(self._entries) <= self._max_entries
                and self._bytes <= self._max_bytes
            ):
                break
            self._drop(slot)

    async def replay(self, owner: str | None, key: str, path: str, body: bytes, send: Send) -> Send | None:
        """Answer from the cache (returns None), or return the ``send`` to use
        for the first attempt, which records what it sends."""
        self._expire()
        digest = hashlib.sha256(path.encode() + b"\0" + body).digest()
        slot = (owner, key)
        entry = self._entries.get(slot)
        if entry is not None:
            if entry.digest != digest:
                raise Conflict(
                    "This Idempotency-Key was already used with a different request body.",
                    param="Idempotency-Key",
                )
            await entry.done.wait()
            if entry.keep:
                await send({"type": "http.response.start", "status": entry.status,
                            "headers": [*entry.headers, REPLAYED_HEADER]})
                await send({"type": "http.response.body", "body": bytes(entry.body), "more_body": False})
                return None
            # The first attempt failed on the server side: this retry runs for real.
        self._drop(slot)
        entry = self._entries[slot] = _Entry(digest, self._clock())

        async def recording_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                entry.status = message["status"]
                entry.headers = list(message.get("headers", []))
            elif message["type"] == "http.response.body":
                if len(entry.body) <= _MAX_BODY:
                    entry.body += message.get("body", b"")
                if not message.get("more_body", False):
                    entry.keep = entry.status < 500 and len(entry.body) <= min(_MAX_BODY, self._max_bytes)
                    if not entry.keep:
                        entry.body = bytearray()  # nothing to replay: let the memory go
                    elif self._entries.get(slot) is entry:  # not already evicted
                        entry.size = len(entry.body) + sum(len(k) + len(v) for k, v in entry.headers)
                        self._bytes += entry.size
                    entry.done.set()
                    self._expire()
            await send(message)

        return recording_send

    def abandon(self, owner: str | None, key: str) -> None:
        """The first attempt ended without a full answer: let waiters retry."""
        entry = self._entries.get((owner, key))
        if entry is not None and not entry.done.is_set():
            entry.keep = False
            entry.done.set()
            self._drop((owner, key))
