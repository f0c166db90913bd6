"""The fixed scenario suite: request bodies and what each answer must show.

Pure data and pure checks. Prompts are written so a real model does the
expected thing (names the tool it should call, asks for more text than the
token limit allows) and so the demo backend does it deterministically.
The protocol itself is judged elsewhere (validator, SDK replay); here only
the scenario's point: a call was made, the status says truncated, ...
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from compat_asgi.validate import Violation

__all__ = ["Api", "Mode", "MODES", "Scenario", "SCENARIOS", "WEATHER_TOOL", "TIME_TOOL", "TRUNCATE_AT"]

Api = Literal["responses", "chat"]
Mode = Literal["stream", "non-stream"]
MODES: tuple[Mode, ...] = ("stream", "non-stream")

Body = Callable[[str, bool], dict[str, Any]]  # (model, stream) -> request body
Expect = Callable[[Mapping[str, Any]], list[Violation]]

#: OpenAI refuses max_output_tokens below 16, so that is the limit we ask for.
TRUNCATE_AT = 16

_WEATHER_PARAMS = {
    "type": "object",
    "properties": {"location": {"type": "string", "description": "City name"}},
    "required": ["location"],
    "additionalProperties": False,
}
_TIME_PARAMS = {
    "type": "object",
    "properties": {"tz": {"type": "string", "description": "IANA time zone"}},
    "required": ["tz"],
    "additionalProperties": False,
}
WEATHER_TOOL = {"type": "function", "name": "get_weather", "description": "Current weather in a city.", "parameters": _WEATHER_PARAMS}
TIME_TOOL = {"type": "function", "name": "get_time", "description": "Current time in a time zone.", "parameters": _TIME_PARAMS}
_CITY_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
    "required": ["city", "population"],
    "additionalProperties": False,
}

_PLAIN = "Say hello in one short sentence."
_WEATHER_PROMPT = "What is the weather in Paris? Use get_weather."
_PARALLEL_PROMPT = "What are the weather and the time in Paris? Call get_weather and get_time, both at once."
_LONG_PROMPT = "Write a long story, at least three hundred words, about a lighthouse keeper and the sea at night."
_ROUND_TRIP_CALL = "call_conformance_0"


@dataclass(frozen=True, slots=True)
class Scenario:
    api: Api
    name: str
    about: str
    body: Body
    expect: Expect | None = None
    #: Invalid-request scenarios: the 400's ``param`` must start with this.
    error_param: str | None = None


def _chat_tool(tool: Mapping[str, Any]) -> dict[str, Any]:
    return {"type": "function", "function": {k: v for k, v in tool.items() if k != "type"}}


def _responses(**fields: Any) -> Body:
    return lambda model, stream: {"model": model, **fields, "stream": stream}


def _chat(**fields: Any) -> Body:
    return lambda model, stream: {"model": model, **fields, "stream": stream}


def _user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def _all(*checks: Expect) -> Expect:
    return lambda final: [v for check in checks for v in check(final)]


def _v(rule: str, message: str) -> list[Violation]:
    return [Violation(rule, message)]


# --- Responses expectations --------------------------------------------------


def _status(want: str, rule: str = "status") -> Expect:
    def check(final: Mapping[str, Any]) -> list[Violation]:
        got = final.get("status")
        return [] if got == want else _v(rule, f"response status is {got!r}, expected {want!r}")

    return check


def _output(final: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    output = final.get("output")
    return [item for item in output if isinstance(item, Mapping)] if isinstance(output, list) else []


def _text(final: Mapping[str, Any]) -> str:
    return "".join(
        part["text"]
        for item in _output(final)
        if item.get("type") == "message" and isinstance(item.get("content"), list)
        for part in item["content"]
        if isinstance(part, Mapping) and part.get("type") == "output_text" and isinstance(part.get("text"), str)
    )


def _has_text(rule: str = "text") -> Expect:
    def check(final: Mapping[str, Any]) -> list[Violation]:
        return [] if _text(final).strip() else _v(rule, "no assistant message with output_text in the output")

    return check


def _echoes(key: str, value: Any) -> Expect:
    def check(final: Mapping[str, Any]) -> list[Violation]:
        got = final.get(key)
        return [] if got == value else _v("echo", f"response.{key} is {got!r}, the request said {value!r}")

    return check


def _calls_named(names: list[str], rule: str) -> Callable[[list[tuple[Any, Any]]], list[Violation]]:
    """Checks (name, arguments) pairs: every wanted name called, with a JSON object."""

    def check(calls: list[tuple[Any, Any]]) -> list[Violation]:
        got = [name for name, _ in calls]
        missing = [name for name in names if name not in got]
        if missing:
            return _v(rule, f"expected calls to {names}, got {got or 'none'}")
        for name, args in calls:
            if not isinstance(args, str) or not isinstance(_json(args), dict):
                return _v(rule, f"{name} arguments are not a JSON object: {args!r}")
        return []

    return check


def _function_calls(names: list[str], rule: str) -> Expect:
    inner = _calls_named(names, rule)
    return lambda final: inner(
        [(item.get("name"), item.get("arguments")) for item in _output(final) if item.get("type") == "function_call"]
    )


def _structured(text_of: Callable[[Mapping[str, Any]], str | None]) -> Expect:
    def check(final: Mapping[str, Any]) -> list[Violation]:
        text = text_of(final)
        data = _json(text) if isinstance(text, str) else None
        if not isinstance(data, dict):
            return _v("structured-output", f"output is not a JSON object: {text!r}")
        if not isinstance(data.get("city"), str) or type(data.get("population")) is not int:
            return _v("structured-output", f"output does not fit the schema (city: string, population: integer): {text!r}")
        return []

    return check


def _truncated(final: Mapping[str, Any]) -> list[Violation]:
    status, details = final.get("status"), final.get("incomplete_details")
    reason = details.get("reason") if isinstance(details, Mapping) else None
    if status != "incomplete" or reason != "max_output_tokens":
        return _v(
            "truncation",
            f"max_output_tokens={TRUNCATE_AT} on a long answer gave status {status!r} with incomplete_details"
            f" {details!r}; expected 'incomplete' with reason 'max_output_tokens'",
        )
    messages = [item for item in _output(final) if item.get("type") == "message"]
    if messages and messages[-1].get("status") != "incomplete":
        return _v("truncation", f"the cut message has status {messages[-1].get('status')!r}, expected 'incomplete'")
    return []


def _usage_counts(inp: str, outp: str) -> Expect:
    def check(final: Mapping[str, Any]) -> list[Violation]:
        usage = final.get("usage")
        if not isinstance(usage, Mapping):
            return _v("usage", f"no usage object: {usage!r}")
        counts = {key: usage.get(key) for key in (inp, outp)}
        if not all(type(n) is int and n > 0 for n in counts.values()):
            return _v("usage", f"usage counts should be positive ints: {counts}")
        return []

    return check


# --- chat expectations ---------------------------------------------------------


def _message(final: Mapping[str, Any]) -> Mapping[str, Any]:
    choices = final.get("choices")
    first = choices[0] if isinstance(choices, list) and choices else None
    message = first.get("message") if isinstance(first, Mapping) else None
    return message if isinstance(message, Mapping) else {}


def _chat_content(final: Mapping[str, Any]) -> str | None:
    content = _message(final).get("content")
    return content if isinstance(content, str) else None


def _finish(want: str, rule: str = "finish-reason") -> Expect:
    def check(final: Mapping[str, Any]) -> list[Violation]:
        choices = final.get("choices")
        first = choices[0] if isinstance(choices, list) and choices else None
        got = first.get("finish_reason") if isinstance(first, Mapping) else None
        return [] if got == want else _v(rule, f"finish_reason is {got!r}, expected {want!r}")

    return check


def _chat_text(final: Mapping[str, Any]) -> list[Violation]:
    return [] if (_chat_content(final) or "").strip() else _v("text", "the assistant message has no content")


def _chat_calls(names: list[str], rule: str) -> Expect:
    inner = _calls_named(names, rule)

    def pairs(final: Mapping[str, Any]) -> list[tuple[Any, Any]]:
        calls = _message(final).get("tool_calls")
        out = []
        for call in calls if isinstance(calls, list) else ():
            function = call.get("function") if isinstance(call, Mapping) else None
            if isinstance(function, Mapping):
                out.append((function.get("name"), function.get("arguments")))
        return out

    return lambda final: inner(pairs(final))


def _json(text: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return None


def _chat_usage_body(model: str, stream: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "messages": _user("Count from one to five."), "stream": stream}
    if stream:  # OpenAI refuses stream_options on a non-streamed request
        body["stream_options"] = {"include_usage": True}
    return body


_TEXT_FORMAT = {"format": {"type": "json_schema", "name": "city", "schema": _CITY_SCHEMA, "strict": True}}
_RESPONSE_FORMAT = {"type": "json_schema", "json_schema": {"name": "city", "schema": _CITY_SCHEMA, "strict": True}}
_INSTRUCTIONS = "Answer in one short sentence."

RESPONSES: tuple[Scenario, ...] = (
    Scenario("responses", "plain_text", "a string input gets a completed text answer",
             _responses(input=_PLAIN), _all(_status("completed"), _has_text())),
    Scenario("responses", "multi_turn_items", "an item-list conversation (typed and shorthand messages)",
             _responses(input=[
                 {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "My name is Ada."}]},
                 {"role": "assistant", "content": "Nice to meet you, Ada."},
                 {"role": "user", "content": "What is my name?"},
             ]),
             _all(_status("completed"), _has_text())),
    Scenario("responses", "instructions", "instructions are honoured and echoed",
             _responses(instructions=_INSTRUCTIONS, input="Hello there."),
             _all(_status("completed"), _has_text(), _echoes("instructions", _INSTRUCTIONS))),
    Scenario("responses", "function_call", "a prompt naming a tool gets a function_call item",
             _responses(input=_WEATHER_PROMPT, tools=[WEATHER_TOOL]),
             _all(_status("completed"), _function_calls(["get_weather"], "tool-call"))),
    Scenario("responses", "parallel_tool_calls", "two named tools get two function_call items, none dropped",
             _responses(input=_PARALLEL_PROMPT, tools=[WEATHER_TOOL, TIME_TOOL], parallel_tool_calls=True),
             _all(_status("completed"), _function_calls(["get_weather", "get_time"], "parallel-calls"))),
    Scenario("responses", "tool_output_round_trip", "function_call + function_call_output items get an answer",
             _responses(tools=[WEATHER_TOOL], input=[
                 {"role": "user", "content": _WEATHER_PROMPT},
                 {"type": "function_call", "call_id": _ROUND_TRIP_CALL, "name": "get_weather",
                  "arguments": '{"location":"Paris"}'},
                 {"type": "function_call_output", "call_id": _ROUND_TRIP_CALL, "output": '{"celsius":18,"sky":"sunny"}'},
             ]),
             _all(_status("completed"), _has_text("round-trip"))),
    Scenario("responses", "structured_output", "text.format json_schema gets JSON that fits",
             _responses(input="Describe Paris as JSON.", text=_TEXT_FORMAT),
             _all(_status("completed"), _structured(_text))),
    Scenario("responses", "truncation", f"max_output_tokens={TRUNCATE_AT} gives incomplete / max_output_tokens",
             _responses(input=_LONG_PROMPT, max_output_tokens=TRUNCATE_AT), _truncated),
    Scenario("responses", "usage", "usage counts input and output tokens",
             _responses(input="Count from one to five."),
             _all(_status("completed"), _usage_counts("input_tokens", "output_tokens"))),
    Scenario("responses", "invalid_request", "a bad field gets a 400 envelope naming it in param",
             _responses(input="hi", temperature="hot"), error_param="temperature"),
)

CHAT: tuple[Scenario, ...] = (
    Scenario("chat", "plain_text", "a user message gets a text answer with finish_reason stop",
             _chat(messages=_user(_PLAIN)), _all(_finish("stop"), _chat_text)),
    Scenario("chat", "tool_call", "a prompt naming a tool gets a tool call",
             _chat(messages=_user(_WEATHER_PROMPT), tools=[_chat_tool(WEATHER_TOOL)]),
             _all(_finish("tool_calls"), _chat_calls(["get_weather"], "tool-call"))),
    Scenario("chat", "parallel_tool_calls", "two named tools get two tool calls, none dropped",
             _chat(messages=_user(_PARALLEL_PROMPT), tools=[_chat_tool(WEATHER_TOOL), _chat_tool(TIME_TOOL)],
                   parallel_tool_calls=True),
             _all(_finish("tool_calls"), _chat_calls(["get_weather", "get_time"], "parallel-calls"))),
    Scenario("chat", "json_schema", "response_format json_schema gets JSON that fits",
             _chat(messages=_user("Describe Paris as JSON."), response_format=_RESPONSE_FORMAT),
             _all(_finish("stop"), _structured(_chat_content))),
    Scenario("chat", "truncation", f"max_tokens={TRUNCATE_AT} on a long answer gives finish_reason length",
             _chat(messages=_user(_LONG_PROMPT), max_tokens=TRUNCATE_AT), _finish("length", "truncation")),
    Scenario("chat", "usage", "usage is reported (streams ask for it with stream_options)",
             _chat_usage_body, _usage_counts("prompt_tokens", "completion_tokens")),
    Scenario("chat", "invalid_request", "a bad message role gets a 400 envelope naming it in param",
             _chat(messages=[{"role": "nonsense", "content": "hi"}]), error_param="messages"),
)

SCENARIOS: dict[Api, tuple[Scenario, ...]] = {"responses": RESPONSES, "chat": CHAT}
