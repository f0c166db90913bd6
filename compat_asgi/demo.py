"""A small, deterministic OpenAI chat-completions server as a raw ASGI app.

It is the default backend of ``compat-asgi serve`` and the stand-in for a real
model in tests and examples, so on the wire it behaves like llama.cpp, vLLM or
OpenAI: same envelopes, same chunk shapes, truly incremental streaming. What
it says is fixed by the request alone, so tests can assert exact text.

Routes: ``POST /v1/chat/completions``, ``GET /v1/models``,
``GET /v1/models/{id}``. Tokens are whitespace-separated words (or, for JSON
output and tool arguments, the pieces they are streamed in).

What it answers (``<text>`` is the last user message, whitespace-normalised,
image parts as ``[image]``, ``nothing`` if empty):

- plain: ``Hello! You said: <text>. This is the compat-asgi demo model
  answering deterministically.``
- after tool results: ``The tool <name> returned: <output>.`` per trailing
  ``tool`` message, joined by a space;
- models whose name contains ``reasoning`` first think
  ``The user said <N> words; I will answer politely.``
- tool calls (a tool named in ``<text>``, or ``tool_choice``) carry
  arguments valid for the tool's schema: required keys, enums, whole numbers
  where they fit; a shell tool's ``cmd``/``command`` is
  ``echo hello-from-compat-asgi``, and ``apply_patch`` gets a patch in the
  Codex format adding ``hello.txt`` (or the relative file named in
  ``<text>``), and a JavaScript ``exec`` tool (Codex's code mode) a script
  running that command, so a coding agent runs them for real.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import re
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from dataclasses import dataclass
from typing import Any, Final

import orjson

from compat_asgi.errors import (
    CompatError,
    InvalidRequest,
    MethodNotAllowed,
    NotFound,
    RequestTooLarge,
)

__all__ = ["DemoChatApp", "create_demo_app", "DEMO_MODEL_IDS", "CREATED"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

#: Fixed ``created`` timestamp, so identical requests give identical bytes.
CREATED: Final = 1_700_000_000
DEMO_MODEL_IDS: Final = ("demo", "demo-reasoning")
MAX_BODY_BYTES: Final = 1024 * 1024
#: Tool arguments and JSON answers are streamed in this many pieces, so
#: clients must concatenate rather than parse each delta.
JSON_PIECES: Final = 3
#: Guards recursive ``$ref`` schemas; deeper values become ``null``.
MAX_SCHEMA_DEPTH: Final = 12

_CHAT_PATH: Final = "/v1/chat/completions"
_MODELS_PATH: Final = "/v1/models"
_ROLES: Final = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
_PLACE_KEYS: Final = frozenset({"location", "city"})
_PLACE_RE: Final = re.compile(r"\bin\s+([^\W\d_][\w'-]*)", re.IGNORECASE)
#: A command the demo asks a coding agent's shell tool (Codex's
#: ``exec_command``, ``shell``) to run: harmless, and its output is recognisable.
DEMO_COMMAND: Final = "echo hello-from-compat-asgi"
_COMMAND_KEYS: Final = frozenset({"cmd", "command"})
_NAMESPACE_SEPARATOR: Final = "__"
#: Codex's code mode (its newest models) offers one freeform tool, ``exec``,
#: that runs JavaScript calling the other tools; the demo's script runs the
#: same harmless command through it and prints the result.
_SCRIPT_TOOLS: Final = frozenset({"exec"})
DEMO_SCRIPT: Final = f"text(await tools.exec_command({{cmd: {DEMO_COMMAND!r}}}));"
#: Tools that take a patch in the Codex ``apply_patch`` format, and the
#: (string) parameters the patch goes in: ``input`` for the freeform tool.
_PATCH_TOOLS: Final = frozenset({"apply_patch"})
_PATCH_KEYS: Final = frozenset({"input", "patch"})
DEMO_PATCH_FILE: Final = "hello.txt"
DEMO_PATCH_LINE: Final = "hello from compat-asgi"
# A relative path named in the prompt ("create notes/todo.md"): word
# segments only, so neither "/etc/passwd" nor "../x" can be written.
_FILE_RE: Final = re.compile(r"(?<![\w/.-])((?:[\w-]+/)*[\w-]+\.[A-Za-z][A-Za-z0-9]{0,7})(?![\w/.-])")
_STRING_FORMATS: Final = {
    "date-time": "2023-11-14T22:13:20Z",
    "date": "2023-11-14",
    "time": "22:13:20",
    "email": "demo@example.com",
    "uri": "https://example.com",
    "url": "https://example.com",
    "uuid": "00000000-0000-4000-8000-000000000000",
    "uri-reference": "https://example.com",
    "iri": "https://example.com",
    "iri-reference": "https://example.com",
    "hostname": "example.com",
    "idn-hostname": "example.com",
    "idn-email": "demo@example.com",
    "ipv4": "192.0.2.1",
    "ipv6": "2001:db8::1",
    "duration": "P1D",
    "json-pointer": "/example",
    "relative-json-pointer": "0",
    "regex": "^example$",
}
_PART_PLACEHOLDERS: Final = {
    "image_url": "[image]",
    "input_image": "[image]",
    "input_audio": "[audio]",
    "file": "[file]",
}
_JSON_HEADERS: Final = [(b"content-type", b"application/json")]
_SSE_HEADERS: Final = [
    (b"content-type", b"text/event-stream"),
    # Proxies (nginx) and caches must not hold chunks back.
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
_DONE: Final = b"data: [DONE]\n\n"


def create_demo_app(*, word_delay: float = 0.0) -> DemoChatApp:
    """The demo chat-completions backend; ``word_delay`` seconds between chunks."""
    return DemoChatApp(word_delay=word_delay)


@dataclass(frozen=True, slots=True)
class _ToolCall:
    id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class _Plan:
    """Everything one completion will say, decided before any byte is sent."""

    model: str
    stream: bool
    include_usage: bool
    reasoning: list[str]
    content: list[str] | None
    tool_calls: list[_ToolCall]
    finish_reason: str
    prompt_tokens: int

    @property
    def completion_tokens(self) -> int:
        pieces = len(self.reasoning) + len(self.content or ())
        return pieces + sum(len(_pieces(call.arguments)) for call in self.tool_calls)

    def usage(self) -> dict[str, Any]:
        completion = self.completion_tokens
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": self.prompt_tokens + completion,
            "prompt_tokens_details": {"cached_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": len(self.reasoning)},
        }


class DemoChatApp:
    """Deterministic chat-completions server: ``await app(scope, receive, send)``."""

    def __init__(self, *, word_delay: float = 0.0) -> None:
        if word_delay < 0:
            raise ValueError("word_delay must be >= 0")
        self.word_delay = word_delay
        self._ids = itertools.count(1)
        self._models_body = orjson.dumps(
            {"object": "list", "data": [_model_object(model) for model in DEMO_MODEL_IDS]}
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await _lifespan(receive, send)
        elif kind == "websocket":
            # Reject the handshake: the server answers 403 to the client.
            await receive()
            await send({"type": "websocket.close", "code": 1000})

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        root_path: str = scope.get("root_path", "")
        if root_path and path.startswith(root_path):
            # Mounted under a prefix: route on the part below it.
            path = path[len(root_path) :]
        method: str = scope["method"]
        try:
            if path == _CHAT_PATH:
                _allow(method, path, "POST")
                body = await _read_body(receive)
                if body is None:
                    return
                plan = _plan(_parse_json(body))
                completion_id = f"chatcmpl-demo-{next(self._ids)}"
                if plan.stream:
                    await self._stream(plan, completion_id, receive, send)
                else:
                    await _send_json(send, 200, _completion(plan, completion_id))
            elif path == _MODELS_PATH:
                _allow(method, path, "GET")
                await _send_bytes(send, 200, self._models_body)
            elif path.startswith(_MODELS_PATH + "/") and len(path) > len(_MODELS_PATH) + 1:
                _allow(method, path, "GET")
                # Any id answers: the demo serves whatever model it is asked for.
                await _send_json(send, 200, _model_object(path[len(_MODELS_PATH) + 1 :]))
            else:
                raise NotFound(f"Invalid URL ({method} {path})")
        except CompatError as exc:
            await _send_bytes(send, exc.status, exc.to_json(), exc.headers)

    async def _stream(self, plan: _Plan, completion_id: str, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
        disconnected = asyncio.Event()
        watcher = asyncio.create_task(_watch_disconnect(receive, disconnected))
        try:
            first = True
            for chunk in _chunks(plan, completion_id):
                if not first:
                    await self._pause(disconnected)
                first = False
                if disconnected.is_set():
                    return
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await self._pause(disconnected)
            if not disconnected.is_set():
                await send({"type": "http.response.body", "body": _DONE, "more_body": False})
        finally:
            watcher.cancel()
            # asyncio.wait never raises the watcher's CancelledError, so a
            # cancellation of this task itself still propagates.
            await asyncio.wait([watcher])

    async def _pause(self, disconnected: asyncio.Event) -> None:
        if self.word_delay > 0:
            # Wake early on disconnect instead of sleeping it out.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.word_delay):
                    await disconnected.wait()
        else:
            # Yield even without a delay: lets the disconnect watcher run and
            # keeps one long stream from starving the event loop.
            await asyncio.sleep(0)


# --------------------------------------------------------------------------
# ASGI plumbing


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _watch_disconnect(receive: Receive, disconnected: asyncio.Event) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            disconnected.set()
            return


async def _read_body(receive: Receive) -> bytes | None:
    """The whole request body, or ``None`` if the client went away first."""
    parts: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        if message["type"] != "http.request":
            continue
        part: bytes = message.get("body", b"")
        size += len(part)
        if size > MAX_BODY_BYTES:
            raise RequestTooLarge(f"Request body exceeds {MAX_BODY_BYTES} bytes.")
        parts.append(part)
        if not message.get("more_body", False):
            return b"".join(parts)


def _allow(method: str, path: str, allowed: str) -> None:
    if method != allowed:
        raise MethodNotAllowed(
            f"Method {method} is not allowed on {path}; use {allowed}.",
            headers=[(b"allow", allowed.encode())],
        )


async def _send_json(send: Send, status: int, payload: dict[str, Any]) -> None:
    await _send_bytes(send, status, orjson.dumps(payload))


async def _send_bytes(
    send: Send, status: int, body: bytes, extra_headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    headers = [*_JSON_HEADERS, (b"content-length", str(len(body)).encode())]
    if extra_headers:
        headers.extend(extra_headers)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


# --------------------------------------------------------------------------
# Request -> plan (pure; raises InvalidRequest with the offending ``param``)


def _parse_json(body: bytes) -> dict[str, Any]:
    try:
        request = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise InvalidRequest(
            "We could not parse the JSON body of your request. The request body must be valid JSON.",
            code="invalid_json",
        ) from None
    if not isinstance(request, dict):
        raise InvalidRequest("The request body must be a JSON object.", code="invalid_json")
    return request


def _plan(request: dict[str, Any]) -> _Plan:
    model = request.get("model")
    if model is None:
        raise InvalidRequest(
            "you must provide a model parameter", param="model", code="missing_required_parameter"
        )
    if not isinstance(model, str) or not model:
        raise InvalidRequest("'model' must be a non-empty string.", param="model", code="invalid_type")
    messages = request.get("messages")
    if messages is None:
        raise InvalidRequest(
            "Missing required parameter: 'messages'.",
            param="messages",
            code="missing_required_parameter",
        )
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest(
            "'messages' must be a non-empty array of message objects.", param="messages", code="invalid_value"
        )
    texts = [_message_text(message, i) for i, message in enumerate(messages)]
    stream = _optional(request, "stream", bool, False)
    stream_options = _optional(request, "stream_options", dict, {})
    include_usage = stream_options.get("include_usage", False)
    if not isinstance(include_usage, bool):
        raise InvalidRequest(
            "'stream_options.include_usage' must be a boolean.", param="stream_options.include_usage"
        )
    if _optional(request, "n", int, 1) != 1:
        raise InvalidRequest("The demo model only supports n=1.", param="n", code="invalid_value")
    limit = _max_tokens(request)

    user_text = next(
        (text for message, text in zip(reversed(messages), reversed(texts)) if message["role"] == "user"),
        "",
    )
    reasoning: list[str] = []
    if "reasoning" in model.lower():
        reasoning = _word_deltas(f"The user said {len(user_text.split())} words; I will answer politely.")
    prompt_tokens = max(1, sum(len(text.split()) for text in texts))

    def finish(content: list[str], tool_calls: list[_ToolCall] | None = None) -> _Plan:
        if tool_calls:
            return _Plan(
                model, stream, include_usage, reasoning, None, tool_calls, "tool_calls", prompt_tokens
            )
        cut = limit is not None and len(content) > limit
        return _Plan(
            model,
            stream,
            include_usage,
            reasoning,
            content[:limit] if cut else content,
            [],
            "length" if cut else "stop",
            prompt_tokens,
        )

    results = _tool_results(messages, texts)
    if results:
        # Answer from the results even if tools are still required: an agent
        # loop against the demo must terminate.
        return finish(_word_deltas(" ".join(f"The tool {name} returned: {_said(out)}." for name, out in results)))

    tools = _tools(request)
    chosen = _choose_tools(request, tools, user_text)
    if chosen:
        calls = [
            _ToolCall(
                f"call_demo_{index}",
                tool["name"],
                _SchemaExample(tool.get("parameters"), strings=_strings(tool, user_text)).build(),
            )
            for index, tool in enumerate(chosen)
        ]
        return finish([], calls)

    plain = f"Hello! You said: {_said(user_text)}. This is the compat-asgi demo model answering deterministically."
    response_format = _optional(request, "response_format", dict, {"type": "text"})
    kind = response_format.get("type")
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        if not isinstance(spec, dict):
            raise InvalidRequest(
                "'response_format.json_schema' must be an object.", param="response_format.json_schema"
            )
        document = _SchemaExample(spec.get("schema"), strings=_strings({}, user_text)).build()
        return finish(_pieces(document))
    if kind == "json_object":
        return finish(_pieces(orjson.dumps({"answer": plain}).decode()))
    if kind != "text":
        raise InvalidRequest(
            "'response_format.type' must be one of 'text', 'json_object', 'json_schema'.",
            param="response_format.type",
            code="invalid_value",
        )
    return finish(_word_deltas(plain))


def _optional(request: dict[str, Any], key: str, kind: type[Any], default: Any) -> Any:
    value = request.get(key)
    if value is None:
        return default
    if not isinstance(value, kind):
        raise InvalidRequest(f"'{key}' must be of type {kind.__name__}.", param=key, code="invalid_type")
    return value


def _max_tokens(request: dict[str, Any]) -> int | None:
    for key in ("max_completion_tokens", "max_tokens"):
        value = request.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidRequest(f"'{key}' must be a positive integer.", param=key, code="invalid_value")
        return value
    return None


def _message_text(message: Any, i: int) -> str:
    if not isinstance(message, dict):
        raise InvalidRequest(f"'messages[{i}]' must be an object.", param=f"messages[{i}]", code="invalid_type")
    role = message.get("role")
    if role not in _ROLES:
        raise InvalidRequest(
            f"Invalid value for 'messages[{i}].role': expected one of {', '.join(sorted(_ROLES))}.",
            param=f"messages[{i}].role",
            code="invalid_value",
        )
    content = message.get("content")
    where = f"messages[{i}].content"
    if content is None:
        return ""
    if isinstance(content, str):
        return " ".join(content.split())
    if not isinstance(content, list):
        raise InvalidRequest(f"'{where}' must be a string or an array of parts.", param=where, code="invalid_type")
    words: list[str] = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("text", "refusal"):
            text = part.get(kind)
            if not isinstance(text, str):
                raise InvalidRequest(f"'{where}[{j}].{kind}' must be a string.", param=f"{where}[{j}].{kind}")
            words.extend(text.split())
        elif kind in _PART_PLACEHOLDERS:
            words.append(_PART_PLACEHOLDERS[kind])
        else:
            raise InvalidRequest(
                f"Invalid content part type in '{where}[{j}]'.", param=f"{where}[{j}].type", code="invalid_value"
            )
    return " ".join(words)


def _tool_results(messages: list[dict[str, Any]], texts: list[str]) -> list[tuple[str, str]]:
    """(tool name, output) for the run of ``tool`` messages that ends the conversation."""
    end = len(messages)
    start = end
    while start > 0 and messages[start - 1]["role"] == "tool":
        start -= 1
    results = []
    for i in range(start, end):
        call_id = messages[i].get("tool_call_id")
        name = "unknown"
        # Search backwards: call ids repeat across turns (call_demo_0 ...), the
        # nearest assistant turn is the one this result answers.
        for earlier in reversed(messages[:start]):
            calls = earlier.get("tool_calls") if earlier["role"] == "assistant" else None
            match = next(
                (c for c in calls or () if isinstance(c, dict) and c.get("id") == call_id),
                None,
            )
            if match is not None:
                function = match.get("function")
                if isinstance(function, dict) and isinstance(function.get("name"), str):
                    name = function["name"]
                break
        results.append((name, texts[i]))
    return results


def _tools(request: dict[str, Any]) -> list[dict[str, Any]]:
    """The offered function definitions (the inner ``function`` objects)."""
    tools = _optional(request, "tools", list, [])
    functions = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict) or tool.get("type") != "function":
            raise InvalidRequest(
                f"Invalid value for 'tools[{i}].type': only 'function' is supported.",
                param=f"tools[{i}].type",
                code="invalid_value",
            )
        function = tool.get("function")
        if not isinstance(function, dict):
            raise InvalidRequest(
                f"Missing required parameter: 'tools[{i}].function'.",
                param=f"tools[{i}].function",
                code="missing_required_parameter",
            )
        if not isinstance(function.get("name"), str) or not function["name"]:
            raise InvalidRequest(
                f"'tools[{i}].function.name' must be a non-empty string.",
                param=f"tools[{i}].function.name",
                code="invalid_value",
            )
        functions.append(function)
    return functions


def _choose_tools(request: dict[str, Any], tools: list[dict[str, Any]], user_text: str) -> list[dict[str, Any]]:
    choice = request.get("tool_choice")
    if choice is None or choice in ("auto", "none"):
        if choice == "none":
            return []
        chosen = [tool for tool in tools if _names(user_text, tool["name"])]
    elif not tools:
        raise InvalidRequest(
            "'tool_choice' is only allowed when 'tools' are specified.", param="tool_choice", code="invalid_value"
        )
    elif choice == "required":
        chosen = [tool for tool in tools if _names(user_text, tool["name"])] or tools[:1]
    elif (
        isinstance(choice, dict)
        and choice.get("type") == "function"
        and isinstance(choice.get("function"), dict)
        and isinstance(choice["function"].get("name"), str)
    ):
        wanted = choice["function"]["name"]
        chosen = [tool for tool in tools if tool["name"] == wanted][:1]
        if not chosen:
            raise InvalidRequest(
                f"Invalid 'tool_choice': no offered tool is named {wanted!r}.",
                param="tool_choice",
                code="invalid_value",
            )
    else:
        raise InvalidRequest(
            "'tool_choice' must be 'none', 'auto', 'required' or a function choice.",
            param="tool_choice",
            code="invalid_value",
        )
    if _optional(request, "parallel_tool_calls", bool, True) is False:
        return chosen[:1]
    return chosen


def _names(text: str, name: str) -> bool:
    # Whole-identifier match, so a tool "get" is not called by "get_weather".
    # A tool of a Responses namespace reaches a chat backend as
    # "namespace__name"; a user names it by its own name.
    return any(
        re.search(rf"(?<![\w-]){re.escape(candidate)}(?![\w-])", text) is not None
        for candidate in {name, name.rpartition(_NAMESPACE_SEPARATOR)[2]} - {""}
    )


def _place(text: str) -> str:
    match = _PLACE_RE.search(text)
    if match is None:
        return "example"
    word = match.group(1)
    return word[:1].upper() + word[1:]


def _strings(tool: dict[str, Any], text: str) -> dict[str, str]:
    """Property name -> the string the demo writes there for ``tool`` (a chat
    function definition; ``{}`` for a response format)."""
    place = _place(text)
    strings = dict.fromkeys(_PLACE_KEYS, place) if place != "example" else {}
    strings.update(dict.fromkeys(_COMMAND_KEYS, DEMO_COMMAND))
    name = str(tool.get("name", "")).rpartition(_NAMESPACE_SEPARATOR)[2]
    description = tool.get("description")
    if name in _PATCH_TOOLS:
        strings.update(dict.fromkeys(_PATCH_KEYS, _patch(text)))
    elif name in _SCRIPT_TOOLS and isinstance(description, str) and "JavaScript" in description:
        strings["input"] = DEMO_SCRIPT
    return strings


def _patch(text: str) -> str:
    """A patch in the Codex ``apply_patch`` format adding one small file: the
    first relative file name in ``text``, else ``hello.txt``."""
    match = _FILE_RE.search(text)
    path = match.group(1) if match else DEMO_PATCH_FILE
    return f"*** Begin Patch\n*** Add File: {path}\n+{DEMO_PATCH_LINE}\n*** End Patch\n"


def _said(text: str) -> str:
    return text or "nothing"


# --------------------------------------------------------------------------
# JSON schema -> example value


class _SchemaExample:
    """A value that fits a JSON schema; the same schema always gives the same value.

    Like a careful model it fills the ``required`` keys (every property when
    the schema names none), picks ``enum``/``const`` values, keeps numbers
    whole when a whole number fits, and takes strings from ``strings`` by
    property name (the place asked about, a harmless shell command, a patch).
    """

    __slots__ = ("root", "strings")

    def __init__(self, root: Any, *, strings: dict[str, str]) -> None:
        self.root = root
        self.strings = strings

    def build(self) -> str:
        """The example as compact JSON text; a missing schema gives ``{}``."""
        return orjson.dumps(self.value(self.root, "", 0, top=True)).decode()

    def value(self, schema: Any, key: str, depth: int, *, top: bool = False, variant: int = 0) -> Any:
        if depth > MAX_SCHEMA_DEPTH:
            return None
        if not isinstance(schema, dict):
            return {} if top else self._string({}, key, variant)
        ref = schema.get("$ref")
        if isinstance(ref, str):
            return self.value(_resolve(self.root, ref), key, depth + 1, top=top, variant=variant)
        if "const" in schema:
            return schema["const"]
        enum = schema.get("enum")
        if isinstance(enum, list) and enum:
            return enum[variant % len(enum)]
        for combinator in ("anyOf", "oneOf"):
            options = schema.get(combinator)
            if isinstance(options, list) and options:
                usable = [o for o in options if not (isinstance(o, dict) and o.get("type") == "null")]
                return self.value((usable or options)[0], key, depth + 1, top=top, variant=variant)
        parts = schema.get("allOf")
        if isinstance(parts, list) and parts:
            merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
            for part in parts:
                if isinstance(part, dict) and isinstance(part.get("$ref"), str):
                    part = _resolve(self.root, part["$ref"])
                if isinstance(part, dict):
                    merged.update(part)
            return self.value(merged, key, depth + 1, top=top, variant=variant)

        kind = schema.get("type")
        if isinstance(kind, list):
            kind = next((k for k in kind if k != "null"), "null")
        if kind is None:
            kind = "object" if "properties" in schema or top else "array" if "items" in schema else None

        if kind == "object":
            return self._object(schema, depth)
        if kind == "array":
            return self._array(schema, key, depth)
        if kind == "string":
            return self._string(schema, key, variant)
        if kind in ("integer", "number"):
            return _number(schema, integer=kind == "integer", variant=variant)
        if kind == "boolean":
            return variant % 2 == 0
        if kind == "null":
            return None
        return {}

    def _object(self, schema: dict[str, Any], depth: int) -> dict[str, Any]:
        properties = schema.get("properties")
        properties = properties if isinstance(properties, dict) else {}
        required = schema.get("required")
        if isinstance(required, list):
            wanted = [name for name in properties if name in required]
            wanted += [name for name in required if isinstance(name, str) and name not in properties]
        else:
            wanted = list(properties)
        extra = schema.get("additionalProperties", True)
        least = schema.get("minProperties")
        if isinstance(least, int) and len(wanted) < least:
            wanted += [name for name in properties if name not in wanted][: least - len(wanted)]
            if extra is not False:
                wanted += [f"extra_{i}" for i in range(least - len(wanted))]
        return {
            name: self.value(properties.get(name, extra if isinstance(extra, dict) else {}), name, depth + 1)
            for name in wanted
        }

    def _array(self, schema: dict[str, Any], key: str, depth: int) -> list[Any]:
        prefix = schema.get("prefixItems")
        if isinstance(prefix, list) and prefix:
            return [self.value(sub, key, depth + 1) for sub in prefix]
        items = schema.get("items")
        command = self.strings.get(key.lower()) if key.lower() in _COMMAND_KEYS else None
        if command is not None and isinstance(items, dict) and items.get("type") == "string":
            # An argv-style command (Codex's older ``shell`` tool).
            return command.split()
        if schema.get("maxItems") == 0 or items is False:
            return []
        least = schema.get("minItems")
        count = least if isinstance(least, int) and least > 1 else 1
        if schema.get("uniqueItems") is True:
            return [self.value(items, key, depth + 1, variant=i) for i in range(count)]
        return [self.value(items, key, depth + 1)] * count

    def _string(self, schema: dict[str, Any], key: str, variant: int) -> str:
        fmt = schema.get("format")
        text = _STRING_FORMATS.get(fmt) if isinstance(fmt, str) else None
        if text is None:
            text = self.strings.get(key.lower(), "example")
            if variant:
                text = f"{text}{variant}"
        min_length = schema.get("minLength")
        if isinstance(min_length, int) and len(text) < min_length:
            text += "x" * (min_length - len(text))
        max_length = schema.get("maxLength")
        if isinstance(max_length, int) and len(text) > max_length:
            # Keep the variant's distinguishing suffix when cutting.
            text = text[len(text) - max_length :] if variant else text[:max_length]
        return text


def _number(schema: dict[str, Any], *, integer: bool, variant: int = 0) -> int | float:
    """A number inside the schema's bounds and ``multipleOf``: 1 (plus
    ``variant``) if it fits, else a whole number near the bounds, else a
    fraction between them. Whole numbers are written as integers, which is
    what ``integer`` needs and what unsigned parameters (Codex's) parse."""

    def limit(name: str) -> float | None:
        value = schema.get(name)
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    low, high = limit("minimum"), limit("maximum")
    above, below = limit("exclusiveMinimum"), limit("exclusiveMaximum")
    step = limit("multipleOf")
    step = step if step is not None and step > 0 else None

    def fits(value: float) -> bool:
        if integer and value != int(value):
            return False
        if (low is not None and value < low) or (high is not None and value > high):
            return False
        if (above is not None and value <= above) or (below is not None and value >= below):
            return False
        # The check JSON Schema validators make, float rounding included.
        return step is None or (value / step) == int(value / step)

    floor = max((b for b in (low, above) if b is not None), default=None)
    ceiling = min((b for b in (high, below) if b is not None), default=None)
    candidates: list[float] = [1.0 + variant, 0.0]
    for edge in (floor, ceiling):
        if edge is not None and math.isfinite(edge):
            base = math.floor(edge)
            candidates += [base + variant + offset for offset in (-1, 0, 1, 2)]
            if step is not None:
                k = math.floor(edge / step)
                candidates += [(k + offset + variant) * step for offset in (-1, 0, 1, 2)]
    if step is not None:
        candidates.append(step * (1 + variant))
    if not integer and floor is not None and ceiling is not None:
        candidates.append((floor + ceiling) / 2)
    for value in candidates:
        if math.isfinite(value) and fits(value):
            return int(value) if value == int(value) else value
    # Nothing fits (contradictory bounds): the nearest edge.
    fallback = floor if floor is not None else ceiling if ceiling is not None else 1.0
    return int(fallback) if fallback == int(fallback) else fallback


def _resolve(root: Any, ref: str) -> Any:
    """A local JSON pointer (``#/$defs/Name``); anything else resolves to ``None``."""
    if not ref.startswith("#"):
        return None
    node = root
    for token in ref[1:].split("/"):
        if not token:
            continue
        token = token.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, dict) or token not in node:
            return None
        node = node[token]
    return node


# --------------------------------------------------------------------------
# Plan -> wire


def _word_deltas(text: str) -> list[str]:
    # The separating space rides on the following word, so deltas concatenate
    # back to the text exactly.
    words = text.split()
    return words[:1] + [" " + word for word in words[1:]]


def _pieces(text: str, count: int = JSON_PIECES) -> list[str]:
    size = max(1, -(-len(text) // count))
    return [text[i : i + size] for i in range(0, len(text), size)] or [text]


def _model_object(model: str) -> dict[str, Any]:
    return {"id": model, "object": "model", "created": 0, "owned_by": "compat-asgi"}


def _completion(plan: _Plan, completion_id: str) -> dict[str, Any]:
    message: dict[str, Any] = {
        "role": "assistant",
        "content": None if plan.content is None else "".join(plan.content),
        "refusal": None,
    }
    if plan.reasoning:
        message["reasoning_content"] = "".join(plan.reasoning)
    if plan.tool_calls:
        message["tool_calls"] = [
            {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}
            for call in plan.tool_calls
        ]
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": CREATED,
        "model": plan.model,
        "choices": [{"index": 0, "message": message, "finish_reason": plan.finish_reason, "logprobs": None}],
        "usage": plan.usage(),
    }


def _chunks(plan: _Plan, completion_id: str) -> Iterator[bytes]:
    """Encoded ``data:`` events up to (not including) ``[DONE]``."""
    head = {"id": completion_id, "object": "chat.completion.chunk", "created": CREATED, "model": plan.model}
    # OpenAI marks every chunk with "usage": null when the final usage chunk
    # is coming, so clients know to wait for it.
    tail: dict[str, Any] = {"usage": None} if plan.include_usage else {}

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return b"data: " + orjson.dumps({**head, "choices": [choice], **tail}) + b"\n\n"

    yield chunk({"role": "assistant", "content": ""})
    for word in plan.reasoning:
        yield chunk({"reasoning_content": word})
    for piece in plan.content or ():
        yield chunk({"content": piece})
    # Deltas of parallel calls interleave, as real servers may send them:
    # clients have to route by ``index``, not by arrival order.
    per_call = [
        [
            {"index": index, "id": call.id, "type": "function", "function": {"name": call.name, "arguments": ""}},
            *({"index": index, "function": {"arguments": piece}} for piece in _pieces(call.arguments)),
        ]
        for index, call in enumerate(plan.tool_calls)
    ]
    for round_ in itertools.zip_longest(*per_call):
        for delta in round_:
            if delta is not None:
                yield chunk({"tool_calls": [delta]})
    yield chunk({}, plan.finish_reason)
    if plan.include_usage:
        yield b"data: " + orjson.dumps({**head, "choices": [], "usage": plan.usage()}) + b"\n\n"
