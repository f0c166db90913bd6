"""The store's data type, interface, limits and errors, shared by every backend."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol

from compat_asgi.errors import CompatError

__all__ = [
    "DEFAULT_MAX_ENTRIES",
    "DEFAULT_TTL",
    "StoredResponse",
    "StoredConversation",
    "Store",
    "StoreError",
    "StoreTimeout",
    "check_limits",
]

DEFAULT_MAX_ENTRIES = 10_000  # responses (and, separately, conversations) kept per store
DEFAULT_TTL = 30 * 24 * 60 * 60.0  # seconds a response lives after it was saved


@dataclass(frozen=True, slots=True)
class StoredResponse:
    id: str
    owner: str | None  # opaque scope (a hash of the API key), None when no keys are configured
    response: dict[str, Any]  # the final Response object, exactly as returned to the client
    input_items: list[dict[str, Any]]  # the request's input items (with ids)
    # The encoded SSE stream as sent; None when not streamed; b"" when streamed
    # but longer than the server records (no finished stream has zero events),
    # or for a background run, none yet.
    events: bytes | None
    created_at: int


@dataclass(frozen=True, slots=True)
class StoredConversation:
    """What a conversation is besides its items (those come from ``conversation_items``)."""

    id: str
    created_at: int  # 0 for a conversation stored before creation times were kept
    metadata: dict[str, str]


class Store(Protocol):
    """Where responses and conversations live between requests.

    Reads never cross owners: a record saved under one owner is invisible
    (``None`` / ``False``) to every other owner, including ``None``.
    """

    async def save(self, record: StoredResponse) -> None: ...

    async def get(self, response_id: str, *, owner: str | None) -> StoredResponse | None: ...

    async def delete(self, response_id: str, *, owner: str | None) -> bool: ...

    async def append_conversation(
        self,
        conversation_id: str,
        items: list[dict[str, Any]],
        *,
        owner: str | None,
        created_at: int | None = None,
    ) -> None:
        """Append ``items``, creating the conversation (at ``created_at``, default
        now) with empty metadata when it does not exist."""

    async def conversation_items(
        self, conversation_id: str, *, owner: str | None
    ) -> list[dict[str, Any]] | None: ...

    async def conversation(self, conversation_id: str, *, owner: str | None) -> StoredConversation | None: ...

    async def update_conversation(
        self, conversation_id: str, metadata: dict[str, str], *, owner: str | None
    ) -> StoredConversation | None:
        """Replace the conversation's metadata; None when it does not exist."""

    async def delete_conversation(self, conversation_id: str, *, owner: str | None) -> bool: ...

    async def delete_conversation_item(self, conversation_id: str, item_id: str, *, owner: str | None) -> bool:
        """Remove the item with ``id`` ``item_id``; False when the conversation or item is unknown."""

    async def put_flag(self, key: str, value: bytes, *, ttl: float) -> None:
        """Set a short-lived key (a background run's lease, a cancel request) that
        every worker sharing the store sees, and that vanishes ``ttl`` seconds later."""

    async def get_flag(self, key: str) -> bytes | None:
        """The flag's value; None once it expired or when it was never set."""

    async def ping(self) -> bool: ...

    async def aclose(self) -> None: ...


class StoreError(CompatError):
    """The store backend failed or cannot be reached; the request cannot use stored state."""

    status = 503
    type = "server_error"
    code = "store_unavailable"


class StoreTimeout(StoreError):
    code = "store_timeout"


def check_limits(max_entries: int, ttl: float | None) -> None:
    """Reject limits that would make a store unbounded by accident or evict everything."""
    if isinstance(max_entries, bool) or not isinstance(max_entries, int) or max_entries < 1:
        raise ValueError(f"max_entries must be a positive integer, got {max_entries!r}")
    if ttl is not None and not (isinstance(ttl, (int, float)) and ttl > 0 and math.isfinite(ttl)):
        raise ValueError(f"ttl must be a positive number of seconds or None, got {ttl!r}")
