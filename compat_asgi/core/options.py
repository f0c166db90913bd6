"""Translation options: what the shell configures, and what a request asks for."""

from __future__ import annotations

from dataclasses import dataclass, field

from compat_asgi.core.reasoning import ReasoningSeal

__all__ = ["RequestOptions", "OutputOptions"]


@dataclass(frozen=True, slots=True)
class RequestOptions:
    """Server-side choices for mapping a Responses request (computed once)."""

    # Hosted tools (web_search, file_search, ...) have no chat equivalent:
    # refuse them (default) or leave them out of what the upstream sees.
    drop_unsupported_tools: bool = False
    # Opens reasoning items sent back with encrypted_content; seals new ones.
    reasoning_seal: ReasoningSeal | None = None
    # The backend writes its reasoning as <think>...</think> in the text.
    think_tags: bool = False


@dataclass(frozen=True, slots=True)
class OutputOptions:
    """How one request's answer is turned into Responses output items."""

    # Chat functions that stand for custom (freeform) tools: their calls
    # become custom_tool_call items carrying the one string argument.
    custom_tools: frozenset[str] = field(default_factory=frozenset)
    # reasoning.summary was asked for: reasoning is sent as summary parts.
    reasoning_summary: bool = False
    # include has "reasoning.encrypted_content": reasoning items carry a seal.
    reasoning_seal: ReasoningSeal | None = None
    think_tags: bool = False
