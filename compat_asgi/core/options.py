"""Translation options: what the shell configures, and what a request asks for."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from compat_asgi.core.reasoning import ReasoningSeal

__all__ = ["RequestOptions", "OutputOptions"]


@dataclass(frozen=True, slots=True)
class RequestOptions:
    """Server-side choices for mapping a Responses request (computed once)."""

    # OpenAI's 400 for unknown fields, hosted tools and item types a chat
    # backend cannot run; by default they are left out and reported.
    strict: bool = False
    # Hosted tools (web_search, file_search, ...) have no chat equivalent and
    # are left out of what the upstream sees; this keeps doing so in strict mode.
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
    # Chat function name -> (namespace, name) for tools offered inside a
    # namespace: their calls go back to the client under the namespace.
    namespaced: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    # reasoning.summary was asked for: reasoning is sent as summary parts.
    reasoning_summary: bool = False
    # include has "reasoning.encrypted_content": reasoning items carry a seal.
    reasoning_seal: ReasoningSeal | None = None
    think_tags: bool = False
