"""A minimal asyncio Redis client: RESP2 over ``asyncio.open_connection``.

Just enough for the store (single commands plus MULTI/EXEC sent in one
write; no pub/sub, TLS or cluster), so the package needs no Redis library.
Every call is bounded by a timeout covering the wait for a pooled
connection, connecting, sending and reading; a connection that timed out,
was cancelled or read garbage is closed, never reused, because its reply
stream may be out of step.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Union
from urllib.parse import unquote, urlsplit

from compat_asgi.store.base import StoreError, StoreTimeout

__all__ = [
    "DEFAULT_REDIS_TIMEOUT",
    "DEFAULT_POOL_SIZE",
    "RedisAddress",
    "RedisClient",
    "RedisReplyError",
    "Reply",
]

DEFAULT_REDIS_TIMEOUT = 5.0  # seconds for one command, connecting included
DEFAULT_POOL_SIZE = 4  # connections per client; more calls wait for a free one
DEFAULT_REDIS_PORT = 6379

Arg = Union[bytes, str, int]
Reply = Union[bytes, str, int, None, list["Reply"]]


class RedisReplyError(StoreError):
    """Redis answered a command with an error reply (``-ERR ...``)."""


@dataclass(frozen=True, slots=True)
class RedisAddress:
    host: str
    port: int = DEFAULT_REDIS_PORT
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    @classmethod
    def from_url(cls, url: str) -> RedisAddress:
        """Parse ``redis://[[user]:password@]host[:port][/db]``."""
        parts = urlsplit(url)
        if parts.scheme != "redis":
            raise ValueError(f"not a redis:// URL (rediss:// and unix sockets are not supported): {_redact(url)}")
        if parts.query or parts.fragment:
            raise ValueError(f"redis URL takes no query or fragment: {_redact(url)}")
        try:
            port = parts.port or DEFAULT_REDIS_PORT
        except ValueError:
            raise ValueError(f"redis URL has an invalid port: {_redact(url)}") from None
        db_text = parts.path.lstrip("/")
        if not db_text:
            db = 0
        elif db_text.isdigit():
            db = int(db_text)
        else:
            raise ValueError(f"redis URL database must be a number, got {db_text!r}: {_redact(url)}")
        return cls(
            host=parts.hostname or "127.0.0.1",
            port=port,
            db=db,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password is not None else None,
        )

    def __str__(self) -> str:
        return f"redis://{self.host}:{self.port}/{self.db}"


def _redact(url: str) -> str:
    # Error messages end up in logs: never repeat a password.
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return parts._replace(netloc=f"***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")).geturl()


class _ErrorReply(str):
    """An error reply inside a reply, kept as a value so the stream stays in step."""


class _Connection:
    __slots__ = ("address", "reader", "writer")

    def __init__(self, address: RedisAddress, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.address = address
        self.reader = reader
        self.writer = writer

    async def command(self, args: tuple[Arg, ...]) -> Reply:
        return (await self.commands((args,)))[0]

    async def commands(self, commands: tuple[tuple[Arg, ...], ...]) -> list[Reply]:
        self.writer.write(b"".join(_encode(args) for args in commands))
        await self.writer.drain()
        # Every reply is read before any error is raised, so the connection stays in step.
        replies = [await _read_reply(self.reader) for _ in commands]
        for args, reply in zip(commands, replies):
            if isinstance(reply, _ErrorReply):
                raise RedisReplyError(f"redis at {self.address} refused {_name(args)}: {reply}")
        return replies

    def close(self) -> None:
        self.writer.close()


class RedisClient:
    """A small pool of Redis connections; ``execute`` runs one command and returns its reply."""

    def __init__(
        self,
        address: RedisAddress,
        *,
        timeout: float = DEFAULT_REDIS_TIMEOUT,
        pool_size: int = DEFAULT_POOL_SIZE,
    ) -> None:
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout!r}")
        if pool_size < 1:
            raise ValueError(f"pool_size must be at least 1, got {pool_size!r}")
        self.address = address
        self.timeout = timeout
        self._slots = asyncio.Semaphore(pool_size)
        self._idle: list[_Connection] = []
        self._closed = False

    async def execute(self, *args: Arg) -> Reply:
        return (await self._run((args,)))[0]

    async def transaction(self, *commands: tuple[Arg, ...]) -> list[Reply]:
        """Run ``commands`` atomically (MULTI/EXEC, sent in one write); return their replies."""
        replies = await self._run((("MULTI",), *commands, ("EXEC",)))
        results = replies[-1]
        if not isinstance(results, list):
            raise StoreError(f"redis at {self.address} aborted a transaction")
        for args, result in zip(commands, results):
            if isinstance(result, _ErrorReply):
                raise RedisReplyError(f"redis at {self.address} refused {_name(args)}: {result}")
        return results

    async def _run(self, commands: tuple[tuple[Arg, ...], ...]) -> list[Reply]:
        if self._closed:
            raise StoreError("the response store is closed")
        try:
            return await asyncio.wait_for(self._execute(commands), self.timeout)
        except asyncio.TimeoutError:
            raise StoreTimeout(
                f"redis at {self.address} did not answer {_names(commands)} within {self.timeout:g}s"
            ) from None

    async def aclose(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
        for conn in idle:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.writer.wait_closed(), self.timeout)

    async def _execute(self, commands: tuple[tuple[Arg, ...], ...]) -> list[Reply]:
        async with self._slots:
            conn = self._reusable() or await self._connect()
            try:
                replies = await conn.commands(commands)
            except RedisReplyError:
                self._release(conn)  # a whole error reply was read: the connection is in step
                raise
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
                conn.close()
                raise StoreError(f"redis at {self.address} failed during {_names(commands)}: {exc!r}") from exc
            except BaseException:
                conn.close()
                raise
            self._release(conn)
            return replies

    def _reusable(self) -> _Connection | None:
        # A server restart or idle-client timeout closes pooled connections while
        # we are not looking; skip those rather than fail the next command on them.
        while self._idle:
            conn = self._idle.pop()
            if not (conn.reader.at_eof() or conn.writer.is_closing()):
                return conn
            conn.close()
        return None

    def _release(self, conn: _Connection) -> None:
        if self._closed:
            conn.close()
        else:
            self._idle.append(conn)

    async def _connect(self) -> _Connection:
        address = self.address
        try:
            reader, writer = await asyncio.open_connection(address.host, address.port)
        except OSError as exc:
            raise StoreError(f"cannot connect to redis at {address}: {exc}") from exc
        conn = _Connection(address, reader, writer)
        try:
            if address.password is not None:
                if address.username:
                    await conn.command(("AUTH", address.username, address.password))
                else:
                    await conn.command(("AUTH", address.password))
            if address.db:
                await conn.command(("SELECT", address.db))
        except BaseException as exc:
            conn.close()
            if isinstance(exc, (OSError, asyncio.IncompleteReadError)):
                raise StoreError(f"redis at {address} closed the connection: {exc!r}") from exc
            raise
        return conn


def _name(args: tuple[Arg, ...]) -> str:
    # Only the command name: arguments may be large values or a password.
    first = args[0] if args else b""
    return first.decode(errors="replace") if isinstance(first, bytes) else str(first)


def _names(commands: tuple[tuple[Arg, ...], ...]) -> str:
    return "+".join(_name(args) for args in commands)


def _encode(args: tuple[Arg, ...]) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        out.append(b"$%d\r\n" % len(data))
        out.append(data)
        out.append(b"\r\n")
    return b"".join(out)


async def _read_reply(reader: asyncio.StreamReader) -> Reply:
    line = await reader.readuntil(b"\r\n")
    kind, rest = line[:1], line[1:-2]
    try:
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            return _ErrorReply(rest.decode(errors="replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            size = int(rest)
            if size < 0:
                return None
            return (await reader.readexactly(size + 2))[:-2]
        if kind == b"*":
            count = int(rest)
            if count < 0:
                return None
            return [await _read_reply(reader) for _ in range(count)]
    except ValueError:
        pass
    raise StoreError(f"redis sent a reply that is not RESP2: {line[:80]!r}")
