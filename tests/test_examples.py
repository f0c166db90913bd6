"""Every program under examples/ is started here and used through the OpenAI SDK.

Server examples run both imported (under uvicorn on 127.0.0.1 via
``support.serve``) and as the scripts a user runs; client examples run as
subprocesses against real servers. ``examples/curl.md`` is replayed command by
command against ``compat-asgi serve`` and must still match what it shows
(``COMPAT_REGENERATE_CURL_MD=1`` rewrites its outputs from a live run).
"""

from __future__ import annotations

import ast
import asyncio
import importlib.util
import os
import re
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import openai
import orjson
import pytest
import respx
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from support import free_port, serve

from compat_asgi import CompatMiddleware, translate
from compat_asgi.demo import DemoChatApp
from compat_asgi.types import Receive, Scope, Send
from compat_asgi.validate import assert_valid, validate_response_object, validate_responses_sse

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
ORIGIN = "http://localhost:3000"


def load_example(name: str) -> ModuleType:
    """Import ``examples/<name>.py`` fresh (examples/ is not a package)."""
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # Registered first, as a real import would be: pydantic resolves a
    # model's annotations through sys.modules.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module




@contextmanager
def running(argv: list[str], env: dict[str, str], port: int) -> Iterator[str]:
    """Run a server program until it accepts connections on ``port``; yield its origin."""
    process = subprocess.Popen(
        argv,
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    process.kill()
                    output = process.communicate()[0].decode(errors="replace")
                    raise RuntimeError(f"{argv} did not start:\n{output}") from None
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        if process.stdout is not None:
            process.stdout.close()


def sdk(base_url: str, api_key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=30)


def stream_bytes(url: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> tuple[httpx.Response, bytes]:
    with httpx.stream("POST", url, json={**body, "stream": True}, headers=headers, timeout=30) as response:
        return response, response.read()


class HeaderRecorder:
    """The demo chat backend, remembering each request's path and Authorization header."""

    def __init__(self) -> None:
        self.demo = DemoChatApp()
        self.seen: list[tuple[str, bytes | None]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            authorization = dict(scope["headers"]).get(b"authorization")
            self.seen.append((scope["path"], authorization))
        await self.demo(scope, receive, send)


# -- starlette_app.py -------------------------------------------------------------


def test_starlette_app_serves_responses_over_its_own_chat_route() -> None:
    example = load_example("starlette_app")
    with serve(example.app) as origin:
        client = sdk(origin + "/v1")
        created = client.responses.create(model="echo", input="hi there")
        assert created.output_text == "Starlette echo: hi there"
        assert created.usage is not None and created.usage.output_tokens == 4
        with client.responses.stream(model="echo", input="stream this") as stream:
            deltas = [event.delta for event in stream if event.type == "response.output_text.delta"]
            final = stream.get_final_response()
        assert deltas == ["Starlette", " echo:", " stream", " this"]
        assert final.output_text == "Starlette echo: stream this" and final.status == "completed"
        response, raw = stream_bytes(origin + "/v1/responses", {"model": "echo", "input": "x"})
        assert_valid(validate_responses_sse(raw))
        # The app's own routes are untouched.
        chat = client.chat.completions.create(model="echo", messages=[{"role": "user", "content": "direct"}])
        assert chat.choices[0].message.content == "Starlette echo: direct"
        assert httpx.get(origin + "/health").json() == {"ok": True}


def test_starlette_app_middleware_order_cors_and_gzip_outside() -> None:
    example = load_example("starlette_app")
    long_input = "word " * 200
    with serve(example.app) as origin:
        url = origin + "/v1/responses"
        preflight = httpx.options(
            url, headers={"origin": ORIGIN, "access-control-request-method": "POST",
                          "access-control-request-headers": "authorization,content-type"},
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == ORIGIN
        # A Response object is JSON worth compressing; the client asked for gzip.
        whole = httpx.post(url, json={"model": "echo", "input": long_input},
                           headers={"origin": ORIGIN, "accept-encoding": "gzip"})
        assert whole.status_code == 200
        assert whole.headers["content-encoding"] == "gzip"
        assert whole.headers["access-control-allow-origin"] == ORIGIN
        assert whole.json()["status"] == "completed"
        # The event stream is never compressed (GZip would hold events back).
        streamed, raw = stream_bytes(url, {"model": "echo", "input": long_input},
                                     headers={"origin": ORIGIN, "accept-encoding": "gzip"})
        assert "content-encoding" not in streamed.headers
        assert streamed.headers["content-type"].startswith("text/event-stream")
        assert streamed.headers["access-control-allow-origin"] == ORIGIN
        assert_valid(validate_responses_sse(raw))


def test_starlette_app_the_wrong_order_loses_cors_and_compression() -> None:
    """Why the example puts CompatMiddleware innermost: outermost, it answers
    /v1/responses itself, so CORS and GZip inside it never see those requests."""
    example = load_example("starlette_app")
    wrong = Starlette(
        routes=example.app.routes,
        middleware=[
            Middleware(CompatMiddleware),
            Middleware(CORSMiddleware, allow_origins=[ORIGIN], allow_methods=["POST"], allow_headers=["*"]),
            Middleware(GZipMiddleware, minimum_size=500),
        ],
    )
    with serve(wrong) as origin:
        url = origin + "/v1/responses"
        preflight = httpx.options(url, headers={"origin": ORIGIN, "access-control-request-method": "POST"})
        assert preflight.status_code == 405
        whole = httpx.post(url, json={"model": "echo", "input": "word " * 200},
                           headers={"origin": ORIGIN, "accept-encoding": "gzip"})
        assert whole.status_code == 200
        assert "content-encoding" not in whole.headers
        assert "access-control-allow-origin" not in whole.headers


# -- fastapi_app.py ---------------------------------------------------------------


def test_fastapi_app_gains_responses_via_add_middleware() -> None:
    example = load_example("fastapi_app")
    with serve(example.app) as origin:
        client = sdk(origin + "/v1")
        assert client.responses.create(model="echo", input="hello").output_text == "FastAPI echo: hello"
        with client.responses.stream(model="echo", input="one two three") as stream:
            deltas = [event.delta for event in stream if event.type == "response.output_text.delta"]
            final = stream.get_final_response()
        assert "".join(deltas) == "FastAPI echo: one two three" and len(deltas) == 5
        assert final.usage is not None and final.usage.output_tokens == 5
        cut = client.responses.create(model="echo", input="a b c d", max_output_tokens=2)
        assert cut.status == "incomplete" and cut.output_text == "FastAPI echo:"
        assert cut.incomplete_details is not None and cut.incomplete_details.reason == "max_output_tokens"
        # FastAPI's own validation still guards the chat route (messages must
        # not be empty); its 422 reaches the client in OpenAI's envelope.
        with pytest.raises(openai.UnprocessableEntityError):
            client.responses.create(model="echo", input=[])
        # Routes outside /v1 (docs, health) are FastAPI's as before.
        assert httpx.get(origin + "/health").json() == {"ok": True}
        assert "/v1/chat/completions" in httpx.get(origin + "/openapi.json").json()["paths"]


# -- the server examples as scripts ---------------------------------------------


@pytest.mark.parametrize("name", ["starlette_app", "fastapi_app", "proxy"])
def test_server_examples_run_as_scripts(name: str, demo_upstream: str) -> None:
    port = free_port()
    env = {"PORT": str(port), "HOST": "127.0.0.1", "COMPAT_UPSTREAM": demo_upstream + "/v1"}
    with running([sys.executable, str(EXAMPLES / f"{name}.py")], env, port) as origin:
        text = sdk(origin + "/v1").responses.create(model="demo", input="from a script").output_text
    expected = {
        "starlette_app": "Starlette echo: from a script",
        "fastapi_app": "FastAPI echo: from a script",
        "proxy": "Hello! You said: from a script.",
    }[name]
    assert text.startswith(expected)


# -- proxy.py ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def recording_upstream() -> Iterator[tuple[str, HeaderRecorder]]:
    recorder = HeaderRecorder()
    with serve(recorder) as origin:
        yield origin, recorder


@pytest.fixture(scope="module")
def proxy_url(recording_upstream: tuple[str, HeaderRecorder]) -> Iterator[str]:
    """examples/proxy.py as a process, keys set, in front of the recording demo."""
    origin, _ = recording_upstream
    port = free_port()
    env = {
        "COMPAT_UPSTREAM": origin + "/v1",
        "COMPAT_UPSTREAM_KEY": "upstream-secret",
        "COMPAT_API_KEY": "proxy-secret",
        "PORT": str(port),
    }
    with running([sys.executable, str(EXAMPLES / "proxy.py")], env, port) as url:
        yield url + "/v1"


def test_proxy_is_configured_from_the_environment(proxy_url: str, recording_upstream: tuple[str, HeaderRecorder]) -> None:
    _, recorder = recording_upstream
    client = sdk(proxy_url, api_key="proxy-secret")
    recorder.seen.clear()
    with client.responses.stream(model="demo", input="through the proxy") as stream:
        final = stream.get_final_response()
    assert final.output_text.startswith("Hello! You said: through the proxy.")
    # Other /v1 paths are forwarded as they are.
    assert [model.id for model in client.models.list()] == ["demo", "demo-reasoning"]
    # The upstream sees COMPAT_UPSTREAM_KEY, never the client's key.
    assert recorder.seen == [
        ("/v1/chat/completions", b"Bearer upstream-secret"),
        ("/v1/models", b"Bearer upstream-secret"),
    ]
    with pytest.raises(openai.AuthenticationError):
        sdk(proxy_url, api_key="wrong").responses.create(model="demo", input="x")


def test_proxy_refuses_a_public_host_without_a_key() -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "proxy.py")],
        cwd=ROOT,
        env={**os.environ, "COMPAT_UPSTREAM": "http://127.0.0.1:9/v1", "HOST": "0.0.0.0", "PORT": str(free_port()),
             "COMPAT_API_KEY": ""},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0
    assert "refusing to listen on 0.0.0.0 without COMPAT_API_KEY" in result.stderr


def test_proxy_needs_an_upstream() -> None:
    example = load_example("proxy")
    with pytest.raises(SystemExit, match="COMPAT_UPSTREAM"):
        example.create_app({})
    app = example.create_app({"COMPAT_UPSTREAM": "http://127.0.0.1:9/v1", "COMPAT_API_KEY": "a, b"})
    assert isinstance(app, CompatMiddleware)
    asyncio.run(app.aclose())


# -- agents_client.py -------------------------------------------------------------


def test_agents_sdk_calls_a_function_tool_through_the_proxy(
    proxy_url: str, recording_upstream: tuple[str, HeaderRecorder]
) -> None:
    _, recorder = recording_upstream
    recorder.seen.clear()
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "agents_client.py")],
        cwd=ROOT,
        env={**os.environ, "COMPAT_BASE_URL": proxy_url, "COMPAT_API_KEY": "proxy-secret"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    # The demo called get_weather (the prompt names it), the agent ran the
    # tool and sent its output back, and the demo answered from it.
    assert result.stdout.strip() == "The tool get_weather returned: sunny, 21 C in Paris."
    assert [path for path, _ in recorder.seen] == ["/v1/chat/completions"] * 2


# -- translate_library.py and compat_asgi.translate -------------------------------


async def collect(chat_url: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    example = load_example("translate_library")
    async with httpx.AsyncClient(base_url=chat_url + "/") as client:
        return [event async for event in example.stream_response(client, body)]


def test_translate_library_example_streams_and_creates(demo_upstream: str) -> None:
    example = load_example("translate_library")

    async def scenario() -> tuple[list[dict[str, Any]], dict[str, Any]]:
        async with httpx.AsyncClient(base_url=demo_upstream + "/v1/") as client:
            events = [event async for event in example.stream_response(client, {"model": "demo", "input": "lib"})]
            whole = await example.create_response(client, {"model": "demo", "input": "lib"})
        return events, whole

    events, whole = asyncio.run(scenario())
    assert_valid(validate_responses_sse(translate.encode_events(events)))
    assert events[-1]["type"] == "response.completed"
    expected = "Hello! You said: lib. This is the compat-asgi demo model answering deterministically."
    assert example.output_text(events[-1]["response"]) == expected
    assert_valid(validate_response_object(whole, expect_status="completed"))
    assert example.output_text(whole) == expected
    # The SDK's own models accept what the library produced.
    parsed = openai.types.responses.Response.model_validate(whole)
    assert parsed.output_text == expected


def test_translate_library_serves_the_openai_sdk_from_another_framework(demo_upstream: str) -> None:
    """The library inside a plain Starlette route (no CompatMiddleware): the
    OpenAI SDK streams from it as from any Responses server."""
    example = load_example("translate_library")

    async def responses(request: Request) -> Response:
        body = await request.json()
        try:
            translate.responses_to_chat(body)  # validate before any event is sent
        except translate.InvalidRequest as exc:
            return JSONResponse(exc.to_dict(), status_code=exc.status)
        client = httpx.AsyncClient(base_url=demo_upstream + "/v1/")
        if not body.get("stream"):
            async with client:
                return JSONResponse(await example.create_response(client, body))

        async def frames() -> AsyncIterator[bytes]:
            async with client:
                async for event in example.stream_response(client, body):
                    yield translate.encode_event(event)

        return StreamingResponse(frames(), media_type="text/event-stream")

    with serve(Starlette(routes=[Route("/v1/responses", responses, methods=["POST"])])) as origin:
        client = sdk(origin + "/v1")
        with client.responses.stream(model="demo", input="via a route") as stream:
            final = stream.get_final_response()
        assert final.output_text.startswith("Hello! You said: via a route.")
        assert client.responses.create(model="demo", input="whole").output_text.startswith("Hello! You said: whole.")
        with pytest.raises(openai.BadRequestError) as caught:
            client.responses.create(model="demo", input=[{"role": "robot", "content": "x"}])
        assert caught.value.param == "input[0].role"


def test_translate_library_reports_errors_before_and_after_the_stream_starts(demo_upstream: str) -> None:
    with pytest.raises(translate.InvalidRequest) as caught:
        asyncio.run(collect(demo_upstream + "/v1", {"model": "demo"}))
    assert caught.value.param == "input" and caught.value.status == 400
    with pytest.raises(httpx.HTTPStatusError):
        asyncio.run(collect(demo_upstream + "/nowhere", {"model": "demo", "input": "x"}))
    # The chat server stops mid-answer: the stream still ends properly.
    cut_off = b'data: {"choices":[{"index":0,"delta":{"content":"Hel"}}]}\n\n'
    with respx.mock(assert_all_called=True) as mock:
        mock.post("http://chat.test/v1/chat/completions").respond(
            200, content=cut_off, headers={"content-type": "text/event-stream"}
        )
        events = asyncio.run(collect("http://chat.test/v1", {"model": "demo", "input": "x"}))
    assert [event["type"] for event in events[-2:]] == ["error", "response.failed"]
    assert events[-1]["response"]["output"][0]["status"] == "incomplete"
    assert_valid(validate_responses_sse(translate.encode_events(events)))


def test_translate_module_is_pure_and_complete() -> None:
    tree = ast.parse((ROOT / "compat_asgi" / "translate.py").read_text())
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            imported.add(node.module or "")
        elif isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
    allowed = {"__future__", "collections.abc", "typing", "compat_asgi.errors"}
    assert {name for name in imported if name not in allowed and not name.startswith("compat_asgi.core.")} == set()
    for name in translate.__all__:
        assert getattr(translate, name) is not None
    assert translate.__doc__ is not None and "httpx.AsyncClient" in translate.__doc__


def test_translate_docstring_example_runs(demo_upstream: str) -> None:
    """The snippet in compat_asgi.translate's docstring, executed as written."""
    doc = translate.__doc__ or ""
    snippet = doc.split("against a chat server::\n", 1)[1].split("\n\n``", 1)[0]
    namespace: dict[str, Any] = {}
    exec(compile(textwrap.dedent(snippet), "translate-docstring", "exec"), namespace)

    async def scenario() -> list[dict[str, Any]]:
        async with httpx.AsyncClient(base_url=demo_upstream) as client:
            body = {"model": "demo", "input": "doc", "stream": True}
            return [event async for event in namespace["responses_events"](client, body)]

    events = asyncio.run(scenario())
    assert_valid(validate_responses_sse(translate.encode_events(events)))
    assert events[-1]["type"] == "response.completed"


def test_translate_core_is_exact_with_injected_ids_and_clock() -> None:
    """Fixed ids and clock make the library's output reproducible byte for byte."""
    request = translate.responses_to_chat({"model": "m", "input": "hi", "stream": True})
    assert request.chat["stream"] is True and request.chat["stream_options"] == {"include_usage": True}

    def run() -> bytes:
        ids = translate.CountingIds()
        stream = translate.ChatToResponses(translate.new_response(request.echo, ids("resp"), 0), ids)
        chunks = (
            b'data: {"choices":[{"index":0,"delta":{"role":"assistant","content":"He"}}]}\n\n'
            b'data: {"choices":[{"index":0,"delta":{"content":"llo"},"finish_reason":"stop"}]}\n\n'
            b"data: [DONE]\n\n"
        )
        events = stream.start()
        for i in range(len(chunks)):  # one byte at a time
            events += stream.feed_bytes(chunks[i : i + 1])
        return translate.encode_events(events + stream.close())

    first = run()
    assert first == run()
    assert_valid(validate_responses_sse(first))
    assert b'"id":"resp_0001"' in first and b'"created_at":0' in first


# -- curl.md ----------------------------------------------------------------------

_BLOCK = re.compile(r"```sh\n(?P<command>curl .*?)\n```\n\n```text\n(?P<output>.*?)\n```", re.S)


def _summary(text: str) -> Any:
    """What must stay true of an output: status, content type, event sequence,
    texts, arguments and errors; not ids, timestamps or dates."""
    head: list[str] = []
    body = text
    if text.startswith("HTTP/"):
        raw_head, _, body = text.partition("\n\n")
        lines = raw_head.splitlines()
        head = [lines[0]] + sorted(
            line.lower() for line in lines[1:] if line.lower().startswith(("content-type:", "cache-control:"))
        )
    if body.startswith("event:"):
        events = []
        for frame in body.strip().split("\n\n"):
            name, data = frame.split("\n", 1)
            payload = orjson.loads(data.removeprefix("data: "))
            kept = {k: payload[k] for k in ("type", "sequence_number", "output_index", "delta", "text", "arguments") if k in payload}
            if "response" in payload:
                kept["response"] = _project(payload["response"])
            if "item" in payload:
                kept["item"] = _project_item(payload["item"])
            events.append((name, kept))
        return head, events
    return head, _project(orjson.loads(body))


def _project_item(item: dict[str, Any]) -> Any:
    keep = ("type", "status", "role", "name", "call_id", "arguments")
    texts = [part.get("text") for part in item.get("content") or ()]
    return {**{k: item[k] for k in keep if k in item}, "texts": texts}


def _project(obj: Any) -> Any:
    if isinstance(obj, dict) and obj.get("object") == "response":
        usage = obj["usage"] and {k: obj["usage"][k] for k in ("input_tokens", "output_tokens", "total_tokens")}
        return {"status": obj["status"], "output": [_project_item(item) for item in obj["output"]], "usage": usage}
    if isinstance(obj, dict) and obj.get("object") == "list":
        return [entry["id"] for entry in obj["data"]]
    return obj  # error envelopes are compared whole


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_md_matches_a_live_compat_asgi_serve() -> None:
    doc = EXAMPLES / "curl.md"
    text = doc.read_text()
    blocks = list(_BLOCK.finditer(text))
    assert len(blocks) >= 5
    port = free_port()
    argv = [sys.executable, "-m", "compat_asgi", "serve", "--port", str(port), "--log-level", "warning"]
    regenerate = os.environ.get("COMPAT_REGENERATE_CURL_MD") == "1"
    outputs: list[str] = []
    with running(argv, {}, port):
        for block in blocks:
            command = block["command"].replace("127.0.0.1:8000", f"127.0.0.1:{port}")
            result = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=30, check=True)
            live = result.stdout.replace("\r\n", "\n").rstrip("\n")
            outputs.append(live.replace(f"127.0.0.1:{port}", "127.0.0.1:8000"))
            if not regenerate:
                assert _summary(live) == _summary(block["output"]), f"curl.md is out of date for:\n{block['command']}"
    if regenerate:
        pieces, last = [], 0
        for block, live in zip(blocks, outputs):
            pieces += [text[last : block.start("output")], live]
            last = block.end("output")
        doc.write_text("".join(pieces) + text[last:])
