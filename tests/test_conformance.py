"""``compat-asgi conformance``: passes on good servers, names the rule on bad ones."""

from __future__ import annotations

import json
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from broken_server import BrokenServer
from support import serve

from compat_asgi import CompatMiddleware
from compat_asgi.cli import main
from compat_asgi.conformance import Report, ServerUnreachable, run_conformance
from compat_asgi.demo import DemoChatApp

STORED = {
    ("stored_retrieve", "stream"),
    ("stored_retrieve", "non-stream"),
    ("previous_response_id", "stream"),
    ("previous_response_id", "non-stream"),
    ("stored_delete", "non-stream"),
}


@pytest.fixture(scope="module")
def middleware_url() -> Iterator[str]:
    with serve(CompatMiddleware(DemoChatApp())) as url:
        yield url + "/v1"


@pytest.fixture(scope="module")
def demo_url() -> Iterator[str]:
    with serve(DemoChatApp()) as url:
        yield url + "/v1"


@pytest.fixture(scope="module")
def broken_url() -> Iterator[str]:
    with serve(BrokenServer()) as url:
        yield url + "/v1"


def assert_passes(report: Report) -> None:
    failures = [f"{r.api} {r.scenario} {r.mode}: {r.first}" for r in report.results if r.status == "fail"]
    assert not failures, "\n".join(failures)


def assert_fails(report: Report, scenario: str, rule: str, modes: tuple[str, ...] = ("stream",)) -> None:
    """``scenario`` fails in ``modes`` with ``rule`` quoted first."""
    api = "chat" if rule.startswith("chat-") else "responses"
    for mode in modes:
        result = report.find(api, scenario, mode)
        assert (result.status, result.rule) == ("fail", rule), result
        assert f"[{rule}]" in report.table()
    assert not report.ok


# --- good servers -------------------------------------------------------------


def test_middleware_over_demo_passes_both_apis(middleware_url: str) -> None:
    report = run_conformance(middleware_url, model="demo", api="both", timeout=20, suite="ours")
    assert_passes(report)
    assert report.ok and report.apis == ("responses", "chat")
    # The middleware has no response store yet: skipped, not failed.
    assert report.stores is False
    skipped = {(r.scenario, r.mode) for r in report.results if r.status == "skip"}
    assert skipped == STORED
    assert {r.skip_reason for r in report.results if r.status == "skip"} == {"skipped (server does not store)"}
    for result in report.results:
        if result.mode == "stream" and result.status == "pass" and result.scenario != "invalid_request":
            assert result.sdk_check == "pass", result
            assert result.ttft is not None and result.total is not None and result.ttft <= result.total
            assert result.events and result.events_per_second
        if result.mode == "non-stream":
            assert result.ttft is None and result.sdk_check == "n/a"


def test_demo_chat_server_passes_chat_api(demo_url: str) -> None:
    report = run_conformance(demo_url, api="chat", timeout=20)
    assert_passes(report)
    assert report.model == "demo"  # found through GET /models: the URL is enough
    assert [r.scenario for r in report.results[::2]] == [
        "plain_text", "tool_call", "parallel_tool_calls", "json_schema", "truncation", "usage", "invalid_request",
    ]


def test_broken_server_without_a_fault_passes(broken_url: str) -> None:
    # The control for the tests below: each failure there is the injected fault alone.
    report = run_conformance(broken_url, model="broken-none", api="both", timeout=20, clients=("codex",))
    assert_passes(report)
    # This one stores, so the stored-response scenarios ran (and passed).
    assert report.stores is True
    # Only the public suite's optional cases, which run when configured, are skipped.
    assert {r.scenario for r in report.results if r.status == "skip"} == {"file-search", "offline-web-search"}
    assert {(r.scenario, r.mode) for r in report.results if r.api == "responses"} >= STORED


def test_sdk_check_is_skipped_without_openai(demo_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in sys.modules if n == "openai" or n.startswith("openai.")]:
        monkeypatch.setitem(sys.modules, name, None)  # makes any `import openai...` raise ImportError
    report = run_conformance(demo_url, model="demo", api="chat", timeout=20)
    assert_passes(report)
    assert not report.sdk_available
    assert {r.sdk_check for r in report.results if r.mode == "stream" and r.scenario != "invalid_request"} == {"skipped"}
    assert "OpenAI SDK accumulator check: skipped" in report.table()


# --- one injected fault, one rule -------------------------------------------------


def run_broken(url: str, fault: str, api: str = "responses") -> Report:
    return run_conformance(url, model=f"broken-{fault}", api=api, timeout=20, suite="ours")


def test_detects_missing_sequence_number(broken_url: str) -> None:
    report = run_broken(broken_url, "missing-seq")
    assert_fails(report, "plain_text", "sequence")
    assert "sequence_number missing" in str(report.find("responses", "plain_text", "stream").first)
    assert report.find("responses", "plain_text", "non-stream").status == "pass"


def test_detects_reused_output_index(broken_url: str) -> None:
    report = run_broken(broken_url, "reused-index")
    assert_fails(report, "parallel_tool_calls", "output-index")
    assert "reused" in str(report.find("responses", "parallel_tool_calls", "stream").first)
    assert report.find("responses", "plain_text", "stream").status == "pass"  # one item: nothing to reuse


def test_detects_missing_terminal_event(broken_url: str) -> None:
    report = run_broken(broken_url, "missing-terminal")
    assert_fails(report, "plain_text", "terminal")
    assert "no terminal event" in str(report.find("responses", "plain_text", "stream").first)


def test_detects_wrong_item_id(broken_url: str) -> None:
    report = run_broken(broken_url, "wrong-item-id")
    assert_fails(report, "plain_text", "item-id")
    assert "msg_wrong" in str(report.find("responses", "plain_text", "stream").first)


def test_detects_truncated_reported_as_completed(broken_url: str) -> None:
    report = run_broken(broken_url, "truncated-completed")
    assert_fails(report, "truncation", "truncation", modes=("stream", "non-stream"))
    assert [r.scenario for r in report.results if r.status == "fail"] == ["truncation", "truncation"]


def test_detects_dropped_parallel_call(broken_url: str) -> None:
    report = run_broken(broken_url, "dropped-call")
    assert_fails(report, "parallel_tool_calls", "parallel-calls", modes=("stream", "non-stream"))
    assert "got ['get_weather']" in str(report.find("responses", "parallel_tool_calls", "stream").first)


def test_detects_chat_stream_without_done(broken_url: str) -> None:
    report = run_broken(broken_url, "missing-done", api="chat")
    assert_fails(report, "plain_text", "chat-done")
    assert report.find("chat", "plain_text", "non-stream").status == "pass"


def test_detects_delete_that_does_not_delete(broken_url: str) -> None:
    report = run_broken(broken_url, "lost-delete")
    result = report.find("responses", "stored_delete", "non-stream")
    assert (result.status, result.rule) == ("fail", "store")
    assert "GET after DELETE: HTTP 200, expected 404" in str(result.first)
    assert [r.scenario for r in report.results if r.status == "fail"] == ["stored_delete"]


def test_request_timeout_is_a_failure_not_a_hang(broken_url: str) -> None:
    report = run_conformance(broken_url, model="broken-stall", api="responses", timeout=0.3)
    stream = report.find("responses", "plain_text", "stream")
    whole = report.find("responses", "plain_text", "non-stream")
    assert (stream.rule, whole.rule) == ("timeout", "timeout")
    assert stream.total is not None and stream.total < 5
    assert report.stores is False  # the store probe timed out too: skipped, not crashed


# --- command line -------------------------------------------------------------


def test_cli_end_to_end_writes_json(
    middleware_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "results.json"
    code = main(["conformance", "--base-url", middleware_url, "--model", "demo", "--json", str(out), "--timeout", "20",
                 "--suite", "ours"])
    captured = capsys.readouterr()
    assert code == 0, captured.out
    data = json.loads(out.read_text())
    assert data["ok"] is True and data["model"] == "demo" and data["apis"] == ["responses", "chat"]
    assert data["summary"] == {"passed": 34, "failed": 0, "skipped": 5}
    first = data["results"][0]
    assert (first["api"], first["scenario"], first["mode"], first["status"]) == ("responses", "plain_text", "stream", "pass")
    assert first["ttft_ms"] > 0 and first["events"] > 0 and first["sdk_check"] == "pass"
    assert "FIRST VIOLATION" in captured.out and "34 passed, 0 failed, 5 skipped" in captured.out
    progress = [line for line in captured.err.splitlines() if line.startswith("[")]
    assert len(progress) == len(data["results"]) and progress[-1].startswith("[39/39] ours chat invalid_request")


def test_cli_exits_1_and_quotes_the_rule_on_failure(broken_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["conformance", "--base-url", broken_url, "--model", "broken-dropped-call", "--api", "responses",
                 "--suite", "ours"])
    captured = capsys.readouterr()
    assert code == 1
    assert "FAIL" in captured.out and "[parallel-calls]: expected calls to ['get_weather', 'get_time']" in captured.out


def test_cli_unreachable_server_is_a_message_not_a_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: connections are refused
        assert main(["conformance", "--base-url", f"http://127.0.0.1:{port}/v1"]) == 1
        with pytest.raises(ServerUnreachable):
            run_conformance(f"http://127.0.0.1:{port}/v1", model="m")
    err = capsys.readouterr().err
    assert f"cannot connect to http://127.0.0.1:{port}/v1" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "args",
    [
        ["--base-url", "ftp://example.com/v1"],
        ["--base-url", "127.0.0.1:8000"],
        ["--base-url", "http://127.0.0.1:9/v1", "--timeout", "0"],
        ["--base-url", "http://127.0.0.1:9/v1", "--json", "/nonexistent-dir/out.json"],
    ],
)
def test_cli_usage_errors_exit_2(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["conformance", *args]) == 2
    assert capsys.readouterr().err.startswith("compat-asgi conformance: ")


@pytest.mark.parametrize("args", [[], ["--base-url", "http://x/v1", "--api", "grpc"], ["--base-url", "http://x", "--timeout", "soon"]])
def test_cli_argument_errors_exit_2(args: list[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["conformance", *args])
    assert caught.value.code == 2
