"""CompatMiddleware inside the ASGI stacks people run: mounted, behind a
root_path, with lifespan and websockets, under uvicorn and hypercorn (HTTP/1.1
and HTTP/2), under compression and CORS middleware, and with inner apps that
stream in every way ASGI allows.

Streaming is proven, not assumed: a gated upstream holds the rest of its
answer until the client has seen the first ``response.output_text.delta``
through the real server, so a buffering layer anywhere makes the test fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import socket
import threading
import time
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import openai
import orjson
import pytest
from hypercorn.asyncio import serve as hypercorn_serve
from hypercorn.config import Config as HypercornConfig
from starlette.applications import Starlette
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.websockets import WebSocket
from support import TRANSPORTS, call, http_scope, serve

from compat_asgi import CompatMiddleware, HTTPUpstream
from compat_asgi.demo import DemoChatApp
from compat_asgi.types import ASGIApp, Message, Receive, Scope, Send
from compat_asgi.validate import assert_valid, validate_responses_sse

try:
    import h2  # noqa: F401

    HAVE_H2 = True
except ImportError:
    HAVE_H2 = False

FIRST_DELTA = b"event: response.output_text.delta"
GATE_TIMEOUT = 5.0
DEMO_TEXT = "This is the compat-asgi demo model answering deterministically."


def sdk(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=30)


# -- servers ------------------------------------------------------------------------


@contextlib.contextmanager
def serve_hypercorn(app: ASGIApp, **options: Any) -> Iterator[str]:
    """hypercorn (HTTP/1.1, h2c by prior knowledge) on a free 127.0.0.1 port, in a thread."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = HypercornConfig()
    config.bind = [f"fd://{sock.detach()}"]  # hypercorn owns the bound socket from here
    config.loglevel = "WARNING"
    config.accesslog = None
    config.graceful_timeout = 2
    for name, value in options.items():
        setattr(config, name, value)
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    failure: list[BaseException] = []

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(hypercorn_serve(app, config, shutdown_trigger=stop.wait))
        except BaseException as exc:  # reported by the waiting test thread
            failure.append(exc)
        finally:
            loop.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if failure or not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"hypercorn did not start: {failure!r}") from None
            time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)


SERVERS: dict[str, Callable[..., contextlib.AbstractContextManager[str]]] = {
    "uvicorn": serve,
    "hypercorn": serve_hypercorn,
}


# -- inner apps --------------------------------------------------------------------


async def lifespan_noop(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
    payload = {"object": "chat.completion.chunk", "model": "m",
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]}
    return b"data: " + orjson.dumps(payload) + b"\n\n"


FIRST = chunk({"role": "assistant", "content": "first"})
REST = chunk({"content": " second"}) + chunk({}, "stop") + b"data: [DONE]\n\n"
COMPLETION = orjson.dumps({
    "id": "c", "object": "chat.completion", "created": 0, "model": "m",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "whole " * 80}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 1, "completion_tokens": 80, "total_tokens": 81},
})


class Gate:
    """Shared between the server thread (the upstream waits) and the client (it opens)."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.observed: list[bool] = []

    async def wait(self) -> None:
        # In a worker thread, so the server's event loop keeps sending meanwhile.
        opened = await asyncio.get_running_loop().run_in_executor(None, self.event.wait, GATE_TIMEOUT)
        self.observed.append(opened)


def raw_send_chat(gate: Gate) -> ASGIApp:
    """A chat backend written as a bare send loop: many small, oddly split body
    messages (an SSE line cut in two, empty ones), the last without ``more_body``."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await lifespan_noop(receive, send)
            return
        body = orjson.loads((await receive())["body"])
        if not body.get("stream"):
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": COMPLETION})
            return
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")]})
        await send({"type": "http.response.body", "body": FIRST[:10], "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": True})
        await send({"type": "http.response.body", "body": FIRST[10:], "more_body": True})
        await gate.wait()
        for i in range(0, len(REST), 7):
            await send({"type": "http.response.body", "body": REST[i : i + 7], "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    return app


def starlette_streaming_chat(gate: Gate) -> ASGIApp:
    """A chat backend as Starlette routes, streaming with StreamingResponse."""

    async def completions(request: Request) -> Response:
        body = await request.json()
        if not body.get("stream"):
            return Response(COMPLETION, media_type="application/json")

        async def events() -> AsyncIterator[bytes]:
            yield FIRST
            await gate.wait()
            yield REST

        return StreamingResponse(events(), media_type="text/event-stream")

    return Starlette(routes=[Route("/v1/chat/completions", completions, methods=["POST"])])


INNER_APPS = {"raw-send": raw_send_chat, "starlette-streaming": starlette_streaming_chat}


# -- clients that watch the stream arrive -----------------------------------------


def stream_through(url: str, gate: Gate, headers: dict[str, str] | None = None) -> tuple[httpx.Response, bytes]:
    """POST a streamed Responses request; open the gate on the first delta seen."""
    received = bytearray()
    body = {"model": "m", "input": "x", "stream": True}
    with httpx.stream("POST", url, json=body, headers=headers, timeout=30) as response:
        for data in response.iter_raw():
            received += data
            if FIRST_DELTA in received:
                gate.event.set()
    return response, bytes(received)


async def stream_through_h2(url: str, gate: Gate) -> tuple[httpx.Response, bytes]:
    received = bytearray()
    async with httpx.AsyncClient(http1=False, http2=True, timeout=30) as client:
        body = {"model": "m", "input": "x", "stream": True}
        async with client.stream("POST", url, json=body) as response:
            async for data in response.aiter_raw():
                received += data
                if FIRST_DELTA in received:
                    gate.event.set()
    return response, bytes(received)


def assert_streamed(gate: Gate, raw: bytes) -> None:
    assert gate.observed == [True], "the first delta did not reach the client before the upstream finished"
    assert_valid(validate_responses_sse(raw))
    assert b'"text":"first second"' in raw


# -- streaming across servers, protocols and inner apps ---------------------------


@pytest.mark.parametrize("inner", sorted(INNER_APPS))
@pytest.mark.parametrize("server", ["uvicorn", "hypercorn"])
def test_http11_streams_incrementally(server: str, inner: str) -> None:
    gate = Gate()
    with SERVERS[server](CompatMiddleware(INNER_APPS[inner](gate))) as origin:
        response, raw = stream_through(origin + "/v1/responses", gate)
    assert response.http_version == "HTTP/1.1"
    assert_streamed(gate, raw)


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("api", ["responses", "chat"])
def test_http_upstream_streams_incrementally(api: str, transport: str) -> None:
    """Over an HTTP upstream, translated and passed through, on either client
    transport: no layer waits for more of the upstream's body than it has."""
    gate = Gate()
    with serve(raw_send_chat(gate)) as backend:
        with serve(CompatMiddleware(upstream=backend + "/v1", upstream_http_client=transport)) as origin:
            if api == "responses":
                response, raw = stream_through(origin + "/v1/responses", gate)
                assert_streamed(gate, raw)
                return
            received = bytearray()
            body = {"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": True}
            with httpx.stream("POST", origin + "/v1/chat/completions", json=body, timeout=30) as response:
                for data in response.iter_raw():
                    received += data
                    if FIRST in received:
                        gate.event.set()
    assert gate.observed == [True], "the first chunk did not reach the client before the upstream finished"
    assert bytes(received) == FIRST + REST


@pytest.mark.skipif(not HAVE_H2, reason="the h2 package is not installed")
@pytest.mark.parametrize("inner", sorted(INNER_APPS))
def test_http2_on_hypercorn_streams_incrementally(inner: str) -> None:
    gate = Gate()
    with serve_hypercorn(CompatMiddleware(INNER_APPS[inner](gate))) as origin:
        response, raw = asyncio.run(stream_through_h2(origin + "/v1/responses", gate))
    assert response.http_version == "HTTP/2"
    assert_streamed(gate, raw)


@pytest.mark.skipif(not HAVE_H2, reason="the h2 package is not installed")
def test_http2_passthrough_drops_connection_specific_headers(demo_upstream: str) -> None:
    """HTTP/2 forbids Connection/Transfer-Encoding; a proxied chunked upstream
    answer must reach an h2 client without them (h2 would reset the stream)."""

    async def scenario(origin: str) -> tuple[httpx.Response, bytes, dict[str, Any]]:
        async with httpx.AsyncClient(http1=False, http2=True, timeout=30) as client:
            body = {"model": "demo", "messages": [{"role": "user", "content": "h2"}], "stream": True}
            async with client.stream("POST", origin + "/v1/chat/completions", json=body) as streamed:
                raw = await streamed.aread()
            models = (await client.get(origin + "/v1/models")).json()
        return streamed, raw, models

    with serve_hypercorn(CompatMiddleware(upstream=demo_upstream)) as origin:
        streamed, raw, models = asyncio.run(scenario(origin))
    assert streamed.http_version == "HTTP/2" and streamed.status_code == 200
    assert raw.endswith(b"data: [DONE]\n\n")
    assert [model["id"] for model in models["data"]] == ["demo", "demo-reasoning"]


def test_openai_sdk_through_hypercorn() -> None:
    with serve_hypercorn(CompatMiddleware(DemoChatApp())) as origin:
        client = sdk(origin + "/v1")
        assert DEMO_TEXT in client.responses.create(model="demo", input="hyper").output_text
        with client.responses.stream(model="demo", input="hyper") as stream:
            assert stream.get_final_response().status == "completed"


def test_fastapi_with_an_http_middleware_outside_still_streams() -> None:
    """FastAPI's ``@app.middleware("http")`` (BaseHTTPMiddleware) added after
    CompatMiddleware wraps it; events must still flow one by one."""
    from fastapi import FastAPI

    gate = Gate()
    api = FastAPI()
    api.mount("/", starlette_streaming_chat(gate))
    api.add_middleware(CompatMiddleware)

    @api.middleware("http")
    async def tag(request: Request, call_next: Callable[[Request], Any]) -> Response:
        response: Response = await call_next(request)
        response.headers["x-tagged"] = "yes"
        return response

    with serve(api) as origin:
        response, raw = stream_through(origin + "/v1/responses", gate)
    assert response.headers["x-tagged"] == "yes"
    assert_streamed(gate, raw)


class Forever:
    """An upstream that sends its first chunk, then generates until cancelled."""

    def __init__(self) -> None:
        self.cancelled = threading.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await lifespan_noop(receive, send)
            return
        await receive()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")]})
        await send({"type": "http.response.body", "body": FIRST, "more_body": True})
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise


REQUEST_BODY = orjson.dumps({"model": "m", "input": "x", "stream": True})


def leave_http11(port: int) -> socket.socket:
    """Start a streamed request over HTTP/1.1; return the socket once the first delta is in."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(
        b"POST /v1/responses HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        b"content-length: " + str(len(REQUEST_BODY)).encode() + b"\r\n\r\n" + REQUEST_BODY
    )
    received = b""
    while FIRST_DELTA not in received:
        received += sock.recv(65536)
    return sock


def reset_http2_stream(port: int) -> socket.socket:
    """Same over h2c, then RST_STREAM that one stream; the connection stays open."""
    import h2.config
    import h2.connection
    import h2.events

    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    stream_id = conn.get_next_available_stream_id()
    conn.send_headers(stream_id, [(":method", "POST"), (":path", "/v1/responses"), (":scheme", "http"),
                                  (":authority", f"127.0.0.1:{port}"), ("content-type", "application/json")])
    conn.send_data(stream_id, REQUEST_BODY, end_stream=True)
    sock.sendall(conn.data_to_send())
    received = b""
    while FIRST_DELTA not in received:
        for event in conn.receive_data(sock.recv(65536)):
            if isinstance(event, h2.events.DataReceived):
                received += event.data
                conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        sock.sendall(conn.data_to_send())
    conn.reset_stream(stream_id)
    sock.sendall(conn.data_to_send())
    return sock


@pytest.mark.parametrize("server,protocol", [("uvicorn", "http/1.1"), ("hypercorn", "http/1.1"), ("hypercorn", "h2c")])
def test_client_going_away_cancels_the_upstream_promptly(server: str, protocol: str) -> None:
    if protocol == "h2c" and not HAVE_H2:
        pytest.skip("the h2 package is not installed")
    upstream = Forever()
    with SERVERS[server](CompatMiddleware(upstream)) as origin:
        port = int(origin.rsplit(":", 1)[1])
        if protocol == "h2c":
            sock = reset_http2_stream(port)  # the connection stays open: only the stream ends
        else:
            sock = leave_http11(port)
            sock.close()
        try:
            assert upstream.cancelled.wait(5), "the upstream kept generating for a client that left"
        finally:
            sock.close()


# -- compression and CORS around the middleware ------------------------------------


def test_outer_gzip_compresses_json_but_never_buffers_the_event_stream() -> None:
    gate = Gate()
    app = GZipMiddleware(CompatMiddleware(raw_send_chat(gate)), minimum_size=100)
    with serve(app) as origin:
        url = origin + "/v1/responses"
        response, raw = stream_through(url, gate, headers={"accept-encoding": "gzip"})
        whole = httpx.post(url, json={"model": "m", "input": "x"}, headers={"accept-encoding": "gzip"})
    assert response.headers["content-type"].startswith("text/event-stream")
    assert "content-encoding" not in response.headers
    assert_streamed(gate, raw)
    assert whole.headers["content-encoding"] == "gzip"
    assert whole.json()["output"][0]["content"][0]["text"] == "whole " * 80


def gzip_everything(inner: ASGIApp, coding: bytes) -> ASGIApp:
    """An inner app that compresses whatever the client accepts, or not (``coding``)."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await inner(scope, receive, send)
            return
        compressor = zlib.compressobj(wbits=31)

        async def compressing_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message["headers"] if k != b"content-length"]
                message = {**message, "headers": [*headers, (b"content-encoding", coding)]}
            elif message["type"] == "http.response.body":
                data = compressor.compress(message.get("body", b""))
                if message.get("more_body", False):
                    data += compressor.flush(zlib.Z_SYNC_FLUSH)
                else:
                    data += compressor.flush()
                message = {**message, "body": data}
            await send(message)

        await inner(scope, receive, compressing_send)

    return app


@pytest.mark.parametrize("stream", [False, True])
def test_inner_gzip_is_undone_and_unknown_encodings_are_declined(stream: bool) -> None:
    body = {"model": "demo", "input": "zipped", "stream": stream}
    result = asyncio.run(call(CompatMiddleware(gzip_everything(DemoChatApp(), b"gzip")), "POST", "/v1/responses", body))
    assert result.status == 200
    if stream:
        assert_valid(validate_responses_sse(result.body))
    assert DEMO_TEXT.encode() in result.body

    declined = asyncio.run(call(CompatMiddleware(gzip_everything(DemoChatApp(), b"br")), "POST", "/v1/responses", body))
    assert declined.status == 502
    error = declined.json()["error"]
    assert "put compression middleware outside CompatMiddleware" in error["message"]


def test_inner_starlette_gzip_compresses_only_what_the_client_gets_directly() -> None:
    """GZip inside: translated requests ask the inner app for identity bytes;
    paths passed through to the inner app are still compressed for the client."""
    app = CompatMiddleware(GZipMiddleware(DemoChatApp(), minimum_size=1))
    with serve(app) as origin:
        translated = httpx.post(origin + "/v1/responses", json={"model": "demo", "input": "z"},
                                headers={"accept-encoding": "gzip"})
        chat = httpx.post(origin + "/v1/chat/completions", headers={"accept-encoding": "gzip"},
                          json={"model": "demo", "messages": [{"role": "user", "content": "z"}]})
    assert translated.status_code == 200 and DEMO_TEXT in translated.text
    assert chat.headers["content-encoding"] == "gzip"
    assert chat.json()["object"] == "chat.completion"


# -- mounting and root_path ---------------------------------------------------------


def own_chat_routes() -> Starlette:
    """A Starlette sub-app with its own chat route (answering via the demo)."""
    demo = DemoChatApp()
    return Starlette(routes=[Route("/v1/chat/completions", demo), Route("/v1/models", demo)])


@pytest.mark.parametrize("backend", ["in-process", "http", "starlette-subapp"])
def test_mounted_under_a_sub_path(backend: str, demo_upstream: str) -> None:
    compat = {
        "in-process": lambda: CompatMiddleware(DemoChatApp()),
        "http": lambda: CompatMiddleware(upstream=demo_upstream),
        "starlette-subapp": lambda: CompatMiddleware(own_chat_routes()),
    }[backend]()

    async def home(request: Request) -> Response:
        return JSONResponse({"home": True})

    app = Starlette(routes=[Mount("/api", app=compat), Route("/", home)])
    with serve(app) as origin:
        client = sdk(origin + "/api/v1")
        assert DEMO_TEXT in client.responses.create(model="demo", input="mounted").output_text
        with client.responses.stream(model="demo", input="mounted") as stream:
            assert DEMO_TEXT in stream.get_final_response().output_text
        assert [model.id for model in client.models.list()] == ["demo", "demo-reasoning"]
        assert httpx.get(origin + "/").json() == {"home": True}
        assert httpx.post(origin + "/v1/responses", json={"model": "demo", "input": "x"}).status_code == 404


@pytest.mark.parametrize("server", ["uvicorn", "hypercorn"])
def test_server_root_path(server: str, demo_upstream: str) -> None:
    """``uvicorn --root-path /prefix`` (and hypercorn's): a proxy strips /prefix,
    the app still routes below it and the inner app sees the same root_path."""
    seen: list[tuple[str, str]] = []
    demo = DemoChatApp()

    async def inner(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            seen.append((scope["root_path"], scope["path"]))
        await demo(scope, receive, send)

    with SERVERS[server](CompatMiddleware(inner), root_path="/prefix") as origin:
        client = sdk(origin + "/v1")
        assert DEMO_TEXT in client.responses.create(model="demo", input="rooted").output_text
        assert [model.id for model in client.models.list()] == ["demo", "demo-reasoning"]
    assert [root for root, _ in seen] == ["/prefix", "/prefix"]
    assert seen[0][1].endswith("/v1/chat/completions") and seen[1][1].endswith("/v1/models")


# -- lifespan and websockets ----------------------------------------------------------


@pytest.mark.parametrize("server", ["uvicorn", "hypercorn"])
def test_lifespan_of_the_inner_app_runs_and_its_state_reaches_translated_requests(
    server: str, demo_upstream: str
) -> None:
    events: list[str] = []

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        events.append("startup")
        yield {"greeting": "set at startup"}
        events.append("shutdown")

    async def completions(request: Request) -> Response:
        body = await request.json()
        text = f"{request.state.greeting}: {body['messages'][-1]['content']}"
        return JSONResponse({
            "id": "c", "object": "chat.completion", "created": 0, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        })

    inner = Starlette(routes=[Route("/v1/chat/completions", completions, methods=["POST"])], lifespan=lifespan)
    with SERVERS[server](CompatMiddleware(inner)) as origin:
        assert events == ["startup"]
        text = sdk(origin + "/v1").responses.create(model="m", input="hello").output_text
        assert text == "set at startup: hello"
    assert events == ["startup", "shutdown"]


@pytest.mark.parametrize("wraps_app", [True, False])
def test_shutdown_closes_the_http_upstream_client(wraps_app: bool, demo_upstream: str) -> None:
    client = httpx.AsyncClient()
    upstream = HTTPUpstream(demo_upstream, client=client)
    app = CompatMiddleware(DemoChatApp() if wraps_app else None, upstream=upstream)
    with serve(app) as origin:
        assert DEMO_TEXT in sdk(origin + "/v1").responses.create(model="demo", input="x").output_text
        assert not client.is_closed
    assert client.is_closed


async def echo_socket(websocket: WebSocket) -> None:
    await websocket.accept()
    async for text in websocket.iter_text():
        await websocket.send_text(f"echo: {text} ({websocket.scope['path']})")


@pytest.mark.parametrize("server", ["uvicorn", "hypercorn"])
def test_websockets_pass_through_to_the_inner_app(server: str) -> None:
    from websockets.sync.client import connect

    inner = Starlette(routes=[WebSocketRoute("/ws", echo_socket), WebSocketRoute("/v1/realtime", echo_socket)])
    with SERVERS[server](CompatMiddleware(inner)) as origin:
        for path in ("/ws", "/v1/realtime"):
            with connect(origin.replace("http://", "ws://") + path, open_timeout=10) as websocket:
                websocket.send("hi")
                assert websocket.recv(timeout=10) == f"echo: hi ({path})"


def test_websocket_to_a_standalone_proxy_is_refused_cleanly(demo_upstream: str) -> None:
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    with serve(CompatMiddleware(upstream=demo_upstream)) as origin:
        with pytest.raises(InvalidStatus) as refused:
            connect(origin.replace("http://", "ws://") + "/v1/realtime", open_timeout=10)
    assert refused.value.response.status_code == 403


# -- ASGI message details ---------------------------------------------------------------


def trailer_chat(scope_seen: list[Scope]) -> ASGIApp:
    """A chat backend that announces and sends HTTP trailers when the server offers them."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await lifespan_noop(receive, send)
            return
        scope_seen.append(scope)
        body = orjson.loads((await receive())["body"])
        trailers = "http.response.trailers" in scope.get("extensions", {})
        kind = b"text/event-stream" if body.get("stream") else b"application/json"
        await send({"type": "http.response.start", "status": 200, "trailers": trailers,
                    "headers": [(b"content-type", kind)]})
        if body.get("stream"):
            await send({"type": "http.response.body", "body": FIRST, "more_body": True})
            await send({"type": "http.response.body", "body": REST, "more_body": False})
        else:
            await send({"type": "http.response.body", "body": COMPLETION, "more_body": False})
        if trailers:
            await send({"type": "http.response.trailers", "headers": [(b"x-checksum", b"abc")],
                        "more_trailers": False})

    return app


@pytest.mark.parametrize("stream", [False, True])
def test_inner_app_sending_trailers_in_process(stream: bool) -> None:
    seen: list[Scope] = []
    scope = http_scope("POST", "/v1/responses")
    scope["extensions"] = {"http.response.trailers": {}}
    body = {"model": "m", "input": "x", "stream": stream}
    result = asyncio.run(call(CompatMiddleware(trailer_chat(seen)), "POST", "/v1/responses", body, scope=scope))
    assert result.status == 200 and result.ended
    assert "http.response.trailers" in seen[0]["extensions"]
    if stream:
        assert_valid(validate_responses_sse(result.body))
    else:
        assert result.json()["status"] == "completed"


@pytest.mark.skipif(not HAVE_H2, reason="the h2 package is not installed")
def test_inner_app_sending_trailers_under_hypercorn_http2() -> None:
    """Hypercorn offers trailers on HTTP/2; the inner app uses them; the
    middleware's own response (which announced none) must stay valid."""
    seen: list[Scope] = []

    async def scenario(origin: str) -> tuple[httpx.Response, httpx.Response]:
        async with httpx.AsyncClient(http1=False, http2=True, timeout=30) as client:
            body = {"model": "m", "input": "x", "stream": True}
            streamed = await client.post(origin + "/v1/responses", json=body, headers={"te": "trailers"})
            whole = await client.post(origin + "/v1/responses", json={**body, "stream": False})
        return streamed, whole

    with serve_hypercorn(CompatMiddleware(trailer_chat(seen))) as origin:
        streamed, whole = asyncio.run(scenario(origin))
    assert all("http.response.trailers" in scope["extensions"] for scope in seen)
    assert streamed.status_code == 200 and whole.status_code == 200
    assert_valid(validate_responses_sse(streamed.content))
    assert whole.json()["status"] == "completed"


def test_request_body_in_many_messages() -> None:
    """``more_body`` on the request side: a body split across messages (and a
    chunked upload through a real server) is read whole."""
    payload = orjson.dumps({"model": "demo", "input": "split body", "stream": True})
    parts = [payload[:5], b"", payload[5:20], payload[20:]]
    sent: list[Message] = []

    async def drive() -> bytes:
        messages = [{"type": "http.request", "body": part, "more_body": i < len(parts) - 1} for i, part in enumerate(parts)]
        done = asyncio.Event()

        async def receive() -> Message:
            if messages:
                return messages.pop(0)
            await done.wait()
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            sent.append(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                done.set()

        await CompatMiddleware(DemoChatApp())(http_scope("POST", "/v1/responses"), receive, send)
        return b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")

    raw = asyncio.run(drive())
    assert sent[0]["status"] == 200
    assert_valid(validate_responses_sse(raw))

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(payload), 8):
            yield payload[i : i + 8]

    with serve(CompatMiddleware(DemoChatApp())) as origin:
        response = httpx.post(origin + "/v1/responses", content=chunks(), headers={"content-type": "application/json"})
    assert response.request.headers.get("transfer-encoding") == "chunked"
    assert response.status_code == 200
    assert_valid(validate_responses_sse(response.content))
    assert b"split body" in response.content


def test_gzip_round_trip_helper_is_sound() -> None:
    """The compressing test app above emits a valid gzip stream (guards the guard)."""
    result = asyncio.run(call(gzip_everything(DemoChatApp(), b"gzip"), "GET", "/v1/models"))
    assert orjson.loads(gzip.decompress(result.body))["object"] == "list"
