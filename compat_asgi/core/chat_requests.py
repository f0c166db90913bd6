"""Chat-completions request body -> Responses API request body, validated.

The reverse of :mod:`compat_asgi.core.requests`: a chat client in front of a
Responses upstream. Pure, and with the same contract: every rejection is an
:class:`~compat_asgi.errors.InvalidRequest` naming the exact ``param``
(``messages[2].content[0].image_url``) with OpenAI's error ``code``; no other
exception escapes, whatever the body holds.

Chat parameters the Responses API has no equivalent for (``stop``, ``seed``,
penalties, ``logit_bias``) are accepted only when they ask for nothing, and
refused otherwise: silently dropping them would hand back output the client
did not ask for.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NoReturn

from compat_asgi.core.options import RequestOptions
from compat_asgi.core.validation import (
    Ignored,
    as_dict,
    bad_value,
    check_keys,
    checked_metadata,
    missing,
    opt_bool,
    opt_dict,
    opt_enum,
    opt_int,
    opt_number,
    opt_str,
    req_str,
    required_model,
    string,
    type_error,
    type_of,
    unsupported,
)
from compat_asgi.errors import InvalidRequest

__all__ = ["TranslatedChatRequest", "chat_to_responses"]


@dataclass(frozen=True, slots=True)
class TranslatedChatRequest:
    responses: dict[str, Any]
    """Body to POST to the upstream's ``/v1/responses``."""
    stream: bool
    include_usage: bool
    """``stream_options.include_usage`` of the chat request: the shell owes a usage chunk."""
    model: str
    ignored: tuple[str, ...] = ()
    """Top-level fields the request sent that the server left unused (bounded)."""


_DEFAULT_OPTIONS = RequestOptions()
# Everything CompletionCreateParams defines.
_KNOWN_KEYS = frozenset(
    {
        "messages",
        "model",
        "audio",
        "frequency_penalty",
        "function_call",
        "functions",
        "logit_bias",
        "logprobs",
        "max_completion_tokens",
        "max_tokens",
        "metadata",
        "modalities",
        "moderation",
        "n",
        "parallel_tool_calls",
        "prediction",
        "presence_penalty",
        "prompt_cache_key",
        "prompt_cache_options",
        "prompt_cache_retention",
        "reasoning_effort",
        "response_format",
        "safety_identifier",
        "seed",
        "service_tier",
        "stop",
        "store",
        "stream",
        "stream_options",
        "temperature",
        "tool_choice",
        "tools",
        "top_logprobs",
        "top_p",
        "user",
        "verbosity",
        "web_search_options",
    }
)
# Real chat parameters with no Responses counterpart at all, refused whenever set.
_UNSUPPORTED_KEYS = {
    "audio": ": audio output is not available from this upstream.",
    "prediction": ": predicted outputs are not available from this upstream.",
    "web_search_options": ": use a model that searches on its own; this upstream takes no search options.",
    "functions": ": use 'tools' instead of the legacy 'functions'.",
    "function_call": ": use 'tool_choice' instead of the legacy 'function_call'.",
}

_ROLES = ("system", "developer", "user", "assistant", "tool")
_USER_PART_TYPES = ("text", "image_url", "file", "input_audio")
_REASONING_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh", "max")
_SERVICE_TIERS = ("auto", "default", "flex", "scale", "priority", "fast")
_VERBOSITIES = ("low", "medium", "high")
_IMAGE_DETAILS = ("auto", "low", "high", "original")
_TOOL_CHOICE_MODES = ("none", "auto", "required")
_PROMPT_CACHE_RETENTIONS = ("in_memory", "24h")
_MODALITIES = ("text", "audio")
_TOP_LOGPROBS_MAX = 20
_PENALTY_RANGE = (-2.0, 2.0)
_LOGIT_BIAS_RANGE = (-100.0, 100.0)

# The include entry that makes a Responses upstream return token logprobs.
_LOGPROBS_INCLUDE = "message.output_text.logprobs"
# Chat: "omitting parameters defines a function with an empty parameter list".
# Responses requires the key, so the omission is spelled out.
_EMPTY_PARAMETERS: dict[str, Any] = {"type": "object", "properties": {}}


def _no_equivalent(param: str) -> NoReturn:
    raise InvalidRequest(
        f"Unsupported parameter: '{param}' is not supported by this server's upstream "
        "(the Responses API has no equivalent). Remove it or leave it at its default.",
        param=param,
        code="unsupported_parameter",
    )


# --------------------------------------------------------------------------
# Messages


def _text_parts(content: object, param: str, *, refusal: bool = False) -> list[tuple[str, str]]:
    """(kind, text) for a string or a list of chat ``text`` (and ``refusal``) parts."""
    if isinstance(content, str):
        return [("text", content)]
    if not isinstance(content, list):
        type_error(param, "a string or an array of content parts", content)
    allowed = ("text", "refusal") if refusal else ("text",)
    out: list[tuple[str, str]] = []
    for j, raw in enumerate(content):
        p = f"{param}[{j}]"
        part = as_dict(raw, p)
        kind = type_of(part, p)
        if kind not in allowed:
            bad_value(f"{p}.type", kind, allowed)
        out.append((kind, req_str(part, kind, p)))
    return out


def _joined_text(content: object, param: str) -> str:
    # Mirrors requests.py, which collapses text parts with the same separator.
    return "\n".join(text for _, text in _text_parts(content, param))


def _image_part(part: dict[str, Any], param: str) -> dict[str, Any]:
    image_param = f"{param}.image_url"
    raw = part.get("image_url")
    if raw is None:
        missing(image_param)
    image = as_dict(raw, image_param)
    url = req_str(image, "url", image_param)
    detail = opt_enum(image, "detail", f"{image_param}.detail", _IMAGE_DETAILS)
    # Responses requires detail; "auto" is chat's default.
    return {"type": "input_image", "image_url": url, "detail": detail or "auto"}


def _file_part(part: dict[str, Any], param: str) -> dict[str, Any]:
    file_param = f"{param}.file"
    raw = part.get("file")
    if raw is None:
        missing(file_param)
    file = as_dict(raw, file_param)
    out: dict[str, Any] = {"type": "input_file"}
    data = opt_str(file, "file_data", f"{file_param}.file_data")
    file_id = opt_str(file, "file_id", f"{file_param}.file_id")
    if data is None and file_id is None:
        missing(f"{file_param}.file_data")
    if data is not None:
        out["file_data"] = data
    if file_id is not None:
        out["file_id"] = file_id
    filename = opt_str(file, "filename", f"{file_param}.filename")
    if filename is not None:
        out["filename"] = filename
    return out


def _user_content(content: object, param: str) -> str | list[dict[str, Any]]:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        type_error(param, "a string or an array of content parts", content)
    parts: list[dict[str, Any]] = []
    for j, raw in enumerate(content):
        p = f"{param}[{j}]"
        part = as_dict(raw, p)
        kind = type_of(part, p)
        if kind == "text":
            parts.append({"type": "input_text", "text": req_str(part, "text", p)})
        elif kind == "image_url":
            parts.append(_image_part(part, p))
        elif kind == "file":
            parts.append(_file_part(part, p))
        elif kind == "input_audio":
            unsupported(
                f"{p}.type",
                f"Invalid value for '{p}.type': audio input is not supported by this server's upstream.",
            )
        else:
            bad_value(f"{p}.type", kind, _USER_PART_TYPES)
    return parts


def _tool_call_items(value: object, param: str) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list):
        type_error(param, "an array", value)
    items: list[dict[str, Any]] = []
    for k, raw in enumerate(value):
        p = f"{param}[{k}]"
        call = as_dict(raw, p)
        kind = type_of(call, p)
        if kind == "custom":
            unsupported(f"{p}.type", f"Invalid value for '{p}.type': custom tool calls are not supported by this server.")
        if kind != "function":
            bad_value(f"{p}.type", kind, ("function",))
        call_id = req_str(call, "id", p, non_empty=True)
        function_param = f"{p}.function"
        if call.get("function") is None:
            missing(function_param)
        function = as_dict(call["function"], function_param)
        items.append(
            {
                "type": "function_call",
                "call_id": call_id,
                "name": req_str(function, "name", function_param, non_empty=True),
                "arguments": req_str(function, "arguments", function_param),
            }
        )
    return items


def _assistant_items(message: dict[str, Any], param: str) -> list[dict[str, Any]]:
    for key in ("audio", "function_call"):
        if message.get(key) is not None:
            unsupported(
                f"{param}.{key}",
                f"'{param}.{key}' is not supported by this server: "
                + ("audio output is not available." if key == "audio" else "use 'tool_calls'."),
                code="unsupported_parameter",
            )
    parts: list[dict[str, Any]] = []
    content = message.get("content")
    if content is not None:
        for kind, text in _text_parts(content, f"{param}.content", refusal=True):
            if kind == "text":
                parts.append({"type": "output_text", "text": text})
            else:
                parts.append({"type": "refusal", "refusal": text})
    refusal = opt_str(message, "refusal", f"{param}.refusal")
    if refusal:
        parts.append({"type": "refusal", "refusal": refusal})
    calls = _tool_call_items(message.get("tool_calls"), f"{param}.tool_calls")
    if not parts and not calls and content is None and refusal is None:
        missing(f"{param}.content")
    items: list[dict[str, Any]] = []
    # An empty text beside tool calls is how many clients echo a tool-call turn;
    # an empty message item would only add noise to the upstream's context.
    if not calls or any(p.get("text") or p.get("refusal") for p in parts):
        items.append({"type": "message", "role": "assistant", "content": parts})
    items += calls
    return items


def _input_items(value: object) -> list[dict[str, Any]]:
    if value is None:
        missing("messages")
    if not isinstance(value, list):
        type_error("messages", "an array", value)
    if not value:
        raise InvalidRequest(
            "Invalid 'messages': empty array. Expected an array with minimum length 1, "
            "but got an empty array instead.",
            param="messages",
            code="empty_array",
        )
    items: list[dict[str, Any]] = []
    for i, raw in enumerate(value):
        param = f"messages[{i}]"
        message = as_dict(raw, param)
        if message.get("role") is None:
            missing(f"{param}.role")
        role = string(message["role"], f"{param}.role")
        # Participant names have no Responses field; validated, then dropped.
        opt_str(message, "name", f"{param}.name")
        if role == "assistant":
            items += _assistant_items(message, param)
            continue
        if role == "function":
            unsupported(
                f"{param}.role",
                f"Invalid value for '{param}.role': the legacy 'function' role is not supported "
                "by this server. Use 'tool' messages with a 'tool_call_id'.",
            )
        if role not in _ROLES:
            bad_value(f"{param}.role", role, _ROLES)
        if "content" not in message:
            missing(f"{param}.content")
        content = message["content"]
        if role == "tool":
            call_id = req_str(message, "tool_call_id", param, non_empty=True)
            output = _joined_text(content, f"{param}.content")
            items.append({"type": "function_call_output", "call_id": call_id, "output": output})
        elif role == "user":
            items.append({"type": "message", "role": "user", "content": _user_content(content, f"{param}.content")})
        else:
            items.append({"type": "message", "role": role, "content": _joined_text(content, f"{param}.content")})
    return items


# --------------------------------------------------------------------------
# Tools, tool_choice, response_format


def _tools(value: object) -> tuple[list[dict[str, Any]], set[str]]:
    if value is None:
        return [], set()
    if not isinstance(value, list):
        type_error("tools", "an array", value)
    tools: list[dict[str, Any]] = []
    names: set[str] = set()
    for i, raw in enumerate(value):
        param = f"tools[{i}]"
        tool = as_dict(raw, param)
        kind = type_of(tool, param)
        if kind == "custom":
            unsupported(
                f"{param}.type",
                f"Invalid value for '{param}.type': custom tools are not supported by this server; "
                "use 'function' tools.",
            )
        if kind != "function":
            bad_value(f"{param}.type", kind, ("function",))
        function_param = f"{param}.function"
        if tool.get("function") is None:
            missing(function_param)
        function = as_dict(tool["function"], function_param)
        name = req_str(function, "name", function_param, non_empty=True)
        flat: dict[str, Any] = {"type": "function", "name": name}
        description = opt_str(function, "description", f"{function_param}.description")
        if description is not None:
            flat["description"] = description
        parameters = opt_dict(function, "parameters", f"{function_param}.parameters")
        flat["parameters"] = _EMPTY_PARAMETERS if parameters is None else parameters
        # Responses functions are strict unless told otherwise; chat's are not.
        flat["strict"] = opt_bool(function, "strict", f"{function_param}.strict") or False
        tools.append(flat)
        names.add(name)
    return tools, names


def _tool_choice(choice: object, names: set[str]) -> str | dict[str, Any]:
    if isinstance(choice, str):
        if choice not in _TOOL_CHOICE_MODES:
            bad_value("tool_choice", choice, _TOOL_CHOICE_MODES)
        if choice == "required" and not names:
            raise InvalidRequest(
                "Invalid value for 'tool_choice': 'required' needs at least one tool in 'tools'.",
                param="tool_choice",
                code="invalid_value",
            )
        return choice
    if not isinstance(choice, dict):
        type_error("tool_choice", "a string or an object", choice)
    kind = type_of(choice, "tool_choice")
    if kind != "function":
        unsupported(
            "tool_choice",
            f"tool_choice of type '{kind}' is not supported by this server: use 'auto', "
            "'none', 'required' or {\"type\": \"function\", \"function\": {\"name\": ...}}.",
        )
    if choice.get("function") is None:
        missing("tool_choice.function")
    function = as_dict(choice["function"], "tool_choice.function")
    name = req_str(function, "name", "tool_choice.function")
    if name not in names:
        raise InvalidRequest(
            f"Invalid value for 'tool_choice.function.name': no function named '{name}' is in 'tools'.",
            param="tool_choice.function.name",
            code="invalid_value",
        )
    return {"type": "function", "name": name}


def _text_format(fmt: dict[str, Any]) -> dict[str, Any] | None:
    kind = type_of(fmt, "response_format")
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        param = "response_format.json_schema"
        if fmt.get("json_schema") is None:
            missing(param)
        spec = as_dict(fmt["json_schema"], param)
        out: dict[str, Any] = {"type": "json_schema", "name": req_str(spec, "name", param, non_empty=True)}
        if spec.get("schema") is None:
            # Optional in chat, required by Responses: no schema cannot be guessed.
            missing(f"{param}.schema")
        out["schema"] = as_dict(spec["schema"], f"{param}.schema")
        description = opt_str(spec, "description", f"{param}.description")
        if description is not None:
            out["description"] = description
        strict = opt_bool(spec, "strict", f"{param}.strict")
        if strict is not None:
            out["strict"] = strict
        return out
    bad_value("response_format.type", kind, ("text", "json_object", "json_schema"))


# --------------------------------------------------------------------------
# Parameters without a Responses equivalent


def _check_no_equivalent(body: dict[str, Any]) -> None:
    """Refuse ``stop``/``seed``/penalties/``logit_bias`` unless they ask for nothing."""
    stop = body.get("stop")
    if stop is not None:
        if isinstance(stop, list):
            for i, value in enumerate(stop):
                string(value, f"stop[{i}]")
        elif not isinstance(stop, str):
            type_error("stop", "a string or an array of strings", stop)
        if stop:
            _no_equivalent("stop")
    # Any seed asks for reproducible sampling, which the upstream cannot be told;
    # there is no neutral seed value.
    if opt_int(body, "seed", "seed", -(2**63), 2**63 - 1) is not None:
        _no_equivalent("seed")
    for key in ("frequency_penalty", "presence_penalty"):
        if opt_number(body, key, key, *_PENALTY_RANGE):
            _no_equivalent(key)
    bias = opt_dict(body, "logit_bias", "logit_bias")
    if bias:
        neutral = True
        for token, value in bias.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                type_error(f"logit_bias.{token}", "a number", value)
            if not (_LOGIT_BIAS_RANGE[0] <= value <= _LOGIT_BIAS_RANGE[1]):
                raise InvalidRequest(
                    f"Invalid 'logit_bias.{token}': expected a number between -100 and 100, "
                    f"but got {value} instead.",
                    param=f"logit_bias.{token}",
                    code="invalid_value",
                )
            neutral = neutral and value == 0
        if not neutral:
            _no_equivalent("logit_bias")


# --------------------------------------------------------------------------
# The request


def chat_to_responses(body: object, options: RequestOptions = _DEFAULT_OPTIONS) -> TranslatedChatRequest:
    """Validate a chat-completions create body and map it to a Responses create
    body. Unknown top-level fields are left out and reported (a 400 when
    ``options.strict``)."""
    ignored = Ignored(strict=options.strict)
    body = check_keys(body, _KNOWN_KEYS, _UNSUPPORTED_KEYS, ignored)
    model = required_model(body)
    items = _input_items(body.get("messages"))
    out: dict[str, Any] = {"model": model, "input": items}

    n = opt_int(body, "n", "n", 1, 128)
    if n is not None and n != 1:
        unsupported("n", "Invalid value for 'n': this server's upstream returns one choice; only n=1 is supported.")
    modalities = body.get("modalities")
    if modalities is not None:
        if not isinstance(modalities, list):
            type_error("modalities", "an array of strings", modalities)
        for i, raw in enumerate(modalities):
            modality = string(raw, f"modalities[{i}]")
            if modality not in _MODALITIES:
                bad_value(f"modalities[{i}]", modality, _MODALITIES)
            if modality == "audio":
                unsupported(f"modalities[{i}]", "Invalid value for 'modalities': audio output is not available from this upstream.")
    _check_no_equivalent(body)

    # --- tools
    tools, names = _tools(body.get("tools"))
    tool_choice = body.get("tool_choice")
    mapped_choice = None if tool_choice is None else _tool_choice(tool_choice, names)
    parallel_tool_calls = opt_bool(body, "parallel_tool_calls", "parallel_tool_calls")
    if tools:
        out["tools"] = tools
        # Kept symmetrical with requests.py: both only mean something with tools.
        if mapped_choice is not None:
            out["tool_choice"] = mapped_choice
        if parallel_tool_calls is not None:
            out["parallel_tool_calls"] = parallel_tool_calls

    # --- text
    text: dict[str, Any] = {}
    fmt = opt_dict(body, "response_format", "response_format")
    if fmt is not None:
        text_format = _text_format(fmt)
        if text_format is not None:
            text["format"] = text_format
    verbosity = opt_enum(body, "verbosity", "verbosity", _VERBOSITIES)
    if verbosity is not None:
        text["verbosity"] = verbosity
    if text:
        out["text"] = text
    effort = opt_enum(body, "reasoning_effort", "reasoning_effort", _REASONING_EFFORTS)
    if effort is not None:
        out["reasoning"] = {"effort": effort}

    # --- sampling and limits
    max_completion_tokens = opt_int(body, "max_completion_tokens", "max_completion_tokens", 1)
    max_tokens = opt_int(body, "max_tokens", "max_tokens", 1)
    limit = max_completion_tokens if max_completion_tokens is not None else max_tokens
    if limit is not None:
        out["max_output_tokens"] = limit
    temperature = opt_number(body, "temperature", "temperature", 0.0, 2.0)
    if temperature is not None:
        out["temperature"] = temperature
    top_p = opt_number(body, "top_p", "top_p", 0.0, 1.0)
    if top_p is not None:
        out["top_p"] = top_p
    logprobs = opt_bool(body, "logprobs", "logprobs")
    top_logprobs = opt_int(body, "top_logprobs", "top_logprobs", 0, _TOP_LOGPROBS_MAX)
    if top_logprobs and not logprobs:
        raise InvalidRequest(
            "Invalid value for 'top_logprobs': 'logprobs' must be set to true when 'top_logprobs' is used.",
            param="top_logprobs",
            code="invalid_value",
        )
    if logprobs:
        if top_logprobs is not None:
            out["top_logprobs"] = top_logprobs
        out["include"] = [_LOGPROBS_INCLUDE]

    # --- passed through: the same meaning in both APIs
    for key in ("user", "prompt_cache_key", "safety_identifier"):
        value = opt_str(body, key, key)
        if value is not None:
            out[key] = value
    metadata = checked_metadata(body)
    if body.get("metadata") is not None:
        out["metadata"] = metadata
    for key, allowed in (("service_tier", _SERVICE_TIERS), ("prompt_cache_retention", _PROMPT_CACHE_RETENTIONS)):
        value = opt_enum(body, key, key, allowed)
        if value is not None:
            out[key] = value
    for key in ("moderation", "prompt_cache_options"):
        obj = opt_dict(body, key, key)
        if obj is not None:
            out[key] = obj

    stream = opt_bool(body, "stream", "stream") or False
    include_usage = False
    stream_options = opt_dict(body, "stream_options", "stream_options")
    if stream_options is not None:
        include_usage = opt_bool(stream_options, "include_usage", "stream_options.include_usage") or False
        opt_bool(stream_options, "include_obfuscation", "stream_options.include_obfuscation")
    # Chat completions keep no server state the client relies on; a Responses
    # upstream would otherwise store every turn by default.
    out["store"] = opt_bool(body, "store", "store") or False
    out["stream"] = stream
    return TranslatedChatRequest(
        responses=out, stream=stream, include_usage=include_usage, model=model, ignored=ignored.names
    )
