"""Routing configuration: several upstreams, and public model names mapped onto them.

The same structure comes from a TOML file (``compat-asgi serve --config``,
read with the standard library) or as a dict to ``CompatMiddleware(config=...)``::

    default_upstream = "local"          # for requests with no "model" field (optional; the only upstream by default)
    upstream_header = false             # let clients pick with "x-compat-upstream: NAME"

    [upstreams.local]
    url = "http://127.0.0.1:8080/v1"    # or app = "package.module:attribute" (in-process ASGI app)
    api = "chat"                        # what it speaks: "chat" or "responses"
    key_env = "LOCAL_KEY"               # or key = "..." : bearer key sent to it
    timeout = 600                       # seconds of silence tolerated
    connect_timeout = 10
    headers = { "x-tenant" = "me" }     # extra headers on every request to it

    [models."llama-3-8b"]               # the public name clients send
    upstream = "local"
    id = "meta-llama/Meta-Llama-3-8B-Instruct"   # what the upstream is sent (default: the public name)
    think_tags = true                   # <think>...</think> in the text is reasoning
    max_output_tokens = 4096            # default when a request sets none
    drop_fields = ["user", "top_p"]     # request fields this backend rejects

Every mistake is reported when the configuration is loaded, as
``ConfigError("compat.toml: models.llama-3-8b.upstream: no upstream named 'x'")``,
never at the first request.
"""

from __future__ import annotations

import importlib
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from compat_asgi.types import ASGIApp
from compat_asgi.upstream import DEFAULT_CONNECT_TIMEOUT, DEFAULT_TIMEOUT

__all__ = ["ConfigError", "UpstreamConfig", "ModelConfig", "RoutingConfig", "load_config", "parse_config"]


class ConfigError(ValueError):
    """The configuration is wrong: says where (file, key) and why."""


@dataclass(frozen=True, slots=True)
class UpstreamConfig:
    name: str
    api: Literal["chat", "responses"]
    url: str | None = None
    app: ASGIApp | None = None
    key: str | None = None
    timeout: float = DEFAULT_TIMEOUT
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    headers: tuple[tuple[bytes, bytes], ...] = ()


@dataclass(frozen=True, slots=True)
class ModelConfig:
    name: str
    upstream: str
    id: str
    think_tags: bool = False
    max_output_tokens: int | None = None
    drop_fields: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True, slots=True)
class RoutingConfig:
    upstreams: dict[str, UpstreamConfig]
    models: dict[str, ModelConfig]
    default_upstream: str | None = None
    upstream_header: bool = False


_TOP = {"upstreams", "models", "default_upstream", "upstream_header"}
_UPSTREAM_KEYS = {"url", "app", "api", "key", "key_env", "timeout", "connect_timeout", "headers"}
_MODEL_KEYS = {"upstream", "id", "think_tags", "max_output_tokens", "drop_fields"}


class _Reader:
    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, key: str, reason: str) -> ConfigError:
        return ConfigError(f"{self.source}: {key}: {reason}")

    def table(self, value: Any, key: str) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            raise self.fail(key, f"expected a table, got {type(value).__name__}")
        return value

    def unknown(self, table: Mapping[str, Any], allowed: set[str], key: str) -> None:
        for name in table:
            if name not in allowed:
                raise self.fail(f"{key}.{name}" if key else name, f"unknown setting (allowed: {', '.join(sorted(allowed))})")

    def string(self, table: Mapping[str, Any], name: str, key: str, *, required: bool = False) -> str | None:
        value = table.get(name)
        if value is None:
            if required:
                raise self.fail(f"{key}.{name}", "is required")
            return None
        if not isinstance(value, str) or not value:
            raise self.fail(f"{key}.{name}", f"expected a non-empty string, got {value!r}")
        return value

    def number(self, table: Mapping[str, Any], name: str, key: str, default: float) -> float:
        value = table.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise self.fail(f"{key}.{name}", f"expected a positive number, got {value!r}")
        return float(value)

    def boolean(self, table: Mapping[str, Any], name: str, key: str) -> bool:
        value = table.get(name, False)
        if not isinstance(value, bool):
            raise self.fail(f"{key}.{name}" if key else name, f"expected true or false, got {value!r}")
        return value


def _import_app(reference: str, reader: _Reader, key: str) -> ASGIApp:
    module_name, _, attribute = reference.partition(":")
    if not module_name or not attribute:
        raise reader.fail(key, f"expected 'package.module:attribute', got {reference!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise reader.fail(key, f"cannot import {module_name!r}: {exc}") from None
    app = getattr(module, attribute, None)
    if not callable(app):
        raise reader.fail(key, f"{reference!r} is not an ASGI app")
    return app  # type: ignore[no-any-return]


def _upstream(name: str, raw: Any, reader: _Reader) -> UpstreamConfig:
    key = f"upstreams.{name}"
    table = reader.table(raw, key)
    reader.unknown(table, _UPSTREAM_KEYS, key)
    api = table.get("api", "chat")
    if api not in ("chat", "responses"):
        raise reader.fail(f"{key}.api", f"expected 'chat' or 'responses', got {api!r}")
    url = reader.string(table, "url", key)
    app: Any = table.get("app")
    if (url is None) == (app is None):
        raise reader.fail(key, "needs exactly one of 'url' or 'app'")
    if url is not None and not url.startswith(("http://", "https://")):
        raise reader.fail(f"{key}.url", f"expected an http(s) URL, got {url!r}")
    if isinstance(app, str):
        app = _import_app(app, reader, f"{key}.app")
    elif app is not None and not callable(app):
        raise reader.fail(f"{key}.app", "expected an ASGI app or 'package.module:attribute'")
    secret = reader.string(table, "key", key)
    key_env = reader.string(table, "key_env", key)
    if key_env is not None:
        if secret is not None:
            raise reader.fail(key, "set 'key' or 'key_env', not both")
        secret = os.environ.get(key_env)
        if not secret:
            raise reader.fail(f"{key}.key_env", f"environment variable {key_env} is not set")
    headers = reader.table(table.get("headers", {}), f"{key}.headers")
    for header, value in headers.items():
        if not isinstance(value, str):
            raise reader.fail(f"{key}.headers.{header}", f"expected a string, got {value!r}")
    return UpstreamConfig(
        name=name,
        api=api,
        url=url,
        app=app,
        key=secret,
        timeout=reader.number(table, "timeout", key, DEFAULT_TIMEOUT),
        connect_timeout=reader.number(table, "connect_timeout", key, DEFAULT_CONNECT_TIMEOUT),
        headers=tuple((h.lower().encode(), v.encode()) for h, v in headers.items()),
    )


def _model(name: str, raw: Any, upstreams: Mapping[str, UpstreamConfig], reader: _Reader) -> ModelConfig:
    key = f"models.{name}"
    table = reader.table(raw, key)
    reader.unknown(table, _MODEL_KEYS, key)
    upstream = reader.string(table, "upstream", key, required=True)
    assert upstream is not None
    if upstream not in upstreams:
        raise reader.fail(f"{key}.upstream", f"no upstream named {upstream!r} (have: {', '.join(sorted(upstreams)) or 'none'})")
    limit = table.get("max_output_tokens")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise reader.fail(f"{key}.max_output_tokens", f"expected a positive integer, got {limit!r}")
    drop = table.get("drop_fields", [])
    if not isinstance(drop, list) or not all(isinstance(f, str) and f for f in drop):
        raise reader.fail(f"{key}.drop_fields", f"expected a list of field names, got {drop!r}")
    if "model" in drop or "messages" in drop or "input" in drop:
        raise reader.fail(f"{key}.drop_fields", "model, messages and input cannot be dropped")
    return ModelConfig(
        name=name,
        upstream=upstream,
        id=reader.string(table, "id", key) or name,
        think_tags=reader.boolean(table, "think_tags", key),
        max_output_tokens=limit,
        drop_fields=frozenset(drop),
    )


def parse_config(data: Mapping[str, Any], source: str = "config") -> RoutingConfig:
    """Validate a configuration dict; ``source`` names it in error messages."""
    reader = _Reader(source)
    reader.unknown(data, _TOP, "")
    upstreams_raw = reader.table(data.get("upstreams", {}), "upstreams")
    if not upstreams_raw:
        raise reader.fail("upstreams", "declare at least one upstream")
    upstreams = {name: _upstream(name, raw, reader) for name, raw in upstreams_raw.items()}
    models_raw = reader.table(data.get("models", {}), "models")
    models = {name: _model(name, raw, upstreams, reader) for name, raw in models_raw.items()}
    default = data.get("default_upstream")
    if default is not None and default not in upstreams:
        raise reader.fail("default_upstream", f"no upstream named {default!r}")
    if default is None and len(upstreams) == 1:
        default = next(iter(upstreams))
    return RoutingConfig(
        upstreams=upstreams,
        models=models,
        default_upstream=default,
        upstream_header=reader.boolean(data, "upstream_header", ""),
    )


def load_config(path: str) -> RoutingConfig:
    """Read and validate a TOML configuration file."""
    try:
        with open(path, "rb") as file:
            data = tomllib.load(file)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return parse_config(data, path)
