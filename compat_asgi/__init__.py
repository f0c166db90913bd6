"""compat_asgi: make one backend speak both OpenAI APIs, chat completions and Responses.

The names below load lazily, so ``import compat_asgi.translate`` (the pure
core) does not pull in the HTTP client or the ASGI shell.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from compat_asgi.errors import (
    CompatError,
    InvalidRequest,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamStatusError,
    UpstreamTimeout,
)

if TYPE_CHECKING:
    from compat_asgi.config import RoutingConfig, load_config
    from compat_asgi.middleware import CompatMiddleware
    from compat_asgi.store import Store, StoredResponse, open_store
    from compat_asgi.upstream import AppUpstream, HTTPUpstream, Upstream

__all__ = [
    "CompatMiddleware",
    "Upstream",
    "AppUpstream",
    "HTTPUpstream",
    "Store",
    "StoredResponse",
    "open_store",
    "RoutingConfig",
    "load_config",
    "CompatError",
    "InvalidRequest",
    "UpstreamError",
    "UpstreamProtocolError",
    "UpstreamStatusError",
    "UpstreamTimeout",
]
__version__ = "0.1.0"

_LAZY = {
    "CompatMiddleware": "compat_asgi.middleware",
    "Upstream": "compat_asgi.upstream",
    "AppUpstream": "compat_asgi.upstream",
    "HTTPUpstream": "compat_asgi.upstream",
    "Store": "compat_asgi.store",
    "StoredResponse": "compat_asgi.store",
    "open_store": "compat_asgi.store",
    "RoutingConfig": "compat_asgi.config",
    "load_config": "compat_asgi.config",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'compat_asgi' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
