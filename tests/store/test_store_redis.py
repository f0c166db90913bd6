"""Redis specifics through redis-py: key layout, TTL on keys, AUTH/SELECT, TLS
certificates, unix sockets, cluster slots, a sentinel failover in the middle of
a ``previous_response_id`` chain, and failing fast instead of hanging."""

from __future__ import annotations

import asyncio
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import openai
import pytest
from redis_modes import Sentinel, TLSFiles, command_on, unix_connector, wait_until
from store_support import free_port, redis_command, redis_server, redis_server_binary
from support import serve
from test_stored import RecordingDemo

from compat_asgi import CompatMiddleware
from compat_asgi.store import (
    RedisStore,
    StoredResponse,
    StoreError,
    StoreTimeout,
    open_store,
)
from compat_asgi.store.redis_url import RedisURL, parse_redis_url

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


def save_and_get(url: str, saved: StoredResponse | None = None) -> StoredResponse | None:
    saved = saved or record()

    async def scenario() -> StoredResponse | None:
        store = open_store(url)
        try:
            await store.save(saved)
            return await store.get(saved.id, owner=saved.owner)
        finally:
            await store.aclose()

    return asyncio.run(scenario())


def test_keys_are_namespaced_and_expire(redis_url: str, redis_port: int) -> None:
    async def scenario() -> None:
        store = open_store(redis_url, ttl=600)
        await store.save(record())
        await store.append_conversation("conv_1", [{"id": "a"}], owner="owner-a")
        await store.aclose()

    asyncio.run(scenario())
    keys = redis_command(redis_port, "KEYS", "*")
    assert b"compat_asgi:resp:resp_1" in keys and b"compat_asgi:conv:{conv_1}" in keys
    assert keys.startswith(b"*3\r\n") and b"compat_asgi:convmeta:{conv_1}" in keys
    for key in ("compat_asgi:resp:resp_1", "compat_asgi:conv:{conv_1}", "compat_asgi:convmeta:{conv_1}"):
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
    assert redis_command(redis_port, "TTL", "compat_asgi:conv:{conv_1}") == b":-1\r\n"


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
        redis_command(port, "AUTH", "s3cret")
        yield port


def test_password_in_url_authenticates(password_port: int) -> None:
    assert save_and_get(f"redis://:s3cret@127.0.0.1:{password_port}/1") == record()


def test_acl_user_in_url_authenticates(password_port: int) -> None:
    with socket.create_connection(("127.0.0.1", password_port)) as sock:
        sock.sendall(
            b"AUTH s3cret\r\nACL SETUSER store-user on >p%40ss ~compat_asgi:* +@all\r\n"
        )
        time.sleep(0.1)
        assert sock.recv(1000).count(b"+OK") == 2
    assert save_and_get(f"redis://store-user:{quote('p%40ss')}@127.0.0.1:{password_port}/0") == record()


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
    assert message.startswith(f"redis at redis://127.0.0.1:{password_port}/0 refused the credentials")
    assert "wrong" not in message
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
    assert elapsed < 4 * FAST + 1


def test_silent_server_times_out() -> None:
    # The kernel completes the handshake for a listening socket nobody accepts
    # from: a server that connects but never answers.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]

        async def scenario() -> tuple[str, bool, float]:
            store = RedisStore(f"redis://127.0.0.1:{port}/0?timeout={FAST}")
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
    assert elapsed < 4 * FAST + 1


def test_garbage_reply_is_an_error_not_a_hang() -> None:
    async def scenario() -> tuple[str, float]:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read(100)
            writer.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        store = RedisStore(f"redis://127.0.0.1:{port}/0", timeout=FAST)
        started = time.monotonic()
        try:
            with pytest.raises(StoreError) as info:
                await store.get("resp_1", owner=None)
            return str(info.value), time.monotonic() - started
        finally:
            await store.aclose()
            server.close()
            await server.wait_closed()

    message, elapsed = asyncio.run(scenario())
    assert "redis://127.0.0.1:" in message
    assert elapsed < 4 * FAST + 1


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


def test_more_callers_than_connections_queue_instead_of_failing(redis_url: str, redis_port: int) -> None:
    async def scenario() -> list[object]:
        store = RedisStore(redis_url + "?max_connections=2")
        try:
            await asyncio.gather(*(store.save(record(f"resp_{n}")) for n in range(40)))
            return list(await asyncio.gather(*(store.get(f"resp_{n}", owner="owner-a") for n in range(40))))
        finally:
            await store.aclose()

    assert asyncio.run(scenario()) == [record(f"resp_{n}") for n in range(40)]
    clients = redis_command(redis_port, "CLIENT", "LIST")
    assert clients.count(b"cmd=") <= 1  # ours are closed; only this probe remains


def test_missing_redis_server_skips_locally_and_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "")
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="redis-server is not on PATH"):
        redis_server_binary()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        redis_server_binary()


def test_missing_redis_extra_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    # What an install without the ``redis`` extra looks like to the import system.
    for name in [m for m in sys.modules if m == "redis" or m.startswith("redis.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "redis", None)
    with pytest.raises(ImportError, match=r"pip install 'compat-asgi\[redis\]'"):
        open_store("redis://127.0.0.1:6379/0")
    # Memory and SQLite never needed it.
    assert isinstance(open_store("memory"), object)


def test_url_forms() -> None:
    assert parse_redis_url("redis://localhost") == RedisURL("single", False, nodes=(("localhost", 6379),))
    parsed = parse_redis_url("redis://user:p%40ss@db.example:6380/5?timeout=2.5&max_connections=8")
    assert (parsed.nodes, parsed.db, parsed.username, parsed.password) == ((("db.example", 6380),), 5, "user", "p@ss")
    assert parsed.float_option("timeout", 1) == 2.5 and parsed.int_option("max_connections") == 8
    assert "p@ss" not in repr(parsed) and "p@ss" not in str(parsed)
    assert str(parsed) == "redis://db.example:6380/5"
    tls = parse_redis_url("rediss://[::1]:6390/1?ssl_ca_certs=%2Fetc%2Fca.pem&ssl_cert_reqs=optional")
    assert (tls.tls, tls.nodes, tls.options["ssl_ca_certs"], str(tls)) == (
        True,
        (("::1", 6390),),
        "/etc/ca.pem",
        "rediss://[::1]:6390/1",
    )
    unix = parse_redis_url("unix://:pw@/run/redis/redis.sock?db=2")
    assert (unix.mode, unix.path, unix.db, unix.password, str(unix)) == (
        "unix",
        "/run/redis/redis.sock",
        2,
        "pw",
        "unix:///run/redis/redis.sock?db=2",
    )
    sentinel = parse_redis_url("redis+sentinel://:pw@s1:26379,s2,s3:26380/mymaster/3?sentinel_password=x")
    assert (sentinel.mode, sentinel.nodes, sentinel.service, sentinel.db) == (
        "sentinel",
        (("s1", 26379), ("s2", 26379), ("s3", 26380)),
        "mymaster",
        3,
    )
    assert str(sentinel) == "redis+sentinel://s1:26379,s2:26379,s3:26380/mymaster/3"
    cluster = parse_redis_url("rediss+cluster://n1:7000,n2:7001")
    assert (cluster.mode, cluster.tls, cluster.nodes) == ("cluster", True, (("n1", 7000), ("n2", 7001)))


# TLS ---------------------------------------------------------------------------------


def test_tls_with_ca_and_client_certificate(redis_tls_url: str) -> None:
    assert redis_tls_url.startswith("rediss://") and "ssl_ca_certs=" in redis_tls_url
    assert save_and_get(redis_tls_url) == record()


@pytest.mark.parametrize(
    "drop, expected",
    [("ssl_ca_certs", "certificate verify failed"), ("ssl_certfile", "")],
)
def test_tls_refuses_an_unknown_server_or_a_missing_client_certificate(
    redis_tls_port: int, tls_files: TLSFiles, drop: str, expected: str
) -> None:
    query = {
        "ssl_ca_certs": str(tls_files.ca),
        "ssl_certfile": str(tls_files.client_cert),
        "ssl_keyfile": str(tls_files.client_key),
    }
    query.pop(drop)
    if drop == "ssl_certfile":
        query.pop("ssl_keyfile")
    url = f"rediss://127.0.0.1:{redis_tls_port}/0?" + "&".join(f"{k}={quote(v)}" for k, v in query.items())

    async def scenario() -> str:
        store = RedisStore(url, timeout=2)
        try:
            with pytest.raises(StoreError) as info:
                await store.save(record())
            return str(info.value)
        finally:
            await store.aclose()

    message = asyncio.run(scenario())
    assert message.startswith(f"cannot connect to redis at rediss://127.0.0.1:{redis_tls_port}/0")
    assert expected in message


def test_plain_client_against_tls_server_fails_fast(redis_tls_port: int) -> None:
    async def scenario() -> float:
        store = RedisStore(f"redis://127.0.0.1:{redis_tls_port}/0", timeout=FAST)
        started = time.monotonic()
        try:
            with pytest.raises(StoreError):
                await store.save(record())
            return time.monotonic() - started
        finally:
            await store.aclose()

    assert asyncio.run(scenario()) < 4 * FAST + 1


# Unix socket ---------------------------------------------------------------------------


def test_unix_socket_with_database_number(redis_unix_path: Path, redis_unix_url: str) -> None:
    assert save_and_get(f"unix://{redis_unix_path}?db=4") == record()
    keys = command_on(unix_connector(redis_unix_path), "SELECT", "4")
    assert keys == b"+OK\r\n"
    assert save_and_get(redis_unix_url, record("resp_0")) == record("resp_0")


# Cluster -------------------------------------------------------------------------------


def test_cluster_spreads_keys_over_the_nodes(redis_cluster_url: str, redis_cluster_ports: list[int]) -> None:
    records = [record(f"resp_{n}") for n in range(60)]

    async def scenario() -> list[object]:
        store = open_store(redis_cluster_url)
        try:
            for r in records:
                await store.save(r)
            for n in range(20):
                await store.append_conversation(f"conv_{n}", [{"id": str(n)}], owner=None)
            return [await store.get(r.id, owner="owner-a") for r in records] + [
                await store.conversation_items(f"conv_{n}", owner=None) for n in range(20)
            ]
        finally:
            await store.aclose()

    assert asyncio.run(scenario()) == records + [[{"id": str(n)}] for n in range(20)]
    # Every node holds some of them: the client followed the slot map, not one node.
    sizes = [int(redis_command(port, "DBSIZE")[1:].strip()) for port in redis_cluster_ports]
    assert sum(sizes) == 60 + 2 * 20 and all(size > 0 for size in sizes)  # a conversation: list + meta hash


# Sentinel ------------------------------------------------------------------------------


def test_sentinel_failover_in_the_middle_of_a_chain_loses_no_turn(redis_sentinel: Sentinel) -> None:
    redis_command(redis_sentinel.primary(), "FLUSHALL")
    before = redis_sentinel.primary()
    backend = RecordingDemo()
    with serve(CompatMiddleware(backend, store=redis_sentinel.url())) as base:
        client = openai.OpenAI(base_url=base + "/v1", api_key="x", max_retries=0, timeout=60)
        ids: list[str] = []
        previous: str | None = None
        failover = threading.Thread(
            target=redis_command, args=(redis_sentinel.port, "SENTINEL", "FAILOVER", redis_sentinel.service)
        )
        deadline = time.monotonic() + 30
        switched_at: int | None = None
        # Turns before, throughout and after the election: until the sentinel has
        # switched primaries, and three more.
        while switched_at is None or len(ids) < switched_at + 3:
            if len(ids) == 3:
                failover.start()
            kwargs = {"previous_response_id": previous} if previous else {}
            created = client.responses.create(model="demo", input=f"turn {len(ids)}", **kwargs)  # type: ignore[arg-type]
            ids.append(created.id)
            previous = created.id
            if switched_at is None and len(ids) > 3 and redis_sentinel.primary() != before:
                switched_at = len(ids)
            assert time.monotonic() < deadline, "the failover did not complete in time"
        turns = len(ids)
        assert switched_at >= 5, "no turn raced the election: the test would prove nothing"
        failover.join()
        wait_until(lambda: redis_sentinel.primary() != before, 30, "the sentinel to switch primaries")
        # Every acknowledged turn is on the new primary, and the chain resolves end to end.
        last = client.responses.create(model="demo", input="which turns?", previous_response_id=previous)
        assert last.status == "completed"
        asked = [m["content"] for m in backend.messages[-1] if m["role"] == "user"]
        assert asked == [f"turn {n}" for n in range(turns)] + ["which turns?"]
        for rid in ids:
            assert client.responses.retrieve(rid).id == rid
        items = client.responses.input_items.list(ids[-1], order="asc")
        assert [i.content[0].text for i in items.data] == [f"turn {turns - 1}"]  # type: ignore[union-attr]
    after = redis_sentinel.primary()
    assert after != before
    keys = redis_command(after, "KEYS", "compat_asgi:resp:*")
    assert all(rid.encode() in keys for rid in ids)
