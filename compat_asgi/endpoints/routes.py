"""The route table: every path this server answers itself, as ``(method,
template, handler)`` entries that each endpoint module declares.

Templates are compiled once. A parameter (``{response_id}``) is exactly one
path segment of the already-decoded path, limited to the characters ids are
made of (``resp_...``, ``conv_...``, ``msg_...``): anything else is not a
route of ours, so it goes where unknown paths go (the wrapped app or the
upstream) instead of reaching a store key or a log line.
``{name:segment}`` allows any single segment, for names the server does not
mint (model ids such as ``llama3:8b``).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass

from compat_asgi.asgi import Responder
from compat_asgi.endpoints import Call

__all__ = ["Handler", "Route", "RouteTable", "Methods", "compile_template"]

Handler = Callable[[Call, Responder], Awaitable[None]]
# method -> (handler, path parameters) for one path, in declaration order
Methods = dict[str, tuple[Handler, Mapping[str, str]]]

_CHARSETS = {
    "id": "[A-Za-z0-9_-]{1,128}",
    "segment": "[^/]{1,256}",
}
_PARAMETER = re.compile(r"\{([a-z_]+)(?::([a-z]+))?\}")
_NO_PARAMETERS: Mapping[str, str] = {}


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    path: str  # below the prefix: "/responses/{response_id}/input_items"
    handler: Handler


def compile_template(template: str) -> re.Pattern[str] | None:
    """The template's pattern; None when it has no parameters (matched literally)."""
    pattern = []
    end = 0
    for match in _PARAMETER.finditer(template):
        name, kind = match.group(1), match.group(2) or "id"
        if kind not in _CHARSETS:
            raise ValueError(f"unknown parameter kind {kind!r} in route {template!r}")
        pattern.append(re.escape(template[end : match.start()]))
        pattern.append(f"(?P<{name}>{_CHARSETS[kind]})")
        end = match.end()
    if not pattern:
        return None
    pattern.append(re.escape(template[end:]))
    return re.compile("".join(pattern))


class RouteTable:
    """Literal paths are looked up first (the hot ``/responses`` and
    ``/chat/completions`` cost one dict lookup), then templates in
    declaration order; for each method the first matching route wins."""

    def __init__(self, routes: Iterable[Route]) -> None:
        self.routes = list(routes)
        self._literal: dict[str, dict[str, Handler]] = {}
        self._templates: list[tuple[re.Pattern[str], dict[str, Handler]]] = []
        compiled: dict[str, dict[str, Handler]] = {}
        for route in self.routes:
            if not route.path.startswith("/"):
                raise ValueError(f"route path must start with '/': {route.path!r}")
            methods = compiled.get(route.path)
            if methods is None:
                methods = compiled[route.path] = {}
                pattern = compile_template(route.path)
                if pattern is None:
                    self._literal[route.path] = methods
                else:
                    self._templates.append((pattern, methods))
            if route.method in methods:
                raise ValueError(f"duplicate route {route.method} {route.path}")
            methods[route.method] = route.handler

    def match(self, path: str) -> Methods | None:
        """What answers ``path`` (below the prefix), by method; None: no route."""
        found: Methods = {}
        literal = self._literal.get(path)
        if literal is not None:
            found = {method: (handler, _NO_PARAMETERS) for method, handler in literal.items()}
        for pattern, methods in self._templates:
            matched = pattern.fullmatch(path)
            if matched is None:
                continue
            params = matched.groupdict()
            for method, handler in methods.items():
                found.setdefault(method, (handler, params))
        return found or None
