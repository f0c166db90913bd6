"""Scenarios that only make sense on a server that stores responses.

Whether it does is probed once (create with ``store: true``, then GET the id)
rather than assumed: ``store`` defaults to true in OpenAI's API, so a server
that accepts it but keeps nothing is common and not a failure.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from compat_asgi.conformance.checks import check_responses, responses_token, snippet
from compat_asgi.conformance.report import SdkCheck
from compat_asgi.conformance.scenarios import MODES, Mode
from compat_asgi.conformance.transport import Exchange, RequestFailed, Transport
from compat_asgi.validate import Violation, validate_response_object

__all__ = ["Outcome", "StoredScenario", "STORED", "probe"]

RULE = "store"
_FIRST = "Remember the word lighthouse. Reply with one short sentence."
_FOLLOW_UP = "Which word did I ask you to remember?"


@dataclass(slots=True)
class Outcome:
    violations: list[Violation] = field(default_factory=list)
    #: The exchange whose timings the report shows.
    timed: Exchange | None = None
    sdk: SdkCheck = "n/a"
    #: For the report: the request that was sent and the events/object that answered.
    request: Any = None
    evidence: Any = None
    #: Schema verdicts per profile (see :mod:`compat_asgi.conformance.schema`).
    schema: dict[str, str] | None = None
    #: Set when the case could not run here (a missing optional package).
    skip_reason: str | None = None


@dataclass(frozen=True, slots=True)
class StoredScenario:
    name: str
    about: str
    modes: tuple[Mode, ...]
    run: Callable[[Transport, str, bool], Outcome]


def probe(transport: Transport, model: str) -> bool:
    try:
        created = transport.request("POST", "/responses", {"model": model, "input": _FIRST, "store": True})
        rid = _id(created)
        return rid is not None and transport.request("GET", f"/responses/{rid}").status == 200
    except RequestFailed:
        return False


def _id(ex: Exchange) -> str | None:
    obj = ex.json()
    rid = obj.get("id") if ex.status == 200 and isinstance(obj, Mapping) else None
    return rid if isinstance(rid, str) else None


def _create(transport: Transport, model: str, stream: bool, **extra: Any) -> tuple[Outcome, dict[str, Any] | None]:
    body = {"model": model, "input": _FIRST, "store": True, "stream": stream, **extra}
    ex = transport.request("POST", "/responses", body, stream=stream, is_token=responses_token)
    checked = check_responses(ex, stream=stream)
    return Outcome(checked.violations, ex, checked.sdk), checked.final


def _digest(obj: Any) -> list[tuple[Any, ...]]:
    output = obj.get("output") if isinstance(obj, Mapping) else None
    return [
        (item.get("id"), item.get("type"), item.get("arguments"), repr(item.get("content")))
        for item in output if isinstance(item, Mapping)
    ] if isinstance(output, list) else []


def _retrieve(transport: Transport, model: str, stream: bool) -> Outcome:
    outcome, final = _create(transport, model, stream)
    if outcome.violations or final is None:
        return outcome
    rid = final.get("id")
    got = transport.request("GET", f"/responses/{rid}")
    obj = got.json()
    if got.status != 200:
        outcome.violations.append(Violation(RULE, f"GET /responses/{rid}: HTTP {got.status}: {snippet(got.body)}"))
        return outcome
    outcome.violations += validate_response_object(obj)
    if not isinstance(obj, Mapping) or obj.get("id") != rid:
        outcome.violations.append(Violation(RULE, f"GET /responses/{rid} returned id {_get(obj, 'id')!r}"))
    elif _digest(obj) != _digest(final):
        outcome.violations.append(Violation(RULE, "the retrieved output differs from the created response's"))
    return outcome


def _previous(transport: Transport, model: str, stream: bool) -> Outcome:
    first, final = _create(transport, model, False)
    if first.violations or final is None:
        return first
    rid = final.get("id")
    outcome, follow = _create(transport, model, stream, input=_FOLLOW_UP, previous_response_id=rid)
    if follow is not None and not outcome.violations:
        if follow.get("status") != "completed":
            outcome.violations.append(Violation("status", f"response status is {follow.get('status')!r}, expected 'completed'"))
        if follow.get("previous_response_id") != rid:
            outcome.violations.append(
                Violation("echo", f"response.previous_response_id is {follow.get('previous_response_id')!r}, the request said {rid!r}")
            )
    return outcome


def _delete(transport: Transport, model: str, stream: bool) -> Outcome:
    created, final = _create(transport, model, stream)
    if created.violations or final is None:
        return created
    rid = final.get("id")
    gone = transport.request("DELETE", f"/responses/{rid}")
    outcome = Outcome(timed=gone)
    obj = gone.json()
    if gone.status != 200:
        outcome.violations.append(Violation(RULE, f"DELETE /responses/{rid}: HTTP {gone.status}: {snippet(gone.body)}"))
    elif not isinstance(obj, Mapping) or (obj.get("id"), obj.get("deleted")) != (rid, True):
        outcome.violations.append(Violation(RULE, f"DELETE should answer {{id: {rid!r}, deleted: true}}: {snippet(gone.body)}"))
    after = transport.request("GET", f"/responses/{rid}")
    if after.status != 404:
        outcome.violations.append(Violation(RULE, f"GET after DELETE: HTTP {after.status}, expected 404"))
    return outcome


def _get(obj: Any, key: str) -> Any:
    return obj.get(key) if isinstance(obj, Mapping) else None


STORED: tuple[StoredScenario, ...] = (
    StoredScenario("stored_retrieve", "GET /responses/{id} returns what was created (same ids)", MODES, _retrieve),
    StoredScenario("previous_response_id", "a follow-up continues a stored response", MODES, _previous),
    StoredScenario("stored_delete", "DELETE /responses/{id}, then GET is 404", ("non-stream",), _delete),
)
