"""``compat_asgi.asgi.Responder``: one body send at a time between the handler
and the keepalive ticker, in the order they asked, whatever is cancelled."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from compat_asgi.asgi import Responder


class GatedSend:
    """An ASGI send that records each message and, while ``gate`` is clear,
    holds the caller (a slow client: the server waits for the socket)."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.gate.set()
        self.sent: list[bytes] = []
        self.inside = 0
        self.most_inside = 0

    async def __call__(self, message: dict[str, Any]) -> None:
        self.inside += 1
        self.most_inside = max(self.most_inside, self.inside)
        try:
            await self.gate.wait()
            self.sent.append(message["body"])
        finally:
            self.inside -= 1


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_sends_wait_for_each_other_and_keep_their_order() -> None:
    async def scenario() -> GatedSend:
        send = GatedSend()
        responder = Responder(send)
        send.gate.clear()
        tasks = [asyncio.create_task(responder.body(b"%d" % n)) for n in range(4)]
        await settle()
        assert send.inside == 1  # the others wait for their turn, not inside send
        send.gate.set()
        await asyncio.gather(*tasks)
        await responder.body(b"last", more_body=False)
        assert responder.finished
        return send

    send = asyncio.run(scenario())
    assert send.sent == [b"0", b"1", b"2", b"3", b"last"] and send.most_inside == 1


@pytest.mark.parametrize("when", ["sending", "waiting", "handed the turn"])
def test_a_cancelled_sender_never_blocks_the_others(when: str) -> None:
    async def scenario() -> list[bytes]:
        send = GatedSend()
        responder = Responder(send)
        send.gate.clear()
        tasks = [asyncio.create_task(responder.body(b"%d" % n)) for n in range(3)]
        await settle()
        if when == "sending":
            tasks[0].cancel()
        elif when == "waiting":
            tasks[1].cancel()
        else:
            send.gate.set()
            while not send.sent:  # the first send ended and handed the turn to the second ...
                await asyncio.sleep(0)
            tasks[1].cancel()  # ... which is cancelled before it could run
        send.gate.set()
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 2)  # nobody left waiting
        assert [task.cancelled() for task in tasks] == [when == "sending", when != "sending", False]
        await asyncio.wait_for(responder.body(b"after"), 1)  # the turn was not lost
        return send.sent

    sent = asyncio.run(scenario())
    expected = {"sending": [b"1", b"2"], "waiting": [b"0", b"2"], "handed the turn": [b"0", b"2"]}[when]
    assert sent == [*expected, b"after"]
