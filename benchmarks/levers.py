"""(6) Issue 17's transport and server levers, before and after, in one run.

One upstream (on uvloop + httptools when importable: the fastest server stack
we ship) and one middleware process per configuration, all alive at once,
rounds interleaved, best round kept:

- ``httpx``:            upstream client on httpx's own transport, server on asyncio + h11 (before)
- ``aiohttp``:          the httpx-aiohttp transport, server on asyncio + h11 (lever 1)
- ``aiohttp+standard``: the same on uvloop + httptools (levers 1 + 2)
- ``...+store``:        the last one with the default SQLite store on (issue 17: within 10%)
- ``...+slow-path``:    the last one with the core's byte-level fast path off (row 6k)

Clients are bare sockets (nothing but ``recv``), so the servers set the pace.
CPU per event is each process's user+system time over its rounds divided by
the events it carried; the issue's targets compare the middleware's CPU per
event with the upstream's. ``python -m benchmarks --only levers``; the
optional LiteLLM rows (6j chat passthrough, 6l Responses over chat) run when a ``litellm`` executable is found
(``--litellm PATH`` or on ``PATH``), with fewer events, as it is slow.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator

from benchmarks.chatstream import MIN_EVENTS
from benchmarks.common import Config, chat_body, http_client, http_stream, percentile, raw_stream, responses_body
from benchmarks.procs import Server, free_port
from benchmarks.report import Results, Row

STREAMS = 16
STANDARD = ["--loop", "uvloop", "--http", "httptools"]
#: Path of a ``litellm`` executable for the optional comparison row (set by ``--litellm``).
LITELLM: list[str] = []


def _have_standard() -> bool:
    return all(importlib.util.find_spec(name) is not None for name in ("uvloop", "httptools"))


def _have_aiohttp() -> bool:
    return importlib.util.find_spec("httpx_aiohttp") is not None


def _server(kind: str, *args: str) -> Server:
    port = free_port()
    return Server([sys.executable, "-m", "benchmarks.serve", kind, "--port", str(port), *args], port)


@contextlib.contextmanager
def _litellm(upstream: Server, events: int) -> Iterator[Server | None]:
    exe = LITELLM[0] if LITELLM else shutil.which("litellm")
    if not exe:
        yield None
        return
    port = free_port()
    try:
        server = Server(
            # lm_studio: an OpenAI-style chat server, whose /v1/responses LiteLLM
            # bridges onto chat completions (its hosted_vllm provider would send
            # /v1/responses on to the upstream as it is).
            [exe, "--model", f"lm_studio/bench-{events}", "--api_base", upstream.url + "/v1", "--port", str(port),
             "--host", "127.0.0.1", "--num_workers", "1"],
            port,
            ready_path="/health/liveliness",
            timeout=180.0,
            env={
                "OPENAI_API_KEY": "unused",
                "LM_STUDIO_API_KEY": "unused",
                "LITELLM_LOG": "ERROR",
                "LITELLM_TELEMETRY": "False",
                # Bound to 127.0.0.1 for this measurement only.
                "LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY": "true",
            },
        )
    except RuntimeError as exc:
        print(f"litellm did not start, row skipped: {str(exc)[:300]}", file=sys.stderr)
        yield None
        return
    with server:
        yield server


async def _round(url: str, body: bytes, kind: str, streams: int) -> float:
    start = time.perf_counter()
    await asyncio.wait_for(asyncio.gather(*(raw_stream(url, body, kind) for _ in range(streams))), 180)
    return time.perf_counter() - start


async def _measure(
    upstream: Server,
    middlewares: dict[str, Server],
    events: int,
    rounds: int,
    streams: int = STREAMS,
    translating: bool = True,
) -> tuple[dict[str, float], dict[str, float], dict[str, float]]:
    """Best seconds per way; middleware and upstream CPU microseconds per event per way."""
    ways: dict[str, tuple[Server | None, str, bytes, str]] = {
        "direct": (None, upstream.url + "/v1/chat/completions", chat_body(events), "chat")
    }
    for name, server in middlewares.items():
        ways[f"{name} passthrough"] = (server, server.url + "/v1/chat/completions", chat_body(events), "chat")
        if translating:
            ways[f"{name} translating"] = (server, server.url + "/v1/responses", responses_body(events), "responses")
    best: dict[str, float] = {}
    cpu_mw: dict[str, float] = defaultdict(float)
    cpu_up: dict[str, float] = defaultdict(float)
    for server, url, body, kind in ways.values():  # warm-up
        await _round(url, body, kind, streams)
    for _ in range(rounds):
        for name, (server, url, body, kind) in ways.items():
            before = (upstream.cpu(), server.cpu() if server else 0.0)
            seconds = await _round(url, body, kind, streams)
            after = (upstream.cpu(), server.cpu() if server else 0.0)
            cpu_up[name] += after[0] - before[0]
            cpu_mw[name] += after[1] - before[1]
            best[name] = min(best.get(name, seconds), seconds)
    total = streams * events * rounds
    return (
        best,
        {name: value / total * 1e6 for name, value in cpu_mw.items()},
        {name: value / total * 1e6 for name, value in cpu_up.items()},
    )


async def _ttfb(upstream: Server, middlewares: dict[str, Server], samples: int) -> dict[str, float]:
    ways = {"direct": (upstream.url + "/v1/chat/completions", chat_body(MIN_EVENTS), "chat")}
    for name, server in middlewares.items():
        ways[f"{name} passthrough"] = (server.url + "/v1/chat/completions", chat_body(MIN_EVENTS), "chat")
        ways[f"{name} translating"] = (server.url + "/v1/responses", responses_body(MIN_EVENTS), "responses")
    seen: dict[str, list[float]] = defaultdict(list)
    async with http_client() as client:
        for url, body, kind in ways.values():
            for _ in range(3):
                await http_stream(client, url, body, kind)
        for _ in range(samples):
            for name, (url, body, kind) in ways.items():
                await asyncio.sleep(0.005)
                first, _ = await asyncio.wait_for(http_stream(client, url, body, kind), 20)
                seen[name].append(first * 1000)
    return {name: percentile(values, 50) for name, values in seen.items()}


def run(cfg: Config, results: Results) -> None:
    if not _have_aiohttp():
        raise RuntimeError("the levers benchmark needs httpx-aiohttp (pip install 'compat-asgi[fast]')")
    events = cfg.pick(200, 1000)
    rounds = cfg.pick(2, 7)
    samples = cfg.pick(20, 150)
    standard = _have_standard()
    server_args = STANDARD if standard else []
    configs = {
        "httpx": ["--http-client", "httpx"],
        "aiohttp": ["--http-client", "aiohttp"],
    }
    if standard:
        configs["aiohttp+standard"] = ["--http-client", "aiohttp", *STANDARD]
    last = list(configs)[-1]
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        upstream = stack.enter_context(_server("upstream", *server_args))
        configs[last + "+store"] = [*configs[last], "--store", f"sqlite:///{tmp}/responses.db"]
        configs[last + "+slow-path"] = [*configs[last], "--slow-path"]
        middlewares = {
            name: stack.enter_context(_server("middleware", "--upstream", upstream.url + "/v1", *args))
            for name, args in configs.items()
        }
        best, cpu_mw, cpu_up = asyncio.run(_measure(upstream, middlewares, events, rounds))
        ttfb = asyncio.run(
            _ttfb(upstream, {k: v for k, v in middlewares.items() if "store" not in k and "slow" not in k}, samples)
        )
        litellm_stats = None
        small = cfg.pick(50, 200)
        with _litellm(upstream, small) as litellm:
            if litellm is not None:
                try:
                    lite = asyncio.run(_measure(upstream, {"litellm": litellm}, small, 2, streams=4))
                except Exception as exc:  # an optional row: say why it is missing, keep the others
                    print(f"litellm measurement failed, row skipped: {exc!r}"[:500], file=sys.stderr)
                else:
                    ours = asyncio.run(_measure(upstream, {last: middlewares[last]}, small, 2, streams=4))
                    litellm_stats = (lite, ours, small, litellm.rss()[0])
    total = STREAMS * events
    rate = {name: total / seconds for name, seconds in best.items()}
    up = cpu_up["direct"]
    before, after = "httpx", last

    def ratio_row(row_id: str, label: str, way: str, limit: float) -> None:
        value = cpu_mw[way] / up
        results.add(
            Row(
                row_id, label, value, "x", f"<= {limit}x", value <= limit,
                f"middleware {cpu_mw[way]:.1f} us/ev, upstream {up:.1f} us/ev (direct), "
                f"before ({before}, h11): {cpu_mw[before + ' ' + way.split()[-1]] / up:.2f}x",
            )
        )

    ratio_row("6a", "levers: translating CPU/event / upstream's", f"{after} translating", 1.0)
    ratio_row("6b", "levers: passthrough CPU/event / upstream's", f"{after} passthrough", 0.4)
    for row_id, name in (("6c", "aiohttp"), ("6d", after)):
        if name == "aiohttp" and after == "aiohttp":
            continue
        for way in ("translating", "passthrough"):
            cut = cpu_mw[f"{name} {way}"] / cpu_mw[f"httpx {way}"]
            results.add(
                Row(
                    row_id + ("t" if way == "translating" else "p"),
                    f"levers: {name} / httpx client, {way} CPU/event",
                    cut, "x", "info", None,
                    f"{cpu_mw[f'httpx {way}']:.1f} -> {cpu_mw[f'{name} {way}']:.1f} us/ev; "
                    f"throughput {rate[f'httpx {way}'] / 1000:.0f}k -> {rate[f'{name} {way}'] / 1000:.0f}k ev/s",
                )
            )
    vs_direct = rate[f"{after} translating"] / rate["direct"]
    vs_pass = rate[f"{after} translating"] / rate[f"{after} passthrough"]
    stack_name = "uvloop+httptools" if standard else "asyncio+h11 (uvloop/httptools missing)"
    results.add(Row("6e", "levers: translating / direct, throughput", vs_direct, "x", ">= 0.6x", vs_direct >= 0.6,
                    f"upstream on {stack_name}: direct {rate['direct'] / 1000:.0f}k, "
                    f"translating {rate[after + ' translating'] / 1000:.0f}k ev/s; before "
                    f"{rate['httpx translating'] / rate['direct']:.2f}x"))
    results.add(Row("6f", "levers: translating / passthrough, throughput", vs_pass, "x", ">= 0.9x", vs_pass >= 0.9,
                    f"passthrough {rate[after + ' passthrough'] / 1000:.0f}k ev/s; before "
                    f"{rate['httpx translating'] / rate['httpx passthrough']:.2f}x"))
    for row_id, way, limit in (("6g", "translating", 0.7), ("6h", "passthrough", 0.4)):
        added = ttfb[f"{after} {way}"] - ttfb["direct"]
        results.add(Row(row_id, f"levers: time to first byte added, {way} (p50)", added, "ms", f"<= {limit} ms",
                        added <= limit,
                        f"direct {ttfb['direct']:.2f} ms; added: " + ", ".join(
                            f"{name} {ttfb[f'{name} {way}'] - ttfb['direct']:.2f}"
                            for name in configs if "store" not in name and "slow" not in name) + " ms"))
    stored = f"{after}+store translating"
    slower = best[stored] / best[f"{after} translating"]
    results.add(Row("6i", "levers: store on / store off, translating time", slower, "x", "<= 1.1x", slower <= 1.1,
                    f"CPU {cpu_mw[f'{after} translating']:.1f} -> {cpu_mw[stored]:.1f} us/ev (SQLite)"))
    slow = f"{after}+slow-path translating"
    cut = cpu_mw[f"{after} translating"] / cpu_mw[slow]
    results.add(Row("6k", "levers: core fast path / slow path, translating CPU/event", cut, "x", "info", None,
                    f"{cpu_mw[slow]:.1f} -> {cpu_mw[f'{after} translating']:.1f} us/ev; with the slow path "
                    f"{cpu_mw[slow] / up:.2f}x the upstream's"))
    if litellm_stats is not None:
        (l_best, l_mw, _), (o_best, o_mw, _), small, rss = litellm_stats
        for row_id, kind, label in (("6j", "passthrough", "chat passthrough"), ("6l", "translating", "Responses over chat")):
            way, ours_way = f"litellm {kind}", f"{after} {kind}"
            results.add(Row(row_id, f"LiteLLM proxy / ours, {label} CPU/event", l_mw[way] / o_mw[ours_way], "x",
                            "info", None,
                            f"4x{small} events: LiteLLM {l_mw[way]:.0f} us/ev ({4 * small / l_best[way]:.0f} ev/s, "
                            f"RSS {rss / 2**20:.0f} MiB), ours {o_mw[ours_way]:.1f} us/ev "
                            f"({4 * small / o_best[ours_way]:.0f} ev/s)"))
