"""The public OpenResponses compliance suite's cases, as our own code, each stricter.

Every case keeps the suite's id and asserts at least what the suite asserts
(the final object parses as an OpenResponses ``ResponseResource``, has output,
has status ``completed``, ...). On top, every case runs our protocol validator
(event order, ``sequence_number``, ids, lifecycle), both schema profiles with
exact paths, and on streams the OpenAI SDK's own accumulator: ``stricter``
says what that adds and why it matters.

``verified`` says whether the id was read from the suite's published test list
(``src/lib/compliance-tests.ts`` of the openresponses repository) or named
from the spec's feature of the same name (WebSocket mode, compaction, assistant
``phase``, file input, ``previous_response_id``), whose suite source was not
available to read when this list was written.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from compat_asgi.conformance import schema, websocket
from compat_asgi.conformance.checks import check_responses, decode_events, responses_token, snippet
from compat_asgi.conformance.stored import Outcome
from compat_asgi.conformance.transport import Transport
from compat_asgi.validate import Violation, validate_responses_events

__all__ = ["Context", "SUITE", "SuiteCase", "create_and_check", "violation"]

SUITE_RULE = "openresponses"
_COMMON_STRICTER = (
    "also runs our protocol validator (streams: sequence_number, event order, output_index, item ids, one "
    "terminal event; objects: ids, statuses, usage), both schema profiles with exact paths, and on streams "
    "the OpenAI SDK accumulator: the public suite only parses the final object"
)
#: A 1x1 PNG, so the image case needs no network.
_PNG = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)
_PDF_TEXT = (
    b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n2 0 obj<</Type/Pages/Kids[3 0 R]/Count 1>>endobj\n"
    b"3 0 obj<</Type/Page/Parent 2 0 R/MediaBox[0 0 200 50]>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n"
)
_WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "Get the current weather for a location",
    "parameters": {
        "type": "object",
        "properties": {"location": {"type": "string", "description": "The city, e.g. San Francisco"}},
        "required": ["location"],
    },
}


@dataclass(frozen=True, slots=True)
class Context:
    transport: Transport
    model: str
    api_key: str | None
    timeout: float


@dataclass(frozen=True, slots=True)
class SuiteCase:
    id: str
    about: str
    stricter: str
    verified: bool
    run: Callable[[Context], Outcome]
    mode: str = "non-stream"


def violation(message: str, rule: str = SUITE_RULE) -> Violation:
    return Violation(rule, message)


def _msg(role: str, content: Any, **extra: Any) -> dict[str, Any]:
    return {"type": "message", "role": role, "content": content, **extra}


# --- the suite's own checks of the final object ------------------------------------


def _has_output(final: Mapping[str, Any]) -> list[Violation]:
    output = final.get("output")
    return [] if isinstance(output, list) and output else [violation("response has no output items")]


def _completed(final: Mapping[str, Any]) -> list[Violation]:
    status = final.get("status")
    return [] if status == "completed" else [violation(f"expected status 'completed', got {status!r}")]


def _has_type(kind: str) -> Callable[[Mapping[str, Any]], list[Violation]]:
    def check(final: Mapping[str, Any]) -> list[Violation]:
        output = final.get("output")
        found = any(isinstance(i, Mapping) and i.get("type") == kind for i in output or ())
        return [] if found else [violation(f"expected an output item of type {kind!r}, found none")]

    return check


Check = Callable[[Mapping[str, Any]], list[Violation]]


def create_and_check(ctx: Context, body: dict[str, Any], *, stream: bool, checks: tuple[Check, ...]) -> Outcome:
    """POST /responses, then our checks, both schemas, and the suite's own checks."""
    sent = {**body, "model": ctx.model, "stream": stream}
    ex = ctx.transport.request("POST", "/responses", sent, stream=stream, is_token=responses_token)
    checked = check_responses(ex, stream=stream)
    violations = list(checked.violations)
    evidence: Any
    if stream:
        events = decode_events(ex.body) if ex.status == 200 else []
        verdicts, found = schema.event_verdicts(events) if events else ({}, [])
        evidence = events
        if ex.status == 200 and not events:
            violations.append(violation("no streaming events received"))
    else:
        verdicts, found = schema.response_verdicts(checked.final) if checked.final is not None else ({}, [])
        evidence = ex.json() if ex.status != 200 else checked.final
        if ex.status != 200:
            evidence = {"status": ex.status, "body": snippet(ex.body, 2000)}
    violations += found
    if checked.final is not None:
        for check in checks:
            violations += check(checked.final)
    elif not violations:
        violations.append(violation("no final response object"))
    return Outcome(violations, ex, checked.sdk, request=sent, evidence=evidence, schema=verdicts or None)


def _simple(body: dict[str, Any], *checks: Check, stream: bool = False) -> Callable[[Context], Outcome]:
    return lambda ctx: create_and_check(ctx, body, stream=stream, checks=checks)


# --- cases beyond one create ------------------------------------------------------------


def _tool_calling_streaming(ctx: Context) -> Outcome:
    outcome = create_and_check(ctx, _TOOL_BODY, stream=True, checks=(_has_type("function_call"),))
    events = outcome.evidence if isinstance(outcome.evidence, list) else []
    types = [e.get("type") for e in events]

    def item_event(kind: str) -> bool:
        return any(
            e.get("type") == kind and isinstance(e.get("item"), Mapping) and e["item"].get("type") == "function_call"
            for e in events
        )

    if events:
        if not item_event("response.output_item.added"):
            outcome.violations.append(violation("no response.output_item.added with a function_call item"))
        for kind in ("response.function_call_arguments.delta", "response.function_call_arguments.done"):
            if kind not in types:
                outcome.violations.append(violation(f"no {kind} event"))
        if not item_event("response.output_item.done"):
            outcome.violations.append(violation("no response.output_item.done with a function_call item"))
    return outcome


def _previous_response_id(ctx: Context) -> Outcome:
    first_body = {"input": [_msg("user", "My name is Alice. Remember it.")], "store": True}
    first = create_and_check(ctx, first_body, stream=False, checks=(_completed,))
    if first.violations:
        return first
    assert isinstance(first.evidence, Mapping)
    rid = first.evidence.get("id")
    follow = {"input": [_msg("user", "What is my name?")], "previous_response_id": rid, "store": True}
    second = create_and_check(ctx, follow, stream=False, checks=(_has_output, _completed))
    final = second.evidence if isinstance(second.evidence, Mapping) else {}
    if not second.violations and final.get("previous_response_id") != rid:
        second.violations.append(
            violation(f"previous_response_id is {final.get('previous_response_id')!r}, the request chained {rid!r}", "echo")
        )
    # A server that ignores the chain accepts any id; one that follows it must refuse an unknown one.
    bogus = {"model": ctx.model, "input": "Hello.", "previous_response_id": "resp_conformance_does_not_exist"}
    ex = ctx.transport.request("POST", "/responses", bogus)
    if ex.status not in (400, 404):
        second.violations.append(
            violation(f"an unknown previous_response_id got HTTP {ex.status}, expected 400/404: the chain is not followed",
               "previous-response")
        )
    second.request = {"first": first_body, "follow_up": follow, "unknown_id": bogus}
    return second


def _compaction(ctx: Context) -> Outcome:
    body = {
        "model": ctx.model,
        "input": [
            _msg("user", "My name is Alice and I like sailing."),
            _msg("assistant", [{"type": "output_text", "text": "Nice to meet you, Alice."}]),
            _msg("user", "Summarise what you know about me."),
        ],
    }
    ex = ctx.transport.request("POST", "/responses/compact", body)
    out = Outcome([], ex, request=body)
    obj = ex.json()
    out.evidence = obj if ex.status == 200 else {"status": ex.status, "body": snippet(ex.body, 2000)}
    if ex.status != 200:
        out.violations.append(violation(f"POST /responses/compact: HTTP {ex.status}: {snippet(ex.body)}", "compaction"))
        return out
    if not isinstance(obj, Mapping):
        out.violations.append(violation("the compaction answer is not a JSON object", "compaction"))
        return out
    if obj.get("object") != "response.compaction":
        out.violations.append(violation(f"object is {obj.get('object')!r}, expected 'response.compaction'", "compaction"))
    for key, kind in (("id", str), ("created_at", int), ("output", list)):
        if not isinstance(obj.get(key), kind) or isinstance(obj.get(key), bool):
            out.violations.append(violation(f"{key}: expected {kind.__name__}, got {obj.get(key)!r}", "compaction"))
    listed = obj.get("output")
    output: list[Any] = listed if isinstance(listed, list) else []
    compacted = [i for i in output if isinstance(i, Mapping) and i.get("type") == "compaction"]
    if not compacted:
        out.violations.append(violation("output holds no item of type 'compaction'", "compaction"))
    for k, item in enumerate(compacted):
        if not isinstance(item.get("encrypted_content"), str) or not item["encrypted_content"]:
            out.violations.append(violation(f"compaction item {k} has no encrypted_content", "compaction"))
    sdk_found = schema.openai_compacted(obj)
    out.violations += [Violation(schema.OPENAI_RULE, m) for m in sdk_found or ()]
    if not out.violations:
        # The compacted window must be usable as the next request's input.
        again = {"model": ctx.model, "input": [*output, _msg("user", "What is my name?")], "store": False}
        follow = create_and_check(ctx, again, stream=False, checks=(_completed,))
        out.violations += follow.violations
        out.schema = schema.merge(follow.schema or {}, {"openai": "skipped" if sdk_found is None else "pass"})
        out.request = {"compact": body, "follow_up": again}
    return out


def _websocket(ctx: Context) -> Outcome:
    if not websocket.available():
        return Outcome(skip_reason="skipped (install compat-asgi[conformance] for the websockets client)")
    url = websocket.ws_url(ctx.transport.base_url, "/responses")
    turns: list[Mapping[str, Any]] = [
        {"type": "response.create", "model": ctx.model, "input": [_msg("user", "My name is Alice.")], "store": False},
    ]
    ex = websocket.run_turns(url, turns, api_key=ctx.api_key, timeout=ctx.timeout)
    out = Outcome([], None, request={"url": url, "messages": turns}, evidence=ex.turns)
    if ex.broken is not None:
        out.violations.append(Violation(*ex.broken))
        return out
    events = ex.turns[0]
    out.violations += validate_responses_events(events)
    verdicts, found = schema.event_verdicts(events)
    out.violations += found
    out.schema = verdicts
    final = events[-1].get("response") if events else None
    if not isinstance(final, Mapping):
        out.violations.append(violation("no final response object on the WebSocket", "websocket"))
    else:
        out.violations += _has_output(final) + _completed(final)
    return out


_TOOL_BODY = {"input": [_msg("user", "What's the weather like in San Francisco? Use get_weather.")], "tools": [_WEATHER_TOOL]}
_PHASE_BODY = {
    "input": [
        _msg("user", "Plan a short answer, then give it: what is 2 + 2?"),
        _msg("assistant", [{"type": "output_text", "text": "I will add the numbers."}], phase="commentary"),
        _msg("assistant", [{"type": "output_text", "text": "2 + 2 = 4."}], phase="final_answer"),
        _msg("user", "Say it again in words."),
    ]
}
_FILE_DATA = "data:application/pdf;base64," + base64.b64encode(_PDF_TEXT).decode()


def _phase_values(final: Mapping[str, Any]) -> list[Violation]:
    for k, item in enumerate(final.get("output") or ()):
        phase = item.get("phase") if isinstance(item, Mapping) and item.get("type") == "message" else None
        if phase is not None and phase not in ("commentary", "final_answer"):
            return [violation(f"output[{k}].phase is {phase!r}, expected 'commentary', 'final_answer' or absent")]
    return []


SUITE: tuple[SuiteCase, ...] = (
    SuiteCase("basic-response", "a user message item gets a completed response with output that parses as a "
              "ResponseResource", _COMMON_STRICTER, True,
              _simple({"input": [_msg("user", "Say hello in exactly 3 words.")]}, _has_output, _completed)),
    SuiteCase("streaming-response", "a streamed answer has events and ends completed",
              _COMMON_STRICTER + "; the suite never looks at sequence_number or event order", True,
              _simple({"input": [_msg("user", "Count from 1 to 5.")]}, _completed, stream=True), "stream"),
    SuiteCase("system-prompt", "a system message item in input is accepted; output, completed", _COMMON_STRICTER, True,
              _simple({"input": [_msg("system", "You are a pirate. Always respond in pirate speak."),
                                 _msg("user", "Say hello.")]}, _has_output, _completed)),
    SuiteCase("tool-calling", "a function tool gets a function_call output item", _COMMON_STRICTER, True,
              _simple(_TOOL_BODY, _has_output, _has_type("function_call"))),
    SuiteCase("tool-calling-streaming", "a streamed function call has output_item.added/done with a function_call "
              "item and function_call_arguments.delta/done events", _COMMON_STRICTER + "; ours also checks the "
              "deltas add up to the done arguments and item ids match", True, _tool_calling_streaming, "stream"),
    SuiteCase("image-input", "an input_image part (data URL) with text gets a completed answer",
              _COMMON_STRICTER + "; a data URL instead of a remote one, so the case needs no network", True,
              _simple({"input": [_msg("user", [
                  {"type": "input_text", "text": "What do you see in this image? Answer in one sentence."},
                  {"type": "input_image", "image_url": "data:image/png;base64," + _PNG},
              ])]}, _has_output, _completed)),
    SuiteCase("multi-turn", "user/assistant/user history gets a completed answer", _COMMON_STRICTER, True,
              _simple({"input": [_msg("user", "My name is Alice."),
                                 _msg("assistant", "Hello Alice! Nice to meet you. How can I help you today?"),
                                 _msg("user", "What is my name?")]}, _has_output, _completed)),
    SuiteCase("file-input", "an input_file part (PDF as file_data) with text gets a completed answer",
              _COMMON_STRICTER, False,
              _simple({"input": [_msg("user", [
                  {"type": "input_text", "text": "What is in this file? Answer in one sentence."},
                  {"type": "input_file", "filename": "empty.pdf", "file_data": _FILE_DATA},
              ])]}, _has_output, _completed)),
    SuiteCase("assistant-phase", "assistant history items carrying phase (commentary, final_answer) are accepted; "
              "any phase on output is one of those", _COMMON_STRICTER, False,
              _simple(_PHASE_BODY, _has_output, _completed, _phase_values)),
    SuiteCase("previous-response-id", "a stored response chained by previous_response_id gets a completed answer "
              "that echoes the id", "ours also sends an unknown previous_response_id, which must be refused (400/404): "
              "a server that ignores the chain passes the suite's case but not this one", False,
              _previous_response_id),
    SuiteCase("compaction", "POST /responses/compact returns a response.compaction object whose output holds a "
              "compaction item with encrypted_content", "ours also sends the compacted window back as the next "
              "request's input, which must be accepted and answered", False, _compaction),
    SuiteCase("websocket-response", "a response.create message on the /responses WebSocket gets the event stream "
              "as JSON text frames, ending with response.completed", "ours runs the full event-order validator and "
              "both schema profiles on the frames, over a real WebSocket client", False, _websocket, "stream"),
)
