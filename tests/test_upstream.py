"""AppUpstream's hand-over from the wrapped app to the reader: batched,
incremental, bounded, and failures after the data before them."""

from __future__ import annotations

import asyncio

import pytest
from support import TRANSPORTS, call, serve

from compat_asgi import CompatMiddleware
from compat_asgi.demo import DemoChatApp
from compat_asgi.errors import UpstreamError
from compat_asgi.types import Receive, Scope, Send
from compat_asgi.upstream import _APP_QUEUE_SIZE, AppUpstream


def test_a_fast_app_is_paused_at_the_bound_and_its_sends_arrive_in_batches() -> None:
    sent = 0

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        nonlocal sent
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for i in range(1000):
            await send({"type": "http.response.body", "body": b"%d," % i, "more_body": True})
            sent += 1
        await send({"type": "http.response.body", "body": b"end"})

    async def scenario() -> tuple[int, list[bytes]]:
        response = await AppUpstream(app).request("POST", "/v1/x", [], b"")
        for _ in range(50):  # the app runs freely while nobody reads
            await asyncio.sleep(0)
        paused_at = sent
        chunks = [chunk async for chunk in response.chunks()]
        await response.aclose()
        return paused_at, chunks

    paused_at, chunks = asyncio.run(scenario())
    assert paused_at <= _APP_QUEUE_SIZE
    assert b"".join(chunks) == b"".join(b"%d," % i for i in range(1000)) + b"end"
    assert len(chunks) < 100  # batches, not one chunk per message


def test_a_message_sent_alone_arrives_alone_before_the_next_is_sent() -> None:
    gate = asyncio.Event

    async def scenario() -> list[bytes]:
        opened = gate()

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"first", "more_body": True})
            await opened.wait()  # only once the reader has the first piece
            await send({"type": "http.response.body", "body": b"second"})

        response = await AppUpstream(app).request("POST", "/v1/x", [], b"")
        seen = []
        async for chunk in response.chunks():
            seen.append(chunk)
            opened.set()
        await response.aclose()
        return seen

    assert asyncio.run(scenario()) == [b"first", b"second"]


def test_an_app_failing_mid_body_fails_the_reader_after_the_data_before_it() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"kept", "more_body": True})
        raise RuntimeError("boom")

    async def scenario() -> list[bytes]:
        response = await AppUpstream(app).request("POST", "/v1/x", [], b"")
        seen = []
        with pytest.raises(UpstreamError, match="boom"):
            async for chunk in response.chunks():
                seen.append(chunk)
        await response.aclose()
        return seen

    assert asyncio.run(scenario()) == [b"kept"]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_an_app_driven_by_one_event_loop_after_another_keeps_working(transport: str) -> None:
    """As a test suite does with ``asyncio.run`` per test: the upstream pool of
    the first loop is not reused on the next (its connections belong to it)."""
    with serve(DemoChatApp()) as upstream:
        app = CompatMiddleware(upstream=upstream + "/v1", upstream_http_client=transport)  # type: ignore[arg-type]
        for _ in range(3):
            answer = asyncio.run(call(app, "POST", "/v1/responses", {"model": "demo", "input": "hi"}))
            assert answer.status == 200 and answer.json()["status"] == "completed"
            streamed = asyncio.run(call(app, "POST", "/v1/responses", {"model": "demo", "input": "hi", "stream": True}))
            assert streamed.status == 200 and b"response.completed" in streamed.body
