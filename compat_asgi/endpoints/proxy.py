"""Same-format requests: forwarded to the upstream byte for byte, streamed."""

from __future__ import annotations

import orjson

from compat_asgi.asgi import Responder, response_headers, route_path, upstream_headers
from compat_asgi.endpoints import Call, Target
from compat_asgi.errors import InvalidRequest
from compat_asgi.settings import Settings

__all__ = ["Passthrough"]


def _adapted(call: Call, target: Target, path: str) -> bytes:
    """The body with the target's model id and options applied; bodies that
    are not JSON objects are the backend's business and pass unchanged."""
    try:
        payload = call.json()
    except InvalidRequest:
        return call.body
    if not isinstance(payload, dict):
        return call.body
    if path.endswith("/chat/completions"):
        limit: str | None = "max_tokens"
    elif path.endswith("/responses"):
        limit = "max_output_tokens"
    else:
        limit = None  # embeddings and the like have no output limit
    # A copy: the parsed body is shared, and the access log wants the public model.
    return orjson.dumps(target.adapt(dict(payload), limit))


class Passthrough:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def handle(self, call: Call, responder: Responder) -> None:
        scope = call.scope
        target = call.target
        body = call.body
        if target.model is not None or target.drop_fields or target.max_output_tokens is not None:
            body = _adapted(call, target, route_path(scope))
        upstream = await target.upstream.request(
            scope["method"],
            # This server's prefix maps onto the upstream's /v1.
            "/v1" + route_path(scope)[len(self.settings.prefix) :],
            upstream_headers(
                scope, keep_authorization=not self.settings.strip_authorization, json_body=False
            )
            + target.headers,
            body,
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
