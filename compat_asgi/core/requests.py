"""Responses API request body -> chat-completions request body, validated.

Pure: takes the already-parsed JSON body, returns the chat body to send
upstream plus the request-derived fields the Response object echoes. Every
rejection is an :class:`~compat_asgi.errors.InvalidRequest` whose ``param``
names the exact path (``input[2].content[0].image_url``), as OpenAI does; no
other exception escapes, whatever the body holds.

Error ``code`` values follow OpenAI's: ``missing_required_parameter``,
``invalid_type``, ``invalid_value``, ``unknown_parameter`` and, for things the
real API accepts but a chat-completions backend cannot do,
``unsupported_parameter`` / ``unsupported_value``.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

import orjson

from compat_asgi.core.compaction import open_summary, summary_message
from compat_asgi.core.options import OutputOptions, RequestOptions
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

__all__ = [
    "TranslatedRequest",
    "responses_to_chat",
    "namespaced_name",
    "CUSTOM_TOOL_PARAMETERS",
    "INPUT_ITEM_TYPES",
    "HOSTED_ITEM_TYPES",
    "TOOL_TYPES",
    "HOSTED_TOOL_TYPES",
]


@dataclass(frozen=True, slots=True)
class TranslatedRequest:
    chat: dict[str, Any]
    """Body to POST to ``/v1/chat/completions``."""
    echo: dict[str, Any]
    """Request-derived fields of the Response object, in OpenAI's order, defaults filled."""
    stream: bool
    output: OutputOptions = OutputOptions()
    """How the answer becomes output items (custom tools, reasoning form)."""
    ignored: tuple[str, ...] = ()
    """Names of what the request sent and the server left unused (unknown
    fields, hosted tools, item types a chat backend cannot run), bounded."""


_DEFAULT_OPTIONS = RequestOptions()
# The one string parameter a custom (freeform) tool becomes for a chat backend.
CUSTOM_TOOL_PARAMETERS: dict[str, Any] = {
    "type": "object",
    "properties": {"input": {"type": "string", "description": "The complete input for the tool."}},
    "required": ["input"],
    "additionalProperties": False,
}
ENCRYPTED_REASONING = "reasoning.encrypted_content"


# Everything ResponseCreateParams defines. Keys in _UNSUPPORTED_KEYS are real
# parameters a chat backend cannot honour: refusing them beats ignoring them.
_KNOWN_KEYS = frozenset(
    {
        "model",
        "input",
        "instructions",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "text",
        "max_output_tokens",
        "temperature",
        "top_p",
        "user",
        "reasoning",
        "metadata",
        "top_logprobs",
        "service_tier",
        "prompt_cache_key",
        "prompt_cache_retention",
        "safety_identifier",
        "store",
        "include",
        "truncation",
        "previous_response_id",
        "conversation",
        "stream",
        "stream_options",
        "max_tool_calls",
        "prompt",
        "background",
        "access_programs",
        "background_options",
        "context_management",
        "image",
        "moderation",
        "prompt_cache_options",
    }
)
_UNSUPPORTED_KEYS = dict.fromkeys(
    (
        "prompt",
        "access_programs",
        "background_options",
        "context_management",
        "image",
        "moderation",
        "prompt_cache_options",
    ),
    ".",
)

_ROLES = ("user", "assistant", "system", "developer")
_REASONING_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh", "max")
_REASONING_SUMMARIES = ("auto", "concise", "detailed")
_REASONING_CONTEXTS = ("auto", "current_turn", "all_turns")
_SERVICE_TIERS = ("auto", "default", "flex", "scale", "priority", "fast", "ultrafast")
_TRUNCATIONS = ("auto", "disabled")
_VERBOSITIES = ("low", "medium", "high")
_IMAGE_DETAILS = ("auto", "low", "high", "original")
_TOOL_CHOICE_MODES = ("none", "auto", "required")
_PROMPT_CACHE_RETENTIONS = ("in_memory", "24h")

_TOP_LOGPROBS_MAX = 20

# Every member of the SDK's ResponseInputItemParam and ToolParam unions is one
# of these: mapped for the chat backend, or (hosted) left out and reported,
# refused in strict mode. The README's "What the server accepts" lists them.
INPUT_ITEM_TYPES = frozenset(
    {
        "message",
        "function_call",
        "function_call_output",
        "custom_tool_call",
        "custom_tool_call_output",
        "reasoning",
        "item_reference",
        "additional_tools",
        "compaction",
    }
)
# Records of tools the server cannot run, and state only OpenAI can read:
# a chat backend has nothing to do with them.
HOSTED_ITEM_TYPES = frozenset(
    {
        "file_search_call",
        "computer_call",
        "computer_call_output",
        "web_search_call",
        "image_generation_call",
        "code_interpreter_call",
        "local_shell_call",
        "local_shell_call_output",
        "shell_call",
        "shell_call_output",
        "apply_patch_call",
        "apply_patch_call_output",
        "mcp_list_tools",
        "mcp_approval_request",
        "mcp_approval_response",
        "mcp_call",
        "tool_search_call",
        "tool_search_output",
        "program",
        "program_output",
        "compaction_trigger",
        "configuration_update",
    }
)
TOOL_TYPES = frozenset({"function", "custom", "namespace"})
HOSTED_TOOL_TYPES = frozenset(
    {
        "file_search",
        "computer",
        "computer_use",
        "computer_use_preview",
        "web_search",
        "web_search_2025_08_26",
        "web_search_preview",
        "web_search_preview_2025_03_11",
        "mcp",
        "code_interpreter",
        "programmatic_tool_calling",
        "image_generation",
        "local_shell",
        "shell",
        "tool_search",
        "apply_patch",
    }
)
# Fields each item/tool type defines (the SDK's TypedDicts); any other field is
# reported as ignored, or refused in strict mode.
_ITEM_FIELDS: dict[str, frozenset[str]] = {
    "message": frozenset({"type", "id", "status", "role", "content", "phase"}),
    "function_call": frozenset(
        {"type", "id", "status", "call_id", "name", "namespace", "arguments", "caller", "async"}
    ),
    "custom_tool_call": frozenset(
        {"type", "id", "status", "call_id", "name", "namespace", "input", "caller", "async"}
    ),
    "function_call_output": frozenset(
        {"type", "id", "status", "call_id", "name", "namespace", "output", "caller"}
    ),
    "custom_tool_call_output": frozenset(
        {"type", "id", "status", "call_id", "name", "namespace", "output", "caller"}
    ),
    "reasoning": frozenset({"type", "id", "status", "summary", "content", "encrypted_content"}),
    "item_reference": frozenset({"type", "id"}),
    "additional_tools": frozenset({"type", "id", "role", "tools"}),
    "compaction": frozenset({"type", "id", "encrypted_content"}),
}
_PART_FIELDS: dict[str, frozenset[str]] = {
    "input_text": frozenset({"type", "text", "prompt_cache_breakpoint"}),
    "output_text": frozenset({"type", "text", "annotations", "logprobs"}),
    "refusal": frozenset({"type", "refusal"}),
    "input_image": frozenset({"type", "image_url", "file_id", "detail", "prompt_cache_breakpoint"}),
    "input_file": frozenset(
        {"type", "file_data", "file_id", "file_url", "filename", "detail", "prompt_cache_breakpoint"}
    ),
}
_TOOL_FIELDS: dict[str, frozenset[str]] = {
    "function": frozenset(
        {
            "type", "name", "description", "parameters", "strict", "allowed_callers",
            "async", "defer_loading", "output_schema",
        }
    ),
    "custom": frozenset(
        {"type", "name", "description", "format", "allowed_callers", "async", "defer_loading"}
    ),
    "namespace": frozenset({"type", "name", "description", "tools"}),
}
# OpenAI chat function names; a namespaced name that does not fit is shortened.
_CHAT_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_CHAT_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")

_TEXT_PART_TYPES = ("input_text", "output_text")
_MESSAGE_PART_TYPES: dict[str, tuple[str, ...]] = {
    # input_text/output_text are both accepted for every role: they map to the
    # same chat text, and clients disagree on which one history should use.
    "user": ("input_text", "output_text", "input_image", "input_file"),
    # Chat system messages carry text only.
    "system": ("input_text", "output_text"),
    "developer": ("input_text", "output_text"),
    "assistant": ("output_text", "input_text", "refusal"),
}


# --------------------------------------------------------------------------
# Errors and small validators


def _image_part(part: dict[str, Any], param: str) -> dict[str, Any]:
    url = part.get("image_url")
    if url is None:
        if part.get("file_id") is not None:
            unsupported(
                f"{param}.file_id",
                f"'{param}.file_id' is not supported: this server has no file store. "
                "Send the image as 'image_url' (a URL or a base64 data URL).",
            )
        missing(f"{param}.image_url")
    image: dict[str, Any] = {"url": string(url, f"{param}.image_url")}
    detail = opt_enum(part, "detail", f"{param}.detail", _IMAGE_DETAILS)
    if detail is not None:
        image["detail"] = detail
    return {"type": "image_url", "image_url": image}


def _file_part(part: dict[str, Any], param: str) -> dict[str, Any]:
    data = part.get("file_data")
    if data is None:
        for key in ("file_url", "file_id"):
            if part.get(key) is not None:
                unsupported(
                    f"{param}.{key}",
                    f"'{param}.{key}' is not supported: this server cannot fetch or look up "
                    "files. Send the file inline as 'file_data' (a base64 data URL).",
                )
        missing(f"{param}.file_data")
    file: dict[str, Any] = {"file_data": string(data, f"{param}.file_data")}
    filename = opt_str(part, "filename", f"{param}.filename")
    if filename is not None:
        file["filename"] = filename
    return {"type": "file", "file": file}


def _message_content(content: object, role: str, param: str, ignored: Ignored) -> str | list[dict[str, Any]]:
    """Chat content for one message: a plain string unless images/files are present.

    Many chat backends (and their templates) accept only string content, so
    text-only part lists collapse to one string.
    """
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        type_error(param, "a string or an array of content parts", content)
    allowed = _MESSAGE_PART_TYPES[role]
    parts: list[dict[str, Any]] = []
    has_media = False
    for j, raw in enumerate(content):
        p = f"{param}[{j}]"
        part = as_dict(raw, p)
        kind = type_of(part, p)
        if kind not in allowed:
            if kind in ("input_text", "output_text", "refusal", "input_image", "input_file"):
                choices = ", ".join(f"'{a}'" for a in allowed)
                raise InvalidRequest(
                    f"Invalid value for '{p}.type': '{kind}' is not allowed in a '{role}' "
                    f"message. Supported values are: {choices}.",
                    param=f"{p}.type",
                    code="invalid_value",
                )
            bad_value(f"{p}.type", kind, allowed)
        ignored.fields(part, _PART_FIELDS[kind], p, f"content[{kind}]")
        if kind in _TEXT_PART_TYPES:
            parts.append({"type": "text", "text": req_str(part, "text", p)})
        elif kind == "refusal":
            parts.append({"type": "text", "text": req_str(part, "refusal", p)})
        elif kind == "input_image":
            parts.append(_image_part(part, p))
            has_media = True
        else:  # input_file
            parts.append(_file_part(part, p))
            has_media = True
    if has_media:
        return parts
    return "\n".join(part["text"] for part in parts)


def _tool_output(output: object, param: str, media: list[dict[str, Any]], ignored: Ignored) -> str:
    """Text of a function_call_output; image/file parts are appended to ``media``."""
    if isinstance(output, str):
        return output
    if not isinstance(output, list):
        type_error(param, "a string or an array of content parts", output)
    texts: list[str] = []
    for j, raw in enumerate(output):
        p = f"{param}[{j}]"
        part = as_dict(raw, p)
        kind = type_of(part, p)
        if kind in ("input_text", "input_image", "input_file"):
            ignored.fields(part, _PART_FIELDS[kind], p, f"content[{kind}]")
        if kind == "input_text":
            texts.append(req_str(part, "text", p))
        elif kind == "input_image":
            media.append(_image_part(part, p))
        elif kind == "input_file":
            media.append(_file_part(part, p))
        else:
            bad_value(f"{p}.type", kind, ("input_text", "input_image", "input_file"))
    return "\n".join(texts)


def _reasoning_texts(item: dict[str, Any], key: str, kind: str, param: str) -> list[str]:
    value = item.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        type_error(f"{param}.{key}", "an array", value)
    texts: list[str] = []
    for j, raw in enumerate(value):
        p = f"{param}.{key}[{j}]"
        part = as_dict(raw, p)
        part_type = type_of(part, p)
        if part_type != kind:
            bad_value(f"{p}.type", part_type, (kind,))
        texts.append(req_str(part, "text", p))
    return texts


def _reasoning_text(item: dict[str, Any], param: str, options: RequestOptions) -> str:
    """The text of a reasoning item: sealed ``encrypted_content`` first (it is
    the backend's full reasoning even when only a summary was shown), else
    the raw ``content``, else the summary."""
    content = _reasoning_texts(item, "content", "reasoning_text", param)
    summary = _reasoning_texts(item, "summary", "summary_text", param)
    sealed = opt_str(item, "encrypted_content", f"{param}.encrypted_content")
    if sealed is not None and options.reasoning_seal is not None:
        text = options.reasoning_seal.open(sealed)
        if text is None:
            raise InvalidRequest(
                f"Invalid '{param}.encrypted_content': it was not issued by this server "
                "or has been altered.",
                param=f"{param}.encrypted_content",
                code="invalid_encrypted_content",
            )
        return text
    return "\n".join(content or summary)


# --------------------------------------------------------------------------
# Input items -> chat messages


def _append_reasoning(message: dict[str, Any], pending: list[str]) -> None:
    if not pending:
        return
    text = "\n".join(pending)
    pending.clear()
    previous = message.get("reasoning_content")
    message["reasoning_content"] = f"{previous}\n{text}" if previous else text


def namespaced_name(namespace: str, name: str) -> str:
    """The chat function name for tool ``name`` of ``namespace``: readable
    (``ns__name``) when that fits chat's name rules, else shortened with a
    digest. The same pair always gives the same name, so history sent back
    on a later turn names the same function."""
    flat = f"{namespace}__{name}"
    if _CHAT_NAME.fullmatch(flat):
        return flat
    digest = hashlib.sha256(f"{namespace}\0{name}".encode()).hexdigest()[:10]
    return f"{_CHAT_NAME_UNSAFE.sub('_', flat)[:53]}_{digest}"


def _call_name(item: dict[str, Any], param: str) -> tuple[str, str | None]:
    """(name, namespace) of a call or output item."""
    name = req_str(item, "name", param, non_empty=True)
    return name, opt_str(item, "namespace", f"{param}.namespace")


def _refuse_or_ignore(ignored: Ignored, drop: bool, param: str, message: str, name: str) -> None:
    """Something a chat backend cannot use: a 400 in strict mode (unless the
    server was told to drop it), else left out and reported as ``name``."""
    if ignored.strict and not drop:
        unsupported(param, message)
    ignored.add(name)


def _input_messages(
    items: list[Any],
    messages: list[dict[str, Any]],
    options: RequestOptions,
    tools: _Tools,
    ignored: Ignored,
) -> None:
    """Append the chat messages for a Responses ``input`` item list to ``messages``.

    Reasoning items: chat has no standalone reasoning turn, only
    ``reasoning_content`` on an assistant message, so pending reasoning text is
    attached to the next assistant message built (or merged into). If a
    non-assistant message comes first, or the input ends, it is dropped: the
    reasoning belonged to a turn the backend cannot be shown.

    ``additional_tools`` items add their tools to ``tools``.
    """
    # The assistant message a following function_call merges into, so that
    # parallel calls reach the backend as one assistant turn.
    open_assistant: dict[str, Any] | None = None
    pending_reasoning: list[str] = []
    # Images/files from function_call_output: chat tool messages carry text
    # only, so they follow the run of tool messages as one user message.
    tool_media: list[dict[str, Any]] = []
    # (call_id, name, namespace) of every call so far, for outputs that name
    # their tool instead of the call.
    calls: list[tuple[str, str, str | None]] = []

    def add_call(call: dict[str, Any]) -> None:
        nonlocal open_assistant
        if open_assistant is None:
            open_assistant = {"role": "assistant", "content": None, "tool_calls": [call]}
            messages.append(open_assistant)
        else:
            open_assistant.setdefault("tool_calls", []).append(call)
        _append_reasoning(open_assistant, pending_reasoning)

    for i, raw in enumerate(items):
        param = f"input[{i}]"
        item = as_dict(raw, param)
        kind = item.get("type")
        if kind is None:
            if "role" in item or "content" in item:
                kind = "message"
            elif "id" in item:
                kind = "item_reference"
            else:
                missing(f"{param}.type")
        elif not isinstance(kind, str):
            type_error(f"{param}.type", "a string", kind)

        if kind not in INPUT_ITEM_TYPES:
            _refuse_or_ignore(
                ignored,
                False,
                f"{param}.type",
                f"Invalid value for '{param}.type': input item type '{kind}' is not supported "
                "by this server. Supported types are: 'message', 'function_call', "
                "'function_call_output', 'custom_tool_call', 'custom_tool_call_output', "
                "'reasoning', 'item_reference', 'additional_tools'.",
                f"input[{kind}]",
            )
            continue
        ignored.fields(item, _ITEM_FIELDS[kind], param, f"input[{kind}]")

        if tool_media and kind != "function_call_output":
            messages.append({"role": "user", "content": tool_media})
            tool_media = []

        if kind == "message":
            role = item.get("role")
            if role is None:
                missing(f"{param}.role")
            if not isinstance(role, str):
                type_error(f"{param}.role", "a string", role)
            if role not in _ROLES:
                bad_value(f"{param}.role", role, _ROLES)
            if "content" not in item:
                missing(f"{param}.content")
            opt_enum(item, "phase", f"{param}.phase", ("commentary", "final_answer"))
            content = _message_content(item["content"], role, f"{param}.content", ignored)
            if role == "assistant":
                message: dict[str, Any] = {"role": "assistant", "content": content}
                _append_reasoning(message, pending_reasoning)
                open_assistant = message
            else:
                # Templates of llama.cpp, vLLM and others do not know "developer".
                message = {"role": "system" if role == "developer" else role, "content": content}
                pending_reasoning.clear()
                open_assistant = None
            messages.append(message)

        elif kind in ("function_call", "custom_tool_call"):
            if kind == "function_call":
                arguments = req_str(item, "arguments", param)
            else:
                # Custom tools reach the backend as a function of one string.
                arguments = orjson.dumps({"input": req_str(item, "input", param)}).decode()
            call_id = req_str(item, "call_id", param, non_empty=True)
            name, namespace = _call_name(item, param)
            calls.append((call_id, name, namespace))
            flat = name if namespace is None else namespaced_name(namespace, name)
            add_call({"id": call_id, "type": "function", "function": {"name": flat, "arguments": arguments}})

        elif kind in ("function_call_output", "custom_tool_call_output"):
            if "output" not in item:
                missing(f"{param}.output")
            text = _tool_output(item["output"], f"{param}.output", tool_media, ignored)
            # The call may live in stored history, so an unmatched call_id is forwarded.
            output_call_id = opt_str(item, "call_id", f"{param}.call_id")
            if output_call_id:
                call_id = output_call_id
            elif output_call_id is not None:
                string(output_call_id, f"{param}.call_id", non_empty=True)
            else:
                # Codex sends outputs of tools it ran on its own (no call in the
                # history) by name and namespace: answer the latest such call,
                # or show the backend a call of that tool made for the output.
                if item.get("name") is None:
                    missing(f"{param}.call_id")
                name, namespace = _call_name(item, param)
                matched = next(
                    (c for c, n, ns in reversed(calls) if n == name and ns == namespace), None
                )
                if matched is None:
                    matched = f"call_input_{i}"
                    flat = name if namespace is None else namespaced_name(namespace, name)
                    add_call({"id": matched, "type": "function", "function": {"name": flat, "arguments": "{}"}})
                call_id = matched
            messages.append({"role": "tool", "tool_call_id": call_id, "content": text})
            pending_reasoning.clear()
            open_assistant = None

        elif kind == "reasoning":
            text = _reasoning_text(item, param, options)
            if text:
                pending_reasoning.append(text)

        elif kind == "additional_tools":
            role = item.get("role")
            if role is not None and role != "developer":
                bad_value(f"{param}.role", str(role), ("developer",))
            if item.get("tools") is None:
                missing(f"{param}.tools")
            tools.offer(item["tools"], f"{param}.tools", extra=True)

        elif kind == "compaction":
            # A /responses/compact summary stands where the turns it replaced stood.
            summary = open_summary(options.reasoning_seal, req_str(item, "encrypted_content", param))
            if summary is None:
                raise InvalidRequest(
                    f"Invalid '{param}.encrypted_content': it is not a compaction issued by this server.",
                    param=f"{param}.encrypted_content",
                    code="invalid_encrypted_content",
                )
            messages.append(summary_message(summary))
            pending_reasoning.clear()
            open_assistant = None

        else:  # item_reference
            unsupported(
                param,
                f"'{param}': item_reference requires a response store, which this server does not have.",
            )

    if tool_media:
        messages.append({"role": "user", "content": tool_media})


# --------------------------------------------------------------------------
# Tools, tool_choice, text format


class _Tools:
    """The chat functions a request offers: its ``tools`` and those of its
    ``additional_tools`` items, namespaces flattened, hosted tools left out."""

    __slots__ = ("options", "ignored", "chat", "custom", "namespaced")

    def __init__(self, options: RequestOptions, ignored: Ignored) -> None:
        self.options = options
        self.ignored = ignored
        self.chat: dict[str, dict[str, Any]] = {}  # by chat name, in offered order
        self.custom: set[str] = set()
        self.namespaced: dict[str, tuple[str, str]] = {}

    def offer(self, tools: object, param: str, *, extra: bool = False) -> list[Any]:
        """Add ``tools`` (``param`` is where they are); the echo of them for the
        Response object. ``extra``: a tool already offered is kept, not refused
        (additional_tools items repeat on every turn of a stored history)."""
        if not isinstance(tools, list):
            type_error(param, "an array", tools)
        echo: list[Any] = []
        for i, raw in enumerate(tools):
            p = f"{param}[{i}]"
            tool = as_dict(raw, p)
            kind = type_of(tool, p)
            if kind not in TOOL_TYPES:
                self._skip(kind, p)
                echo.append(tool)
                continue
            self.ignored.fields(tool, _TOOL_FIELDS[kind], p, f"tools[{kind}]")
            if kind != "namespace":
                self._function(tool, kind, p, None, extra)
                echo.append(_echo_tool(tool))
                continue
            namespace = req_str(tool, "name", p, non_empty=True)
            opt_str(tool, "description", f"{p}.description")
            members = tool.get("tools")
            if not isinstance(members, list):
                type_error(f"{p}.tools", "an array", members)
            echoed = []
            for j, member in enumerate(members):
                q = f"{p}.tools[{j}]"
                entry = as_dict(member, q)
                member_kind = type_of(entry, q)
                if member_kind not in ("function", "custom"):
                    self._skip(member_kind, q)
                    continue
                self.ignored.fields(entry, _TOOL_FIELDS[member_kind], q, f"tools[{kind}.{member_kind}]")
                self._function(entry, member_kind, q, namespace, extra)
                echoed.append(_echo_tool(entry))
            echo.append({**tool, "tools": echoed})
        return echo

    def _skip(self, kind: str, param: str) -> None:
        _refuse_or_ignore(
            self.ignored,
            self.options.drop_unsupported_tools,
            f"{param}.type",
            f"Tool type '{kind}' is not supported by this server: only 'function', "
            "'custom' and 'namespace' tools can be offered to a chat-completions backend.",
            f"tools[{kind}]",
        )

    def _function(
        self, tool: dict[str, Any], kind: str, param: str, namespace: str | None, extra: bool
    ) -> None:
        name = req_str(tool, "name", param, non_empty=True)
        chat_name = name if namespace is None else namespaced_name(namespace, name)
        if chat_name in self.chat:
            if extra:
                return
            raise InvalidRequest(
                f"Invalid 'tools': the name '{name}' is used by more than one tool.",
                param=f"{param}.name",
                code="invalid_value",
            )
        if namespace is not None:
            self.namespaced[chat_name] = (namespace, name)
        function: dict[str, Any] = {"name": chat_name}
        description = opt_str(tool, "description", f"{param}.description")
        if kind == "custom":
            self.custom.add(chat_name)
            hint = _custom_format_hint(tool, param)
            description = "\n\n".join(filter(None, [description, hint]))
            if description:
                function["description"] = description
            function["parameters"] = CUSTOM_TOOL_PARAMETERS
        else:
            if description is not None:
                function["description"] = description
            parameters = opt_dict(tool, "parameters", f"{param}.parameters")
            if parameters is not None:
                function["parameters"] = parameters
            strict = opt_bool(tool, "strict", f"{param}.strict")
            if strict is not None:
                function["strict"] = strict
        self.chat[chat_name] = {"type": "function", "function": function}


def _echo_tool(tool: dict[str, Any]) -> dict[str, Any]:
    """A function tool as the Response object lists it: every key of OpenAI's
    FunctionTool present (null when the request left it out)."""
    if tool.get("type") != "function":
        return tool
    return {"parameters": None, "strict": None, **tool}


def _custom_format_hint(tool: dict[str, Any], param: str) -> str | None:
    """A custom tool's input format, told to the backend in words: chat
    functions cannot carry a grammar."""
    fmt = opt_dict(tool, "format", f"{param}.format")
    if fmt is None:
        return None
    kind = type_of(fmt, f"{param}.format")
    if kind == "text":
        return None
    if kind != "grammar":
        bad_value(f"{param}.format.type", kind, ("text", "grammar"))
    syntax = opt_enum(fmt, "syntax", f"{param}.format.syntax", ("lark", "regex")) or "lark"
    definition = req_str(fmt, "definition", f"{param}.format")
    return f"The input must match this {syntax} grammar:\n{definition}"


def _chat_tool_choice(
    choice: object, tools: dict[str, dict[str, Any]], ignored: Ignored, options: RequestOptions
) -> tuple[str | dict[str, Any], dict[str, dict[str, Any]]]:
    """(chat tool_choice, the tools the upstream may see)."""
    if isinstance(choice, str):
        if choice not in _TOOL_CHOICE_MODES:
            bad_value("tool_choice", choice, _TOOL_CHOICE_MODES)
        if choice == "required" and not tools:
            raise InvalidRequest(
                "Invalid value for 'tool_choice': 'required' needs at least one tool in 'tools'.",
                param="tool_choice",
                code="invalid_value",
            )
        return choice, tools
    if not isinstance(choice, dict):
        type_error("tool_choice", "a string or an object", choice)
    kind = type_of(choice, "tool_choice")
    if kind in ("function", "custom"):
        # "required" over that one tool means the same as naming it, and every chat
        # backend honours the string: llama.cpp reads only a string tool_choice and
        # silently falls back to "auto" for the object form.
        name = _offered(choice, "tool_choice", tools)
        return "required", {name: tools[name]}
    if kind == "allowed_tools":
        mode = opt_enum(choice, "mode", "tool_choice.mode", ("auto", "required")) or "auto"
        listed = choice.get("tools")
        if not isinstance(listed, list) or not listed:
            type_error("tool_choice.tools", "a non-empty array", listed)
        allowed: dict[str, dict[str, Any]] = {}
        for i, raw in enumerate(listed):
            entry = as_dict(raw, f"tool_choice.tools[{i}]")
            entry_kind = type_of(entry, f"tool_choice.tools[{i}]")
            if entry_kind not in ("function", "custom"):
                # A hosted tool: it was left out of the tools as well.
                _refuse_or_ignore(
                    ignored,
                    options.drop_unsupported_tools,
                    f"tool_choice.tools[{i}].type",
                    f"Tool type '{entry_kind}' is not supported by this server.",
                    f"tool_choice[{entry_kind}]",
                )
                continue
            name = _offered(entry, f"tool_choice.tools[{i}]", tools)
            allowed[name] = tools[name]
        # The upstream only sees the allowed subset, so it cannot call the rest.
        return mode, allowed
    _refuse_or_ignore(
        ignored,
        options.drop_unsupported_tools,
        "tool_choice",
        f"tool_choice of type '{kind}' is not supported by this server: use 'auto', 'none', "
        "'required', a function or custom tool, or allowed_tools.",
        f"tool_choice[{kind}]",
    )
    # The hosted tool it names was left out: the backend chooses among the rest.
    return "auto", tools


def _offered(entry: dict[str, Any], param: str, tools: dict[str, dict[str, Any]]) -> str:
    name = req_str(entry, "name", param)
    namespace = opt_str(entry, "namespace", f"{param}.namespace")
    chat_name = name if namespace is None else namespaced_name(namespace, name)
    if chat_name not in tools:
        raise InvalidRequest(
            f"Invalid value for '{param}.name': no tool named '{name}' is in 'tools'.",
            param=f"{param}.name",
            code="invalid_value",
        )
    return chat_name


def _response_format(fmt: dict[str, Any]) -> dict[str, Any] | None:
    kind = type_of(fmt, "text.format")
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        schema_param = "text.format.schema"
        if fmt.get("schema") is None:
            missing(schema_param)
        schema: dict[str, Any] = {
            "name": req_str(fmt, "name", "text.format", non_empty=True),
            "schema": as_dict(fmt["schema"], schema_param),
        }
        description = opt_str(fmt, "description", "text.format.description")
        if description is not None:
            schema["description"] = description
        strict = opt_bool(fmt, "strict", "text.format.strict")
        if strict is not None:
            schema["strict"] = strict
        return {"type": "json_schema", "json_schema": schema}
    bad_value("text.format.type", kind, ("text", "json_schema", "json_object"))


# --------------------------------------------------------------------------
# The request


def _conversation(body: dict[str, Any]) -> dict[str, Any] | None:
    value = body.get("conversation")
    if value is None:
        return None
    if isinstance(value, str):
        return {"id": string(value, "conversation", non_empty=True)}
    if isinstance(value, dict):
        return {"id": req_str(value, "id", "conversation", non_empty=True)}
    type_error("conversation", "a string or an object", value)


def responses_to_chat(
    body: object, options: RequestOptions = _DEFAULT_OPTIONS
) -> TranslatedRequest:
    """Validate a Responses create body and map it to a chat-completions body."""
    ignored = Ignored(strict=options.strict)
    body = check_keys(body, _KNOWN_KEYS, _UNSUPPORTED_KEYS, ignored)
    model = required_model(body)

    stream = opt_bool(body, "stream", "stream") or False
    if opt_bool(body, "background", "background"):
        unsupported(
            "background",
            "'background' mode is not supported by this server.",
            code="unsupported_parameter",
        )

    # --- tools first: additional_tools items of the input add to them
    tools = _Tools(options, ignored)
    raw_tools = body.get("tools")
    echo_tools = [] if raw_tools is None else tools.offer(raw_tools, "tools")

    # --- messages
    messages: list[dict[str, Any]] = []
    instructions = body.get("instructions")
    if instructions is not None:
        messages.append({"role": "system", "content": string(instructions, "instructions")})
    input_value = body.get("input")
    if input_value is None:
        missing("input")
    if isinstance(input_value, str):
        messages.append({"role": "user", "content": input_value})
    elif isinstance(input_value, list):
        _input_messages(input_value, messages, options, tools, ignored)
    else:
        type_error("input", "a string or an array of input items", input_value)
    if not messages and ignored.names:
        raise InvalidRequest(
            "Invalid 'input': nothing in it can be shown to a chat backend; these were "
            f"left unused: {', '.join(ignored.names)}.",
            param="input",
            code="invalid_value",
        )

    chat: dict[str, Any] = {"model": model, "messages": messages}

    # --- tool choice
    chat_tools = tools.chat
    tool_choice = body.get("tool_choice")
    chat_tool_choice = None
    if tool_choice is not None:
        chat_tool_choice, chat_tools = _chat_tool_choice(tool_choice, chat_tools, ignored, options)
    parallel_tool_calls = opt_bool(body, "parallel_tool_calls", "parallel_tool_calls")
    if chat_tools:
        chat["tools"] = list(chat_tools.values())
        # OpenAI's chat API rejects tool_choice/parallel_tool_calls without tools.
        if chat_tool_choice is not None:
            chat["tool_choice"] = chat_tool_choice
        if parallel_tool_calls is not None:
            chat["parallel_tool_calls"] = parallel_tool_calls

    # --- text
    text = opt_dict(body, "text", "text")
    echo_text: dict[str, Any] = {"format": {"type": "text"}}
    if text is not None:
        fmt = opt_dict(text, "format", "text.format")
        if fmt is not None:
            response_format = _response_format(fmt)
            if response_format is not None:
                chat["response_format"] = response_format
            echo_text["format"] = fmt
        opt_enum(text, "verbosity", "text.verbosity", _VERBOSITIES)
        for key, value in text.items():
            if key != "format":
                echo_text[key] = value

    # --- sampling and limits
    max_output_tokens = opt_int(body, "max_output_tokens", "max_output_tokens", 1)
    if max_output_tokens is not None:
        chat["max_tokens"] = max_output_tokens
    temperature = opt_number(body, "temperature", "temperature", 0.0, 2.0)
    if temperature is not None:
        chat["temperature"] = temperature
    top_p = opt_number(body, "top_p", "top_p", 0.0, 1.0)
    if top_p is not None:
        chat["top_p"] = top_p
    top_logprobs = opt_int(body, "top_logprobs", "top_logprobs", 0, _TOP_LOGPROBS_MAX)
    if top_logprobs:
        chat["logprobs"] = True
        chat["top_logprobs"] = top_logprobs
    user = opt_str(body, "user", "user")
    if user is not None:
        chat["user"] = user

    reasoning = opt_dict(body, "reasoning", "reasoning")
    echo_reasoning: dict[str, Any] = {"effort": None, "summary": None}
    summary = None
    if reasoning is not None:
        effort = opt_enum(reasoning, "effort", "reasoning.effort", _REASONING_EFFORTS)
        if effort is not None:
            chat["reasoning_effort"] = effort
        summary = opt_enum(reasoning, "summary", "reasoning.summary", _REASONING_SUMMARIES)
        summary = summary or opt_enum(
            reasoning, "generate_summary", "reasoning.generate_summary", _REASONING_SUMMARIES
        )
        opt_enum(reasoning, "context", "reasoning.context", _REASONING_CONTEXTS)
        opt_str(reasoning, "mode", "reasoning.mode")
        echo_reasoning.update(reasoning)

    # --- accepted, validated, echoed or used by the shell, not forwarded
    metadata = checked_metadata(body)
    store = opt_bool(body, "store", "store")
    service_tier = opt_enum(body, "service_tier", "service_tier", _SERVICE_TIERS)
    truncation = opt_enum(body, "truncation", "truncation", _TRUNCATIONS)
    previous_response_id = opt_str(body, "previous_response_id", "previous_response_id")
    conversation = _conversation(body)
    if previous_response_id is not None and conversation is not None:
        raise InvalidRequest(
            "Mutually exclusive parameters: provide only one of 'previous_response_id' "
            "or 'conversation'.",
            param="conversation",
            code="mutually_exclusive_parameters",
        )
    max_tool_calls = opt_int(body, "max_tool_calls", "max_tool_calls", 0)
    prompt_cache_key = opt_str(body, "prompt_cache_key", "prompt_cache_key")
    safety_identifier = opt_str(body, "safety_identifier", "safety_identifier")
    prompt_cache_retention = opt_enum(
        body, "prompt_cache_retention", "prompt_cache_retention", _PROMPT_CACHE_RETENTIONS
    )
    include = body.get("include")
    included: set[str] = set()
    if include is not None:
        if not isinstance(include, list):
            type_error("include", "an array of strings", include)
        for i, value in enumerate(include):
            included.add(string(value, f"include[{i}]"))
    stream_options = opt_dict(body, "stream_options", "stream_options")
    if stream_options is not None:
        opt_bool(stream_options, "include_obfuscation", "stream_options.include_obfuscation")

    chat["stream"] = stream
    if stream:
        chat["stream_options"] = {"include_usage": True}

    echo: dict[str, Any] = {
        "instructions": instructions,
        "max_output_tokens": max_output_tokens,
        "model": model,
        "parallel_tool_calls": True if parallel_tool_calls is None else parallel_tool_calls,
        "previous_response_id": previous_response_id,
        "reasoning": echo_reasoning,
        "store": True if store is None else store,
        "temperature": 1.0 if temperature is None else float(temperature),
        "text": echo_text,
        "tool_choice": "auto" if tool_choice is None else tool_choice,
        "tools": echo_tools,
        "top_p": 1.0 if top_p is None else float(top_p),
        "truncation": truncation or "disabled",
        "user": user,
        "metadata": metadata,
        "background": False,
        "service_tier": service_tier or "default",
        "top_logprobs": top_logprobs or 0,
        "max_tool_calls": max_tool_calls,
        "prompt_cache_key": prompt_cache_key,
        "safety_identifier": safety_identifier,
        "conversation": conversation,
        "prompt_cache_retention": prompt_cache_retention,
        # Keys of the Response model this server always has the same answer
        # for: penalties are chat-only parameters (OpenResponses requires the
        # keys), the rest are features it refuses or has no data for.
        "presence_penalty": 0.0,
        "frequency_penalty": 0.0,
        "prompt": None,
        "access_programs": None,
        "image": None,
        "moderation": None,
        "input_transformations": None,
        "prompt_cache_options": None,
        "prompt_cache_diagnostics": None,
        "tool_usage": None,
    }
    output = OutputOptions(
        custom_tools=frozenset(tools.custom),
        namespaced=tools.namespaced,
        reasoning_summary=summary is not None,
        reasoning_seal=options.reasoning_seal if ENCRYPTED_REASONING in included else None,
        think_tags=options.think_tags,
    )
    return TranslatedRequest(chat=chat, echo=echo, stream=stream, output=output, ignored=ignored.names)
