"""Responses objects built from chat completions (the non-streaming direction),
and the item/usage builders the stream translator shares."""

from __future__ import annotations

from typing import Any

import orjson

from compat_asgi.core.ids import Clock, IdFactory
from compat_asgi.core.options import OutputOptions
from compat_asgi.core.reasoning import ReasoningSeal, split_think
from compat_asgi.errors import UpstreamProtocolError

__all__ = [
    "new_response",
    "finish_response",
    "map_usage",
    "finish_status",
    "message_item",
    "function_call_item",
    "reasoning_item",
    "arguments_text",
    "output_text_part",
    "refusal_part",
    "reasoning_text_part",
    "summary_text_part",
    "custom_tool_call_item",
    "custom_tool_input",
    "shown_call",
    "tool_name",
    "reasoning_output",
    "chat_completion_to_response",
]

_DEFAULT_OUTPUT = OutputOptions()
# chat finish_reason -> Responses incomplete_details.reason
_INCOMPLETE_REASONS = {"length": "max_output_tokens", "content_filter": "content_filter"}


def new_response(echo: dict[str, Any], response_id: str, created_at: int) -> dict[str, Any]:
    """The in-progress Response object: id, lifecycle fields, then the request echo.

    Every key of OpenAI's ``Response`` model and of the OpenResponses schema is
    present from the first event on (null where this server has no value):
    clients and validators that read a key unconditionally must not break.
    """
    return {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "completed_at": None,
        "status": "in_progress",
        "error": None,
        "incomplete_details": None,
        **echo,
        "output": [],
        "usage": None,
    }


def finish_response(
    response: dict[str, Any], status: str, incomplete: dict[str, str] | None, completed_at: int | None
) -> None:
    """Set the terminal status; ``completed_at`` only when it completed (the
    creation time stands in when no clock is given)."""
    response["status"] = status
    response["incomplete_details"] = incomplete
    if status == "completed":
        response["completed_at"] = response["created_at"] if completed_at is None else completed_at


def map_usage(usage: Any) -> dict[str, Any]:
    """chat ``usage`` -> Responses ``usage``; detail objects always present (zeros if unknown)."""
    if not isinstance(usage, dict):
        usage = {}
    prompt = _int(usage.get("prompt_tokens"))
    completion = _int(usage.get("completion_tokens"))
    prompt_details = usage.get("prompt_tokens_details")
    if not isinstance(prompt_details, dict):
        prompt_details = {}
    completion_details = usage.get("completion_tokens_details")
    return {
        "input_tokens": prompt,
        "input_tokens_details": {
            "cached_tokens": _int(prompt_details.get("cached_tokens")),
            "cache_write_tokens": _int(prompt_details.get("cache_write_tokens")),
        },
        "output_tokens": completion,
        "output_tokens_details": {
            "reasoning_tokens": _int(completion_details.get("reasoning_tokens"))
            if isinstance(completion_details, dict)
            else 0
        },
        "total_tokens": prompt + completion,
    }


def arguments_text(arguments: Any) -> str:
    """Tool-call arguments as the JSON text Responses carries (some backends send an object)."""
    if isinstance(arguments, str):
        return arguments
    if isinstance(arguments, dict):
        return orjson.dumps(arguments).decode()
    return ""


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def finish_status(finish_reason: str | None) -> tuple[str, dict[str, str] | None]:
    """chat ``finish_reason`` -> (Response status, incomplete_details)."""
    reason = _INCOMPLETE_REASONS.get(finish_reason or "")
    if reason is None:
        return "completed", None
    return "incomplete", {"reason": reason}


def message_item(item_id: str, content: list[dict[str, Any]], status: str) -> dict[str, Any]:
    return {"id": item_id, "type": "message", "status": status, "role": "assistant", "content": content}


def output_text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "annotations": [], "logprobs": [], "text": text}


def refusal_part(text: str) -> dict[str, Any]:
    return {"type": "refusal", "refusal": text}


def function_call_item(
    item_id: str, call_id: str, name: str, arguments: str, status: str, namespace: str | None = None
) -> dict[str, Any]:
    item = {
        "id": item_id,
        "type": "function_call",
        "status": status,
        "arguments": arguments,
        "call_id": call_id,
        "name": name,
    }
    if namespace is not None:
        item["namespace"] = namespace
    return item


def reasoning_item(
    item_id: str,
    content: list[dict[str, Any]],
    status: str,
    summary: list[dict[str, Any]] | None = None,
    seal: ReasoningSeal | None = None,
) -> dict[str, Any]:
    item: dict[str, Any] = {
        "id": item_id,
        "type": "reasoning",
        "status": status,
        "summary": summary or [],
        "content": content,
    }
    if seal is not None:
        text = "\n".join(part["text"] for part in (*content, *(summary or ())))
        item["encrypted_content"] = seal.seal(text)
    return item


def summary_text_part(text: str) -> dict[str, Any]:
    return {"type": "summary_text", "text": text}


def custom_tool_call_item(
    item_id: str, call_id: str, name: str, tool_input: str, status: str, namespace: str | None = None
) -> dict[str, Any]:
    item = {
        "id": item_id,
        "type": "custom_tool_call",
        "status": status,
        "call_id": call_id,
        "name": name,
        "input": tool_input,
    }
    if namespace is not None:
        item["namespace"] = namespace
    return item


def tool_name(chat_name: str, options: OutputOptions) -> tuple[str, str | None]:
    """(name, namespace) of the tool a chat function call is for: tools offered
    inside a namespace go back under it, so the client routes the call."""
    namespaced = options.namespaced.get(chat_name)
    if namespaced is None:
        return chat_name, None
    namespace, name = namespaced
    return name, namespace


def custom_tool_input(arguments: str) -> str:
    """The freeform input of a custom tool from the one-string-argument call the
    backend made; text that is not that JSON shape is taken as the input itself."""
    try:
        value = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        return arguments
    tool_input = value.get("input") if isinstance(value, dict) else None
    return tool_input if isinstance(tool_input, str) else arguments


def shown_call(chat_name: str, arguments: str, *, cut: bool) -> bool:
    """Whether a finished chat tool call goes to the client. Not when its name
    never came (no client could route it), nor when the token limit or a
    filter (``cut``) stopped it mid-arguments: clients run the calls they
    are given, whatever their status, so a half-written one is left out."""
    if not chat_name:
        return False
    if not cut:
        return True
    try:
        orjson.loads(arguments)
    except orjson.JSONDecodeError:
        return False
    return True


def reasoning_output(
    item_id: str, text: str, options: OutputOptions, status: str = "completed"
) -> dict[str, Any]:
    """A whole reasoning item in the form the request asked for."""
    if options.reasoning_summary:
        return reasoning_item(item_id, [], status, [summary_text_part(text)], options.reasoning_seal)
    return reasoning_item(item_id, [reasoning_text_part(text)], status, None, options.reasoning_seal)


def reasoning_text_part(text: str) -> dict[str, Any]:
    return {"type": "reasoning_text", "text": text}


def chat_completion_to_response(
    completion: Any,
    response: dict[str, Any],
    ids: IdFactory,
    options: OutputOptions = _DEFAULT_OUTPUT,
    clock: Clock | None = None,
    left_out: list[str] | None = None,
) -> dict[str, Any]:
    """Fill ``response`` (from :func:`new_response`) from a non-streamed chat
    completion. The names of the calls the client is not given (see
    :func:`shown_call`) are appended to ``left_out``."""
    if not isinstance(completion, dict):
        raise UpstreamProtocolError("upstream chat completion is not a JSON object")
    choices = completion.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise UpstreamProtocolError("upstream chat completion has no choices")
    choice = choices[0]
    message = choice.get("message")
    if not isinstance(message, dict):
        raise UpstreamProtocolError("upstream chat completion choice has no message")
    finish_reason = choice.get("finish_reason")
    status, incomplete = finish_status(finish_reason if isinstance(finish_reason, str) else None)
    # Item by item the same statuses as the streamed translator: an item another
    # item followed was finished; only what was still open when the upstream
    # stopped (the tool calls, else the message, else the reasoning) was cut.
    cut = "incomplete" if incomplete else "completed"
    tool_calls = message.get("tool_calls")
    tool_calls = tool_calls if isinstance(tool_calls, list) else []

    output: list[dict[str, Any]] = []
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    reasoning = reasoning if isinstance(reasoning, str) else ""
    content = message.get("content")
    if options.think_tags and isinstance(content, str):
        thought, content = split_think(content)
        reasoning = "\n".join(filter(None, [reasoning, thought]))
    parts: list[dict[str, Any]] = []
    if isinstance(content, str) and content:
        parts.append(output_text_part(content))
    refusal = message.get("refusal")
    if isinstance(refusal, str) and refusal:
        parts.append(refusal_part(refusal))
    if reasoning:
        last = not parts and not tool_calls
        output.append(reasoning_output(ids("rs"), reasoning, options, cut if last else "completed"))
    if parts:
        output.append(message_item(ids("msg"), parts, "completed" if tool_calls else cut))
    call_ids: set[str] = set()  # each output pairs with its call by call_id: never two alike
    for call in tool_calls:
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict):
            raise UpstreamProtocolError("upstream tool call has no function")
        chat_name = str(function.get("name") or "")
        arguments = arguments_text(function.get("arguments"))
        if not shown_call(chat_name, arguments, cut=incomplete is not None):
            if left_out is not None:
                left_out.append(chat_name)
            continue
        call_id = call.get("id")
        if not (isinstance(call_id, str) and call_id) or call_id in call_ids:
            call_id = ids("call")
        call_ids.add(call_id)
        name, namespace = tool_name(chat_name, options)
        if chat_name in options.custom_tools:
            output.append(
                custom_tool_call_item(
                    ids("ctc"), call_id, name, custom_tool_input(arguments), cut, namespace
                )
            )
        else:
            output.append(function_call_item(ids("fc"), call_id, name, arguments, cut, namespace))

    finish_response(response, status, incomplete, clock() if clock is not None else None)
    response["output"] = output
    response["usage"] = map_usage(completion.get("usage"))
    return response
