"""The OpenAI SDK's own stream accumulators, replayed over captured events.

Passing the validator is not enough if the SDK -- what most clients run --
assembles something else from the same events. ``openai`` is a test
dependency, not a runtime one: it is imported lazily and every check answers
``None`` when it is missing, so the report can say "skipped".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from compat_asgi.validate import Violation

__all__ = ["RULE", "available", "chat_stream", "responses_stream"]

RULE = "sdk-accumulator"
_QUOTE = 120


def available() -> bool:
    try:
        import openai  # noqa: F401
    except ImportError:
        return False
    return True


def responses_stream(events: Sequence[Mapping[str, Any]]) -> list[Violation] | None:
    """Feed decoded Responses events to ``ResponseStreamState``; compare its
    accumulated text and arguments with the terminal event's response."""
    if not available():
        return None
    try:
        from openai._models import construct_type
        from openai._types import omit
        from openai.lib.streaming.responses._responses import ResponseStreamState
        from openai.types.responses import ResponseStreamEvent
    except ImportError:
        return None
    state: ResponseStreamState[Any] = ResponseStreamState(input_tools=omit, text_format=omit)
    texts: dict[tuple[int, int], str] = {}
    arguments: dict[int, str] = {}
    terminal: Mapping[str, Any] | None = None
    final: Any = None
    for index, data in enumerate(events):
        try:
            # construct_type is what the SDK's Stream does with each data: object.
            event: Any = construct_type(type_=ResponseStreamEvent, value=dict(data))
            for fired in state.handle_event(event):
                if fired.type == "response.output_text.delta":
                    texts[(fired.output_index, fired.content_index)] = fired.snapshot
                elif fired.type == "response.function_call_arguments.delta":
                    arguments[fired.output_index] = fired.snapshot
                elif fired.type == "response.completed":
                    final = fired.response
        except Exception as exc:  # the SDK asserts and raises on what it cannot follow: that is the finding
            return [Violation(RULE, f"the OpenAI SDK accumulator raised {type(exc).__name__}: {_clip(exc)}", index)]
        if data.get("type") in ("response.completed", "response.incomplete", "response.failed"):
            terminal = data
    if terminal is None:
        return []  # the validator already reports the missing terminal event
    response = terminal.get("response")
    output = response.get("output") if isinstance(response, Mapping) else None
    if not isinstance(output, list):
        return []  # likewise a validator finding
    where = str(terminal.get("type"))
    out: list[Violation] = []
    for (oi, ci), text in sorted(texts.items()):
        got = _dig(output, oi, "content", ci, "text")
        if got != text:
            out.append(Violation(RULE, f"{where} output[{oi}].content[{ci}].text {_q(got)} != SDK-accumulated {_q(text)}"))
    for oi, args in sorted(arguments.items()):
        got = _dig(output, oi, "arguments")
        if got != args:
            out.append(Violation(RULE, f"{where} output[{oi}].arguments {_q(got)} != SDK-accumulated {_q(args)}"))
    if where == "response.completed":
        if final is None:
            out.append(Violation(RULE, "the SDK produced no final response from response.completed"))
        else:
            streamed = "".join(text for (oi, _), text in sorted(texts.items()) if _dig(output, oi, "type") == "message")
            if final.output_text != streamed:
                out.append(Violation(RULE, f"SDK final output_text {_q(final.output_text)} != streamed text {_q(streamed)}"))
    return out


def chat_stream(chunks: Sequence[Mapping[str, Any]], assembled: Mapping[str, Any]) -> list[Violation] | None:
    """Feed decoded chunks to ``ChatCompletionStreamState``; compare its final
    message with ``assembled`` (the runner's own concatenation by index)."""
    if not available():
        return None
    try:
        from openai._models import construct_type
        from openai.lib.streaming.chat import ChatCompletionStreamState
        from openai.types.chat import ChatCompletionChunk
    except ImportError:
        return None
    state: ChatCompletionStreamState[Any] = ChatCompletionStreamState()
    index = 0
    try:
        for index, data in enumerate(chunks):
            chunk: Any = construct_type(type_=ChatCompletionChunk, value=dict(data))
            state.handle_chunk(chunk)
        if not chunks:
            return []
        # Not get_final_completion(): it raises on finish_reason "length" by
        # design (the .stream() helper's choice), which is no server fault.
        final = state.current_completion_snapshot
    except Exception as exc:  # as above: an SDK exception is what a client would hit
        return [Violation(RULE, f"the OpenAI SDK accumulator raised {type(exc).__name__}: {_clip(exc)}", index)]
    choices = assembled.get("choices")
    message = choices[0].get("message") if isinstance(choices, list) and choices else None
    if not isinstance(message, Mapping) or not final.choices:
        return []
    got = final.choices[0].message
    out: list[Violation] = []
    if (got.content or None) != (message.get("content") or None):
        out.append(Violation(RULE, f"SDK content {_q(got.content)} != streamed {_q(message.get('content'))}"))
    sdk_calls = [(c.id, c.function.name, c.function.arguments) for c in got.tool_calls or () if c.type == "function"]
    calls = [(c["id"], c["function"]["name"], c["function"]["arguments"]) for c in message.get("tool_calls") or ()]
    if sdk_calls != calls:
        out.append(Violation(RULE, f"SDK tool calls {_q(sdk_calls)} != streamed {_q(calls)}"))
    return out


def _dig(value: Any, *path: int | str) -> Any:
    for key in path:
        if isinstance(key, int):
            value = value[key] if isinstance(value, list) and 0 <= key < len(value) else None
        else:
            value = value.get(key) if isinstance(value, Mapping) else None
    return value


def _q(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _QUOTE else text[: _QUOTE - 3] + "..."


def _clip(exc: Exception) -> str:
    text = " ".join(str(exc).split()) or "(no message)"
    return text if len(text) <= _QUOTE else text[: _QUOTE - 3] + "..."
