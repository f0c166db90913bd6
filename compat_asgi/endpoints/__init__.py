"""One module per translated or proxied endpoint; each exposes ``handle(call, responder)``."""

from __future__ import annotations

from dataclasses import dataclass

from compat_asgi.types import Scope

__all__ = ["Call"]


@dataclass(frozen=True, slots=True)
class Call:
    """One authenticated request, body read."""

    scope: Scope
    body: bytes
    owner: str | None  # scope for stored state: a digest of the client's API key
