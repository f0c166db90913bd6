"""Operating a deployment: health, readiness, access logs, metrics, request ids,
security headers, Idempotency-Key, compressed request bodies."""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import time
from typing import Any

import httpx
import openai
import pytest
import zstandard
from prometheus_client.parser import text_string_to_metric_families
from support import call, serve
from test_stored import RecordingDemo

from compat_asgi import CompatMiddleware
from compat_asgi.demo import DemoChatApp

BODY = {"model": "demo", "input": "hello"}


def test_health_and_readiness() -> None:
    app = CompatMiddleware(DemoChatApp(), health=True, store="memory")
    with serve(app) as url:
        assert httpx.get(url + "/healthz").json() == {"status": "ok"}
        ready = httpx.get(url + "/readyz")
        assert ready.status_code == 200
        assert ready.json() == {"status": "ready", "checks": {"upstream:default": True, "store": True}}
    down = CompatMiddleware(upstream="http://127.0.0.1:1/v1", health=True)
    result = asyncio.run(call(down, "GET", "/readyz"))
    assert result.status == 503
    assert result.json()["checks"] == {"upstream:default": False}
    # Without health=True the wrapped app keeps those paths.
    plain = asyncio.run(call(CompatMiddleware(DemoChatApp()), "GET", "/healthz"))
    assert plain.status == 404 and "Invalid URL" in plain.json()["error"]["message"]


def test_access_log_has_one_line_per_request(caplog: pytest.LogCaptureFixture, demo_upstream: str) -> None:
    app = CompatMiddleware(upstream=demo_upstream, access_log="json", store="memory")
    # The level first: the server (and its last log line) must be done before it is restored.
    with caplog.at_level(logging.INFO, logger="compat_asgi.access"), serve(app) as url:
        created = httpx.post(url + "/v1/responses", json={**BODY, "stream": True}, headers={"x-request-id": "trace-42"})
        httpx.post(url + "/v1/chat/completions", json={"model": "demo", "messages": [{"role": "user", "content": "x"}]})
        httpx.get(url + "/v1/models")
        httpx.post(url + "/v1/responses", json={"model": "demo"})
        # The server thread writes a line after the last body byte, which the
        # client may have before that: wait (bounded) for all four.
        deadline = time.monotonic() + 10
        while sum(r.name == "compat_asgi.access" for r in caplog.records) < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "compat_asgi.access"]
    assert [(l["method"], l["path"], l["mode"], l["status"]) for l in lines] == [
        ("POST", "/v1/responses", "translated", 200),
        ("POST", "/v1/chat/completions", "passthrough", 200),
        ("GET", "/v1/models", "local", 200),
        ("POST", "/v1/responses", "translated", 400),
    ]
    first = lines[0]
    assert first["request_id"] == "trace-42" and created.headers["x-request-id"] == "trace-42"
    assert first["model"] == "demo" and first["upstream"] == "default" and first["stream"] is True
    assert 0 < first["ttfb_ms"] <= first["duration_ms"]
    assert lines[3]["error"] == "missing_required_parameter"


def test_metrics_endpoint() -> None:
    app = CompatMiddleware(DemoChatApp(), metrics=True)
    with serve(app) as url:
        for _ in range(3):
            httpx.post(url + "/v1/responses", json=BODY)
        exposition = httpx.get(url + "/metrics")
    assert exposition.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(exposition.text)}
    requests = [s for s in families["compat_asgi_requests"].samples if s.name.endswith("_total")]
    assert any(s.labels["path"] == "/v1/responses" and s.labels["mode"] == "translated" and s.value == 3 for s in requests)
    assert "compat_asgi_ttfb_seconds" in families


def test_request_id_and_security_headers_on_generated_responses() -> None:
    app = CompatMiddleware(DemoChatApp())
    with serve(app) as url:
        plain = httpx.post(url + "/v1/responses", json=BODY)
        streamed = httpx.post(url + "/v1/responses", json={**BODY, "stream": True})
        error = httpx.post(url + "/v1/responses", content=b"{")
        forged = httpx.post(url + "/v1/responses", json=BODY, headers={"x-request-id": "bad id\twith spaces"})
    for response in (plain, streamed, error):
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-request-id"].startswith("req_")
    assert plain.headers["x-request-id"] != streamed.headers["x-request-id"]
    assert streamed.headers["cache-control"] == "no-store"
    assert forged.headers["x-request-id"].startswith("req_")


def test_idempotency_key_replays_the_first_answer() -> None:
    demo = RecordingDemo()
    app = CompatMiddleware(demo, idempotency_window=60, api_keys=["a", "b"])
    with serve(app) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="a", max_retries=0)
        headers = {"Idempotency-Key": "retry-1"}
        first = client.responses.with_raw_response.create(model="demo", input="once", extra_headers=headers)
        again = client.responses.with_raw_response.create(model="demo", input="once", extra_headers=headers)
        assert again.parse().id == first.parse().id
        assert again.headers["idempotent-replayed"] == "true"
        assert len(demo.messages) == 1
        with pytest.raises(openai.UnprocessableEntityError) as caught:
            client.responses.create(model="demo", input="a different body", extra_headers=headers)
        assert caught.value.body["code"] == "idempotency_key_reused"  # type: ignore[index]
        # Another API key has its own keys; streams are never replayed.
        other = openai.OpenAI(base_url=url + "/v1", api_key="b", max_retries=0)
        assert other.responses.create(model="demo", input="once", extra_headers=headers).id != first.parse().id
        for _ in range(2):
            with client.responses.stream(model="demo", input="s", extra_headers={"Idempotency-Key": "s"}) as s:
                s.get_final_response()
        assert len(demo.messages) == 4


def test_concurrent_retries_call_the_upstream_once() -> None:
    demo = RecordingDemo()
    app = CompatMiddleware(demo, idempotency_window=60)

    async def scenario() -> list[Any]:
        scope_headers = [(b"content-type", b"application/json"), (b"idempotency-key", b"k")]
        from support import http_scope

        results = await asyncio.gather(*(
            call(app, "POST", "/v1/responses", BODY, scope=http_scope("POST", "/v1/responses", scope_headers)) for _ in range(5)
        ))
        return [r.json()["id"] for r in results]

    ids = asyncio.run(scenario())
    assert len(set(ids)) == 1 and len(demo.messages) == 1


def test_compressed_request_bodies() -> None:
    app = CompatMiddleware(DemoChatApp(), max_body_size=64 << 10)
    raw = json.dumps(BODY).encode()
    with serve(app) as url:
        for coding, data in (("gzip", gzip.compress(raw)), ("zstd", zstandard.ZstdCompressor().compress(raw))):
            response = httpx.post(url + "/v1/responses", content=data, headers={"content-encoding": coding, "content-type": "application/json"})
            assert response.status_code == 200, response.text
            assert response.json()["output"][0]["content"][0]["text"].startswith("Hello! You said: hello.")
        bomb = gzip.compress(b'{"model": "demo", "input": "' + b"a" * (20 << 20) + b'"}')
        assert len(bomb) < 64 << 10
        refused = httpx.post(url + "/v1/responses", content=bomb, headers={"content-encoding": "gzip"})
        assert refused.status_code == 413
        unknown = httpx.post(url + "/v1/responses", content=raw, headers={"content-encoding": "br"})
        assert unknown.status_code == 415
        assert unknown.json()["error"]["code"] == "unsupported_content_encoding"
