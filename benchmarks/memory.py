"""(4) Memory of the middleware server process (translating over HTTP).

- RSS idle (after a warm-up request) and its peak under the concurrent load
  of benchmark 3;
- one long stream (100,000 events; quick mode 20,000): RSS when the client
  has received 10% of the events and when it has received 99%. Per event the
  translator may keep only what the final object needs (the text), so RSS
  must stay flat between the two;
- RSS after that stream and after a second identical one: a leak would show
  as growth from the first to the second;
- the upstream connections the server still holds once everything finished
  (a pool keeps at most one per concurrent stream; more means they leak);
- one 2 MiB answer (``store: true`` on a memory store), not streamed then
  streamed: how far the server's peak RSS rises above its RSS before the
  request, in copies of the answer, and how much stays (the stored record).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import httpx
import orjson

from benchmarks.common import Config, RSSSampler, http_client, responses_body
from benchmarks.http_proxy import STREAMS, load, servers
from benchmarks.procs import Server, connections_to
from benchmarks.report import Results, Row

TARGET_FLAT = 1.05
MiB = 1 << 20
ANSWER = 2 * MiB
DELTA = 256  # characters per streamed text delta of the big answer
TARGET_COPIES = 3.5  # peak RSS rise per byte of a big answer, non-streamed


async def big_answer_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """A chat upstream whose answer has as many characters as the model name says (``big-2097152``)."""
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    if scope["path"] == "/health":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    request = orjson.loads(body)
    size = int(request["model"].rsplit("-", 1)[1])
    text = ("lorem ipsum dolor sit amet " * (size // 27 + 1))[:size]
    head = {"id": "chatcmpl-big", "created": 1, "model": request["model"]}
    usage = {"prompt_tokens": 1, "completion_tokens": size // 4, "total_tokens": size // 4 + 1}
    if not request.get("stream"):
        choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        payload = orjson.dumps({**head, "object": "chat.completion", "choices": [choice], "usage": usage})
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": payload})
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
    chunk = {**head, "object": "chat.completion.chunk"}
    for start in range(0, size, DELTA):
        choice = {"index": 0, "delta": {"content": text[start : start + DELTA]}, "finish_reason": None}
        data = b"data: " + orjson.dumps({**chunk, "choices": [choice]}) + b"\n\n"
        await send({"type": "http.response.body", "body": data, "more_body": True})
    end = {**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": usage}
    await send({"type": "http.response.body", "body": b"data: " + orjson.dumps(end) + b"\n\ndata: [DONE]\n\n"})


def _big_request(server: Server, size: int, stream: bool) -> int:
    body = orjson.dumps({"model": f"big-{size}", "input": "write a lot", "stream": stream, "store": True})
    received = 0
    with httpx.Client(timeout=60) as client:
        with client.stream(
            "POST", server.url + "/v1/responses", content=body, headers={"content-type": "application/json"}
        ) as response:
            response.raise_for_status()
            for chunk in response.iter_raw():
                received += len(chunk)
    return received


def big_answers(warmups: int, *, fresh: bool) -> dict[bool, tuple[int, int, int]]:
    """Per mode (streamed or not): (RSS before, peak RSS, RSS after) of one big answer.

    ``fresh``: a new middleware (memory store) for each mode, so neither sees
    the other's heap. Otherwise (quick runs) one serves both, the
    non-streamed answer first: its peak is the lower one, so the streamed
    answer's still shows in VmHWM, with one process start less.
    """
    found: dict[bool, tuple[int, int, int]] = {}
    with Server.bench("bigtext") as upstream, contextlib.ExitStack() as stack:
        middleware: Server | None = None
        for stream in (False, True):
            if middleware is None or fresh:
                stack.close()
                middleware = stack.enter_context(
                    Server.bench("middleware", "--upstream", upstream.url + "/v1", "--store", "memory")
                )
            for _ in range(warmups):  # imports, pools, allocator arenas
                _big_request(middleware, 64 << 10, stream)
            before = _settle(middleware)
            _big_request(middleware, ANSWER, stream)
            after = _settle(middleware)
            found[stream] = (before, middleware.rss()[1], after)
    return found


async def _long_stream(server: Server, events: int) -> tuple[int, int]:
    """Stream ``events`` events; RSS of ``server`` at 10% and at 99% of them received."""
    marks = [events // 10, events - events // 100]
    seen: list[int] = []
    count = 0
    async with http_client(1) as client:
        async with client.stream(
            "POST",
            server.url + "/v1/responses",
            content=responses_body(events),
            headers={"content-type": "application/json"},
        ) as response:
            async for chunk in response.aiter_raw():
                count += chunk.count(b"\n\n")
                while marks and count >= marks[0]:
                    marks.pop(0)
                    seen.append(server.rss()[0])
    if len(seen) != 2:
        raise RuntimeError(f"the long stream ended after {count} events")
    return seen[0], seen[1]


def _settle(server: Server) -> int:
    time.sleep(0.3)  # let the server finish the request's cleanup
    return server.rss()[0]


def run(cfg: Config, results: Results) -> None:
    big = cfg.pick(20_000, 100_000)
    events = cfg.pick(200, 1000)
    rounds = cfg.pick(1, 3)
    with servers() as (upstream, middleware):
        asyncio.run(_long_stream(middleware, 1000))  # warm-up
        idle = _settle(middleware)

        async def concurrent() -> None:
            async with http_client() as client:
                for _ in range(rounds):
                    await load(client, middleware.url + "/v1/responses", responses_body(events), "responses")

        with RSSSampler(middleware.rss) as under_load:
            asyncio.run(concurrent())
        held = connections_to(middleware.proc.pid, upstream.port)
        early, late = asyncio.run(_long_stream(middleware, big))
        after_first = _settle(middleware)
        asyncio.run(_long_stream(middleware, big))
        after_second = _settle(middleware)
        peak = middleware.rss()[1]
    k = big // 1000
    flat = late / early
    results.add(
        Row(
            "4a",
            f"memory: RSS at event {k * 99 // 100}k / at event {k // 10}k of one stream",
            flat,
            "x",
            f"<= {TARGET_FLAT:.2f}x",
            flat <= TARGET_FLAT,
            f"{early / MiB:.1f} -> {late / MiB:.1f} MiB over {k * 89 // 100}k events "
            f"({(late - early) / (big * 0.89):.0f} B/event)",
        )
    )
    results.add(
        Row(
            "4b",
            "memory: RSS peak under load / idle",
            under_load.peak / idle,
            "x",
            "info",
            None,
            f"idle {idle / MiB:.1f} MiB, peak under {STREAMS}x{events} load {under_load.peak / MiB:.1f} MiB",
        )
    )
    results.add(
        Row(
            "4c",
            f"memory: RSS after 2nd / after 1st {k}k-event stream",
            after_second / after_first,
            "x",
            "info",
            None,
            f"after 1st {after_first / MiB:.1f} MiB, after 2nd {after_second / MiB:.1f} MiB, VmHWM {peak / MiB:.1f} MiB "
            "(the end of a long stream encodes its full text several times)",
        )
    )
    results.add(
        Row(
            "4d",
            "upstream connections held after load",
            held,
            "conns",
            f"<= {STREAMS}",
            held <= STREAMS,
            f"after {1 + rounds * STREAMS} translated streams, all finished",
        )
    )
    answers = big_answers(cfg.pick(1, 3), fresh=cfg.pick(False, True))
    for row, stream in (("4e", False), ("4f", True)):
        before, peak_big, after = answers[stream]
        copies = (peak_big - before) / ANSWER
        results.add(
            Row(
                row,
                f"memory: peak RSS rise / size of one 2 MiB answer, {'streamed' if stream else 'not streamed'}",
                copies,
                "x",
                "info" if stream else f"<= {TARGET_COPIES:.1f}x",
                None if stream else copies <= TARGET_COPIES,
                f"{before / MiB:.1f} -> peak {peak_big / MiB:.1f} MiB, {after / MiB:.1f} MiB after"
                f" (+{(after - before) / MiB:.1f} MiB held: the stored record"
                + (" without its events, over the 8 MiB recording cap," if stream else "")
                + " and what the allocator keeps)",
            )
        )
