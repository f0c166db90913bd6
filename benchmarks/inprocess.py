"""(2) CompatMiddleware end to end with an in-process upstream, driven at the ASGI level.

16 concurrent streams of N chat events: POST ``/v1/chat/completions`` to the
upstream app directly, against POST ``/v1/responses`` through
``CompatMiddleware(app)`` (which calls the same app in-process and translates).
Our own receive/send, no HTTP and no buffering transport: the difference is
the middleware. Throughput counts upstream chat events per second.

Two upstreams: the benchmark's pre-encoded app (costs ~nothing per event, so
this shows the middleware's own ceiling) and the package's demo backend
(builds and JSON-encodes every chunk and yields to the loop between chunks,
like a real server).

Each is also run with the core's byte-level fast path off (the same
middleware object, its translator built with ``fast=False``), in the same
interleaved rounds: the before/after of that lever.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from functools import partial
from typing import Any

import orjson

from benchmarks.chatstream import app as fast_app
from benchmarks.common import Config, asgi_stream, chat_body, responses_body
from benchmarks.report import Results, Row
from compat_asgi import CompatMiddleware
from compat_asgi.demo import DemoChatApp
from compat_asgi.endpoints import responses as responses_endpoint

TARGET = 0.8
STREAMS = 16


def _demo_bodies(events: int) -> tuple[bytes, bytes]:
    # The demo streams the role chunk, one delta per word of its answer (the
    # prompt's words and 11 more), the finish and usage chunks.
    words = " ".join(["w"] * max(events - 14, 1))
    chat = orjson.dumps(
        {
            "model": "demo",
            "messages": [{"role": "user", "content": words}],
            "stream": True,
            "stream_options": {"include_usage": True},
        }
    )
    return chat, orjson.dumps({"model": "demo", "input": words, "stream": True})


async def _round(app: Any, path: str, body: bytes, kind: str) -> float:
    start = time.perf_counter()
    await asyncio.wait_for(asyncio.gather(*(asgi_stream(app, path, body, kind) for _ in range(STREAMS))), 120)
    return time.perf_counter() - start


@contextlib.contextmanager
def _slow_path() -> Iterator[None]:
    """Translators built meanwhile have the byte-level fast path off."""
    fast = responses_endpoint.ChatToResponses
    responses_endpoint.ChatToResponses = partial(fast, fast=False)  # type: ignore[misc]
    try:
        yield
    finally:
        responses_endpoint.ChatToResponses = fast  # type: ignore[misc]


async def _measure(upstream: Any, chat: bytes, responses: bytes, rounds: int) -> tuple[float, float, float]:
    """Best seconds: direct, through the middleware, and through it with the slow path."""
    middleware = CompatMiddleware(upstream)
    direct: list[float] = []
    through: list[float] = []
    slow: list[float] = []
    try:
        await _round(upstream, "/v1/chat/completions", chat, "chat")  # warm-up
        await _round(middleware, "/v1/responses", responses, "responses")
        for _ in range(rounds):
            direct.append(await _round(upstream, "/v1/chat/completions", chat, "chat"))
            through.append(await _round(middleware, "/v1/responses", responses, "responses"))
            with _slow_path():
                slow.append(await _round(middleware, "/v1/responses", responses, "responses"))
    finally:
        await middleware.aclose()
    return min(direct), min(through), min(slow)


def run(cfg: Config, results: Results) -> None:
    events = cfg.pick(100, 1000)
    rounds = cfg.pick(2, 7)
    total = STREAMS * events
    for row_id, name, upstream, (chat, responses) in (
        ("2a", "pre-encoded app", fast_app, (chat_body(events), responses_body(events))),
        ("2b", "demo backend", DemoChatApp(), _demo_bodies(events)),
    ):
        direct, through, slow = asyncio.run(_measure(upstream, chat, responses, rounds))
        ratio = direct / through
        results.add(
            Row(
                row_id,
                f"in-process: middleware / direct ({name})",
                ratio,
                "x",
                f">= {TARGET:.1f}x",
                ratio >= TARGET,
                f"direct {total / direct / 1000:.0f}k ev/s, middleware {total / through / 1000:.0f}k ev/s, "
                f"+{(through - direct) / total * 1e6:.1f} us/ev ({STREAMS}x{events}); "
                f"core fast path off: {direct / slow:.2f}x, +{(slow - direct) / total * 1e6:.1f} us/ev",
            )
        )
