"""The Store contract, run unchanged against every backend (memory, SQLite, Redis)."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest
from store_support import Opener

from compat_asgi.store import Store, StoredResponse, StoreError, open_store

T = TypeVar("T")

TTL = 1.0  # Redis expiry has whole-second resolution; nothing shorter is portable


def run(opener: Opener, scenario: Callable[[Store], Awaitable[T]], **limits: Any) -> T:
    async def main() -> T:
        store = opener(**limits)
        try:
            return await scenario(store)
        finally:
            await store.aclose()

    return asyncio.run(main())


def record(rid: str = "resp_1", owner: str | None = "owner-a", *, events: bytes | None = None) -> StoredResponse:
    return StoredResponse(
        id=rid,
        owner=owner,
        response={
            "id": rid,
            "object": "response",
            "status": "completed",
            "output": [{"type": "message", "id": "msg_1", "content": [{"type": "output_text", "text": "héllo ✓ \n\"x\""}]}],
            "usage": {"input_tokens": 3, "output_tokens": 2, "total_tokens": 5},
            "temperature": 0.7,
            "metadata": {},
            "previous_response_id": None,
            "parallel_tool_calls": True,
        },
        input_items=[{"id": "msg_0", "type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}],
        events=events,
        created_at=1_700_000_000,
    )


def item(n: int) -> dict[str, Any]:
    return {"id": f"msg_{n}", "type": "message", "role": "user", "content": [{"type": "input_text", "text": str(n)}]}


def test_save_get_round_trip_is_exact(opener: Opener) -> None:
    saved = record()

    async def scenario(store: Store) -> StoredResponse | None:
        await store.save(saved)
        return await store.get(saved.id, owner=saved.owner)

    assert run(opener, scenario) == saved


def test_events_bytes_round_trip(opener: Opener) -> None:
    # SSE framing, a CRLF, and bytes that are not UTF-8: stored verbatim.
    events = b'event: response.created\ndata: {"type":"response.created"}\n\n\r\n\x00\xff\xfe'
    streamed, empty, unstreamed = record("resp_s", events=events), record("resp_e", events=b""), record("resp_n")

    async def scenario(store: Store) -> list[StoredResponse | None]:
        for r in (streamed, empty, unstreamed):
            await store.save(r)
        return [await store.get(r.id, owner="owner-a") for r in (streamed, empty, unstreamed)]

    got = run(opener, scenario)
    assert got == [streamed, empty, unstreamed]
    assert got[0] is not None and got[0].events == events
    assert got[1] is not None and got[1].events == b""
    assert got[2] is not None and got[2].events is None


def test_large_values_round_trip(opener: Opener) -> None:
    events = b"".join(b"event: response.output_text.delta\ndata: {\"delta\":\"%d\"}\n\n" % n for n in range(60_000))
    big = StoredResponse(
        id="resp_big",
        owner=None,
        response={"id": "resp_big", "output": [{"text": "x" * (1 << 20)}]},
        input_items=[item(n) for n in range(2_000)],
        events=events,
        created_at=1,
    )

    async def scenario(store: Store) -> StoredResponse | None:
        await store.save(big)
        return await store.get("resp_big", owner=None)

    assert len(events) > 2 << 20
    assert run(opener, scenario) == big


def test_missing_is_none(opener: Opener) -> None:
    async def scenario(store: Store) -> tuple[Any, ...]:
        return (
            await store.get("resp_missing", owner=None),
            await store.get("resp_missing", owner="owner-a"),
            await store.delete("resp_missing", owner=None),
            await store.conversation_items("conv_missing", owner=None),
        )

    assert run(opener, scenario) == (None, None, False, None)


def test_owner_isolation(opener: Opener) -> None:
    mine, anonymous = record("resp_a", "owner-a"), record("resp_n", None)

    async def scenario(store: Store) -> dict[str, Any]:
        await store.save(mine)
        await store.save(anonymous)
        return {
            "other_get": await store.get("resp_a", owner="owner-b"),
            "none_get": await store.get("resp_a", owner=None),
            "keyed_get_anonymous": await store.get("resp_n", owner="owner-a"),
            "other_delete": await store.delete("resp_a", owner="owner-b"),
            "none_delete": await store.delete("resp_a", owner=None),
            "still_mine": await store.get("resp_a", owner="owner-a"),
            "anonymous": await store.get("resp_n", owner=None),
        }

    got = run(opener, scenario)
    assert got == {
        "other_get": None,
        "none_get": None,
        "keyed_get_anonymous": None,
        "other_delete": False,
        "none_delete": False,
        "still_mine": mine,
        "anonymous": anonymous,
    }


def test_delete(opener: Opener) -> None:
    async def scenario(store: Store) -> tuple[Any, ...]:
        await store.save(record())
        first = await store.delete("resp_1", owner="owner-a")
        return first, await store.get("resp_1", owner="owner-a"), await store.delete("resp_1", owner="owner-a")

    assert run(opener, scenario) == (True, None, False)


def test_save_replaces_same_id(opener: Opener) -> None:
    first = record()
    second = StoredResponse(**{**{f: getattr(first, f) for f in first.__slots__}, "response": {"id": "resp_1", "v": 2}})

    async def scenario(store: Store) -> StoredResponse | None:
        await store.save(first)
        await store.save(second)
        return await store.get("resp_1", owner="owner-a")

    assert run(opener, scenario) == second


def test_stored_values_are_not_the_callers_objects(opener: Opener) -> None:
    saved = record()
    pristine = copy.deepcopy(saved)

    async def scenario(store: Store) -> StoredResponse | None:
        await store.save(saved)
        saved.response["status"] = "mutated after save"
        saved.input_items.append({"id": "late"})
        got = await store.get("resp_1", owner="owner-a")
        assert got is not None
        got.response["status"] = "mutated after get"
        return await store.get("resp_1", owner="owner-a")

    assert run(opener, scenario) == pristine


def test_ttl_expiry(opener: Opener) -> None:
    async def scenario(store: Store) -> tuple[Any, ...]:
        await store.save(record())
        await store.append_conversation("conv_1", [item(1)], owner="owner-a")
        fresh = (await store.get("resp_1", owner="owner-a"), await store.conversation_items("conv_1", owner="owner-a"))
        await asyncio.sleep(TTL + 0.3)
        return (
            fresh,
            await store.get("resp_1", owner="owner-a"),
            await store.delete("resp_1", owner="owner-a"),
            await store.conversation_items("conv_1", owner="owner-a"),
        )

    fresh, expired, deleted, conversation = run(opener, scenario, ttl=TTL)
    assert fresh == (record(), [item(1)])
    assert (expired, deleted, conversation) == (None, False, None)


def test_conversation_append_after_expiry_starts_afresh(opener: Opener) -> None:
    async def scenario(store: Store) -> list[dict[str, Any]] | None:
        await store.append_conversation("conv_1", [item(1)], owner="owner-a")
        await asyncio.sleep(TTL + 0.3)
        await store.append_conversation("conv_1", [item(2)], owner="owner-a")
        return await store.conversation_items("conv_1", owner="owner-a")

    assert run(opener, scenario, ttl=TTL) == [item(2)]


def test_no_ttl_keeps_entries(opener: Opener) -> None:
    async def scenario(store: Store) -> StoredResponse | None:
        await store.save(record())
        return await store.get("resp_1", owner="owner-a")

    assert run(opener, scenario, ttl=None) == record()


def test_lru_bound(opener: Opener, backend: str) -> None:
    if not backend.startswith(("memory", "sqlite")):
        pytest.skip("Redis leaves the entry bound to the server's maxmemory policy (documented)")

    async def scenario(store: Store) -> dict[str, bool]:
        for n in (1, 2, 3):
            await store.save(record(f"resp_{n}"))
        await store.get("resp_1", owner="owner-a")  # now resp_2 is the least recently used
        await store.save(record("resp_4"))
        await store.save(record("resp_5"))  # and then resp_3
        return {f"resp_{n}": await store.get(f"resp_{n}", owner="owner-a") is not None for n in range(1, 6)}

    assert run(opener, scenario, max_entries=3) == {
        "resp_1": True,
        "resp_2": False,
        "resp_3": False,
        "resp_4": True,
        "resp_5": True,
    }


def test_lru_bound_conversations(opener: Opener, backend: str) -> None:
    if not backend.startswith(("memory", "sqlite")):
        pytest.skip("Redis leaves the entry bound to the server's maxmemory policy (documented)")

    async def scenario(store: Store) -> list[bool]:
        await store.append_conversation("conv_1", [item(1)], owner="owner-a")
        await store.append_conversation("conv_2", [item(2)], owner="owner-a")
        await store.conversation_items("conv_1", owner="owner-a")
        await store.append_conversation("conv_3", [item(3)], owner="owner-a")
        return [await store.conversation_items(f"conv_{n}", owner="owner-a") is not None for n in (1, 2, 3)]

    assert run(opener, scenario, max_entries=2) == [True, False, True]


def test_conversations_append_in_order(opener: Opener) -> None:
    async def scenario(store: Store) -> tuple[Any, ...]:
        await store.append_conversation("conv_1", [item(1), item(2)], owner="owner-a")
        await store.append_conversation("conv_1", [item(3)], owner="owner-a")
        await store.append_conversation("conv_1", [], owner="owner-a")
        await store.append_conversation("conv_1", [item(4), item(5)], owner="owner-a")
        await store.append_conversation("conv_empty", [], owner="owner-a")
        return (
            await store.conversation_items("conv_1", owner="owner-a"),
            await store.conversation_items("conv_empty", owner="owner-a"),
        )

    assert run(opener, scenario) == ([item(n) for n in range(1, 6)], [])


def test_conversations_isolated_by_owner(opener: Opener) -> None:
    async def scenario(store: Store) -> tuple[Any, ...]:
        await store.append_conversation("conv_1", [item(1)], owner="owner-a")
        before = (
            await store.conversation_items("conv_1", owner="owner-b"),
            await store.conversation_items("conv_1", owner=None),
        )
        # The same id chosen by another owner is that owner's own conversation.
        await store.append_conversation("conv_1", [item(2)], owner="owner-b")
        await store.append_conversation("conv_1", [], owner=None)
        return (
            before,
            await store.conversation_items("conv_1", owner="owner-a"),
            await store.conversation_items("conv_1", owner="owner-b"),
            await store.conversation_items("conv_1", owner=None),
        )

    assert run(opener, scenario) == ((None, None), [item(1)], [item(2)], [])


def test_concurrent_saves_and_gets(opener: Opener) -> None:
    records = [record(f"resp_{n}", f"owner-{n % 3}", events=b"data: %d\n\n" % n) for n in range(50)]

    async def scenario(store: Store) -> tuple[list[Any], list[Any], list[Any]]:
        await asyncio.gather(*(store.save(r) for r in records))
        got = await asyncio.gather(*(store.get(r.id, owner=r.owner) for r in records))
        # Reads and writes interleaved, with conversations in the mix.
        mixed = await asyncio.gather(
            *(store.get(r.id, owner=r.owner) for r in records),
            *(store.save(r) for r in records),
            *(store.append_conversation("conv_shared", [item(n)], owner="owner-a") for n in range(50)),
        )
        items = await store.conversation_items("conv_shared", owner="owner-a")
        return list(got), list(mixed[:50]), items or []

    got, mixed, items = run(opener, scenario)
    assert got == records
    assert mixed == records
    assert sorted(i["id"] for i in items) == sorted(item(n)["id"] for n in range(50))


def test_ping_and_close(opener: Opener) -> None:
    async def scenario() -> tuple[bool, bool]:
        store = opener()
        alive = await store.ping()
        await store.aclose()
        dead = await store.ping()
        with pytest.raises(StoreError, match="closed"):
            await store.save(record())
        with pytest.raises(StoreError, match="closed"):
            await store.get("resp_1", owner=None)
        await store.aclose()  # closing twice is harmless
        return alive, dead

    assert asyncio.run(scenario()) == (True, False)


@pytest.mark.parametrize(
    "url",
    [
        "",
        "postgres://localhost/db",
        "sqlite://relative.db",
        "sqlite:///",
        "sqlite:///dir/",
        "sqlite:///a.db?mode=ro",
        "memory://host",
        "memory://?max_bytes=lots",
        "memory://?max_bytes=0",
        "memory://?max_entries=5",
        "redis://localhost:notaport/0",
        "redis://localhost:6379/zero",
        "redis://localhost:6379/0?nosuch=1",
        "redis://localhost:6379/0?timeout=0",
        "redis://localhost:6379/0?timeout=1&timeout=2",
        "redis://localhost:6379/0?ssl_ca_certs=ca.pem",
        "rediss://localhost:6379/0?ssl_cert_reqs=maybe",
        "redis://a:6379,b:6379/0",
        "redis+sentinel://localhost:26379",
        "redis+sentinel://localhost:26379/mymaster/0/1",
        "redis+cluster://a:7000,b:7000/3",
        "unix://relative.sock",
        "unix:///run/redis.sock?db=x",
        "redis://localhost:6379/0#fragment",
    ],
)
def test_open_store_rejects_unknown_urls(url: str) -> None:
    with pytest.raises(ValueError, match="URL"):
        open_store(url)


def test_open_store_never_echoes_a_password() -> None:
    for url in (
        "rediss://:s3cret@localhost:6379/0?nosuch=1",
        "redis://user:s3cret@a:1,b:2/0",
        "redis+sentinel://:s3cret@h:26379/svc?sentinel_password=s3cret&bad=1",
        "unix://user:s3cret@relative.sock",
    ):
        with pytest.raises(ValueError) as info:
            open_store(url)
        assert "s3cret" not in str(info.value)
    with pytest.raises(ValueError) as info:
        open_store("postgres://user:s3cret@localhost/db")
    assert "s3cret" not in str(info.value)


@pytest.mark.parametrize("limits", [{"max_entries": 0}, {"max_entries": -1}, {"ttl": 0}, {"ttl": -5.0}])
def test_open_store_rejects_bad_limits(limits: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        open_store("memory", **limits)
