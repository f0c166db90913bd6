"""Test helpers: a real uvicorn server on 127.0.0.1, and a raw ASGI driver.

The driver exists because httpx.ASGITransport buffers whole bodies and so
cannot show whether a response streams; it records each ``send`` as it
happens.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import pytest
import uvicorn

from compat_asgi.types import ASGIApp, Message, Receive, Scope, Send

#: Both HTTP upstream transports, for the tests that prove what each must honour
#: (streaming, timeouts, pool limits, faults, release on close); the rest of the
#: suite runs on one (``pytest --http-client``).
TRANSPORTS = [
    "httpx",
    pytest.param(
        "aiohttp",
        marks=pytest.mark.skipif(
            importlib.util.find_spec("httpx_aiohttp") is None, reason="httpx-aiohttp (compat-asgi[fast]) is not installed"
        ),
    ),
]


def free_port() -> int:
    """A free port on 127.0.0.1, for a server started as a process."""
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """``count`` distinct free ports on 127.0.0.1: all bound at once while
    they are chosen, so none is handed out twice."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]


def missing(reason: str) -> None:
    """A real peer the tests drive (Redis, Codex, Chromium, llama-server) is not
    installed: skip, except under CI=true, where ``.ci/run`` installs it and its
    absence must fail rather than pass silently."""
    if os.environ.get("CI") == "true":
        pytest.fail(reason + " (under CI=true, .ci/run must install it)")
    pytest.skip(reason)


@dataclass
class ServedCommand:
    """A ``compat-asgi serve`` process: its URL, and once stopped what it wrote to stderr."""

    url: str
    stderr: list[str] = field(default_factory=list)


@contextlib.contextmanager
def serve_command(*args: str) -> Iterator[ServedCommand]:
    """``compat-asgi serve *args`` started as a user would, as a process on a
    free port (a memory store unless ``args`` name one). Yields once it answers
    ``/healthz``; after the block it is stopped and ``stderr`` holds its lines."""
    port = free_port()
    store = () if "--store" in args else ("--store", "memory")
    process = subprocess.Popen(
        [sys.executable, "-m", "compat_asgi", "serve", "--port", str(port), *store, *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    served = ServedCommand(f"http://127.0.0.1:{port}")
    up = False
    try:
        deadline = time.monotonic() + 15
        while process.poll() is None and time.monotonic() < deadline:
            try:
                httpx.get(served.url + "/healthz", timeout=1)
                up = True
                break
            except httpx.TransportError:
                time.sleep(0.05)
        if up:
            yield served
    finally:
        process.terminate()
        _, err = process.communicate(timeout=10)
        served.stderr = err.decode().splitlines()
    if not up:
        raise RuntimeError("compat-asgi serve did not start:\n" + "\n".join(served.stderr))


@contextlib.contextmanager
def serve(app: ASGIApp, **options: Any) -> Iterator[str]:
    """Run ``app`` under uvicorn on a free 127.0.0.1 port; yield its origin URL.

    ``options`` are extra ``uvicorn.Config`` settings (``root_path`` ...)."""
    # IPPROTO_TCP explicitly: asyncio only sets TCP_NODELAY on sockets that say so.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=2, **options)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@dataclass
class Recorded:
    status: int = 0
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)
    ended: bool = False

    @property
    def body(self) -> bytes:
        return b"".join(self.bodies)

    def json(self) -> Any:
        return orjson.loads(self.body)

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None


def http_scope(method: str, path: str, headers: list[tuple[bytes, bytes]] | None = None) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers or [(b"content-type", b"application/json")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }


async def call(
    app: ASGIApp,
    method: str,
    path: str,
    body: Any = None,
    *,
    on_body: Any = None,
    scope: dict[str, Any] | None = None,
) -> Recorded:
    """Drive ``app`` with one request; ``on_body(recorded)`` runs after each body message."""
    raw = body if isinstance(body, bytes) else (b"" if body is None else orjson.dumps(body))
    sent = False
    done = asyncio.Event()
    recorded = Recorded()

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": raw, "more_body": False}
        await done.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            recorded.status = message["status"]
            recorded.headers = list(message.get("headers", []))
        elif message["type"] == "http.response.body":
            recorded.bodies.append(message.get("body", b""))
            if not message.get("more_body", False):
                recorded.ended = True
                done.set()
            if on_body is not None:
                await on_body(recorded)

    await app(scope or http_scope(method, path), receive, send)
    done.set()
    return recorded


class Scopes:
    """An ASGI wrapper noting what reaches the server: (HTTP method, or "WS" for a socket, path)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.seen: list[tuple[str, str]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            self.seen.append((scope.get("method", "WS"), scope["path"]))
        await self.app(scope, receive, send)

    def count(self, method: str, path: str = "/v1/responses") -> int:
        return self.seen.count((method, path))
