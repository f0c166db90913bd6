"""The public OpenResponses suite's cases, schema profiles, --client codex, comparison and HTML."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from broken_server import OPENRESPONSES_ONLY, BrokenServer
from support import missing, serve

from compat_asgi import CompatMiddleware
from compat_asgi.cli import main
from compat_asgi.conformance import Report, run_conformance
from compat_asgi.conformance.clients import codex_fixtures
from compat_asgi.conformance.schema import event_verdicts, response_verdicts
from compat_asgi.conformance.suite import PDF_TITLE, SKIP_FILE_SEARCH, SKIP_WEB_SEARCH, SUITE, _pdf
from compat_asgi.demo import DemoChatApp

#: Ids read from the public suite's test list (both versions read); ours must keep every one of them.
PUBLIC_IDS = {
    "basic-response", "streaming-response", "system-prompt", "tool-calling", "tool-calling-streaming",
    "function-call-roundtrip", "image-input", "file-input", "multi-turn", "previous-response-id",
}
#: The suite's optional cases: skipped, with the reason, until configured.
OPTIONAL_IDS = {"file-search", "offline-web-search"}
RUN_OPTIONAL = {"file_search_vector_store_id": "vs_conformance", "offline_web_search": True}


@pytest.fixture(scope="module")
def broken_url() -> Iterator[str]:
    with serve(BrokenServer()) as url:
        yield url + "/v1"


@pytest.fixture(scope="module")
def middleware_url() -> Iterator[str]:
    # What `compat-asgi serve --store memory` runs: the demo behind the middleware, with a store.
    with serve(CompatMiddleware(DemoChatApp(), store="memory")) as url:
        yield url + "/v1"


def public(url: str, model: str, **options: object) -> Report:
    return run_conformance(url, model=model, suite="openresponses", timeout=10, **options)  # type: ignore[arg-type]


def failures(report: Report) -> dict[str, str | None]:
    return {r.scenario: r.rule for r in report.results if r.status == "fail"}


# --- the suite's cases against a good and a broken fake server ------------------------


def test_every_public_suite_id_is_a_case() -> None:
    ids = {case.id for case in SUITE}
    assert PUBLIC_IDS | OPTIONAL_IDS <= ids
    unverified = {case.id for case in SUITE if not case.verified}
    assert unverified == {"websocket-response", "compaction", "assistant-phase"}


def skipped(report: Report) -> dict[str, str | None]:
    return {r.scenario: r.skip_reason for r in report.results if r.status == "skip"}


def test_good_fake_server_passes_the_public_suite_and_the_codex_profile(broken_url: str) -> None:
    report = public(broken_url, "broken-none", clients=("codex",))
    assert failures(report) == {}
    assert skipped(report) == {"file-search": SKIP_FILE_SEARCH, "offline-web-search": SKIP_WEB_SEARCH}
    assert {r.scenario for r in report.results} >= PUBLIC_IDS | {"websocket-response", "compaction"}
    assert report.profile == "both"
    for result in report.results:
        if result.status != "skip":
            assert result.schema == {"openai": "pass", "openresponses": "pass"}, result
    codex = [r for r in report.results if r.suite == "codex"]
    assert len(codex) == len(codex_fixtures()) == 6
    assert all(r.scenario.startswith("codex-0.169.0:") for r in codex)


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        ("no-argument-events", {"tool-calling-streaming": "function-call"}),
        ("reject-image", {"image-input": "http-status"}),
        ("reject-file", {"file-input": "http-status"}),
        ("reject-phase", {"assistant-phase": "http-status"}),
        ("ignore-chain", {"previous-response-id": "previous-response"}),
        ("compact-no-item", {"compaction": "compaction"}),
        ("ws-no-terminal", {"websocket-response": "websocket"}),
        # A server that follows the chain but does not say so fails both chained cases.
        ("no-chain-echo", {"previous-response-id": "echo", "function-call-roundtrip": "echo"}),
        ("reject-tool-output", {"function-call-roundtrip": "http-status"}),
        ("drop-call-id", {"tool-calling": "function-call", "tool-calling-streaming": "function-call",
                          "function-call-roundtrip": "function-call"}),
        # Arguments that are JSON but not an object pass the suite's checks; ours refuses them.
        ("string-arguments", {"function-call-roundtrip": "function-call"}),
        ("no-search-results", {"file-search": "include"}),
    ],
)
def test_each_public_case_catches_its_fault(broken_url: str, fault: str, expected: dict[str, str]) -> None:
    report = public(broken_url, f"broken-{fault}", **RUN_OPTIONAL)
    assert failures(report) == expected
    assert not report.ok


def test_function_call_roundtrip_chains_the_forced_call_and_its_output(broken_url: str) -> None:
    result = public(broken_url, "broken-none").find("responses", "function-call-roundtrip", "non-stream")
    assert result.status == "pass", result.first
    first, follow_up = result.request["first"], result.request["follow_up"]
    assert first["tool_choice"] == {"type": "function", "name": "get_weather"} and first["stream"] is False
    assert "store" not in first  # storing is the API's default, which the chain relies on
    (output,) = follow_up["input"]
    assert output["type"] == "function_call_output" and output["call_id"].startswith("call_")
    assert follow_up["previous_response_id"] == result.evidence["previous_response_id"]
    assert result.evidence["status"] == "completed" and result.evidence["output"]


def test_a_refused_second_turn_is_the_first_violation(broken_url: str) -> None:
    result = public(broken_url, "broken-reject-tool-output").find("responses", "function-call-roundtrip", "non-stream")
    assert result.first is not None and result.first.rule == "http-status" and "HTTP 400" in result.first.message
    assert result.request["follow_up"]["input"][0]["type"] == "function_call_output"


def test_optional_cases_run_when_configured_and_judge_the_hosted_call(broken_url: str) -> None:
    report = public(broken_url, "broken-none", **RUN_OPTIONAL)
    assert failures(report) == {} and skipped(report) == {}
    search = report.find("responses", "file-search", "non-stream")
    assert search.request["tools"] == [{"type": "file_search", "vector_store_ids": ["vs_conformance"]}]
    assert search.request["include"] == ["file_search_call.results"]
    assert [i["type"] for i in search.evidence["output"]] == ["file_search_call", "message"]
    web = report.find("responses", "offline-web-search", "non-stream")
    assert web.request["tools"] == [{"type": "web_search", "external_web_access": False}]
    assert web.evidence["output"][0]["action"]["sources"]
    # The SDK's models know no tool_choice {type: web_search}: a recorded verdict, not the case's failure.
    assert web.schema == {"openai": "fail", "openresponses": "pass"}


def test_optional_cases_fail_a_server_that_ignores_hosted_tools(middleware_url: str) -> None:
    # compat-asgi serve accepts and ignores hosted tools (x-compat-ignored): enabled, the cases say so.
    report = public(middleware_url, "demo", **RUN_OPTIONAL)
    assert failures(report) == {"file-search": "openresponses", "offline-web-search": "openresponses"}
    messages = {r.scenario: str(r.first) for r in report.results if r.status == "fail"}
    assert messages["file-search"] == "[openresponses]: expected an output item of type 'file_search_call', found none"
    assert "'web_search_call'" in messages["offline-web-search"]


def test_the_file_input_pdf_is_well_formed() -> None:
    # A real reader finds each object where the xref table says it is.
    pdf = _pdf(PDF_TITLE)
    assert pdf.startswith(b"%PDF-1.4\n") and pdf.endswith(b"%%EOF\n")
    startxref = int(pdf.rsplit(b"startxref\n", 1)[1].split(b"\n")[0])
    assert pdf[startxref:].startswith(b"xref\n0 6\n")
    entries = pdf[startxref:].split(b"\n")[3:8]
    for number, entry in enumerate(entries, 1):
        assert pdf[int(entry[:10]):].startswith(b"%d 0 obj\n" % number)
    stream = pdf.split(b"stream\n", 1)[1].split(b"\nendstream", 1)[0]
    assert b"/Length %d " % len(stream) in pdf and f"(Title: {PDF_TITLE})".encode() in stream


def test_tool_calling_streaming_also_states_the_suites_own_finding(broken_url: str) -> None:
    result = public(broken_url, "broken-no-argument-events").find("responses", "tool-calling-streaming", "stream")
    messages = [str(v) for v in result.violations]
    assert "[openresponses]: no response.function_call_arguments.delta event" in messages
    assert "[openresponses]: no response.function_call_arguments.done event" in messages


def test_empty_output_fails_the_suites_own_check(broken_url: str) -> None:
    report = public(broken_url, "broken-empty-output")
    basic = report.find("responses", "basic-response", "non-stream")
    assert "[openresponses]: response has no output items" in [str(v) for v in basic.violations]
    assert {"basic-response", "system-prompt", "multi-turn", "image-input"} <= failures(report).keys()


def test_codex_profile_needs_encrypted_reasoning_with_store_false(broken_url: str) -> None:
    report = run_conformance(broken_url, model="broken-plain-reasoning", suite="openresponses", clients=("codex",),
                             timeout=10)
    codex = {r.scenario: r for r in report.results if r.suite == "codex"}
    assert {r.rule for r in codex.values()} == {"codex"}
    assert "without encrypted_content" in str(codex["codex-0.169.0:first_turn"].first)
    assert failures(report).keys() == codex.keys()  # the public cases store, so they may reason in plain


# --- schema profiles ---------------------------------------------------------------------


def test_missing_openresponses_keys_fail_one_profile_and_pass_the_other(broken_url: str) -> None:
    report = public(broken_url, "broken-missing-key")
    basic = report.find("responses", "basic-response", "non-stream")
    assert basic.schema == {"openai": "pass", "openresponses": "fail"}
    paths = {v.message for v in basic.violations if v.rule == "openresponses-schema"}
    assert paths == {f"{key}: required key missing" for key in OPENRESPONSES_ONLY}
    stream = report.find("responses", "streaming-response", "stream")
    assert "events[0].response.completed_at: required key missing" in {v.message for v in stream.violations}
    assert report.profile == "openai"
    assert "schema profile followed: openai" in report.table()


def test_a_bad_field_type_names_its_path_in_both_profiles(broken_url: str) -> None:
    result = public(broken_url, "broken-bad-delta-type").find("responses", "streaming-response", "stream")
    assert result.schema == {"openai": "fail", "openresponses": "fail"}
    by_rule = {v.rule: v.message for v in result.violations if v.rule.endswith("-schema")}
    assert by_rule["openresponses-schema"].endswith(".delta: expected string, got integer")
    assert by_rule["openai-schema"].startswith("events[") and ".delta:" in by_rule["openai-schema"]


def test_schema_paths_reach_into_output_items() -> None:
    ok = {"id": "resp_1", "object": "response", "created_at": 1, "model": "m", "output": [
        {"type": "message", "id": "msg_1", "status": "completed", "role": "assistant",
         "content": [{"type": "output_text", "text": 5, "annotations": []}]}],
        "parallel_tool_calls": True, "tool_choice": "auto", "tools": []}
    verdicts, violations = response_verdicts(ok)
    messages = [v.message for v in violations]
    assert "output[0].content[0].text: expected string, got integer" in messages
    # The SDK's verdict names the same path, and only the union member the item's type selects.
    sdk = [v.message for v in violations if v.rule == "openai-schema"]
    assert sdk == ["output[0].content[0].text: Input should be a valid string"]
    assert verdicts["openai"] == "fail" and verdicts["openresponses"] == "fail"


def test_event_names_outside_a_profile_are_reported_per_profile() -> None:
    # An event type neither the SDK's union nor the OpenResponses schema knows.
    legacy = {"type": "response.reasoning.delta", "sequence_number": 0, "item_id": "rs_1", "output_index": 0,
              "delta": "hm"}
    verdicts, violations = event_verdicts([legacy])
    assert verdicts == {"openai": "fail", "openresponses": "fail"}
    assert {v.rule for v in violations} == {"openai-schema", "openresponses-schema"}
    assert all("response.reasoning.delta" in v.message and v.message.startswith("events[0].type") for v in violations)


# --- compat-asgi serve on main: only what it supports, the rest named ---------------------

def test_middleware_over_demo_passes_the_public_suite_and_codex(middleware_url: str) -> None:
    # What `compat-asgi serve --store memory` runs: every public case (WebSocket mode and
    # compaction included), every captured Codex request, both schema profiles everywhere.
    report = public(middleware_url, "demo", clients=("codex",))
    assert failures(report) == {} and skipped(report).keys() == OPTIONAL_IDS and report.ok
    assert {r.scenario for r in report.results} >= PUBLIC_IDS | {"websocket-response", "compaction"}
    for result in report.results:
        if result.status != "skip":
            assert result.schema == {"openai": "pass", "openresponses": "pass"}, result
    assert report.profile == "both"
    assert len([r for r in report.results if r.suite == "codex"]) == 6


# --- command line: --list, comparison, JSON, HTML in Chromium ------------------------------


def test_list_says_what_each_case_asserts_and_why_ours_is_stricter(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["conformance", "--list", "--suite", "openresponses", "--client", "codex"]) == 0
    out = capsys.readouterr().out
    for case in SUITE:
        assert f"openresponses  {case.id} ({case.mode})" in out
    assert "unknown previous_response_id, which must be refused" in out
    assert "the suite never looks at sequence_number or event order" in out
    assert "codex-0.169.0:output_without_call_id" in out
    assert "optional, runs only with --file-search-vector-store-id" in out
    assert "optional, runs only with --enable-offline-web-search" in out
    assert "no public suite version read has this case" in out
    assert out.rstrip().endswith(f"{len(SUITE) + 6} cases")


def test_optional_case_flags_reach_the_cases(
    broken_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_json = tmp_path / "run.json"
    base = ["conformance", "--suite", "openresponses", "--base-url", broken_url, "--timeout", "10",
            "--json", str(out_json)]
    assert main([*base, "--model", "broken-none"]) == 0
    assert SKIP_FILE_SEARCH in capsys.readouterr().out
    by_case = {r["scenario"]: r for r in json.loads(out_json.read_text())["results"]}
    assert by_case["offline-web-search"]["skip_reason"] == SKIP_WEB_SEARCH
    code = main([*base, "--model", "broken-no-search-results", "--file-search-vector-store-id", "vs_cli",
                 "--enable-offline-web-search"])
    assert code == 1 and "FAIL" in capsys.readouterr().out
    by_case = {r["scenario"]: r for r in json.loads(out_json.read_text())["results"]}
    assert by_case["offline-web-search"]["status"] == "pass"
    assert by_case["file-search"]["rule"] == "include"
    assert by_case["file-search"]["request"]["tools"][0]["vector_store_ids"] == ["vs_cli"]


def test_unknown_suite_is_a_usage_error() -> None:
    with pytest.raises(SystemExit) as caught:
        main(["conformance", "--base-url", "http://127.0.0.1:9/v1", "--suite", "nope"])
    assert caught.value.code == 2


@pytest.fixture(scope="module")
def chain_ignoring_url() -> Iterator[str]:
    with serve(BrokenServer(fault="ignore-chain")) as url:
        yield url + "/v1"


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def test_comparison_of_three_servers_as_table_json_and_html(
    broken_url: str, middleware_url: str, chain_ignoring_url: str, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out_json, out_html = tmp_path / "matrix.json", tmp_path / "report.html"
    code = main([
        "conformance", "--suite", "openresponses", "--model", "broken-none", "--timeout", "10",
        "--base-url", broken_url, "--name", "good-fake",
        "--base-url", middleware_url, "--name", "compat-asgi-demo",
        "--base-url", chain_ignoring_url, "--name", "chain-ignorer",
        "--json", str(out_json), "--html", str(out_html),
    ])
    captured = capsys.readouterr()
    assert code == 1  # not every server passes
    table = captured.out
    assert "[1] good-fake" in table and "[2] compat-asgi-demo" in table and "[3] chain-ignorer" in table
    row = next(line for line in table.splitlines() if line.split()[:2] == ["openresponses", "previous-response-id"])
    assert row.split()[3] == "PASS" and "FAIL [previous-response]" in row
    passed = next(line for line in table.splitlines() if line.split()[:1] == ["PASSED"])
    ran = len(SUITE) - len(OPTIONAL_IDS)
    assert passed.split()[1] == f"{ran}/{ran}"
    row = next(line for line in table.splitlines() if line.split()[:2] == ["openresponses", "file-search"])
    assert row.split()[3:] == ["SKIP", "SKIP", "SKIP"]
    data = json.loads(out_json.read_text())
    assert [s["name"] for s in data["servers"]] == ["good-fake", "compat-asgi-demo", "chain-ignorer"]
    assert data["servers"][0]["summary"] == {"passed": ran, "failed": 0, "skipped": len(OPTIONAL_IDS)}
    chain = next(c for c in data["cases"] if c["scenario"] == "previous-response-id")
    assert chain["results"][2]["rule"] == "previous-response"
    assert chain["results"][2]["request"]["unknown_id"]["previous_response_id"] == "resp_conformance_does_not_exist"

    chromium = _chromium()
    if chromium is None:
        missing("chromium is not installed (apt-get install -y chromium)")
    profile = tmp_path / "chromium-profile"
    shown = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
         "--dump-dom", out_html.as_uri()],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout
    assert "good-fake" in shown and "compat-asgi-demo" in shown and "chain-ignorer" in shown
    assert f"{ran}/{ran} passed" in shown
    # A failure expands to its violations, the request and the answer.
    assert "<summary>FAIL [previous-response]</summary>" in shown
    assert "resp_conformance_does_not_exist" in shown
    assert "Measured 20" in shown and "by compat-asgi" in shown and broken_url in shown
    assert shown.count("<details>") == sum(1 for c in data["cases"] for r in c["results"] if r["status"] == "fail")


def test_websocket_cases_skip_without_the_websockets_package(
    broken_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [n for n in sys.modules if n == "websockets" or n.startswith("websockets.")]:
        monkeypatch.setitem(sys.modules, name, None)
    result = public(broken_url, "broken-none").find("responses", "websocket-response", "stream")
    assert result.status == "skip" and "compat-asgi[conformance]" in (result.skip_reason or "")


def test_reasoning_event_names_are_judged_by_both_profiles(middleware_url: str) -> None:
    # The demo streams reasoning_content for a model named *reasoning*: the middleware emits
    # response.reasoning_text.* events, which both the SDK union and the OpenResponses list know.
    result = public(middleware_url, "demo-reasoning").find("responses", "streaming-response", "stream")
    kinds = {e["type"] for e in result.evidence if "reasoning" in e["type"]}
    assert kinds == {"response.reasoning_text.delta", "response.reasoning_text.done"}
    assert result.schema == {"openai": "pass", "openresponses": "pass"}
    assert result.status == "pass", result.first


def test_packaged_codex_bodies_are_the_captured_ones() -> None:
    # The CLI ships its own copy (package data); it must not drift from the captures the Codex tests use.
    captured = Path(__file__).parent / "fixtures" / "codex"
    names = sorted(p.name for p in captured.glob("*.codex-*.json"))
    assert [f"{case}.codex-{version}.json" for case, version, _ in codex_fixtures()] == names
    for (_, _, body), name in zip(codex_fixtures(), names):
        assert body == json.loads((captured / name).read_text())
