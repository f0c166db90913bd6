"""Same-format requests: forwarded to the upstream byte for byte, streamed."""

from __future__ import annotations

import orjson

from compat_asgi.asgi import Responder, response_headers, route_path, upstream_headers
from compat_asgi.endpoints import Call, Target
from compat_asgi.errors import InvalidRequest
from compat_asgi.paths import api_path
from compat_asgi.settings import Settings
from compat_asgi.types import Headers, Scope
from compat_asgi.upstream import HTTPUpstream, Upstream, UpstreamResponse

__all__ = ["Passthrough"]

# This server sends its own Date and Server; the upstream's would be duplicates.
_OWN_HEADERS = frozenset({b"date", b"server"})


def _client_headers(upstream: Upstream, answer: UpstreamResponse, scope: Scope, prefix: str) -> Headers:
    """The upstream's response headers as this server's own: hop-by-hop ones
    dropped, an encoding kept only while the body still has it, a redirect
    into the upstream's internal address rewritten or dropped."""
    headers: Headers = []
    client_base = (scope.get("root_path", "") + prefix).encode("utf-8")
    for name, value in response_headers(answer.headers):
        lowered = name.lower()
        if lowered in _OWN_HEADERS:
            continue
        if lowered == b"location" and isinstance(upstream, HTTPUpstream):
            rewritten = upstream.client_location(value, client_base)
            if rewritten is None:
                continue
            value = rewritten
        headers.append((name, value))
    if answer.undecodable is not None:
        # The bytes go on as the upstream encoded them, so their coding must too.
        headers += [(k, v) for k, v in answer.headers if k.lower() == b"content-encoding"]
    return headers


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
            # This server's prefix maps onto the upstream's /v1; the client's
            # raw path, checked, so nothing decodes into a new meaning on the way.
            "/v1" + api_path(scope, self.settings.prefix),
            upstream_headers(
                scope, keep_authorization=not self.settings.strip_authorization, json_body=False
            )
            + target.headers,
            body,
            scope.get("query_string", b""),
            scope=scope,
        )
        try:
            headers = _client_headers(target.upstream, upstream, scope, self.settings.prefix)
            await responder.start(upstream.status, headers)
            async for chunk in upstream.chunks(undecoded=True):
                await responder.body(chunk)
            await responder.body(b"", more_body=False)
        finally:
            await upstream.aclose()
