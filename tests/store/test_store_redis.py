"""Redis specifics: key layout, TTL on keys, AUTH/SELECT, and failing fast instead of hanging."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator

import pytest
from store_support import free_port, redis_command, redis_server, redis_server_binary

from compat_asgi.store import RedisStore, StoredResponse, StoreError, StoreTimeout, open_store
from compat_asgi.store.resp import RedisAddress, RedisClient, RedisReplyError

FAST = 0.5  # client timeout for the failure tests: they must end about this quickly


def record(rid: str = "resp_1", owner: str | None = "owner-a") -> StoredResponse:
    return StoredResponse(
        id=rid,
        owner=owner,
        response={"id": rid, "object": "response", "output": []},
        input_items=[],
        events=b"data: x\n\n",
        created_at=1_700_000_000,
    )


def test_keys_are_namespaced_and_expire(redis_url: str, redis_port: int) -> None:
    async def scenario() -> None:
        store = open_store(redis_url, ttl=600)
        await store.save(record())
        await store.append_conversation("conv_1", [{"id": "a"}], owner="owner-a")
        await store.aclose()

    asyncio.run(scenario())
    keys = redis_command(redis_port, "KEYS", "*")
    assert b"compat_asgi:resp:resp_1" in keys and b"compat_asgi:conv:conv_1" in keys
    assert keys.startswith(b"*3\r\n") and b"compat_asgi:convmeta:conv_1" in keys
    for key in ("compat_asgi:resp:resp_1", "compat_asgi:conv:conv_1", "compat_asgi:convmeta:conv_1"):
        ttl = int(redis_command(redis_port, "TTL", key)[1:].strip())
        assert 590 < ttl <= 600


def test_no_ttl_means_no_expiry(redis_url: str, redis_port: int) -> None:
    async def scenario() -> None:
        store = open_store(redis_url, ttl=None)
        await store.save(record())
        await store.append_conversation("conv_1", [{"id": "a"}], owner=None)
        await store.aclose()

    asyncio.run(scenario())
    assert redis_command(redis_port, "TTL", "compat_asgi:resp:resp_1") == b":-1\r\n"
    assert redis_command(redis_port, "TTL", "compat_asgi:conv:conv_1") == b":-1\r\n"


def test_database_number_is_selected(redis_port: int, redis_url: str) -> None:
    async def scenario() -> tuple[object, object]:
        zero, three = open_store(redis_url), open_store(f"redis://127.0.0.1:{redis_port}/3")
        try:
            await three.save(record())
            return await zero.get("resp_1", owner="owner-a"), await three.get("resp_1", owner="owner-a")
        finally:
            await zero.aclose()
            await three.aclose()

    assert asyncio.run(scenario()) == (None, record())


@pytest.fixture(scope="module")
def password_port() -> Iterator[int]:
    with redis_server("--requirepass", "s3cret") as port:
        yield port


def test_password_in_url_authenticates(password_port: int) -> None:
    async def scenario() -> object:
        store = open_store(f"redis://:s3cret@127.0.0.1:{password_port}/1")
        try:
            await store.save(record())
            return await store.get("resp_1", owner="owner-a")
        finally:
            await store.aclose()

    assert asyncio.run(scenario()) == record()


@pytest.mark.parametrize("auth", ["", ":wrong@", "default:wrong@"])
def test_bad_or_missing_password_is_a_clear_error(password_port: int, auth: str) -> None:
    async def scenario() -> tuple[str, bool]:
        store = open_store(f"redis://{auth}127.0.0.1:{password_port}/0")
        try:
            with pytest.raises(StoreError) as info:
                await store.save(record())
            return str(info.value), await store.ping()
        finally:
            await store.aclose()

    message, alive = asyncio.run(scenario())
    assert f"127.0.0.1:{password_port}" in message
    assert "NOAUTH" in message or "WRONGPASS" in message
    assert "wrong" not in message.replace("WRONGPASS", "")
    assert alive is False


def test_nothing_listening_fails_fast() -> None:
    port = free_port()  # bound and released: nothing listens there now

    async def scenario() -> tuple[str, bool, float]:
        store = RedisStore(f"redis://127.0.0.1:{port}/0", timeout=FAST)
        started = time.monotonic()
        try:
            with pytest.raises(StoreError) as info:
                await store.get("resp_1", owner=None)
            alive = await store.ping()
            return str(info.value), alive, time.monotonic() - started
        finally:
            await store.aclose()

    message, alive, elapsed = asyncio.run(scenario())
    assert message.startswith(f"cannot connect to redis at redis://127.0.0.1:{port}/0")
    assert alive is False
    assert elapsed < 2 * FAST + 1


def test_silent_server_times_out() -> None:
    # The kernel completes the handshake for a listening socket nobody accepts
    # from: a server that connects but never answers.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]

        async def scenario() -> tuple[str, bool, float]:
            store = RedisStore(f"redis://127.0.0.1:{port}/0", timeout=FAST)
            started = time.monotonic()
            try:
                with pytest.raises(StoreTimeout) as info:
                    await store.save(record())
                alive = await store.ping()
                return str(info.value), alive, time.monotonic() - started
            finally:
                await store.aclose()

        message, alive, elapsed = asyncio.run(scenario())
    assert message == f"redis at redis://127.0.0.1:{port}/0 did not answer SET within {FAST:g}s"
    assert alive is False
    assert elapsed < 2 * FAST + 1


def test_garbage_reply_is_an_error_not_a_hang() -> None:
    async def scenario() -> str:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read(100)
            writer.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        store = RedisStore(f"redis://127.0.0.1:{port}/0", timeout=FAST)
        try:
            with pytest.raises(StoreError) as info:
                await store.get("resp_1", owner=None)
            return str(info.value)
        finally:
            await store.aclose()
            server.close()
            await server.wait_closed()

    assert "not RESP2" in asyncio.run(scenario())


def test_error_reply_keeps_the_connection_usable(redis_port: int) -> None:
    async def scenario() -> object:
        client = RedisClient(RedisAddress.from_url(f"redis://127.0.0.1:{redis_port}"), pool_size=1)
        try:
            with pytest.raises(RedisReplyError, match="NOSUCHCOMMAND|unknown command"):
                await client.execute("NOSUCHCOMMAND")
            return await client.execute("PING")
        finally:
            await client.aclose()

    assert asyncio.run(scenario()) == "PONG"


def test_transaction_errors_are_raised_and_the_connection_stays_usable(redis_url: str) -> None:
    async def scenario() -> object:
        client = RedisClient(RedisAddress.from_url(redis_url), pool_size=1)
        try:
            await client.execute("SET", "plain", "x")
            with pytest.raises(RedisReplyError, match="refused RPUSH: WRONGTYPE"):
                await client.transaction(("RPUSH", "plain", "y"), ("EXPIRE", "plain", 10))
            with pytest.raises(RedisReplyError, match="refused NOSUCHCOMMAND"):
                await client.transaction(("NOSUCHCOMMAND",))
            return await client.transaction(("RPUSH", "list", "a", "b"), ("EXPIRE", "list", 10))
        finally:
            await client.aclose()

    assert asyncio.run(scenario()) == [2, 1]


def test_reconnects_after_the_server_drops_connections(redis_url: str, redis_port: int) -> None:
    async def scenario() -> tuple[bool, object]:
        store = open_store(redis_url)
        try:
            await store.save(record())
            # What a server restart or an idle timeout does to pooled connections.
            redis_command(redis_port, "CLIENT", "KILL", "TYPE", "normal")
            await asyncio.sleep(0.1)
            return await store.ping(), await store.get("resp_1", owner="owner-a")
        finally:
            await store.aclose()

    assert asyncio.run(scenario()) == (True, record())


def test_missing_redis_server_skips_locally_and_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "")
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="redis-server is not on PATH"):
        redis_server_binary()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        redis_server_binary()


def test_url_parsing() -> None:
    assert RedisAddress.from_url("redis://localhost") == RedisAddress("localhost", 6379, 0)
    parsed = RedisAddress.from_url("redis://user:p%40ss@db.example:6380/5")
    assert (parsed.host, parsed.port, parsed.db, parsed.username, parsed.password) == (
        "db.example",
        6380,
        5,
        "user",
        "p@ss",
    )
    assert "p@ss" not in repr(parsed) and "p@ss" not in str(parsed)
