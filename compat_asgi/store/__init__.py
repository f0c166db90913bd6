"""Response and conversation state behind one small interface.

The middleware uses it for ``store``, ``previous_response_id``,
``conversation``, ``GET``/``DELETE /v1/responses/{id}``, ``input_items`` and
``?stream=true`` replay::

    store = open_store("sqlite:///var/lib/compat-asgi/store.db")
    await store.save(StoredResponse(id, owner, response, input_items, events, created_at))
    record = await store.get(id, owner=owner)            # None: missing, expired or not yours
    deleted = await store.delete(id, owner=owner)        # False: same reasons
    await store.append_conversation(conv_id, items, owner=owner)
    items = await store.conversation_items(conv_id, owner=owner)   # None: unknown
    conversation = await store.conversation(conv_id, owner=owner)  # created_at, metadata
    await store.update_conversation(conv_id, {"topic": "x"}, owner=owner)
    await store.delete_conversation_item(conv_id, item_id, owner=owner)
    await store.delete_conversation(conv_id, owner=owner)
    ready = await store.ping()
    await store.aclose()

URLs accepted by :func:`open_store`:

- ``memory`` or ``memory://?max_bytes=N``: in-process, lost on restart, per
  worker, at most ``N`` bytes of encoded values (default 256 MiB);
- ``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db``: a WAL
  file, survives restarts, shareable by the workers of one host;
- ``redis://``, ``rediss://`` (TLS), ``unix://``, ``redis+sentinel://`` and
  ``redis+cluster://`` (see :mod:`compat_asgi.store.redis_url`): shared by
  every worker and host; needs the ``redis`` extra (redis-py).

Contract, the same for every backend:

- ``owner`` is an opaque scope (a digest of the client's API key, or None
  when no keys are configured). Nothing saved under one owner is visible to,
  or deletable by, another; conversation ids are a namespace per owner.
- ``save`` replaces a record with the same id. A response expires ``ttl``
  seconds after it was saved (reads do not extend it); a conversation
  expires ``ttl`` seconds after its last append (or metadata update).
- A conversation is created by its first append (with ``created_at`` and
  empty metadata); deleting one item or the conversation never touches
  another owner's conversation of the same id.
- Memory and SQLite keep at most ``max_entries`` responses and, separately,
  ``max_entries`` conversations, evicting the least recently used (saved or
  read); memory also keeps at most ``max_bytes`` in all. Redis leaves that
  bound to the server's ``maxmemory`` policy, and rounds ``ttl`` up to whole
  seconds.
- Values must be JSON-serializable by orjson; they come back equal, not
  identical (a stored dict is never the caller's object).
- Backend failures raise :class:`StoreError` (a ``CompatError``, HTTP 503;
  :class:`StoreTimeout` when a call timed out); ``ping`` returns False
  instead. Every method raises ``StoreError`` after ``aclose``.
"""

from __future__ import annotations

from compat_asgi.store.base import (
    DEFAULT_MAX_ENTRIES,
    DEFAULT_TTL,
    Store,
    StoredConversation,
    StoredResponse,
    StoreError,
    StoreTimeout,
)
from compat_asgi.store.memory import DEFAULT_MAX_BYTES, MemoryStore
from compat_asgi.store.redis import RedisStore
from compat_asgi.store.redis_url import REDIS_SCHEMES
from compat_asgi.store.sqlite import SQLiteStore

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_ENTRIES",
    "DEFAULT_TTL",
    "MemoryStore",
    "RedisStore",
    "SQLiteStore",
    "Store",
    "StoreError",
    "StoreTimeout",
    "StoredConversation",
    "StoredResponse",
    "open_store",
]

_SQLITE_PREFIX = "sqlite:///"
_MEMORY_PREFIX = "memory://"


def open_store(
    url: str,
    *,
    max_entries: int = DEFAULT_MAX_ENTRIES,
    ttl: float | None = DEFAULT_TTL,
    max_bytes: int | None = None,
) -> Store:
    """Open the store a URL names; ``ValueError`` says what is wrong with any other URL.

    ``max_bytes`` bounds the memory store (it wins over the URL's); the other
    backends leave size to the disk or the server. Only SQLite does I/O here
    (it opens the file and creates the schema), so call this at startup, not
    per request.
    """
    if url == "memory" or url.startswith(_MEMORY_PREFIX):
        return MemoryStore(max_entries=max_entries, ttl=ttl, max_bytes=max_bytes if max_bytes is not None else _memory_bytes(url))
    if url.startswith(_SQLITE_PREFIX):
        # What follows the third slash is the path: "a.db" is relative, "/a.db" absolute.
        path = url[len(_SQLITE_PREFIX) :]
        if not path or path.endswith("/") or "?" in path or "#" in path:
            raise ValueError(f"SQLite store URL needs a file path, like sqlite:///store.db: {url!r}")
        return SQLiteStore(path, max_entries=max_entries, ttl=ttl)
    if url.startswith("sqlite:"):
        raise ValueError(f"SQLite store URL must start with sqlite:/// (three slashes): {url!r}")
    if url.split("://", 1)[0].lower() in REDIS_SCHEMES and "://" in url:
        return RedisStore(url, max_entries=max_entries, ttl=ttl)
    shown = url if "@" not in url else url.split("://", 1)[0] + "://***"
    raise ValueError(
        f"unknown store URL {shown!r}: use 'memory', 'sqlite:///path.db' or 'redis://host:port/db'"
        " (also rediss://, unix://, redis+sentinel://, redis+cluster://)"
    )


def _memory_bytes(url: str) -> int:
    if url == "memory":
        return DEFAULT_MAX_BYTES
    rest = url[len(_MEMORY_PREFIX) :]
    if rest in ("", "/"):
        return DEFAULT_MAX_BYTES
    name, eq, value = rest.removeprefix("/").removeprefix("?").partition("=")
    if not rest.lstrip("/").startswith("?") or name != "max_bytes" or not eq or not value.isdigit() or int(value) < 1:
        raise ValueError(f"memory store URL takes only ?max_bytes=<positive integer>, like memory://?max_bytes=268435456: {url!r}")
    return int(value)
