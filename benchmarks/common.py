"""Shared helpers: run configuration, an ASGI driver, HTTP streaming clients, statistics."""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

__all__ = [
    "DONE_MARKER",
    "Config",
    "RSSSampler",
    "asgi_stream",
    "chat_body",
    "http_client",
    "http_stream",
    "percentile",
    "raw_stream",
    "responses_body",
]


@dataclass(frozen=True)
class Config:
    quick: bool

    def pick(self, quick: Any, full: Any) -> Any:
        return quick if self.quick else full


def chat_body(events: int) -> bytes:
    return orjson.dumps(
        {
            "model": f"bench-{events}",
            "messages": [{"role": "user", "content": "hi"}],
            "stream": True,
            "stream_options": {"include_usage": True},
        }
    )


def responses_body(events: int) -> bytes:
    return orjson.dumps({"model": f"bench-{events}", "input": "hi", "stream": True})


def _scope(path: str) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }


# The terminal Responses event as its data says (its "event:" line is optional SSE framing).
DONE_MARKER = {"chat": b"data: [DONE]", "responses": b"\"type\":\"response.completed\""}


class _Tail:
    """Notices a marker in a byte stream, wherever the chunks split it."""

    __slots__ = ("marker", "seen", "window")

    def __init__(self, marker: bytes) -> None:
        self.marker = marker
        self.window = b""
        self.seen = False

    def feed(self, chunk: bytes) -> None:
        if not self.seen:
            joined = self.window + chunk
            self.seen = self.marker in joined
            self.window = joined[-len(self.marker) :]


async def asgi_stream(app: Callable[..., Awaitable[None]], path: str, body: bytes, kind: str) -> int:
    """POST ``body`` to ``app`` with our own receive/send (no HTTP, no buffering
    transport); return the body size. Raises unless the stream ended properly."""
    sent = False
    done = asyncio.Event()
    status = 0
    size = 0
    last = b""

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await done.wait()
        return {"type": "http.disconnect"}

    async def send(message: Any) -> None:
        nonlocal status, size, last
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            chunk = message.get("body", b"")
            if chunk:
                size += len(chunk)
                last = chunk
            if not message.get("more_body", False):
                done.set()

    await app(_scope(path), receive, send)
    done.set()
    # ASGI messages are never split: the terminal event is in the last one.
    if status != 200 or DONE_MARKER[kind] not in last:
        raise RuntimeError(f"POST {path} -> {status}, stream incomplete")
    return size


def http_client(connections: int = 64) -> httpx.AsyncClient:
    # trust_env=False: a proxy from the environment must never carry 127.0.0.1 traffic.
    return httpx.AsyncClient(
        trust_env=False,
        timeout=httpx.Timeout(60.0, connect=5.0),
        limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
    )


async def http_stream(client: httpx.AsyncClient, url: str, body: bytes, kind: str) -> tuple[float, int]:
    """POST and read the raw body; return (seconds to the first body byte, bytes read).
    Raises unless the stream ended properly (a broken stream measures nothing)."""
    start = time.perf_counter()
    first = 0.0
    size = 0
    tail = _Tail(DONE_MARKER[kind])
    async with client.stream(
        "POST", url, content=body, headers={"content-type": "application/json"}
    ) as response:
        if response.status_code != 200:
            await response.aread()
            raise RuntimeError(f"POST {url} -> {response.status_code}: {response.content[:300]!r}")
        async for chunk in response.aiter_raw():
            if not size:
                first = time.perf_counter() - start
            size += len(chunk)
            tail.feed(chunk)
    if not tail.seen:
        raise RuntimeError(f"POST {url}: the {kind} stream ended without its terminal event")
    return first, size


async def raw_stream(url: str, body: bytes, kind: str) -> int:
    """POST over a bare socket and count the response bytes: next to no client
    work per event, so the servers, not the client, set the pace."""
    host, _, port = url.split("://", 1)[1].partition("/")[0].partition(":")
    path = "/" + url.split("://", 1)[1].partition("/")[2]
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(
            f"POST {path} HTTP/1.1\r\nhost: {host}:{port}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n".encode()
            + body
        )
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            with contextlib.suppress(Exception):
                head += await asyncio.wait_for(reader.read(1000), 2)
            raise RuntimeError(f"POST {url} -> {head[:100]!r} ... {head[-400:]!r}")
        size = 0
        tail = _Tail(DONE_MARKER[kind])
        while data := await reader.read(1 << 16):  # until the server closes: connection: close
            size += len(data)
            tail.feed(data)
    finally:
        writer.close()
    if not tail.seen:
        raise RuntimeError(f"POST {url}: the {kind} stream ended without its terminal event")
    return size


def percentile(samples: list[float], q: float) -> float:
    if len(samples) == 1:
        return samples[0]
    return statistics.quantiles(samples, n=100, method="inclusive")[int(q) - 1] if q < 100 else max(samples)


class RSSSampler:
    """Polls a process's RSS in a thread; ``peak`` is the highest value seen."""

    def __init__(self, read: Callable[[], tuple[int, int]], interval: float = 0.01) -> None:
        self._read = read
        self._interval = interval
        self._stop = threading.Event()
        self.peak = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, self._read()[0])
            except OSError:
                return
            self._stop.wait(self._interval)

    def __enter__(self) -> RSSSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
