"""HTTP for the conformance runner: one httpx client, timed exchanges.

Knows nothing of the protocols beyond SSE line framing: the caller passes a
predicate saying which decoded event carries the first token, so one clock
serves both APIs.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

__all__ = ["Exchange", "RequestFailed", "ServerUnreachable", "TokenTest", "Transport"]

#: A conformance run keeps whole bodies for the validator; this caps what a
#: runaway server can make it hold.
MAX_BODY_BYTES = 64 * 1024 * 1024
#: Longer lines are skipped by the clock (the validator still sees them).
MAX_CLOCK_LINE = 1024 * 1024

#: Says whether a decoded SSE ``data:`` object carries generated text or arguments.
TokenTest = Callable[[Mapping[str, Any]], bool]


class ServerUnreachable(Exception):
    """No connection could be made at all: running the suite would only time out."""


class RequestFailed(Exception):
    """A request got no HTTP response; ``rule`` is what the report quotes."""

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(message)
        self.rule = rule
        self.message = message


@dataclass(slots=True)
class Exchange:
    """One request as the client saw it; times are seconds since it was sent."""

    status: int
    content_type: str
    body: bytes
    total: float
    ttft: float | None = None
    events: int = 0
    #: Set when the body was cut short (transport error, deadline): (rule, message).
    broken: tuple[str, str] | None = None

    @property
    def is_event_stream(self) -> bool:
        return self.content_type.split(";", 1)[0].strip().lower() == "text/event-stream"

    def json(self) -> Any:
        """The body as JSON, or ``None`` when it is not JSON (a finding, not a crash)."""
        try:
            return orjson.loads(self.body)
        except orjson.JSONDecodeError:
            return None


class _EventClock:
    """Counts SSE events and stamps the first token as bytes arrive.

    Approximate on purpose (splits on LF, drops a trailing CR): framing faults
    are the validator's to judge on the full body; this only measures time.
    """

    __slots__ = ("is_token", "pending", "in_event", "events", "first_token")

    def __init__(self, is_token: TokenTest | None) -> None:
        self.is_token = is_token
        self.pending = b""
        self.in_event = False
        self.events = 0
        self.first_token: float | None = None

    def feed(self, chunk: bytes, at: float) -> None:
        data = self.pending + chunk
        start = 0
        while (end := data.find(b"\n", start)) >= 0:
            self._line(data[start:end].rstrip(b"\r"), at)
            start = end + 1
        self.pending = data[start:]
        if len(self.pending) > MAX_CLOCK_LINE:
            # Re-scanning an ever-growing line would be quadratic; timing it is moot.
            self.pending = b""

    def close(self) -> None:
        if self.in_event or self.pending.startswith(b"data:"):
            self.events += 1  # a last event without its blank line still arrived
        self.in_event = False

    def _line(self, line: bytes, at: float) -> None:
        if not line:
            if self.in_event:
                self.events += 1
            self.in_event = False
            return
        if not line.startswith(b"data:"):
            return
        self.in_event = True
        if self.first_token is None and self.is_token is not None:
            try:
                obj = orjson.loads(line[5:])
            except orjson.JSONDecodeError:
                return  # [DONE] or garbage: the validator reports the latter
            if isinstance(obj, dict) and self.is_token(obj):
                self.first_token = at


class Transport:
    """Requests against one base URL; ``timeout`` bounds each request as a whole."""

    def __init__(self, base_url: str, *, api_key: str | None, timeout: float) -> None:
        headers = {"accept": "application/json, text/event-stream"}
        if api_key:
            headers["authorization"] = f"Bearer {api_key}"
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        # httpcore writes headers and body separately; with Nagle on, the body
        # waits for the server's delayed ACK (~40 ms) and would poison TTFT.
        nodelay = httpx.HTTPTransport(socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])
        self.client = httpx.Client(timeout=httpx.Timeout(timeout), headers=headers, transport=nodelay)
        # Until one request got an answer, a refused connection means a wrong
        # URL or a server that is down, not a failing scenario.
        self.reached = False

    def close(self) -> None:
        self.client.close()

    def request(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
        *,
        stream: bool = False,
        is_token: TokenTest | None = None,
    ) -> Exchange:
        url = self.base_url + path
        content = None if body is None else orjson.dumps(body)
        headers = {} if content is None else {"content-type": "application/json"}
        started = time.perf_counter()
        deadline = started + self.timeout
        try:
            with self.client.stream(method, url, content=content, headers=headers) as response:
                self.reached = True
                clock = _EventClock(is_token if stream else None)
                parts: list[bytes] = []
                size = 0
                broken: tuple[str, str] | None = None
                try:
                    for chunk in response.iter_bytes():
                        now = time.perf_counter()
                        parts.append(chunk)
                        size += len(chunk)
                        clock.feed(chunk, now - started)
                        if now > deadline:
                            broken = ("timeout", f"body still arriving after {self.timeout:g}s; stopped reading")
                            break
                        if size > MAX_BODY_BYTES:
                            broken = ("transport", f"body larger than {MAX_BODY_BYTES} bytes; stopped reading")
                            break
                except httpx.TimeoutException:
                    broken = ("timeout", f"body stalled for {self.timeout:g}s")
                except httpx.HTTPError as exc:
                    broken = ("transport", f"body cut off: {type(exc).__name__}: {exc}")
                clock.close()
                return Exchange(
                    status=response.status_code,
                    content_type=response.headers.get("content-type", ""),
                    body=b"".join(parts),
                    total=time.perf_counter() - started,
                    ttft=clock.first_token,
                    events=clock.events,
                    broken=broken,
                )
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            if not self.reached:
                raise ServerUnreachable(f"cannot connect to {self.base_url}: {exc or type(exc).__name__}") from None
            raise RequestFailed("transport", f"cannot connect: {exc or type(exc).__name__}") from None
        except httpx.TimeoutException:
            raise RequestFailed("timeout", f"no response within {self.timeout:g}s") from None
        except httpx.HTTPError as exc:
            raise RequestFailed("transport", f"{type(exc).__name__}: {exc}") from None
