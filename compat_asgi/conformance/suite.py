"""The public OpenResponses compliance suite's cases, as our own code, each stricter.

Every case keeps the suite's id and asserts at least what the suite asserts
(the final object parses as an OpenResponses ``ResponseResource``, has output,
has status ``completed``, ...). On top, every case runs our protocol validator
(event order, ``sequence_number``, ids, lifecycle), both schema profiles with
exact paths, and on streams the OpenAI SDK's own accumulator: ``stricter``
says what that adds and why it matters.

``verified`` says whether the id was read from the suite's published test list
(``src/lib/compliance-tests.ts`` of the openresponses repository) or named
from the spec's feature of the same name. Two versions of that list were read:
an older one (basic-response, streaming-response, system-prompt, tool-calling,
tool-calling-streaming, image-input, multi-turn) and a newer one, which drops
tool-calling-streaming (kept here: it was public) and adds
function-call-roundtrip, file-input, previous-response-id and two optional
cases, file-search and offline-web-search, that run only when configured
(a vector store id; a server with offline web search) and are skipped with
the reason otherwise, as the suite's own runner does. WebSocket mode,
compaction and assistant ``phase`` are in neither list: those ids are named
after the spec's features.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from compat_asgi.conformance import schema, websocket
from compat_asgi.conformance.checks import check_responses, decode_events, responses_token, snippet
from compat_asgi.conformance.stored import Outcome
from compat_asgi.conformance.transport import Transport
from compat_asgi.validate import Violation, validate_responses_events

__all__ = ["Context", "PDF_TITLE", "SKIP_FILE_SEARCH", "SKIP_WEB_SEARCH", "SUITE", "SuiteCase", "create_and_check", "violation"]

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
#: The title the file-input case's PDF shows on its one page.
PDF_TITLE = "Conformance Fixture"
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
    #: Runs the optional file-search case against this vector store; skipped without one.
    file_search_vector_store_id: str | None = None
    #: Runs the optional offline-web-search case; skipped unless the server is known to have it.
    offline_web_search: bool = False


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


def _echoes_chain(rid: Any) -> Check:
    def check(final: Mapping[str, Any]) -> list[Violation]:
        echoed = final.get("previous_response_id")
        if echoed == rid:
            return []
        return [violation(f"previous_response_id is {echoed!r}, the request chained {rid!r}", "echo")]

    return check


def _previous_response_id(ctx: Context) -> Outcome:
    # No `store` key, as in the suite: storing is the API's default, which a chain relies on.
    first = create_and_check(ctx, {"input": "Remember the code word marigold. Answer with only OK."}, stream=False,
                             checks=(_has_output, _completed))
    if first.violations:
        return first
    assert isinstance(first.evidence, Mapping)
    rid = first.evidence.get("id")
    follow = {"input": "Which code word did I ask you to remember?", "previous_response_id": rid}
    second = create_and_check(ctx, follow, stream=False, checks=(_has_output, _completed, _echoes_chain(rid)))
    # A server that ignores the chain accepts any id; one that follows it must refuse an unknown one.
    bogus = {"model": ctx.model, "input": "Hello.", "previous_response_id": "resp_conformance_does_not_exist"}
    ex = ctx.transport.request("POST", "/responses", bogus)
    if ex.status not in (400, 404):
        second.violations.append(
            violation(f"an unknown previous_response_id got HTTP {ex.status}, expected 400/404: the chain is not followed",
               "previous-response")
        )
    second.request = {"first": first.request, "follow_up": second.request, "unknown_id": bogus}
    return second


def _first_call(final: Mapping[str, Any]) -> Mapping[str, Any] | None:
    for item in final.get("output") or ():
        if isinstance(item, Mapping) and item.get("type") == "function_call":
            return item
    return None


def _forced_call(name: str) -> Check:
    """The call a named ``tool_choice`` demands: there, with a call_id, for that tool, with object arguments."""

    def check(final: Mapping[str, Any]) -> list[Violation]:
        call = _first_call(final)
        if call is None or not isinstance(call.get("call_id"), str) or not call["call_id"]:
            return [violation("the first response has no function_call with a call_id")]
        out: list[Violation] = []
        if call.get("name") != name:
            out.append(violation(f"tool_choice named {name!r}, the call is to {call.get('name')!r}", "tool-choice"))
        try:
            arguments = orjson.loads(call.get("arguments") or b"")
        except (orjson.JSONDecodeError, TypeError):
            arguments = None
        if not isinstance(arguments, dict):
            out.append(violation(f"the call's arguments are not a JSON object: {snippet(str(call.get('arguments')).encode())}",
                                 "function-call"))
        return out

    return check


def _function_call_roundtrip(ctx: Context) -> Outcome:
    first_body = {"input": "Use the weather tool to get the temperature in San Francisco.", "tools": [_WEATHER_TOOL],
                  "tool_choice": {"type": "function", "name": "get_weather"}}
    first = create_and_check(ctx, first_body, stream=False, checks=(_has_output, _forced_call("get_weather")))
    if first.violations:
        return first
    assert isinstance(first.evidence, Mapping)
    call = _first_call(first.evidence)
    assert call is not None
    rid = first.evidence.get("id")
    # Only the tool's result: the call itself must come from the chain, as the suite sends it.
    follow = {"previous_response_id": rid,
              "input": [{"type": "function_call_output", "call_id": call["call_id"], "output": "64 degrees and clear"}]}
    second = create_and_check(ctx, follow, stream=False, checks=(_has_output, _completed, _echoes_chain(rid)))
    second.request = {"first": first.request, "follow_up": second.request}
    return second


# --- the suite's optional cases: skipped, with the reason, unless configured ---------------

SKIP_FILE_SEARCH = "skipped: optional, needs --file-search-vector-store-id ID (a vector store the server can search)"
SKIP_WEB_SEARCH = "skipped: optional, needs --enable-offline-web-search (a server whose web_search works offline)"


def _hosted_calls(kind: str, final: Mapping[str, Any], out: list[Violation]) -> list[tuple[int, Mapping[str, Any]]]:
    """The output items of ``kind``; one not ``completed`` adds a violation to ``out``."""
    calls = [(k, i) for k, i in enumerate(final.get("output") or ()) if isinstance(i, Mapping) and i.get("type") == kind]
    for k, item in calls:
        if item.get("status") != "completed":
            out.append(violation(f"output[{k}].status is {item.get('status')!r}, expected 'completed'", "hosted-tool"))
    return calls


def _file_search_results(final: Mapping[str, Any]) -> list[Violation]:
    """Each call finished, with its queries, and the results ``include`` asked for."""
    out: list[Violation] = []
    for k, item in _hosted_calls("file_search_call", final, out):
        queries = item.get("queries")
        if not isinstance(queries, list) or not all(isinstance(q, str) for q in queries):
            out.append(violation(f"output[{k}].queries is not a list of strings: {queries!r}", "hosted-tool"))
        results = item.get("results")
        if not isinstance(results, list) or not all(isinstance(r, Mapping) for r in results):
            out.append(violation(f"output[{k}].results is {snippet(orjson.dumps(results))}, expected a list of "
                                 "objects: include asked for file_search_call.results", "include"))
    return out


def _web_search_sources(final: Mapping[str, Any]) -> list[Violation]:
    """Each call finished, says what it did, and a search carries the sources ``include`` asked for."""
    out: list[Violation] = []
    for k, item in _hosted_calls("web_search_call", final, out):
        action = item.get("action")
        if not isinstance(action, Mapping) or not isinstance(action.get("type"), str):
            out.append(violation(f"output[{k}].action is not an object with a type: {snippet(orjson.dumps(action))}",
                                 "hosted-tool"))
        elif action["type"] == "search" and not isinstance(action.get("sources"), list):
            out.append(violation(f"output[{k}].action.sources is {action.get('sources')!r}, expected a list: include "
                                 "asked for web_search_call.action.sources", "include"))
    return out


def _file_search(ctx: Context) -> Outcome:
    store_id = ctx.file_search_vector_store_id
    if not store_id:
        return Outcome(skip_reason=SKIP_FILE_SEARCH)
    body = {"input": "Search the vector store for something relevant and summarise one result in a sentence.",
            "tools": [{"type": "file_search", "vector_store_ids": [store_id]}],
            "tool_choice": {"type": "file_search"}, "include": ["file_search_call.results"]}
    return create_and_check(ctx, body, stream=False,
                            checks=(_has_output, _has_type("file_search_call"), _file_search_results))


def _offline_web_search(ctx: Context) -> Outcome:
    if not ctx.offline_web_search:
        return Outcome(skip_reason=SKIP_WEB_SEARCH)
    body = {"input": "Find the most relevant cached result about the OpenResponses specification.",
            "tools": [{"type": "web_search", "external_web_access": False}],
            "tool_choice": {"type": "web_search"}, "include": ["web_search_call.action.sources"]}
    outcome = create_and_check(ctx, body, stream=False,
                               checks=(_has_output, _has_type("web_search_call"), _web_search_sources))
    # The SDK's hosted tool_choice knows web_search_preview, not the spec's web_search that this case
    # sends: echoing the request's own choice stays a recorded openai-profile verdict, not a failure.
    outcome.violations = [v for v in outcome.violations
                          if not (v.rule == schema.OPENAI_RULE and v.message.startswith("tool_choice"))]
    return outcome


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


def _pdf(title: str) -> bytes:
    """A one-page PDF showing ``title`` in Helvetica, with a correct xref table, so real PDF readers open it."""
    text = b"BT /F1 12 Tf 72 72 Td (Title: " + title.encode("ascii") + b") Tj ET"
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 300 144] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n%s\nendstream" % (len(text), text),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for n, obj in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (n, obj)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


_FILE_DATA = "data:application/pdf;base64," + base64.b64encode(_pdf(PDF_TITLE)).decode()


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
    SuiteCase("file-input", "an input_file part (a one-page PDF with a title, as file_data) with text gets a "
              "completed answer", _COMMON_STRICTER, True,
              _simple({"input": [_msg("user", [
                  {"type": "input_text", "text": "Read the attached PDF and answer with its title only."},
                  {"type": "input_file", "filename": "conformance-fixture.pdf", "file_data": _FILE_DATA},
              ])]}, _has_output, _completed)),
    SuiteCase("assistant-phase", "assistant history items carrying phase (commentary, final_answer) are accepted; "
              "any phase on output is one of those", _COMMON_STRICTER, False,
              _simple(_PHASE_BODY, _has_output, _completed, _phase_values)),
    SuiteCase("previous-response-id", "a remember-then-recall pair: the first response (stored by default, no "
              "store key) is chained by previous_response_id and the second gets a completed answer with output",
              "ours also checks the first turn completed, the second echoes the id it chained, and sends an unknown "
              "previous_response_id, which must be refused (400/404): a server that ignores the chain passes the "
              "suite's case but not this one", True, _previous_response_id),
    SuiteCase("function-call-roundtrip", "a named tool_choice forces a get_weather function_call with a call_id; "
              "its function_call_output, sent alone with previous_response_id, gets a completed answer with output",
              "ours also checks the call is to the named tool, its arguments parse as a JSON object, the second "
              "turn echoes previous_response_id, and both turns pass our validator and both schema profiles: the "
              "suite checks the second turn's status and output only", True, _function_call_roundtrip),
    SuiteCase("file-search", "optional, runs only with --file-search-vector-store-id: a file_search tool on that "
              "vector store, forced by tool_choice, with include file_search_call.results, gets a file_search_call "
              "output item", _COMMON_STRICTER + "; ours also checks each call completed with its queries and carries "
              "the results include asked for", True, _file_search),
    SuiteCase("offline-web-search", "optional, runs only with --enable-offline-web-search: a web_search tool with "
              "external_web_access false, forced by tool_choice, with include web_search_call.action.sources, gets "
              "a web_search_call output item", _COMMON_STRICTER + "; ours also checks each call completed, says its "
              "action, and a search carries the sources include asked for (an echoed tool_choice {type: web_search}, "
              "which the SDK's models do not know, is recorded in the openai profile, not failed)", True,
              _offline_web_search),
    SuiteCase("compaction", "POST /responses/compact returns a response.compaction object whose output holds a "
              "compaction item with encrypted_content", "ours also sends the compacted window back as the next "
              "request's input, which must be accepted and answered", False, _compaction),
    SuiteCase("websocket-response", "a response.create message on the /responses WebSocket gets the event stream "
              "as JSON text frames, ending with response.completed", "ours runs the full event-order validator and "
              "both schema profiles on the frames, over a real WebSocket client", False, _websocket, "stream"),
)
