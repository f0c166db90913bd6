"""compat_asgi: serve the OpenAI Responses API over a chat-completions backend."""

from compat_asgi.errors import (
    CompatError,
    InvalidRequest,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamStatusError,
    UpstreamTimeout,
)
from compat_asgi.middleware import CompatMiddleware
from compat_asgi.upstream import AppUpstream, HTTPUpstream, Upstream

__all__ = [
    "CompatMiddleware",
    "Upstream",
    "AppUpstream",
    "HTTPUpstream",
    "CompatError",
    "InvalidRequest",
    "UpstreamError",
    "UpstreamProtocolError",
    "UpstreamStatusError",
    "UpstreamTimeout",
]
__version__ = "0.1.0"
