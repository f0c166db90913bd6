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
    "DEFAULT_BODY_TIMEOUT",
    "DEFAULT_MAX_JSON_DEPTH",
    "DEFAULT_MAX_HISTORY_BYTES",
    "DEFAULT_MAX_RECORDED_EVENTS",
]

DEFAULT_MAX_BODY = 1 << 20  # client request body
DEFAULT_MAX_UPSTREAM_BODY = 32 << 20  # a non-streamed upstream answer
DEFAULT_KEEPALIVE = 15.0  # seconds of silence before an SSE comment is sent
DEFAULT_MAX_CONCURRENT = 1024  # requests in flight to the upstream
DEFAULT_BODY_TIMEOUT = 30.0  # seconds a client may take to send its request body
# Nesting levels of a JSON request body; deeper bodies are refused before any
# work (orjson re-encodes at most 254 levels, and no real request needs 128).
DEFAULT_MAX_JSON_DEPTH = 128
# Bytes of stored history (previous_response_id chain, conversation) one
# request may pull in: a tiny request naming a long chain must not send
# gigabytes upstream.
DEFAULT_MAX_HISTORY_BYTES = 4 << 20
DEFAULT_MAX_RECORDED_EVENTS = 8 << 20  # bytes of one stream's events kept for ?stream=true replay


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
    max_history_bytes: int = DEFAULT_MAX_HISTORY_BYTES
    # Past this many bytes of events a stored response keeps no events (no ?stream=true replay).
    max_recorded_events: int = DEFAULT_MAX_RECORDED_EVENTS
