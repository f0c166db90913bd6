"""The real Codex CLI against ``compat-asgi serve`` over the demo backend.

Every test runs ``codex exec --json`` (see ``codex_support``) with Codex's
default tools and settings, pointed at a real uvicorn on 127.0.0.1, and
judges the run from Codex's own JSON events (what a user would see) and from
the requests the server recorded (what Codex sent). The demo backend decides
what the "model" does: it calls a tool the prompt names, with arguments valid
for the tool's schema (a harmless ``echo`` for shell tools, a patch adding a
file for ``apply_patch``), and answers from tool results.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from compat_asgi import validate
from compat_asgi.cli import create_app
from compat_asgi.demo import DEMO_COMMAND, DEMO_PATCH_LINE, DemoChatApp
from compat_asgi.middleware import CompatMiddleware
from codex_support import Recorder, Workspace, codex_binary, config_toml
from support import call, serve, serve_command

ECHOED = DEMO_COMMAND.split()[-1]


@pytest.fixture(scope="module")
def codex() -> str:
    return codex_binary()


@pytest.fixture
def server(codex: str) -> Iterator[tuple[str, Recorder]]:
    """The app ``compat-asgi serve`` runs (demo backend, memory store) under a
    real uvicorn, with a recorder in front of it."""
    recorder = Recorder(create_app(store="memory"))
    with serve(recorder) as url:
        yield url, recorder


def workspace(tmp_path: Path, server: tuple[str, Recorder], model: str = "demo") -> Workspace:
    return Workspace(tmp_path, server[0], model=model)


def inputs(body: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [item for item in body.get("input", []) if isinstance(item, dict) and item.get("type") == kind]


def assert_all_answered(recorder: Recorder) -> list[dict[str, Any]]:
    """Every Responses request Codex made got a 200; their bodies."""
    exchanges = recorder.responses()
    assert exchanges, "Codex sent no request"
    assert [x.status for x in exchanges] == [200] * len(exchanges), [(x.status, x.body[:300]) for x in exchanges]
    return [x.json() for x in exchanges]


def test_plain_answer(tmp_path: Path, server: tuple[str, Recorder]) -> None:
    run = workspace(tmp_path, server).exec("say hi")
    run.assert_ok()
    assert run.answer == "Hello! You said: say hi. This is the compat-asgi demo model answering deterministically."
    [body] = assert_all_answered(server[1])
    # Codex's defaults, sent unchanged and accepted: client_metadata, a
    # namespace of functions, a hosted web_search tool.
    assert "client_metadata" in body
    assert {tool["type"] for tool in body["tools"]} >= {"function", "namespace", "web_search"}
    [exchange] = server[1].responses()
    assert "client_metadata" in exchange.response_headers.get("x-compat-ignored", "")


def test_api_key_from_the_environment(tmp_path: Path, codex: str) -> None:
    """A server started with --api-key: Codex sends the key named by env_key."""
    with serve(create_app(store="memory", api_keys=["sk-compat-test"])) as url:
        refused = Workspace(tmp_path / "no-key", url).exec("say hi")
        assert refused.returncode != 0 and any(e.get("type") == "turn.failed" for e in refused.events)
        ws = Workspace(tmp_path / "key", url, env_key="COMPAT_ASGI_KEY", env={"COMPAT_ASGI_KEY": "sk-compat-test"})
        run = ws.exec("say hi")
    run.assert_ok()
    assert run.answer.startswith("Hello! You said: say hi.")


def test_the_readme_config_works_as_written(tmp_path: Path, codex: str) -> None:
    """The config.toml of the README's "Use with Codex", only the port changed,
    against a server that wants a key; --strict-config refuses unknown keys."""
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    section = readme.split("## Use with Codex", 1)[1]
    config = section.split("```toml\n", 1)[1].split("```", 1)[0]
    assert 'base_url = "http://127.0.0.1:8000/v1"' in config
    with serve(create_app(store="memory", api_keys=["sk-readme"])) as url:
        ws = Workspace(tmp_path, url, env={"COMPAT_ASGI_KEY": "sk-readme"})
        (ws.home / "config.toml").write_text(config.replace("http://127.0.0.1:8000", url))
        run = ws.exec("--strict-config", "say hi")
    run.assert_ok()
    assert run.answer.startswith("Hello! You said: say hi.")


def test_function_tool_runs_and_its_output_goes_back(tmp_path: Path, server: tuple[str, Recorder]) -> None:
    run = workspace(tmp_path, server).exec("please run exec_command")
    run.assert_ok()
    [command] = run.items("command_execution")
    # Codex runs it through the user's shell: /bin/bash -lc 'echo ...'.
    assert DEMO_COMMAND in command["command"] and command["exit_code"] == 0
    assert ECHOED in command["aggregated_output"]
    # The demo answered from the output Codex sent back.
    assert run.answer.startswith("The tool exec_command returned:") and ECHOED in run.answer
    first, second = assert_all_answered(server[1])
    [call_item] = inputs(second, "function_call")
    [output] = inputs(second, "function_call_output")
    assert call_item["name"] == "exec_command" and output["call_id"] == call_item["call_id"]
    assert ECHOED in output["output"]


def test_tool_round_trip_over_an_http_upstream(tmp_path: Path, demo_upstream: str, codex: str) -> None:
    """The deployment users run: compat-asgi in front of a chat server over HTTP."""
    with serve(create_app(store="memory", upstream=demo_upstream + "/v1")) as url:
        run = Workspace(tmp_path, url).exec("please run exec_command")
    run.assert_ok()
    [command] = run.items("command_execution")
    assert command["exit_code"] == 0 and ECHOED in command["aggregated_output"]
    assert run.answer.startswith("The tool exec_command returned:") and ECHOED in run.answer


def test_output_schema_gets_a_fitting_json_answer(tmp_path: Path, server: tuple[str, Recorder]) -> None:
    schema = {
        "type": "object",
        "properties": {"summary": {"type": "string"}, "files": {"type": "integer", "minimum": 2}},
        "required": ["summary", "files"],
        "additionalProperties": False,
    }
    (tmp_path / "schema.json").write_bytes(orjson.dumps(schema))
    run = workspace(tmp_path, server).exec("--output-schema", str(tmp_path / "schema.json"), "summarise")
    run.assert_ok()
    assert orjson.loads(run.answer) == {"summary": "example", "files": 2}
    [body] = assert_all_answered(server[1])
    assert body["text"]["format"]["type"] == "json_schema" and body["text"]["format"]["schema"] == schema


def test_namespaced_tool_is_routed_back_to_its_namespace(tmp_path: Path, server: tuple[str, Recorder]) -> None:
    # close_agent lives in Codex's multi_agent_v1 namespace; the call must
    # come back with that namespace or Codex cannot route it.
    run = workspace(tmp_path, server).exec("please call close_agent")
    run.assert_ok()
    first, second = assert_all_answered(server[1])
    assert any(t.get("type") == "namespace" and t["name"] == "multi_agent_v1" for t in first["tools"])
    [call_item] = inputs(second, "function_call")
    assert (call_item["name"], call_item.get("namespace")) == ("close_agent", "multi_agent_v1")
    [output] = inputs(second, "function_call_output")
    assert output["call_id"] == call_item["call_id"]
    # Codex ran its own close_agent (which knows no agent "example"), it did
    # not refuse an unknown tool.
    assert "unsupported call" not in output["output"] and "example" in output["output"]
    # The chat backend saw it as one flat function, multi_agent_v1__close_agent.
    assert run.answer.startswith("The tool multi_agent_v1__close_agent returned:")


def test_apply_patch_creates_a_real_file(tmp_path: Path, server: tuple[str, Recorder]) -> None:
    # gpt-5.5 is in Codex's model catalog: Codex offers apply_patch to it as a
    # freeform (custom, grammar) tool, next to tool_search and web_search.
    ws = workspace(tmp_path, server, model="gpt-5.5")
    run = ws.exec("use apply_patch to add notes/hello.txt")
    run.assert_ok()
    assert (ws.repo / "notes" / "hello.txt").read_text() == DEMO_PATCH_LINE + "\n"
    [change] = run.items("file_change")
    assert change["status"] == "completed"
    assert [(c["path"].endswith("notes/hello.txt"), c["kind"]) for c in change["changes"]] == [(True, "add")]
    first, second = assert_all_answered(server[1])
    assert any(t.get("type") == "custom" and t["name"] == "apply_patch" for t in first["tools"])
    [call_item] = inputs(second, "custom_tool_call")
    [output] = inputs(second, "custom_tool_call_output")
    assert call_item["name"] == "apply_patch" and output["call_id"] == call_item["call_id"]


def test_reasoning_across_two_turns_with_encrypted_content(tmp_path: Path, codex: str) -> None:
    # A second recorder between the middleware and the demo shows what the
    # chat backend itself was sent.
    backend = Recorder(DemoChatApp())
    recorder = Recorder(CompatMiddleware(backend, store="memory"))
    with serve(recorder) as url:
        _reasoning_turns(tmp_path, (url, recorder))
    first_chat, second_chat = (x.json() for x in backend.exchanges if x.path == "/v1/chat/completions")
    # The first turn's reasoning (the demo thinks "The user said 2 words ...")
    # is back in the history the backend sees on the second turn.
    assert "The user said 2 words" not in orjson.dumps(first_chat).decode()
    assert "The user said 2 words" in orjson.dumps(second_chat["messages"]).decode()


def _reasoning_turns(tmp_path: Path, server: tuple[str, Recorder]) -> None:
    ws = workspace(tmp_path, server, model="demo-reasoning")
    first_run = ws.exec("think first")
    first_run.assert_ok()
    assert first_run.answer.startswith("Hello! You said: think first.")
    second_run = ws.exec("resume", "--last", "and now again")
    second_run.assert_ok()
    assert second_run.answer.startswith("Hello! You said: and now again.")
    first, second = assert_all_answered(server[1])
    # Codex keeps nothing on the server (store: false) and asks for the
    # reasoning sealed instead; the second turn sends it back, and the server
    # accepted it (it would refuse a seal it did not make).
    assert first["store"] is False and "reasoning.encrypted_content" in first["include"]
    [reasoning] = inputs(second, "reasoning")
    assert isinstance(reasoning.get("encrypted_content"), str) and reasoning["encrypted_content"]


def test_resumed_session_after_a_restart_needs_the_same_reasoning_key(tmp_path: Path, codex: str) -> None:
    """What the README tells users: the seal on Codex's reasoning is the
    server's key; a restarted server with a new random key refuses it."""
    outcomes = {}
    for key in (None, "a-fixed-key-shared-across-restarts"):
        with serve(create_app(store="memory", reasoning_key=key)) as url:
            ws = Workspace(tmp_path / str(key), url, model="demo-reasoning")
            ws.exec("think first").assert_ok()
        with serve(create_app(store="memory", reasoning_key=key)) as url:
            (ws.home / "config.toml").write_text(config_toml(url, model="demo-reasoning"))
            outcomes[key] = ws.exec("resume", "--last", "and again")
    refused = [e["message"] for e in outcomes[None].events if e.get("type") == "error"]
    assert refused and "invalid_encrypted_content" in refused[0] and "encrypted_content" in refused[0]
    outcomes["a-fixed-key-shared-across-restarts"].assert_ok()


def test_context_compaction_and_a_turn_after_it(tmp_path: Path, server: tuple[str, Recorder]) -> None:
    """With a tiny auto-compact limit Codex summarises the conversation
    mid-turn (for a provider like this one, by asking the model through the
    same endpoint) and goes on from the summary; a resumed turn still works."""
    ws = workspace(tmp_path, server)
    limit = ("-c", "model_auto_compact_token_limit=500")
    first = ws.exec(*limit, "please run exec_command")
    first.assert_ok()
    assert first.items("command_execution")[0]["exit_code"] == 0
    second = ws.exec("resume", "--last", *limit, "and again")
    second.assert_ok()
    assert second.answer.startswith("Hello! You said: and again.")
    bodies = assert_all_answered(server[1])
    # Beyond the call, its result and the resumed turn: the summary requests.
    assert len(bodies) > 3


def test_goal_tool_flow_with_an_output_without_call_id(tmp_path: Path, server: tuple[str, Recorder]) -> None:
    run = workspace(tmp_path, server).exec("create_goal for this thread")
    run.assert_ok()
    bodies = assert_all_answered(server[1])
    # After create_goal, Codex adds the goal as a function_call_output that
    # has a name and namespace instead of a call_id.
    without_id = [o for body in bodies for o in inputs(body, "function_call_output") if "call_id" not in o]
    assert without_id, [inputs(body, "function_call_output") for body in bodies]
    assert {(o.get("namespace"), o.get("name")) for o in without_id} == {("agent", "goal_objective")}
    # ... and it reached the backend as the result of a call (the goal's objective).
    assert "goal_objective returned: example." in run.answer


def test_catalog_model_sends_tools_as_an_additional_tools_item(tmp_path: Path, server: tuple[str, Recorder]) -> None:
    ws = workspace(tmp_path, server, model="gpt-5.6-luna")
    run = ws.exec("say hi")
    run.assert_ok()
    assert run.answer.startswith("Hello! You said: say hi.")
    [body] = assert_all_answered(server[1])
    assert "tools" not in body
    [extra] = inputs(body, "additional_tools")
    assert any(t.get("type") == "namespace" for t in extra["tools"])


def test_catalog_model_code_mode_exec_runs_a_script(tmp_path: Path, server: tuple[str, Recorder]) -> None:
    """Codex's newest models get one freeform tool, functions.exec, running
    JavaScript that calls the other tools; the demo's script runs its echo
    through exec_command."""
    run = workspace(tmp_path, server, model="gpt-5.6-luna").exec("please run exec")
    run.assert_ok()
    [command] = run.items("command_execution")
    assert DEMO_COMMAND in command["command"] and command["exit_code"] == 0
    assert run.answer.startswith("The tool functions__exec returned: Script completed") and ECHOED in run.answer
    first, second = assert_all_answered(server[1])
    [call_item] = inputs(second, "custom_tool_call")
    assert (call_item["name"], call_item.get("namespace")) == ("exec", "functions")
    [output] = inputs(second, "custom_tool_call_output")
    assert output["call_id"] == call_item["call_id"]


def test_captured_codex_requests_replay_at_the_middleware(tmp_path: Path, server: tuple[str, Recorder]) -> None:
    """Bodies Codex really sent (recorded here, not written by hand), sent
    again straight at a fresh middleware: each is accepted and streams a
    response that passes the protocol validator. The sessions cover a tool
    round trip, apply_patch, the goal output without call_id and a catalog
    model's additional_tools."""
    sessions = [
        ("demo", "please run exec_command"),
        ("gpt-5.5", "use apply_patch to add hello.txt"),
        ("demo", "create_goal for this thread"),
        ("gpt-5.6-luna", "please run exec"),
    ]
    for i, (model, prompt) in enumerate(sessions):
        Workspace(tmp_path / str(i), server[0], model=model).exec(prompt).assert_ok()
    captured = [x.body for x in server[1].responses()]
    assert len(captured) >= 8  # at least two per session: the call, then its output
    app = CompatMiddleware(DemoChatApp(), store="memory")
    for body in captured:
        recorded = asyncio.run(call(app, "POST", "/v1/responses", body))
        assert recorded.status == 200, recorded.body[:500]
        validate.assert_valid(validate.validate_responses_sse(recorded.body))
        assert b"event: response.completed\n" in recorded.body


def test_compat_asgi_serve_with_codex_logs_each_request(tmp_path: Path, codex: str) -> None:
    """The command a user runs: ``compat-asgi serve`` as a process, its
    access log on stderr showing what of Codex's request it ignored."""
    with serve_command() as served:
        run = Workspace(tmp_path, served.url).exec("say hi")
    run.assert_ok()
    [line] = [line for line in served.stderr if line.startswith("POST /v1/responses ")]
    assert line.startswith("POST /v1/responses 200 translated model=demo ")
    ignored = line.split(" ignored=", 1)[1].split(" ", 1)[0].strip('"').split(",")
    assert "client_metadata" in ignored



class CallThenCrash:
    """A chat backend whose every answer is a complete ``exec_command`` call
    appending to ``marker``; model ``crash`` then drops the connection before
    its ``finish_reason``, model ``length`` ends with ``finish_reason:
    "length"`` (its arguments cut mid-JSON when the prompt says ``cut``), any
    other model finishes the call and, given the call's output, answers
    ``done``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker
        self.requests: list[dict[str, Any]] = []

    @staticmethod
    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        body = {"id": "c", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        return b"data: " + orjson.dumps(body) + b"\n\n"

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        raw = b""
        while True:
            message = await receive()
            raw += message.get("body", b"")
            if not message.get("more_body"):
                break
        request = orjson.loads(raw)
        self.requests.append(request)
        crash = request["model"] == "crash"
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        if not crash and request["messages"][-1]["role"] == "tool":
            answer = self.chunk({"role": "assistant", "content": "done"}, "stop") + b"data: [DONE]\n\n"
            await send({"type": "http.response.body", "body": answer})
            return
        arguments = orjson.dumps({"cmd": f"echo x >> {self.marker}"}).decode()
        if request["model"] == "length" and "cut" in orjson.dumps(request["messages"][-1]).decode():
            arguments = arguments[:-2]
        head = {"index": 0, "id": f"call_{len(self.requests)}", "type": "function", "function": {"name": "exec_command", "arguments": ""}}
        body = self.chunk({"role": "assistant", "content": ""}) + self.chunk({"tool_calls": [head]})
        for piece in (arguments[:9], arguments[9:]):  # the whole call, in two deltas
            body += self.chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
        await send({"type": "http.response.body", "body": body, "more_body": True})
        if crash:
            await asyncio.sleep(0.2)  # the call's bytes reach the middleware first
            raise RuntimeError("backend crashed mid-answer")  # uvicorn drops the connection
        end = self.chunk({}, "length" if request["model"] == "length" else "tool_calls") + b"data: [DONE]\n\n"
        await send({"type": "http.response.body", "body": end})


def test_a_call_the_backend_crashed_after_is_never_run_across_codex_retries(tmp_path: Path, codex: str) -> None:
    """Codex runs every call an output_item.done hands it, whatever its status,
    and then retries a failed turn: a call the backend had fully written
    before it crashed (no finish_reason) must not be shown, or it runs once
    per attempt. The same call finished normally runs exactly once."""
    marker = tmp_path / "marker"
    backend = CallThenCrash(marker)
    with serve(backend) as upstream:
        recorder = Recorder(CompatMiddleware(upstream=upstream + "/v1", store="memory"))
        with serve(recorder) as url:
            ws = Workspace(tmp_path / "crash", url, model="crash")
            config = ws.home / "config.toml"
            config.write_text(config.read_text().replace("stream_max_retries = 0", "stream_max_retries = 2"))
            crashed = ws.exec("append to the marker")
            assert not marker.exists(), marker.read_text()
            assert crashed.returncode != 0 and not crashed.items("command_execution")
            assert any(e.get("type") == "turn.failed" for e in crashed.events), crashed.events
            # Codex did retry: the first attempt and two more, each failed the same way.
            assert len(backend.requests) == 3
            reconnects = [e for e in crashed.events if e.get("type") == "error" and "Reconnecting" in e["message"]]
            assert len(reconnects) == 2, crashed.events
            for exchange in recorder.responses():
                report = validate.validate_responses_sse(exchange.response_body)
                validate.assert_valid(report)
                events = [orjson.loads(data) for _, data in validate.parse_sse(exchange.response_body)]
                assert events[-1]["type"] == "response.failed" and events[-1]["response"]["output"] == []
                assert not [e for e in events if "item" in e or e["type"].startswith("response.function_call")]

            finished = Workspace(tmp_path / "finish", url).exec("append to the marker")
    finished.assert_ok()
    [command] = finished.items("command_execution")
    assert command["exit_code"] == 0 and str(marker) in command["command"]
    assert marker.read_text() == "x\n"  # exactly once
    assert finished.answer == "done"


def test_a_call_at_the_token_limit_runs_once_and_a_cut_one_is_never_shown(tmp_path: Path, codex: str) -> None:
    """``finish_reason: "length"``: Codex runs the calls of an ``incomplete``
    response too, then ends the turn without retrying. A call whose arguments
    were whole runs once; one cut mid-arguments is not announced at all."""
    marker = tmp_path / "marker"
    backend = CallThenCrash(marker)
    with serve(backend) as upstream:
        recorder = Recorder(CompatMiddleware(upstream=upstream + "/v1", store="memory"))
        with serve(recorder) as url:
            ws = Workspace(tmp_path / "length", url, model="length")
            config = ws.home / "config.toml"
            config.write_text(config.read_text().replace("stream_max_retries = 0", "stream_max_retries = 2"))
            whole = ws.exec("append to the marker")
            cut = ws.exec("resume", "--last", "cut it short")
    assert marker.read_text() == "x\n"  # the whole call, once; the cut one never
    for run in (whole, cut):
        assert run.returncode != 0
        [failure] = [e for e in run.events if e.get("type") == "turn.failed"]
        assert "max_output_tokens" in failure["error"]["message"]
    assert len(whole.items("command_execution")) == 1 and not cut.items("command_execution")
    assert len(backend.requests) == 2  # no retry of an incomplete response
    first, second = (
        [orjson.loads(data) for _, data in validate.parse_sse(x.response_body)] for x in recorder.responses()
    )
    for exchange in recorder.responses():
        validate.assert_valid(validate.validate_responses_sse(exchange.response_body))
    assert [(i["type"], i["status"]) for i in first[-1]["response"]["output"]] == [("function_call", "incomplete")]
    assert second[-1]["type"] == "response.incomplete" and second[-1]["response"]["output"] == []
