"""``GET /models`` and ``GET /models/{id}``: the upstream's list when it has one,
else the configured names; each entry says which APIs reach the model."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from compat_asgi.asgi import Responder, parse_upstream_json, upstream_headers
from compat_asgi.endpoints import Call
from compat_asgi.endpoints.routes import Route
from compat_asgi.errors import CompatError, NotFound
from compat_asgi.settings import Settings
from compat_asgi.upstream import Upstream

__all__ = ["Models", "APIS"]

# Every model is reachable both ways: natively, and translated by this server.
APIS = ["chat.completions", "responses"]
_MAX_MODELS_BODY = 4 << 20


class Models:
    """``upstream`` None: list exactly the configured names (a routing config)."""

    def __init__(self, upstream: Upstream | None, settings: Settings, configured: Sequence[str]) -> None:
        self.upstream = upstream
        self.settings = settings
        self.configured = list(configured)

    async def _upstream_models(self, call: Call) -> list[dict[str, Any]] | None:
        if self.upstream is None:
            return None
        try:
            upstream = await self.upstream.request(
                "GET",
                "/v1/models",
                upstream_headers(
                    call.scope,
                    keep_authorization=not self.settings.strip_authorization,
                    json_body=False,
                ),
                b"",
                scope=call.scope,
            )
        except CompatError:
            return None
        try:
            if upstream.status != 200:
                return None
            listing = parse_upstream_json(await upstream.read(_MAX_MODELS_BODY))
        except CompatError:
            return None
        finally:
            await upstream.aclose()
        data = listing.get("data") if isinstance(listing, dict) else None
        if not isinstance(data, list):
            return None
        return [model for model in data if isinstance(model, dict) and isinstance(model.get("id"), str)]

    async def _models(self, call: Call) -> list[dict[str, Any]]:
        models = await self._upstream_models(call)
        if models is None:
            models = [
                {"id": name, "object": "model", "created": 0, "owned_by": "compat-asgi"}
                for name in self.configured
            ]
        return [{**model, "apis": APIS} for model in models]

    def routes(self) -> list[Route]:
        return [
            Route("GET", "/models", self.list),
            Route("GET", "/models/{model_id:segment}", self.retrieve),
        ]

    async def list(self, call: Call, responder: Responder) -> None:
        await responder.send_json(200, {"object": "list", "data": await self._models(call)})

    async def retrieve(self, call: Call, responder: Responder) -> None:
        model_id = call.params["model_id"]
        for model in await self._models(call):
            if model["id"] == model_id:
                await responder.send_json(200, model)
                return
        raise NotFound(f"The model '{model_id}' does not exist.", param="model", code="model_not_found")
