"""Hostile input and resource exhaustion: every bound checked before work, a
4xx in OpenAI's envelope when one fails, nothing held that is not in use,
nothing amplified, nothing forged. One test per finding; paths are in
test_paths.py."""

from __future__ import annotations

import asyncio
import gzip
import logging
import socket
import threading
import time
from typing import Any

import httpx
import orjson
import pytest
import respx
from support import TRANSPORTS, Recorded, call, http_scope, serve

from compat_asgi import CompatMiddleware, HTTPUpstream
from compat_asgi.demo import DemoChatApp
from compat_asgi.idempotency import IdempotencyCache
from compat_asgi.observability import AccessLog, RequestRecord
from compat_asgi.store import MemoryStore
from compat_asgi.types import Message, Receive, Scope, Send
from compat_asgi.upstream import AppUpstream

UPSTREAM = "http://10.0.0.1:9/base/v1"  # never reached: respx answers


class Counting:
    """Wraps an ASGI app and counts the HTTP requests that reach it."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.calls = 0
        self.headers: list[dict[bytes, bytes]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.calls += 1
            self.headers.append(dict(scope["headers"]))
        await self.app(scope, receive, send)


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


# -- 1: JSON nesting ----------------------------------------------------------------


@pytest.mark.parametrize("depth", [129, 300, 700, 1024, 5000])
@pytest.mark.parametrize("path", ["/v1/responses", "/v1/chat/completions"])
def test_deeply_nested_json_is_400_before_the_upstream_is_called(depth: int, path: str) -> None:
    upstream = Counting(DemoChatApp())
    app = CompatMiddleware(upstream=AppUpstream(upstream))
    body = b'{"model":"m","stream":false,"input":' + nested(depth) + b',"messages":[]}'
    result = asyncio.run(call(app, "POST", path, body))
    assert result.status == 400, result.body
    error = result.json()["error"]
    assert error["code"] == "json_too_deep"
    assert error["type"] == "invalid_request_error"
    assert error["param"] == ("input" if depth < 1024 else None)  # orjson parses 1,024 levels at most
    assert upstream.calls == 0


def test_json_at_the_depth_limit_is_served() -> None:
    app = CompatMiddleware(DemoChatApp(), max_json_depth=8)
    body = {"model": "m", "input": "hi", "metadata": {"a": "x"}, "text": {"format": {"type": "text"}}}
    assert asyncio.run(call(app, "POST", "/v1/responses", body)).status == 200
    deep = {**body, "tools": [{"type": "function", "name": "f", "parameters": {"a": {"b": {"c": {"d": {"e": {}}}}}}}]}
    refused = asyncio.run(call(app, "POST", "/v1/responses", deep))
    assert refused.status == 400 and refused.json()["error"]["param"] == "tools"


def test_an_internal_error_is_500_internal_error_not_upstream_error(caplog: pytest.LogCaptureFixture) -> None:
    class Broken:
        async def request(self, *args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("a bug")

        async def aclose(self) -> None:
            return None

    app = CompatMiddleware(upstream=Broken())  # type: ignore[arg-type]
    path = "/v1/responses"
    scope = http_scope("POST", path)
    with caplog.at_level(logging.ERROR, logger="compat_asgi"):
        result = asyncio.run(call(app, "POST", path, {"model": "m", "input": "x"}, scope=scope))
    assert result.status == 500
    assert result.json()["error"]["code"] == "internal_error"
    assert result.json()["error"]["type"] == "server_error"


def test_the_unhandled_error_log_line_escapes_the_path(caplog: pytest.LogCaptureFixture) -> None:
    class Broken:
        async def request(self, *args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("a bug")

        async def aclose(self) -> None:
            return None

    app = CompatMiddleware(upstream=Broken())  # type: ignore[arg-type]
    path = "/v1/emb\u009b[31m\u2028FORGED"  # raw UTF-8 bytes: allowed, sent on percent-encoded
    scope = http_scope("POST", path)
    scope["raw_path"] = path.encode()
    with caplog.at_level(logging.ERROR, logger="compat_asgi"):
        result = asyncio.run(call(app, "POST", path, {"model": "m"}, scope=scope))
    assert result.status == 500
    lines = [record.getMessage() for record in caplog.records]
    assert any("unhandled error" in line for line in lines)
    assert not any("\u009b" in line or "\u2028" in line for line in lines), lines


# -- 3: a slot only for work in progress, and a body-read timeout ------------------------


def _stall(port: int) -> socket.socket:
    """Headers announcing a body, then nothing: the slowloris request."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(
        b"POST /v1/responses HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b"content-length: 100\r\n\r\n{"
    )
    return sock


def test_clients_stalling_on_the_body_do_not_lock_others_out() -> None:
    app = CompatMiddleware(DemoChatApp(), max_concurrent_requests=20)
    with serve(app) as origin:
        port = int(origin.rsplit(":", 1)[1])
        stalled = [_stall(port) for _ in range(50)]
        try:
            time.sleep(0.3)  # let the server read every stalled request's headers
            with httpx.Client(timeout=10) as client:
                for _ in range(3):
                    answer = client.post(origin + "/v1/responses", json={"model": "m", "input": "hi"})
                    assert answer.status_code == 200, answer.text
        finally:
            for sock in stalled:
                sock.close()


def test_a_body_that_does_not_arrive_in_time_is_408() -> None:
    app = CompatMiddleware(DemoChatApp(), body_timeout=0.3)
    with serve(app) as origin:
        sock = _stall(int(origin.rsplit(":", 1)[1]))
        with sock:
            received = b""
            while b"\r\n\r\n" not in received or not received.rstrip().endswith(b"}"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), head
    assert orjson.loads(body)["error"]["code"] == "request_timeout"


# -- 4: the upstream pool and the concurrency limit agree --------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_no_free_upstream_connection_is_503_server_busy_not_a_silent_wait(transport: str) -> None:
    release = threading.Event()

    async def slow(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        await asyncio.get_running_loop().run_in_executor(None, release.wait, 10)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": b"{}"})

    with serve(slow) as backend:
        upstream = HTTPUpstream(backend, max_connections=1, pool_timeout=0.3, http_client=transport)
        app = CompatMiddleware(upstream=upstream)

        async def scenario() -> tuple[Recorded, Recorded]:
            body = {"model": "m", "input": []}
            first = asyncio.create_task(call(app, "POST", "/v1/embeddings", body))
            await asyncio.sleep(0.2)  # the first holds the only connection
            second = await call(app, "POST", "/v1/embeddings", body)
            release.set()
            return await first, second

        try:
            first, second = asyncio.run(scenario())
        finally:
            release.set()
    assert first.status == 200
    assert second.status == 503
    assert second.json()["error"]["code"] == "server_busy"
    assert second.header(b"retry-after") == b"1"


# -- 5: content codings the proxy cannot decode ----------------------------------------


@respx.mock
@pytest.mark.parametrize("coding", ["compress", "x-unknown"])
def test_undecodable_upstream_encoding_passes_through_with_its_header(coding: str) -> None:
    encoded = b"\x1f\x9d\x90compressed-bytes"
    respx.post(UPSTREAM + "/chat/completions").mock(
        return_value=httpx.Response(200, headers={"content-encoding": coding, "content-type": "application/json"},
                                    content=encoded)
    )
    app = CompatMiddleware(upstream=UPSTREAM)
    result = asyncio.run(call(app, "POST", "/v1/chat/completions", {"model": "m", "messages": []}))
    assert result.status == 200
    assert result.header(b"content-encoding") == coding.encode()
    assert result.body == encoded


@respx.mock
def test_undecodable_upstream_encoding_fails_a_translated_request_clearly() -> None:
    respx.post(UPSTREAM + "/chat/completions").mock(
        return_value=httpx.Response(200, headers={"content-encoding": "compress", "content-type": "text/event-stream"},
                                    content=b"\x1f\x9d\x90data: {}")
    )
    app = CompatMiddleware(upstream=UPSTREAM)
    streamed = asyncio.run(call(app, "POST", "/v1/responses", {"model": "m", "input": "x", "stream": True}))
    assert streamed.status == 502  # refused before the stream starts: never parsed as text
    assert "'compress'" in streamed.json()["error"]["message"]
    respx.post(UPSTREAM + "/chat/completions").mock(
        return_value=httpx.Response(200, headers={"content-encoding": "compress", "content-type": "application/json"},
                                    content=b"\x1f\x9d\x90{}")
    )
    whole = asyncio.run(call(app, "POST", "/v1/responses", {"model": "m", "input": "x"}))
    assert whole.status == 502
    assert "compress" in whole.json()["error"]["message"]


@respx.mock
def test_gzip_from_the_upstream_still_arrives_decoded() -> None:
    plain = orjson.dumps({"id": "x", "object": "chat.completion", "choices": []})
    respx.post(UPSTREAM + "/chat/completions").mock(
        return_value=httpx.Response(200, headers={"content-encoding": "gzip", "content-type": "application/json"},
                                    content=gzip.compress(plain))
    )
    app = CompatMiddleware(upstream=UPSTREAM)
    result = asyncio.run(call(app, "POST", "/v1/chat/completions", {"model": "m", "messages": []}))
    assert result.body == plain
    assert result.header(b"content-encoding") is None


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_content_codings_over_a_real_socket(transport: str) -> None:
    """What respx cannot show: the transport itself passes an unknown coding's
    bytes on raw, and decodes a gzip body streamed in several chunks."""
    plain = b'data: {"choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n'
    packed = gzip.compress(plain)

    async def coded(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        await receive()
        coding = b"x-unknown" if scope["path"].endswith("/completions") else b"gzip"
        headers = [(b"content-type", b"text/event-stream"), (b"content-encoding", coding)]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        body = b"\x1f\x9d\x90raw-bytes" if coding == b"x-unknown" else packed
        for i in range(0, len(body), 7):
            await send({"type": "http.response.body", "body": body[i : i + 7], "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    with serve(coded) as backend, serve(CompatMiddleware(upstream=backend, upstream_http_client=transport)) as url:
        passed = httpx.post(url + "/v1/chat/completions", json={"model": "m", "messages": []})
        assert passed.headers["content-encoding"] == "x-unknown"
        assert passed.read() == b"\x1f\x9d\x90raw-bytes"
        with httpx.stream("POST", url + "/v1/embeddings", json={"model": "m", "input": "x"}) as gz:
            assert "content-encoding" not in gz.headers
            assert b"".join(gz.iter_raw()) == plain


# -- 6: headers named in Connection are hop-by-hop -------------------------------------


@respx.mock
def test_headers_named_in_connection_are_dropped_both_ways() -> None:
    route = respx.post(UPSTREAM + "/chat/completions").mock(
        return_value=httpx.Response(
            200, headers={"connection": "x-internal, keep-alive", "x-internal": "secret", "x-fine": "1"}, json={}
        )
    )
    app = CompatMiddleware(upstream=UPSTREAM)
    scope = http_scope("POST", "/v1/chat/completions", headers=[
        (b"content-type", b"application/json"), (b"connection", b"X-Hop"), (b"x-hop", b"1"), (b"x-keep", b"2")])
    result = asyncio.run(call(app, "POST", "/v1/chat/completions", {"model": "m", "messages": []}, scope=scope))
    sent = route.calls.last.request.headers
    assert "x-hop" not in sent and sent["x-keep"] == "2"
    assert result.header(b"x-internal") is None and result.header(b"x-fine") == b"1"


# -- 8: previous_response_id amplification ---------------------------------------------


def test_history_past_its_byte_limit_is_refused_before_the_upstream() -> None:
    upstream = Counting(DemoChatApp())
    app = CompatMiddleware(upstream, store=MemoryStore(), max_history_bytes=20_000)

    async def scenario() -> tuple[int, Recorded]:
        previous = None
        for _ in range(2):
            body: dict[str, Any] = {"model": "m", "input": "x" * 8_000, "previous_response_id": previous}
            answer = await call(app, "POST", "/v1/responses", body)
            assert answer.status == 200, answer.body
            previous = answer.json()["id"]
        calls = upstream.calls
        return calls, await call(app, "POST", "/v1/responses",
                                 {"model": "m", "input": "x" * 8_000, "previous_response_id": previous})

    calls, refused = asyncio.run(scenario())
    assert refused.status == 400, refused.body
    assert refused.json()["error"]["param"] == "previous_response_id"
    assert refused.json()["error"]["code"] == "history_too_large"
    assert upstream.calls == calls


# -- 9, 10: the idempotency cache ------------------------------------------------------


def test_idempotency_cache_is_bounded_by_bytes() -> None:
    async def scenario() -> IdempotencyCache:
        cache = IdempotencyCache(60, max_bytes=1_000)

        async def sink(message: Message) -> None:
            return None

        for index in range(10):
            send = await cache.replay(None, f"k{index}", "/v1/x", b"body", sink)
            assert send is not None
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"a" * 300, "more_body": False})
            assert cache.size <= 1_000
        return cache

    cache = asyncio.run(scenario())
    assert 600 <= cache.size <= 1_000  # the newest answers are kept


def test_an_idempotency_key_too_long_is_refused_not_cut() -> None:
    app = CompatMiddleware(DemoChatApp(), idempotency_window=60)

    def request(key: bytes) -> Recorded:
        scope = http_scope("POST", "/v1/responses",
                           headers=[(b"content-type", b"application/json"), (b"idempotency-key", key)])
        return asyncio.run(call(app, "POST", "/v1/responses", {"model": "m", "input": "x"}, scope=scope))

    refused = request(b"k" * 257)
    assert refused.status == 400
    assert refused.json()["error"]["param"] == "Idempotency-Key"
    assert request(b"k" * 256).status == 200


# -- 11: logs, request ids, redirects, duplicated headers ------------------------------


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_c1_controls_and_line_separators_are_escaped_in_the_access_log(
    fmt: str, caplog: pytest.LogCaptureFixture
) -> None:
    log = AccessLog(fmt)  # type: ignore[arg-type]
    record = RequestRecord("id\u2029", "POST", "/v1/x\u009b[2J\u2028y\u202e", model="m\x85")
    with caplog.at_level(logging.INFO, logger="compat_asgi.access"):
        log.emit(record)
    line = caplog.records[-1].getMessage()
    for char in ("\u009b", "\u2028", "\u2029", "\u202e", "\x85"):
        assert char not in line
    assert "\\u009b" in line
    if fmt == "json":
        assert orjson.loads(line)["path"] == record.path


def test_the_upstream_gets_the_request_id_the_client_was_given() -> None:
    upstream = Counting(DemoChatApp())
    app = CompatMiddleware(upstream)
    scope = http_scope("POST", "/v1/responses",
                       headers=[(b"content-type", b"application/json"), (b"x-request-id", b"bad id\x7f")])
    result = asyncio.run(call(app, "POST", "/v1/responses", {"model": "m", "input": "x"}, scope=scope))
    given = result.header(b"x-request-id")
    assert given is not None and given.startswith(b"req_")
    assert upstream.headers[-1][b"x-request-id"] == given


@respx.mock
def test_redirects_into_the_upstream_are_rewritten_or_dropped() -> None:
    locations = {
        "inside": ("http://10.0.0.1:9/base/v1/files/abc?x=1", b"/v1/files/abc?x=1"),
        "relative": ("/base/v1/files/abc", b"/v1/files/abc"),
        "outside": ("http://10.0.0.1:9/admin", None),
        "outside-relative": ("/slots", None),
        "climbing": ("/base/v1/../../slots", None),
        "scheme-relative": ("//10.0.0.1:9/base/v1/files/abc", b"/v1/files/abc"),
        "elsewhere": ("https://example.com/x", b"https://example.com/x"),
    }
    app = CompatMiddleware(upstream=UPSTREAM)
    for name, (location, expected) in locations.items():
        respx.get(UPSTREAM + "/files").mock(return_value=httpx.Response(302, headers={"location": location}))
        result = asyncio.run(call(app, "GET", "/v1/files"))
        assert result.status == 302
        assert result.header(b"location") == expected, name


def test_passthrough_answers_carry_one_date_and_one_server_header(demo_upstream: str) -> None:
    with serve(CompatMiddleware(upstream=demo_upstream)) as origin:
        answer = httpx.post(origin + "/v1/chat/completions",
                            json={"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    assert answer.status_code == 200
    assert len(answer.headers.get_list("date")) == 1
    assert len(answer.headers.get_list("server")) == 1


@respx.mock
def test_an_unforwardable_query_string_is_400_not_500() -> None:
    respx.get(UPSTREAM + "/files").mock(return_value=httpx.Response(200, json={}))
    app = CompatMiddleware(upstream=UPSTREAM)
    scope = http_scope("GET", "/v1/files")
    scope["query_string"] = b"a=\x1b[31m\n"
    result = asyncio.run(call(app, "GET", "/v1/files", scope=scope))
    assert result.status == 400, result.body
