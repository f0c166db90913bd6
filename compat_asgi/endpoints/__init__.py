"""One module per translated or proxied endpoint; each exposes ``handle(call, responder)``."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from compat_asgi.asgi import Responder, parse_json, upstream_headers
from compat_asgi.core.options import RequestOptions
from compat_asgi.errors import InvalidRequest
from compat_asgi.settings import Settings
from compat_asgi.types import Headers, Scope
from compat_asgi.upstream import Upstream, UpstreamResponse

__all__ = ["Call", "Target", "post_json", "IGNORED_HEADER", "report_ignored"]

IGNORED_HEADER = b"x-compat-ignored"


@dataclass(frozen=True, slots=True)
class Target:
    """Where one request goes, and how its body is adapted for that backend."""

    name: str
    upstream: Upstream
    api: Literal["chat", "responses"]
    options: RequestOptions
    model: str | None = None  # the upstream's id for the requested model; None: as requested
    max_output_tokens: int | None = None  # default when the request sets none
    drop_fields: frozenset[str] = field(default_factory=frozenset)
    headers: Headers = field(default_factory=list)  # added to every upstream request

    def adapt(self, body: dict[str, Any], limit_field: str | None) -> dict[str, Any]:
        """The upstream request body with this target's model id, default limit and
        dropped fields applied (``limit_field`` names the output limit in that API)."""
        if self.model is not None:
            body["model"] = self.model
        if self.max_output_tokens is not None and limit_field and limit_field not in body:
            if limit_field != "max_tokens" or "max_completion_tokens" not in body:
                body[limit_field] = self.max_output_tokens
        for name in self.drop_fields:
            body.pop(name, None)
        return body


_UNPARSED: Any = object()
_NO_PARAMS: Mapping[str, str] = {}


@dataclass(slots=True)
class Call:
    """One authenticated request, body read; its target is chosen when first asked
    for, since endpoints answered locally (models, stored responses) need none."""

    scope: Scope
    body: bytes
    owner: str | None  # scope for stored state: a digest of the client's API key
    resolve: Callable[[Call], Target]
    _target: Target | None = None
    mode: str | None = None  # "translated" or "passthrough", for the access log
    # Names of request fields, tools and items accepted but left unused, as the
    # x-compat-ignored header reports them (bounded, safe alphabet).
    ignored: tuple[str, ...] = ()
    _payload: Any = _UNPARSED

    def json(self) -> Any:
        """The body parsed once, shared by routing, the endpoint and the access
        log (:class:`InvalidRequest` when it is not JSON)."""
        if self._payload is _UNPARSED:
            self._payload = parse_json(self.body)
        return self._payload

    def field(self, name: str) -> Any:
        """A top-level field of a JSON object body; None for any other body."""
        try:
            payload = self.json()
        except InvalidRequest:
            return None  # the endpoint reports malformed JSON itself
        return payload.get(name) if isinstance(payload, dict) else None

    @property
    def params(self) -> Mapping[str, str]:
        """The matched route's path parameters (``{"response_id": "resp_..."}``)."""
        params: Mapping[str, str] = self.scope.get("path_params", _NO_PARAMS)
        return params

    @property
    def resolved(self) -> Target | None:
        """The target if it was chosen (local endpoints never choose one)."""
        return self._target

    @property
    def target(self) -> Target:
        if self._target is None:
            self._target = self.resolve(self)
        return self._target


def report_ignored(call: Call, responder: Responder, names: tuple[str, ...]) -> None:
    """Note what the request sent that the server left unused: on the call for
    the access log, and as a header on the answer (not on errors)."""
    call.ignored = names
    if names:
        responder.headers.append((IGNORED_HEADER, ",".join(names).encode("ascii")))


async def post_json(call: Call, settings: Settings, path: str, payload: dict[str, Any]) -> UpstreamResponse:
    """POST a translated request body to the call's upstream, with the client's
    headers as forwarding policy allows plus the target's own."""
    target = call.target
    headers = upstream_headers(
        call.scope, keep_authorization=not settings.strip_authorization, json_body=True
    )
    return await target.upstream.request(
        "POST", path, headers + target.headers, orjson.dumps(payload), scope=call.scope
    )
