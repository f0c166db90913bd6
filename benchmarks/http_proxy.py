"""(3) Over HTTP: the upstream as its own uvicorn process, the middleware in a second one.

Three ways to the same stream, all on 127.0.0.1, read by an httpx AsyncClient
as raw bytes (and once more by a bare-socket client, see below):

- direct:      client -> upstream ``/v1/chat/completions``
- passthrough: client -> middleware ``/v1/chat/completions`` -> upstream (proxied as is)
- translating: client -> middleware ``/v1/responses`` -> upstream (chat -> Responses)

Throughput: 16 concurrent streams of N events, rounds interleaved, best
round of each (noise only ever adds time). httpx parses every HTTP chunk,
and servers send one chunk per event, so reading a direct stream costs the
client more than producing it costs the upstream: with httpx the direct
baseline is client-bound (the CPU shares printed show it). The bare-socket
client (just ``recv``) takes the client out of the picture.

Time to first byte (request sent to first body byte read): sequential short
streams, interleaved, each started after a short idle gap, p50 of each;
"added" is the difference to direct.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import pstats
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from benchmarks.chatstream import MIN_EVENTS
from benchmarks.common import (
    Config,
    chat_body,
    http_client,
    http_stream,
    percentile,
    raw_stream,
    responses_body,
)
from benchmarks.procs import Server
from benchmarks.report import Results, Row

TARGET_DIRECT = 0.6
TARGET_PASSTHROUGH = 0.95
TARGET_TTFB_MS = 0.5
STREAMS = 16


# Each phase gets a fresh middleware process and sends it fewer translated
# streams than this: a regression of the connection leak described in
# RESULTS.md (one pooled upstream connection lost per translated stream)
# would otherwise hang the run once the pool's 256 are gone, instead of
# showing up in row 4d.
MAX_TRANSLATED_PER_SERVER = 220
REQUEST_TIMEOUT = 20.0
IDLE_GAP = 0.005  # seconds between time-to-first-byte samples


def middleware_for(upstream: Server, *args: str) -> Server:
    return Server.bench("middleware", "--upstream", upstream.url + "/v1", *args)


@contextlib.contextmanager
def servers(*middleware_args: str) -> Iterator[tuple[Server, Server]]:
    with Server.bench("upstream") as upstream:
        with middleware_for(upstream, *middleware_args) as middleware:
            yield upstream, middleware


def targets(upstream: Server, middleware: Server, events: int) -> dict[str, tuple[str, bytes, str]]:
    return {
        "direct": (upstream.url + "/v1/chat/completions", chat_body(events), "chat"),
        "passthrough": (middleware.url + "/v1/chat/completions", chat_body(events), "chat"),
        "translating": (middleware.url + "/v1/responses", responses_body(events), "responses"),
    }


async def load(
    client: httpx.AsyncClient | None, url: str, body: bytes, kind: str, streams: int = STREAMS
) -> float:
    """Seconds for ``streams`` concurrent streams to complete (``client=None``: bare sockets)."""
    start = time.perf_counter()
    if client is None:
        runs = [raw_stream(url, body, kind) for _ in range(streams)]
    else:
        runs = [http_stream(client, url, body, kind) for _ in range(streams)]
    await asyncio.wait_for(asyncio.gather(*runs), 6 * REQUEST_TIMEOUT)
    return time.perf_counter() - start


@dataclass
class Throughput:
    seconds: dict[str, float] = field(default_factory=dict)  # best round per way
    cpu: dict[str, dict[str, float]] = field(
        default_factory=dict
    )  # way -> process -> CPU share of its rounds


async def _throughput(
    upstream: Server, middleware: Server, events: int, rounds: int, raw: bool
) -> Throughput:
    """Each way's best round, and the CPU share each process used during its rounds."""
    ways = targets(upstream, middleware, events)
    out = Throughput()
    used: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    async with contextlib.AsyncExitStack() as stack:
        client = None if raw else await stack.enter_async_context(http_client())
        for url, body, kind in ways.values():  # warm-up: connections, pools, first imports
            await load(client, url, body, kind)
        for _ in range(rounds):
            for name, (url, body, kind) in ways.items():
                before = (time.process_time(), upstream.cpu(), middleware.cpu())
                seconds = await load(client, url, body, kind)
                after = (time.process_time(), upstream.cpu(), middleware.cpu())
                for process, a, b in zip(("client", "upstream", "middleware"), before, after):
                    used[name][process] += b - a
                used[name]["wall"] += seconds
                out.seconds[name] = min(out.seconds.get(name, seconds), seconds)
    out.cpu = {
        name: {p: v / shares["wall"] for p, v in shares.items() if p != "wall"}
        for name, shares in used.items()
    }
    return out


async def _ttfb(upstream: Server, middleware: Server, samples: int) -> dict[str, float]:
    ways = targets(upstream, middleware, MIN_EVENTS)
    seen: dict[str, list[float]] = defaultdict(list)
    async with http_client() as client:
        for url, body, kind in ways.values():
            for _ in range(3):
                await asyncio.wait_for(http_stream(client, url, body, kind), REQUEST_TIMEOUT)
        deadline = time.monotonic() + 60
        for _ in range(samples):
            for name, (url, body, kind) in ways.items():
                # Start each request on idle servers: latency, not leftovers of the last one.
                await asyncio.sleep(IDLE_GAP)
                first, _ = await asyncio.wait_for(http_stream(client, url, body, kind), REQUEST_TIMEOUT)
                seen[name].append(first * 1000)
            if time.monotonic() > deadline:
                break
    return {name: percentile(values, 50) for name, values in seen.items()}


def _cpu(t: Throughput) -> str:
    return "CPU " + "; ".join(
        f"{way}: " + " ".join(f"{p} {share * 100:.0f}%" for p, share in shares.items() if share >= 0.005)
        for way, shares in t.cpu.items()
    )


def run(cfg: Config, results: Results) -> None:
    events = cfg.pick(200, 1000)
    rounds = cfg.pick(2, 7)
    samples = cfg.pick(20, 200)
    assert (rounds + 1) * STREAMS < MAX_TRANSLATED_PER_SERVER and samples + 3 < MAX_TRANSLATED_PER_SERVER
    with Server.bench("upstream") as upstream:
        with middleware_for(upstream) as middleware:
            main = asyncio.run(_throughput(upstream, middleware, events, rounds, raw=False))
        with middleware_for(upstream) as middleware:
            bare = asyncio.run(_throughput(upstream, middleware, events, rounds, raw=True))
        with middleware_for(upstream) as middleware:
            ttfb = asyncio.run(_ttfb(upstream, middleware, samples))
    total = STREAMS * events
    rate = {name: total / seconds for name, seconds in main.seconds.items()}
    bare_rate = {name: total / seconds for name, seconds in bare.seconds.items()}
    vs_direct = rate["translating"] / rate["direct"]
    vs_passthrough = rate["translating"] / rate["passthrough"]

    def absolute(rates: dict[str, float]) -> str:
        return (
            ", ".join(f"{name} {value / 1000:.0f}k" for name, value in rates.items())
            + f" ev/s ({STREAMS}x{events})"
        )

    per_event = {
        way: main.cpu[way]["middleware"] * main.seconds[way] / total * 1e6
        for way in ("passthrough", "translating")
    }
    results.add(
        Row(
            "3a",
            "http: translating / direct, throughput",
            vs_direct,
            "x",
            f">= {TARGET_DIRECT:.1f}x",
            vs_direct >= TARGET_DIRECT,
            absolute(rate),
        )
    )
    results.add(
        Row(
            "3b",
            "http: translating / passthrough, throughput",
            vs_passthrough,
            "x",
            f">= {TARGET_PASSTHROUGH:.2f}x",
            vs_passthrough >= TARGET_PASSTHROUGH,
            f"middleware CPU per event: passthrough {per_event['passthrough']:.1f} us, "
            f"translating {per_event['translating']:.1f} us",
        )
    )
    results.add(
        Row(
            "3c",
            "http: passthrough / direct, throughput",
            rate["passthrough"] / rate["direct"],
            "x",
            "info",
            None,
            _cpu(main),
        )
    )
    results.add(
        Row(
            "3d",
            "http, bare-socket client: translating / direct",
            bare_rate["translating"] / bare_rate["direct"],
            "x",
            "info",
            None,
            absolute(bare_rate),
        )
    )
    results.add(
        Row(
            "3e",
            "http, bare-socket client: translating / passthrough",
            bare_rate["translating"] / bare_rate["passthrough"],
            "x",
            "info",
            None,
            _cpu(bare),
        )
    )
    added = ttfb["translating"] - ttfb["direct"]
    results.add(
        Row(
            "3f",
            "http: time to first byte added (p50)",
            added,
            "ms",
            f"<= {TARGET_TTFB_MS} ms",
            added <= TARGET_TTFB_MS,
            "p50 " + ", ".join(f"{name} {value:.2f}" for name, value in ttfb.items()) + " ms",
        )
    )


# -- profiling -------------------------------------------------------------------

_IDLE = "epoll (waiting: not counted)"
_GROUPS = (
    ("compat_asgi/core/", "compat_asgi core (sse, streams)"),
    ("compat_asgi/", "compat_asgi shell (asgi, endpoints, upstream)"),
    ("/h11/", "h11 (HTTP/1.1 parsing, both sides)"),
    ("/httpcore/", "httpcore (upstream connection)"),
    ("/httpx/", "httpx (client API)"),
    ("/uvicorn/", "uvicorn (server protocol)"),
    ("/asyncio/", "asyncio (event loop, transports)"),
    ("/anyio/", "anyio"),
    ("method 'send' of '_socket", "socket send (syscalls)"),
    ("method 'recv' of '_socket", "socket recv (syscalls)"),
    ("method 'poll' of 'select.epoll'", _IDLE),
    ("orjson", "orjson"),
)


def _group(filename: str, name: str) -> str:
    where = filename if filename != "~" else name
    for needle, label in _GROUPS:
        if needle in where:
            return label
    return "other (builtins, stdlib)"


def profile(cfg: Config, way: str = "translating", *, latency: bool = False) -> str:
    """Run the middleware server under cProfile with ``way`` load; return a report.

    ``latency``: sequential short streams (where time to first byte goes)
    instead of concurrent long ones (where throughput goes).
    """
    events = MIN_EVENTS if latency else cfg.pick(200, 1000)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "middleware.prof"
        with servers("--profile", str(path)) as (upstream, middleware):
            url, body, kind = targets(upstream, middleware, events)[way]

            async def drive() -> None:
                async with http_client() as client:
                    if latency:
                        for _ in range(cfg.pick(20, 200)):
                            await http_stream(client, url, body, kind)
                    else:
                        for _ in range(cfg.pick(2, 5)):
                            await load(client, url, body, kind)

            asyncio.run(drive())
            middleware.stop()
        stats = pstats.Stats(str(path))
    totals: dict[str, float] = defaultdict(float)
    for (filename, _, name), (_, _, tottime, _, _) in stats.stats.items():  # type: ignore[attr-defined]
        totals[_group(filename, name)] += tottime
    overall = sum(seconds for label, seconds in totals.items() if label != _IDLE)
    out = io.StringIO()
    shape = (
        f"sequential {events}-event streams" if latency else f"{STREAMS}x{events} concurrent events per round"
    )
    print(f"middleware server under {way} load ({shape}); cProfile tottime by component:", file=out)
    for label, seconds in sorted(totals.items(), key=lambda kv: -kv[1]):
        if label != _IDLE:
            print(f"  {seconds / overall * 100:5.1f}%  {label}", file=out)
    print(f"  busy {overall:.2f} s under the profiler, {totals[_IDLE]:.2f} s waiting in epoll", file=out)
    stats.stream = out  # type: ignore[attr-defined]
    stats.sort_stats("tottime").print_stats(25)
    return out.getvalue()
