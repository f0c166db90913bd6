"""A real redis-server on 127.0.0.1 for tests: skipped locally without one, a failure under CI."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import free_port, missing

REDIS_START_TIMEOUT = 10.0


def redis_server_binary() -> str:
    """The redis-server path; skip without it locally, fail under CI so a missing server is never silent."""
    path = shutil.which("redis-server")
    if path is None:
        missing("redis-server is not on PATH (apt-get install redis-server) so the Redis store tests cannot run")
    return path




def redis_command(port: int, *args: str) -> bytes:
    """One command over a plain socket, for setup that must not depend on the client under test."""
    request = b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a.encode()), a.encode()) for a in args)
    with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
        sock.sendall(request)
        return sock.recv(1 << 16)


@contextlib.contextmanager
def redis_server(*extra_args: str) -> Iterator[int]:
    """A real redis-server on 127.0.0.1 and a free port, without persistence; yields the port."""
    binary = redis_server_binary()
    port = free_port()
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", *extra_args]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + REDIS_START_TIMEOUT
        while True:
            try:
                # Any reply, even NOAUTH from a password-protected server, means it is serving.
                if redis_command(port, "PING")[:1] in (b"+", b"-"):
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not answer PING on port {port}")
            time.sleep(0.02)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def store_url(request: pytest.FixtureRequest, directory: Path) -> str:
    """The store URL for ``request.param`` ("memory", "sqlite" or "redis"): a
    SQLite file in ``directory``, or the module's redis-server (the
    ``redis_port`` fixture), emptied first."""
    if request.param == "redis":
        port: int = request.getfixturevalue("redis_port")
        redis_command(port, "FLUSHALL")
        return f"redis://127.0.0.1:{port}/0"
    if request.param == "sqlite":
        return f"sqlite:///{directory / 'store.db'}"
    return "memory"
