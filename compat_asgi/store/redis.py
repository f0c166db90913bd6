"""Redis store through redis-py (``pip install 'compat-asgi[redis]'``): shared by
every worker and host that points at the same database.

One server (``redis://``, ``rediss://`` with TLS, ``unix://``), a Sentinel-managed
primary (``redis+sentinel://``) or a Redis Cluster (``redis+cluster://``); the
URL forms and options are in :mod:`compat_asgi.store.redis_url`. redis-py does
the protocol, TLS, pooling, reconnects, primary discovery and cluster slot
routing; this module maps records onto keys and errors onto ``StoreError``.

Keys are ``compat_asgi:resp:<id>`` (one encoded record),
``compat_asgi:conv:{<id>}`` (a list of items), ``compat_asgi:convmeta:{<id>}``
(a hash: owner -> creation time and metadata) and ``compat_asgi:flag:<key>``.
The owner lives inside each value and is checked on every read, so one owner
never sees another's data even though the key space is shared. A
conversation's two keys share the ``{<id>}`` hash tag, so the scripts that
change both touch one cluster slot.

Bounding is Redis's job here: every key carries the TTL (whole seconds,
rounded up), and ``max_entries`` is not enforced, because counting and
evicting from the client would cost a write on every read and race between
workers. Give the server a ``maxmemory`` with ``maxmemory-policy volatile-lru``
for an LRU bound.

Failover (Sentinel, Cluster): a call that meets a lost connection, a primary
turned replica (``READONLY``), a primary that lost its replicas
(``NOREPLICAS``, with ``min-replicas-to-write`` set), a write fewer replicas
confirmed than ``wait_replicas`` asks, or a cluster still electing, drops
its pooled connections, asks again where the primary is and retries, for at
most ``failover_timeout`` seconds. Replication is asynchronous, so only the
two together close the gap: with ``min-replicas-to-write 1`` on the servers
and ``wait_replicas=1`` in the URL, a write is acknowledged only once a
replica has it, and one the old primary took after its replica was promoted
is retried on the new primary. A retried append first checks whether its
elements already end the list, so a write whose reply was lost is not
appended twice.
"""

from __future__ import annotations

import asyncio
import math
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import orjson

from compat_asgi.store.base import (
    DEFAULT_MAX_ENTRIES,
    DEFAULT_TTL,
    StoredConversation,
    StoredResponse,
    StoreError,
    StoreTimeout,
    check_limits,
)
from compat_asgi.store.codec import decode_record, encode_record
from compat_asgi.store.redis_url import RedisURL, parse_redis_url

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.asyncio.cluster import RedisCluster
    from redis.asyncio.sentinel import Sentinel

__all__ = [
    "RedisStore",
    "RESPONSE_PREFIX",
    "CONVERSATION_PREFIX",
    "CONVERSATION_META_PREFIX",
    "DEFAULT_REDIS_TIMEOUT",
    "DEFAULT_POOL_SIZE",
    "DEFAULT_FAILOVER_TIMEOUT",
]

RESPONSE_PREFIX = "compat_asgi:resp:"
CONVERSATION_PREFIX = "compat_asgi:conv:"
CONVERSATION_META_PREFIX = "compat_asgi:convmeta:"
FLAG_PREFIX = "compat_asgi:flag:"
DEFAULT_REDIS_TIMEOUT = 5.0  # seconds per connect and per command
DEFAULT_POOL_SIZE = 64  # connections per process (per node in a cluster)
DEFAULT_FAILOVER_TIMEOUT = 20.0  # sentinel/cluster: seconds a call waits for a new primary
_FAILOVER_ERRORS = ("READONLY", "NOREPLICAS", "MASTERDOWN", "LOADING", "CLUSTERDOWN", "TRYAGAIN")

_T = TypeVar("_T")

# KEYS[1] the list, KEYS[2] the meta hash; ARGV[1] the TTL (0: none); ARGV[2]
# "1" on a retry, when the elements may already be there (the first attempt's
# reply was lost or not confirmed by the replicas); ARGV[3] the owner's hash
# field, ARGV[4] its value if the conversation is new; ARGV[5..] the elements.
# One RPUSH per element because Lua's unpack() is limited to a few thousand values.
_APPEND = """
local n = #ARGV - 4
if ARGV[2] == '1' then
  local tail = redis.call('LRANGE', KEYS[1], -n, -1)
  local same = #tail == n
  for i = 1, n do
    if not same then break end
    same = tail[i] == ARGV[i + 4]
  end
  if same then n = 0 end
end
for i = #ARGV - n + 1, #ARGV do redis.call('RPUSH', KEYS[1], ARGV[i]) end
redis.call('HSETNX', KEYS[2], ARGV[3], ARGV[4])
if ARGV[1] ~= '0' then
  redis.call('EXPIRE', KEYS[1], ARGV[1])
  redis.call('EXPIRE', KEYS[2], ARGV[1])
end
return n
"""
# KEYS as above; ARGV[1] the TTL (0: none), ARGV[2] the owner's field, ARGV[3] its new value.
_UPDATE_META = """
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
if ARGV[1] ~= '0' then
  redis.call('EXPIRE', KEYS[1], ARGV[1])
  redis.call('EXPIRE', KEYS[2], ARGV[1])
end
return 1
"""
# KEYS as above; ARGV[1] the owner's field, ARGV[2..] this owner's elements: they
# go, another owner's conversation of the same id stays.
_DELETE_CONVERSATION = """
for i = 2, #ARGV do redis.call('LREM', KEYS[1], 0, ARGV[i]) end
redis.call('HDEL', KEYS[2], ARGV[1])
return 1
"""
# KEYS[1] the list; ARGV[1] the element to remove; ARGV[2] the owner's marker,
# pushed when that was the owner's last element (the conversation stays).
_DELETE_ITEM = """
local removed = redis.call('LREM', KEYS[1], 1, ARGV[1])
if removed == 1 and ARGV[2] ~= '' then redis.call('RPUSH', KEYS[1], ARGV[2]) end
return removed
"""


class _NotReplicated(Exception):
    """WAIT saw fewer replicas acknowledge a write than ``wait_replicas`` asks for."""


MISSING_EXTRA = (
    "the Redis store needs redis-py, which is not installed: pip install 'compat-asgi[redis]'"
)


class RedisStore:
    def __init__(
        self,
        url: str,
        *,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        ttl: float | None = DEFAULT_TTL,
        timeout: float | None = None,
        pool_size: int | None = None,
        failover_timeout: float | None = None,
    ) -> None:
        check_limits(max_entries, ttl)
        self.url = parse_redis_url(url)
        self._timeout = timeout if timeout is not None else self.url.float_option("timeout", DEFAULT_REDIS_TIMEOUT)
        pool = pool_size if pool_size is not None else self.url.int_option("max_connections") or DEFAULT_POOL_SIZE
        self._failover_timeout = (
            failover_timeout
            if failover_timeout is not None
            else self.url.float_option("failover_timeout", DEFAULT_FAILOVER_TIMEOUT)
        )
        self._ttl = None if ttl is None else math.ceil(ttl)
        self._wait_replicas = self.url.int_option("wait_replicas") or 0
        # WAIT must give up before the socket timeout would cut the connection.
        self._wait_ms = max(1, int(self._timeout * 500))
        self._sentinel: Sentinel | None = None
        self._primary: Redis | None = None  # the sentinel-managed client
        # Connections open on first use, so constructing the store never blocks or fails on I/O.
        self._client: Redis | RedisCluster = self._connect(pool)
        # redis-py's pools refuse ("Too many connections") rather than wait: callers
        # beyond the pool size queue here instead.
        self._slots = asyncio.Semaphore(pool)
        self._closed = False

    def _connect(self, pool_size: int) -> Redis | RedisCluster:
        try:
            from redis.asyncio import Redis
            from redis.asyncio.cluster import ClusterNode, RedisCluster
            from redis.asyncio.retry import Retry
            from redis.asyncio.sentinel import Sentinel
            from redis.backoff import NoBackoff
        except ImportError as exc:
            raise ImportError(MISSING_EXTRA) from exc
        url = self.url
        common: dict[str, Any] = {
            "username": url.username,
            "password": url.password,
            "socket_timeout": self._timeout,
            "socket_connect_timeout": self._timeout,
            "max_connections": pool_size,
            # One immediate retry on a fresh connection: a pooled connection the
            # server closed (restart, idle timeout) is not an outage.
            "retry": Retry(NoBackoff(), 1),
        }
        tls = _tls_options(url) if url.tls else {}
        if url.mode == "unix":
            return Redis(unix_socket_path=url.path, db=url.db, **common)
        if url.mode == "single":
            host, port = url.nodes[0]
            return Redis(host=host, port=port, db=url.db, **common, **tls)
        if url.mode == "cluster":
            return RedisCluster(
                startup_nodes=[ClusterNode(host, port) for host, port in url.nodes],
                **common,
                **tls,
            )
        sentinel_kwargs: dict[str, Any] = {
            "socket_timeout": self._timeout,
            "socket_connect_timeout": self._timeout,
            "username": url.options.get("sentinel_username"),
            "password": url.options.get("sentinel_password"),
            **tls,
        }
        self._sentinel = Sentinel(list(url.nodes), sentinel_kwargs=sentinel_kwargs)  # type: ignore[no-untyped-call]
        assert url.service is not None
        client: Redis = self._sentinel.master_for(url.service, db=url.db, **common, **tls)
        self._primary = client
        return client

    async def save(self, record: StoredResponse) -> None:
        data = encode_record(record)
        key = RESPONSE_PREFIX + record.id
        await self._write("SET", lambda c, retry: self._replicated(c, lambda p: p.set(key, data, ex=self._ttl)))

    async def get(self, response_id: str, *, owner: str | None) -> StoredResponse | None:
        data = await self._call("GET", lambda c: c.get(RESPONSE_PREFIX + response_id))
        if data is None:
            return None
        if not isinstance(data, bytes):
            raise StoreError(f"redis answered GET with {type(data).__name__}, expected a string")
        record = decode_record(data)
        return record if record.owner == owner else None

    async def delete(self, response_id: str, *, owner: str | None) -> bool:
        # Check then delete is not atomic, but ids are random and never reused
        # by another owner, so nothing can slip in between.
        if await self.get(response_id, owner=owner) is None:
            return False
        deleted = await self._call("DEL", lambda c: c.delete(RESPONSE_PREFIX + response_id))
        return bool(deleted == 1)

    async def append_conversation(
        self,
        conversation_id: str,
        items: list[dict[str, Any]],
        *,
        owner: str | None,
        created_at: int | None = None,
    ) -> None:
        # Every element carries its owner: appends need no read-check-write and
        # a list shared by two owners (same client-chosen id) still never mixes.
        # ``[owner]`` alone marks the conversation as existing when nothing is appended.
        elements = [orjson.dumps([owner, item]) for item in items] or [orjson.dumps([owner])]
        list_key, meta_key = _conversation_keys(conversation_id)
        meta = orjson.dumps({"created_at": int(time.time()) if created_at is None else created_at, "metadata": {}})
        ttl = self._ttl or 0
        # One script on keys of one cluster slot runs atomically: a list is never
        # left without its TTL, and only the append that creates the conversation
        # sets its creation time (HSETNX). (Not MULTI: redis-py's asyncio cluster
        # transactions queue commands on a second event loop.)
        await self._write(
            "RPUSH",
            lambda c, retry: self._replicated(
                c,
                lambda p: p.eval(
                    _APPEND, 2, list_key, meta_key, ttl, "1" if retry else "0", _field(owner), meta, *elements
                ),
            ),
        )

    async def _replicated(self, client: Any, command: Callable[[Any], Any]) -> Any:
        """Run one write; with ``wait_replicas``, on the same connection, WAIT for that many replicas."""
        if not self._wait_replicas:
            return await command(client)
        pipe = client.pipeline(transaction=False)
        command(pipe)
        pipe.wait(self._wait_replicas, self._wait_ms)
        result, acknowledged = await pipe.execute()
        if acknowledged < self._wait_replicas:
            raise _NotReplicated(f"{acknowledged} of {self._wait_replicas} replicas acknowledged the write")
        return result

    async def conversation_items(
        self, conversation_id: str, *, owner: str | None
    ) -> list[dict[str, Any]] | None:
        elements = await self._call("LRANGE", lambda c: c.lrange(_conversation_keys(conversation_id)[0], 0, -1))
        if not isinstance(elements, list):
            raise StoreError(f"redis answered LRANGE with {type(elements).__name__}, expected a list")
        found = False
        items: list[dict[str, Any]] = []
        for element in elements:
            try:
                entry = orjson.loads(element) if isinstance(element, bytes) else None
            except orjson.JSONDecodeError:
                entry = None
            if not isinstance(entry, list) or not entry:
                raise StoreError(f"redis conversation {conversation_id!r} holds an element of an unknown format")
            if entry[0] != owner:
                continue
            found = True
            if len(entry) > 1:
                items.append(entry[1])
        return items if found else None

    async def conversation(self, conversation_id: str, *, owner: str | None) -> StoredConversation | None:
        meta_key = _conversation_keys(conversation_id)[1]
        meta = await self._call("HGET", lambda c: c.hget(meta_key, _field(owner)))
        if isinstance(meta, bytes):
            try:
                fields = orjson.loads(meta)
                return StoredConversation(conversation_id, int(fields["created_at"]), dict(fields["metadata"]))
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                raise StoreError(f"redis conversation {conversation_id!r} has metadata of an unknown format") from None
        # A list whose hash expired first, or was written before conversations had metadata.
        if await self.conversation_items(conversation_id, owner=owner) is None:
            return None
        return StoredConversation(conversation_id, 0, {})

    async def update_conversation(
        self, conversation_id: str, metadata: dict[str, str], *, owner: str | None
    ) -> StoredConversation | None:
        current = await self.conversation(conversation_id, owner=owner)
        if current is None:
            return None
        list_key, meta_key = _conversation_keys(conversation_id)
        meta = orjson.dumps({"created_at": current.created_at, "metadata": metadata})
        ttl = self._ttl or 0
        await self._write(
            "HSET",
            lambda c, retry: self._replicated(
                c, lambda p: p.eval(_UPDATE_META, 2, list_key, meta_key, ttl, _field(owner), meta)
            ),
        )
        return StoredConversation(conversation_id, current.created_at, dict(metadata))

    async def delete_conversation(self, conversation_id: str, *, owner: str | None) -> bool:
        mine = await self._own_elements(conversation_id, owner)
        if mine is None:
            return False
        list_key, meta_key = _conversation_keys(conversation_id)
        # This owner's elements only: another owner's conversation of the same id,
        # and anything appended meanwhile by anyone else, stays.
        unique = list(dict.fromkeys(element for element, _ in mine))
        await self._write(
            "LREM",
            lambda c, retry: self._replicated(
                c, lambda p: p.eval(_DELETE_CONVERSATION, 2, list_key, meta_key, _field(owner), *unique)
            ),
        )
        return True

    async def delete_conversation_item(self, conversation_id: str, item_id: str, *, owner: str | None) -> bool:
        mine = await self._own_elements(conversation_id, owner) or []
        for element, item in mine:
            if item is not None and item.get("id") == item_id:
                list_key = _conversation_keys(conversation_id)[0]
                # The last item goes, the conversation stays: its marker comes back.
                marker = orjson.dumps([owner]) if len(mine) == 1 else b""
                removed = await self._write(
                    "LREM",
                    lambda c, retry: self._replicated(
                        c, lambda p: p.eval(_DELETE_ITEM, 1, list_key, element, marker)
                    ),
                )
                return bool(removed == 1)
        return False

    async def _own_elements(
        self, conversation_id: str, owner: str | None
    ) -> list[tuple[bytes, dict[str, Any] | None]] | None:
        """This owner's raw list elements with their items (None for the marker); None: no such conversation."""
        list_key = _conversation_keys(conversation_id)[0]
        elements = await self._call("LRANGE", lambda c: c.lrange(list_key, 0, -1))
        if not isinstance(elements, list):
            raise StoreError(f"redis answered LRANGE with {type(elements).__name__}, expected a list")
        mine: list[tuple[bytes, dict[str, Any] | None]] = []
        for element in elements:
            try:
                entry = orjson.loads(element) if isinstance(element, bytes) else None
            except orjson.JSONDecodeError:
                entry = None
            if not isinstance(entry, list) or not entry or not isinstance(element, bytes):
                raise StoreError(f"redis conversation {conversation_id!r} holds an element of an unknown format")
            if entry[0] == owner:
                mine.append((element, entry[1] if len(entry) > 1 else None))
        return mine or None

    async def put_flag(self, key: str, value: bytes, *, ttl: float) -> None:
        millis = max(1, math.ceil(ttl * 1000))
        await self._write(
            "SET", lambda c, retry: self._replicated(c, lambda p: p.set(FLAG_PREFIX + key, value, px=millis))
        )

    async def get_flag(self, key: str) -> bytes | None:
        value = await self._call("GET", lambda c: c.get(FLAG_PREFIX + key))
        return value if isinstance(value, bytes) else None

    async def ping(self) -> bool:
        if self._closed:
            return False
        try:
            return bool(await self._call("PING", lambda c: c.ping(), failover=False))
        except StoreError:
            return False

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._client.aclose()
        if self._sentinel is not None:
            for sentinel in self._sentinel.sentinels:
                await sentinel.aclose()

    async def _call(
        self, command: str, fn: Callable[[Any], Awaitable[_T]], *, failover: bool = True
    ) -> _T:
        return await self._write(command, lambda client, retry: fn(client), failover=failover)

    async def _write(
        self, command: str, fn: Callable[[Any, bool], Awaitable[_T]], *, failover: bool = True
    ) -> _T:
        """Run one redis-py call; its errors become StoreError, and during a
        failover it is retried (``fn`` is told when it is a retry)."""
        from redis.exceptions import (
            AuthenticationError,
            ConnectionError,
            RedisError,
            ResponseError,
            TimeoutError,
        )

        if self._closed:
            raise StoreError("the response store is closed")
        deadline = time.monotonic() + self._failover_timeout
        pause = 0.05
        attempt = 0
        while True:
            try:
                async with self._slots:
                    return await fn(self._client, attempt > 0)
            except AuthenticationError as exc:
                raise StoreError(f"redis at {self.url} refused the credentials: {_message(exc)}") from None
            except (ConnectionError, TimeoutError, ResponseError, _NotReplicated) as exc:
                retry = failover and self.url.mode in ("sentinel", "cluster") and time.monotonic() < deadline
                if isinstance(exc, ResponseError) and not _error_code(exc).startswith(_FAILOVER_ERRORS):
                    retry = False
                if not retry:
                    raise self._error(command, exc) from None
                if self._primary is not None:
                    # The next connection asks the sentinels where the primary is now.
                    await self._primary.connection_pool.disconnect()
                await asyncio.sleep(pause)
                pause = min(pause * 2, 0.5)
                attempt += 1
            except RedisError as exc:
                raise self._error(command, exc) from None
            except (AttributeError, TypeError) as exc:
                # redis-py 8.1 lets a transport torn down under a pooled connection
                # surface as these instead of ConnectionError (redis/redis-py#4287):
                # one more try on a fresh connection, then a StoreError, never a 500.
                if not _raised_in_redis(exc):
                    raise
                if attempt > 0 and not (self.url.mode in ("sentinel", "cluster") and time.monotonic() < deadline):
                    raise StoreError(f"cannot connect to redis at {self.url}: {type(exc).__name__}: {exc}") from None
                await asyncio.sleep(pause)
                pause = min(pause * 2, 0.5)
                attempt += 1

    def _error(self, command: str, exc: Exception) -> StoreError:
        from redis.exceptions import ConnectionError, TimeoutError

        if isinstance(exc, TimeoutError):
            return StoreTimeout(f"redis at {self.url} did not answer {command} within {self._timeout:g}s")
        if isinstance(exc, ConnectionError):
            return StoreError(f"cannot connect to redis at {self.url}: {_message(exc)}")
        if isinstance(exc, _NotReplicated):
            return StoreError(f"redis at {self.url} did not replicate {command}: {exc}")
        return StoreError(f"redis at {self.url} refused {command}: {_message(exc)}")


def _raised_in_redis(exc: BaseException) -> bool:
    """Whether redis-py's own code raised ``exc`` (not a bug of ours passing through)."""
    tb = exc.__traceback__
    while tb is not None:
        if "/redis/" in tb.tb_frame.f_code.co_filename.replace("\\", "/"):
            return True
        tb = tb.tb_next
    return False


def _error_code(exc: Exception) -> str:
    """The server's error reply, without the context redis-py's pipelines put in front of it."""
    text = str(exc)
    marker = "of pipeline caused error: "
    if marker in text:
        text = text.rsplit(marker, 1)[1].lstrip("('\"")
    return text


def _message(exc: Exception) -> str:
    return str(exc) or type(exc).__name__


def _tls_options(url: RedisURL) -> dict[str, Any]:
    options = url.options
    kwargs: dict[str, Any] = {"ssl": True}
    for name in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile"):
        if name in options:
            kwargs[name] = options[name]
    reqs = options.get("ssl_cert_reqs", "required")
    kwargs["ssl_cert_reqs"] = {
        "required": ssl.CERT_REQUIRED,
        "optional": ssl.CERT_OPTIONAL,
        "none": ssl.CERT_NONE,
    }[reqs]
    # Hostname checking follows verification unless said otherwise (it cannot be on without it).
    kwargs["ssl_check_hostname"] = options.get("ssl_check_hostname", "true" if reqs != "none" else "false") == "true"
    return kwargs


def _conversation_keys(conversation_id: str) -> tuple[str, str]:
    """The list and the meta hash of a conversation, in one cluster slot (the ``{...}`` hash tag)."""
    tag = "{" + conversation_id + "}"
    return CONVERSATION_PREFIX + tag, CONVERSATION_META_PREFIX + tag


def _field(owner: str | None) -> bytes:
    """The meta hash field of an owner: JSON, so None and every string stay distinct."""
    return orjson.dumps(owner)
