"""Request paths never leave the upstream's base path, and never reach a log
line unescaped: a traversal matrix over real servers (HTTP/1.1 from a raw
socket, so no client normalises the path first, and h2c), the same for the
client-side prefix, and a hypothesis fuzz of raw paths and headers."""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any
from urllib.parse import unquote

import httpx
import orjson
import pytest
import respx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import call, http_scope, serve
from test_integrations import HAVE_H2, serve_hypercorn

from compat_asgi import CompatMiddleware
from compat_asgi.errors import InvalidRequest, URITooLong
from compat_asgi.paths import MAX_PATH_BYTES, checked_path
from compat_asgi.types import Receive, Scope, Send
from compat_asgi.upstream import AppUpstream


class PathRecorder:
    """An upstream that answers every request with 200 and notes the path it saw."""

    def __init__(self) -> None:
        self.seen: list[tuple[bytes, str]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        self.seen.append((bytes(scope.get("raw_path") or scope["path"].encode()), scope["path"]))
        body = b'{"ok":true}'
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def assert_inside(recorder: PathRecorder, base: str) -> None:
    for raw, path in recorder.seen:
        assert raw.startswith(base.encode() + b"/"), raw
        assert path.startswith(base + "/"), path
        segments = unquote(raw.decode("ascii")).split("/")
        assert ".." not in segments and "." not in segments, raw


# Paths a client can send to climb out of the base path or change meaning on the way.
REFUSED = [
    "/v1/../_log",
    "/v1/%2e%2e/_log",
    "/v1/%2E%2e/_log",
    "/v1/.%2E/_log",
    "/v1/..%2f_log",
    "/v1/..%2F_log",
    "/v1/models/../../_log",
    "/v1/models/..%2F..%2F_log",
    "/v1/models/a%2F..%2F..%2F_log",
    "/v1/./models",
    "/v1/%2e/models",
    "/v1//_log",
    "/v1/a%2fb/c",
    "/v1/a%5c..%5c_log",
    "/v1/..\\_log",
    "/v1/x%0aFORGED%1b[31m",
    "/v1/responses%23frag",
    "/v1/x%3Fa=b",
    "/v1/a%zz",
]
ACCEPTED = ["/v1/embeddings", "/v1/models/meta-llama%2FLlama-3", "/v1/caf%C3%A9"]


def http11(port: int, target: str) -> int:
    """GET ``target`` byte for byte over a raw socket; the response status."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"GET {target} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n".encode("latin-1"))
        received = b""
        while b"\r\n" not in received:
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
    return int(received.split(b" ", 2)[1])


def h2c(port: int, target: str) -> int:
    """The same over HTTP/2 with prior knowledge; ``:path`` goes as given."""
    import h2.config
    import h2.connection
    import h2.events

    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, validate_outbound_headers=False)
        )
        conn.initiate_connection()
        stream_id = conn.get_next_available_stream_id()
        conn.send_headers(
            stream_id,
            [(":method", "GET"), (":path", target), (":scheme", "http"), (":authority", f"127.0.0.1:{port}")],
            end_stream=True,
        )
        sock.sendall(conn.data_to_send())
        while True:
            data = sock.recv(65536)
            assert data, "connection closed without a response"
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    return int(dict(event.headers)[b":status"])
                if isinstance(event, h2.events.StreamReset):
                    return 400  # refused at the HTTP/2 layer: nothing went upstream either
            sock.sendall(conn.data_to_send())


@pytest.fixture(scope="module")
def recorded_upstream() -> Any:
    recorder = PathRecorder()
    with serve(recorder) as origin:
        yield recorder, origin


FRONTS = [("uvicorn", "http/1.1"), ("hypercorn", "http/1.1"), ("hypercorn", "h2c")]


@pytest.mark.parametrize("front,protocol", FRONTS)
@pytest.mark.parametrize("kind", ["http", "app", "config"])
def test_no_request_leaves_the_upstream_base_path(
    recorded_upstream: tuple[PathRecorder, str], front: str, protocol: str, kind: str
) -> None:
    if protocol == "h2c" and not HAVE_H2:
        pytest.skip("the h2 package is not installed")
    recorder, origin = recorded_upstream
    if kind == "http":
        app, base = CompatMiddleware(upstream=origin + "/base/v1"), "/base/v1"
    elif kind == "config":
        app = CompatMiddleware(config={"upstreams": {"only": {"url": origin + "/base/v1", "api": "chat"}}})
        base = "/base/v1"
    else:
        recorder = PathRecorder()
        app, base = CompatMiddleware(upstream=AppUpstream(recorder)), "/v1"
    recorder.seen.clear()
    send = h2c if protocol == "h2c" else http11
    with (serve if front == "uvicorn" else serve_hypercorn)(app) as front_origin:
        port = int(front_origin.rsplit(":", 1)[1])
        for target in REFUSED:
            status = send(port, target)
            assert status == 400, (target, status)
        assert recorder.seen == [], recorder.seen
        for target in ACCEPTED:
            assert send(port, target) == 200, target
    assert [raw for raw, _ in recorder.seen] == [base.removesuffix("/v1").encode() + t.encode() for t in ACCEPTED]
    assert_inside(recorder, base)


@pytest.mark.parametrize("front,protocol", FRONTS)
def test_the_prefix_is_checked_before_the_wrapped_app_sees_the_request(front: str, protocol: str) -> None:
    """With an app wrapped, paths under the prefix that the app would answer
    still cannot smuggle a dot-segment or an encoded prefix past the routing."""
    if protocol == "h2c" and not HAVE_H2:
        pytest.skip("the h2 package is not installed")
    recorder = PathRecorder()
    app = CompatMiddleware(recorder)
    send = h2c if protocol == "h2c" else http11
    with (serve if front == "uvicorn" else serve_hypercorn)(app) as origin:
        port = int(origin.rsplit(":", 1)[1])
        for target in ["/v1/../admin", "/v1/%2e%2e/admin", "/v1%2Fresponses", "/%761/responses", "/v1/x%0a"]:
            assert send(port, target) == 400, target
        assert recorder.seen == []
        assert send(port, "/v1/embeddings") == 200  # the app's own route, untouched
        assert send(port, "/admin") == 200  # not under the prefix: the app's business
    assert [raw for raw, _ in recorder.seen] == [b"/v1/embeddings", b"/admin"]


def test_refusals_are_openai_envelopes_and_long_paths_are_414() -> None:
    async def scenario() -> tuple[Any, Any]:
        app = CompatMiddleware(upstream=AppUpstream(PathRecorder()))
        scope = http_scope("GET", "/v1/../x")
        refused = await call(app, "GET", "/v1/../x", scope=scope)
        long = "/v1/" + "a" * MAX_PATH_BYTES
        too_long = await call(app, "GET", long, scope=http_scope("GET", long))
        return refused, too_long

    refused, too_long = asyncio.run(scenario())
    assert refused.status == 400
    assert refused.json()["error"]["code"] == "invalid_path"
    assert refused.json()["error"]["type"] == "invalid_request_error"
    assert too_long.status == 414
    assert too_long.json()["error"]["code"] == "uri_too_long"


# -- checked_path on its own ----------------------------------------------------------


@given(st.binary(max_size=80).map(lambda tail: b"/v1/" + tail))
@settings(max_examples=400, deadline=None)
def test_a_checked_path_stays_under_the_base_whatever_httpx_does_with_it(raw: bytes) -> None:
    """Whatever raw path is accepted comes out of httpx's URL parsing
    unchanged (no dot-segment resolved, nothing re-split) and under the base."""
    for encoded_slash in (False, True):
        try:
            path = checked_path(raw, encoded_slash=encoded_slash)
        except (InvalidRequest, URITooLong):
            continue
        url = httpx.URL("http://127.0.0.1:9/base" + path)
        assert url.raw_path == b"/base" + path.encode(), (raw, path)
        assert url.host == "127.0.0.1" and not url.query and not url.fragment
        decoded = unquote(path).split("/")
        assert ".." not in decoded and "." not in decoded
        assert all(ord(c) >= 0x20 and c != "\x7f" for c in unquote(path))


# -- fuzz: raw paths and headers through the whole middleware ---------------------------

_PIECES = st.sampled_from(
    ["..", ".", "%2e", "%2E", "%2f", "%2F", "%5c", "\\", "%23", "%3f", "%0a", "%1b", "%00", "%",
     "/", "//", "models", "responses", "chat", "completions", "a", "\u009b", "\u2028", "é", "%c2%9b"]
)
_RAW_PATHS = st.lists(_PIECES, max_size=8).map(lambda parts: "/v1/" + "".join(parts))
_HEADER_VALUES = st.binary(max_size=40)
_HEADER_NAMES = st.sampled_from(
    [b"x-request-id", b"idempotency-key", b"connection", b"x-anything", b"content-type", b"authorization"]
)


@given(
    raw=_RAW_PATHS,
    method=st.sampled_from(["GET", "POST", "DELETE"]),
    headers=st.lists(st.tuples(_HEADER_NAMES, _HEADER_VALUES), max_size=4),
    kind=st.sampled_from(["app", "http"]),
)
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_fuzzed_paths_and_headers_never_500_never_escape_never_forge_logs(
    raw: str, method: str, headers: list[tuple[bytes, bytes]], kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    recorder = PathRecorder()
    if kind == "http":
        # httpx builds the real URL; respx answers it, noting the path it was sent to.
        def answer(request: httpx.Request) -> httpx.Response:
            recorder.seen.append((request.url.raw_path.partition(b"?")[0], unquote(request.url.path)))
            return httpx.Response(200, json={})

        mock = respx.mock(assert_all_called=False)
        mock.route(host="10.0.0.1").mock(side_effect=answer)
        app = CompatMiddleware(upstream="http://10.0.0.1:9/base/v1", access_log="text", idempotency_window=60)
        base = "/base/v1"
    else:
        mock = None
        app = CompatMiddleware(upstream=AppUpstream(recorder), access_log="text", idempotency_window=60)
        base = "/v1"
    raw_bytes = raw.encode("utf-8")
    scope = http_scope(method, unquote(raw), headers=[(b"content-type", b"application/json"), *headers])
    scope["raw_path"] = raw_bytes
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="compat_asgi"):
        if mock is not None:
            with mock:
                result = asyncio.run(call(app, method, scope["path"], {"model": "m", "input": "x"}, scope=scope))
        else:
            result = asyncio.run(call(app, method, scope["path"], {"model": "m", "input": "x"}, scope=scope))
    assert result.status != 500 and 200 <= result.status < 600, (raw, result.status, result.body)
    if result.status >= 400 and result.status != 404:
        assert set(orjson.loads(result.body)["error"]) == {"message", "type", "param", "code"}
    assert_inside(recorder, base)
    for record in caplog.records:
        line = record.getMessage()
        assert "\n" not in line and "\x1b" not in line and "\u009b" not in line and "\u2028" not in line, line
