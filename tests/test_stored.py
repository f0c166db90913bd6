"""Stored responses through the OpenAI SDK, on every store backend:
previous_response_id chains, conversations, item references, GET/DELETE,
input_items, stream replay, isolation, restarts and several workers."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest
import redis_support
from support import serve

from compat_asgi import CompatMiddleware
from compat_asgi.asgi import BODY_SLICE
from compat_asgi.demo import DemoChatApp
from compat_asgi.types import Message, Receive, Scope, Send
from compat_asgi.validate import assert_valid, validate_responses_sse

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]},
}


class RecordingDemo:
    """The demo backend, remembering the chat messages of each request."""

    def __init__(self) -> None:
        self.demo = DemoChatApp()
        self.messages: list[list[dict[str, Any]]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != "/v1/chat/completions":
            await self.demo(scope, receive, send)
            return
        message = await receive()
        self.messages.append(orjson.loads(message["body"])["messages"])
        replayed = False

        async def again() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return message
            return await receive()

        await self.demo(scope, again, send)


@pytest.fixture(params=["memory", "sqlite", "redis"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return redis_support.store_url(request, tmp_path)


@pytest.fixture
def recorded(store_url: str) -> Iterator[tuple[RecordingDemo, openai.OpenAI]]:
    demo = RecordingDemo()
    with serve(CompatMiddleware(demo, store=store_url)) as url:
        yield demo, openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)


def test_previous_response_id_replays_history_with_a_tool_round_trip(recorded: tuple[RecordingDemo, openai.OpenAI]) -> None:
    demo, client = recorded
    first = client.responses.create(model="demo", input="My name is Ada.", instructions="Be kind.")
    with client.responses.stream(
        model="demo", input="What is the weather in Paris? Use get_weather.", tools=[WEATHER], previous_response_id=first.id
    ) as stream:
        second = stream.get_final_response()
    (call,) = [item for item in second.output if item.type == "function_call"]
    third = client.responses.create(
        model="demo", tools=[WEATHER], previous_response_id=second.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "18C"}],
    )
    # The backend could only name the tool because the stored call was replayed.
    assert third.output_text == "The tool get_weather returned: 18C."
    assert third.previous_response_id == second.id
    history = demo.messages[-1]
    # Instructions are per request, as in OpenAI's API: not carried over.
    assert [m["role"] for m in history] == ["user", "assistant", "user", "assistant", "tool"]
    assert history[0]["content"] == "My name is Ada."
    assert history[1]["content"] == first.output_text
    assert history[3]["tool_calls"][0]["id"] == call.call_id
    assert demo.messages[0][0] == {"role": "system", "content": "Be kind."}


def test_retrieve_delete_and_input_items(recorded: tuple[RecordingDemo, openai.OpenAI]) -> None:
    _, client = recorded
    created = client.responses.create(
        model="demo",
        input=[{"role": "user", "content": "one"}, {"role": "assistant", "content": "two"}, {"role": "user", "content": "three"}],
    )
    assert client.responses.retrieve(created.id).model_dump() == created.model_dump()
    page = client.responses.input_items.list(created.id, limit=2, order="asc")
    assert [item.content[0].text for item in page.data] == ["one", "two"]  # type: ignore[union-attr]
    assert page.has_more
    rest = client.responses.input_items.list(created.id, order="asc", after=page.data[-1].id)
    assert [item.content[0].text for item in rest.data] == ["three"]  # type: ignore[union-attr]
    newest = client.responses.input_items.list(created.id)
    assert newest.data[0].content[0].text == "three"  # type: ignore[union-attr]
    deleted = client.delete(f"/responses/{created.id}", cast_to=httpx.Response).json()
    assert deleted == {"id": created.id, "object": "response", "deleted": True}
    with pytest.raises(openai.NotFoundError) as caught:
        client.responses.retrieve(created.id)
    assert caught.value.body["param"] == "response_id"  # type: ignore[index]
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="demo", input="x", previous_response_id=created.id)


def test_store_false_is_not_kept(recorded: tuple[RecordingDemo, openai.OpenAI]) -> None:
    _, client = recorded
    ephemeral = client.responses.create(model="demo", input="forget me", store=False)
    assert ephemeral.store is False
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(ephemeral.id)
    with pytest.raises(openai.NotFoundError) as caught:
        client.responses.create(model="demo", input="x", previous_response_id=ephemeral.id)
    assert caught.value.body["param"] == "previous_response_id"  # type: ignore[index]


def test_conversation_threads_turns_and_item_reference_resolves(recorded: tuple[RecordingDemo, openai.OpenAI]) -> None:
    demo, client = recorded
    first = client.responses.create(model="demo", input="alpha", conversation="trip-planning")
    assert first.conversation is not None and first.conversation.id == "trip-planning"
    client.responses.create(model="demo", input="beta", conversation={"id": "trip-planning"})
    assert [m["content"] for m in demo.messages[-1] if m["role"] == "user"] == ["alpha", "beta"]
    message_id = first.output[0].id
    client.responses.create(
        model="demo", previous_response_id=first.id,
        input=[{"type": "item_reference", "id": message_id}, {"role": "user", "content": "gamma"}],
    )
    assert demo.messages[-1][-2] == {"role": "assistant", "content": first.output_text}
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model="demo", input=[{"type": "item_reference", "id": "msg_missing"}])
    assert caught.value.body["param"] == "input[0].id"  # type: ignore[index]


def test_stream_replay_matches_and_resumes(store_url: str) -> None:
    with serve(CompatMiddleware(DemoChatApp(), store=store_url)) as url:
        body = {"model": "demo", "input": "In Paris use get_weather", "tools": [WEATHER], "stream": True}
        original = httpx.post(url + "/v1/responses", json=body).content
        events = [json.loads(line[6:]) for line in original.split(b"\n") if line.startswith(b"data: ")]
        response_id = events[0]["response"]["id"]
        replay = httpx.get(f"{url}/v1/responses/{response_id}", params={"stream": "true"}).content
        assert replay == original
        assert_valid(validate_responses_sse(replay))
        resumed = httpx.get(f"{url}/v1/responses/{response_id}", params={"stream": "true", "starting_after": 3}).content
        assert [json.loads(line[6:])["sequence_number"] for line in resumed.split(b"\n") if line.startswith(b"data: ")] == list(range(4, len(events)))
        stored = httpx.get(f"{url}/v1/responses/{response_id}").json()
        assert stored == events[-1]["response"]  # the same object, same ids, as the stream produced


def test_stored_responses_are_scoped_to_the_api_key(store_url: str) -> None:
    with serve(CompatMiddleware(DemoChatApp(), store=store_url, api_keys=["alice", "bob"])) as url:
        alice = openai.OpenAI(base_url=url + "/v1", api_key="alice", max_retries=0)
        bob = openai.OpenAI(base_url=url + "/v1", api_key="bob", max_retries=0)
        secret = alice.responses.create(model="demo", input="alice's secret", conversation="shared-name")
        with pytest.raises(openai.NotFoundError):
            bob.responses.retrieve(secret.id)
        with pytest.raises(openai.NotFoundError):
            bob.responses.create(model="demo", input="x", previous_response_id=secret.id)
        with pytest.raises(openai.NotFoundError):
            bob.responses.input_items.list(secret.id)
        bob_turn = bob.responses.create(model="demo", input="bob here", conversation="shared-name")
        assert "alice" not in bob_turn.output_text
        assert alice.responses.retrieve(secret.id).id == secret.id


def test_sqlite_store_survives_a_restart(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    with serve(CompatMiddleware(DemoChatApp(), store=url)) as base:
        first = openai.OpenAI(base_url=base + "/v1", api_key="x").responses.create(model="demo", input="remember")
    demo = RecordingDemo()
    with serve(CompatMiddleware(demo, store=url)) as base:
        client = openai.OpenAI(base_url=base + "/v1", api_key="x")
        assert client.responses.retrieve(first.id).output_text == first.output_text
        client.responses.create(model="demo", input="and now?", previous_response_id=first.id)
    assert demo.messages[-1][0] == {"role": "user", "content": "remember"}


def test_two_workers_sharing_redis_continue_each_others_chains(redis_port: int) -> None:
    redis_support.redis_command(redis_port, "FLUSHALL")
    url = f"redis://127.0.0.1:{redis_port}/0"
    demo = RecordingDemo()
    with serve(CompatMiddleware(DemoChatApp(), store=url)) as one, serve(CompatMiddleware(demo, store=url)) as two:
        first = openai.OpenAI(base_url=one + "/v1", api_key="x").responses.create(model="demo", input="started on one")
        second = openai.OpenAI(base_url=two + "/v1", api_key="x").responses.create(
            model="demo", input="continued on two", previous_response_id=first.id
        )
        assert openai.OpenAI(base_url=one + "/v1", api_key="x").responses.retrieve(second.id).previous_response_id == first.id
    assert [m["content"] for m in demo.messages[-1] if m["role"] == "user"] == ["started on one", "continued on two"]


def test_without_a_store_chaining_is_a_clear_400() -> None:
    result = asyncio.run(_post(CompatMiddleware(DemoChatApp()), {"model": "demo", "input": "x", "previous_response_id": "resp_1"}))
    assert result["error"]["param"] == "previous_response_id"


async def _post(app: CompatMiddleware, body: dict[str, Any]) -> Any:
    from support import call

    return (await call(app, "POST", "/v1/responses", body)).json()


def test_store_false_in_a_conversation_threads_the_turn_but_keeps_no_response(recorded: tuple[RecordingDemo, openai.OpenAI]) -> None:
    demo, client = recorded
    first = client.responses.create(model="demo", input="private", conversation="c-nostore", store=False)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(first.id)
    client.responses.create(model="demo", input="next", conversation="c-nostore")
    assert [m["content"] for m in demo.messages[-1] if m["role"] == "user"] == ["private", "next"]


class LongAnswer:
    """A chat upstream streaming ``pieces`` text deltas of ``piece`` each (or one JSON answer)."""

    def __init__(self, pieces: int, piece: str) -> None:
        self.pieces = pieces
        self.piece = piece

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = orjson.loads((await receive())["body"])
        head = {"id": "chatcmpl-long", "object": "chat.completion.chunk", "created": 1, "model": "long"}
        if not request.get("stream"):
            completion = {
                **head,
                "object": "chat.completion",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": self.piece * self.pieces}, "finish_reason": "stop"}],
            }
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": orjson.dumps(completion)})
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        for delta in [{"role": "assistant", "content": ""}] + [{"content": self.piece}] * self.pieces:
            chunk = {**head, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
            await send({"type": "http.response.body", "body": b"data: " + orjson.dumps(chunk) + b"\n\n", "more_body": True})
        done = {**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        await send({"type": "http.response.body", "body": b"data: " + orjson.dumps(done) + b"\n\ndata: [DONE]\n\n"})


def _stream_and_replay(app: CompatMiddleware, **query: str) -> tuple[bytes, str, Any]:
    from support import call, http_scope

    async def scenario() -> tuple[bytes, str, Any]:
        created = await call(app, "POST", "/v1/responses", {"model": "long", "input": "go", "stream": True})
        response_id = json.loads(created.body.split(b"\n")[1][6:])["response"]["id"]
        scope = http_scope("GET", f"/v1/responses/{response_id}")
        scope["query_string"] = "&".join(f"{k}={v}" for k, v in query.items()).encode()
        return created.body, response_id, await call(app, "GET", scope["path"], scope=scope)

    return asyncio.run(scenario())


@pytest.mark.parametrize("store_url", ["memory", "sqlite"], indirect=True)
def test_stored_events_over_the_cap_are_not_kept_and_replay_says_so(store_url: str) -> None:
    app = CompatMiddleware(LongAnswer(200, "word "), store=store_url, max_recorded_events=20_000)
    streamed, response_id, replay = _stream_and_replay(app, stream="true")
    assert len(streamed) > 20_000
    assert_valid(validate_responses_sse(streamed))  # the client's stream is whole
    assert replay.status == 400
    error = replay.json()["error"]
    assert error["param"] == "stream" and "streamed more events than this server records" in error["message"]
    # The response itself is stored, complete.
    async def retrieve() -> Any:
        from support import call

        return (await call(app, "GET", f"/v1/responses/{response_id}")).json()

    stored = asyncio.run(retrieve())
    assert stored["status"] == "completed" and stored["output"][0]["content"][0]["text"] == "word " * 200


def test_a_long_answers_closing_events_go_out_one_at_a_time_in_slices() -> None:
    """Four closing events each carry the whole text: they are never joined
    into one body message, nor sent in messages larger than a slice; and as
    they cannot fit the recording (the deltas alone would), the stream is
    stored without events."""
    from support import call, http_scope

    piece = "abcdefghij" * 500
    text = piece * 100  # 500 KB, longer than a slice
    app = CompatMiddleware(LongAnswer(100, piece), store="memory", max_recorded_events=1 << 20)
    created = asyncio.run(call(app, "POST", "/v1/responses", {"model": "long", "input": "go", "stream": True}))
    streamed = b"".join(created.bodies)
    assert_valid(validate_responses_sse(streamed))
    events = [json.loads(line[6:]) for line in streamed.split(b"\n") if line.startswith(b"data: ")]
    closing = ("response.output_text.done", "response.content_part.done", "response.output_item.done")
    assert [e["type"] for e in events[-4:]] == [*closing, "response.completed"]
    assert events[-1]["response"]["output"][0]["content"][0]["text"] == text
    assert streamed.count(text.encode()) == 4
    assert max(map(len, created.bodies)) <= BODY_SLICE < len(text)
    assert len(streamed) - 4 * len(text) < 1 << 20 < len(streamed)
    scope = http_scope("GET", f"/v1/responses/{events[-1]['response']['id']}")
    scope["query_string"] = b"stream=true"
    replay = asyncio.run(call(app, "GET", scope["path"], scope=scope))
    assert replay.status == 400 and replay.json()["error"]["param"] == "stream"


def test_a_long_answer_not_streamed_goes_out_in_slices() -> None:
    from support import call

    app = CompatMiddleware(LongAnswer(200, "0123456789" * 500), store="memory")
    answer = asyncio.run(call(app, "POST", "/v1/responses", {"model": "long", "input": "go"}))
    assert answer.status == 200 and len(answer.bodies) >= 4 and max(map(len, answer.bodies)) == BODY_SLICE
    assert answer.json()["output"][0]["content"][0]["text"] == "0123456789" * 500 * 200


@pytest.mark.parametrize("store_url", ["memory", "sqlite"], indirect=True)
def test_replay_streams_the_stored_events_in_bounded_chunks(store_url: str) -> None:
    app = CompatMiddleware(LongAnswer(3000, "chunky words "), store=store_url)
    streamed, _, replay = _stream_and_replay(app, stream="true")
    assert replay.status == 200 and replay.body == streamed
    assert len(streamed) > 4 * (64 << 10)
    assert len(replay.bodies) >= 4 and max(map(len, replay.bodies)) <= 64 << 10
    _, _, resumed = _stream_and_replay(app, stream="true", starting_after="2999")
    numbers = [json.loads(line[6:])["sequence_number"] for line in resumed.body.split(b"\n") if line.startswith(b"data: ")]
    assert numbers[0] == 3000 and numbers == list(range(3000, numbers[-1] + 1))
    _, _, past_the_end = _stream_and_replay(app, stream="true", starting_after="999999")
    assert past_the_end.status == 200 and past_the_end.body == b""
