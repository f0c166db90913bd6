"""Per-middleware configuration, computed once and shared by the endpoints."""

from __future__ import annotations

from dataclasses import dataclass

from compat_asgi.core.ids import Clock, IdFactory

__all__ = [
    "Settings",
    "DEFAULT_MAX_BODY",
    "DEFAULT_MAX_UPSTREAM_BODY",
    "DEFAULT_KEEPALIVE",
    "DEFAULT_MAX_CONCURRENT",
]

DEFAULT_MAX_BODY = 1 << 20  # client request body
DEFAULT_MAX_UPSTREAM_BODY = 32 << 20  # a non-streamed upstream answer
DEFAULT_KEEPALIVE = 15.0  # seconds of silence before an SSE comment is sent
DEFAULT_MAX_CONCURRENT = 1024  # requests in flight to the upstream


@dataclass(frozen=True, slots=True)
class Settings:
    prefix: str  # where the API lives on this server, e.g. "/v1"
    max_body_size: int
    max_line_size: int
    max_upstream_body_size: int
    keepalive_interval: float
    ids: IdFactory
    clock: Clock
    # The client's Authorization header is ours (API keys are configured), not the upstream's.
    strip_authorization: bool
