"""Responses WebSocket mode, driven by the real OpenAI SDK (``client.responses.connect()``),
the Agents SDK's WebSocket model and raw ``websockets`` clients against uvicorn."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import subprocess
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import websockets
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from codex_support import codex_binary
from support import Scopes, serve
from test_stored import RecordingDemo

from compat_asgi import CompatMiddleware
from compat_asgi.demo import DemoChatApp
from compat_asgi.store.memory import MemoryStore
from compat_asgi.validate import assert_valid, validate_responses_events

KEY = "sk-ws-test"


def sync(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test body in its own event loop (the servers run in threads)."""

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(test(*args, **kwargs))

    return run


@pytest.fixture(scope="module")
def backend() -> RecordingDemo:
    return RecordingDemo()


@pytest.fixture(scope="module")
def scopes() -> list[Scopes]:
    return []


@pytest.fixture(scope="module", params=["no-store", "memory"])
def ws_server(request: pytest.FixtureRequest, backend: RecordingDemo, scopes: list[Scopes]) -> Iterator[str]:
    store = MemoryStore() if request.param == "memory" else None
    app = Scopes(CompatMiddleware(backend, store=store, api_keys=[KEY], max_websockets_per_key=3))
    scopes.append(app)
    with serve(app) as url:
        yield url


def client(url: str, key: str = KEY) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=url + "/v1", api_key=key, max_retries=0)


async def collect(connection: Any) -> list[dict[str, Any]]:
    """Raw events of one turn, up to its terminal event (or a refusal)."""
    events: list[dict[str, Any]] = []
    while True:
        event = json.loads(await connection.recv_bytes())
        events.append(event)
        if event["type"] in ("response.completed", "response.incomplete", "response.failed"):
            return events
        if event["type"] == "error" and "status" in event:
            return events


def check(events: list[dict[str, Any]]) -> dict[str, Any]:
    """The events form one valid Responses stream; returns its final response."""
    assert_valid(validate_responses_events(events))
    return events[-1]["response"]  # type: ignore[no-any-return]


@sync
async def test_sdk_connect_streams_several_responses_on_one_socket(ws_server: str) -> None:
    async with client(ws_server).responses.connect() as connection:
        ids = []
        for prompt in ("Say hello.", "Say goodbye."):
            await connection.response.create(model="demo", input=prompt, store=False)
            events = await collect(connection)
            response = check(events)
            assert response["status"] == "completed"
            assert [e["sequence_number"] for e in events] == list(range(len(events)))
            text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
            assert text and response["output"][-1]["content"][0]["text"] == text
            ids.append(response["id"])
        assert len(set(ids)) == 2


@sync
async def test_sdk_events_parse_as_typed_server_events(ws_server: str) -> None:
    async with client(ws_server).responses.connect() as connection:
        await connection.response.create(model="demo", input="Say hello.", store=False)
        kinds = []
        async for event in connection:
            kinds.append(type(event).__name__)
            if event.type == "response.completed":
                assert event.response.output_text
                break
        assert kinds[0] == "ResponseWsCreated" and kinds[-1] == "ResponseWsCompleted"


@sync
async def test_store_false_continuation_is_served_from_the_connection(
    ws_server: str, backend: RecordingDemo
) -> None:
    async with client(ws_server).responses.connect() as connection:
        await connection.response.create(model="demo", input="My name is Ada.", store=False)
        first = check(await collect(connection))
        before = len(backend.messages)
        await connection.response.create(
            model="demo", input="What is my name?", previous_response_id=first["id"], store=False
        )
        second = check(await collect(connection))
        assert second["previous_response_id"] == first["id"]
        contents = [str(m.get("content")) for m in backend.messages[before]]
        # The upstream saw the first turn (input and answer) before the new input.
        assert any("My name is Ada." in c for c in contents)
        assert any(first["output"][-1]["content"][0]["text"] in c for c in contents)
        assert "What is my name?" in contents[-1]


@sync
async def test_only_the_last_response_is_remembered(ws_server: str) -> None:
    async with client(ws_server).responses.connect() as connection:
        await connection.response.create(model="demo", input="one", store=False)
        first = check(await collect(connection))
        await connection.response.create(model="demo", input="two", store=False)
        check(await collect(connection))
        await connection.response.create(
            model="demo", input="three", previous_response_id=first["id"], store=False
        )
        [error] = await collect(connection)
        assert error["type"] == "error" and error["status"] == 400
        assert error["error"]["code"] == "previous_response_not_found"
        assert error["error"]["param"] == "previous_response_id"


@sync
async def test_failed_continuation_evicts_the_cached_response(ws_server: str) -> None:
    async with client(ws_server).responses.connect() as connection:
        await connection.response.create(model="demo", input="one", store=False)
        first = check(await collect(connection))
        # Refused (bad field) while continuing: the cached response is dropped.
        await connection.send(
            {
                "type": "response.create",
                "model": "demo",
                "input": "two",
                "previous_response_id": first["id"],
                "temperature": "hot",
            }  # type: ignore[typeddict-item]
        )
        [refused] = await collect(connection)
        assert refused["status"] == 400 and refused["error"]["param"] == "temperature"
        await connection.response.create(
            model="demo", input="three", previous_response_id=first["id"], store=False
        )
        [error] = await collect(connection)
        assert error["error"]["code"] == "previous_response_not_found"


@sync
async def test_invalid_messages_get_an_error_and_the_socket_stays_usable(ws_server: str) -> None:
    url = ws_server.replace("http", "ws") + "/v1/responses"
    headers = {"Authorization": f"Bearer {KEY}"}
    async with websockets.connect(url, additional_headers=headers) as ws:
        for message, code, status in (
            ("not json", "invalid_json", 400),
            ("[1, 2]", "missing_required_parameter", 400),
            ('{"type": "response.teleport"}', "invalid_value", 400),
            ('{"type": "response.create", "model": "demo", "input": "x", "background": true}', None, 400),
            ('{"type": "response.create", "model": "demo", "input": 7}', None, 400),
            ('{"type": "response.create", "input": "' + "x" * (2 << 20) + '"}', "request_too_large", 413),
        ):
            await ws.send(message)
            event = json.loads(await ws.recv())
            assert event["type"] == "error" and event["status"] == status, event
            if code is not None:
                assert event["error"]["code"] == code
        # Codex acknowledges responses it processed; that needs no answer.
        await ws.send('{"type": "response.processed", "response_id": "resp_x"}')
        await ws.send('{"type": "response.create", "model": "demo", "input": "hi", "stream": true}')
        events = []
        while not events or events[-1]["type"] != "response.completed":
            events.append(json.loads(await ws.recv()))
        check(events)


@sync
async def test_generate_false_warms_up_a_response_later_turns_continue(
    ws_server: str, backend: RecordingDemo
) -> None:
    async with client(ws_server).responses.connect() as connection:
        before = len(backend.messages)
        await connection.send(
            {
                "type": "response.create",
                "model": "demo",
                "instructions": "Be brief.",
                "input": "Remember: the code word is heron.",
                "generate": False,
                "store": False,
            }  # type: ignore[typeddict-item]
        )
        warm = check(await collect(connection))
        assert warm["output"] == [] and len(backend.messages) == before
        await connection.response.create(
            model="demo", input="Go on.", previous_response_id=warm["id"], store=False
        )
        check(await collect(connection))
        contents = [str(m.get("content")) for m in backend.messages[before]]
        assert any("heron" in c for c in contents), contents


@sync
async def test_stored_responses_continue_across_sockets_and_over_http(ws_server: str, request: Any) -> None:
    sdk = client(ws_server)
    async with sdk.responses.connect() as connection:
        await connection.response.create(model="demo", input="Note this.", store=True)
        first = check(await collect(connection))
    if "no-store" in request.node.callspec.id:
        async with sdk.responses.connect() as connection:
            await connection.response.create(model="demo", input="x", previous_response_id=first["id"])
            [error] = await collect(connection)
            assert error["error"]["code"] == "previous_response_not_found"
        return
    stored = await sdk.responses.retrieve(first["id"])
    assert stored.status == "completed" and stored.output_text
    async with sdk.responses.connect() as connection:
        await connection.response.create(model="demo", input="And?", previous_response_id=first["id"])
        assert check(await collect(connection))["status"] == "completed"


@sync
async def test_handshake_needs_the_api_key(ws_server: str) -> None:
    with pytest.raises(Exception) as caught:
        async with client(ws_server, key="sk-wrong").responses.connect() as connection:
            await connection.recv()
    assert "401" in str(caught.value)


@sync
async def test_sockets_per_key_are_limited(ws_server: str) -> None:
    url = ws_server.replace("http", "ws") + "/v1/responses"
    headers = {"Authorization": f"Bearer {KEY}"}
    opened = [await websockets.connect(url, additional_headers=headers) for _ in range(3)]
    try:
        with pytest.raises(websockets.InvalidStatus) as caught:
            await websockets.connect(url, additional_headers=headers)
        assert caught.value.response.status_code == 429
        await opened[0].close()
        await asyncio.sleep(0.1)
        again = await websockets.connect(url, additional_headers=headers)
        await again.close()
    finally:
        for ws in opened:
            await ws.close()


@sync
async def test_client_leaving_mid_response_frees_the_socket_slot(ws_server: str) -> None:
    url = ws_server.replace("http", "ws") + "/v1/responses"
    headers = {"Authorization": f"Bearer {KEY}"}
    for _ in range(5):  # more than the per-key limit: each socket's slot comes back
        ws = await websockets.connect(url, additional_headers=headers)
        await ws.send('{"type": "response.create", "model": "demo", "input": "Tell a long story."}')
        json.loads(await ws.recv())
        ws.transport.abort()  # gone without a closing handshake, mid-stream
    await asyncio.sleep(0.2)
    async with client(ws_server).responses.connect() as connection:
        await connection.response.create(model="demo", input="Still there?", store=False)
        check(await collect(connection))


def test_agents_sdk_runs_a_tool_agent_over_its_websocket_model(
    ws_server: str, backend: RecordingDemo, scopes: list[Scopes]
) -> None:
    agents = pytest.importorskip("agents")
    from agents import Agent, function_tool
    from agents.models.openai_responses import OpenAIResponsesWSModel

    @function_tool
    def get_weather(city: str) -> str:
        """Weather for a city."""
        return f"sunny in {city}"

    agents.set_tracing_disabled(True)

    async def run() -> str:
        model = OpenAIResponsesWSModel(model="demo", openai_client=client(ws_server))
        agent = Agent(name="forecaster", instructions="Use the tool.", model=model, tools=[get_weather])
        try:
            result = await agents.Runner.run(agent, "In Paris: call get_weather.")
        finally:
            await model.close()
        return str(result.final_output)

    before = len(backend.messages)
    posts, sockets = scopes[-1].count("POST"), scopes[-1].count("WS")
    assert asyncio.run(run()) == "The tool get_weather returned: sunny in Paris."
    assert scopes[-1].count("POST") == posts and scopes[-1].count("WS") == sockets + 1
    # Two model turns (the call, then the answer from its result), both over the socket.
    assert len(backend.messages) - before == 2
    assert backend.messages[-1][-1]["role"] == "tool"


def test_codex_cli_stays_on_the_websocket(tmp_path: Path) -> None:
    codex = codex_binary()
    backend = RecordingDemo()
    # Codex's default request (client_metadata, hosted and namespace tools) as it comes.
    app = Scopes(CompatMiddleware(backend, api_keys=[KEY]))
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    with serve(app) as url:
        provider = (
            f'{{name="compat", base_url="{url}/v1", env_key="COMPAT_KEY", '
            'wire_api="responses", supports_websockets=true}'
        )
        done = subprocess.run(
            [codex, "exec", "--skip-git-repo-check", "-c", "model_provider=compat",
             "-c", f"model_providers.compat={provider}", "-c", "model=demo", "Say hello"],
            cwd=work,
            env={**os.environ, "CODEX_HOME": str(home), "COMPAT_KEY": KEY},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
        )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "You said: Say hello" in done.stdout
    # Every turn went over the socket: none fell back to HTTP (Codex retries a turn over
    # HTTP when the socket says previous_response_not_found).
    assert app.count("WS") >= 1 and app.count("POST") == 0, app.seen
    assert backend.messages, "the upstream was never asked"
    # Codex warms the socket up (generate: false) and continues from it with
    # previous_response_id: the upstream still got its instructions with the prompt.
    last = backend.messages[-1]
    assert last[0]["role"] in ("system", "developer") and "Codex" in str(last[0]["content"])
    assert "Say hello" in str(last[-1]["content"])


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
CREATE_FIELDS = st.fixed_dictionaries(
    {"type": st.just("response.create")},
    optional={
        "model": JSON_VALUES | st.just("demo"),
        "input": JSON_VALUES | st.just("hi"),
        "previous_response_id": JSON_VALUES,
        "generate": JSON_VALUES,
        "store": JSON_VALUES,
        "tools": JSON_VALUES,
        "background": JSON_VALUES,
    },
)


async def drive(app: Any, messages: list[str]) -> list[dict[str, Any]]:
    """One socket over raw ASGI: the messages, then a disconnect once every turn was answered."""
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    for message in [{"type": "websocket.connect"}] + [{"type": "websocket.receive", "text": m} for m in messages]:
        inbox.put_nowait(message)
    frames: list[dict[str, Any]] = []
    answered = 0
    expected = sum(1 for m in messages if '"response.processed"' not in m)

    async def receive() -> dict[str, Any]:
        return await inbox.get()

    async def send(message: dict[str, Any]) -> None:
        nonlocal answered
        if message["type"] == "websocket.send":
            frame = json.loads(message["text"])
            frames.append(frame)
            terminal = ("response.completed", "response.incomplete", "response.failed")
            if frame["type"] in terminal or (frame["type"] == "error" and "status" in frame):
                answered += 1
                if answered == expected:
                    inbox.put_nowait({"type": "websocket.disconnect", "code": 1000})

    scope = {"type": "websocket", "path": "/v1/responses", "headers": [], "query_string": b"", "subprotocols": []}
    await asyncio.wait_for(app(scope, receive, send), 30)
    return frames


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(first=CREATE_FIELDS | JSON_VALUES.map(lambda v: {"type": "response.create", "input": v, "model": "demo"}))
def test_any_message_gets_one_answer_and_the_socket_stays_usable(first: Any) -> None:
    app = CompatMiddleware(DemoChatApp())
    valid = '{"type": "response.create", "model": "demo", "input": "still here?", "store": false}'
    frames = asyncio.run(drive(app, [json.dumps(first), valid]))
    # The last turn is a whole valid stream, whatever came before it.
    starts = [i for i, frame in enumerate(frames) if frame["type"] == "response.created"]
    last = frames[starts[-1] :]
    assert_valid(validate_responses_events(last))
    assert last[-1]["type"] == "response.completed"
    for frame in frames[: starts[-1]]:
        if frame["type"] == "error" and "status" in frame:
            assert 400 <= frame["status"] < 500, frame  # refused as the client's fault, never a 500


def test_upstream_faults_over_the_socket_fail_the_turn_and_evict_the_kept_response() -> None:
    from faulty_upstream import FaultyUpstream

    with serve(FaultyUpstream()) as upstream, serve(CompatMiddleware(upstream=upstream + "/v1")) as url:

        async def main() -> None:
            async with client(url).responses.connect() as connection:
                await connection.response.create(model="trickle", input="hi", store=False)
                first = check(await collect(connection))
                assert first["status"] == "completed"
                # Fails after the stream started: error + response.failed, like SSE.
                await connection.response.create(
                    model="error-mid", input="go on", previous_response_id=first["id"], store=False
                )
                failed = await collect(connection)
                assert [e["type"] for e in failed[-2:]] == ["error", "response.failed"], failed
                check(failed)
                # The failed continuation evicted the kept response.
                await connection.response.create(
                    model="trickle", input="again", previous_response_id=first["id"], store=False
                )
                [gone] = await collect(connection)
                assert gone["error"]["code"] == "previous_response_not_found"
                # Refused before any event (upstream 4xx): an error with its status, socket still usable.
                await connection.response.create(model="status-429", input="x", store=False)
                [refused] = await collect(connection)
                assert refused["type"] == "error" and refused["status"] == 429
                await connection.response.create(model="trickle", input="fine", store=False)
                assert check(await collect(connection))["status"] == "completed"

        asyncio.run(main())


def test_each_turn_is_a_request_in_the_access_log_and_the_metrics(caplog: pytest.LogCaptureFixture) -> None:
    """One access-log line and one ``WS`` request in the metrics per turn,
    answered or refused; acknowledgements are none."""
    app = CompatMiddleware(DemoChatApp(), store="memory", access_log="json", metrics=True)

    async def turns(url: str) -> None:
        async with websockets.connect(url.replace("http", "ws") + "/v1/responses") as ws:
            await ws.send(json.dumps({"type": "response.create", "model": "demo", "input": "hi",
                                      "client_metadata": {"x": "y"}}))
            events: list[dict[str, Any]] = []
            while not events or events[-1]["type"] != "response.completed":
                events.append(json.loads(await ws.recv()))
            check(events)
            await ws.send('{"type": "response.processed", "response_id": "resp_x"}')
            await ws.send("not json")
            assert json.loads(await ws.recv())["status"] == 400

    with caplog.at_level(logging.INFO, logger="compat_asgi.access"), serve(app) as url:
        asyncio.run(turns(url))
        metrics = httpx.get(url + "/metrics", timeout=10).text
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "compat_asgi.access"]
    turns_logged = [line for line in lines if line["method"] == "WS"]
    assert [(t["path"], t["status"], t["mode"], t["error"]) for t in turns_logged] == [
        ("/v1/responses", 200, "translated", None), ("/v1/responses", 400, "local", "invalid_json")
    ]
    answered = turns_logged[0]
    assert answered["model"] == "demo" and answered["upstream"] == "default" and answered["stream"] is True
    assert answered["ignored"] == ["client_metadata"]
    assert answered["ttfb_ms"] is not None and answered["duration_ms"] >= answered["ttfb_ms"]
    assert 'compat_asgi_requests_total{method="WS",mode="translated",path="/v1/responses",status="200"} 1.0' in metrics
    assert "compat_asgi_active_requests 1.0" in metrics  # the /metrics request itself: the turns ended


def test_a_turn_takes_one_of_the_servers_request_slots() -> None:
    """max_concurrent_requests counts WebSocket turns with HTTP requests: past
    it a turn gets a 503 error event, and the connection keeps its last response."""
    app = CompatMiddleware(DemoChatApp(word_delay=0.05), max_concurrent_requests=1)

    async def turn(ws: Any, **body: Any) -> list[dict[str, Any]]:
        await ws.send(json.dumps({"type": "response.create", "model": "demo", "store": False, **body}))
        events = [json.loads(await ws.recv())]
        while events[-1]["type"] not in ("response.completed", "error"):
            events.append(json.loads(await ws.recv()))
        return events

    async def scenario(url: str) -> None:
        async with websockets.connect(url.replace("http", "ws") + "/v1/responses") as ws:
            first = check(await turn(ws, input="hi"))
            async with httpx.AsyncClient(timeout=30) as client, client.stream(
                "POST", url + "/v1/responses", json={"model": "demo", "input": "a b c d e f", "stream": True}
            ) as held:
                assert held.status_code == 200
                lines = held.aiter_lines()
                await anext(lines)  # the HTTP stream is under way: it holds the one slot
                [busy] = await turn(ws, input="again", previous_response_id=first["id"])
                assert busy["status"] == 503 and busy["error"]["code"] == "server_busy", busy
                async for _ in lines:
                    pass
            # The server gives the slot back just after the body's last bytes went out.
            await asyncio.sleep(0.2)
            # The slot is free again, and the refusal did not cost the connection its memory.
            second = check(await turn(ws, input="again", previous_response_id=first["id"]))
            assert second["previous_response_id"] == first["id"]

    with serve(app) as url:
        asyncio.run(scenario(url))
