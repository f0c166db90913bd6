"""Routing several upstreams by model from a config; config mistakes at load time."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import orjson
import pytest
from support import serve
from test_stored import RecordingDemo

from compat_asgi import CompatMiddleware
from compat_asgi.cli import main
from compat_asgi.config import ConfigError, load_config, parse_config
from compat_asgi.demo import DemoChatApp


@pytest.fixture(scope="module")
def backends() -> Iterator[dict[str, Any]]:
    fast, slow = RecordingDemo(), RecordingDemo()
    with serve(fast) as fast_url, serve(slow) as slow_url, serve(CompatMiddleware(DemoChatApp())) as responses_url:
        yield {"fast": (fast, fast_url), "slow": (slow, slow_url), "responses_url": responses_url}


@pytest.fixture(scope="module")
def routed(backends: dict[str, Any]) -> Iterator[str]:
    config = {
        "upstream_header": True,
        "upstreams": {
            "fast": {"url": backends["fast"][1] + "/v1", "headers": {"x-tenant": "t1"}},
            "slow": {"url": backends["slow"][1], "api": "chat"},
            "resp": {"url": backends["responses_url"] + "/v1", "api": "responses"},
        },
        "models": {
            "small": {"upstream": "fast", "id": "demo", "max_output_tokens": 3, "drop_fields": ["user"]},
            "thinker": {"upstream": "slow", "id": "demo", "think_tags": True},
            "remote": {"upstream": "resp", "id": "demo"},
        },
    }
    with serve(CompatMiddleware(config=config)) as url:
        yield url + "/v1"


def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url, api_key="x", max_retries=0)


def test_requests_are_routed_by_model_with_the_upstream_id(routed: str, backends: dict[str, Any]) -> None:
    fast, _ = backends["fast"]
    before = len(fast.messages)
    response = client(routed).responses.create(model="small", input="hello there friend", user="u1")
    assert response.model == "small"  # the public name is echoed
    assert response.status == "incomplete"  # the model's default max_output_tokens applied
    assert len(fast.messages) == before + 1
    chat = client(routed).chat.completions.create(model="small", messages=[{"role": "user", "content": "hi"}])
    assert chat.choices[0].finish_reason == "length"
    # Through the responses upstream in the other direction:
    remote = client(routed).chat.completions.create(model="remote", messages=[{"role": "user", "content": "via responses"}])
    assert remote.choices[0].message.content == "Hello! You said: via responses. This is the compat-asgi demo model answering deterministically."
    assert client(routed).responses.create(model="remote", input="passthrough").output_text.startswith("Hello! You said: passthrough.")


def test_unknown_model_is_404_and_models_lists_exactly_the_configuration(routed: str) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client(routed).responses.create(model="gpt-unknown", input="x")
    assert caught.value.body["code"] == "model_not_found"  # type: ignore[index]
    assert [m.id for m in client(routed).models.list().data] == ["small", "thinker", "remote"]


def test_upstream_header_selects_an_upstream(routed: str, backends: dict[str, Any]) -> None:
    slow, _ = backends["slow"]
    before = len(slow.messages)
    picked = client(routed).with_options(default_headers={"x-compat-upstream": "slow"})
    picked.responses.create(model="small", input="to slow")
    assert len(slow.messages) == before + 1
    with pytest.raises(openai.NotFoundError):
        client(routed).with_options(default_headers={"x-compat-upstream": "nope"}).responses.create(model="small", input="x")


def test_per_model_options_reach_the_upstream_request() -> None:
    seen: list[dict[str, Any]] = []

    async def think_backend(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = orjson.loads((await receive())["body"])
        seen.append(body)
        answer = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "<think>plan</think>answer"}, "finish_reason": "stop"}]}
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": orjson.dumps(answer)})

    config = {"upstreams": {"t": {"app": think_backend}}, "models": {"m": {"upstream": "t", "id": "real-id", "think_tags": True, "drop_fields": ["user", "temperature"]}}}
    with serve(CompatMiddleware(config=config)) as url:
        response = client(url + "/v1").responses.create(model="m", input="x", user="u", temperature=0.2)
    assert seen[-1]["model"] == "real-id"
    assert "user" not in seen[-1] and "temperature" not in seen[-1]
    assert [item.type for item in response.output] == ["reasoning", "message"]
    assert response.output_text == "answer"


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({}, "upstreams: declare at least one upstream"),
        ({"upstreams": {"a": {"url": "http://x"}}, "bogus": 1}, "bogus: unknown setting"),
        ({"upstreams": {"a": {"url": "ftp://x"}}}, "upstreams.a.url: expected an http(s) URL"),
        ({"upstreams": {"a": {"url": "http://x", "api": "soap"}}}, "upstreams.a.api: expected 'chat' or 'responses'"),
        ({"upstreams": {"a": {}}}, "upstreams.a: needs exactly one of 'url' or 'app'"),
        ({"upstreams": {"a": {"app": "no_such_module:app"}}}, "upstreams.a.app: cannot import"),
        ({"upstreams": {"a": {"url": "http://x", "key_env": "COMPAT_TEST_UNSET_VAR"}}}, "upstreams.a.key_env: environment variable COMPAT_TEST_UNSET_VAR is not set"),
        ({"upstreams": {"a": {"url": "http://x", "timeout": 0}}}, "upstreams.a.timeout: expected a positive number"),
        ({"upstreams": {"a": {"url": "http://x"}}, "models": {"m": {"upstream": "b"}}}, "models.m.upstream: no upstream named 'b'"),
        ({"upstreams": {"a": {"url": "http://x"}}, "models": {"m": {"upstream": "a", "max_output_tokens": -1}}}, "models.m.max_output_tokens: expected a positive integer"),
        ({"upstreams": {"a": {"url": "http://x"}}, "models": {"m": {"upstream": "a", "drop_fields": ["model"]}}}, "models.m.drop_fields: model, messages and input cannot be dropped"),
        ({"upstreams": {"a": {"url": "http://x"}}, "default_upstream": "z"}, "default_upstream: no upstream named 'z'"),
    ],
)
def test_config_mistakes_name_the_key_and_reason(config: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(config, "compat.toml")
    assert str(caught.value).startswith(f"compat.toml: {message}")


def test_toml_file_is_loaded_and_its_errors_name_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "compat.toml"
    good.write_text('[upstreams.local]\nurl = "http://127.0.0.1:8080/v1"\n\n[models."llama-3"]\nupstream = "local"\nid = "meta/llama"\nthink_tags = true\n')
    config = load_config(str(good))
    assert config.models["llama-3"].id == "meta/llama" and config.default_upstream == "local"
    broken = tmp_path / "broken.toml"
    broken.write_text('[models.x]\nupstream = "nowhere"\n[upstreams.a]\nurl = "http://x"\n')
    assert main(["serve", "--config", str(broken), "--store", "memory"]) == 2
    assert f"{broken}: models.x.upstream: no upstream named 'nowhere'" in capsys.readouterr().err
    assert main(["serve", "--config", str(tmp_path / "missing.toml")]) == 2


def test_the_example_config_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VLLM_API_KEY", "secret")
    config = load_config(str(Path(__file__).parent.parent / "examples" / "compat.toml"))
    assert set(config.upstreams) == {"llamacpp", "vllm", "openai-compatible"}
    assert config.models["qwen3-8b"].think_tags and config.upstreams["vllm"].key == "secret"
    assert config.default_upstream is None and config.upstream_header
