"""Which upstream a request goes to: by its ``model`` (with a routing config),
by the ``x-compat-upstream`` header when allowed, or the one default."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from compat_asgi.config import RoutingConfig
from compat_asgi.core.options import RequestOptions
from compat_asgi.endpoints import Call, Target
from compat_asgi.errors import NotFound
from compat_asgi.types import ASGIApp
from compat_asgi.upstream import AppUpstream, HTTPUpstream, Upstream

__all__ = ["Router", "UPSTREAM_HEADER"]

UPSTREAM_HEADER = b"x-compat-upstream"


class Router:
    def __init__(
        self,
        default: Target | None,
        *,
        upstreams: Mapping[str, Target] | None = None,
        models: Mapping[str, Target] | None = None,
        header: bool = False,
    ) -> None:
        self.default = default
        self.upstreams = dict(upstreams or {})
        if default is not None:
            self.upstreams.setdefault(default.name, default)
        self.models = dict(models or {})
        self.header = header

    @classmethod
    def from_config(cls, config: RoutingConfig, options: RequestOptions, fallback_app: ASGIApp | None) -> Router:
        """Targets for every configured upstream and model, clients built once."""
        bases: dict[str, Target] = {}
        for name, spec in config.upstreams.items():
            upstream: Upstream
            if spec.url is not None:
                upstream = HTTPUpstream(
                    spec.url, api_key=spec.key, timeout=spec.timeout, connect_timeout=spec.connect_timeout
                )
            else:
                app = spec.app or fallback_app
                assert app is not None
                upstream = AppUpstream(app)
            bases[name] = Target(name, upstream, spec.api, options, headers=list(spec.headers))
        models = {}
        for public, model in config.models.items():
            base = bases[model.upstream]
            model_options = replace(options, think_tags=model.think_tags or options.think_tags)
            models[public] = Target(
                model.upstream,
                base.upstream,
                base.api,
                model_options,
                model=model.id,
                max_output_tokens=model.max_output_tokens,
                drop_fields=model.drop_fields,
                headers=base.headers,
            )
        default = bases[config.default_upstream] if config.default_upstream else None
        return cls(default, upstreams=bases, models=models, header=config.upstream_header)

    @property
    def all_upstreams(self) -> list[tuple[str, Upstream]]:
        return [(name, target.upstream) for name, target in self.upstreams.items()]

    def resolve(self, call: Call) -> Target:
        """The target for one request (its body is parsed only when models are configured)."""
        chosen: Target | None = None
        if self.header:
            for key, value in call.scope.get("headers", ()):
                if key == UPSTREAM_HEADER:
                    name = value.decode("latin-1")
                    chosen = self.upstreams.get(name)
                    if chosen is None:
                        raise NotFound(
                            f"No upstream named '{name}' (x-compat-upstream).",
                            code="upstream_not_found",
                        )
                    break
        if not self.models:
            if chosen is not None:
                return chosen
            if self.default is None:
                raise NotFound("No upstream is configured for this request.", code="upstream_not_found")
            return self.default
        model = call.field("model")
        if not isinstance(model, str):
            target = chosen or self.default
            if target is None:
                raise NotFound("The request names no model, and no default upstream is configured.", param="model", code="model_not_found")
            return target
        target = self.models.get(model)
        if target is None:
            raise NotFound(
                f"The model '{model}' does not exist or you do not have access to it.",
                param="model",
                code="model_not_found",
            )
        if chosen is not None and chosen.name != target.name:
            return chosen  # the header wins; the model name goes as sent
        return target

