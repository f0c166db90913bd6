"""Responses WebSocket mode over a real WebSocket client (the ``websockets`` package).

``websockets`` is an optional extra (``compat-asgi[conformance]``): without it
the WebSocket cases are skipped with that reason, never passed.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson

__all__ = ["WsExchange", "available", "ws_url", "run_turns"]

_TERMINALS = frozenset({"response.completed", "response.incomplete", "response.failed", "error"})
#: Frames kept per turn: a runaway server must not make the checker hold everything.
MAX_FRAMES = 10_000


@dataclass(slots=True)
class WsExchange:
    #: Decoded frames of each turn, in arrival order (non-JSON frames as ``{"_raw": text}``).
    turns: list[list[dict[str, Any]]] = field(default_factory=list)
    #: (rule, message) when the socket could not be used to the end.
    broken: tuple[str, str] | None = None
    total: float = 0.0


def available() -> bool:
    try:
        import websockets.sync.client  # noqa: F401
    except ImportError:
        return False
    return True


def ws_url(base_url: str, path: str) -> str:
    parts = urlsplit(base_url.rstrip("/") + path)
    return urlunsplit(("wss" if parts.scheme == "https" else "ws", parts.netloc, parts.path, parts.query, ""))


def run_turns(url: str, messages: list[Mapping[str, Any]], *, api_key: str | None, timeout: float) -> WsExchange:
    """Send each ``response.create`` message in turn, reading frames until its terminal event."""
    from websockets.exceptions import InvalidHandshake, InvalidStatus, WebSocketException
    from websockets.sync.client import connect

    out = WsExchange()
    headers = {"authorization": f"Bearer {api_key}"} if api_key else None
    started = time.perf_counter()
    deadline = started + timeout
    try:
        with connect(url, additional_headers=headers, open_timeout=timeout, close_timeout=1, max_size=2**24) as ws:
            for message in messages:
                ws.send(orjson.dumps(message).decode())
                frames: list[dict[str, Any]] = []
                out.turns.append(frames)
                while True:
                    left = deadline - time.perf_counter()
                    if left <= 0 or len(frames) >= MAX_FRAMES:
                        out.broken = ("timeout", f"no terminal event within {timeout:g}s on the WebSocket")
                        return out
                    try:
                        raw = ws.recv(timeout=left)
                    except TimeoutError:
                        out.broken = ("timeout", f"no terminal event within {timeout:g}s on the WebSocket")
                        return out
                    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
                    try:
                        frame = orjson.loads(text)
                    except orjson.JSONDecodeError:
                        frame = {"_raw": text[:200]}
                    frames.append(frame if isinstance(frame, dict) else {"_raw": text[:200]})
                    if isinstance(frame, dict) and frame.get("type") in _TERMINALS:
                        break
    except InvalidStatus as exc:
        out.broken = ("websocket", f"WebSocket upgrade refused: HTTP {exc.response.status_code}")
    except (InvalidHandshake, OSError) as exc:
        out.broken = ("websocket", f"WebSocket handshake failed: {type(exc).__name__}: {exc}")
    except WebSocketException as exc:
        out.broken = ("websocket", f"WebSocket closed before the terminal event: {type(exc).__name__}: {exc}")
    finally:
        out.total = time.perf_counter() - started
    return out
