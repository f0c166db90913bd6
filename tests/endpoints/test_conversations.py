"""The Conversations API through the real OpenAI SDK (``client.conversations.*``)
and the Agents SDK's ``OpenAIConversationsSession``, against uvicorn on every
store backend."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from openai.types.conversations import Conversation, ConversationDeletedResource, ConversationItemList, Message
from redis_support import store_url
from support import serve
from test_stored import RecordingDemo

from compat_asgi import CompatMiddleware


@pytest.fixture(scope="module", params=["memory", "sqlite", "redis"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RecordingDemo, str]]:
    """One server per backend for the whole module, with two API keys (tests use fresh conversations)."""
    store = store_url(request, tmp_path_factory.mktemp("conv"))
    demo = RecordingDemo()
    with serve(CompatMiddleware(demo, store=store, api_keys=["alice", "bob"])) as url:
        yield demo, url + "/v1"


def client(url: str, key: str = "alice") -> openai.OpenAI:
    return openai.OpenAI(base_url=url, api_key=key, max_retries=0)


def texts(items: Any) -> list[str]:
    return [part.text for item in items for part in item.content]


def test_every_conversations_method(server: tuple[RecordingDemo, str]) -> None:
    _, url = server
    sdk = client(url)
    created = sdk.conversations.create(
        items=[
            {"type": "message", "role": "user", "content": "hello"},
            {"role": "assistant", "content": [{"type": "output_text", "text": "hi there"}]},
        ],
        metadata={"topic": "greetings"},
    )
    assert isinstance(created, Conversation)
    assert created.id.startswith("conv_") and created.metadata == {"topic": "greetings"} and created.created_at > 0
    assert sdk.conversations.retrieve(created.id) == created

    updated = sdk.conversations.update(created.id, metadata={"topic": "weather", "lang": "en"})
    assert updated.metadata == {"topic": "weather", "lang": "en"} and updated.created_at == created.created_at
    assert sdk.conversations.retrieve(created.id).metadata == updated.metadata

    added = sdk.conversations.items.create(
        created.id, items=[{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "rain?"}]}]
    )
    assert isinstance(added, ConversationItemList) and texts(added.data) == ["rain?"]
    assert added.first_id == added.last_id == added.data[0].id and not added.has_more

    # Default order is newest first; the SDK pages through ``after`` on its own.
    listed = list(sdk.conversations.items.list(created.id, limit=1))
    assert texts(listed) == ["rain?", "hi there", "hello"]
    assert all(isinstance(item, Message) and item.status == "completed" for item in listed)
    ascending = sdk.conversations.items.list(created.id, order="asc", include=["message.output_text.logprobs"])
    assert texts(ascending.data) == ["hello", "hi there", "rain?"] and ascending.has_more is False
    assert [item.role for item in ascending.data] == ["user", "assistant", "user"]

    one = sdk.conversations.items.retrieve(listed[1].id, conversation_id=created.id)
    assert isinstance(one, Message) and texts([one]) == ["hi there"]

    after_delete = sdk.conversations.items.delete(listed[1].id, conversation_id=created.id)
    assert isinstance(after_delete, Conversation) and after_delete.id == created.id
    assert texts(sdk.conversations.items.list(created.id, order="asc")) == ["hello", "rain?"]
    with pytest.raises(openai.NotFoundError) as missing_item:
        sdk.conversations.items.retrieve(listed[1].id, conversation_id=created.id)
    assert missing_item.value.body["param"] == "item_id"  # type: ignore[index]

    deleted = sdk.conversations.delete(created.id)
    assert deleted == ConversationDeletedResource(id=created.id, object="conversation.deleted", deleted=True)
    for call in (
        lambda: sdk.conversations.retrieve(created.id),
        lambda: sdk.conversations.items.list(created.id),
        lambda: sdk.conversations.update(created.id, metadata={}),
        lambda: sdk.conversations.delete(created.id),
        lambda: sdk.conversations.items.create(created.id, items=[{"role": "user", "content": "x"}]),
    ):
        with pytest.raises(openai.NotFoundError) as missing:
            call()
        assert missing.value.body["param"] == "conversation_id"  # type: ignore[index]


def test_conversation_threads_responses_both_ways(server: tuple[RecordingDemo, str]) -> None:
    demo, url = server
    sdk = client(url)
    conversation = sdk.conversations.create(items=[{"role": "user", "content": "My name is Ada."}])
    first = sdk.responses.create(model="demo", input="What is my name?", conversation=conversation.id)
    # Items added through the API are history for the response ...
    assert [m["content"] for m in demo.messages[-1]] == ["My name is Ada.", "What is my name?"]
    # ... and the response's input and output are items of the conversation.
    items = sdk.conversations.items.list(conversation.id, order="asc").data
    assert texts(items) == ["My name is Ada.", "What is my name?", first.output_text]
    assert items[-1].id == first.output[0].id
    sdk.responses.create(model="demo", input="And again?", conversation={"id": conversation.id})
    assert [m["content"] for m in demo.messages[-1]][:3] == ["My name is Ada.", "What is my name?", first.output_text]


def test_conversations_are_scoped_by_api_key(server: tuple[RecordingDemo, str]) -> None:
    _, url = server
    alice, bob = client(url), client(url, "bob")
    secret = alice.conversations.create(items=[{"role": "user", "content": "secret"}])
    item_id = alice.conversations.items.list(secret.id).data[0].id
    for call in (
        lambda: bob.conversations.retrieve(secret.id),
        lambda: bob.conversations.update(secret.id, metadata={"x": "y"}),
        lambda: bob.conversations.items.list(secret.id),
        lambda: bob.conversations.items.retrieve(item_id, conversation_id=secret.id),
        lambda: bob.conversations.items.delete(item_id, conversation_id=secret.id),
        lambda: bob.conversations.delete(secret.id),
    ):
        with pytest.raises(openai.NotFoundError):
            call()
    assert texts(alice.conversations.items.list(secret.id).data) == ["secret"]
    assert alice.conversations.retrieve(secret.id).metadata == {}


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({"metadata": {"k": 1}}, "metadata.k", "invalid_type"),
        ({"metadata": {f"k{n}": "v" for n in range(17)}}, "metadata", "object_above_max_properties"),
        ({"items": [{"role": "user", "content": "x"}] * 21}, "items", "array_above_max_length"),
        ({"items": [{"role": "user", "content": "x"}, {"role": "robot", "content": "x"}]}, "items[1].role", "invalid_value"),
        ({"items": [{"type": "function_call", "call_id": "c", "name": "f"}]}, "items[0].arguments", "missing_required_parameter"),
        ({"items": "hello"}, "items", "invalid_type"),
        ({"item": []}, "item", "unknown_parameter"),
    ],
)
def test_invalid_create_is_a_precise_400(server: tuple[RecordingDemo, str], body: dict[str, Any], param: str, code: str) -> None:
    _, url = server
    with pytest.raises(openai.BadRequestError) as error:
        client(url).post("/conversations", body=body, cast_to=Conversation)
    assert (error.value.body["param"], error.value.body["code"]) == (param, code)  # type: ignore[index]


def test_create_with_an_empty_body(server: tuple[RecordingDemo, str]) -> None:
    _, url = server
    created = httpx.post(url + "/conversations", headers={"authorization": "Bearer alice"})
    assert created.status_code == 200 and created.json()["object"] == "conversation"
    assert client(url).conversations.items.list(created.json()["id"]).data == []


def test_without_a_store_it_is_a_clear_400() -> None:
    with serve(CompatMiddleware(RecordingDemo())) as url:
        sdk = client(url + "/v1")
        with pytest.raises(openai.BadRequestError, match="needs a response store"):
            sdk.conversations.create()
        with pytest.raises(openai.BadRequestError, match="needs a response store"):
            sdk.conversations.items.list("conv_1")


def test_agents_sdk_conversations_session_two_turns(server: tuple[RecordingDemo, str]) -> None:
    agents = pytest.importorskip("agents")
    from agents.memory import OpenAIConversationsSession
    from agents.models.openai_responses import OpenAIResponsesModel
    from openai import AsyncOpenAI

    demo, url = server
    agents.set_tracing_disabled(True)

    async def scenario() -> tuple[str, str, list[Any], str]:
        openai_client = AsyncOpenAI(base_url=url, api_key="alice", max_retries=0)
        model = OpenAIResponsesModel(model="demo", openai_client=openai_client)
        agent = agents.Agent(name="helper", instructions="Be brief.", model=model)
        session = OpenAIConversationsSession(openai_client=openai_client)
        first = await agents.Runner.run(agent, "My name is Ada.", session=session)
        second = await agents.Runner.run(agent, "What did I just tell you?", session=session)
        items = await session.get_items()
        popped = await session.pop_item()  # items.delete of the newest item
        assert popped is not None and popped["id"] == items[-1]["id"]
        assert len(await session.get_items()) == len(items) - 1
        return first.final_output, second.final_output, items, session.session_id

    first, second, items, session_id = asyncio.run(scenario())
    # The second turn's request carried the first turn, read back from the conversation.
    contents = [m["content"] for m in demo.messages[-1]]
    assert contents == ["Be brief.", "My name is Ada.", first, "What did I just tell you?"]
    assert [item["role"] for item in items] == ["user", "assistant", "user", "assistant"]
    assert items[-1]["content"][0]["text"] == second
    assert client(url).conversations.retrieve(session_id).id == session_id
