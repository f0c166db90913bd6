"""Results of a conformance run, as a terminal table and as JSON."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from compat_asgi.validate import Violation

__all__ = ["Report", "Result", "Status", "SdkCheck", "progress_line"]

Status = Literal["pass", "fail", "skip"]
#: The OpenAI SDK accumulator check: "n/a" for non-streamed requests.
SdkCheck = Literal["pass", "fail", "skipped", "n/a"]

#: The table quotes the first violation only; JSON has all of them.
_MESSAGE_WIDTH = 110


@dataclass(frozen=True, slots=True)
class Result:
    api: str
    scenario: str
    mode: str
    status: Status
    violations: tuple[Violation, ...] = ()
    skip_reason: str | None = None
    #: Seconds from sending the request to the first text/arguments delta.
    ttft: float | None = None
    #: Seconds from sending the request to the end of the last response body.
    total: float | None = None
    events: int | None = None
    sdk_check: SdkCheck = "n/a"
    #: "ours", "openresponses" (the public suite's cases) or a client profile ("codex").
    suite: str = "ours"
    #: Per schema profile: "pass", "fail" or "skipped"; None when no object was checked.
    schema: dict[str, str] | None = None
    #: What was sent and what answered, kept for the HTML report's failure details.
    request: Any = None
    evidence: Any = None

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.suite, self.api, self.scenario, self.mode)

    @property
    def first(self) -> Violation | None:
        return self.violations[0] if self.violations else None

    @property
    def rule(self) -> str | None:
        return None if not self.violations else self.violations[0].rule

    @property
    def events_per_second(self) -> float | None:
        # Over the whole request, first-byte latency included: what a client waits.
        if not self.events or not self.total:
            return None
        return self.events / self.total

    def to_json(self) -> dict[str, Any]:
        eps = self.events_per_second
        return {
            "api": self.api,
            "scenario": self.scenario,
            "mode": self.mode,
            "status": self.status,
            "rule": self.rule,
            "message": None if self.first is None else str(self.first),
            "skip_reason": self.skip_reason,
            "violations": [{"rule": v.rule, "message": v.message, "index": v.index} for v in self.violations],
            "ttft_ms": _ms(self.ttft),
            "total_ms": _ms(self.total),
            "events": self.events,
            "events_per_second": None if eps is None else round(eps, 1),
            "sdk_check": self.sdk_check,
            "suite": self.suite,
            "schema": self.schema,
            "request": self.request if self.status == "fail" else None,
            "evidence": _trim(self.evidence) if self.status == "fail" else None,
        }


@dataclass(frozen=True, slots=True)
class Report:
    base_url: str
    model: str
    apis: tuple[str, ...]
    results: tuple[Result, ...]
    #: Whether the ``openai`` package was importable, so its accumulator ran.
    sdk_available: bool
    #: Whether the server kept a ``store: true`` response; None if never probed.
    stores: bool | None

    #: Version/date notes shown beside the server's name (e.g. from its /models or a --label).
    label: str | None = None

    @property
    def ok(self) -> bool:
        return not any(r.status == "fail" for r in self.results)

    @property
    def name(self) -> str:
        return self.label or self.base_url

    @property
    def profile(self) -> str:
        """Which schema profile the server's answers follow (see :func:`schema.profile_of`)."""
        from compat_asgi.conformance.schema import profile_of

        return profile_of([r.schema for r in self.results if r.schema])

    def count(self, status: Status) -> int:
        return sum(1 for r in self.results if r.status == status)

    def find(self, api: str, scenario: str, mode: str, suite: str | None = None) -> Result:
        for result in self.results:
            if (result.api, result.scenario, result.mode) == (api, scenario, mode) and suite in (None, result.suite):
                return result
        raise KeyError((api, scenario, mode))

    def summary(self) -> str:
        sdk = "ran" if self.sdk_available else "skipped (openai package not installed)"
        return (
            f"{self.count('pass')} passed, {self.count('fail')} failed, {self.count('skip')} skipped"
            f" -- OpenAI SDK accumulator check: {sdk} -- schema profile followed: {self.profile}"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "base_url": self.base_url,
            "model": self.model,
            "apis": list(self.apis),
            "ok": self.ok,
            "sdk_available": self.sdk_available,
            "stores": self.stores,
            "label": self.label,
            "profile": self.profile,
            "summary": {"passed": self.count("pass"), "failed": self.count("fail"), "skipped": self.count("skip")},
            "results": [r.to_json() for r in self.results],
        }

    def table(self) -> str:
        header = ("SUITE", "API", "SCENARIO", "MODE", "RESULT", "TTFT", "TOTAL", "EV/S", "FIRST VIOLATION")
        rows = [header] + [_row(r) for r in self.results]
        # The last column is free text: never pad it, so long quotes don't widen every row.
        widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
        lines = [f"conformance of {self.base_url} (model {self.model!r})", ""]
        for row in rows:
            cells = [cell.ljust(w) for cell, w in zip(row, widths)]
            lines.append("  ".join([*cells, row[-1]]).rstrip())
        lines += ["", self.summary()]
        return "\n".join(lines)


def _row(result: Result) -> tuple[str, str, str, str, str, str, str, str, str]:
    eps = result.events_per_second
    if result.status == "skip":
        note = result.skip_reason or ""
    elif result.first is not None:
        note = _clip(str(result.first))
    else:
        note = ""
    return (
        result.suite,
        result.api,
        result.scenario,
        result.mode,
        result.status.upper(),
        _duration(result.ttft),
        _duration(result.total),
        "-" if eps is None else f"{eps:.0f}",
        note,
    )


def progress_line(result: Result, done: int, total: int) -> str:
    """One stderr line per finished case, while the run goes on."""
    width = len(str(total))
    tail = f" ({_duration(result.total)})" if result.total is not None else ""
    if result.status == "skip":
        tail = f" ({result.skip_reason})"
    elif result.first is not None:
        tail += f" [{result.first.rule}]"
    return f"[{done:>{width}}/{total}] {result.suite} {result.api} {result.scenario} {result.mode}: {result.status.upper()}{tail}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.1f}ms"
    return f"{seconds:.2f}s"


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def _clip(text: str, limit: int = _MESSAGE_WIDTH) -> str:
    text = " ".join(text.split())  # a quoted body may hold newlines; one row per result
    return text if len(text) <= limit else text[: limit - 3] + "..."



#: Evidence kept per failed case in JSON/HTML: enough to see the fault, bounded.
MAX_EVIDENCE_ITEMS = 200


def _trim(evidence: Any) -> Any:
    if isinstance(evidence, list) and len(evidence) > MAX_EVIDENCE_ITEMS:
        return [*evidence[:MAX_EVIDENCE_ITEMS], f"... {len(evidence) - MAX_EVIDENCE_ITEMS} more"]
    return evidence
