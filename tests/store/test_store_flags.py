"""Short-lived flags (background-run leases and cancel requests), on every backend."""

from __future__ import annotations

import asyncio

from store_support import Opener

from compat_asgi.store import Store


def test_flags_are_set_read_replaced_and_expire(opener: Opener) -> None:
    async def scenario(store: Store) -> None:
        assert await store.get_flag("lease:resp_1") is None
        await store.put_flag("lease:resp_1", b"worker-a", ttl=0.3)
        await store.put_flag("cancel:resp_1", b"1", ttl=30)
        assert await store.get_flag("lease:resp_1") == b"worker-a"
        await store.put_flag("lease:resp_1", b"worker-b", ttl=0.3)  # renewal replaces
        assert await store.get_flag("lease:resp_1") == b"worker-b"
        await asyncio.sleep(0.45)
        assert await store.get_flag("lease:resp_1") is None
        assert await store.get_flag("cancel:resp_1") == b"1"

    async def main() -> None:
        store = opener()
        try:
            await scenario(store)
        finally:
            await store.aclose()

    asyncio.run(main())


def test_flags_are_shared_by_two_handles_on_one_store(opener: Opener, backend: str) -> None:
    if backend == "memory":
        return  # one process's memory: nothing to share

    async def main() -> None:
        first, second = opener(), opener()
        try:
            await first.put_flag("cancel:resp_9", b"1", ttl=30)
            assert await second.get_flag("cancel:resp_9") == b"1"
        finally:
            await first.aclose()
            await second.aclose()

    asyncio.run(main())
