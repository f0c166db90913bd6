"""``POST /responses/input_tokens``: the backend's own count of the translated
request. Through the OpenAI SDK against uvicorn on every store backend (the
demo backend has no tokenizer endpoint, so its chat usage counts), and with
vLLM's and llama.cpp's tokenizer endpoints answered by respx in the shapes
those servers document."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import orjson
import pytest
import respx
from openai.types.responses import InputTokenCountResponse
from redis_support import store_url
from support import call, serve
from test_stored import WEATHER, RecordingDemo

from compat_asgi import CompatMiddleware


@pytest.fixture(scope="module", params=["memory", "sqlite", "redis"])
def sdk(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RecordingDemo, openai.OpenAI]]:
    store = store_url(request, tmp_path_factory.mktemp("tokens"))
    demo = RecordingDemo()
    with serve(CompatMiddleware(demo, store=store)) as url:
        yield demo, openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)


def test_count_matches_the_usage_of_the_same_create(sdk: tuple[RecordingDemo, openai.OpenAI]) -> None:
    demo, client = sdk
    request: dict[str, Any] = {
        "model": "demo",
        "instructions": "Answer in one short sentence please.",
        "input": [{"role": "user", "content": "What is the weather like in Paris today?"}],
        "tools": [WEATHER],
    }
    counted = client.responses.input_tokens.count(**request)
    assert isinstance(counted, InputTokenCountResponse) and counted.object == "response.input_tokens"
    # The count request carried instructions, input and tools, and asked for one token, not streamed.
    sent = demo.messages[-1]
    assert [m["role"] for m in sent] == ["system", "user"]
    created = client.responses.create(**request)
    assert created.usage is not None and counted.input_tokens == created.usage.input_tokens > 0

    # Stored history counts too, as it does for create.
    followed = {"model": "demo", "input": "And tomorrow?", "previous_response_id": created.id}
    more = client.responses.input_tokens.count(**followed)
    later = client.responses.create(**followed)
    assert later.usage is not None and more.input_tokens == later.usage.input_tokens > counted.input_tokens

    conversation = client.conversations.create(items=[{"role": "user", "content": "one two three four"}])
    threaded = client.responses.input_tokens.count(model="demo", input="five", conversation=conversation.id)
    assert threaded.input_tokens == 5  # the demo counts words: the stored item and the new one


def test_invalid_requests_are_400_before_any_upstream_call(sdk: tuple[RecordingDemo, openai.OpenAI]) -> None:
    demo, client = sdk
    before = len(demo.messages)
    for body, param in [
        ({"model": "demo", "input": [{"role": "robot", "content": "x"}]}, "input[0].role"),
        ({"model": "demo", "input": "x", "max_output_tokens": 5}, "max_output_tokens"),
        ({"model": "demo", "input": "x", "previous_response_id": "resp_missing"}, "previous_response_id"),
        ({"input": "x"}, "model"),
    ]:
        with pytest.raises((openai.BadRequestError, openai.NotFoundError)) as error:
            client.post("/responses/input_tokens", body=body, cast_to=InputTokenCountResponse)
        assert error.value.body["param"] == param  # type: ignore[index]
    assert len(demo.messages) == before


def count(app: CompatMiddleware, body: dict[str, Any]) -> Any:
    result = asyncio.run(call(app, "POST", "/v1/responses/input_tokens", body))
    assert result.status == 200, result.body
    return result.json()


BODY = {"model": "qwen", "instructions": "Be brief.", "input": "hello", "tools": [WEATHER]}


@respx.mock
def test_vllm_tokenize_counts_the_chat_messages() -> None:
    tokenize = respx.post("http://127.0.0.1:9/tokenize").mock(
        return_value=httpx.Response(200, json={"count": 37, "max_model_len": 4096, "tokens": list(range(37))})
    )
    chat = respx.post("http://127.0.0.1:9/v1/chat/completions")
    app = CompatMiddleware(upstream="http://127.0.0.1:9/v1")
    assert count(app, BODY) == {"object": "response.input_tokens", "input_tokens": 37}
    sent = orjson.loads(tokenize.calls.last.request.content)
    assert sent["model"] == "qwen"
    assert sent["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello"}]
    assert sent["tools"][0]["function"]["name"] == "get_weather"
    assert not chat.called


@respx.mock
def test_llama_cpp_applies_the_template_then_tokenizes() -> None:
    def tokenize(request: httpx.Request) -> httpx.Response:
        body = orjson.loads(request.content)
        # llama.cpp answers an empty list when there is no "content" (the vLLM-style probe).
        if "content" not in body:
            return httpx.Response(200, json={"tokens": []})
        assert body == {"content": "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nhello", "add_special": True}
        return httpx.Response(200, json={"tokens": [1, 2, 3, 4, 5, 6, 7]})

    tokenizer = respx.post("http://127.0.0.1:9/tokenize").mock(side_effect=tokenize)
    template = respx.post("http://127.0.0.1:9/apply-template").mock(
        return_value=httpx.Response(200, json={"prompt": "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nhello"})
    )
    app = CompatMiddleware(upstream="http://127.0.0.1:9")
    assert count(app, BODY)["input_tokens"] == 7
    assert orjson.loads(template.calls.last.request.content)["tools"][0]["type"] == "function"
    assert tokenizer.call_count == 2
    # The method that worked is tried first next time: no second vLLM-style probe.
    assert count(app, BODY)["input_tokens"] == 7
    assert tokenizer.call_count == 3 and template.call_count == 2


@respx.mock
def test_chat_fallback_asks_for_one_token_and_is_remembered() -> None:
    respx.post("http://127.0.0.1:9/tokenize").mock(return_value=httpx.Response(404, text="Not Found"))
    respx.post("http://127.0.0.1:9/apply-template").mock(return_value=httpx.Response(404, text="Not Found"))
    chat = respx.post("http://127.0.0.1:9/v1/chat/completions").mock(
        return_value=httpx.Response(
            200,
            json={
                "id": "c", "object": "chat.completion", "created": 0, "model": "qwen",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi"}, "finish_reason": "length"}],
                "usage": {"prompt_tokens": 21, "completion_tokens": 1, "total_tokens": 22},
            },
        )
    )
    app = CompatMiddleware(upstream="http://127.0.0.1:9/v1")
    assert count(app, {**BODY, "personality": "friendly"})["input_tokens"] == 21
    sent = orjson.loads(chat.calls.last.request.content)
    assert sent["max_tokens"] == 1 and "stream" not in sent and sent["tools"][0]["function"]["name"] == "get_weather"
    assert count(app, BODY)["input_tokens"] == 21
    assert respx.routes[0].call_count == 1 and respx.routes[1].call_count == 1 and chat.call_count == 2


@respx.mock
def test_upstream_errors_keep_their_envelope() -> None:
    respx.post("http://127.0.0.1:9/tokenize").mock(return_value=httpx.Response(404))
    respx.post("http://127.0.0.1:9/apply-template").mock(return_value=httpx.Response(404))
    respx.post("http://127.0.0.1:9/v1/chat/completions").mock(
        return_value=httpx.Response(400, json={"error": {"message": "context too long", "type": "invalid_request_error", "param": "messages", "code": None}})
    )
    app = CompatMiddleware(upstream="http://127.0.0.1:9/v1")
    result = asyncio.run(call(app, "POST", "/v1/responses/input_tokens", BODY))
    assert result.status == 400 and result.json()["error"]["message"] == "context too long"


@pytest.mark.parametrize("store", [None, "memory"])  # the stored-response routes must not shadow it
@respx.mock
def test_a_responses_upstream_counts_for_itself(store: str | None) -> None:
    own = respx.post("http://127.0.0.1:9/v1/responses/input_tokens").mock(
        return_value=httpx.Response(200, json={"object": "response.input_tokens", "input_tokens": 3})
    )
    app = CompatMiddleware(upstream="http://127.0.0.1:9/v1", upstream_api="responses", store=store)
    assert count(app, BODY)["input_tokens"] == 3
    assert orjson.loads(own.calls.last.request.content) == BODY
