"""(1) The sans-io translator per event, against the floor of splitting and re-framing SSE.

Both sides get the same realistic chat stream (text deltas, two tool calls,
finish and usage chunks), fed one event per chunk as a token-by-token model
delivers it, and produce encoded bytes ready to send:

- floor: :class:`SSEDecoder` (the bounded line buffer every path needs) and
  re-framing each event as ``event: ...\\ndata: <same json>\\n\\n``: moving the
  bytes with no JSON work at all;
- translation: :meth:`ChatToResponses.feed_encoded`, exactly what the
  middleware runs per upstream read (its byte-level fast path splices the
  text of text-only chunks); row 1c runs the same with the fast path off
  (decode, build the event dict, :func:`encode_event`), in the same rounds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial

from benchmarks.chatstream import chat_events
from benchmarks.common import Config
from benchmarks.report import Results, Row
from compat_asgi.core.ids import RandomIds
from compat_asgi.core.responses import new_response
from compat_asgi.core.sse import SSEDecoder, encode_events
from compat_asgi.core.streams import ChatToResponses

TARGET = 3.0
BATCH = 256
_EVENT = b"event: response.output_text.delta\ndata: "


def frame_floor(chunks: list[bytes]) -> int:
    decoder = SSEDecoder()
    size = 0
    for chunk in chunks:
        out = b"".join([_EVENT + event.data + b"\n\n" for event in decoder.feed(chunk)])
        size += len(out)
    return size


def naive_floor(chunks: list[bytes]) -> int:
    """No line buffer at all: split on blank lines, no CR handling, no bound (context only)."""
    rest = b""
    size = 0
    for chunk in chunks:
        frames = (rest + chunk).split(b"\n\n")
        rest = frames.pop()
        out = b"".join([_EVENT + frame[6:] + b"\n\n" for frame in frames])
        size += len(out)
    return size


def translate(chunks: list[bytes], fast: bool = True) -> int:
    ids = RandomIds()
    core = ChatToResponses(new_response({"model": "bench"}, ids("resp"), 1_700_000_000), ids, fast=fast)
    size = len(encode_events(core.start()))
    for chunk in chunks:
        spliced, events = core.feed_encoded(chunk)  # as the middleware sends them
        size += len(spliced + encode_events(events) if events else spliced)
    size += len(encode_events(core.close()))
    if not core.done or core.response["status"] != "completed":
        raise RuntimeError("the benchmark stream did not translate to a completed response")
    return size


def _time(fn: Callable[[list[bytes]], int], chunks: list[bytes], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn(chunks)
        best = min(best, time.perf_counter() - start)
    return best


slow_translate = partial(translate, fast=False)


def run(cfg: Config, results: Results) -> None:
    events = cfg.pick(200, 1000)
    repeats = cfg.pick(5, 40)
    chunks = list(chat_events(events))
    # Big reads, as an HTTP upstream that outpaces us delivers them: 256 events each (~60 KiB).
    bulk = [b"".join(chunks[i : i + BATCH]) for i in range(0, len(chunks), BATCH)]
    ways: dict[str, tuple[Callable[[list[bytes]], int], list[bytes]]] = {
        "floor": (frame_floor, chunks),
        "naive": (naive_floor, chunks),
        "translate": (translate, chunks),
        "slow": (slow_translate, chunks),
        "bulk floor": (frame_floor, bulk),
        "bulk translate": (translate, bulk),
        "bulk slow": (slow_translate, bulk),
    }
    timings: dict[str, list[float]] = {name: [] for name in ways}
    # Interleaved rounds, best of each: noise on a shared machine only ever adds time.
    for _ in range(cfg.pick(2, 5)):
        for name, (fn, data) in ways.items():
            timings[name].append(_time(fn, data, repeats))
    per_event = {name: min(t) / len(chunks) * 1e6 for name, t in timings.items()}
    bulk_floor, bulk_translate = per_event["bulk floor"], per_event["bulk translate"]
    ratio = per_event["translate"] / per_event["floor"]
    results.add(
        Row(
            "1",
            "core: translate / frame floor, per event",
            ratio,
            "x",
            f"<= {TARGET:.1f}x",
            ratio <= TARGET,
            f"translate {per_event['translate']:.2f} us/ev, floor {per_event['floor']:.2f} us/ev "
            f"({len(chunks)} events, 1 event per chunk)",
        )
    )
    results.add(
        Row(
            "1b",
            "core: translate / naive split floor",
            per_event["translate"] / per_event["naive"],
            "x",
            "info",
            None,
            f"naive split+reframe {per_event['naive']:.2f} us/ev; {BATCH} events per chunk: translate "
            f"{bulk_translate:.2f}, floor {bulk_floor:.2f} us/ev",
        )
    )
    fast_slow = per_event["translate"] / per_event["slow"]
    results.add(
        Row(
            "1c",
            "core: fast path / slow path, per event",
            fast_slow,
            "x",
            "info",
            None,
            f"slow path {per_event['slow']:.2f} us/ev ({per_event['slow'] / per_event['floor']:.2f}x the floor); "
            f"{BATCH} events per chunk: fast {bulk_translate:.2f}, slow {per_event['bulk slow']:.2f} us/ev "
            f"({bulk_translate / per_event['bulk slow']:.2f}x)",
        )
    )
