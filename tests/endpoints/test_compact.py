"""``POST /responses/compact`` through the OpenAI SDK (``client.responses.compact``)
against uvicorn on every store backend, the compaction item's summary restored
into a later request's chat history, and ``context_management`` on create."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import openai
import orjson
import pytest
from openai.types.responses import CompactedResponse
from redis_support import store_url
from support import serve
from test_stored import RecordingDemo

from compat_asgi import CompatMiddleware
from compat_asgi.cli import create_app
from compat_asgi.core.compaction import SUMMARY_INSTRUCTION
from compat_asgi.validate import assert_valid, validate_responses_sse

RESTORED = "Summary of the earlier conversation:\n"


@pytest.fixture(scope="module", params=["memory", "sqlite", "redis"])
def sdk(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RecordingDemo, openai.OpenAI]]:
    store = store_url(request, tmp_path_factory.mktemp("compact"))
    demo = RecordingDemo()
    with serve(CompatMiddleware(demo, store=store, reasoning_key="test-key")) as url:
        yield demo, openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)


CONVERSATION: list[dict[str, Any]] = [
    {"role": "user", "content": "My name is Ada and I like tea."},
    {"role": "assistant", "content": "Nice to meet you, Ada."},
    {"role": "user", "content": "I live in Paris."},
    {"role": "assistant", "content": "Paris is lovely."},
]


def test_compact_returns_user_messages_and_a_sealed_summary(sdk: tuple[RecordingDemo, openai.OpenAI]) -> None:
    demo, client = sdk
    compacted = client.responses.compact(model="demo", input=CONVERSATION, instructions="Keep names.")
    assert isinstance(compacted, CompactedResponse) and compacted.object == "response.compaction"
    # The backend was asked to summarise the whole conversation.
    asked = demo.messages[-1]
    assert asked[0] == {"role": "system", "content": "Keep names."}
    assert [m["content"] for m in asked[1:]] == [m["content"] for m in CONVERSATION] + [SUMMARY_INSTRUCTION]
    summary_reply = compacted.usage.output_tokens
    assert compacted.usage.input_tokens > 0 and summary_reply > 0

    *users, compaction = [item.model_dump(exclude_none=True, warnings=False) for item in compacted.output]
    assert [(u["type"], u["role"], u["content"][0]["text"]) for u in users] == [
        ("message", "user", "My name is Ada and I like tea."),
        ("message", "user", "I live in Paris."),
    ]
    assert compaction["type"] == "compaction" and compaction["id"].startswith("cmp_")
    assert "Paris" not in compaction["encrypted_content"]  # compressed and sealed, not plain text

    # Sent back, the compaction item becomes the summary in the chat history, where it stood.
    client.responses.create(model="demo", input=[*users, compaction, {"role": "user", "content": "What is my name?"}])
    history = demo.messages[-1]
    assert [m["role"] for m in history] == ["user", "user", "assistant", "user"]
    assert history[2]["content"].startswith(RESTORED) and len(history[2]["content"]) > len(RESTORED)

    # Altered or foreign blobs are refused, naming the item.
    forged = {**compaction, "encrypted_content": compaction["encrypted_content"][:-2] + "AA"}
    with pytest.raises(openai.BadRequestError) as error:
        client.responses.create(model="demo", input=[forged, {"role": "user", "content": "x"}])
    assert error.value.body["param"] == "input[0].encrypted_content"  # type: ignore[index]


def test_compact_reads_the_stored_chain(sdk: tuple[RecordingDemo, openai.OpenAI]) -> None:
    demo, client = sdk
    first = client.responses.create(model="demo", input="Remember the number 42.")
    compacted = client.responses.compact(model="demo", input="And 7.", previous_response_id=first.id)
    asked = demo.messages[-1]
    assert [m["content"] for m in asked] == ["Remember the number 42.", first.output_text, "And 7.", SUMMARY_INSTRUCTION]
    assert [item.type for item in compacted.output] == ["message", "message", "compaction"]

    with pytest.raises(openai.NotFoundError):
        client.responses.compact(model="demo", input="x", previous_response_id="resp_missing")
    with pytest.raises(openai.BadRequestError) as error:
        client.responses.compact(model="demo", input=[{"role": "robot", "content": "x"}])
    assert error.value.body["param"] == "input[0].role"  # type: ignore[index]


def test_context_management_compacts_past_the_threshold(sdk: tuple[RecordingDemo, openai.OpenAI]) -> None:
    demo, client = sdk
    before = len(demo.messages)
    under = client.responses.create(
        model="demo", input=[*CONVERSATION, {"role": "user", "content": "Where do I live?"}],
        context_management=[{"type": "compaction", "compact_threshold": 100_000}],
    )
    assert len(demo.messages) == before + 1  # small enough: no summary request
    assert [m["role"] for m in demo.messages[-1]] == ["user", "assistant", "user", "assistant", "user"]

    over = client.responses.create(
        model="demo", input=[*CONVERSATION, {"role": "user", "content": "Where do I live?"}],
        context_management=[{"type": "compaction", "compact_threshold": 10}],
    )
    summary_request, answered = demo.messages[-2], demo.messages[-1]
    assert summary_request[-1]["content"] == SUMMARY_INSTRUCTION
    assert [m["content"] for m in summary_request[:-1]] == [m["content"] for m in CONVERSATION]
    # The earlier turns were replaced by their summary; the new question comes last.
    assert [m["role"] for m in answered] == ["user", "user", "assistant", "user"]
    assert answered[2]["content"].startswith(RESTORED) and answered[-1]["content"] == "Where do I live?"
    assert over.output_text == under.output_text
    # The compaction opens the output, as OpenAI's server emits it.
    assert [item.type for item in over.output] == ["compaction", "message"]
    assert [item.type for item in under.output] == ["message"]

    # The next turn continues from the compacted context, not the original turns.
    client.responses.create(model="demo", input="Thanks.", previous_response_id=over.id)
    assert [m["role"] for m in demo.messages[-1]] == ["user", "user", "assistant", "user", "assistant", "user"]
    assert "Nice to meet you, Ada." not in [m["content"] for m in demo.messages[-1]]


def test_context_management_streams_the_compaction_item(sdk: tuple[RecordingDemo, openai.OpenAI]) -> None:
    demo, client = sdk
    body = {
        "model": "demo", "stream": True,
        "input": [*CONVERSATION, {"role": "user", "content": "Where do I live?"}],
        "context_management": [{"type": "compaction", "compact_threshold": 10}],
    }
    raw = httpx.post(str(client.base_url) + "responses", json=body, timeout=30).content
    assert_valid(validate_responses_sse(raw))
    events = [orjson.loads(line[6:]) for line in raw.split(b"\n") if line.startswith(b"data: ")]
    added = [e for e in events if e["type"] == "response.output_item.added"]
    assert [(e["output_index"], e["item"]["type"]) for e in added] == [(0, "compaction"), (1, "message")]
    final = events[-1]["response"]
    assert events[-1]["type"] == "response.completed"
    assert [item["type"] for item in final["output"]] == ["compaction", "message"]
    # Stored with the stream: the next turn continues from the compacted context, the summary once.
    client.responses.create(model="demo", input="Thanks.", previous_response_id=final["id"])
    history = demo.messages[-1]
    assert [m["role"] for m in history] == ["user", "user", "assistant", "user", "assistant", "user"]
    assert sum(m["content"].startswith(RESTORED) for m in history) == 1


@pytest.mark.parametrize(
    ("value", "param"),
    [
        ({"type": "compaction"}, "context_management"),
        ([{"type": "truncate"}], "context_management[0].type"),
        ([{"type": "compaction", "compact_threshold": 0}], "context_management[0].compact_threshold"),
        ([{"type": "compaction", "compact_threshold": "10"}], "context_management[0].compact_threshold"),
    ],
)
def test_invalid_context_management_is_a_precise_400(sdk: tuple[RecordingDemo, openai.OpenAI], value: Any, param: str) -> None:
    _, client = sdk
    with pytest.raises(openai.BadRequestError) as error:
        client.responses.create(model="demo", input="hi", context_management=value)
    assert error.value.body["param"] == param  # type: ignore[index]


def test_a_responses_upstream_compacts_for_itself() -> None:
    """``compat-asgi serve --demo responses``: the chat API in front of a Responses
    backend, with its own store; compact goes to the backend, not to the store's
    ``/responses/{id}`` route."""
    with serve(create_app(demo="responses", store="memory")) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
        compacted = client.responses.compact(model="demo", input=CONVERSATION)
    assert isinstance(compacted, CompactedResponse)
    assert [item.type for item in compacted.output][-1] == "compaction"
