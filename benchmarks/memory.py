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
  (a pool keeps at most one per concurrent stream; more means they leak).
"""

from __future__ import annotations

import asyncio
import time

from benchmarks.common import Config, RSSSampler, http_client, responses_body
from benchmarks.http_proxy import STREAMS, load, servers
from benchmarks.procs import Server, connections_to
from benchmarks.report import Results, Row

TARGET_FLAT = 1.05
MiB = 1 << 20


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
