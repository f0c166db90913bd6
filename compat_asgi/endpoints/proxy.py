"""Same-format requests: forwarded to the upstream byte for byte, streamed."""

from __future__ import annotations

from compat_asgi.asgi import Responder, response_headers, route_path, upstream_headers
from compat_asgi.endpoints import Call
from compat_asgi.settings import Settings
from compat_asgi.upstream import Upstream

__all__ = ["Passthrough"]


class Passthrough:
    def __init__(self, upstream: Upstream, settings: Settings) -> None:
        self.upstream = upstream
        self.settings = settings

    async def handle(self, call: Call, responder: Responder) -> None:
        scope = call.scope
        upstream = await self.upstream.request(
            scope["method"],
            # This server's prefix maps onto the upstream's /v1.
            "/v1" + route_path(scope)[len(self.settings.prefix) :],
            upstream_headers(
                scope, keep_authorization=not self.settings.strip_authorization, json_body=False
            ),
            call.body,
            scope.get("query_string", b""),
            scope=scope,
        )
        try:
            await responder.start(upstream.status, response_headers(upstream.headers))
            async for chunk in upstream.chunks():
                await responder.body(chunk)
            await responder.body(b"", more_body=False)
        finally:
            await upstream.aclose()
