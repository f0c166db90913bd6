"""Runs the suite against one endpoint: :func:`run_conformance`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

from compat_asgi.conformance import schema, sdk
from compat_asgi.conformance.checks import (
    chat_token,
    check_chat,
    check_error,
    check_responses,
    decode_events,
    responses_token,
    snippet,
)
from compat_asgi.conformance.report import Report, Result
from compat_asgi.conformance.scenarios import MODES, SCENARIOS, Api, Mode, Scenario
from compat_asgi.conformance.stored import STORED, Outcome, StoredScenario, probe
from compat_asgi.conformance.suite import SUITE, Context, SuiteCase
from compat_asgi.conformance.transport import RequestFailed, ServerUnreachable, Transport
from compat_asgi.validate import Violation

__all__ = [
    "API_CHOICES", "CLIENT_CHOICES", "DEFAULT_TIMEOUT", "SUITE_CHOICES", "Progress", "check_arguments",
    "list_cases", "run_conformance",
]

API_CHOICES: Final = ("responses", "chat", "both")
SUITE_CHOICES: Final = ("openresponses", "ours", "all")
CLIENT_CHOICES: Final = ("codex",)
#: Per request, whole body included: generous for a real model's short answers.
DEFAULT_TIMEOUT: Final = 60.0
#: Used when no model is given and GET /models names none.
FALLBACK_MODEL: Final = "default"
SKIP_NOT_STORED: Final = "skipped (server does not store)"

#: Called after each case with (result, cases done, cases planned).
Progress = Callable[[Result, int, int], None]

_PATHS: Final[dict[Api, str]] = {"responses": "/responses", "chat": "/chat/completions"}


@dataclass(frozen=True, slots=True)
class _Case:
    api: Api
    mode: Mode
    scenario: Scenario | None = None
    stored: StoredScenario | None = None
    public: SuiteCase | None = None
    suite: str = "ours"

    @property
    def name(self) -> str:
        if self.public is not None:
            return self.public.id
        named = self.scenario or self.stored
        assert named is not None
        return named.name


def run_conformance(
    base_url: str,
    *,
    model: str | None = None,
    api: str = "both",
    api_key: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    progress: Progress | None = None,
    suite: str = "all",
    clients: tuple[str, ...] = (),
    label: str | None = None,
    file_search_vector_store_id: str | None = None,
    offline_web_search: bool = False,
) -> Report:
    """Score the server at ``base_url`` (e.g. ``http://127.0.0.1:8000/v1``).

    The public suite's optional cases run only when configured: file-search with
    ``file_search_vector_store_id``, offline-web-search with ``offline_web_search``;
    otherwise they are skipped with the reason.

    Raises ``ValueError`` for bad arguments and :class:`ServerUnreachable`
    when not one connection can be made; everything else is a result.
    """
    check_arguments(base_url, api=api, timeout=timeout, suite=suite, clients=clients)
    apis: tuple[Api, ...] = ("responses", "chat") if api == "both" else ("responses",) if api == "responses" else ("chat",)
    plan = _plan(apis, suite, clients)
    transport = Transport(base_url, api_key=api_key, timeout=timeout)
    try:
        used = model or _discover_model(transport)
        ctx = Context(transport, used, api_key, timeout, file_search_vector_store_id or None, offline_web_search)
        stores: bool | None = None
        results: list[Result] = []
        for case in plan:
            if case.stored is not None and stores is None:
                stores = probe(transport, used)
            if case.stored is not None and not stores:
                result = Result(case.api, case.name, case.mode, "skip", skip_reason=SKIP_NOT_STORED, suite=case.suite)
            else:
                result = _run_case(ctx, case)
            results.append(result)
            if progress is not None:
                progress(result, len(results), len(plan))
    finally:
        transport.close()
    return Report(transport.base_url, used, apis, tuple(results), sdk.available(), stores, label)


def check_arguments(
    base_url: str, *, api: str, timeout: float, suite: str = "all", clients: tuple[str, ...] = ()
) -> None:
    """Raise ``ValueError`` for arguments no run could use."""
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"base URL must be http(s)://host[:port][/path], got {base_url!r}")
    if api not in API_CHOICES:
        raise ValueError(f"api must be one of {', '.join(API_CHOICES)}, got {api!r}")
    if not timeout > 0:
        raise ValueError(f"timeout must be positive, got {timeout!r}")
    if suite not in SUITE_CHOICES:
        raise ValueError(f"suite must be one of {', '.join(SUITE_CHOICES)}, got {suite!r}")
    for client in clients:
        if client not in CLIENT_CHOICES:
            raise ValueError(f"client must be one of {', '.join(CLIENT_CHOICES)}, got {client!r}")


def _plan(apis: tuple[Api, ...], suite: str = "all", clients: tuple[str, ...] = ()) -> list[_Case]:
    plan: list[_Case] = []
    if suite in ("openresponses", "all") and "responses" in apis:
        plan += [_Case("responses", case.mode, public=case, suite="openresponses") for case in SUITE]  # type: ignore[arg-type]
    if "codex" in clients and "responses" in apis:
        from compat_asgi.conformance.clients import CODEX

        plan += [_Case("responses", case.mode, public=case, suite="codex") for case in CODEX]  # type: ignore[arg-type]
    if suite == "openresponses":
        return plan
    for api in apis:
        plan += [_Case(api, mode, scenario=s) for s in SCENARIOS[api] for mode in MODES]
        if api == "responses":
            plan += [_Case(api, mode, stored=s) for s in STORED for mode in s.modes]
    return plan


def _discover_model(transport: Transport) -> str:
    """The first model GET /models lists, so a bare URL is enough to run."""
    try:
        listed = transport.request("GET", "/models")
    except RequestFailed:
        return FALLBACK_MODEL
    data = listed.json()
    models = data.get("data") if listed.status == 200 and isinstance(data, dict) else None
    first = models[0] if isinstance(models, list) and models else None
    model_id = first.get("id") if isinstance(first, dict) else None
    return model_id if isinstance(model_id, str) and model_id else FALLBACK_MODEL


def list_cases(suite: str = "all", clients: tuple[str, ...] = ()) -> list[tuple[str, str, str, str, str]]:
    """(suite, case, mode, what it asserts, where ours is stricter and why) for ``--list``."""
    rows: list[tuple[str, str, str, str, str]] = []
    for case in _plan(("responses", "chat"), suite, clients):
        if case.public is not None:
            stricter = case.public.stricter
            if not case.public.verified:
                stricter += " (id named after the spec's feature: no public suite version read has this case)"
            rows.append((case.suite, case.name, case.mode, case.public.about, stricter))
        else:
            about = (case.scenario or case.stored).about  # type: ignore[union-attr]
            rows.append((case.suite, f"{case.api}:{case.name}", case.mode, about,
                         "ours only: the public suite has no such case"))
    return rows


def _run_case(ctx: Context, case: _Case) -> Result:
    stream = case.mode == "stream"
    transport, model = ctx.transport, ctx.model
    try:
        if case.public is not None:
            outcome = case.public.run(ctx)
        elif case.stored is not None:
            outcome = case.stored.run(transport, model, stream)
        else:
            assert case.scenario is not None
            outcome = _run_scenario(transport, model, case.scenario, stream)
    except RequestFailed as exc:
        outcome = Outcome([Violation(exc.rule, exc.message)])
    except ServerUnreachable:
        raise
    except Exception as exc:  # a bug here must cost one row, not the whole run
        outcome = Outcome([Violation("internal", f"conformance runner error: {type(exc).__name__}: {exc}")])
    ex = outcome.timed
    if outcome.skip_reason is not None and not outcome.violations:
        return Result(case.api, case.name, case.mode, "skip", skip_reason=outcome.skip_reason, suite=case.suite)
    return Result(
        case.api,
        case.name,
        case.mode,
        "fail" if outcome.violations else "pass",
        tuple(outcome.violations),
        ttft=ex.ttft if ex is not None and stream else None,
        total=None if ex is None else ex.total,
        events=ex.events if ex is not None and stream and ex.is_event_stream else None,
        sdk_check=outcome.sdk,
        suite=case.suite,
        schema=outcome.schema,
        request=outcome.request,
        evidence=outcome.evidence,
    )


def _run_scenario(transport: Transport, model: str, scenario: Scenario, stream: bool) -> Outcome:
    is_token = responses_token if scenario.api == "responses" else chat_token
    body = scenario.body(model, stream)
    ex = transport.request("POST", _PATHS[scenario.api], body, stream=stream, is_token=is_token)
    if scenario.error_param is not None:
        return Outcome(check_error(ex, param=scenario.error_param), ex, request=body, evidence=snippet(ex.body, 2000))
    check = check_responses if scenario.api == "responses" else check_chat
    checked = check(ex, stream=stream)
    violations = checked.violations
    if checked.final is not None and scenario.expect is not None:
        violations += scenario.expect(checked.final)
    verdicts = None
    if scenario.api == "responses" and ex.status == 200:
        # Recorded, not enforced, in our cases: the profile a server follows is a finding, not a fault.
        verdicts = (schema.event_verdicts(decode_events(ex.body)) if stream else schema.response_verdicts(checked.final))[0]
    evidence = decode_events(ex.body) if stream and ex.is_event_stream else ex.json() if ex.json() is not None else snippet(ex.body, 2000)
    return Outcome(violations, ex, checked.sdk, request=body, evidence=evidence, schema=verdicts)
