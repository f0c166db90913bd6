"""Several servers side by side: one matrix, as text, JSON and a static HTML page."""

from __future__ import annotations

import html
import time
from collections.abc import Sequence
from typing import Any

import orjson

from compat_asgi.conformance.report import Report, Result, _clip

__all__ = ["matrix_html", "matrix_json", "matrix_table"]

_CELL_WIDTH = 44


def _keys(reports: Sequence[Report]) -> list[tuple[str, str, str, str]]:
    """Every case any server ran, in plan order (the first report's, then extras)."""
    seen: dict[tuple[str, str, str, str], None] = {}
    for report in reports:
        for result in report.results:
            seen.setdefault(result.key, None)
    return list(seen)


def _index(report: Report) -> dict[tuple[str, str, str, str], Result]:
    return {r.key: r for r in report.results}


def _cell(result: Result | None) -> str:
    if result is None:
        return "-"
    if result.status == "fail" and result.rule is not None:
        return f"FAIL [{result.rule}]"
    return result.status.upper()


def _score(report: Report) -> str:
    ran = report.count("pass") + report.count("fail")
    return f"{report.count('pass')}/{ran} passed, {report.count('skip')} skipped, profile {report.profile}"


def matrix_table(reports: Sequence[Report]) -> str:
    """One row per case, one column per server: PASS, SKIP, or FAIL with the first violated rule."""
    indexes = [_index(r) for r in reports]
    header = ("SUITE", "CASE", "MODE", *(f"[{k + 1}]" for k in range(len(reports))))
    rows = [header]
    for key in _keys(reports):
        suite, api, case, mode = key
        name = case if api == "responses" else f"{api}:{case}"
        rows.append((suite, name, mode, *(_clip(_cell(ix.get(key)), _CELL_WIDTH) for ix in indexes)))
    rows.append(("", "PASSED", "", *(f"{r.count('pass')}/{r.count('pass') + r.count('fail')}" for r in reports)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["servers:"]
    lines += [f"  [{k + 1}] {r.name} (model {r.model!r}): {_score(r)}" for k, r in enumerate(reports)]
    lines.append("")
    for row in rows:
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    return "\n".join(lines)


def matrix_json(reports: Sequence[Report]) -> dict[str, Any]:
    indexes = [_index(r) for r in reports]
    return {
        "servers": [
            {"name": r.name, "base_url": r.base_url, "model": r.model, "profile": r.profile, "ok": r.ok,
             "summary": {"passed": r.count("pass"), "failed": r.count("fail"), "skipped": r.count("skip")}}
            for r in reports
        ],
        "cases": [
            {"suite": key[0], "api": key[1], "scenario": key[2], "mode": key[3],
             "results": [None if ix.get(key) is None else ix[key].to_json() for ix in indexes]}
            for key in _keys(reports)
        ],
    }


_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse}th,td{border:1px solid #ccc;padding:.3em .5em;vertical-align:top;text-align:left}
th{background:#f3f3f3}.pass{background:#e7f6e7}.fail{background:#fbe3e3}.skip{background:#f4f4f4;color:#666}
pre{max-width:60em;max-height:30em;overflow:auto;background:#fafafa;border:1px solid #ddd;padding:.5em;font-size:12px}
summary{cursor:pointer}
"""


def _pretty(value: Any) -> str:
    try:
        return orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:
        return repr(value)


def _html_cell(result: Result | None) -> str:
    if result is None:
        return '<td class="skip">-</td>'
    if result.status != "fail":
        title = f' title="{html.escape(result.skip_reason)}"' if result.skip_reason else ""
        return f'<td class="{result.status}"{title}>{result.status.upper()}</td>'
    rule = html.escape(result.rule or "")
    violations = "".join(f"<li>[{html.escape(v.rule)}] {html.escape(v.message)}</li>" for v in result.violations)
    schema = html.escape(_pretty(result.schema)) if result.schema else "-"
    return (
        f'<td class="fail"><details><summary>FAIL [{rule}]</summary>'
        f"<p>Violations:</p><ul>{violations}</ul><p>Schema verdicts: <code>{schema}</code></p>"
        f"<p>Request:</p><pre>{html.escape(_pretty(result.request))}</pre>"
        f"<p>Answer (events or object):</p><pre>{html.escape(_pretty(result.to_json()['evidence']))}</pre>"
        f"</details></td>"
    )


def matrix_html(reports: Sequence[Report], *, title: str = "compat-asgi conformance") -> str:
    """A static page: the matrix, each failure expandable (<details>) with its request and the offending events."""
    indexes = [_index(r) for r in reports]
    head = "".join(f"<th>{html.escape(r.name)}<br><small>model {html.escape(r.model)}</small></th>" for r in reports)
    scores = "".join(
        f'<td class="score">{r.count("pass")}/{r.count("pass") + r.count("fail")} passed'
        f"<br><small>{r.count('skip')} skipped, profile {html.escape(r.profile)}</small></td>"
        for r in reports
    )
    body = []
    for key in _keys(reports):
        suite, api, case, mode = key
        name = case if api == "responses" else f"{api}:{case}"
        cells = "".join(_html_cell(ix.get(key)) for ix in indexes)
        body.append(f"<tr><td>{html.escape(suite)}</td><td>{html.escape(name)}</td><td>{mode}</td>{cells}</tr>")
    return (
        f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
        f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
        f"<table><thead><tr><th>suite</th><th>case</th><th>mode</th>{head}</tr>"
        f"<tr><th colspan=\"3\">score</th>{scores}</tr></thead><tbody>{''.join(body)}</tbody></table>"
        f"<p><small>Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by {html.escape(_tool())}; "
        f"servers: {', '.join(html.escape(r.base_url) for r in reports)}</small></p>"
        "</body></html>\n"
    )


def _tool() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"compat-asgi {version('compat-asgi')}"
    except PackageNotFoundError:
        return "compat-asgi"
