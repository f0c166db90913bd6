"""The route table: templates compiled once, ids limited to id characters,
and the middleware's dispatch on top of it (405 with Allow, unknown paths
passed on)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from support import call

from compat_asgi import CompatMiddleware
from compat_asgi.asgi import Responder
from compat_asgi.endpoints import Call
from compat_asgi.endpoints.routes import Route, RouteTable, compile_template
from compat_asgi.store.memory import MemoryStore
from compat_asgi.types import Receive, Scope, Send


async def nothing(call: Call, responder: Responder) -> None:
    return None


async def other(call: Call, responder: Responder) -> None:
    return None


def table() -> RouteTable:
    return RouteTable(
        [
            Route("POST", "/responses", nothing),
            Route("POST", "/responses/compact", other),
            Route("GET", "/responses/{response_id}", nothing),
            Route("DELETE", "/responses/{response_id}", other),
            Route("GET", "/responses/{response_id}/input_items", nothing),
            Route("GET", "/models/{model_id:segment}", nothing),
        ]
    )


def test_literal_and_template_matches() -> None:
    routes = table()
    assert routes.match("/responses") == {"POST": (nothing, {})}
    assert routes.match("/responses/resp_1-A") == {
        "GET": (nothing, {"response_id": "resp_1-A"}),
        "DELETE": (other, {"response_id": "resp_1-A"}),
    }
    # A literal path also matching a template: both answer, each its own method.
    assert routes.match("/responses/compact") == {
        "POST": (other, {}),
        "GET": (nothing, {"response_id": "compact"}),
        "DELETE": (other, {"response_id": "compact"}),
    }
    assert routes.match("/responses/resp_1/input_items") == {"GET": (nothing, {"response_id": "resp_1"})}
    assert routes.match("/models/llama3:8b") == {"GET": (nothing, {"model_id": "llama3:8b"})}


@pytest.mark.parametrize(
    "path",
    [
        "/responses/",
        "/responses//input_items",
        "/responses/resp_1/other",
        "/responses/resp 1",
        "/responses/resp.1",
        "/responses/../models",
        "/responses/resp_1\n",
        "/responses/résumé",
        "/responses/" + "a" * 129,
        "/models/org/model",
        "/models/",
        "/chat/completions",
    ],
)
def test_no_route(path: str) -> None:
    assert table().match(path) is None


@given(st.text(max_size=40))
def test_parameters_are_one_segment_of_id_characters(segment: str) -> None:
    found = table().match("/responses/" + segment)
    allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")
    if segment and set(segment) <= allowed:
        assert found is not None and found["GET"][1] == {"response_id": segment}
    else:
        assert found is None


def test_table_rejects_mistakes() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        RouteTable([Route("GET", "/a/{x}", nothing), Route("GET", "/a/{x}", other)])
    with pytest.raises(ValueError, match="unknown parameter kind"):
        compile_template("/a/{x:path}")
    with pytest.raises(ValueError, match="start with"):
        RouteTable([Route("GET", "a", nothing)])


class Native:
    def __init__(self) -> None:
        self.paths: list[str] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.paths.append(scope["path"])
        await send({"type": "http.response.start", "status": 218, "headers": []})
        await send({"type": "http.response.body", "body": b""})


def test_middleware_dispatch() -> None:
    native = Native()
    app = CompatMiddleware(native, store=MemoryStore())

    async def scenario() -> list[Any]:
        return [
            await call(app, "GET", "/v1/responses/resp_missing"),
            await call(app, "PUT", "/v1/responses/resp_missing"),
            await call(app, "GET", "/v1/responses/not.an.id"),
            await call(app, "GET", "/v1/chat/completions"),
            await call(app, "POST", "/v1/models"),
        ]

    missing, put, odd, chat, models = asyncio.run(scenario())
    assert missing.status == 404 and missing.json()["error"]["param"] == "response_id"
    assert put.status == 405 and put.header(b"allow") == b"GET, DELETE"
    # Not an id: not ours, so the wrapped app gets it, as it gets its own chat API.
    assert (odd.status, chat.status) == (218, 218)
    assert native.paths == ["/v1/responses/not.an.id", "/v1/chat/completions"]
    assert models.status == 405 and models.header(b"allow") == b"GET"
