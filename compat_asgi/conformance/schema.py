"""Schema checks of Response objects and stream events, under two profiles.

* ``openai``: the current OpenAI SDK's pydantic models (``Response`` and the
  ``ResponseStreamEvent`` union), validated with ``TypeAdapter`` when the
  ``openai`` package is importable; what the SDKs and Codex parse.
* ``openresponses``: the OpenResponses specification's schema, encoded here
  (its required keys and their JSON types) rather than shipped, so the check
  runs without the spec's files or a JSON-schema library.

The two disagree: the SDK makes most Response keys optional while the
OpenResponses ``ResponseResource`` requires every one of them (``completed_at``,
``top_logprobs``, ``safety_identifier`` ...), and each knows event types the
other does not. Each violation names its exact path (``output[0].content[0].text``)
so a report says both verdicts and which profile a server follows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cache
from typing import Any, Final, Literal

from compat_asgi.validate import Violation

__all__ = [
    "OPENAI_RULE",
    "OPENRESPONSES_RULE",
    "OPENRESPONSES_RESPONSE_REQUIRED",
    "Profile",
    "Verdicts",
    "event_verdicts",
    "profile_of",
    "response_verdicts",
]

OPENAI_RULE: Final = "openai-schema"
OPENRESPONSES_RULE: Final = "openresponses-schema"
#: Stops one malformed stream from burying the report in copies of one fault.
MAX_PER_PROFILE: Final = 60

Profile = Literal["openai", "openresponses", "both", "neither"]
#: Per profile: "pass", "fail" or "skipped" (the openai package is not installed).
Verdicts = dict[str, str]

_NULL = type(None)
_STR = (str,)
_INT = (int,)
_NUM = (int, float)
_BOOL = (bool,)
_LIST = (list,)
_OBJ = (dict,)

#: OpenResponses ``ResponseResource``: every key required, with its JSON type(s).
OPENRESPONSES_RESPONSE_REQUIRED: Final[dict[str, tuple[type, ...]]] = {
    "id": _STR,
    "object": _STR,
    "created_at": _INT,
    "completed_at": (int, _NULL),
    "status": _STR,
    "incomplete_details": (dict, _NULL),
    "model": _STR,
    "previous_response_id": (str, _NULL),
    "instructions": (str, list, _NULL),
    "output": _LIST,
    "error": (dict, _NULL),
    "tools": _LIST,
    "tool_choice": (str, dict),
    "truncation": _STR,
    "parallel_tool_calls": _BOOL,
    "text": _OBJ,
    "top_p": _NUM,
    "presence_penalty": _NUM,
    "frequency_penalty": _NUM,
    "top_logprobs": _INT,
    "temperature": _NUM,
    "reasoning": (dict, _NULL),
    "user": (str, _NULL),
    "usage": (dict, _NULL),
    "max_output_tokens": (int, _NULL),
    "max_tool_calls": (int, _NULL),
    "store": _BOOL,
    "background": _BOOL,
    "service_tier": _STR,
    "metadata": _OBJ,
    "safety_identifier": (str, _NULL),
    "prompt_cache_key": (str, _NULL),
}
_USAGE_REQUIRED: Final = {
    "input_tokens": _INT,
    "output_tokens": _INT,
    "total_tokens": _INT,
    "input_tokens_details": _OBJ,
    "output_tokens_details": _OBJ,
}
_ITEM_REQUIRED: Final[dict[str, dict[str, tuple[type, ...]]]] = {
    "message": {"type": _STR, "id": _STR, "status": _STR, "role": _STR, "content": _LIST},
    "function_call": {"type": _STR, "id": _STR, "call_id": _STR, "name": _STR, "arguments": _STR, "status": _STR},
    "reasoning": {"type": _STR, "id": _STR, "summary": _LIST},
}
_OUTPUT_TEXT_REQUIRED: Final = {"type": _STR, "text": _STR, "annotations": _LIST}

_AT = {"item_id": _STR, "output_index": _INT}
_PART = {**_AT, "content_index": _INT}
#: OpenResponses streaming events: type -> required keys beyond type and sequence_number.
_OPENRESPONSES_EVENTS: Final[dict[str, dict[str, tuple[type, ...]]]] = {
    "response.created": {"response": _OBJ},
    "response.queued": {"response": _OBJ},
    "response.in_progress": {"response": _OBJ},
    "response.completed": {"response": _OBJ},
    "response.failed": {"response": _OBJ},
    "response.incomplete": {"response": _OBJ},
    "response.output_item.added": {"output_index": _INT, "item": _OBJ},
    "response.output_item.done": {"output_index": _INT, "item": _OBJ},
    "response.content_part.added": {**_PART, "part": _OBJ},
    "response.content_part.done": {**_PART, "part": _OBJ},
    "response.output_text.delta": {**_PART, "delta": _STR},
    "response.output_text.done": {**_PART, "text": _STR},
    "response.refusal.delta": {**_PART, "delta": _STR},
    "response.refusal.done": {**_PART, "refusal": _STR},
    "response.function_call_arguments.delta": {**_AT, "delta": _STR},
    "response.function_call_arguments.done": {**_AT, "arguments": _STR},
    "response.reasoning_text.delta": {**_PART, "delta": _STR},
    "response.reasoning_text.done": {**_PART, "text": _STR},
    "response.reasoning_summary_part.added": {**_AT, "summary_index": _INT, "part": _OBJ},
    "response.reasoning_summary_part.done": {**_AT, "summary_index": _INT, "part": _OBJ},
    "response.reasoning_summary_text.delta": {**_AT, "summary_index": _INT, "delta": _STR},
    "response.reasoning_summary_text.done": {**_AT, "summary_index": _INT, "text": _STR},
    "response.output_text.annotation.added": {**_PART, "annotation_index": _INT, "annotation": _OBJ},
    "error": {"error": _OBJ},
}


def _type_name(value: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", int: "integer", float: "number"}.get(
        type(value), "null" if value is None else type(value).__name__
    )


def _want(types: tuple[type, ...]) -> str:
    return " or ".join(_type_name(t()) if t is not _NULL else "null" for t in types)


def _typed(value: Any, types: tuple[type, ...]) -> bool:
    if isinstance(value, bool) and bool not in types:
        return False  # JSON true is no integer
    return isinstance(value, types)


def _required(obj: Mapping[str, Any], keys: Mapping[str, tuple[type, ...]], where: str) -> list[str]:
    out: list[str] = []
    for key, types in keys.items():
        path = f"{where}.{key}" if where else key
        if key not in obj:
            out.append(f"{path}: required key missing")
        elif not _typed(obj[key], types):
            out.append(f"{path}: expected {_want(types)}, got {_type_name(obj[key])}")
    return out


def openresponses_response(obj: Any, where: str = "") -> list[str]:
    """Paths where ``obj`` breaks the OpenResponses ``ResponseResource`` schema."""
    if not isinstance(obj, Mapping):
        return [f"{where or '(response)'}: expected object, got {_type_name(obj)}"]
    out = _required(obj, OPENRESPONSES_RESPONSE_REQUIRED, where)
    prefix = f"{where}." if where else ""
    if obj.get("object", "response") != "response":
        out.append(f"{prefix}object: expected 'response', got {obj.get('object')!r}")
    usage = obj.get("usage")
    if isinstance(usage, Mapping):
        out += _required(usage, _USAGE_REQUIRED, f"{prefix}usage")
    output = obj.get("output")
    for k, item in enumerate(output if isinstance(output, list) else ()):
        out += _openresponses_item(item, f"{prefix}output[{k}]")
    return out


def _openresponses_item(item: Any, where: str) -> list[str]:
    if not isinstance(item, Mapping):
        return [f"{where}: expected object, got {_type_name(item)}"]
    keys = _ITEM_REQUIRED.get(item.get("type"))  # type: ignore[arg-type]
    if keys is None:
        return []  # other item kinds: the spec's union is open to extensions
    out = _required(item, keys, where)
    content = item.get("content") if item.get("type") == "message" else None
    for j, part in enumerate(content if isinstance(content, list) else ()):
        if isinstance(part, Mapping) and part.get("type") == "output_text":
            out += _required(part, _OUTPUT_TEXT_REQUIRED, f"{where}.content[{j}]")
    return out


def openresponses_event(event: Mapping[str, Any], index: int) -> list[str]:
    where = f"events[{index}]"
    kind = event.get("type")
    keys = _OPENRESPONSES_EVENTS.get(kind) if isinstance(kind, str) else None
    if keys is None:
        return [f"{where}.type: {kind!r} is not an OpenResponses streaming event"]
    out = _required(event, {"sequence_number": _INT, **keys}, where)
    response = event.get("response")
    if kind != "error" and isinstance(response, Mapping):
        out += openresponses_response(response, f"{where}.response")
    return out


# --- the OpenAI SDK profile --------------------------------------------------------


@cache
def _adapters() -> tuple[Any, dict[str, Any]] | None:
    """TypeAdapter of ``Response``, and one per member of the ``ResponseStreamEvent`` union.

    The union's discriminator is the SDK's own annotation, not pydantic's, so
    validating against the union reports every member's complaints; picking
    the member by ``type`` first gives the one path that matters.
    """
    try:
        from openai.types.responses import Response, ResponseStreamEvent
        from pydantic import TypeAdapter
    except ImportError:
        return None
    from typing import Literal, get_args, get_origin

    union = get_args(ResponseStreamEvent)[0] if get_args(ResponseStreamEvent) else ResponseStreamEvent
    events: dict[str, Any] = {}
    for member in get_args(union):
        field = getattr(member, "model_fields", {}).get("type")
        if field is not None and get_origin(field.annotation) is Literal:
            for name in get_args(field.annotation):
                events[name] = TypeAdapter(member)
    return TypeAdapter(Response), events


def sdk_available() -> bool:
    return _adapters() is not None


def _pydantic_paths(exc: Any, where: str) -> list[str]:
    """Each error's JSON path; union members whose ``type`` does not match are dropped.

    Pydantic tries every member of an undiscriminated union and names each in
    the error location (``output[0].ResponseOutputMessage.content``); only the
    member whose ``type`` literal matched says anything about the object.
    """
    errors = exc.errors()
    wrong_members: set[tuple[Any, ...]] = set()
    for error in errors:
        loc = tuple(error.get("loc", ()))
        if loc and loc[-1] == "type" and error.get("type") == "literal_error" and len(loc) >= 2 and _is_member(loc[-2]):
            wrong_members.add(loc[:-1])
    out: list[str] = []
    for error in errors:
        loc = tuple(error.get("loc", ()))
        if any(loc[: k + 1] in wrong_members for k in range(len(loc))):
            continue
        path = where
        for part in loc:
            if isinstance(part, int):
                path += f"[{part}]"
            elif not _is_member(part):
                path += f".{part}" if path else str(part)
        out.append(f"{path or '(root)'}: {error.get('msg')}")
    return out


def _is_member(part: Any) -> bool:
    # Union members appear as class names (or pydantic's tagged wrappers); fields are snake_case.
    return isinstance(part, str) and (part[:1].isupper() or part.startswith(("function-", "tagged-union")))


def openai_response(obj: Any, where: str = "") -> list[str] | None:
    adapters = _adapters()
    if adapters is None:
        return None
    from pydantic import ValidationError

    try:
        adapters[0].validate_python(obj)
    except ValidationError as exc:
        return _dedupe_union(_pydantic_paths(exc, where))
    return []


def openai_event(event: Mapping[str, Any], index: int) -> list[str] | None:
    adapters = _adapters()
    if adapters is None:
        return None
    from pydantic import ValidationError

    kind = event.get("type")
    adapter = adapters[1].get(kind) if isinstance(kind, str) else None
    if adapter is None:
        return [f"events[{index}].type: {kind!r} is not an event of the OpenAI SDK's ResponseStreamEvent"]
    try:
        adapter.validate_python(dict(event))
    except ValidationError as exc:
        return _dedupe_union(_pydantic_paths(exc, f"events[{index}]"))
    return []


def openai_compacted(obj: Any) -> list[str] | None:
    """Paths where a ``/responses/compact`` answer breaks the SDK's ``CompactedResponse``."""
    try:
        from openai.types.responses import CompactedResponse
        from pydantic import TypeAdapter, ValidationError
    except ImportError:
        return None
    if isinstance(obj, Mapping) and isinstance(obj.get("output"), list):
        # The SDK types these output messages as assistant-only, while the compact endpoint
        # returns the user's own messages: checking those would fail OpenAI's server too.
        kept = [i for i in obj["output"] if not (isinstance(i, Mapping) and i.get("role") in ("user", "developer"))]
        obj = {**obj, "output": kept}
    try:
        TypeAdapter(CompactedResponse).validate_python(obj)
    except ValidationError as exc:
        return _dedupe_union(_pydantic_paths(exc, ""))
    return []


def _dedupe_union(paths: list[str]) -> list[str]:
    # A union failure lists every member it tried; the first few say enough.
    seen: list[str] = []
    for path in paths:
        if path not in seen:
            seen.append(path)
    return seen[:MAX_PER_PROFILE]


# --- verdicts ---------------------------------------------------------------------------


def _verdicts(openai: list[str] | None, openresponses: list[str]) -> tuple[Verdicts, list[Violation]]:
    verdicts: Verdicts = {
        "openai": "skipped" if openai is None else "fail" if openai else "pass",
        "openresponses": "fail" if openresponses else "pass",
    }
    violations = [Violation(OPENAI_RULE, m) for m in (openai or [])[:MAX_PER_PROFILE]]
    violations += [Violation(OPENRESPONSES_RULE, m) for m in openresponses[:MAX_PER_PROFILE]]
    return verdicts, violations


def response_verdicts(obj: Any) -> tuple[Verdicts, list[Violation]]:
    """Both profiles' verdicts on one Response object, with each violation's path."""
    return _verdicts(openai_response(obj), openresponses_response(obj))


def event_verdicts(events: Sequence[Mapping[str, Any]]) -> tuple[Verdicts, list[Violation]]:
    """Both profiles' verdicts on a decoded event stream (each event and its response)."""
    openai: list[str] | None = [] if sdk_available() else None
    openresponses: list[str] = []
    for index, event in enumerate(events):
        if openai is not None:
            openai += openai_event(event, index) or []
        openresponses += openresponses_event(event, index)
    return _verdicts(openai, openresponses)


def merge(a: Verdicts, b: Verdicts) -> Verdicts:
    rank = {"fail": 2, "pass": 1, "skipped": 0}
    return {k: max(a.get(k, "skipped"), b.get(k, "skipped"), key=lambda v: rank[v]) for k in ("openai", "openresponses")}


def profile_of(verdicts: Sequence[Verdicts]) -> Profile:
    """Which schema a server's answers follow, over all cases that ran."""
    seen = [v for v in verdicts if v]
    openai = bool(seen) and all(v.get("openai") in ("pass", "skipped") for v in seen)
    openresponses = bool(seen) and all(v.get("openresponses") == "pass" for v in seen)
    if openai and openresponses:
        return "both"
    return "openai" if openai else "openresponses" if openresponses else "neither"
