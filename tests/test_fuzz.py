"""Hypothesis-generated request bodies never produce a 500 or an unhandled error:
a valid body gets an answer, anything else a 400 that names the bad field."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import call

from compat_asgi import CompatMiddleware
from compat_asgi.demo import DemoChatApp

APP = CompatMiddleware(DemoChatApp())

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
FIELDS = ["model", "input", "instructions", "tools", "tool_choice", "text", "temperature", "top_p",
          "max_output_tokens", "metadata", "parallel_tool_calls", "reasoning", "user", "stream", "store", "include"]
ITEM_TYPES = ["message", "function_call", "function_call_output", "reasoning", "item_reference", "nonsense", None]


@st.composite
def mutated_bodies(draw: st.DrawFn) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "demo", "input": "hi"}
    for field in draw(st.lists(st.sampled_from(FIELDS), max_size=3)):
        body[field] = draw(json_values)
    return body


@st.composite
def item_lists(draw: st.DrawFn) -> dict[str, Any]:
    items = []
    for _ in range(draw(st.integers(1, 4))):
        item: dict[str, Any] = draw(st.dictionaries(st.sampled_from(["role", "content", "call_id", "name", "arguments", "output", "id", "summary"]), json_values, max_size=4))
        kind = draw(st.sampled_from(ITEM_TYPES))
        if kind is not None:
            item["type"] = kind
        items.append(item)
    return {"model": "demo", "input": items}


def deep(depth: int) -> Any:
    value: Any = "x"
    for _ in range(depth):
        value = [value]
    return value


def check(raw: bytes) -> None:
    result = asyncio.run(call(APP, "POST", "/v1/responses", raw))
    assert result.status in (200, 400), (result.status, result.body[:300])
    if result.status == 400:
        error = result.json()["error"]
        assert error["type"] == "invalid_request_error" and error["message"]
        body = None
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass
        if isinstance(body, dict) and error["code"] != "invalid_json":
            assert isinstance(error["param"], str), error  # "" when the bad key is itself ""


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_bodies() | item_lists() | json_values.map(lambda v: {"model": "demo", "input": v}))
def test_generated_bodies_get_an_answer_or_a_400_with_param(body: dict[str, Any]) -> None:
    check(json.dumps(body).encode())


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode()))
def test_arbitrary_bytes_never_500(raw: bytes) -> None:
    check(raw)


def test_extremes() -> None:
    check(orjson.dumps({"model": "demo", "input": deep(200)}))
    check(b'{"model": "demo", "input": ' + b"[" * 5000 + b"]" * 5000 + b"}")
    check(orjson.dumps({"model": "demo", "input": "\u202e\U0001f600\x00" * 10000}))
    check(orjson.dumps({"model": "\ud7ff" * 1000, "input": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "é" * 100000}]}]}))
