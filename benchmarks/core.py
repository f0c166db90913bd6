"""(1) The sans-io translator per event, against the floor of splitting and re-framing SSE.

Both sides get the same realistic chat stream (text deltas, two tool calls,
finish and usage chunks), fed one event per chunk as a token-by-token model
delivers it, and produce encoded bytes ready to send:

- floor: :class:`SSEDecoder` (the bounded line buffer every path needs) and
  re-framing each event as ``event: ...\\ndata: <same json>\\n\\n``: moving the
  bytes with no JSON work at all;
- translation: :class:`ChatToResponses` + :func:`encode_event`, exactly what
  the middleware runs per upstream read.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from benchmarks.chatstream import chat_events
from benchmarks.common import Config
from benchmarks.report import Results, Row
from compat_asgi.core.ids import RandomIds
from compat_asgi.core.responses import new_response
from compat_asgi.core.sse import SSEDecoder, encode_event
from compat_asgi.core.streams import ChatToResponses

TARGET = 3.0
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


def translate(chunks: list[bytes]) -> int:
    ids = RandomIds()
    core = ChatToResponses(new_response({"model": "bench"}, ids("resp"), 1_700_000_000), ids)
    size = len(b"".join([encode_event(e) for e in core.start()]))
    for chunk in chunks:
        size += len(b"".join([encode_event(e) for e in core.feed_bytes(chunk)]))
    size += len(b"".join([encode_event(e) for e in core.close()]))
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


def run(cfg: Config, results: Results) -> None:
    events = cfg.pick(200, 1000)
    repeats = cfg.pick(5, 40)
    chunks = list(chat_events(events))
    timings: dict[str, list[float]] = {"floor": [], "naive": [], "translate": []}
    # Interleaved rounds, best of each: noise on a shared machine only ever adds time.
    for _ in range(cfg.pick(2, 5)):
        timings["floor"].append(_time(frame_floor, chunks, repeats))
        timings["naive"].append(_time(naive_floor, chunks, repeats))
        timings["translate"].append(_time(translate, chunks, repeats))
    per_event = {name: min(t) / len(chunks) * 1e6 for name, t in timings.items()}
    # One big chunk per read, as an HTTP upstream that outpaces us delivers it.
    bulk = [b"".join(chunks)]
    bulk_floor = _time(frame_floor, bulk, repeats) / len(chunks) * 1e6
    bulk_translate = _time(translate, bulk, repeats) / len(chunks) * 1e6
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
            f"naive split+reframe {per_event['naive']:.2f} us/ev; all in one chunk: translate "
            f"{bulk_translate:.2f}, floor {bulk_floor:.2f} us/ev",
        )
    )
