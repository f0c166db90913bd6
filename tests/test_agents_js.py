"""JavaScript clients, unchanged, against the middleware over the demo backend:
the OpenAI Agents SDK for JavaScript (``@openai/agents``: its tool loop plain,
streamed and over the Responses WebSocket transport, its Conversations session
and its compaction session) and the OpenAI SDK for JavaScript (``openai``:
its stream helpers, parse, and the rest of the Responses and Conversations API)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from agents_js_support import PACKAGES, agents_js_dir, run_agents_js, run_js
from support import Scopes, serve
from test_stored import RecordingDemo

from compat_asgi import CompatMiddleware

ANSWER = "The tool get_weather returned: sunny in Paris."
RESTORED = "Summary of the earlier conversation:\n"  # how a compaction item reaches the chat backend
PROMPT = "In Paris: call get_weather."


@pytest.fixture
def server() -> Iterator[tuple[RecordingDemo, Scopes, str]]:
    agents_js_dir()  # skip (fail under CI) before starting anything when it is missing
    demo = RecordingDemo()
    app = Scopes(CompatMiddleware(demo, store="memory"))
    with serve(app) as url:
        yield demo, app, url + "/v1"


def run(server: tuple[RecordingDemo, Scopes, str], mode: str) -> dict[str, Any]:
    return run_agents_js(mode, server[2], model="demo", tool="get_weather", prompt=PROMPT)


@pytest.mark.parametrize("mode", ["run", "stream", "websocket"])
def test_tool_loop(server: tuple[RecordingDemo, Scopes, str], mode: str) -> None:
    demo, app, _ = server
    result = run(server, mode)
    assert result["final"] == ANSWER and result["calls"] == ["Paris"]
    if mode == "stream":
        assert result["kinds"] == ["tool_call_item", "tool_call_output_item", "message_output_item"]
    # Two model turns: the call, then the answer from its output (as a tool message upstream).
    assert len(demo.messages) == 2 and demo.messages[-1][-1]["role"] == "tool"
    posts = app.seen.count(("POST", "/v1/responses"))
    if mode == "websocket":
        assert posts == 0 and ("WS", "/v1/responses") in app.seen, app.seen
    else:
        assert posts == 2 and ("WS", "/v1/responses") not in app.seen, app.seen


def test_conversations_session(server: tuple[RecordingDemo, Scopes, str]) -> None:
    demo, app, _ = server
    result = run(server, "conversation")
    assert [final.split(". This")[0] for final in result["finals"]] == [
        "Hello! You said: My name is Ada.", "Hello! You said: What did I say?"
    ]
    assert result["items"] == [["message", "user"], ["message", "assistant"], ["message", "user"], ["message", "assistant"]]
    assert ("POST", "/v1/conversations") in app.seen
    # The second turn's upstream request carried the first turn, kept by the server.
    second = demo.messages[-1]
    assert [m["role"] for m in second if m["role"] != "system"] == ["user", "assistant", "user"]
    assert "My name is Ada." in str(second)


def test_compaction_session(server: tuple[RecordingDemo, Scopes, str]) -> None:
    demo, app, _ = server
    result = run(server, "compaction")
    # After the first turn the session compacted: the assistant's answer became a compaction item.
    assert result["items"] == [["message", "user"], ["compaction", None], ["message", "user"], ["message", "assistant"]]
    assert app.seen == [("POST", "/v1/responses"), ("POST", "/v1/responses/compact"), ("POST", "/v1/responses")]
    # The SDK sends the compaction item for all before it (compact read the first
    # turn from the store, by previous_response_id); the backend got the summary,
    # restored from the item's seal, in place of the first turn.
    second = demo.messages[-1]
    assert [m["role"] for m in second] == ["system", "assistant", "user"]
    assert second[1]["content"].startswith(RESTORED) and second[2]["content"] == "What did I say?"


def test_ci_installs_the_pinned_packages() -> None:
    ci = (Path(__file__).parent.parent / ".ci" / "run").read_text()
    assert f'AGENTS_JS_PACKAGES="{" ".join(PACKAGES)}"' in ci


def test_the_readme_example_works_as_written(server: tuple[RecordingDemo, Scopes, str], tmp_path: Path) -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    example = readme.split("```js\n", 1)[1].split("```", 1)[0]
    # Beside the installed packages, so its imports resolve as in a user's project.
    script = agents_js_dir() / f"readme-{tmp_path.name}.mjs"
    script.write_text(example.replace("http://127.0.0.1:8000/v1", server[2]))
    try:
        done = subprocess.run(["node", str(script)], capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    finally:
        script.unlink()
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == ANSWER


def test_openai_sdk_for_javascript(server: tuple[RecordingDemo, Scopes, str]) -> None:
    result = run_js("openai_sdk.mjs", BASE_URL=server[2])
    # The stream helper accumulated both calls, their arguments equal to the deltas.
    arguments = '{"city":"Paris"}'
    assert result["calls"] == [["function_call", name, arguments, arguments] for name in ("get_weather", "get_time")]
    deltas, output_text = result["text"]
    assert deltas == output_text and output_text.startswith("Hello! You said: Say hello.")
    assert result["parsed"] == {"name": "example", "age": 1}  # the demo's answer to the zod schema
    assert result["retrieved"] is True and result["inputItems"] == ["message"]
    assert result["background"] in ("queued", "in_progress") and result["inputTokens"] > 0
    assert result["compacted"] == ["message", "compaction"]
    assert [role for role, _ in result["conversation"]] == ["user", "user", "assistant"]
