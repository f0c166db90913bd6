"""Access log lines, Prometheus metrics and path templates (compat_asgi.observability)."""

from __future__ import annotations

import importlib
import logging
import sys

import orjson
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from compat_asgi.observability import (
    MAX_ERROR_KINDS,
    AccessLog,
    Metrics,
    RequestRecord,
    path_template,
)

LOGGER = "compat_asgi.access"


def record(**overrides: object) -> RequestRecord:
    fields: dict[str, object] = {
        "request_id": "req_1",
        "method": "POST",
        "path": "/v1/responses",
        "model": "gpt-4o",
        "upstream": "demo",
        "mode": "translated",
        "status": 200,
        "stream": True,
        "started": 100.0,
        "first_byte": 100.0123,
        "finished": 100.0456,
    }
    fields.update(overrides)
    return RequestRecord(**fields)  # type: ignore[arg-type]


def logged(caplog: pytest.LogCaptureFixture, log: AccessLog, rec: RequestRecord) -> str:
    caplog.clear()
    with caplog.at_level(logging.INFO, logger=LOGGER):
        log.emit(rec)
    assert len(caplog.records) == 1
    entry = caplog.records[0]
    assert (entry.name, entry.levelno) == (LOGGER, logging.INFO)
    return entry.getMessage()


# -- RequestRecord ------------------------------------------------------------


def test_defaults_and_timings() -> None:
    rec = RequestRecord("req_1", "GET", "/v1/models")
    assert (rec.mode, rec.status, rec.stream, rec.error) == ("local", 0, False, None)
    assert rec.ttfb_ms is None and rec.duration_ms is None
    rec = record()
    assert rec.ttfb_ms == pytest.approx(12.3)
    assert rec.duration_ms == pytest.approx(45.6)
    assert record(first_byte=None).ttfb_ms is None
    assert record(finished=None).duration_ms is None


# -- AccessLog ----------------------------------------------------------------


def test_json_line(caplog: pytest.LogCaptureFixture) -> None:
    line = logged(caplog, AccessLog("json"), record())
    assert line == (
        '{"request_id":"req_1","method":"POST","path":"/v1/responses","model":"gpt-4o",'
        '"upstream":"demo","mode":"translated","status":200,"stream":true,"error":null,'
        '"ignored":[],"ttfb_ms":12.3,"duration_ms":45.6}'
    )


def test_json_line_with_none_fields(caplog: pytest.LogCaptureFixture) -> None:
    rec = RequestRecord("req_2", "GET", "/v1/models/x", started=5.0, finished=5.00004)
    line = logged(caplog, AccessLog("json"), rec)
    assert line == (
        '{"request_id":"req_2","method":"GET","path":"/v1/models/x","model":null,'
        '"upstream":null,"mode":"local","status":0,"stream":false,"error":null,'
        '"ignored":[],"ttfb_ms":null,"duration_ms":0.0}'
    )


def test_json_line_escapes_hostile_path(caplog: pytest.LogCaptureFixture) -> None:
    rec = record(path='/v1/a\nb"%s', error="upstream_timeout", status=504)
    line = logged(caplog, AccessLog("json"), rec)
    assert "\n" not in line
    parsed = orjson.loads(line)
    assert parsed["path"] == '/v1/a\nb"%s'
    assert parsed["error"] == "upstream_timeout"


def test_text_line(caplog: pytest.LogCaptureFixture) -> None:
    line = logged(caplog, AccessLog(), record())
    assert line == "POST /v1/responses 200 translated model=gpt-4o upstream=demo ttfb=12.3ms dur=45.6ms id=req_1"


def test_text_line_with_none_fields_and_error(caplog: pytest.LogCaptureFixture) -> None:
    rec = record(model=None, upstream=None, first_byte=None, finished=None, status=504,
                 error="upstream_timeout", mode="local")
    line = logged(caplog, AccessLog("text"), rec)
    assert line == "POST /v1/responses 504 local model=- upstream=- ttfb=- dur=- error=upstream_timeout id=req_1"


def test_text_line_quotes_only_when_needed(caplog: pytest.LogCaptureFixture) -> None:
    rec = record(model="my model", upstream="local-vllm", path="/v1/models/a b")
    line = logged(caplog, AccessLog("text"), rec)
    assert line == (
        'POST "/v1/models/a b" 200 translated model="my model" upstream=local-vllm '
        "ttfb=12.3ms dur=45.6ms id=req_1"
    )


def test_text_line_cannot_be_split_or_forged(caplog: pytest.LogCaptureFixture) -> None:
    rec = record(path="/v1/x\nPOST /v1/responses 200", model='a"b', upstream="", request_id="x=1")
    line = logged(caplog, AccessLog("text"), rec)
    assert line == (
        r'POST "/v1/x\nPOST /v1/responses 200" 200 translated model="a\"b" upstream="" '
        'ttfb=12.3ms dur=45.6ms id="x=1"'
    )


def test_ignored_names_are_listed_and_escaped(caplog: pytest.LogCaptureFixture) -> None:
    # Field and tool names come from the client: a newline or quote in one
    # must not split or forge a line.
    rec = record(ignored=("client_metadata", "tools[3]:web_search", 'x\nPOST "y'))
    line = logged(caplog, AccessLog("text"), rec)
    assert line == (
        "POST /v1/responses 200 translated model=gpt-4o upstream=demo ttfb=12.3ms dur=45.6ms "
        r'ignored="client_metadata,tools[3]:web_search,x\nPOST \"y" id=req_1'
    )
    parsed = orjson.loads(logged(caplog, AccessLog("json"), rec))
    assert parsed["ignored"] == ["client_metadata", "tools[3]:web_search", 'x\nPOST "y']
    # Nothing ignored: no field, so ordinary lines stay short.
    assert "ignored=" not in logged(caplog, AccessLog("text"), record())


def test_custom_logger_and_disabled_level(caplog: pytest.LogCaptureFixture) -> None:
    custom = logging.getLogger("tests.access")
    with caplog.at_level(logging.INFO, logger="tests.access"):
        AccessLog("text", custom).emit(record())
    assert [r.name for r in caplog.records] == ["tests.access"]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        AccessLog().emit(record())
    assert caplog.records == []


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="fmt"):
        AccessLog("xml")  # type: ignore[arg-type]


# -- path templates -----------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "template"),
    [
        ("/v1/responses", "/v1/responses"),
        ("/v1/responses/resp_abc", "/v1/responses/{id}"),
        ("/v1/responses/resp_abc/input_items", "/v1/responses/{id}/input_items"),
        ("/v1/responses/resp_abc/cancel", "/v1/responses/{id}/cancel"),
        ("/v1/responses/input_tokens", "/v1/responses/input_tokens"),
        ("/v1/responses/compact", "/v1/responses/compact"),
        ("/v1/conversations", "/v1/conversations"),
        ("/v1/conversations/conv_1/items/msg_2", "/v1/conversations/{id}/items/{id}"),
        ("/v1/responses/resp_abc/whatever", "other"),
        ("/v1/responses/", "other"),
        ("/v1/responses//input_items", "other"),
        ("/v1/chat/completions", "/v1/chat/completions"),
        ("/v1/chat/completions/chatcmpl-1", "/v1/chat/completions/{id}"),
        ("/v1/chat/completions/chatcmpl-1/messages", "/v1/chat/completions/{id}/messages"),
        ("/v1/models", "/v1/models"),
        ("/v1/models/anything", "/v1/models/{id}"),
        ("/v1/models/meta-llama/Llama-3-8B", "/v1/models/{id}"),
        ("/v1/models/", "other"),
        ("/v1/completions", "/v1/completions"),
        ("/v1/embeddings", "/v1/embeddings"),
        ("/v1/files/file-1", "other"),
        ("/v1", "other"),
        ("/", "other"),
        ("/healthz", "other"),
        ("/v2/responses", "other"),
        ("/v1responses", "other"),
    ],
)
def test_path_template(path: str, template: str) -> None:
    assert path_template(path) == template


def test_path_template_other_prefixes() -> None:
    assert path_template("/api/openai/v1/responses/r1", "/api/openai/v1/") == "/api/openai/v1/responses/{id}"
    assert path_template("/responses/r1", "") == "/responses/{id}"
    assert path_template("/responses/r1", "/") == "/responses/{id}"
    assert path_template("/v1/responses", "/api") == "other"


# -- Metrics ------------------------------------------------------------------


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    content_type, body = metrics.render()
    assert content_type == b"text/plain; version=0.0.4; charset=utf-8"
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


def value(metrics: Metrics, name: str, **labels: str) -> float:
    return samples(metrics).get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_counts_gauges_and_histograms() -> None:
    metrics = Metrics()
    streamed = record(request_id="a", stream=True)
    plain = record(request_id="b", stream=False, path="/v1/responses/resp_1", method="GET",
                   mode="local", started=10.0, first_byte=10.002, finished=10.003)
    failed = record(request_id="c", stream=False, status=504, error="upstream_timeout",
                    first_byte=None, finished=145.0)
    for rec in (streamed, plain, failed):
        metrics.started(rec)
    assert value(metrics, "compat_asgi_active_requests") == 3
    assert value(metrics, "compat_asgi_active_streams") == 1

    metrics.finished(streamed)
    assert value(metrics, "compat_asgi_active_requests") == 2
    assert value(metrics, "compat_asgi_active_streams") == 0
    metrics.finished(plain)
    metrics.finished(failed)
    assert value(metrics, "compat_asgi_active_requests") == 0

    total = "compat_asgi_requests_total"
    assert value(metrics, total, method="POST", path="/v1/responses", mode="translated", status="200") == 1
    assert value(metrics, total, method="GET", path="/v1/responses/{id}", mode="local", status="200") == 1
    assert value(metrics, total, method="POST", path="/v1/responses", mode="translated", status="504") == 1
    assert value(metrics, "compat_asgi_errors_total", kind="upstream_timeout") == 1

    ttfb = "compat_asgi_ttfb_seconds"
    assert value(metrics, f"{ttfb}_count", mode="translated") == 1  # the failed one sent nothing
    assert value(metrics, f"{ttfb}_sum", mode="translated") == pytest.approx(0.0123)
    assert value(metrics, f"{ttfb}_bucket", mode="translated", le="0.01") == 0
    assert value(metrics, f"{ttfb}_bucket", mode="translated", le="0.025") == 1
    assert value(metrics, f"{ttfb}_count", mode="local") == 1
    duration = "compat_asgi_duration_seconds"
    assert value(metrics, f"{duration}_count", mode="translated") == 2
    assert value(metrics, f"{duration}_sum", mode="translated") == pytest.approx(45.0456)
    assert value(metrics, f"{duration}_bucket", mode="translated", le="0.05") == 1
    assert value(metrics, f"{duration}_bucket", mode="translated", le="30.0") == 1
    assert value(metrics, f"{duration}_bucket", mode="translated", le="60.0") == 2
    assert value(metrics, f"{duration}_bucket", mode="local", le="0.05") == 1


def test_gauges_undo_what_started_counted() -> None:
    metrics = Metrics()
    # "stream" is only known once the body is read, after started().
    late = record(stream=False)
    metrics.started(late)
    late.stream = True
    metrics.finished(late)
    # Never started, or finished twice: the gauges must not go negative.
    stray = record(stream=True)
    metrics.finished(stray)
    metrics.finished(stray)
    twice = record(stream=True)
    metrics.started(twice)
    metrics.started(twice)
    assert value(metrics, "compat_asgi_active_requests") == 1
    assert value(metrics, "compat_asgi_active_streams") == 1
    metrics.finished(twice)
    assert value(metrics, "compat_asgi_active_requests") == 0
    assert value(metrics, "compat_asgi_active_streams") == 0
    assert value(metrics, "compat_asgi_requests_total", method="POST", path="/v1/responses",
                 mode="translated", status="200") == 4


def test_labels_stay_bounded() -> None:
    metrics = Metrics()
    for n in range(MAX_ERROR_KINDS + 10):
        metrics.finished(record(method=f"X{n}", path=f"/v1/files/{n}", mode=f"m{n}",
                                error=f"code_{n}"))
    metrics.finished(record(error="Not A Code!"))
    request_labels = {
        (labels["method"], labels["path"], labels["mode"])
        for (name, pairs) in samples(metrics)
        if name == "compat_asgi_requests_total"
        for labels in [dict(pairs)]
    }
    assert request_labels == {("other", "other", "other"), ("POST", "/v1/responses", "translated")}
    kinds = {dict(labels)["kind"] for (name, labels) in samples(metrics)
             if name == "compat_asgi_errors_total"}
    assert len(kinds) == MAX_ERROR_KINDS + 1
    assert "other" in kinds and "code_0" in kinds and f"code_{MAX_ERROR_KINDS}" not in kinds
    assert value(metrics, "compat_asgi_errors_total", kind="other") == 11


def test_metrics_prefix() -> None:
    metrics = Metrics(prefix="/openai")
    metrics.finished(record(path="/openai/responses/r1"))
    assert value(metrics, "compat_asgi_requests_total", method="POST", path="/openai/responses/{id}",
                 mode="translated", status="200") == 1


def test_two_instances_do_not_collide() -> None:
    first, second = Metrics(), Metrics()
    first.finished(record())
    first.finished(record())
    second.finished(record())
    labels = {"method": "POST", "path": "/v1/responses", "mode": "translated", "status": "200"}
    assert value(first, "compat_asgi_requests_total", **labels) == 2
    assert value(second, "compat_asgi_requests_total", **labels) == 1


def test_given_registry_is_used() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    assert metrics.registry is registry
    metrics.started(record())
    assert registry.get_sample_value("compat_asgi_active_requests") == 1
    with pytest.raises(ValueError, match="Duplicated"):
        Metrics(registry)


def test_import_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [m for m in sys.modules if m == "prometheus_client" or m.startswith("prometheus_client.")]:
        monkeypatch.delitem(sys.modules, name)
    # None in sys.modules makes every import of the name fail, as if not installed.
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    # The module itself must import without the optional package.
    monkeypatch.delitem(sys.modules, "compat_asgi.observability")
    fresh = importlib.import_module("compat_asgi.observability")
    assert fresh.AccessLog is not AccessLog
    with pytest.raises(ImportError, match=r"pip install compat-asgi\[metrics\]"):
        fresh.Metrics()
