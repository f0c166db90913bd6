"""Protocol checks of one exchange, and the final object a scenario then judges.

Order matters: the report quotes the first violation, so transport and HTTP
problems come first, then the validator (the protocol rules of the README),
then the SDK replay; the scenario's own expectations are appended by the runner.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from compat_asgi.conformance import sdk
from compat_asgi.conformance.report import SdkCheck
from compat_asgi.conformance.transport import Exchange
from compat_asgi.validate import (
    Violation,
    parse_sse,
    validate_chat_completion,
    validate_chat_sse,
    validate_response_object,
    validate_responses_sse,
)

__all__ = [
    "Checked", "chat_token", "check_chat", "check_error", "check_responses", "decode_events", "responses_token",
    "snippet",
]

_TOKEN_EVENTS = frozenset(
    {
        "response.output_text.delta",
        "response.refusal.delta",
        "response.function_call_arguments.delta",
        "response.reasoning_text.delta",
        "response.reasoning_summary_text.delta",
    }
)
_TERMINALS = frozenset({"response.completed", "response.incomplete", "response.failed"})


@dataclass(slots=True)
class Checked:
    violations: list[Violation]
    #: The Response / chat.completion the scenario judges; None if there is none.
    final: dict[str, Any] | None
    sdk: SdkCheck = "n/a"


def responses_token(event: Mapping[str, Any]) -> bool:
    delta = event.get("delta")
    return event.get("type") in _TOKEN_EVENTS and isinstance(delta, str) and delta != ""


def chat_token(chunk: Mapping[str, Any]) -> bool:
    choices = chunk.get("choices")
    for choice in choices if isinstance(choices, list) else ():
        delta = choice.get("delta") if isinstance(choice, Mapping) else None
        if not isinstance(delta, Mapping):
            continue
        if any(delta.get(key) for key in ("content", "refusal", "reasoning_content", "reasoning")):
            return True
        calls = delta.get("tool_calls")
        for call in calls if isinstance(calls, list) else ():
            function = call.get("function") if isinstance(call, Mapping) else None
            if isinstance(function, Mapping) and function.get("arguments"):
                return True
    return False


def snippet(body: bytes, limit: int = 200) -> str:
    text = " ".join(body[:limit].decode("utf-8", "replace").split())
    return text + ("..." if len(body) > limit else "")


def _head(ex: Exchange, stream: bool) -> list[Violation] | None:
    """Problems that make the body meaningless to validate; None when it is worth validating."""
    if ex.status != 200:
        return [Violation("http-status", f"HTTP {ex.status}, expected 200: {snippet(ex.body)}")]
    if stream and not ex.is_event_stream:
        return [Violation("content-type", f"content-type {ex.content_type!r} for stream: true, expected text/event-stream")]
    if not stream and ex.is_event_stream:
        return [Violation("content-type", "an event stream for a request without stream: true")]
    return None


def _broken(ex: Exchange) -> list[Violation]:
    return [] if ex.broken is None else [Violation(*ex.broken)]


def decode_events(body: bytes) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for _, data in parse_sse(body):
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            continue  # [DONE] or garbage: the validator has reported it
        if isinstance(obj, dict):
            out.append(obj)
    return out


def _sdk_status(found: list[Violation] | None) -> SdkCheck:
    return "skipped" if found is None else "fail" if found else "pass"


def check_responses(ex: Exchange, *, stream: bool) -> Checked:
    head = _head(ex, stream)
    if head is not None:
        return Checked(head, None)
    if not stream:
        obj = ex.json()
        return Checked(_broken(ex) + validate_response_object(obj), obj if isinstance(obj, dict) else None)
    violations = _broken(ex) + validate_responses_sse(ex.body)
    events = decode_events(ex.body)
    final: dict[str, Any] | None = None
    for event in events:
        response = event.get("response")
        if event.get("type") in _TERMINALS and isinstance(response, dict):
            final = response
    found = sdk.responses_stream(events)
    return Checked(violations + (found or []), final, _sdk_status(found))


def check_chat(ex: Exchange, *, stream: bool) -> Checked:
    head = _head(ex, stream)
    if head is not None:
        return Checked(head, None)
    if not stream:
        obj = ex.json()
        return Checked(_broken(ex) + validate_chat_completion(obj), obj if isinstance(obj, dict) else None)
    violations = _broken(ex) + validate_chat_sse(ex.body)
    chunks = decode_events(ex.body)
    final = assemble_chat(chunks)
    found = sdk.chat_stream(chunks, final)
    return Checked(violations + (found or []), final, _sdk_status(found))


def assemble_chat(chunks: list[dict[str, Any]]) -> dict[str, Any]:
    """The ``chat.completion`` a client concatenates from the chunks (choice 0).

    Deliberately forgiving: malformed chunks are the validator's to report;
    this only gives the scenario something to judge.
    """
    text: list[str] = []
    calls: dict[int, dict[str, Any]] = {}
    finish: Any = None
    usage: Any = None
    for chunk in chunks:
        if chunk.get("usage") is not None:
            usage = chunk["usage"]
        choices = chunk.get("choices")
        for choice in choices if isinstance(choices, list) else ():
            if not isinstance(choice, Mapping) or choice.get("index") != 0:
                continue
            finish = choice.get("finish_reason") or finish
            delta = choice.get("delta")
            if not isinstance(delta, Mapping):
                continue
            if isinstance(delta.get("content"), str):
                text.append(delta["content"])
            deltas = delta.get("tool_calls")
            for call in deltas if isinstance(deltas, list) else ():
                _merge_call(calls, call)
    message: dict[str, Any] = {"role": "assistant", "content": "".join(text) if text else None}
    if calls:
        message["tool_calls"] = [calls[k] for k in sorted(calls)]
    return {
        "object": "chat.completion",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": usage,
    }


def _merge_call(calls: dict[int, dict[str, Any]], call: Any) -> None:
    index = call.get("index") if isinstance(call, Mapping) else None
    if not isinstance(index, int):
        return
    slot = calls.setdefault(index, {"id": None, "type": "function", "function": {"name": None, "arguments": ""}})
    if isinstance(call.get("id"), str):
        slot["id"] = call["id"]
    function = call.get("function")
    if isinstance(function, Mapping):
        if isinstance(function.get("name"), str):
            slot["function"]["name"] = function["name"]
        if isinstance(function.get("arguments"), str):
            slot["function"]["arguments"] += function["arguments"]


def check_error(ex: Exchange, *, param: str) -> list[Violation]:
    """OpenAI's 400 envelope, whose ``param`` names the offending field (starts with ``param``)."""

    def bad(message: str) -> list[Violation]:
        return [Violation("error-shape", message)]

    if ex.status != 400:
        return bad(f"HTTP {ex.status}, expected 400 for an invalid request: {snippet(ex.body)}")
    if ex.is_event_stream:
        return bad("an invalid request must be refused with a JSON 400, not an event stream")
    obj = ex.json()
    error = obj.get("error") if isinstance(obj, Mapping) else None
    if not isinstance(error, Mapping):
        return bad(f"400 body is not an {{\"error\": {{...}}}} envelope: {snippet(ex.body)}")
    missing = [key for key in ("message", "type", "param", "code") if key not in error]
    if missing:
        return bad(f"error envelope lacks {missing}: {snippet(ex.body)}")
    if not isinstance(error["message"], str) or not error["message"]:
        return bad(f"error.message is not a non-empty string: {error['message']!r}")
    if not isinstance(error["type"], str) or not error["type"]:
        return bad(f"error.type is not a non-empty string: {error['type']!r}")
    got = error["param"]
    if not isinstance(got, str) or not got.startswith(param):
        return bad(f"error.param is {got!r}; it should name the invalid field ({param!r})")
    return []
